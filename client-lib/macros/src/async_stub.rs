//! The async client stub `#[service]` emits beside the blocking one: for `trait Kv`,
//! `KvAsyncClient` with one `async fn` per method, calling through an
//! `rpcd_client::tokio::Client`.
//!
//! A proc-macro cannot see the features of the crate its output lands in, so the stub is
//! wrapped in `rpcd_client::__private::if_tokio!`, which keeps it when `rpcd_client` was
//! built with its `tokio` feature and drops it otherwise.

use proc_macro2::TokenStream as TokenStream2;
use quote::{format_ident, quote};
use syn::{Ident, ItemTrait};

use super::{is_string, Method};

/// The async stub of `item`'s service, behind `rpcd_client`'s `tokio` feature.
pub(crate) fn emit_async(service: &str, item: &ItemTrait, methods: &[Method]) -> TokenStream2 {
    let vis = &item.vis;
    let trait_ident = &item.ident;
    let ident = format_ident!("{}AsyncClient", trait_ident);
    let stubs = methods.iter().map(|m| {
        let method = &m.ident;
        let function = &m.function;
        let reply = &m.reply;
        let names: Vec<&Ident> = m.args.iter().map(|(n, _)| n).collect();
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
        let doc = format!(
            "Calls `{function}` on the target; dropping the future before it completes \
             cancels the call."
        );
        quote! {
            #(#attrs)*
            #[doc = ""]
            #[doc = #doc]
            #vis async fn #method(&self, #(#params),*)
                -> ::core::result::Result<#reply, ::rpcd_client::CallError>
            {
                #(#converts)*
                self.client.call_with(&self.target, #function, #packed, self.options).await
            }
        }
    });
    let doc = format!(
        "Async client stub of the `{service}` service: one `async fn` per function of \
         [`{trait_ident}`], through an `rpcd_client::tokio::Client`."
    );
    quote! {
        ::rpcd_client::__private::if_tokio! {
            #[doc = #doc]
            #[derive(Debug, Clone)]
            #vis struct #ident {
                client: ::rpcd_client::tokio::Client,
                target: ::rpcd_client::Target,
                options: ::rpcd_client::CallOptions,
            }

            impl #ident {
                /// A stub calling the service on `target` (`host:port` or a service name)
                /// through `client`, with the client's default call options.
                #vis fn new(
                    client: &::rpcd_client::tokio::Client,
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

                #(#stubs)*
            }
        }
    }
}
