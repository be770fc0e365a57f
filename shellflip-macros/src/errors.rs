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

/// The name closest to `wrong` among `known`, for "did you mean" hints
/// (the settings crate's, so that option names, signals and words get the
/// same suggestions).
pub(crate) use shellflip_settings::closest;

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
    fn lists() {
        assert_eq!(one_of(&["a"]), "`a`");
        assert_eq!(one_of(&["a", "b", "c"]), "`a`, `b` or `c`");
    }
}
