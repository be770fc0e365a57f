//! The error of every parser in this crate: which setting, the value as
//! given, and what is wrong with it (with an example of a good value).

use std::fmt;
use std::time::Duration;

use crate::choice::Choice;
use crate::duration::format_duration;
use crate::signal::{one_of_signals, Signal};

/// A value that cannot be used for a setting.
///
/// Its message names the setting (the attribute option, the environment
/// variable or the command-line flag, whichever the value came from), the
/// value as given, what is wrong, and an example of a good value:
///
/// ```
/// use shellflip_settings::DurationRule;
///
/// let error = DurationRule::TIMEOUT
///     .parse("SHELLFLIP_READY_TIMEOUT", "10")
///     .unwrap_err();
/// assert_eq!(
///     error.to_string(),
///     "invalid value \"10\" for SHELLFLIP_READY_TIMEOUT: a duration needs a unit: \
///      write \"10s\" for seconds or \"10ms\" for milliseconds (units: d, h, m, s, ms, us, ns)"
/// );
/// ```
///
/// (Implements [`std::error::Error`] by hand: this crate has no
/// dependencies, and one `Display` impl is all `thiserror` would write.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    setting: String,
    value: String,
    problem: Problem,
}

impl SettingError {
    /// An error for `value` given to `setting`.
    pub fn new(setting: impl Into<String>, value: impl Into<String>, problem: Problem) -> Self {
        SettingError {
            setting: setting.into(),
            value: value.into(),
            problem,
        }
    }

    /// The setting as the user named it: `ready_timeout`,
    /// `SHELLFLIP_READY_TIMEOUT`, `--timeout`, `Config::ready_timeout`.
    pub fn setting(&self) -> &str {
        &self.setting
    }

    /// The value as it was given.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// What is wrong with the value. Its `Display` is the message without
    /// the setting and the value, for callers that show those already (a
    /// compile error on the literal, clap's "invalid value for --timeout").
    pub fn problem(&self) -> &Problem {
        &self.problem
    }
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid value {:?} for {}: {}",
            self.value, self.setting, self.problem
        )
    }
}

impl std::error::Error for SettingError {}

/// What is wrong with a value. Each message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// Nothing but white space.
    Empty {
        /// A good value for this kind of setting.
        example: &'static str,
    },
    /// Not even the start of a duration (`soon`, `-5s`).
    NotADuration,
    /// A number without a unit (`10`).
    MissingUnit {
        /// The number as written.
        number: String,
    },
    /// A unit that is not one of `d`, `h`, `m`, `s`, `ms`, `us`, `ns`.
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// What to write instead, when the unit is a known spelling.
        hint: Option<&'static str>,
    },
    /// A fraction (`1.5s`).
    Fraction,
    /// Text where the next part's number was expected (`30s,`).
    MissingNumber {
        /// The text from there on.
        rest: String,
    },
    /// A part whose unit is not smaller than the previous part's (`30s1m`).
    UnitOrder {
        /// The unit out of order.
        unit: String,
    },
    /// Zero, for a setting that cannot be off.
    Zero,
    /// Shorter than the setting's minimum.
    TooShort {
        /// The minimum.
        min: Duration,
        /// Whether `0` (off) is accepted.
        may_be_off: bool,
    },
    /// Longer than the setting's maximum.
    TooLong {
        /// The maximum.
        max: Duration,
    },
    /// Not a whole number.
    NotACount,
    /// A whole number out of the setting's range.
    OutOfRange {
        /// The smallest accepted value.
        min: usize,
        /// The largest accepted value.
        max: usize,
    },
    /// A signal given by number.
    SignalNumber {
        /// The permitted restart signal with this number on this system.
        signal: Option<Signal>,
    },
    /// A signal that exists but cannot be a restart signal.
    RefusedSignal {
        /// Its name.
        name: String,
        /// Why, as the end of a sentence starting with "it".
        reason: &'static str,
    },
    /// A name that is no signal shellflip knows.
    UnknownSignal {
        /// The name, with the `SIG` prefix.
        name: String,
        /// The closest permitted signal, if one is close.
        suggestion: Option<Signal>,
    },
    /// Not one of a setting's words.
    UnknownChoice {
        /// The accepted words.
        choices: &'static [Choice],
        /// The closest accepted word, if one is close.
        suggestion: Option<&'static str>,
    },
    /// An empty path where the setting cannot be turned off that way.
    EmptyPath,
    /// A path with a NUL byte.
    NulInPath,
    /// An environment variable that is not valid UTF-8.
    NotUtf8,
    /// Not a yes/no value.
    NotAFlag,
    /// A setting that was renamed.
    Renamed {
        /// Its name now.
        now: &'static str,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Empty { .. }
            | Problem::NotADuration
            | Problem::MissingUnit { .. }
            | Problem::UnknownUnit { .. }
            | Problem::Fraction
            | Problem::MissingNumber { .. }
            | Problem::UnitOrder { .. }
            | Problem::Zero
            | Problem::TooShort { .. }
            | Problem::TooLong { .. } => self.fmt_duration(f),
            Problem::NotACount => f.write_str("not a whole number; give one such as 4"),
            Problem::OutOfRange { min, max } => write!(
                f,
                "out of range: give a whole number from {min} to {max}, e.g. 4"
            ),
            Problem::SignalNumber { signal } => {
                f.write_str("signal numbers differ between systems; write the signal's name")?;
                match signal {
                    Some(signal) => write!(
                        f,
                        ": \"{}\" (which is {} here)",
                        signal.name(),
                        signal.number()
                    ),
                    None => write!(f, ", one of {}", one_of_signals()),
                }
            }
            Problem::RefusedSignal { name, reason } => write!(
                f,
                "{name} cannot trigger a restart: it {reason}; use one of {}",
                one_of_signals()
            ),
            Problem::UnknownSignal { name, suggestion } => {
                write!(f, "unknown signal `{name}`; ")?;
                if let Some(signal) = suggestion {
                    write!(f, "did you mean \"{}\"? ", signal.name())?;
                }
                write!(f, "a restart signal is one of {}", one_of_signals())
            }
            Problem::UnknownChoice {
                choices,
                suggestion,
            } => {
                if let Some(suggestion) = suggestion {
                    write!(f, "did you mean \"{suggestion}\"? ")?;
                }
                f.write_str("expected ")?;
                for (index, choice) in choices.iter().enumerate() {
                    if index > 0 {
                        f.write_str(if index + 1 == choices.len() {
                            " or "
                        } else {
                            ", "
                        })?;
                    }
                    write!(f, "\"{}\" ({})", choice.text, choice.meaning)?;
                }
                Ok(())
            }
            Problem::EmptyPath => {
                f.write_str("a path cannot be empty; leave the option out to go without")
            }
            Problem::NulInPath => f.write_str(
                "a path cannot contain a NUL character; remove it, as in \"/run/my-service.sock\"",
            ),
            Problem::NotUtf8 => {
                f.write_str("not valid UTF-8; give plain text such as \"30s\" or \"SIGUSR2\"")
            }
            Problem::NotAFlag => f.write_str(
                "not a yes/no value; give \"true\" or \"false\" (also 1/0, yes/no, on/off)",
            ),
            Problem::Renamed { now } => write!(f, "this setting is now called {now}; rename it"),
        }
    }
}

impl Problem {
    /// The message of a problem with a duration (or an empty value).
    fn fmt_duration(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Empty { example } => {
                write!(f, "the value is empty; give one such as \"{example}\"")
            }
            Problem::NotADuration => f.write_str(
                "not a duration; expected a duration such as \"30s\", \"500ms\" or \"1m30s\" \
                 (a whole number and a unit: d, h, m, s, ms, us or ns)",
            ),
            Problem::MissingUnit { number } => write!(
                f,
                "a duration needs a unit: write \"{number}s\" for seconds or \"{number}ms\" \
                 for milliseconds (units: d, h, m, s, ms, us, ns)"
            ),
            Problem::UnknownUnit { unit, hint } => {
                write!(f, "unknown unit `{unit}`; ")?;
                if let Some(hint) = hint {
                    write!(f, "{hint}; ")?;
                }
                f.write_str("the units are d, h, m, s, ms, us and ns, as in \"30s\"")
            }
            Problem::Fraction => f.write_str(
                "fractions are not supported; use a smaller unit, e.g. \"1500ms\" rather than \"1.5s\"",
            ),
            Problem::MissingNumber { rest } => write!(
                f,
                "expected a number before `{rest}`; write the parts of a duration one after \
                 the other, as in \"1m30s\""
            ),
            Problem::UnitOrder { unit } => write!(
                f,
                "`{unit}` comes after a unit that is not larger; write the parts from the \
                 largest unit to the smallest, each once, as in \"1m30s\""
            ),
            Problem::Zero => f.write_str(
                "a zero timeout can never be met; it must be greater than zero \
                 (at least 1ms), e.g. \"30s\"",
            ),
            Problem::TooShort { min, may_be_off } => {
                write!(
                    f,
                    "too short: the minimum is {}, the resolution of the timers",
                    format_duration(*min)
                )?;
                if *may_be_off {
                    f.write_str("; \"0\" turns it off")?;
                }
                f.write_str(", e.g. \"200ms\"")
            }
            Problem::TooLong { max } => write!(
                f,
                "too long: the maximum is {}, e.g. \"30s\" or \"2h\"",
                format_duration(*max)
            ),
            // Only the problems with a duration come here.
            _ => Ok(()),
        }
    }
}

impl std::error::Error for Problem {}
