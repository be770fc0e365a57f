//! Reading `#[handover(...)]`: the struct's `version` and `from`, a field's
//! role (`skip`, `fd`, `bytes`), `default` and `alias`es.
//!
//! Each entry is read into a value. A malformed one (an unknown key, a key
//! given twice, a value of the wrong kind) is recorded as an error on its
//! tokens and skipped, so that the entries after it are read too. What the
//! values mean together is [`validate`](super::validate)'s.

use proc_macro2::Span;
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;
use syn::{Attribute, Expr, Ident, Lit, LitStr, Type};

use super::{FieldDefault, Role};
use crate::errors::{closest, one_of, Errors};

/// The attributes a field takes.
const FIELD_KEYS: &[&str] = &["skip", "fd", "bytes", "default", "alias"];
/// The attributes the struct takes.
const STRUCT_KEYS: &[&str] = &["version", "from"];

/// The struct's `#[handover(...)]`, as written.
#[derive(Default)]
pub(super) struct StructAttrs {
    pub(super) version: Option<u32>,
    /// Whether `version` is written (its value may have been refused).
    pub(super) version_given: bool,
    /// `from = "Old"`: the type and the literal's span.
    pub(super) from: Option<(Type, Span)>,
    /// The `from` key, when it is written (its value may have been
    /// refused).
    pub(super) from_key: Option<syn::Path>,
}

/// A field's `#[handover(...)]`, as written.
#[derive(Default)]
pub(super) struct FieldAttrs {
    pub(super) role: Option<Role>,
    /// The value and the span of the `default` key.
    pub(super) default: Option<(FieldDefault, Span)>,
    pub(super) aliases: Vec<LitStr>,
}

/// Reads `#[handover(version = N, from = "Old")]` on the struct `ident`.
pub(super) fn struct_attrs(attrs: &[Attribute], ident: &Ident, errors: &mut Errors) -> StructAttrs {
    let mut out = StructAttrs::default();
    for attr in handover_attrs(attrs) {
        let result = attr.parse_nested_meta(|meta| {
            let name = meta_name(&meta);
            match name.as_str() {
                "version" => version(&meta, &mut out, errors),
                "from" => from(&meta, ident, &mut out, errors),
                _ if FIELD_KEYS.contains(&name.as_str()) => refuse(
                    &meta,
                    format!("`{name}` goes on a field, not on the struct"),
                    errors,
                ),
                _ => refuse(&meta, unknown_attribute(&name, STRUCT_KEYS), errors),
            }
        });
        errors.check(result);
    }
    out
}

/// Reads `#[handover(skip | fd | bytes | default [= "path"] | alias = "name")]`
/// on a field.
pub(super) fn field_attrs(attrs: &[Attribute], errors: &mut Errors) -> FieldAttrs {
    let mut out = FieldAttrs::default();
    for attr in handover_attrs(attrs) {
        let result = attr.parse_nested_meta(|meta| {
            let name = meta_name(&meta);
            match name.as_str() {
                "skip" => role(&meta, Role::Skip, &mut out, errors),
                "fd" => role(&meta, Role::Fd, &mut out, errors),
                "bytes" => role(&meta, Role::Bytes, &mut out, errors),
                "default" => default(&meta, &mut out, errors),
                "alias" => alias(&meta, &mut out, errors),
                _ if STRUCT_KEYS.contains(&name.as_str()) => refuse(
                    &meta,
                    format!("`{name}` goes on the struct, not on a field"),
                    errors,
                ),
                _ => refuse(&meta, unknown_attribute(&name, FIELD_KEYS), errors),
            }
        });
        errors.check(result);
    }
    out
}

fn handover_attrs(attrs: &[Attribute]) -> impl Iterator<Item = &Attribute> {
    attrs.iter().filter(|a| a.path().is_ident("handover"))
}

/// `version = N`: an integer that fits in a `u32`.
fn version(meta: &ParseNestedMeta, out: &mut StructAttrs, errors: &mut Errors) -> syn::Result<()> {
    let value: Expr = meta.value()?.parse()?;
    if out.version_given {
        errors.spanned(
            &meta.path,
            "`version` is given more than once; keep only one",
        );
        return Ok(());
    }
    out.version_given = true;
    match &value {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Int(lit), ..
        }) if lit.suffix().is_empty() || lit.suffix() == "u32" => match lit.base10_parse::<u32>() {
            Ok(n) => out.version = Some(n),
            Err(_) => errors.spanned(lit, "`version` must fit in a u32"),
        },
        other => errors.spanned(
            other,
            "`version` takes an integer, e.g. `#[handover(version = 2)]`",
        ),
    }
    Ok(())
}

/// `from = "Old"`: the previous schema's type, in a string; not the struct
/// `ident` itself.
fn from(
    meta: &ParseNestedMeta,
    ident: &Ident,
    out: &mut StructAttrs,
    errors: &mut Errors,
) -> syn::Result<()> {
    let value: Expr = meta.value()?.parse()?;
    if out.from_key.is_some() {
        errors.spanned(&meta.path, "`from` is given more than once; keep only one");
        return Ok(());
    }
    out.from_key = Some(meta.path.clone());
    let Expr::Lit(syn::ExprLit {
        lit: Lit::Str(lit), ..
    }) = &value
    else {
        errors.spanned(
            &value,
            "`from` takes the previous schema's type as a string, e.g. `#[handover(version = 2, from = \"v1::State\")]`",
        );
        return Ok(());
    };
    match lit.parse::<Type>() {
        Ok(ty) if is_ident(&ty, ident) => errors.spanned(
            lit,
            "`from` names this struct itself; it names the previous schema, kept in the code under another name or in a module",
        ),
        Ok(ty) => out.from = Some((ty, lit.span())),
        Err(_) => errors.spanned(
            lit,
            "`from` takes the previous schema's type, e.g. `#[handover(version = 2, from = \"v1::State\")]`",
        ),
    }
    Ok(())
}

/// True when `ty` is the plain path `ident`.
fn is_ident(ty: &Type, ident: &Ident) -> bool {
    matches!(ty, Type::Path(p) if p.qself.is_none() && p.path.is_ident(ident))
}

/// `skip`, `fd` or `bytes`, without a value: a field has at most one of
/// them.
fn role(
    meta: &ParseNestedMeta,
    given: Role,
    out: &mut FieldAttrs,
    errors: &mut Errors,
) -> syn::Result<()> {
    let name = given.keyword();
    if !meta.input.is_empty() && !meta.input.peek(syn::Token![,]) {
        skip_value(meta)?;
        errors.spanned(
            &meta.path,
            format!("`{name}` takes no value: write `#[handover({name})]`"),
        );
    }
    match out.role {
        Some(role) if role == given => {
            errors.spanned(&meta.path, format!("`{name}` is given more than once"));
        }
        Some(role) => errors.spanned(
            &meta.path,
            format!(
                "a field is at most one of `skip` (rebuilt with Default), `fd` (handed over as a file descriptor) or `bytes` (carried as one byte string); it is already `{}`",
                role.keyword()
            ),
        ),
        None => out.role = Some(given),
    }
    Ok(())
}

/// `default`, or `default = "path::to_fn"`.
fn default(meta: &ParseNestedMeta, out: &mut FieldAttrs, errors: &mut Errors) -> syn::Result<()> {
    let default = if meta.input.peek(syn::Token![=]) {
        default_function(meta.value()?.parse()?, errors)
    } else {
        Some(FieldDefault::Trait)
    };
    if out.default.is_some() {
        errors.spanned(
            &meta.path,
            "`default` is given more than once; keep only one",
        );
    } else if let Some(default) = default {
        out.default = Some((default, meta.path.span()));
    }
    Ok(())
}

/// The value of `default = "path::to_fn"`: the path of a function, in a
/// string.
fn default_function(value: Expr, errors: &mut Errors) -> Option<FieldDefault> {
    let Expr::Lit(syn::ExprLit {
        lit: Lit::Str(lit), ..
    }) = &value
    else {
        errors.spanned(&value, "`default` takes a function's path as a string, e.g. `#[handover(default = \"defaults::port\")]`, or no value for `Default::default()`");
        return None;
    };
    match lit.parse::<syn::ExprPath>() {
        Ok(path) => Some(FieldDefault::Path(path)),
        Err(_) => {
            errors.spanned(lit, "`default` takes the path of a function returning the value, e.g. `#[handover(default = \"defaults::port\")]`");
            None
        }
    }
}

/// `alias = "old_name"`: a non-empty string (repeatable).
fn alias(meta: &ParseNestedMeta, out: &mut FieldAttrs, errors: &mut Errors) -> syn::Result<()> {
    if !meta.input.peek(syn::Token![=]) {
        return refuse(
            meta,
            "`alias` takes the field's former name: `#[handover(alias = \"old_name\")]`",
            errors,
        );
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
    Ok(())
}

/// Records `message` on the key of an entry that is refused, and consumes
/// its value, so parsing goes on with the next entry.
fn refuse(
    meta: &ParseNestedMeta,
    message: impl std::fmt::Display,
    errors: &mut Errors,
) -> syn::Result<()> {
    skip_value(meta)?;
    errors.spanned(&meta.path, message);
    Ok(())
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
