//! Parsing of the option values of `#[restartable(...)]` that are checked at
//! compile time: durations and signal names. Pure functions on strings, so
//! they are unit-tested without a compiler; the caller turns an `Err` into a
//! compile error on the literal.

use std::time::Duration;

/// The units a duration literal may use, largest first, with their length
/// in nanoseconds.
const UNITS: &[(&str, u128)] = &[
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

const DURATION_EXAMPLES: &str = "expected a duration like \"30s\", \"500ms\" or \"1m30s\"";

/// Parses a duration literal: one or more `<integer><unit>` parts, units
/// `h`, `m`, `s`, `ms`, `us` (or `µs`) and `ns`, largest unit first and each
/// at most once, optionally separated by spaces: `"30s"`, `"500ms"`,
/// `"1m30s"`, `"1h 15m"`. A bare number, a fraction or zero is refused.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(format!("empty duration; {DURATION_EXAMPLES}"));
    }
    let mut total: u128 = 0;
    // Index in UNITS of the last unit used: each part must use a smaller one.
    let mut previous_unit: Option<usize> = None;
    while !rest.is_empty() {
        let digits_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits_len == 0 {
            return Err(if previous_unit.is_none() {
                format!("\"{}\" is not a duration; {DURATION_EXAMPLES}", text.trim())
            } else {
                format!("expected a number before `{rest}`; {DURATION_EXAMPLES}")
            });
        }
        let (digits, after) = rest.split_at(digits_len);
        let value: u128 = digits
            .parse()
            .map_err(|_| format!("the number `{digits}` is too large"))?;
        let after = after.trim_start();
        if after.starts_with('.') {
            return Err(
                "fractions are not supported; use a smaller unit, e.g. \"1500ms\" rather than \"1.5s\""
                    .to_owned(),
            );
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| !c.is_alphabetic())
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!(
                "missing unit after `{digits}`; write e.g. \"{digits}s\" or \"{digits}ms\" (units: h, m, s, ms, us, ns)"
            ));
        }
        let unit = if unit == "µs" { "us" } else { unit };
        let index = UNITS
            .iter()
            .position(|(name, _)| *name == unit)
            .ok_or_else(|| format!("unknown unit `{unit}`; use one of h, m, s, ms, us, ns"))?;
        if previous_unit.is_some_and(|p| index <= p) {
            return Err(format!(
                "`{unit}` comes after a unit that is not larger; write the parts from the largest unit to the smallest, each once, as in \"1m30s\""
            ));
        }
        previous_unit = Some(index);
        total = value
            .checked_mul(UNITS[index].1)
            .and_then(|nanos| total.checked_add(nanos))
            .ok_or_else(|| format!("the duration \"{}\" is too large", text.trim()))?;
        rest = after.trim_start();
    }
    if total == 0 {
        return Err("a zero duration cannot be met; give at least 1ms".to_owned());
    }
    let secs = u64::try_from(total / 1_000_000_000)
        .map_err(|_| format!("the duration \"{}\" is too large", text.trim()))?;
    // The remainder of a division by 10^9 always fits in a u32.
    let subsec = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, subsec))
}

/// How to write `duration` with the `std::time::Duration` constructor that
/// reads best: the largest of seconds, milliseconds, microseconds and
/// nanoseconds that represents it exactly. `None` if it does not fit the
/// constructor's `u64` argument.
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

/// Signals a restart may be triggered by: catchable, portable across the
/// unixes shellflip supports, and with no other meaning for a service.
pub(crate) const RESTART_SIGNALS: &[&str] = &[
    "SIGHUP",
    "SIGUSR1",
    "SIGUSR2",
    "SIGWINCH",
    "SIGQUIT",
    "SIGALRM",
    "SIGVTALRM",
    "SIGPROF",
];

/// Parses a restart signal name: `"SIGUSR2"`, `"USR2"`, any case. Gives the
/// canonical name (`"SIGUSR2"`), which is also the name of the
/// `nix::sys::signal::Signal` variant.
pub(crate) fn parse_signal(text: &str) -> Result<&'static str, String> {
    let upper = text.trim().to_ascii_uppercase();
    if upper.is_empty() {
        return Err(
            "empty signal name; expected e.g. \"SIGUSR1\", \"SIGUSR2\" or \"SIGHUP\"".to_owned(),
        );
    }
    if upper.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "signal numbers differ between systems; give the signal's name, e.g. \"SIGUSR2\" rather than \"{upper}\""
        ));
    }
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    if let Some(known) = RESTART_SIGNALS.iter().find(|s| **s == name) {
        return Ok(known);
    }
    let reason = match name.as_str() {
        "SIGKILL" | "SIGSTOP" => "cannot be caught",
        "SIGTERM" | "SIGINT" => "stops the service gracefully",
        "SIGSEGV" | "SIGBUS" | "SIGILL" | "SIGFPE" | "SIGABRT" | "SIGTRAP" | "SIGSYS"
        | "SIGCHLD" | "SIGPIPE" | "SIGTSTP" | "SIGTTIN" | "SIGTTOU" | "SIGCONT" | "SIGXCPU"
        | "SIGXFSZ" | "SIGURG" | "SIGIO" | "SIGPOLL" | "SIGPWR" | "SIGSTKFLT" => {
            "has another meaning for a process"
        }
        _ => {
            let hint = crate::errors::closest(&name, RESTART_SIGNALS)
                .map(|s| format!("did you mean \"{s}\"? "))
                .unwrap_or_default();
            return Err(format!(
                "unknown signal `{name}`; {hint}a restart signal is one of {}",
                crate::errors::one_of(RESTART_SIGNALS)
            ));
        }
    };
    Err(format!(
        "{name} {reason}, so it cannot trigger a restart; use one of {}",
        crate::errors::one_of(RESTART_SIGNALS)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn simple_durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("250µs"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_duration("  45s "), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("10 s"), Ok(Duration::from_secs(10)));
    }

    #[test]
    fn compound_durations() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h 15m"), Ok(Duration::from_secs(4500)));
        assert_eq!(parse_duration("1s500ms"), Ok(ms(1500)));
        assert_eq!(
            parse_duration("1h1m1s1ms1us1ns"),
            Ok(Duration::new(3661, 1_001_001))
        );
    }

    #[test]
    fn bad_durations() {
        let err = |s: &str| parse_duration(s).unwrap_err();
        assert!(err("").contains("empty"));
        assert!(
            err("30").contains("missing unit after `30`"),
            "{}",
            err("30")
        );
        assert!(err("30 sec").contains("unknown unit `sec`"));
        assert!(err("5d").contains("unknown unit `d`"));
        assert!(err("1.5s").contains("fractions"));
        assert!(err("-5s").contains("\"-5s\" is not a duration"));
        assert!(err("soon").contains("\"soon\" is not a duration"));
        assert!(err("0s").contains("zero"));
        assert!(err("0ms0s").contains("largest unit"));
        assert!(err("30s1m").contains("largest unit"));
        assert!(err("1s1s").contains("largest unit"));
        assert!(err("30s,").contains("expected a number before `,`"));
        assert!(err("99999999999999999999999999999999999999999h").contains("too large"));
        assert!(err("18446744073709551615h").contains("too large"));
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
            duration_constructor(Duration::from_nanos(3)),
            Some(("from_nanos", 3))
        );
        assert_eq!(
            duration_constructor(Duration::new(u64::MAX, 1)),
            None,
            "more nanoseconds than a u64 holds"
        );
    }

    #[test]
    fn restart_signals() {
        assert_eq!(parse_signal("SIGUSR2"), Ok("SIGUSR2"));
        assert_eq!(parse_signal("USR2"), Ok("SIGUSR2"));
        assert_eq!(parse_signal("sighup"), Ok("SIGHUP"));
        assert_eq!(parse_signal(" winch "), Ok("SIGWINCH"));
        for name in RESTART_SIGNALS {
            assert_eq!(parse_signal(name), Ok(*name));
        }
    }

    #[test]
    fn refused_signals() {
        let err = |s: &str| parse_signal(s).unwrap_err();
        assert!(err("SIGKILL").contains("cannot be caught"));
        assert!(err("STOP").contains("cannot be caught"));
        assert!(err("SIGTERM").contains("stops the service"));
        assert!(err("int").contains("stops the service"));
        assert!(err("SIGSEGV").contains("another meaning"));
        assert!(err("SIGCHLD").contains("another meaning"));
        assert!(err("12").contains("name"));
        assert!(err("").contains("empty"));
        let unknown = err("SIGUSR3");
        assert!(unknown.contains("unknown signal `SIGUSR3`"), "{unknown}");
        assert!(unknown.contains("did you mean"), "{unknown}");
        assert!(err("SIGNOPE").contains("is one of `SIGHUP`"));
    }
}
