//! Collecting every error of an input before giving up, so that the user
//! sees all of them in one compilation instead of one per attempt.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;

/// The errors found so far.
#[derive(Default)]
pub(crate) struct Errors {
    first: Option<syn::Error>,
}

impl Errors {
    /// Records an error.
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.first {
            Some(first) => first.combine(error),
            None => self.first = Some(error),
        }
    }

    /// Records an error at `span`.
    pub(crate) fn at(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }

    /// Records an error covering `tokens` (their first to their last token).
    pub(crate) fn spanned(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// Records the error of `result`, if any, and gives back its value.
    pub(crate) fn check<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.push(error);
                None
            }
        }
    }

    /// `Ok(())` when nothing was recorded, otherwise all the errors.
    pub(crate) fn finish(self) -> syn::Result<()> {
        match self.first {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// The spans of the first and the last token of `tokens` (the call site for
/// an empty stream).
///
/// Generated code that should be blamed on a whole user type gives its
/// leading tokens the first span and its trailing tokens the last one, so
/// that the compiler underlines the type from end to end.
pub(crate) fn first_and_last_span(tokens: &TokenStream) -> (Span, Span) {
    let mut iter = tokens.clone().into_iter();
    let first = iter.next().map(|t| t.span());
    let last = iter.last().map(|t| t.span());
    match (first, last) {
        (Some(first), Some(last)) => (first, last),
        (Some(first), None) => (first, first),
        _ => (Span::call_site(), Span::call_site()),
    }
}

/// The names closest to `wrong` among `known` (a small edit distance, or one
/// being a prefix of the other), for "did you mean" hints.
pub(crate) fn closest<'a>(wrong: &str, known: &[&'a str]) -> Option<&'a str> {
    let wrong = wrong.to_ascii_lowercase();
    known
        .iter()
        .map(|k| {
            let lower = k.to_ascii_lowercase();
            let distance = edit_distance(&wrong, &lower);
            let close = distance <= 2.max(k.len() / 3)
                || lower.starts_with(wrong.as_str())
                || wrong.starts_with(lower.as_str());
            (distance, close, *k)
        })
        .filter(|(_, close, _)| *close)
        .min_by_key(|(distance, _, _)| *distance)
        .map(|(_, _, k)| k)
}

/// Levenshtein distance between two short ASCII-ish strings.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// `known` as "`a`, `b` or `c`", for messages.
pub(crate) fn one_of(known: &[&str]) -> String {
    match known {
        [] => String::new(),
        [only] => format!("`{only}`"),
        [init @ .., last] => {
            let init: Vec<String> = init.iter().map(|k| format!("`{k}`")).collect();
            format!("{} or `{last}`", init.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let known = ["control", "ready_timeout", "drain_timeout", "pid_file"];
        assert_eq!(closest("contrl", &known), Some("control"));
        assert_eq!(closest("control_socket", &known), Some("control"));
        assert_eq!(closest("ready", &known), Some("ready_timeout"));
        assert_eq!(closest("drain_timout", &known), Some("drain_timeout"));
        assert_eq!(closest("zzz", &known), None);
    }

    #[test]
    fn lists() {
        assert_eq!(one_of(&["a"]), "`a`");
        assert_eq!(one_of(&["a", "b", "c"]), "`a`, `b` or `c`");
    }
}
