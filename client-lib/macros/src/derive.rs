//! `#[derive(Describe)]`: a struct's or enum's schema from its definition, with the Rust
//! field and variant names (what serde sends unless renamed).

use proc_macro2::TokenStream as TokenStream2;
use quote::quote;
use syn::{Data, DeriveInput, Fields};

pub fn expand(input: DeriveInput) -> syn::Result<TokenStream2> {
    let ident = &input.ident;
    let name = ident.to_string();
    let schema = quote!(::rpcd_client::ipc::Schema);
    let body = match &input.data {
        Data::Struct(data) => match &data.fields {
            Fields::Named(_) => {
                let fields = named_fields(&data.fields);
                quote!(#schema::Struct {
                    name: ::std::string::String::from(#name),
                    fields: ::std::vec![#(#fields),*],
                })
            }
            fields => unnamed(fields),
        },
        Data::Enum(data) => {
            let variants = data.variants.iter().map(|v| {
                let vname = v.ident.to_string();
                let data = match &v.fields {
                    Fields::Unit => quote!(::core::option::Option::None),
                    Fields::Named(_) => {
                        let fields = named_fields(&v.fields);
                        quote!(::core::option::Option::Some(#schema::Struct {
                            name: ::std::string::String::from(#vname),
                            fields: ::std::vec![#(#fields),*],
                        }))
                    }
                    fields => {
                        let inner = unnamed(fields);
                        quote!(::core::option::Option::Some(#inner))
                    }
                };
                quote!(::rpcd_client::ipc::Variant {
                    name: ::std::string::String::from(#vname),
                    data: #data,
                })
            });
            quote!(#schema::Enum {
                name: ::std::string::String::from(#name),
                variants: ::std::vec![#(#variants),*],
            })
        }
        Data::Union(u) => {
            return Err(syn::Error::new(
                u.union_token.span,
                "a union cannot cross the wire: derive Describe on a struct or an enum",
            ))
        }
    };
    let mut generics = input.generics.clone();
    for param in generics.type_params_mut() {
        param
            .bounds
            .push(syn::parse_quote!(::rpcd_client::Describe));
    }
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics ::rpcd_client::Describe for #ident #ty_generics #where_clause {
            fn schema() -> #schema {
                #body
            }
        }
    })
}

fn named_fields(fields: &Fields) -> Vec<TokenStream2> {
    fields
        .iter()
        .map(|f| {
            let fname = f
                .ident
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            let ty = &f.ty;
            quote!(::rpcd_client::ipc::Field {
                name: ::std::string::String::from(#fname),
                ty: <#ty as ::rpcd_client::Describe>::schema(),
            })
        })
        .collect()
}

/// A tuple struct or variant: one field is its content (serde's newtype), several a tuple,
/// none a unit.
fn unnamed(fields: &Fields) -> TokenStream2 {
    let types: Vec<_> = fields.iter().map(|f| &f.ty).collect();
    match types.as_slice() {
        [] => quote!(::rpcd_client::ipc::Schema::Unit),
        [ty] => quote!(<#ty as ::rpcd_client::Describe>::schema()),
        types => quote!(::rpcd_client::ipc::Schema::Tuple {
            items: ::std::vec![#(<#types as ::rpcd_client::Describe>::schema()),*],
        }),
    }
}
