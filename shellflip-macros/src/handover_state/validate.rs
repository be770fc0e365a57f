//! Checking the input: what `#[derive(HandoverState)]` is on, and the rules
//! between attributes, fields and types.
//!
//! Every problem is recorded, in this order: the kind of item and its
//! lifetime parameters; the struct's attributes; then field by field, its
//! attributes and its rules (a descriptor type without `fd`, `default` or
//! `alias` where they mean nothing); last, aliases that collide across
//! fields. The [`State`] is built only when there was none.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Data, DataStruct, DeriveInput, Fields, GenericParam, Generics, LitStr, Member, Type};

use super::parse::{self, StructAttrs};
use super::{Field, Role, Shape, State};
use crate::errors::Errors;

/// Checks `input`, reporting every problem at once.
pub(super) fn state(input: DeriveInput) -> syn::Result<State> {
    let mut errors = Errors::default();
    let data = struct_data(&input, &mut errors);
    check_lifetimes(&input.generics, &mut errors);
    let attrs = parse::struct_attrs(&input.attrs, &input.ident, &mut errors);
    check_from_has_version(&attrs, &mut errors);

    let shape = match data.map(|d| &d.fields) {
        Some(Fields::Named(_)) => Shape::Named,
        Some(Fields::Unnamed(_)) => Shape::Tuple,
        Some(Fields::Unit) | None => Shape::Unit,
    };
    let fields: Vec<Field> = data
        .into_iter()
        .flat_map(|data| data.fields.iter().enumerate())
        .map(|(index, f)| field(index, f, shape, &mut errors))
        .collect();
    check_aliases(&fields, &mut errors);

    errors.finish()?;
    Ok(State {
        input,
        shape,
        fields,
        version: attrs.version,
        from: attrs.from,
    })
}

/// The struct the derive is on; an enum or a union is refused.
fn struct_data<'a>(input: &'a DeriveInput, errors: &mut Errors) -> Option<&'a DataStruct> {
    match &input.data {
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
    }
}

/// The state outlives the process that encodes it: no borrowed data.
fn check_lifetimes(generics: &Generics, errors: &mut Errors) {
    for param in &generics.params {
        if let GenericParam::Lifetime(lifetime) = param {
            errors.spanned(
                lifetime,
                "a handover state owns its data (`'static`): lifetime parameters are not supported",
            );
        }
    }
}

/// A migration converts from an older version: the struct's own must be
/// given.
fn check_from_has_version(attrs: &StructAttrs, errors: &mut Errors) {
    if let (Some(key), false) = (&attrs.from_key, attrs.version_given) {
        errors.spanned(
            key,
            "`from` needs a `version` higher than the previous schema's, e.g. `#[handover(version = 2, from = \"v1::State\")]`",
        );
    }
}

/// One field: its name, its attributes, and the role they and its type
/// give it.
fn field(index: usize, field: &syn::Field, shape: Shape, errors: &mut Errors) -> Field {
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
    let attrs = parse::field_attrs(&field.attrs, errors);
    let role = match attrs.role {
        None if is_byte_vec(&field.ty) => Role::Bytes,
        None => Role::Data,
        Some(role) => role,
    };
    check_fd_type(role, &name, &field.ty, errors);
    check_default(role, attrs.default.as_ref().map(|(_, span)| *span), errors);
    check_field_aliases(role, shape, &attrs.aliases, errors);
    Field {
        member,
        name,
        ty: field.ty.clone(),
        role,
        default: attrs.default.map(|(default, _)| default),
        aliases: attrs.aliases,
    }
}

/// A descriptor cannot be serialized: a field of a standard descriptor
/// type is carried only as `#[handover(fd)]`.
fn check_fd_type(role: Role, name: &str, ty: &Type, errors: &mut Errors) {
    if role != Role::Data {
        return;
    }
    if let Some(kind) = fd_type_name(ty) {
        errors.spanned(
            ty,
            format!(
                "`{name}` holds a file descriptor (`{kind}`), which cannot be serialized: mark the field `#[handover(fd)]` to hand the descriptor itself over"
            ),
        );
    }
}

/// `default` (its key's span) is what a carried field gets when it was not
/// sent: it means nothing for a skipped field or a descriptor.
fn check_default(role: Role, default: Option<Span>, errors: &mut Errors) {
    let Some(span) = default else { return };
    match role {
        Role::Skip => errors.at(
            span,
            "a skipped field is always rebuilt with `Default`; `default` says what a carried field gets when the previous generation did not send it: remove one of them",
        ),
        Role::Fd => errors.at(
            span,
            "a file descriptor has no default: a descriptor the previous generation did not send cannot be made up; open it in your code instead (e.g. with `Context::try_state_or_else`)",
        ),
        Role::Data | Role::Bytes => {}
    }
}

/// An alias is a carried field's former name.
fn check_field_aliases(role: Role, shape: Shape, aliases: &[LitStr], errors: &mut Errors) {
    let message = if role == Role::Skip {
        "a skipped field is not carried, so it has no former name to be found by: remove `alias` or `skip`"
    } else if shape == Shape::Tuple {
        "fields of a tuple struct are matched by position: `alias` needs named fields"
    } else {
        return;
    };
    for alias in aliases {
        errors.spanned(alias, message);
    }
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
