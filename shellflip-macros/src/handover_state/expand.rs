//! Writing the output of a checked input: a `const _: () = { ... };` block
//! with the two private serde helper structs, the compile-time check that
//! `from` names an older version, and `impl ::shellflip::HandoverState`.
//!
//! Every requirement on a field type is a where-clause predicate carrying
//! the span of that type: a type that lacks a trait is reported once, on
//! the field, rather than deep inside generated serde code.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::{GenericParam, Ident, Member, Type};

use super::{Field, FieldDefault, Role, Shape, State};
use crate::errors::first_and_last_span;

/// The derive's output for `state`.
pub(super) fn state(state: &State) -> TokenStream {
    let ident = &state.input.ident;
    let type_name = ident.unraw().to_string();
    let (impl_generics, ty_generics, _) = state.input.generics.split_for_impl();
    let data: Vec<&Field> = state
        .fields
        .iter()
        .filter(|f| f.role.is_serialized())
        .collect();

    let helpers = helper_structs(&data, &type_name);
    let version_check = version_check(state, &type_name);
    let where_clause = where_clause(state);
    let version = state.version.map(|v| {
        let v = syn::LitInt::new(&v.to_string(), Span::call_site());
        quote!(const VERSION: u32 = #v;)
    });
    let field_aliases = field_aliases(&data);
    let migration = migration(state);
    let encode = encode_body(state, &data);
    let decode = decode_body(state, &data);

    quote! {
        const _: () = {
            #helpers

            #version_check

            #[automatically_derived]
            impl #impl_generics ::shellflip::HandoverState for #ident #ty_generics #where_clause {
                const TYPE_NAME: &'static str = #type_name;
                #version
                #field_aliases
                #migration

                fn encode_state(
                    &self,
                    state: &mut ::shellflip::StateEncoder<'_>,
                ) -> ::core::result::Result<(), ::shellflip::StateError> {
                    #encode
                }

                fn decode_state(
                    state: &mut ::shellflip::StateDecoder<'_>,
                ) -> ::core::result::Result<Self, ::shellflip::StateError> {
                    #decode
                }
            }
        };
    }
}

/// The impl's where clause: the struct's own predicates, `Self: Send +
/// Sync + 'static` for a generic struct, what each field's role needs of
/// its type, and what a migration needs of the previous schema.
fn where_clause(state: &State) -> TokenStream {
    let generics = &state.input.generics;
    let mut predicates: Vec<TokenStream> = generics
        .where_clause
        .as_ref()
        .map(|w| w.predicates.iter().map(ToTokens::to_token_stream).collect())
        .unwrap_or_default();
    if generics
        .params
        .iter()
        .any(|p| matches!(p, GenericParam::Type(_)))
    {
        predicates.push(quote!(Self: ::core::marker::Send + ::core::marker::Sync + 'static));
    }
    for field in &state.fields {
        predicates.push(field_predicate(&field.ty, role_bounds(field.role)));
        if let Some(FieldDefault::Trait) = field.default {
            predicates.push(field_predicate(&field.ty, quote!(::core::default::Default)));
        }
    }
    if let Some((from, span)) = &state.from {
        let ident = &state.input.ident;
        let (_, ty_generics, _) = generics.split_for_impl();
        predicates.push(quote_spanned!(*span=> #from: ::shellflip::HandoverState));
        predicates.push(quote_spanned!(*span=> #ident #ty_generics: ::core::convert::From<#from>));
    }
    if predicates.is_empty() {
        quote!()
    } else {
        quote!(where #(#predicates,)*)
    }
}

/// What a field's type must implement for its role.
fn role_bounds(role: Role) -> TokenStream {
    match role {
        Role::Data => quote!(
            ::shellflip::__private::serde::Serialize
                + ::shellflip::__private::serde::de::DeserializeOwned
        ),
        Role::Fd => quote!(::shellflip::HandoverFd),
        Role::Skip => quote!(::core::default::Default),
        Role::Bytes => {
            quote!(::core::convert::AsRef<[u8]> + ::core::convert::From<::std::vec::Vec<u8>>)
        }
    }
}

/// `<ty>: <bounds>`, spanned so that an unmet bound underlines the type.
fn field_predicate(ty: &Type, bounds: TokenStream) -> TokenStream {
    let (_, last) = first_and_last_span(&ty.to_token_stream());
    let bounds = respan(bounds, last);
    quote!(#ty: #bounds)
}

/// `tokens` with every span (in groups too) set to `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            if let proc_macro2::TokenTree::Group(group) = &token {
                let mut inner =
                    proc_macro2::Group::new(group.delimiter(), respan(group.stream(), span));
                inner.set_span(span);
                token = inner.into();
            } else {
                token.set_span(span);
            }
            token
        })
        .collect()
}

/// `FIELD_ALIASES`: each renamed data field with its former names.
fn field_aliases(data: &[&Field]) -> Option<TokenStream> {
    let renamed: Vec<TokenStream> = data
        .iter()
        .filter(|f| !f.aliases.is_empty())
        .map(|f| {
            let name = &f.name;
            let aliases = &f.aliases;
            quote!((#name, &[#(#aliases),*]))
        })
        .collect();
    (!renamed.is_empty()).then(|| {
        quote!(const FIELD_ALIASES: &'static [(&'static str, &'static [&'static str])] = &[#(#renamed),*];)
    })
}

/// With `from`: the oldest version this build decodes, and
/// `decode_version`, which decodes an older version as the previous schema
/// and converts it.
fn migration(state: &State) -> Option<TokenStream> {
    let (from, _) = state.from.as_ref()?;
    Some(quote! {
        const OLDEST_VERSION: u32 = <#from as ::shellflip::HandoverState>::OLDEST_VERSION;

        fn decode_version(
            version: u32,
            state: &mut ::shellflip::StateDecoder<'_>,
        ) -> ::core::result::Result<Self, ::shellflip::StateError> {
            state.migrate::<#from, Self>(version)
        }
    })
}

/// The previous schema must be older: checked at compile time where the
/// struct has no generics (its `from` type cannot mention them then).
fn version_check(state: &State, type_name: &str) -> TokenStream {
    let (Some((from, span)), Some(version)) = (&state.from, state.version) else {
        return quote!();
    };
    if !state.input.generics.params.is_empty() {
        return quote!();
    }
    let message = format!(
        "`from` must name a previous schema: its `version` must be lower than {version}, the version of `{type_name}`"
    );
    let version = syn::LitInt::new(&version.to_string(), Span::call_site());
    quote_spanned! {*span=>
        const _: () = {
            #[allow(unused_imports)]
            use ::shellflip::__private::state::NoVersion as _;
            if ::shellflip::__private::state::VersionOf::<#from>::VERSION >= #version {
                ::core::panic!(#message)
            }
        };
    }
}

/// `encode_state`'s body: the fd fields handed over by name, then the data
/// fields, borrowed, written at once.
fn encode_body(state: &State, data: &[&Field]) -> TokenStream {
    let put_fds = state.fields.iter().filter(|f| f.role == Role::Fd).map(|f| {
        let member = &f.member;
        let name = &f.name;
        quote!(state.put_fd(#name, &self.#member)?;)
    });
    let borrowed = data.iter().map(|f| {
        let name = helper_member(f);
        let member = &f.member;
        quote!(#name: &self.#member)
    });
    quote! {
        #(#put_fds)*
        state.put_data(&__ShellflipEncode { #(#borrowed),* })
    }
}

/// `decode_state`'s body: the data fields read at once, then the struct
/// built of them, of the descriptors taken by name and of the skipped
/// fields' defaults.
fn decode_body(state: &State, data: &[&Field]) -> TokenStream {
    let types = data.iter().map(|f| &f.ty);
    let decoded = if data.is_empty() {
        quote!(let __ShellflipDecode {} = state.take_data()?;)
    } else {
        quote!(let data: __ShellflipDecode<#(#types),*> = state.take_data()?;)
    };
    let values = state.fields.iter().map(field_value);
    let constructed = match state.shape {
        Shape::Named => {
            let names = state.fields.iter().map(|f| &f.member);
            quote!(Self { #(#names: #values),* })
        }
        Shape::Tuple => quote!(Self(#(#values),*)),
        Shape::Unit => quote!(Self),
    };
    quote! {
        #decoded
        ::core::result::Result::Ok(#constructed)
    }
}

/// The value of one field in `decode_state`. A descriptor's or a skipped
/// field's is spanned on the field's type, so that a type without
/// `HandoverFd` or `Default` is blamed there.
fn field_value(field: &Field) -> TokenStream {
    let (first, last) = first_and_last_span(&field.ty.to_token_stream());
    match field.role {
        Role::Data | Role::Bytes => {
            let name = helper_member(field);
            match &field.default {
                None => quote!(data.#name),
                Some(FieldDefault::Trait) => quote!(data.#name.or_default()),
                Some(FieldDefault::Path(path)) => quote!(data.#name.or_else(#path)),
            }
        }
        Role::Fd => {
            let name = &field.name;
            let call = if field.aliases.is_empty() {
                quote_spanned!(last=> take_fd(#name)?)
            } else {
                let aliases = &field.aliases;
                quote_spanned!(last=> take_fd_renamed(#name, &[#(#aliases),*])?)
            };
            quote_spanned!(first=> state.#call)
        }
        Role::Skip => quote_spanned!(first=> ::core::default::Default::default()),
    }
}

/// The serde structs of the data fields: one of references for encoding,
/// one that owns for decoding, both named like the state (that is the
/// name the previous generation sent) with the fields' names (a tuple
/// struct's fields by index). They are generic over the field types (one
/// parameter per field) so that serde's code is never where a missing
/// `Serialize` is reported: the where clause of the impl is.
fn helper_structs(data: &[&Field], type_name: &str) -> TokenStream {
    let serde_attr = quote! {
        #[serde(crate = "::shellflip::__private::serde", rename = #type_name)]
    };
    let encode_doc = format!(" The data fields of `{type_name}`, borrowed for encoding.");
    let decode_doc = format!(" The data fields of `{type_name}`, decoded.");
    if data.is_empty() {
        return quote! {
            #[doc = #encode_doc]
            #[derive(::shellflip::__private::serde::Serialize)]
            #serde_attr
            struct __ShellflipEncode {}

            #[doc = #decode_doc]
            #[derive(::shellflip::__private::serde::Deserialize)]
            #serde_attr
            struct __ShellflipDecode {}
        };
    }
    let params: Vec<Ident> = (0..data.len()).map(|i| format_ident!("T{}", i)).collect();
    let fields = data.iter().zip(&params);
    let encode_fields = fields
        .clone()
        .map(|(field, param)| encode_field(field, param));
    let decode_fields = fields.map(|(field, param)| decode_field(field, param));
    quote! {
        #[doc = #encode_doc]
        #[derive(::shellflip::__private::serde::Serialize)]
        #serde_attr
        struct __ShellflipEncode<'a, #(#params),*> {
            #(#encode_fields,)*
        }

        #[doc = #decode_doc]
        #[derive(::shellflip::__private::serde::Deserialize)]
        #serde_attr
        struct __ShellflipDecode<#(#params),*> {
            #(#decode_fields,)*
        }
    }
}

/// A field of `__ShellflipEncode`: a reference to the state's field, of
/// type `param`.
fn encode_field(field: &Field, param: &Ident) -> TokenStream {
    let name = helper_member(field);
    let rename = index_rename(field);
    if field.role != Role::Bytes {
        return quote!(#rename #name: &'a #param);
    }
    // serde infers no bounds for a `with` field: state them.
    let bound = format!("{param}: ::core::convert::AsRef<[u8]>");
    quote! {
        #rename
        #[serde(serialize_with = "::shellflip::__private::state::bytes::serialize", bound(serialize = #bound))]
        #name: &'a #param
    }
}

/// A field of `__ShellflipDecode`, of type `param`, found by its former
/// names too; with `default`, whether it was received at all.
fn decode_field(field: &Field, param: &Ident) -> TokenStream {
    let name = helper_member(field);
    let rename = index_rename(field);
    let aliases = &field.aliases;
    let alias = quote!(#(#[serde(alias = #aliases)])*);
    let private = quote!(::shellflip::__private::state);
    // serde infers no bounds for a `with` field: state them.
    let bound = format!("{param}: ::core::convert::From<::std::vec::Vec<u8>>");
    match (field.role, field.default.is_some()) {
        (Role::Bytes, false) => quote! {
            #rename #alias
            #[serde(deserialize_with = "::shellflip::__private::state::bytes::deserialize", bound(deserialize = #bound))]
            #name: #param
        },
        (Role::Bytes, true) => quote! {
            #rename #alias
            #[serde(
                default = "::shellflip::__private::state::Received::absent",
                deserialize_with = "::shellflip::__private::state::bytes::received",
                bound(deserialize = #bound)
            )]
            #name: #private::Received<#param>
        },
        (_, false) => quote!(#rename #alias #name: #param),
        (_, true) => quote! {
            #rename #alias
            #[serde(default = "::shellflip::__private::state::Received::absent")]
            #name: #private::Received<#param>
        },
    }
}

/// The name of a serialized field in the helper structs: the field's own,
/// or `_<index>` in a tuple struct.
fn helper_member(field: &Field) -> Ident {
    match &field.member {
        Member::Named(ident) => ident.clone(),
        Member::Unnamed(index) => format_ident!("_{}", index.index),
    }
}

/// A tuple struct's field goes by its index in the state: `_0` in the
/// helpers is renamed `"0"`.
fn index_rename(field: &Field) -> TokenStream {
    match field.member {
        Member::Unnamed(_) => {
            let index = &field.name;
            quote!(#[serde(rename = #index)])
        }
        Member::Named(_) => quote!(),
    }
}
