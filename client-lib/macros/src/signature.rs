//! What a method declares at registration, as tokens: its attributes and signature
//! (`rpcd_client::ipc::Declaration`), built from the method's doc comment and the
//! `Describe` schemas of its types.

use proc_macro2::TokenStream as TokenStream2;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::Type;

use crate::Method;

/// The `rpcd_client::ipc::Declaration` of a method: its attributes and signature.
pub(crate) fn declaration(m: &Method) -> TokenStream2 {
    let schema_of = |ty: &Type| {
        let name = type_text(ty);
        quote_spanned!(ty.span()=> {
            #[allow(unused_imports)]
            use ::rpcd_client::__private::{DescribedProbe as _, OpaqueProbe as _};
            // The borrow picks the probe (see `Probe`): needless only when `#ty` is `Describe`.
            #[allow(clippy::needless_borrow)]
            let schema = (&::rpcd_client::__private::Probe::<#ty>::new()).schema_of(#name);
            schema
        })
    };
    let args = m.args.iter().map(|(name, ty)| {
        let name = name.to_string();
        let ty = schema_of(ty);
        quote!(::rpcd_client::ipc::Field {
            name: ::std::string::String::from(#name),
            ty: #ty,
        })
    });
    let returns = schema_of(&m.reply);
    let fallible = m.fallible;
    let doc = &m.doc;
    let idempotent = m.declared.idempotent;
    let deadline = match m.declared.deadline_ms {
        Some(ms) => quote!(::core::option::Option::Some(#ms)),
        None => quote!(::core::option::Option::None),
    };
    quote! {
        ::rpcd_client::ipc::Declaration {
            idempotent: ::core::option::Option::Some(#idempotent),
            deadline_ms: #deadline,
            signature: ::core::option::Option::Some(::rpcd_client::ipc::Signature {
                args: ::std::vec![#(#args),*],
                returns: #returns,
                fallible: #fallible,
                doc: ::std::string::String::from(#doc),
            }),
        }
    }
}

/// A doc comment's text: one line per `///` line, the one space after `///` dropped.
pub(crate) fn doc_text(attrs: &[syn::Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        })
        .flat_map(|text| {
            text.lines()
                .map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    lines.join("\n").trim().to_owned()
}

/// A type as written, without the token spacing: `Vec < Point >` → `Vec<Point>`.
pub(crate) fn type_text(ty: &Type) -> String {
    let text = quote!(#ty).to_string();
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == ' ' {
            let prev = i.checked_sub(1).and_then(|p| chars.get(p)).copied();
            let next = chars.get(i + 1).copied();
            let tight = |c: Option<char>| matches!(c, Some('<' | '>' | ':' | '&'));
            if tight(prev) && prev != Some('>') || tight(next) || next == Some(',') {
                continue;
            }
        }
        out.push(c);
    }
    out
}
