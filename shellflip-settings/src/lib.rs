//! The settings vocabulary of [shellflip](https://docs.rs/shellflip-tokio): how
//! every setting is written, what it accepts, and what it means — in one
//! place, used by the `#[restartable]` attribute (at compile time), by the
//! runtime for the `SHELLFLIP_*` environment variables (at start-up) and by
//! the `shellflip` command-line tool (`--timeout`). A value is accepted or
//! refused the same way, with the same message, wherever it is written.
//!
//! # The settings
//!
//! Every setting has a default, can be set in the attribute (or in
//! `shellflip::Config`), and can be overridden when the service starts by
//! its environment variable. An empty `SHELLFLIP_CONTROL` or
//! `SHELLFLIP_PID_FILE` turns the feature off. A value that is refused
//! stops the service at start-up (or the build, in the attribute) with a
//! message naming the setting, the value, what is wrong and an example of
//! a good value.
//!
#![doc = include_str!("table.md")]
//!
//! (The README shows the same table; a test keeps them equal to
//! [`SETTINGS`].)
//!
//! # Durations: a unit is required
//!
//! A duration is one or more parts `<whole number><unit>`, units `d`, `h`,
//! `m`, `s`, `ms`, `us` (or `µs`) and `ns`, largest unit first, each at
//! most once, optionally separated by spaces: `"30s"`, `"500ms"`,
//! `"1m30s"`, `"1h 15m"`. White space around the value is ignored;
//! fractions are refused (`"1500ms"`, not `"1.5s"`).
//!
//! **A bare number is refused** (`"10"` gets "a duration needs a unit:
//! write "10s" for seconds or "10ms" for milliseconds"), everywhere: in the
//! attribute, the environment and on the command line. Why a unit rather
//! than "a bare number is seconds":
//!
//! - A bare number is ambiguous to the reader of a unit file or a deploy
//!   script: systemd reads `TimeoutSec=10` as seconds, but many tools read
//!   a bare timeout as milliseconds. A unit costs one character and removes
//!   the doubt, and a refused `10` is fixed in seconds, while a `10` read
//!   in the wrong unit is a silent outage (a 10 ms ready timeout fails
//!   every restart; a 10 000 s drain blocks every deploy).
//! - The attribute already required a unit, and it is the form most
//!   configurations already use; only the environment and the CLI accepted
//!   bare seconds, and their message now says exactly what to write.
//!
//! The one exception is **`0`**, which is zero in every unit: a setting that
//! may be off (the probation) takes `0` (or `0s`) for off. A setting that
//! cannot be off (a timeout) refuses zero, which could never be met.
//!
//! # Bounds
//!
//! Every duration is from 1 ms ([`MIN_DURATION`], the resolution of Tokio's
//! timers) to 7 days ([`MAX_DURATION`]): far above any real wait, far below
//! where the runtime's arithmetic on instants or Tokio's timers could
//! overflow or be clamped, so no accepted value can make a later
//! `Instant + Duration` panic. Values set in code (`Config`) are checked
//! against the same bounds at start-up ([`DurationRule::check`]). The
//! number of worker threads is from 1 to 1024
//! ([`CountRule::WORKER_THREADS`]).
//!
//! # Restart signals
//!
//! One list, [`Signal::ALL`]: `SIGUSR1` (the default), `SIGUSR2`,
//! `SIGHUP`, `SIGWINCH` and `SIGQUIT`, written by name (any case, `SIG`
//! optional). Every other signal is refused with the reason
//! ([`REFUSED_SIGNALS`]); numbers are refused with the name to write, as
//! they differ between systems. [`Signal`] explains each choice, including
//! why `SIGCONT` is refused.
//!
//! # Words
//!
//! [`RuntimeFlavor`], [`StateMismatch`] and [`SpawnerMode`] are written as
//! their words (`"current_thread"`, `"fresh"`, `"inline"`), in any case.
//!
//! # Errors
//!
//! Every parser returns a [`SettingError`]: the setting as the user named
//! it, the value as given, and the [`Problem`].
//!
//! This crate has no dependencies: the proc-macro crate, the runtime and
//! the CLI all use it.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod choice;
mod count;
mod duration;
mod error;
mod signal;
mod table;

pub use choice::{Choice, KeeperMode, RuntimeFlavor, SpawnerMode, StateMismatch};
pub use count::CountRule;
pub use duration::{format_duration, DurationRule, FormattedDuration, MAX_DURATION, MIN_DURATION};
pub use error::{Problem, SettingError};
pub use signal::{RefusedSignal, Signal, REFUSED_SIGNALS};
pub use table::{
    markdown_table, parse_flag, renamed, Kind, Setting, ENV_CONTROL, ENV_DRAIN_TIMEOUT,
    ENV_FD_STORE, ENV_KEEPER, ENV_MAX_DRAINING, ENV_ON_STATE_MISMATCH, ENV_PID_FILE, ENV_PROBATION,
    ENV_READY_TIMEOUT, ENV_RESTART_SIGNAL, ENV_SPAWNER, ENV_WORKER_THREADS, RENAMED, SETTINGS,
};

/// The name among `known` closest to `wrong` (a small edit distance, or one
/// a prefix of the other, ignoring case), for "did you mean" hints. Used by
/// the messages of this crate and of the macros.
///
/// ```
/// assert_eq!(shellflip_settings::closest("contrl", &["control", "pid_file"]), Some("control"));
/// assert_eq!(shellflip_settings::closest("zzz", &["control", "pid_file"]), None);
/// ```
pub fn closest<'a>(wrong: &str, known: &[&'a str]) -> Option<&'a str> {
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

/// Levenshtein distance between two short strings.
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
}
