//! The schema fingerprint of a `HandoverState` type, computed when the
//! derive expands and emitted as a literal.
//!
//! It must come out the same for the same declaration whatever compiler
//! built it (the old and the new generation of a service may be built by
//! different toolchains), so types are written out by [`canonical_tokens`]
//! rather than by the compiler's own token printing, and hashed with FNV-1a,
//! a fixed, documented function.

use proc_macro2::{Delimiter, TokenStream, TokenTree};

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a of `bytes`.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME)
    })
}

/// `tokens` as text, one space between tokens except between punctuation
/// characters, after a lifetime's `'` and inside brackets, whatever spacing
/// the source used: `std::vec::Vec<Vec<u8>>` and
/// `std :: vec :: Vec < Vec < u8 > >` give the same text.
pub(crate) fn canonical_tokens(tokens: &TokenStream) -> String {
    let mut out = String::new();
    write_tokens(tokens, &mut out);
    out
}

fn write_tokens(tokens: &TokenStream, out: &mut String) {
    let mut previous_punct: Option<char> = None;
    for token in tokens.clone() {
        let glued = match (&token, previous_punct) {
            (_, Some('\'')) | (TokenTree::Punct(_), Some(_)) => true,
            _ => out.is_empty() || out.ends_with(['(', '[', '{']),
        };
        if !glued {
            out.push(' ');
        }
        previous_punct = None;
        match token {
            TokenTree::Ident(ident) => out.push_str(&ident.to_string()),
            TokenTree::Literal(literal) => out.push_str(&literal.to_string()),
            TokenTree::Punct(punct) => {
                out.push(punct.as_char());
                previous_punct = Some(punct.as_char());
            }
            TokenTree::Group(group) => {
                let (open, close) = match group.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::Brace => ("{", "}"),
                    // Invisible groups come from `macro_rules!` fragments
                    // such as `$ty:ty`: their content is what counts.
                    Delimiter::None => ("", ""),
                };
                out.push_str(open);
                write_tokens(&group.stream(), out);
                out.push_str(close);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn fnv_reference_values() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn spacing_does_not_matter() {
        let a: TokenStream = "std::vec::Vec<u8>".parse().unwrap();
        let b: TokenStream = "std :: vec :: Vec < u8 >".parse().unwrap();
        let nested: TokenStream = "Vec<Vec<u8>>".parse().unwrap();
        let spaced: TokenStream = "Vec < Vec < u8 > >".parse().unwrap();
        assert_eq!(canonical_tokens(&nested), canonical_tokens(&spaced));
        let r1: TokenStream = "&'static str".parse().unwrap();
        let r2: TokenStream = "& 'static str".parse().unwrap();
        assert_eq!(canonical_tokens(&r1), canonical_tokens(&r2));
        let c = quote!(std::vec::Vec<u8>);
        assert_eq!(canonical_tokens(&a), canonical_tokens(&b));
        assert_eq!(canonical_tokens(&a), canonical_tokens(&c));
        assert_eq!(canonical_tokens(&a), "std :: vec :: Vec < u8 >");
    }

    #[test]
    fn groups_and_literals() {
        let t: TokenStream = "[u8 ; 32]".parse().unwrap();
        assert_eq!(canonical_tokens(&t), "[u8 ; 32]");
        let t: TokenStream = "(u64, Option<String>)".parse().unwrap();
        assert_eq!(canonical_tokens(&t), "(u64 , Option < String >)");
        let t: TokenStream = "fn(&'static str) -> u8".parse().unwrap();
        assert_eq!(canonical_tokens(&t), "fn (&'static str) -> u8");
    }

    #[test]
    fn different_types_differ() {
        let a: TokenStream = "Vec<u32>".parse().unwrap();
        let b: TokenStream = "Vec<u64>".parse().unwrap();
        assert_ne!(
            fnv1a64(canonical_tokens(&a).as_bytes()),
            fnv1a64(canonical_tokens(&b).as_bytes())
        );
    }
}
