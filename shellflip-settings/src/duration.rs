//! Durations: one grammar, one set of bounds, and a formatter whose output
//! parses back.

use std::fmt;
use std::time::Duration;

use crate::error::{Problem, SettingError};

/// The shortest duration a setting accepts (other than `0` for a setting
/// that may be off): 1 ms, the resolution of Tokio's timers. A shorter
/// timeout would be rounded up to it anyway.
pub const MIN_DURATION: Duration = Duration::from_millis(1);

/// The longest duration a setting accepts: 7 days.
///
/// Far above any real wait (a drain of long-lived connections of a day
/// fits), so the bound only stops typos and nonsense such as
/// `300000000000y`. Far below every limit of the arithmetic that follows:
/// the runtime adds at most a few of these to an `Instant` (ready timeout,
/// probation and drain timeout together are at most 21 days, where
/// `Instant` overflows after hundreds of years), and Tokio's timers, which
/// clamp anything beyond about two years, are exact up to it.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The units of the grammar, largest first, with their length in
/// nanoseconds.
const UNITS: &[(&str, u128)] = &[
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// Other spellings people write, and what to write instead.
const UNIT_HINTS: &[(&[&str], &str)] = &[
    (
        &["sec", "secs", "second", "seconds", "S"],
        "write `s` for seconds",
    ),
    (
        &["min", "mins", "minute", "minutes"],
        "write `m` for minutes",
    ),
    (&["hr", "hrs", "hour", "hours", "H"], "write `h` for hours"),
    (&["day", "days", "D"], "write `d` for days"),
    (
        &[
            "msec",
            "msecs",
            "milli",
            "millis",
            "millisecond",
            "milliseconds",
            "MS",
        ],
        "write `ms` for milliseconds",
    ),
    (
        &[
            "usec",
            "usecs",
            "micro",
            "micros",
            "microsecond",
            "microseconds",
        ],
        "write `us` for microseconds",
    ),
    (
        &[
            "nsec",
            "nsecs",
            "nano",
            "nanos",
            "nanosecond",
            "nanoseconds",
        ],
        "write `ns` for nanoseconds",
    ),
    (
        &[
            "w", "week", "weeks", "y", "year", "years", "month", "months",
        ],
        "a duration is at most 7d",
    ),
];

/// The bounds of a duration setting, and whether it may be off.
///
/// The grammar is the same for every duration, wherever it is written
/// (attribute, environment, command line): one or more parts
/// `<whole number><unit>`, units `d`, `h`, `m`, `s`, `ms`, `us` (or `µs`), `ns`, from
/// the largest unit to the smallest, each at most once, optionally separated
/// by spaces: `"30s"`, `"500ms"`, `"1m30s"`, `"1h 15m"`. White space around
/// the value is ignored. A bare number is refused with a message that
/// suggests `"10s"` — except `0`, which needs no unit, and turns off a
/// setting that may be off. Fractions are refused (`"1500ms"`, not
/// `"1.5s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationRule {
    /// The shortest accepted duration other than zero.
    pub min: Duration,
    /// The longest accepted duration.
    pub max: Duration,
    /// Whether zero is accepted, meaning "off".
    pub may_be_off: bool,
}

impl DurationRule {
    /// A timeout (ready timeout, drain timeout, the CLI's `--timeout`):
    /// from [`MIN_DURATION`] to [`MAX_DURATION`]; zero is refused, as it
    /// could never be met.
    pub const TIMEOUT: DurationRule = DurationRule {
        min: MIN_DURATION,
        max: MAX_DURATION,
        may_be_off: false,
    };

    /// A duration that may be off (the probation): `0` (or `0s`), or from
    /// [`MIN_DURATION`] to [`MAX_DURATION`].
    pub const TIMEOUT_OR_OFF: DurationRule = DurationRule {
        may_be_off: true,
        ..DurationRule::TIMEOUT
    };

    /// Parses `text` for `setting` (named in the error as given, e.g.
    /// `SHELLFLIP_READY_TIMEOUT`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use shellflip_settings::DurationRule;
    ///
    /// let rule = DurationRule::TIMEOUT;
    /// assert_eq!(rule.parse("t", "1m30s"), Ok(Duration::from_secs(90)));
    /// assert_eq!(rule.parse("t", " 500ms "), Ok(Duration::from_millis(500)));
    /// assert!(rule.parse("t", "10").is_err()); // which unit? write "10s"
    /// assert!(rule.parse("t", "8d").is_err()); // more than 7 days
    /// assert_eq!(DurationRule::TIMEOUT_OR_OFF.parse("g", "0"), Ok(Duration::ZERO));
    /// ```
    pub fn parse(&self, setting: &str, text: &str) -> Result<Duration, SettingError> {
        parse_nanos(text)
            .and_then(|nanos| self.bound(nanos))
            .map_err(|problem| SettingError::new(setting, text, problem))
    }

    /// Checks a duration given in code (say `Config::ready_timeout`)
    /// against the same bounds.
    pub fn check(&self, setting: &str, value: Duration) -> Result<Duration, SettingError> {
        self.bound(value.as_nanos()).map_err(|problem| {
            SettingError::new(setting, format_duration(value).to_string(), problem)
        })
    }

    /// What the rule accepts, for the settings table: `1ms to 7d`.
    pub fn describe(&self) -> String {
        let range = format!(
            "{} to {}",
            format_duration(self.min),
            format_duration(self.max)
        );
        if self.may_be_off {
            format!("`0` (off), or {range}")
        } else {
            range
        }
    }

    fn bound(&self, nanos: u128) -> Result<Duration, Problem> {
        if nanos == 0 {
            return if self.may_be_off {
                Ok(Duration::ZERO)
            } else {
                Err(Problem::Zero)
            };
        }
        if nanos < self.min.as_nanos() {
            return Err(Problem::TooShort {
                min: self.min,
                may_be_off: self.may_be_off,
            });
        }
        if nanos > self.max.as_nanos() {
            return Err(Problem::TooLong { max: self.max });
        }
        Ok(from_nanos(nanos))
    }
}

/// A duration of at most [`MAX_DURATION`] (checked by the caller) from its
/// nanoseconds.
fn from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    // Both fit: the whole seconds of 7 days fit a u64 many times over, and
    // the remainder of a division by 10^9 fits a u32.
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    let subsec = u32::try_from(nanos % NANOS_PER_SEC).unwrap_or(0);
    Duration::new(secs, subsec)
}

/// The grammar: the total in nanoseconds, or what is wrong. Numbers too
/// large for a `u128` of nanoseconds are reported as too long.
fn parse_nanos(text: &str) -> Result<u128, Problem> {
    let too_long = || Problem::TooLong { max: MAX_DURATION };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(Problem::Empty { example: "30s" });
    }
    let mut total: u128 = 0;
    // Index in UNITS of the last unit used: each part must use a smaller one.
    let mut previous_unit: Option<usize> = None;
    while !rest.is_empty() {
        let digits_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits_len == 0 {
            return Err(match previous_unit {
                None => Problem::NotADuration,
                Some(_) => Problem::MissingNumber {
                    rest: rest.to_owned(),
                },
            });
        }
        let (digits, after) = rest.split_at(digits_len);
        let after = after.trim_start();
        if after.starts_with('.') || (after.starts_with(',') && previous_unit.is_none()) {
            return Err(Problem::Fraction);
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| !c.is_alphabetic())
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            // A lone `0` needs no unit: zero is zero in any unit.
            if previous_unit.is_none() && after.is_empty() && digits.bytes().all(|b| b == b'0') {
                return Ok(0);
            }
            return Err(Problem::MissingUnit {
                number: digits.to_owned(),
            });
        }
        // `µs` is the same unit as `us`, for those who can type it.
        let canonical = if unit == "µs" { "us" } else { unit };
        let Some(index) = UNITS.iter().position(|(name, _)| *name == canonical) else {
            let hint = UNIT_HINTS
                .iter()
                .find(|(spellings, _)| spellings.contains(&unit))
                .map(|(_, hint)| *hint);
            return Err(Problem::UnknownUnit {
                unit: unit.to_owned(),
                hint,
            });
        };
        if previous_unit.is_some_and(|previous| index <= previous) {
            return Err(Problem::UnitOrder {
                unit: unit.to_owned(),
            });
        }
        previous_unit = Some(index);
        let value: u128 = digits.parse().map_err(|_| too_long())?;
        total = value
            .checked_mul(UNITS[index].1)
            .and_then(|nanos| total.checked_add(nanos))
            .ok_or_else(too_long)?;
        rest = after.trim_start();
    }
    Ok(total)
}

/// Formats a duration in the grammar of this crate, so that it parses back:
/// `30s`, `1m30s`, `1s500ms`, `7d`, `0s`.
///
/// ```
/// use std::time::Duration;
/// use shellflip_settings::format_duration;
///
/// assert_eq!(format_duration(Duration::from_millis(90_250)).to_string(), "1m30s250ms");
/// ```
pub fn format_duration(duration: Duration) -> FormattedDuration {
    FormattedDuration(duration)
}

/// A duration written as [`format_duration`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormattedDuration(Duration);

impl fmt::Display for FormattedDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        for (unit, length) in UNITS {
            let count = nanos / length;
            if count > 0 {
                write!(f, "{count}{unit}")?;
                nanos %= length;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: DurationRule = DurationRule::TIMEOUT;
    const OFF: DurationRule = DurationRule::TIMEOUT_OR_OFF;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn problem(rule: DurationRule, text: &str) -> Problem {
        rule.parse("x", text).unwrap_err().problem().clone()
    }

    fn message(rule: DurationRule, text: &str) -> String {
        rule.parse("x", text).unwrap_err().to_string()
    }

    #[test]
    fn every_unit() {
        assert_eq!(T.parse("x", "2d"), Ok(secs(2 * 86_400)));
        assert_eq!(T.parse("x", "1h"), Ok(secs(3600)));
        assert_eq!(T.parse("x", "2m"), Ok(secs(120)));
        assert_eq!(T.parse("x", "30s"), Ok(secs(30)));
        assert_eq!(T.parse("x", "500ms"), Ok(ms(500)));
        assert_eq!(T.parse("x", "2500us"), Ok(Duration::from_micros(2500)));
        assert_eq!(T.parse("x", "2500µs"), Ok(Duration::from_micros(2500)));
        assert_eq!(
            T.parse("x", "1000001ns"),
            Ok(Duration::from_nanos(1_000_001))
        );
    }

    #[test]
    fn white_space_around_and_between_parts() {
        assert_eq!(T.parse("x", "  45s "), Ok(secs(45)));
        assert_eq!(T.parse("x", "\t10 s\n"), Ok(secs(10)));
        assert_eq!(T.parse("x", "1h 15m"), Ok(secs(4500)));
        assert_eq!(T.parse("x", "1 m 30 s"), Ok(secs(90)));
        assert_eq!(problem(T, "   "), Problem::Empty { example: "30s" });
        assert_eq!(problem(T, ""), Problem::Empty { example: "30s" });
    }

    #[test]
    fn compound_durations() {
        assert_eq!(T.parse("x", "1m30s"), Ok(secs(90)));
        assert_eq!(T.parse("x", "1s500ms"), Ok(ms(1500)));
        assert_eq!(
            T.parse("x", "1d1h1m1s1ms1us1ns"),
            Ok(Duration::new(90_061, 1_001_001))
        );
        assert_eq!(problem(T, "30s1m"), Problem::UnitOrder { unit: "m".into() });
        assert_eq!(problem(T, "1s1s"), Problem::UnitOrder { unit: "s".into() });
        assert_eq!(problem(T, "0ms0s"), Problem::UnitOrder { unit: "s".into() });
        assert_eq!(
            problem(T, "30s,"),
            Problem::MissingNumber { rest: ",".into() }
        );
    }

    #[test]
    fn a_bare_number_needs_a_unit_except_zero() {
        assert_eq!(
            problem(T, "10"),
            Problem::MissingUnit {
                number: "10".into()
            }
        );
        assert!(
            message(T, "10").contains("write \"10s\""),
            "{}",
            message(T, "10")
        );
        assert_eq!(
            problem(OFF, "250"),
            Problem::MissingUnit {
                number: "250".into()
            }
        );
        assert_eq!(
            problem(T, "1m30"),
            Problem::MissingUnit {
                number: "30".into()
            }
        );
        assert_eq!(OFF.parse("x", "0"), Ok(Duration::ZERO));
        assert_eq!(OFF.parse("x", " 000 "), Ok(Duration::ZERO));
        assert_eq!(OFF.parse("x", "0s"), Ok(Duration::ZERO));
        assert_eq!(OFF.parse("x", "0ms"), Ok(Duration::ZERO));
    }

    #[test]
    fn zero_is_refused_where_it_cannot_mean_off() {
        for zero in ["0", "0s", "0ms", "0h 0m"] {
            assert_eq!(problem(T, zero), Problem::Zero, "{zero}");
        }
        assert!(message(T, "0").contains("greater than zero"));
    }

    #[test]
    fn lower_bound() {
        assert_eq!(T.parse("x", "1ms"), Ok(MIN_DURATION));
        assert_eq!(T.parse("x", "1000us"), Ok(MIN_DURATION));
        let short = Problem::TooShort {
            min: MIN_DURATION,
            may_be_off: false,
        };
        assert_eq!(problem(T, "999us"), short);
        assert_eq!(problem(T, "1ns"), short);
        assert!(message(T, "5us").contains("the minimum is 1ms"));
        assert!(message(OFF, "5us").contains("\"0\" turns it off"));
    }

    #[test]
    fn upper_bound() {
        assert_eq!(T.parse("x", "7d"), Ok(MAX_DURATION));
        assert_eq!(T.parse("x", "168h"), Ok(MAX_DURATION));
        assert_eq!(T.parse("x", "6d23h59m59s999ms"), Ok(MAX_DURATION - ms(1)));
        let long = Problem::TooLong { max: MAX_DURATION };
        assert_eq!(problem(T, "7d1ns"), long);
        assert_eq!(problem(T, "8d"), long);
        assert_eq!(problem(OFF, "169h"), long);
        assert!(message(T, "8d").contains("the maximum is 7d"));
    }

    #[test]
    fn huge_values_are_too_long_not_a_panic() {
        let long = Problem::TooLong { max: MAX_DURATION };
        assert_eq!(problem(T, "300000000000h"), long);
        assert_eq!(problem(T, "18446744073709551615s"), long);
        assert_eq!(problem(T, "18446744073709551616s"), long);
        assert_eq!(
            problem(T, "99999999999999999999999999999999999999999d"),
            long
        );
        assert_eq!(problem(T, &format!("{}ns", u128::MAX)), long);
        assert_eq!(problem(T, &format!("1{}ns", u128::MAX)), long);
        assert_eq!(problem(T, "340282366920938463463374607431768211455d"), long);
        // Years are no unit here, and the message says why it would not help.
        let years = problem(T, "300000000000y");
        assert_eq!(
            years,
            Problem::UnknownUnit {
                unit: "y".into(),
                hint: Some("a duration is at most 7d")
            }
        );
    }

    #[test]
    fn not_durations() {
        assert_eq!(problem(T, "soon"), Problem::NotADuration);
        assert_eq!(problem(T, "-5s"), Problem::NotADuration);
        assert_eq!(problem(T, "+5s"), Problem::NotADuration);
        assert_eq!(problem(T, "s"), Problem::NotADuration);
        assert_eq!(problem(T, "1.5s"), Problem::Fraction);
        assert_eq!(problem(T, "1,5s"), Problem::Fraction);
        assert_eq!(problem(T, "1 .5s"), Problem::Fraction);
        assert!(message(T, "soon").contains("expected a duration"));
    }

    #[test]
    fn unknown_units_with_hints() {
        let unit = |text: &str| match problem(T, text) {
            Problem::UnknownUnit { unit, hint } => (unit, hint),
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(
            unit("30 sec"),
            ("sec".into(), Some("write `s` for seconds"))
        );
        assert_eq!(unit("2min"), ("min".into(), Some("write `m` for minutes")));
        assert_eq!(unit("1hour"), ("hour".into(), Some("write `h` for hours")));
        assert_eq!(unit("3days"), ("days".into(), Some("write `d` for days")));
        assert_eq!(unit("5S"), ("S".into(), Some("write `s` for seconds")));
        assert_eq!(unit("2w"), ("w".into(), Some("a duration is at most 7d")));
        assert_eq!(
            unit("250usecs"),
            ("usecs".into(), Some("write `us` for microseconds"))
        );
        assert_eq!(unit("5x"), ("x".into(), None));
        assert!(message(T, "5x").contains("the units are d, h, m, s, ms, us and ns"));
    }

    #[test]
    fn values_from_code_are_checked_too() {
        assert_eq!(T.check("c", secs(30)), Ok(secs(30)));
        assert_eq!(OFF.check("c", Duration::ZERO), Ok(Duration::ZERO));
        let error = T.check("Config::drain_timeout", Duration::MAX).unwrap_err();
        assert_eq!(error.problem(), &Problem::TooLong { max: MAX_DURATION });
        assert_eq!(error.setting(), "Config::drain_timeout");
        assert!(error.to_string().contains("the maximum is 7d"), "{error}");
        assert_eq!(
            T.check("c", Duration::ZERO).unwrap_err().problem(),
            &Problem::Zero
        );
        assert_eq!(
            T.check("c", Duration::from_nanos(10)).unwrap_err().value(),
            "10ns"
        );
    }

    #[test]
    fn every_accepted_value_can_be_added_to_an_instant() {
        // The largest sum the runtime may form from settings.
        let sum = MAX_DURATION * 3;
        assert!(std::time::Instant::now().checked_add(sum).is_some());
    }

    #[test]
    fn formatting_round_trips() {
        assert_eq!(format_duration(Duration::ZERO).to_string(), "0s");
        assert_eq!(format_duration(secs(90)).to_string(), "1m30s");
        assert_eq!(format_duration(MAX_DURATION).to_string(), "7d");
        assert_eq!(format_duration(MIN_DURATION).to_string(), "1ms");
        assert_eq!(
            format_duration(Duration::MAX).to_string(),
            "213503982334601d7h15s999ms999us999ns"
        );
        for d in [
            MIN_DURATION,
            ms(1500),
            secs(3661),
            Duration::new(90_061, 1_001_001),
            MAX_DURATION,
        ] {
            assert_eq!(T.parse("x", &format_duration(d).to_string()), Ok(d));
        }
        assert_eq!(
            OFF.parse("x", &format_duration(Duration::ZERO).to_string()),
            Ok(Duration::ZERO)
        );
    }

    #[test]
    fn descriptions() {
        assert_eq!(T.describe(), "1ms to 7d");
        assert_eq!(OFF.describe(), "`0` (off), or 1ms to 7d");
    }
}
