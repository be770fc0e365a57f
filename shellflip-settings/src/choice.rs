//! The settings that are one of a few words: the runtime flavor, the
//! state-mismatch policy and the spawner mode.

use std::fmt;
use std::str::FromStr;

use crate::error::{Problem, SettingError};

/// One accepted word of a setting, and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The word: `"multi_thread"`.
    pub text: &'static str,
    /// What it means, in a few words.
    pub meaning: &'static str,
}

/// Defines an enum whose variants have a text form, with `CHOICES`,
/// `as_str`, `variant_name`, `parse`, `Display` and `FromStr`.
macro_rules! choices {
    (
        $(#[$meta:meta])*
        pub enum $name:ident for $setting:literal {
            $(
                $(#[$variant_meta:meta])*
                $variant:ident = $text:literal ($meaning:literal),
            )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub enum $name {
            $(
                $(#[$variant_meta])*
                $variant,
            )+
        }

        impl $name {
            /// The accepted words, in the order of the variants.
            pub const CHOICES: &'static [Choice] = &[
                $(Choice { text: $text, meaning: $meaning },)+
            ];

            /// The text form: what the attribute and the environment take.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The variant's name as written in Rust (what the macros
            /// expand to).
            pub const fn variant_name(self) -> &'static str {
                match self {
                    $($name::$variant => stringify!($variant),)+
                }
            }

            /// Parses the text form for `setting` (any case, white space
            /// around ignored).
            pub fn parse(setting: &str, text: &str) -> Result<Self, SettingError> {
                let word = text.trim().to_ascii_lowercase();
                $(
                    if word == $text {
                        return Ok($name::$variant);
                    }
                )+
                let words: Vec<&'static str> = Self::CHOICES.iter().map(|c| c.text).collect();
                let problem = if word.is_empty() {
                    Problem::Empty { example: Self::CHOICES[0].text }
                } else {
                    Problem::UnknownChoice {
                        choices: Self::CHOICES,
                        suggestion: crate::closest(&word, &words),
                    }
                };
                Err(SettingError::new(setting, text, problem))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = SettingError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::parse($setting, text)
            }
        }
    };
}

choices! {
    /// How the Tokio runtime that runs the service is built.
    pub enum RuntimeFlavor for "flavor" {
        /// The multi-threaded scheduler (what `#[tokio::main]` uses by
        /// default).
        #[default]
        MultiThread = "multi_thread" ("the multi-threaded scheduler"),
        /// A single-threaded scheduler on the main thread.
        CurrentThread = "current_thread" ("one thread"),
    }
}

choices! {
    /// What a new generation does when the state handed over by the previous
    /// one was written by an incompatible build (another type or fingerprint).
    pub enum StateMismatch for "on_state_mismatch" {
        /// Refuse to start: the new generation reports a failure naming both
        /// fingerprints, and the old generation keeps serving. The safe
        /// default.
        #[default]
        Fail = "fail" ("refuse to start; the old generation keeps serving"),
        /// Log a warning and start with fresh state, as if this were the
        /// first generation.
        Fresh = "fresh" ("start with fresh state"),
    }
}

choices! {
    /// What starts the next generation.
    pub enum SpawnerMode for "spawner" {
        /// A small spawner process (`shellflip-spawn`), forked at start-up
        /// before the Tokio runtime and the service's own code exist, starts
        /// each next generation, reaps it, and kills it if the restart fails.
        /// The service process itself then never needs `fork` or `execve`, so
        /// it may forbid them to itself (seccomp) after start-up and still
        /// restart. The next generation starts with the environment, working
        /// directory, credentials and limits the service had at start-up.
        /// Each generation has its own spawner, which exits with it; if it is
        /// killed, restarts fail with `RestartError::SpawnerGone`. Falls back
        /// to [`Inline`](Self::Inline), with a warning, if `run` is called
        /// while the process already has other threads (it could not fork
        /// safely) or the spawner cannot be started.
        #[default]
        Process = "process" ("a spawner process forked at start-up starts it"),
        /// The service process spawns the next generation itself (`fork` +
        /// `execve` at restart time), with its environment at that moment.
        /// One process less, but a service that forbids itself `execve`
        /// cannot restart.
        Inline = "inline" ("the service process starts it itself"),
    }
}

choices! {
    /// Whether the process `run` starts in stays as a *keeper*: a small
    /// init for containers that reaps every orphan, forwards signals to the
    /// generation that serves, and exits with its exit code when the
    /// service is over (generation 1 then runs as its child). Read from
    /// `SHELLFLIP_KEEPER` only, at start-up: it is a property of where the
    /// service runs, not of its code.
    pub enum KeeperMode for "SHELLFLIP_KEEPER" {
        /// Keep when the process is PID 1 (of a container's PID namespace),
        /// or when its parent is a minimal init that exits with its child
        /// (`tini`, `docker-init`, `dumb-init`, `catatonit`).
        #[default]
        Auto = "auto" ("keep when PID 1 or under tini, dumb-init and the like"),
        /// Always keep (the environment also takes `1`, `true`, `yes`).
        On = "on" ("always keep"),
        /// Never keep (the environment also takes `0`, `false`, `no`).
        Off = "off" ("never keep"),
    }
}

impl KeeperMode {
    /// Parses `SHELLFLIP_KEEPER`: `auto`, or a yes/no value (`on`/`off`,
    /// `1`/`0`, `true`/`false`, `yes`/`no`).
    ///
    /// ```
    /// use shellflip_settings::KeeperMode;
    /// assert_eq!(KeeperMode::parse_env("1"), Ok(KeeperMode::On));
    /// assert_eq!(KeeperMode::parse_env(" Auto "), Ok(KeeperMode::Auto));
    /// assert!(KeeperMode::parse_env("sometimes").is_err());
    /// ```
    pub fn parse_env(text: &str) -> Result<Self, SettingError> {
        match crate::parse_flag(crate::ENV_KEEPER, text) {
            Ok(true) => Ok(KeeperMode::On),
            Ok(false) => Ok(KeeperMode::Off),
            Err(_) => Self::parse(crate::ENV_KEEPER, text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_parses_in_any_case() {
        for (flavor, text) in [
            (RuntimeFlavor::MultiThread, "multi_thread"),
            (RuntimeFlavor::CurrentThread, "current_thread"),
        ] {
            assert_eq!(RuntimeFlavor::parse("f", text), Ok(flavor));
            assert_eq!(RuntimeFlavor::parse("f", &text.to_uppercase()), Ok(flavor));
            assert_eq!(flavor.as_str(), text);
            assert_eq!(flavor.to_string(), text);
        }
        assert_eq!(
            StateMismatch::parse("s", " Fresh "),
            Ok(StateMismatch::Fresh)
        );
        assert_eq!("fail".parse::<StateMismatch>(), Ok(StateMismatch::Fail));
        assert_eq!(SpawnerMode::parse("s", "INLINE"), Ok(SpawnerMode::Inline));
        assert_eq!("process".parse::<SpawnerMode>(), Ok(SpawnerMode::Process));
    }

    #[test]
    fn defaults_and_variant_names() {
        assert_eq!(RuntimeFlavor::default(), RuntimeFlavor::MultiThread);
        assert_eq!(StateMismatch::default(), StateMismatch::Fail);
        assert_eq!(SpawnerMode::default(), SpawnerMode::Process);
        assert_eq!(RuntimeFlavor::CurrentThread.variant_name(), "CurrentThread");
        assert_eq!(StateMismatch::Fresh.variant_name(), "Fresh");
        assert_eq!(SpawnerMode::Inline.variant_name(), "Inline");
        assert_eq!(format!("{:?}", SpawnerMode::Inline), "Inline");
    }

    #[test]
    fn unknown_words_list_the_choices() {
        let e = SpawnerMode::parse("SHELLFLIP_SPAWNER", "fork").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value \"fork\" for SHELLFLIP_SPAWNER: expected \"process\" (a spawner process \
             forked at start-up starts it) or \"inline\" (the service process starts it itself)"
        );
        let e = RuntimeFlavor::parse("flavor", "multi").unwrap_err();
        assert!(
            e.to_string().contains("did you mean \"multi_thread\"?"),
            "{e}"
        );
        let e = StateMismatch::parse("on_state_mismatch", "").unwrap_err();
        assert_eq!(e.problem(), &Problem::Empty { example: "fail" });
        let e = "maybe".parse::<StateMismatch>().unwrap_err();
        assert_eq!(e.setting(), "on_state_mismatch");
    }
}
