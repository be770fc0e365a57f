//! `#[derive(HandoverState)]`: parse the struct and its `#[handover(...)]`
//! attributes, check them (collecting every error), then expand to an
//! `impl ::shellflip::HandoverState` and two private serde helper structs.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;
use syn::{
    Attribute, Data, DeriveInput, Expr, Fields, GenericParam, Ident, Lit, LitStr, Member, Type,
};

use crate::errors::{closest, first_and_last_span, one_of, Errors};

/// The attributes a field takes.
const FIELD_KEYS: &[&str] = &["skip", "fd", "bytes", "default", "alias"];
/// The attributes the struct takes.
const STRUCT_KEYS: &[&str] = &["version", "from"];

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

    fn is_serialized(self) -> bool {
        matches!(self, Role::Data | Role::Bytes)
    }
}

/// `#[handover(default)]` or `#[handover(default = "path")]`.
enum FieldDefault {
    /// `Default::default()`.
    Trait,
    /// A function returning the value.
    Path(syn::ExprPath),
}

/// How a field's attributes were written, for checks across fields.
#[derive(Default)]
struct FieldAttrs {
    role: Option<(Role, Span)>,
    default: Option<(FieldDefault, Span)>,
    aliases: Vec<LitStr>,
}

struct Field {
    /// `self.<member>`: a name or an index.
    member: Member,
    /// The name the field goes by in the state and the fds.
    name: String,
    ty: Type,
    role: Role,
    default: Option<FieldDefault>,
    aliases: Vec<LitStr>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Named,
    Tuple,
    Unit,
}

/// A checked `#[derive(HandoverState)]` input.
struct State {
    input: DeriveInput,
    shape: Shape,
    fields: Vec<Field>,
    version: Option<u32>,
    /// `#[handover(from = "Old")]`: the type and the literal's span.
    from: Option<(Type, Span)>,
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

    let (version, from) = parse_struct_attrs(&input.attrs, &input.ident, &mut errors);

    let shape = match data.map(|d| &d.fields) {
        Some(Fields::Named(_)) => Shape::Named,
        Some(Fields::Unnamed(_)) => Shape::Tuple,
        Some(Fields::Unit) | None => Shape::Unit,
    };
    let mut fields = Vec::new();
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
            let attrs = parse_field_attrs(&field.attrs, &mut errors);
            let mut role = attrs.role.map_or(Role::Data, |(role, _)| role);
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
            if let Some((_, span)) = &attrs.default {
                match role {
                    Role::Skip => errors.at(
                        *span,
                        "a skipped field is always rebuilt with `Default`; `default` says what a carried field gets when the previous generation did not send it: remove one of them",
                    ),
                    Role::Fd => errors.at(
                        *span,
                        "a file descriptor has no default: a descriptor the previous generation did not send cannot be made up; open it in your code instead (e.g. with `Context::try_state_or_else`)",
                    ),
                    Role::Data | Role::Bytes => {}
                }
            }
            if role == Role::Skip {
                for alias in &attrs.aliases {
                    errors.spanned(
                        alias,
                        "a skipped field is not carried, so it has no former name to be found by: remove `alias` or `skip`",
                    );
                }
            } else if shape == Shape::Tuple {
                for alias in &attrs.aliases {
                    errors.spanned(
                        alias,
                        "fields of a tuple struct are matched by position: `alias` needs named fields",
                    );
                }
            }
            fields.push(Field {
                member,
                name,
                ty: field.ty.clone(),
                role,
                default: attrs.default.map(|(default, _)| default),
                aliases: attrs.aliases,
            });
        }
    }
    check_aliases(&fields, &mut errors);

    errors.finish()?;
    Ok(State {
        input,
        shape,
        fields,
        version,
        from,
    })
}

/// An alias must not name the field itself, another field, or another
/// field's alias; nor be given twice.
fn check_aliases(fields: &[Field], errors: &mut Errors) {
    for (i, field) in fields.iter().enumerate() {
        for (j, alias) in field.aliases.iter().enumerate() {
            let value = alias.value();
            if value == field.name {
                errors.spanned(
                    alias,
                    format!("`{value}` is this field's own name; an alias is a former name"),
                );
            } else if field.aliases[..j].iter().any(|a| a.value() == value) {
                errors.spanned(
                    alias,
                    format!("the alias `{value}` is given more than once"),
                );
            } else if let Some(other) = fields.iter().find(|f| f.name == value) {
                errors.spanned(
                    alias,
                    format!(
                        "`{value}` is the name of the field `{}`: a received `{value}` would be ambiguous",
                        other.name
                    ),
                );
            } else if let Some(other) = fields[..i]
                .iter()
                .find(|f| f.aliases.iter().any(|a| a.value() == value))
            {
                errors.spanned(
                    alias,
                    format!(
                        "`{value}` is already an alias of the field `{}`: a received `{value}` would be ambiguous",
                        other.name
                    ),
                );
            }
        }
    }
}

/// Reads `#[handover(version = N, from = "Old")]` on the struct.
fn parse_struct_attrs(
    attrs: &[Attribute],
    ident: &Ident,
    errors: &mut Errors,
) -> (Option<u32>, Option<(Type, Span)>) {
    let mut version: Option<u32> = None;
    let mut version_seen = false;
    let mut from: Option<(Type, Span)> = None;
    let mut from_path: Option<syn::Path> = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident("handover")) {
        let result = attr.parse_nested_meta(|meta| {
            let name = meta_name(&meta);
            match name.as_str() {
                "version" => {
                    let value: Expr = meta.value()?.parse()?;
                    if version_seen {
                        errors.spanned(
                            &meta.path,
                            "`version` is given more than once; keep only one",
                        );
                        return Ok(());
                    }
                    version_seen = true;
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
                "from" => {
                    let value: Expr = meta.value()?.parse()?;
                    if from_path.is_some() {
                        errors.spanned(&meta.path, "`from` is given more than once; keep only one");
                        return Ok(());
                    }
                    from_path = Some(meta.path.clone());
                    match &value {
                        Expr::Lit(syn::ExprLit {
                            lit: Lit::Str(lit), ..
                        }) => match lit.parse::<Type>() {
                            Ok(ty) if is_ident(&ty, ident) => errors.spanned(
                                lit,
                                "`from` names this struct itself; it names the previous schema, kept in the code under another name or in a module",
                            ),
                            Ok(ty) => from = Some((ty, lit.span())),
                            Err(_) => errors.spanned(
                                lit,
                                "`from` takes the previous schema's type, e.g. `#[handover(version = 2, from = \"v1::State\")]`",
                            ),
                        },
                        other => errors.spanned(
                            other,
                            "`from` takes the previous schema's type as a string, e.g. `#[handover(version = 2, from = \"v1::State\")]`",
                        ),
                    }
                }
                _ if FIELD_KEYS.contains(&name.as_str()) => {
                    skip_value(&meta)?;
                    errors.spanned(
                        &meta.path,
                        format!("`{name}` goes on a field, not on the struct"),
                    );
                }
                _ => {
                    skip_value(&meta)?;
                    errors.spanned(&meta.path, unknown_attribute(&name, STRUCT_KEYS));
                }
            }
            Ok(())
        });
        errors.check(result);
    }
    if let (Some(path), false) = (&from_path, version_seen) {
        errors.spanned(
            path,
            "`from` needs a `version` higher than the previous schema's, e.g. `#[handover(version = 2, from = \"v1::State\")]`",
        );
    }
    (version, from)
}

/// True when `ty` is the plain path `ident`.
fn is_ident(ty: &Type, ident: &Ident) -> bool {
    matches!(ty, Type::Path(p) if p.qself.is_none() && p.path.is_ident(ident))
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

/// Reads `#[handover(skip | fd | bytes | default [= "path"] | alias = "name")]`
/// on a field.
fn parse_field_attrs(attrs: &[Attribute], errors: &mut Errors) -> FieldAttrs {
    let mut out = FieldAttrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("handover")) {
        let result = attr.parse_nested_meta(|meta| {
            let name = meta_name(&meta);
            let span = meta.path.span();
            let given = match name.as_str() {
                "skip" => Role::Skip,
                "fd" => Role::Fd,
                "bytes" => Role::Bytes,
                "default" => {
                    let default = if meta.input.peek(syn::Token![=]) {
                        let value: Expr = meta.value()?.parse()?;
                        match &value {
                            Expr::Lit(syn::ExprLit {
                                lit: Lit::Str(lit), ..
                            }) => match lit.parse::<syn::ExprPath>() {
                                Ok(path) => Some(FieldDefault::Path(path)),
                                Err(_) => {
                                    errors.spanned(lit, "`default` takes the path of a function returning the value, e.g. `#[handover(default = \"defaults::port\")]`");
                                    None
                                }
                            },
                            other => {
                                errors.spanned(other, "`default` takes a function's path as a string, e.g. `#[handover(default = \"defaults::port\")]`, or no value for `Default::default()`");
                                None
                            }
                        }
                    } else {
                        Some(FieldDefault::Trait)
                    };
                    if out.default.is_some() {
                        errors.spanned(&meta.path, "`default` is given more than once; keep only one");
                    } else if let Some(default) = default {
                        out.default = Some((default, span));
                    }
                    return Ok(());
                }
                "alias" => {
                    if !meta.input.peek(syn::Token![=]) {
                        skip_value(&meta)?;
                        errors.spanned(&meta.path, "`alias` takes the field's former name: `#[handover(alias = \"old_name\")]`");
                        return Ok(());
                    }
                    let value: Expr = meta.value()?.parse()?;
                    match value {
                        Expr::Lit(syn::ExprLit {
                            lit: Lit::Str(lit), ..
                        }) if !lit.value().is_empty() => out.aliases.push(lit),
                        other => errors.spanned(
                            other,
                            "`alias` takes the field's former name as a string, e.g. `#[handover(alias = \"old_name\")]`",
                        ),
                    }
                    return Ok(());
                }
                _ if STRUCT_KEYS.contains(&name.as_str()) => {
                    skip_value(&meta)?;
                    errors.spanned(&meta.path, format!("`{name}` goes on the struct, not on a field"));
                    return Ok(());
                }
                _ => {
                    skip_value(&meta)?;
                    errors.spanned(&meta.path, unknown_attribute(&name, FIELD_KEYS));
                    return Ok(());
                }
            };
            if !meta.input.is_empty() && !meta.input.peek(syn::Token![,]) {
                skip_value(&meta)?;
                errors.spanned(&meta.path, format!("`{name}` takes no value: write `#[handover({name})]`"));
            }
            match out.role {
                Some((role, _)) if role == given => {
                    errors.spanned(&meta.path, format!("`{name}` is given more than once"));
                }
                Some((role, _)) => errors.spanned(
                    &meta.path,
                    format!(
                        "a field is at most one of `skip` (rebuilt with Default), `fd` (handed over as a file descriptor) or `bytes` (carried as one byte string); it is already `{}`",
                        role.keyword()
                    ),
                ),
                None => out.role = Some((given, span)),
            }
            Ok(())
        });
        errors.check(result);
    }
    out
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

/// The message for an unknown key, with the closest known one where it
/// is supposed to go.
fn unknown_attribute(name: &str, here: &[&str]) -> String {
    let all: Vec<&str> = here
        .iter()
        .chain(FIELD_KEYS)
        .chain(STRUCT_KEYS)
        .copied()
        .collect();
    let hint = match closest(name, here).or_else(|| closest(name, &all)) {
        Some(known) => format!("did you mean `{known}`? "),
        None => String::new(),
    };
    format!(
        "unknown handover attribute `{name}`; {hint}a field takes {}, the struct {}",
        one_of(&[
            "skip",
            "fd",
            "bytes",
            "default",
            "default = \"path\"",
            "alias = \"old_name\""
        ]),
        one_of(&["version = N", "from = \"OldState\""])
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

/// The name of a serialized field in the helper structs: the field's own,
/// or `_<index>` in a tuple struct.
fn helper_member(field: &Field) -> Ident {
    match &field.member {
        Member::Named(ident) => ident.clone(),
        Member::Unnamed(index) => format_ident!("_{}", index.index),
    }
}

fn expand_state(state: &State) -> TokenStream {
    let ident = &state.input.ident;
    let type_name = ident.unraw().to_string();
    let (impl_generics, ty_generics, where_clause) = state.input.generics.split_for_impl();

    let data: Vec<&Field> = state
        .fields
        .iter()
        .filter(|f| f.role.is_serialized())
        .collect();

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
        predicates.push(quote!(Self: ::core::marker::Send + ::core::marker::Sync + 'static));
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
        if let Some(FieldDefault::Trait) = field.default {
            predicates.push(field_predicate(&field.ty, quote!(::core::default::Default)));
        }
    }
    if let Some((from, span)) = &state.from {
        predicates.push(quote_spanned!(*span=> #from: ::shellflip::HandoverState));
        predicates.push(quote_spanned!(*span=> #ident #ty_generics: ::core::convert::From<#from>));
    }
    let where_clause = if predicates.is_empty() {
        quote!()
    } else {
        quote!(where #(#predicates,)*)
    };

    let helpers = helper_structs(&data, &type_name);

    // encode_state
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

    // decode_state
    let types = data.iter().map(|f| &f.ty);
    let decoded = if data.is_empty() {
        quote!(let __ShellflipDecode {} = state.take_data()?;)
    } else {
        quote!(let data: __ShellflipDecode<#(#types),*> = state.take_data()?;)
    };
    let values: Vec<TokenStream> = state
        .fields
        .iter()
        .map(|f| {
            let (first, last) = first_and_last_span(&f.ty.to_token_stream());
            match f.role {
                Role::Data | Role::Bytes => {
                    let name = helper_member(f);
                    match &f.default {
                        None => quote!(data.#name),
                        Some(FieldDefault::Trait) => quote!(data.#name.or_default()),
                        Some(FieldDefault::Path(path)) => quote!(data.#name.or_else(#path)),
                    }
                }
                Role::Fd => {
                    let name = &f.name;
                    let call = if f.aliases.is_empty() {
                        quote_spanned!(last=> take_fd(#name)?)
                    } else {
                        let aliases = &f.aliases;
                        quote_spanned!(last=> take_fd_renamed(#name, &[#(#aliases),*])?)
                    };
                    quote_spanned!(first=> state.#call)
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

    let version = state.version.map(|v| {
        let v = syn::LitInt::new(&v.to_string(), Span::call_site());
        quote!(const VERSION: u32 = #v;)
    });
    let renamed: Vec<TokenStream> = data
        .iter()
        .filter(|f| !f.aliases.is_empty())
        .map(|f| {
            let name = &f.name;
            let aliases = &f.aliases;
            quote!((#name, &[#(#aliases),*]))
        })
        .collect();
    let field_aliases = (!renamed.is_empty()).then(|| {
        quote!(const FIELD_ALIASES: &'static [(&'static str, &'static [&'static str])] = &[#(#renamed),*];)
    });
    let migration = state.from.as_ref().map(|(from, _)| {
        quote! {
            const OLDEST_VERSION: u32 = <#from as ::shellflip::HandoverState>::OLDEST_VERSION;

            fn decode_version(
                version: u32,
                state: &mut ::shellflip::StateDecoder<'_>,
            ) -> ::core::result::Result<Self, ::shellflip::StateError> {
                state.migrate::<#from, Self>(version)
            }
        }
    });
    // The previous schema must be older: checked at compile time where the
    // struct has no generics (its `from` type cannot mention them then).
    let version_check = match (&state.from, state.version) {
        (Some((from, span)), Some(version)) if state.input.generics.params.is_empty() => {
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
        _ => quote!(),
    };

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
                    #(#put_fds)*
                    state.put_data(&__ShellflipEncode { #(#borrowed),* })
                }

                fn decode_state(
                    state: &mut ::shellflip::StateDecoder<'_>,
                ) -> ::core::result::Result<Self, ::shellflip::StateError> {
                    #decoded
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
    let private = quote!(::shellflip::__private::state);
    let mut encode_fields = Vec::new();
    let mut decode_fields = Vec::new();
    for (field, param) in data.iter().zip(&params) {
        let name = helper_member(field);
        let rename = match field.member {
            Member::Unnamed(_) => {
                let index = &field.name;
                quote!(#[serde(rename = #index)])
            }
            Member::Named(_) => quote!(),
        };
        let aliases = &field.aliases;
        let alias = quote!(#(#[serde(alias = #aliases)])*);
        // serde infers no bounds for a `with` field: state them.
        let (bytes_ser, bytes_de) = if field.role == Role::Bytes {
            (
                format!("{param}: ::core::convert::AsRef<[u8]>"),
                format!("{param}: ::core::convert::From<::std::vec::Vec<u8>>"),
            )
        } else {
            (String::new(), String::new())
        };
        encode_fields.push(match field.role {
            Role::Bytes => quote! {
                #rename
                #[serde(serialize_with = "::shellflip::__private::state::bytes::serialize", bound(serialize = #bytes_ser))]
                #name: &'a #param
            },
            _ => quote!(#rename #name: &'a #param),
        });
        decode_fields.push(match (field.role, field.default.is_some()) {
            (Role::Bytes, false) => quote! {
                #rename #alias
                #[serde(deserialize_with = "::shellflip::__private::state::bytes::deserialize", bound(deserialize = #bytes_de))]
                #name: #param
            },
            (Role::Bytes, true) => quote! {
                #rename #alias
                #[serde(
                    default = "::shellflip::__private::state::Received::absent",
                    deserialize_with = "::shellflip::__private::state::bytes::received",
                    bound(deserialize = #bytes_de)
                )]
                #name: #private::Received<#param>
            },
            (_, false) => quote!(#rename #alias #name: #param),
            (_, true) => quote! {
                #rename #alias
                #[serde(default = "::shellflip::__private::state::Received::absent")]
                #name: #private::Received<#param>
            },
        });
    }
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
