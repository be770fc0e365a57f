//! The settings table, as data: every setting with its attribute option,
//! its environment variable, its default, its accepted values and its
//! meaning. The README's table and this crate's docs are rendered from it
//! (and tests keep them equal), and the macros take their option names and
//! usage examples from it.

use crate::choice::{Choice, KeeperMode, RuntimeFlavor, SpawnerMode, StateMismatch};
use crate::count::CountRule;
use crate::duration::DurationRule;
use crate::signal::Signal;

/// Environment variable overriding the control socket path (empty: none).
pub const ENV_CONTROL: &str = "SHELLFLIP_CONTROL";
/// Environment variable overriding the ready timeout.
pub const ENV_READY_TIMEOUT: &str = "SHELLFLIP_READY_TIMEOUT";
/// Environment variable overriding the probation.
pub const ENV_PROBATION: &str = "SHELLFLIP_PROBATION";
/// Environment variable overriding how many generations may drain at once.
pub const ENV_MAX_DRAINING: &str = "SHELLFLIP_MAX_DRAINING";
/// Environment variable turning systemd's fd store on or off.
pub const ENV_FD_STORE: &str = "SHELLFLIP_FD_STORE";
/// Environment variable overriding the drain timeout.
pub const ENV_DRAIN_TIMEOUT: &str = "SHELLFLIP_DRAIN_TIMEOUT";
/// Environment variable overriding the restart signal.
pub const ENV_RESTART_SIGNAL: &str = "SHELLFLIP_RESTART_SIGNAL";
/// Environment variable overriding the pid file path (empty: none).
pub const ENV_PID_FILE: &str = "SHELLFLIP_PID_FILE";
/// Environment variable overriding the state-mismatch policy.
pub const ENV_ON_STATE_MISMATCH: &str = "SHELLFLIP_ON_STATE_MISMATCH";
/// Environment variable overriding the number of worker threads.
pub const ENV_WORKER_THREADS: &str = "SHELLFLIP_WORKER_THREADS";
/// Environment variable overriding what starts the next generation.
pub const ENV_SPAWNER: &str = "SHELLFLIP_SPAWNER";
/// Environment variable saying whether the first process stays as a keeper
/// (containers).
pub const ENV_KEEPER: &str = "SHELLFLIP_KEEPER";

/// One setting of a restartable service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// What people call it: `"ready timeout"`.
    pub name: &'static str,
    /// Its option in `#[restartable(...)]`: `"ready_timeout"`.
    pub option: Option<&'static str>,
    /// The environment variable that overrides it when the service starts.
    pub env: Option<&'static str>,
    /// What values it takes, and their bounds.
    pub kind: Kind,
    /// Its default, as written in the table: `"30s"`, `"none"`.
    pub default: &'static str,
    /// A good value, as the attribute's usage examples show it.
    pub example: &'static str,
    /// What it does, in a sentence or two.
    pub meaning: &'static str,
}

/// The values a setting takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A file system path. Empty in the environment: none.
    FilePath,
    /// A duration, with its rule.
    Duration(DurationRule),
    /// A restart [`Signal`].
    Signal,
    /// A whole number, with its rule.
    Count(CountRule),
    /// One of a few words.
    Choice(&'static [Choice]),
    /// Yes or no.
    Flag,
}

/// Settings that were renamed: `(old name, name now)`, for the attribute
/// option and the environment variable. The old names are refused with a
/// message giving the new one.
pub const RENAMED: &[(&str, &str)] = &[
    ("ready_grace", "probation"),
    ("SHELLFLIP_READY_GRACE", ENV_PROBATION),
];

/// The name a renamed setting goes by now.
pub fn renamed(old: &str) -> Option<&'static str> {
    RENAMED.iter().find(|(o, _)| *o == old).map(|(_, now)| *now)
}

/// Parses a yes/no value: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`
/// (any case, white space around ignored).
///
/// ```
/// assert_eq!(shellflip_settings::parse_flag("SHELLFLIP_FD_STORE", " On "), Ok(true));
/// assert!(shellflip_settings::parse_flag("SHELLFLIP_FD_STORE", "maybe").is_err());
/// ```
pub fn parse_flag(setting: &str, text: &str) -> Result<bool, crate::SettingError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(crate::SettingError::new(
            setting,
            text,
            crate::Problem::NotAFlag,
        )),
    }
}

/// Every setting, in the order the attribute's options are documented.
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "control socket",
        option: Some("control"),
        env: Some(ENV_CONTROL),
        kind: Kind::FilePath,
        default: "none",
        example: "/run/my-service.sock",
        meaning: "The control socket (`shellflip restart`, `status`, `stop`). Without one, \
                  restarts are asked for with the restart signal.",
    },
    Setting {
        name: "restart signal",
        option: Some("restart_signal"),
        env: Some(ENV_RESTART_SIGNAL),
        kind: Kind::Signal,
        default: "SIGUSR1",
        example: "SIGUSR2",
        meaning: "The signal that asks for a restart. SIGTERM and SIGINT always stop the \
                  service gracefully.",
    },
    Setting {
        name: "ready timeout",
        option: Some("ready_timeout"),
        env: Some(ENV_READY_TIMEOUT),
        kind: Kind::Duration(DurationRule::TIMEOUT),
        default: "30s",
        example: "30s",
        meaning: "How long a new generation has to report ready before it is killed and the \
                  restart fails.",
    },
    Setting {
        name: "probation",
        option: Some("probation"),
        env: Some(ENV_PROBATION),
        kind: Kind::Duration(DurationRule::TIMEOUT_OR_OFF),
        default: "2s",
        example: "2s",
        meaning: "How long, after a new generation's READY, the old one holds its listeners \
                  and watches it: if the new one exits or calls `unhealthy()` within it, the \
                  old one serves on. `0`: the old one drains at READY.",
    },
    Setting {
        name: "drain timeout",
        option: Some("drain_timeout"),
        env: Some(ENV_DRAIN_TIMEOUT),
        kind: Kind::Duration(DurationRule::TIMEOUT),
        default: "30s",
        example: "10s",
        meaning: "How long an old generation waits for its in-flight work after it stopped \
                  accepting, before it exits anyway.",
    },
    Setting {
        name: "draining generations",
        option: Some("max_draining"),
        env: Some(ENV_MAX_DRAINING),
        kind: Kind::Count(CountRule::DRAINING),
        default: "2",
        example: "3",
        meaning: "How many older generations may drain at once; a restart beyond that ends \
                  the oldest one's drain.",
    },
    Setting {
        name: "pid file",
        option: Some("pid_file"),
        env: Some(ENV_PID_FILE),
        kind: Kind::FilePath,
        default: "none",
        example: "/run/my-service.pid",
        meaning: "A file kept holding the pid of the serving generation.",
    },
    Setting {
        name: "scheduler",
        option: Some("flavor"),
        env: None,
        kind: Kind::Choice(RuntimeFlavor::CHOICES),
        default: "multi_thread",
        example: "current_thread",
        meaning: "The Tokio scheduler.",
    },
    Setting {
        name: "worker threads",
        option: Some("worker_threads"),
        env: Some(ENV_WORKER_THREADS),
        kind: Kind::Count(CountRule::WORKER_THREADS),
        default: "one per core",
        example: "4",
        meaning: "Worker threads of the multi-threaded scheduler.",
    },
    Setting {
        name: "incompatible state",
        option: Some("on_state_mismatch"),
        env: Some(ENV_ON_STATE_MISMATCH),
        kind: Kind::Choice(StateMismatch::CHOICES),
        default: "fail",
        example: "fresh",
        meaning: "What a new generation does with state handed over by an incompatible build.",
    },
    Setting {
        name: "what starts the next generation",
        option: Some("spawner"),
        env: Some(ENV_SPAWNER),
        kind: Kind::Choice(SpawnerMode::CHOICES),
        default: "process",
        example: "inline",
        meaning: "A spawner process forked at start-up (it lets the service forbid itself \
                  `fork` and `execve`), or the service process itself.",
    },
    Setting {
        name: "fd store",
        option: Some("fd_store"),
        env: Some(ENV_FD_STORE),
        kind: Kind::Flag,
        default: "false",
        example: "true",
        meaning: "Keep the listeners and the control socket in systemd's file descriptor \
                  store, so that they outlive a crash or `systemctl restart` (the unit needs \
                  `FileDescriptorStoreMax=`).",
    },
    Setting {
        name: "keeper",
        option: None,
        env: Some(ENV_KEEPER),
        kind: Kind::Choice(KeeperMode::CHOICES),
        default: "auto",
        example: "on",
        meaning: "Whether the process started stays as a tiny init that reaps orphans, \
                  forwards signals to the serving generation and exits with its exit code \
                  (containers; see docs/containers.md). The environment also takes 1/0, \
                  true/false, yes/no.",
    },
];

impl Setting {
    /// The setting with this attribute option.
    pub fn by_option(option: &str) -> Option<&'static Setting> {
        SETTINGS.iter().find(|s| s.option == Some(option))
    }

    /// The setting with this environment variable.
    pub fn by_env(env: &str) -> Option<&'static Setting> {
        SETTINGS.iter().find(|s| s.env == Some(env))
    }

    /// How the option is written in the attribute, with the example value:
    /// `ready_timeout = "30s"`, `worker_threads = 4`.
    pub fn usage(&self) -> Option<String> {
        let option = self.option?;
        Some(match self.kind {
            Kind::Count(_) | Kind::Flag => format!("{option} = {}", self.example),
            _ => format!("{option} = \"{}\"", self.example),
        })
    }

    /// The accepted values, for the table: `1ms to 7d`, `` `fail`, `fresh` ``.
    pub fn values(&self) -> String {
        match self.kind {
            Kind::FilePath => "a path; empty in the environment: none".to_owned(),
            Kind::Duration(rule) => rule.describe(),
            Kind::Signal => {
                let names: Vec<String> = Signal::ALL
                    .iter()
                    .map(|s| format!("`{}`", s.name()))
                    .collect();
                format!("{} (any case, `SIG` optional)", names.join(", "))
            }
            Kind::Count(rule) => rule.describe(),
            Kind::Choice(choices) => {
                let words: Vec<String> = choices.iter().map(|c| format!("`{}`", c.text)).collect();
                words.join(", ")
            }
            Kind::Flag => {
                "`true`, `false` (the environment also takes 1/0, yes/no, on/off)".to_owned()
            }
        }
    }
}

/// The settings table in Markdown, as the README shows it (and this crate's
/// docs): one row per setting.
pub fn markdown_table() -> String {
    let mut table = String::from(
        "| setting | attribute (example) | environment variable | default | values | meaning |\n\
         |---|---|---|---|---|---|\n",
    );
    for setting in SETTINGS {
        let option = setting
            .usage()
            .map_or_else(|| "—".to_owned(), |usage| format!("`{usage}`"));
        let env = setting
            .env
            .map_or_else(|| "—".to_owned(), |env| format!("`{env}`"));
        table.push_str(&format!(
            "| {} | {option} | {env} | {} | {} | {} |\n",
            setting.name,
            setting.default,
            setting.values(),
            setting.meaning
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DurationRule;

    #[test]
    fn options_and_variables_are_unique_and_well_formed() {
        for (i, a) in SETTINGS.iter().enumerate() {
            for b in &SETTINGS[i + 1..] {
                assert_ne!(a.name, b.name);
                assert!(a.option.is_none() || a.option != b.option, "{}", a.name);
                assert!(a.env.is_none() || a.env != b.env, "{}", a.name);
            }
            if let Some(env) = a.env {
                assert!(env.starts_with("SHELLFLIP_"), "{env}");
                assert_eq!(Setting::by_env(env), Some(a));
            }
            if let Some(option) = a.option {
                assert_eq!(Setting::by_option(option), Some(a));
            }
            for text in [a.name, a.default, a.example, a.meaning] {
                assert!(!text.contains('|') && !text.contains('\n'), "{text}");
            }
        }
    }

    #[test]
    fn examples_and_defaults_are_accepted_values() {
        for setting in SETTINGS {
            let check = |text: &str| match setting.kind {
                Kind::FilePath => assert!(text.starts_with('/'), "{text}"),
                Kind::Duration(rule) => {
                    assert!(rule.parse(setting.name, text).is_ok(), "{text}");
                }
                Kind::Signal => assert!(Signal::parse(setting.name, text).is_ok(), "{text}"),
                Kind::Count(rule) => assert!(rule.parse(setting.name, text).is_ok(), "{text}"),
                Kind::Choice(choices) => {
                    assert!(choices.iter().any(|c| c.text == text), "{text}");
                }
                Kind::Flag => assert!(parse_flag(setting.name, text).is_ok(), "{text}"),
            };
            check(setting.example);
            match setting.default {
                "none" | "one per core" => {}
                "0 (off)" => check("0"),
                default => check(default),
            }
        }
    }

    #[test]
    fn the_docs_show_the_table() {
        let docs = include_str!("table.md");
        let table = markdown_table();
        if docs != table && std::env::var_os("SHELLFLIP_BLESS").is_some_and(|v| v == "1") {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/table.md");
            std::fs::write(path, &table).expect("writable src/table.md");
            return;
        }
        assert_eq!(
            docs, table,
            "src/table.md differs from SETTINGS; run `SHELLFLIP_BLESS=1 cargo test -p \
             shellflip-settings` and review it"
        );
    }

    #[test]
    fn usage_lines() {
        let usage = |option| Setting::by_option(option).and_then(Setting::usage);
        assert_eq!(
            usage("ready_timeout").as_deref(),
            Some("ready_timeout = \"30s\"")
        );
        assert_eq!(
            usage("worker_threads").as_deref(),
            Some("worker_threads = 4")
        );
        assert_eq!(usage("nope"), None);
        assert_eq!(renamed("ready_grace"), Some("probation"));
        assert_eq!(
            renamed("SHELLFLIP_READY_GRACE"),
            Some("SHELLFLIP_PROBATION")
        );
        assert_eq!(
            Setting::by_option("probation")
                .map(Setting::values)
                .as_deref(),
            Some(DurationRule::TIMEOUT_OR_OFF.describe().as_str())
        );
    }
}
