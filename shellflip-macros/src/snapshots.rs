//! Expansion snapshots: every `tests/expand/<name>.rs` of this crate is
//! expanded (its `#[restartable]` functions and `#[derive(HandoverState)]`
//! structs), formatted with prettyplease, and compared with the checked-in
//! `tests/expand/<name>.expanded.rs`, so that every change to the generated
//! code shows in review.
//!
//! `SHELLFLIP_BLESS=1 cargo test -p shellflip-macros` rewrites the
//! snapshots.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use quote::ToTokens;

/// Expands the macros of one source file and formats the result.
fn expand_file(source: &str) -> Result<String, String> {
    let file = syn::parse_file(source).map_err(|e| format!("cannot parse: {e}"))?;
    let mut items = Vec::new();
    for mut item in file.items {
        match &mut item {
            syn::Item::Fn(function) => {
                let Some(index) = function
                    .attrs
                    .iter()
                    .position(|a| a.path().is_ident("restartable"))
                else {
                    items.push(item);
                    continue;
                };
                let attr = function.attrs.remove(index);
                let args = match attr.meta {
                    syn::Meta::List(list) => list.tokens,
                    _ => proc_macro2::TokenStream::new(),
                };
                let expanded = crate::restartable::expand(args, function.to_token_stream())
                    .map_err(|e| format!("#[restartable] failed: {e}"))?;
                let expanded: syn::File = syn::parse2(expanded)
                    .map_err(|e| format!("#[restartable] expansion does not parse: {e}"))?;
                items.extend(expanded.items);
            }
            syn::Item::Struct(syn::ItemStruct { attrs, .. })
            | syn::Item::Enum(syn::ItemEnum { attrs, .. }) => {
                let derives = take_handover_state_derive(attrs);
                let tokens = item.to_token_stream();
                items.push(item);
                if derives {
                    let expanded = crate::handover_state::expand(tokens)
                        .map_err(|e| format!("#[derive(HandoverState)] failed: {e}"))?;
                    let expanded: syn::File = syn::parse2(expanded).map_err(|e| {
                        format!("#[derive(HandoverState)] expansion does not parse: {e}")
                    })?;
                    items.extend(expanded.items);
                }
            }
            _ => items.push(item),
        }
    }
    Ok(prettyplease::unparse(&syn::File {
        shebang: None,
        frontmatter: None,
        attrs: file.attrs,
        items,
    }))
}

/// Removes `HandoverState` from the `#[derive(...)]` lists of `attrs`,
/// telling whether it was there. Other derives stay.
fn take_handover_state_derive(attrs: &mut Vec<syn::Attribute>) -> bool {
    let mut found = false;
    attrs.retain_mut(|attr| {
        if !attr.path().is_ident("derive") {
            return true;
        }
        let Ok(paths) = attr.parse_args_with(
            syn::punctuated::Punctuated::<syn::Path, syn::Token![,]>::parse_terminated,
        ) else {
            return true;
        };
        let kept: Vec<&syn::Path> = paths
            .iter()
            .filter(|p| {
                let is_ours = p
                    .segments
                    .last()
                    .is_some_and(|s| s.ident == "HandoverState");
                found |= is_ours;
                !is_ours
            })
            .collect();
        if kept.is_empty() {
            return false;
        }
        *attr = syn::parse_quote!(#[derive(#(#kept),*)]);
        true
    });
    found
}

/// A minimal line diff (longest common subsequence), `-` expected, `+`
/// actual.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = String::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            let _ = writeln!(out, "  {}", a[i]);
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            let _ = writeln!(out, "- {}", a[i]);
            i += 1;
        } else {
            let _ = writeln!(out, "+ {}", b[j]);
            j += 1;
        }
    }
    out
}

fn inputs() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/expand");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".rs") && !name.ends_with(".expanded.rs")
        })
        .collect();
    inputs.sort();
    inputs
}

#[test]
fn expansions_match_snapshots() {
    let bless = std::env::var_os("SHELLFLIP_BLESS").is_some_and(|v| v == "1");
    let inputs = inputs();
    assert!(
        inputs.len() >= 8,
        "expected the snapshot inputs in tests/expand"
    );
    let mut failures = Vec::new();
    for input in &inputs {
        let source = std::fs::read_to_string(input).expect("readable input");
        let actual = expand_file(&source).unwrap_or_else(|e| panic!("{}: {e}", input.display()));
        let snapshot = input.with_extension("expanded.rs");
        let expected = std::fs::read_to_string(&snapshot).ok();
        if expected.as_deref() == Some(actual.as_str()) {
            continue;
        }
        if bless {
            std::fs::write(&snapshot, &actual).expect("writable snapshot");
            eprintln!("blessed {}", snapshot.display());
            continue;
        }
        failures.push(match expected {
            None => format!(
                "{} is missing; its expansion would be:\n{actual}",
                snapshot.display()
            ),
            Some(expected) => format!(
                "{} differs (- snapshot, + expansion now):\n{}",
                snapshot.display(),
                diff(&expected, &actual)
            ),
        });
    }
    assert!(
        failures.is_empty(),
        "{}\n\nIf the change is intended, run `SHELLFLIP_BLESS=1 cargo test -p shellflip-macros` and review the new snapshots.",
        failures.join("\n\n")
    );
}

#[test]
fn diff_marks_changed_lines() {
    let d = diff("a\nb\nc\n", "a\nx\nc\n");
    assert_eq!(d, "  a\n- b\n+ x\n  c\n");
}
