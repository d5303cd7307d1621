//! `rpcd-macros`: the stub generator of rpcd, re-exported as `rpcd_client::service`.
//!
//! Layer: compile time only. It reads a trait and emits Rust that calls `rpcd_client`'s
//! public API (`Client::call_with`, `Server::register_service`) and its `__private` helpers;
//! it knows nothing of sockets or the wire beyond "arguments are one MessagePack array".
//!
//! For `#[service] pub trait Kv { fn get(&self, key: String) -> Option<String>; }` it emits:
//! - the trait unchanged, plus a provided method `fn serve(self, server: &Server)` that
//!   registers every method as `kv.<method>` and dispatches invocations to `self`;
//! - `pub struct KvClient`, built with `KvClient::new(&client, target)`, with one method per
//!   trait method: `fn get(&self, key: impl Into<String>) -> Result<Option<String>, CallError>`
//!   (`String` arguments take `impl Into<String>`, every other argument its exact type).
//!
//! A return type spelled `Result<T, E>` is an application result: `T` travels as the reply,
//! `E` (any `Display`) becomes the caller's `CallError::App(message)`.
//!
//! Per-method attributes, `#[rpcd(idempotent)]` and `#[rpcd(deadline = "2s")]` (`attrs`),
//! are declared at registration with the method's signature — argument names and
//! [`Describe`](../rpcd_client/trait.Describe.html) schemas, reply schema, doc comment —
//! and applied by the client stub to each call: the declared deadline when the stub's
//! options give none, the declared idempotency always.
//!
//! `#[derive(Describe)]` (`derive`) describes a struct or enum.
//!
//! Misuse is a compile error pointing at the offending tokens (see `client-lib/tests/ui/`).

mod async_stub;
mod attrs;
mod derive;
mod signature;

use signature::{declaration, doc_text};

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{
    parse_macro_input, FnArg, GenericArgument, Ident, Item, ItemTrait, LitStr, Pat, PathArguments,
    ReturnType, TraitItem, TraitItemFn, Type, Visibility,
};

/// Turns a trait into an rpcd service: a typed client stub `<Trait>Client` and a server
/// stub (the provided method `Trait::serve(self, &server)`).
///
/// Options: `#[service(name = "acme.kv")]` sets the service name used as the function
/// prefix (default: the trait's name in snake case, `Kv` → `kv`).
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut name: Option<LitStr> = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            let lit: LitStr = meta.value()?.parse()?;
            if lit.value().is_empty() || lit.value().chars().any(|c| c.is_whitespace()) {
                return Err(syn::Error::new(
                    lit.span(),
                    "a service name is non-empty and has no whitespace",
                ));
            }
            name = Some(lit);
            Ok(())
        } else {
            Err(meta.error("unknown #[service] option; the only one is `name = \"...\"`"))
        }
    });
    parse_macro_input!(attr with parser);

    let item = parse_macro_input!(item as Item);
    let Item::Trait(item) = item else {
        return syn::Error::new(
            item.span(),
            "#[rpcd_client::service] goes on a trait, e.g. \
             `trait Kv { fn get(&self, key: String) -> Option<String>; }`",
        )
        .to_compile_error()
        .into();
    };
    match expand(name, item) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}

/// Derives `rpcd_client::Describe` for a struct or enum: its schema with the Rust field and
/// variant names, each field described by its own `Describe` implementation.
#[proc_macro_derive(Describe)]
pub fn derive_describe(item: TokenStream) -> TokenStream {
    let input = parse_macro_input!(item as syn::DeriveInput);
    match derive::expand(input) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}

/// One RPC method, checked.
struct Method {
    ident: Ident,
    /// `service.method`.
    function: String,
    args: Vec<(Ident, Type)>,
    /// The reply type on the wire (the `T` of `Result<T, E>`, or the whole return type).
    reply: Type,
    /// Whether the return type is an application `Result<T, E>`.
    fallible: bool,
    attrs: Vec<syn::Attribute>,
    /// Its `#[rpcd(...)]` attributes.
    declared: attrs::MethodAttrs,
    /// Its doc comment, lines joined with `\n`.
    doc: String,
}

fn expand(name: Option<LitStr>, item: ItemTrait) -> syn::Result<TokenStream2> {
    let mut errors: Option<syn::Error> = None;
    let mut push = |err: syn::Error| match &mut errors {
        Some(all) => all.combine(err),
        None => errors = Some(err),
    };
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        push(syn::Error::new(
            item.generics.span(),
            "a service trait cannot be generic: each function needs one concrete wire type",
        ));
    }
    if let Some(unsafety) = &item.unsafety {
        push(syn::Error::new(
            unsafety.span(),
            "a service trait cannot be unsafe",
        ));
    }
    let service = name.map_or_else(|| snake_case(&item.ident.to_string()), |lit| lit.value());
    let mut methods = Vec::new();
    for trait_item in &item.items {
        match trait_item {
            TraitItem::Fn(method) => match check_method(&service, method) {
                Ok(m) => methods.push(m),
                Err(err) => push(err),
            },
            other => push(syn::Error::new(
                other.span(),
                "a service trait holds only methods: associated types, consts and macros \
                 have no meaning over the wire",
            )),
        }
    }
    if let Some(err) = errors {
        return Err(err);
    }
    Ok(emit(&service, &item, &methods))
}

fn check_method(service: &str, method: &TraitItemFn) -> syn::Result<Method> {
    let sig = &method.sig;
    let declared = attrs::parse(&method.attrs)?;
    if let Some(asyncness) = &sig.asyncness {
        return Err(syn::Error::new(
            asyncness.span(),
            "async methods are not supported: handlers run on the server's thread pool, \
             write a blocking `fn`",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "generic methods cannot be RPC functions: the wire needs concrete argument types",
        ));
    }
    if let Some(unsafety) = &sig.unsafety {
        return Err(syn::Error::new(
            unsafety.span(),
            "unsafe methods cannot be RPC functions",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new(
            variadic.span(),
            "variadic methods cannot be RPC functions",
        ));
    }
    if sig.ident == "serve" {
        return Err(syn::Error::new(
            sig.ident.span(),
            "`serve` is reserved: #[service] adds `fn serve(self, server: &Server)` to the trait",
        ));
    }
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(receiver))
            if receiver.reference.is_some() && receiver.mutability.is_none() =>
        {
            if receiver.colon_token.is_some() {
                return Err(syn::Error::new(
                    receiver.span(),
                    "RPC methods take `&self` (plain, without an explicit type)",
                ));
            }
        }
        Some(FnArg::Receiver(receiver)) if receiver.reference.is_some() => {
            return Err(syn::Error::new(
                receiver.span(),
                "RPC methods take `&self`, not `&mut self`: the server calls them from \
                 several worker threads at once (use a Mutex inside)",
            ));
        }
        Some(FnArg::Receiver(receiver)) => {
            return Err(syn::Error::new(
                receiver.span(),
                "RPC methods take `&self`, not `self` by value: one server value answers \
                 every call",
            ));
        }
        _ => {
            return Err(syn::Error::new(
                sig.ident.span(),
                "RPC methods take `&self` as their first parameter",
            ));
        }
    }
    let mut args = Vec::new();
    for input in inputs {
        let FnArg::Typed(arg) = input else {
            return Err(syn::Error::new(input.span(), "unexpected `self`"));
        };
        let ident = match &*arg.pat {
            Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => pat.ident.clone(),
            other => {
                return Err(syn::Error::new(
                    other.span(),
                    "RPC arguments are plain names (`key: String`), not patterns",
                ))
            }
        };
        check_arg_type(&arg.ty, Position::Argument)?;
        args.push((ident, (*arg.ty).clone()));
    }
    let (reply, fallible) = match &sig.output {
        ReturnType::Default => (syn::parse_quote!(()), false),
        ReturnType::Type(_, ty) => {
            check_arg_type(ty, Position::Reply)?;
            match result_ok_type(ty) {
                Some(ok) => (ok, true),
                None => ((**ty).clone(), false),
            }
        }
    };
    Ok(Method {
        ident: sig.ident.clone(),
        function: format!("{service}.{}", sig.ident),
        args,
        reply,
        fallible,
        attrs: method
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("doc"))
            .cloned()
            .collect(),
        declared,
        doc: doc_text(&method.attrs),
    })
}

/// Where a type appears: borrowing is for arguments only (a reply is encoded from the
/// handler's value after the arguments are gone).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Position {
    Argument,
    Reply,
}

/// Rejects types that cannot cross the wire. An argument may borrow from the invocation's
/// bytes, as `&str` or `&serde_bytes::Bytes`; a reply is an owned value.
fn check_arg_type(ty: &Type, position: Position) -> syn::Result<()> {
    match ty {
        Type::Reference(r) if position == Position::Reply => Err(syn::Error::new(
            r.span(),
            "RPC replies are owned values (`String`, not `&str`): the reply is encoded after \
             the handler returns",
        )),
        Type::Reference(r) if r.mutability.is_some() => Err(syn::Error::new(
            r.span(),
            "RPC arguments cannot be `&mut`: they borrow from the invocation's bytes, read-only",
        )),
        Type::Reference(r) => match &*r.elem {
            Type::Slice(_) => Err(syn::Error::new(
                r.span(),
                "`&[u8]` would travel as a list of numbers, not as bytes: take \
                 `&serde_bytes::Bytes` (borrowed) or `serde_bytes::ByteBuf` (owned)",
            )),
            Type::Path(path) if path.qself.is_none() => {
                let last = path.path.segments.last().map(|s| s.ident.to_string());
                match last.as_deref() {
                    Some("str" | "Bytes") => Ok(()),
                    _ => Err(syn::Error::new(
                        r.span(),
                        "an RPC argument borrows only as `&str` or `&serde_bytes::Bytes`; \
                         take any other type as an owned value (`Point`, not `&Point`)",
                    )),
                }
            }
            _ => Err(syn::Error::new(
                r.span(),
                "an RPC argument borrows only as `&str` or `&serde_bytes::Bytes`; take any \
                 other type as an owned value",
            )),
        },
        Type::ImplTrait(t) => Err(syn::Error::new(
            t.span(),
            "`impl Trait` cannot cross the wire: name a concrete type",
        )),
        Type::TraitObject(t) => Err(syn::Error::new(
            t.span(),
            "trait objects cannot cross the wire: name a concrete type",
        )),
        Type::Ptr(p) => Err(syn::Error::new(
            p.span(),
            "raw pointers cannot cross the wire",
        )),
        Type::Paren(p) => check_arg_type(&p.elem, position),
        _ => Ok(()),
    }
}

/// `T` when `ty` is spelled `Result<T, E>` (any path ending in `Result` with two arguments).
fn result_ok_type(ty: &Type) -> Option<Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let mut types = args.args.iter().filter_map(|a| match a {
        GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    });
    let ok = types.next()?;
    types.next()?;
    Some(ok)
}

fn emit(service: &str, item: &ItemTrait, methods: &[Method]) -> TokenStream2 {
    let vis: &Visibility = &item.vis;
    let trait_ident = &item.ident;
    let client_ident = format_ident!("{}Client", trait_ident);
    let functions: Vec<&str> = methods.iter().map(|m| m.function.as_str()).collect();

    let checks = methods.iter().flat_map(|m| {
        let args = m.args.iter().map(|(_, ty)| {
            if matches!(ty, Type::Reference(_)) {
                quote_spanned!(ty.span()=> ::rpcd_client::__private::assert_borrowed_arg::<#ty>();)
            } else {
                quote_spanned!(ty.span()=> ::rpcd_client::__private::assert_wire_type::<#ty>();)
            }
        });
        let reply = &m.reply;
        let reply_check = quote_spanned!(reply.span()=>
            ::rpcd_client::__private::assert_wire_type::<#reply>();
        );
        args.chain(std::iter::once(reply_check)).collect::<Vec<_>>()
    });

    let handlers = methods.iter().map(|m| {
        let function = &m.function;
        let ident = &m.ident;
        let names: Vec<&Ident> = m.args.iter().map(|(n, _)| n).collect();
        let types: Vec<&Type> = m.args.iter().map(|(_, t)| t).collect();
        let (pattern, tuple_ty) = if names.is_empty() {
            (quote!(_), quote!([u8; 0]))
        } else {
            (quote!((#(#names,)*)), quote!((#(#types,)*)))
        };
        let declaration = declaration(m);
        let respond = if m.fallible {
            quote!(::rpcd_client::__private::reply_result(this.#ident(#(#names),*)))
        } else {
            quote!(::rpcd_client::__private::reply(&this.#ident(#(#names),*)))
        };
        quote! {
            {
                let this = ::std::sync::Arc::clone(&this);
                (
                    #function,
                    ::rpcd_client::Handler::new(move |args: &[u8]| -> ::rpcd_client::Outcome {
                        let #pattern: #tuple_ty =
                            match ::rpcd_client::__private::decode_args(#function, args) {
                                ::core::result::Result::Ok(args) => args,
                                ::core::result::Result::Err(refused) => return refused,
                            };
                        #respond
                    })
                    .declared(#declaration),
                )
            }
        }
    });

    let stubs = methods.iter().map(|m| {
        let ident = &m.ident;
        let function = &m.function;
        let reply = &m.reply;
        let names: Vec<&Ident> = m.args.iter().map(|(n, _)| n).collect();
        // `String` arguments take `impl Into<String>` so `kv.get("k")` reads naturally;
        // every other argument takes its exact type, so literals infer (`f(2_000)` for a
        // `u64`) and `None` needs no annotation.
        let params = m.args.iter().map(|(n, t)| {
            if is_string(t) {
                quote!(#n: impl ::core::convert::Into<::std::string::String>)
            } else {
                quote!(#n: #t)
            }
        });
        let converts =
            m.args.iter().filter(|(_, t)| is_string(t)).map(
                |(n, _)| quote!(let #n: ::std::string::String = ::core::convert::Into::into(#n);),
            );
        let packed = if names.is_empty() {
            quote!(&[0u8; 0])
        } else {
            quote!(&(#(&#names,)*))
        };
        let attrs = &m.attrs;
        let doc = format!("Calls `{function}` on the target and waits for its reply.");
        let idempotent = m.declared.idempotent;
        let deadline = match m.declared.deadline_ms {
            Some(ms) => quote!(::core::option::Option::Some(
                ::std::time::Duration::from_millis(#ms)
            )),
            None => quote!(::core::option::Option::None),
        };
        quote! {
            #(#attrs)*
            #[doc = ""]
            #[doc = #doc]
            #vis fn #ident(&self, #(#params),*)
                -> ::core::result::Result<#reply, ::rpcd_client::CallError>
            {
                #(#converts)*
                let options =
                    ::rpcd_client::__private::declared_options(self.options, #deadline, #idempotent);
                self.client.call_with(&self.target, #function, #packed, options)
            }
        }
    });

    let mut trait_out = item.clone();
    // `#[rpcd(...)]` is read here; rustc knows no such attribute.
    for trait_item in &mut trait_out.items {
        if let TraitItem::Fn(f) = trait_item {
            f.attrs.retain(|a| !a.path().is_ident("rpcd"));
        }
    }
    let serve_doc = format!(
        "Registers every function of the `{service}` service ({}) on `server` and answers \
         their invocations with `self` on the server's worker pool.",
        functions.join(", ")
    );
    let serve: TraitItem = syn::parse_quote! {
        #[doc = #serve_doc]
        fn serve(self, server: &::rpcd_client::Server)
            -> ::core::result::Result<(), ::rpcd_client::CallError>
        where
            Self: ::core::marker::Sized + ::core::marker::Send + ::core::marker::Sync + 'static,
        {
            let this = ::std::sync::Arc::new(self);
            server.register_service(::std::vec![#(#handlers),*])
        }
    };
    trait_out.items.push(serve);

    let client_doc = format!(
        "Typed client stub of the `{service}` service: one method per function of \
         [`{trait_ident}`], each a blocking call through an [`rpcd_client::Client`]."
    );
    let check_fn = format_ident!(
        "__rpcd_check_{}_wire_types",
        snake_case(&trait_ident.to_string())
    );
    let async_client = async_stub::emit_async(service, item, methods);
    let span = Span::call_site();
    quote_spanned! {span=>
        #trait_out

        #async_client

        #[doc = #client_doc]
        #[derive(Debug, Clone)]
        #vis struct #client_ident {
            client: ::rpcd_client::Client,
            target: ::rpcd_client::Target,
            options: ::rpcd_client::CallOptions,
        }

        impl #client_ident {
            /// The service name: the prefix of every function name.
            #vis const SERVICE: &'static str = #service;
            /// Every function of the service, as registered on the daemon.
            #vis const FUNCTIONS: &'static [&'static str] = &[#(#functions),*];

            /// A stub calling the service on `target` (`host:port` or a service name)
            /// through `client`, with the client's default call options.
            #vis fn new(
                client: &::rpcd_client::Client,
                target: impl ::core::convert::Into<::rpcd_client::Target>,
            ) -> Self {
                Self {
                    client: ::core::clone::Clone::clone(client),
                    target: ::core::convert::Into::into(target),
                    options: client.default_options(),
                }
            }

            /// The same stub with other per-call options (deadline, idempotent).
            #vis fn with_options(mut self, options: ::rpcd_client::CallOptions) -> Self {
                self.options = options;
                self
            }

            /// Where the calls go.
            #vis fn target(&self) -> &::rpcd_client::Target {
                &self.target
            }

            #(#stubs)*
        }

        #[allow(dead_code, non_snake_case)]
        fn #check_fn() {
            #(#checks)*
        }
    }
}

/// True for `String`, `std::string::String` and `alloc::string::String`.
fn is_string(ty: &Type) -> bool {
    let Type::Path(path) = ty else { return false };
    if path.qself.is_some() {
        return false;
    }
    let names: Vec<String> = path
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    let plain = path
        .path
        .segments
        .iter()
        .all(|s| matches!(s.arguments, PathArguments::None));
    plain
        && matches!(
            names
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice(),
            ["String"] | ["std" | "alloc", "string", "String"]
        )
}

/// `KeyValue` → `key_value`, `Kv` → `kv`, `HTTPCache` → `http_cache`.
fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev_lower = i > 0 && (chars[i - 1].is_lowercase() || chars[i - 1].is_numeric());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            let prev_upper = i > 0 && chars[i - 1].is_uppercase();
            if i > 0 && (prev_lower || (prev_upper && next_lower)) {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::signature::type_text;
    use super::snake_case;

    #[test]
    fn snake_case_of_trait_names() {
        assert_eq!(snake_case("Kv"), "kv");
        assert_eq!(snake_case("KeyValue"), "key_value");
        assert_eq!(snake_case("HTTPCache"), "http_cache");
        assert_eq!(snake_case("Bulk2Store"), "bulk2_store");
    }

    #[test]
    fn type_text_drops_token_spacing() {
        let ty: syn::Type = syn::parse_quote!(std::collections::HashMap<String, Vec<Point>>);
        assert_eq!(
            type_text(&ty),
            "std::collections::HashMap<String, Vec<Point>>"
        );
        let ty: syn::Type = syn::parse_quote!((u8, Option<Box<Nested>>));
        assert_eq!(type_text(&ty), "(u8, Option<Box<Nested>>)");
    }
}
