//! The option values of `#[restartable(...)]` that are checked at compile
//! time. Parsing and bounds are the settings crate's (the same rules as the
//! `SHELLFLIP_*` environment and the CLI); this module turns its errors into
//! compile errors on the literal, and picks how a duration is written in
//! the expansion.

use std::time::Duration;

use proc_macro2::Span;
use shellflip_settings::SettingError;

/// A compile error at `span` for a value the settings crate refused:
/// "invalid `ready_timeout`: a duration needs a unit: ...". The literal
/// itself is underlined, so the message does not repeat it.
pub(crate) fn error(span: Span, error: &SettingError) -> syn::Error {
    syn::Error::new(
        span,
        format!("invalid `{}`: {}", error.setting(), error.problem()),
    )
}

/// How to write `duration` with the `std::time::Duration` constructor that
/// reads best: the largest of seconds, milliseconds, microseconds and
/// nanoseconds that represents it exactly. `None` if it does not fit the
/// constructor's `u64` argument (never for a duration the settings crate
/// accepts: those are at most 7 days).
pub(crate) fn duration_constructor(duration: Duration) -> Option<(&'static str, u64)> {
    let nanos = duration.as_nanos();
    let (name, value) = if nanos % 1_000_000_000 == 0 {
        ("from_secs", nanos / 1_000_000_000)
    } else if nanos % 1_000_000 == 0 {
        ("from_millis", nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        ("from_micros", nanos / 1_000)
    } else {
        ("from_nanos", nanos)
    };
    u64::try_from(value).ok().map(|value| (name, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shellflip_settings::{DurationRule, MAX_DURATION};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn constructors_pick_the_largest_exact_unit() {
        assert_eq!(
            duration_constructor(Duration::from_secs(90)),
            Some(("from_secs", 90))
        );
        assert_eq!(duration_constructor(ms(1500)), Some(("from_millis", 1500)));
        assert_eq!(
            duration_constructor(Duration::from_micros(1001)),
            Some(("from_micros", 1001))
        );
        assert_eq!(
            duration_constructor(Duration::from_nanos(1_000_003)),
            Some(("from_nanos", 1_000_003))
        );
        assert_eq!(duration_constructor(Duration::ZERO), Some(("from_secs", 0)));
        assert_eq!(
            duration_constructor(Duration::new(u64::MAX, 1)),
            None,
            "more nanoseconds than a u64 holds"
        );
    }

    #[test]
    fn every_accepted_duration_has_a_constructor() {
        assert_eq!(
            duration_constructor(MAX_DURATION),
            Some(("from_secs", 7 * 86_400))
        );
        let longest_in_nanos = MAX_DURATION - Duration::from_nanos(1);
        let parsed = DurationRule::TIMEOUT
            .parse("t", "6d23h59m59s999ms999us999ns")
            .unwrap();
        assert_eq!(parsed, longest_in_nanos);
        assert!(duration_constructor(parsed).is_some());
    }

    #[test]
    fn errors_name_the_option_not_the_value() {
        let refused = DurationRule::TIMEOUT
            .parse("ready_timeout", "30")
            .unwrap_err();
        let message = error(Span::call_site(), &refused).to_string();
        assert!(
            message.starts_with("invalid `ready_timeout`: a duration needs a unit: write \"30s\""),
            "{message}"
        );
    }
}
