//! `#[derive(HandoverState)]`: parse the struct and its `#[handover(...)]`
//! attributes, check them (collecting every error), then expand to an
//! `impl ::shellflip::HandoverState` and two private serde helper structs.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;
use syn::{Attribute, Data, DeriveInput, Expr, Fields, GenericParam, Ident, Lit, Member, Type};

use crate::errors::{first_and_last_span, Errors};
use crate::fingerprint::{canonical_tokens, fnv1a64};

/// What happens to a field across a restart.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Serialized with the state (the default).
    Data,
    /// Handed over as a file descriptor (`#[handover(fd)]`).
    Fd,
    /// Not carried; `Default::default()` in the new generation
    /// (`#[handover(skip)]`).
    Skip,
    /// Serialized as one MessagePack byte string (`Vec<u8>` fields, and
    /// `#[handover(bytes)]` on other byte containers).
    Bytes,
}

impl Role {
    fn keyword(self) -> &'static str {
        match self {
            Role::Data => "data",
            Role::Fd => "fd",
            Role::Skip => "skip",
            Role::Bytes => "bytes",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Named,
    Tuple,
    Unit,
}

struct Field {
    /// `self.<member>`: a name or an index.
    member: Member,
    /// The name the field goes by in the fds and the fingerprint.
    name: String,
    ty: Type,
    role: Role,
}

/// A checked `#[derive(HandoverState)]` input.
struct State {
    input: DeriveInput,
    shape: Shape,
    fields: Vec<Field>,
    version: u32,
}

/// Expands `#[derive(HandoverState)]` on `input`.
pub(crate) fn expand(input: TokenStream) -> syn::Result<TokenStream> {
    let input: DeriveInput = syn::parse2(input)?;
    let state = parse_state(input)?;
    Ok(expand_state(&state))
}

/// Checks the input, reporting every problem at once.
fn parse_state(input: DeriveInput) -> syn::Result<State> {
    let mut errors = Errors::default();

    let data = match &input.data {
        Data::Struct(data) => Some(data),
        Data::Enum(data) => {
            errors.at(
                data.enum_token.span,
                "#[derive(HandoverState)] works on structs, not enums; keep the enum in a field of a state struct (the enum then needs serde's `Serialize` and `Deserialize`)",
            );
            None
        }
        Data::Union(data) => {
            errors.at(
                data.union_token.span,
                "#[derive(HandoverState)] works on structs, not unions",
            );
            None
        }
    };

    for param in &input.generics.params {
        if let GenericParam::Lifetime(lifetime) = param {
            errors.spanned(
                lifetime,
                "a handover state owns its data (`'static`): lifetime parameters are not supported",
            );
        }
    }

    let version = parse_struct_attrs(&input.attrs, &mut errors);

    let mut fields = Vec::new();
    let shape = match data.map(|d| &d.fields) {
        Some(Fields::Named(_)) => Shape::Named,
        Some(Fields::Unnamed(_)) => Shape::Tuple,
        Some(Fields::Unit) | None => Shape::Unit,
    };
    if let Some(data) = data {
        for (index, field) in data.fields.iter().enumerate() {
            let (member, name) = match &field.ident {
                Some(ident) => (Member::Named(ident.clone()), ident.unraw().to_string()),
                None => (
                    Member::Unnamed(syn::Index {
                        index: index as u32,
                        span: field.ty.span(),
                    }),
                    index.to_string(),
                ),
            };
            let mut role = parse_field_attrs(&field.attrs, &mut errors);
            if role == Role::Data && is_byte_vec(&field.ty) {
                role = Role::Bytes;
            }
            if role == Role::Data {
                if let Some(kind) = fd_type_name(&field.ty) {
                    errors.spanned(
                        &field.ty,
                        format!(
                            "`{name}` holds a file descriptor (`{kind}`), which cannot be serialized: mark the field `#[handover(fd)]` to hand the descriptor itself over"
                        ),
                    );
                }
            }
            fields.push(Field {
                member,
                name,
                ty: field.ty.clone(),
                role,
            });
        }
    }

    errors.finish()?;
    Ok(State {
        input,
        shape,
        fields,
        version,
    })
}

/// Reads `#[handover(version = N)]` on the struct (0 when absent).
fn parse_struct_attrs(attrs: &[Attribute], errors: &mut Errors) -> u32 {
    let mut version: Option<u32> = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident("handover")) {
        let result = attr.parse_nested_meta(|meta| {
            let name = meta_name(&meta);
            match name.as_str() {
                "version" => {
                    let value: Expr = meta.value()?.parse()?;
                    if version.is_some() {
                        errors.spanned(
                            &meta.path,
                            "`version` is given more than once; keep only one",
                        );
                        return Ok(());
                    }
                    match &value {
                        Expr::Lit(syn::ExprLit {
                            lit: Lit::Int(lit), ..
                        }) if lit.suffix().is_empty() || lit.suffix() == "u32" => {
                            match lit.base10_parse::<u32>() {
                                Ok(n) => version = Some(n),
                                Err(_) => errors.spanned(lit, "`version` must fit in a u32"),
                            }
                        }
                        other => errors.spanned(
                            other,
                            "`version` takes an integer, e.g. `#[handover(version = 2)]`",
                        ),
                    }
                }
                "skip" | "fd" | "bytes" => {
                    skip_value(&meta)?;
                    errors.spanned(
                        &meta.path,
                        format!("`{name}` goes on a field, not on the struct"),
                    );
                }
                _ => {
                    skip_value(&meta)?;
                    errors.spanned(&meta.path, unknown_attribute(&name));
                }
            }
            Ok(())
        });
        errors.check(result);
    }
    version.unwrap_or(0)
}

/// True for `Vec<u8>` as written (`Vec<u8>`, `std::vec::Vec<u8>`, ...):
/// carried as one byte string rather than a sequence of integers.
fn is_byte_vec(ty: &Type) -> bool {
    let Type::Path(path) = ty else {
        return false;
    };
    if path.qself.is_some() {
        return false;
    }
    let Some(last) = path.path.segments.last() else {
        return false;
    };
    if last.ident != "Vec" {
        return false;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return false;
    };
    matches!(
        args.args.first(),
        Some(syn::GenericArgument::Type(Type::Path(inner)))
            if args.args.len() == 1 && inner.qself.is_none() && inner.path.is_ident("u8")
    )
}

/// Reads `#[handover(skip)]` / `#[handover(fd)]` / `#[handover(bytes)]` on
/// a field.
fn parse_field_attrs(attrs: &[Attribute], errors: &mut Errors) -> Role {
    let mut role = Role::Data;
    for attr in attrs.iter().filter(|a| a.path().is_ident("handover")) {
        let result = attr.parse_nested_meta(|meta| {
            let name = meta_name(&meta);
            let given = match name.as_str() {
                "skip" => Role::Skip,
                "fd" => Role::Fd,
                "bytes" => Role::Bytes,
                "version" => {
                    skip_value(&meta)?;
                    errors.spanned(&meta.path, "`version` goes on the struct, not on a field");
                    return Ok(());
                }
                _ => {
                    skip_value(&meta)?;
                    errors.spanned(&meta.path, unknown_attribute(&name));
                    return Ok(());
                }
            };
            if !meta.input.is_empty() && !meta.input.peek(syn::Token![,]) {
                skip_value(&meta)?;
                errors.spanned(&meta.path, format!("`{name}` takes no value: write `#[handover({name})]`"));
            }
            if role == given {
                errors.spanned(&meta.path, format!("`{name}` is given more than once"));
            } else if role != Role::Data {
                errors.spanned(
                    &meta.path,
                    format!(
                        "a field is at most one of `skip` (rebuilt with Default), `fd` (handed over as a file descriptor) or `bytes` (carried as one byte string); it is already `{}`",
                        role.keyword()
                    ),
                );
            } else {
                role = given;
            }
            Ok(())
        });
        errors.check(result);
    }
    role
}

fn meta_name(meta: &ParseNestedMeta) -> String {
    meta.path
        .get_ident()
        .map(ToString::to_string)
        .unwrap_or_else(|| meta.path.to_token_stream().to_string().replace(' ', ""))
}

/// Consumes the value of an attribute entry that is being refused, so
/// parsing goes on with the next entry.
fn skip_value(meta: &ParseNestedMeta) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        meta.value()?.parse::<Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.input.parse::<proc_macro2::Group>()?;
    }
    Ok(())
}

fn unknown_attribute(name: &str) -> String {
    format!(
        "unknown handover attribute `{name}`; on a field: `#[handover(skip)]` or `#[handover(fd)]`, on the struct: `#[handover(version = N)]`"
    )
}

/// The standard fd-holding type a field has, if it is one (possibly in an
/// `Arc`), so that forgetting `#[handover(fd)]` gets a clear message rather
/// than a missing `Serialize`.
fn fd_type_name(ty: &Type) -> Option<&'static str> {
    let Type::Path(path) = ty else { return None };
    if path.qself.is_some() {
        return None;
    }
    let segments: Vec<&syn::PathSegment> = path.path.segments.iter().collect();
    let last = segments.last()?;
    if last.ident == "Arc" {
        if let syn::PathArguments::AngleBracketed(args) = &last.arguments {
            if let [syn::GenericArgument::Type(inner)] =
                args.args.iter().collect::<Vec<_>>().as_slice()
            {
                return fd_type_name(inner);
            }
        }
        return None;
    }
    const FD_TYPES: &[&str] = &[
        "TcpListener",
        "TcpStream",
        "UdpSocket",
        "UnixListener",
        "UnixStream",
        "UnixDatagram",
        "OwnedFd",
    ];
    if let Some(name) = FD_TYPES.iter().find(|n| last.ident == n) {
        return Some(name);
    }
    // `File` alone may well be a type of the service's own; `fs::File`
    // is the standard or Tokio one.
    let in_fs = segments.len() >= 2 && segments[segments.len() - 2].ident == "fs";
    (last.ident == "File" && in_fs).then_some("File")
}

/// The fingerprint of the schema: the version, the shape, and the name,
/// role and type (as written) of every field that crosses the restart.
/// Skipped fields are left out (they do not cross), and named fields are
/// taken in name order (the payload is a map, so their order does not
/// matter).
fn fingerprint(state: &State) -> u64 {
    let mut lines = vec![
        "shellflip HandoverState 1".to_owned(),
        format!("version {}", state.version),
        match state.shape {
            Shape::Named => "named",
            Shape::Tuple => "tuple",
            Shape::Unit => "unit",
        }
        .to_owned(),
    ];
    let mut fields: Vec<String> = state
        .fields
        .iter()
        .filter(|f| f.role != Role::Skip)
        .map(|f| {
            format!(
                "{} {}: {}",
                f.role.keyword(),
                f.name,
                canonical_tokens(&f.ty.to_token_stream())
            )
        })
        .collect();
    if state.shape == Shape::Named {
        fields.sort();
    }
    lines.extend(fields);
    fnv1a64(lines.join("\n").as_bytes())
}

fn expand_state(state: &State) -> TokenStream {
    let ident = &state.input.ident;
    let type_name = ident.unraw().to_string();
    let fingerprint = syn::LitInt::new(&format!("{:#018x}", fingerprint(state)), Span::call_site());
    let (impl_generics, ty_generics, where_clause) = state.input.generics.split_for_impl();

    let data: Vec<&Field> = state
        .fields
        .iter()
        .filter(|f| matches!(f.role, Role::Data | Role::Bytes))
        .collect();
    let fds: Vec<&Field> = state.fields.iter().filter(|f| f.role == Role::Fd).collect();

    // Every requirement on a field type is a where-clause predicate carrying
    // the span of that type: a type that lacks a trait is reported once, on
    // the field, rather than deep inside generated serde code.
    let mut predicates: Vec<TokenStream> = where_clause
        .map(|w| w.predicates.iter().map(ToTokens::to_token_stream).collect())
        .unwrap_or_default();
    let has_type_params = state
        .input
        .generics
        .params
        .iter()
        .any(|p| matches!(p, GenericParam::Type(_)));
    if has_type_params {
        predicates.push(quote!(Self: ::core::marker::Send + 'static));
    }
    for field in &state.fields {
        let bounds = match field.role {
            Role::Data => quote!(
                ::shellflip::__private::serde::Serialize
                    + ::shellflip::__private::serde::de::DeserializeOwned
            ),
            Role::Fd => quote!(::shellflip::HandoverFd),
            Role::Skip => quote!(::core::default::Default),
            Role::Bytes => {
                quote!(::core::convert::AsRef<[u8]> + ::core::convert::From<::std::vec::Vec<u8>>)
            }
        };
        predicates.push(field_predicate(&field.ty, bounds));
    }
    let where_clause = if predicates.is_empty() {
        quote!()
    } else {
        quote!(where #(#predicates,)*)
    };

    let helpers = helper_structs(state, &data, &type_name);

    let fds_param = if fds.is_empty() {
        quote!(_fds)
    } else {
        quote!(fds)
    };
    let put_fds = fds.iter().map(|f| {
        let member = &f.member;
        let name = &f.name;
        quote!(fds.put_field(#name, &self.#member)?;)
    });
    let encoded = if data.is_empty() {
        quote!(&())
    } else {
        let values = data.iter().map(|f| {
            let member = &f.member;
            quote!(&self.#member)
        });
        match state.shape {
            Shape::Named => {
                let names = data.iter().map(|f| &f.member);
                quote!(&__ShellflipEncode { #(#names: #values),* })
            }
            _ => quote!(&__ShellflipEncode(#(#values),*)),
        }
    };

    let decode_data = if data.is_empty() {
        quote! {
            let () = ::shellflip::__private::state::decode_data(Self::TYPE_NAME, payload)?;
        }
    } else {
        let types = data.iter().map(|f| &f.ty);
        quote! {
            let data: __ShellflipDecode<#(#types),*> =
                ::shellflip::__private::state::decode_data(Self::TYPE_NAME, payload)?;
        }
    };
    let mut next_data = 0u32;
    let values: Vec<TokenStream> = state
        .fields
        .iter()
        .map(|f| {
            let (first, last) = first_and_last_span(&f.ty.to_token_stream());
            match f.role {
                Role::Data | Role::Bytes => {
                    let member = match &f.member {
                        Member::Named(ident) => quote!(#ident),
                        Member::Unnamed(_) => {
                            let index = syn::Index::from(next_data as usize);
                            quote!(#index)
                        }
                    };
                    next_data += 1;
                    quote!(data.#member)
                }
                Role::Fd => {
                    let name = &f.name;
                    let call = quote_spanned!(last=> take_field(#name)?);
                    quote_spanned!(first=> fds.#call)
                }
                Role::Skip => quote_spanned!(first=> ::core::default::Default::default()),
            }
        })
        .collect();
    let constructed = match state.shape {
        Shape::Named => {
            let names = state.fields.iter().map(|f| &f.member);
            quote!(Self { #(#names: #values),* })
        }
        Shape::Tuple => quote!(Self(#(#values),*)),
        Shape::Unit => quote!(Self),
    };

    quote! {
        const _: () = {
            #helpers

            #[automatically_derived]
            impl #impl_generics ::shellflip::HandoverState for #ident #ty_generics #where_clause {
                const TYPE_NAME: &'static str = #type_name;
                const FINGERPRINT: u64 = #fingerprint;

                fn encode_state(
                    &self,
                    #fds_param: &mut ::shellflip::StateFds,
                ) -> ::core::result::Result<::std::vec::Vec<u8>, ::shellflip::StateError> {
                    #(#put_fds)*
                    ::shellflip::__private::state::encode_data(Self::TYPE_NAME, #encoded)
                }

                fn decode_state(
                    payload: &[u8],
                    #fds_param: &mut ::shellflip::StateFds,
                ) -> ::core::result::Result<Self, ::shellflip::StateError> {
                    #decode_data
                    ::core::result::Result::Ok(#constructed)
                }
            }
        };
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

/// The serde structs of the data fields: one of references for encoding,
/// one that owns for decoding. They are generic over the field types (one
/// parameter per field) so that serde's code is never where a missing
/// `Serialize` is reported: the where clause of the impl is.
fn helper_structs(state: &State, data: &[&Field], type_name: &str) -> TokenStream {
    if data.is_empty() {
        return quote!();
    }
    let params: Vec<Ident> = (0..data.len()).map(|i| format_ident!("T{}", i)).collect();
    let serde_attr = quote! {
        #[serde(crate = "::shellflip::__private::serde", rename = #type_name)]
    };
    let encode_doc = format!(" The data fields of `{type_name}`, borrowed for encoding.");
    let decode_doc = format!(" The data fields of `{type_name}`, decoded.");
    let with: Vec<TokenStream> = data
        .iter()
        .zip(&params)
        .map(|(f, param)| match f.role {
            Role::Bytes => {
                // serde infers no bounds for a `with` field: state them.
                let serialize = format!("{param}: ::core::convert::AsRef<[u8]>");
                let deserialize = format!("{param}: ::core::convert::From<::std::vec::Vec<u8>>");
                quote!(#[serde(
                    with = "::shellflip::__private::state::bytes",
                    bound(serialize = #serialize, deserialize = #deserialize)
                )])
            }
            _ => quote!(),
        })
        .collect();
    let (encode_body, decode_body) = match state.shape {
        Shape::Named => {
            let names: Vec<&Member> = data.iter().map(|f| &f.member).collect();
            (
                quote!({ #(#with #names: &'a #params,)* }),
                quote!({ #(#with #names: #params,)* }),
            )
        }
        _ => (
            quote!((#(#with &'a #params,)*);),
            quote!((#(#with #params,)*);),
        ),
    };
    quote! {
        #[doc = #encode_doc]
        #[derive(::shellflip::__private::serde::Serialize)]
        #serde_attr
        struct __ShellflipEncode<'a, #(#params),*> #encode_body

        #[doc = #decode_doc]
        #[derive(::shellflip::__private::serde::Deserialize)]
        #serde_attr
        struct __ShellflipDecode<#(#params),*> #decode_body
    }
}
