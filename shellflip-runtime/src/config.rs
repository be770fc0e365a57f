//! Settings of a restartable service: defaults, the config struct and the
//! `SHELLFLIP_*` environment overrides.
//!
//! Every setting has a default, can be set in [`Config`] (which is what
//! `#[restartable(...)]` fills in) and can be overridden when the service is
//! started by an environment variable:
//!
//! | setting           | default   | environment variable          | example value      |
//! |-------------------|-----------|-------------------------------|--------------------|
//! | control socket    | none      | `SHELLFLIP_CONTROL`           | `/run/app.sock`    |
//! | ready timeout     | 30s       | `SHELLFLIP_READY_TIMEOUT`     | `10s`, `500ms`     |
//! | ready grace       | 0s        | `SHELLFLIP_READY_GRACE`       | `200ms`            |
//! | drain timeout     | 30s       | `SHELLFLIP_DRAIN_TIMEOUT`     | `1m`               |
//! | restart signal    | SIGUSR1   | `SHELLFLIP_RESTART_SIGNAL`    | `SIGHUP`, `USR2`   |
//! | pid file          | none      | `SHELLFLIP_PID_FILE`          | `/run/app.pid`     |
//! | state mismatch    | fail      | `SHELLFLIP_ON_STATE_MISMATCH` | `fail`, `fresh`    |
//! | worker threads    | cores     | `SHELLFLIP_WORKER_THREADS`    | `4`                |
//! | spawner           | process   | `SHELLFLIP_SPAWNER`           | `process`, `inline`|
//!
//! An empty `SHELLFLIP_CONTROL` or `SHELLFLIP_PID_FILE` turns the feature off.
//! A malformed value is an error at start-up ([`ConfigError`]), never silently
//! ignored.

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

/// How the Tokio runtime that runs the service is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuntimeFlavor {
    /// The multi-threaded scheduler (what `#[tokio::main]` uses by default).
    #[default]
    MultiThread,
    /// A single-threaded scheduler on the main thread.
    CurrentThread,
}

/// What a new generation does when the state handed over by the previous
/// one cannot be carried into this build's type (a changed field type, a
/// missing field without default, a version without migration: see
/// `StateError::is_mismatch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateMismatch {
    /// Refuse to start: the new generation reports a failure naming the
    /// field and what does not fit, and the old generation keeps serving.
    /// The safe default.
    #[default]
    Fail,
    /// Log a warning and start with fresh state, as if this were the first
    /// generation.
    Fresh,
}

/// What starts the next generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpawnerMode {
    /// A small spawner process (`shellflip-spawn`), forked at start-up
    /// before the Tokio runtime and the service's own code exist, starts
    /// each next generation, reaps it, and kills it if the restart fails.
    /// The service process itself then never needs `fork` or `execve`, so
    /// it may forbid them to itself (seccomp) after start-up and still
    /// restart. The next generation starts with the environment, working
    /// directory, credentials and limits the service had at start-up. Each
    /// generation has its own spawner, which exits with it; if it is killed,
    /// restarts fail with
    /// [`RestartError::SpawnerGone`](crate::RestartError::SpawnerGone).
    /// Falls back to [`Inline`](Self::Inline), with a warning, if
    /// [`run`](crate::run) is called while the process already has other
    /// threads (it could not fork safely) or the spawner cannot be started.
    #[default]
    Process,
    /// The service process spawns the next generation itself (`fork` +
    /// `execve` at restart time), with its environment at that moment. One
    /// process less, but a service that forbids itself `execve` cannot
    /// restart.
    Inline,
}

/// The settings of a restartable service.
///
/// Build one with [`Config::default`] and the builder-style setters, or let
/// `#[restartable(...)]` build it. [`Config::apply_env`] (called by
/// [`run`](crate::run)) then applies the `SHELLFLIP_*` overrides.
///
/// ```
/// use std::time::Duration;
/// use shellflip_runtime::Config;
///
/// let config = Config::default()
///     .control_socket("/run/my-service.sock")
///     .ready_timeout(Duration::from_secs(10))
///     .drain_timeout(Duration::from_secs(60));
/// assert_eq!(config.ready_timeout, Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Path of the control socket (`restart`, `status`, `stop`). `None`: no
    /// control socket; restarts are then triggered by the restart signal.
    pub control_socket: Option<PathBuf>,
    /// How long a new generation has to report ready before it is killed
    /// and the restart is reported as failed.
    pub ready_timeout: Duration,
    /// How long the old generation keeps serving after the new one reported
    /// ready, watching it, before the restart counts as a success. A new
    /// generation that dies within it is reported as a failed restart and
    /// the old generation carries on. Zero (the default) commits at READY:
    /// fastest, but a build that crashes right after READY takes the service
    /// down until its supervisor (systemd) restarts it. Every restart's
    /// latency grows by this much.
    pub ready_grace: Duration,
    /// How long an old generation waits for its in-flight work after it
    /// stopped accepting, before it exits anyway.
    pub drain_timeout: Duration,
    /// The signal that triggers a restart.
    pub restart_signal: Signal,
    /// A pid file kept pointing at the serving generation.
    pub pid_file: Option<PathBuf>,
    /// What to do with handed-over state from an incompatible build.
    pub on_state_mismatch: StateMismatch,
    /// The Tokio scheduler.
    pub flavor: RuntimeFlavor,
    /// Worker threads of the multi-threaded scheduler (`None`: one per core).
    pub worker_threads: Option<usize>,
    /// What starts the next generation.
    pub spawner: SpawnerMode,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            control_socket: None,
            ready_timeout: Duration::from_secs(30),
            ready_grace: Duration::ZERO,
            drain_timeout: Duration::from_secs(30),
            restart_signal: Signal::SIGUSR1,
            pid_file: None,
            on_state_mismatch: StateMismatch::Fail,
            flavor: RuntimeFlavor::MultiThread,
            worker_threads: None,
            spawner: SpawnerMode::Process,
        }
    }
}

/// A `SHELLFLIP_*` variable (or a config value) that could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid value {value:?} for {setting}: {reason}")]
pub struct ConfigError {
    /// The setting or environment variable.
    pub setting: String,
    /// The value that was given.
    pub value: String,
    /// What is wrong with it and what is expected.
    pub reason: String,
}

impl Config {
    /// Sets the control socket path.
    pub fn control_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.control_socket = Some(path.into());
        self
    }

    /// Sets the ready timeout.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Sets the ready grace (see [`Config::ready_grace`]).
    pub fn ready_grace(mut self, grace: Duration) -> Self {
        self.ready_grace = grace;
        self
    }

    /// Sets the drain timeout.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Sets the restart signal.
    pub fn restart_signal(mut self, signal: Signal) -> Self {
        self.restart_signal = signal;
        self
    }

    /// Sets the pid file path.
    pub fn pid_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.pid_file = Some(path.into());
        self
    }

    /// Sets what to do with state from an incompatible build.
    pub fn on_state_mismatch(mut self, policy: StateMismatch) -> Self {
        self.on_state_mismatch = policy;
        self
    }

    /// Sets the Tokio scheduler.
    pub fn flavor(mut self, flavor: RuntimeFlavor) -> Self {
        self.flavor = flavor;
        self
    }

    /// Sets the number of worker threads of the multi-threaded scheduler.
    pub fn worker_threads(mut self, threads: usize) -> Self {
        self.worker_threads = Some(threads);
        self
    }

    /// Sets what starts the next generation.
    pub fn spawner(mut self, mode: SpawnerMode) -> Self {
        self.spawner = mode;
        self
    }

    /// Applies the `SHELLFLIP_*` overrides found in the process environment.
    pub fn apply_env(self) -> Result<Self, ConfigError> {
        self.apply_overrides(|name| std::env::var_os(name))
    }

    /// Applies overrides read through `lookup` (the environment, in
    /// [`apply_env`](Self::apply_env); a map in tests).
    pub fn apply_overrides(
        mut self,
        lookup: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<Self, ConfigError> {
        let text = |name: &str| -> Result<Option<String>, ConfigError> {
            match lookup(name) {
                None => Ok(None),
                Some(value) => value.into_string().map(Some).map_err(|value| ConfigError {
                    setting: name.to_owned(),
                    value: value.to_string_lossy().into_owned(),
                    reason: "not valid UTF-8".to_owned(),
                }),
            }
        };
        if let Some(path) = lookup(ENV_CONTROL) {
            self.control_socket = (!path.is_empty()).then(|| PathBuf::from(path));
        }
        if let Some(path) = lookup(ENV_PID_FILE) {
            self.pid_file = (!path.is_empty()).then(|| PathBuf::from(path));
        }
        if let Some(value) = text(ENV_READY_TIMEOUT)? {
            self.ready_timeout = parse_duration(ENV_READY_TIMEOUT, &value)?;
        }
        if let Some(value) = text(ENV_READY_GRACE)? {
            self.ready_grace = parse_grace(ENV_READY_GRACE, &value)?;
        }
        if let Some(value) = text(ENV_DRAIN_TIMEOUT)? {
            self.drain_timeout = parse_duration(ENV_DRAIN_TIMEOUT, &value)?;
        }
        if let Some(value) = text(ENV_RESTART_SIGNAL)? {
            self.restart_signal = parse_signal(ENV_RESTART_SIGNAL, &value)?;
        }
        if let Some(value) = text(ENV_ON_STATE_MISMATCH)? {
            self.on_state_mismatch = parse_state_mismatch(ENV_ON_STATE_MISMATCH, &value)?;
        }
        if let Some(value) = text(ENV_WORKER_THREADS)? {
            self.worker_threads = Some(match value.trim().parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(ConfigError {
                        setting: ENV_WORKER_THREADS.to_owned(),
                        value,
                        reason: "expected a positive whole number".to_owned(),
                    })
                }
            });
        }
        if let Some(value) = text(ENV_SPAWNER)? {
            self.spawner = parse_spawner(ENV_SPAWNER, &value)?;
        }
        Ok(self)
    }
}

/// Environment variable overriding [`Config::control_socket`].
pub const ENV_CONTROL: &str = "SHELLFLIP_CONTROL";
/// Environment variable overriding [`Config::ready_timeout`].
pub const ENV_READY_TIMEOUT: &str = "SHELLFLIP_READY_TIMEOUT";
/// Environment variable overriding [`Config::ready_grace`].
pub const ENV_READY_GRACE: &str = "SHELLFLIP_READY_GRACE";
/// Environment variable overriding [`Config::drain_timeout`].
pub const ENV_DRAIN_TIMEOUT: &str = "SHELLFLIP_DRAIN_TIMEOUT";
/// Environment variable overriding [`Config::restart_signal`].
pub const ENV_RESTART_SIGNAL: &str = "SHELLFLIP_RESTART_SIGNAL";
/// Environment variable overriding [`Config::pid_file`].
pub const ENV_PID_FILE: &str = "SHELLFLIP_PID_FILE";
/// Environment variable overriding [`Config::on_state_mismatch`].
pub const ENV_ON_STATE_MISMATCH: &str = "SHELLFLIP_ON_STATE_MISMATCH";
/// Environment variable overriding [`Config::worker_threads`].
pub const ENV_WORKER_THREADS: &str = "SHELLFLIP_WORKER_THREADS";
/// Environment variable overriding [`Config::spawner`].
pub const ENV_SPAWNER: &str = "SHELLFLIP_SPAWNER";

/// Parses a duration such as `30s`, `500ms`, `2m` or `1m 30s`; a bare number
/// is taken as seconds. Zero is refused: a zero timeout cannot be met.
pub fn parse_duration(setting: &str, value: &str) -> Result<Duration, ConfigError> {
    let trimmed = value.trim();
    let parsed = match trimmed.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(trimmed).map_err(|e| e.to_string()),
    };
    match parsed {
        Ok(d) if d.is_zero() => Err("a zero duration cannot be met; give at least 1ms".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!(
            "{e}; expected a duration like \"30s\", \"500ms\" or \"2m\""
        )),
    }
    .map_err(|reason| ConfigError {
        setting: setting.to_owned(),
        value: value.to_owned(),
        reason,
    })
}

/// Parses a ready grace: like [`parse_duration`], but zero (`0`, `0s`) is
/// allowed and turns the grace off.
pub fn parse_grace(setting: &str, value: &str) -> Result<Duration, ConfigError> {
    let trimmed = value.trim();
    if trimmed == "0" || humantime::parse_duration(trimmed).is_ok_and(|d| d.is_zero()) {
        return Ok(Duration::ZERO);
    }
    parse_duration(setting, value)
}

/// Parses a signal name (`SIGHUP`, `HUP`, case-insensitive) or number.
/// Signals that cannot be caught or that shellflip uses for stopping
/// (SIGKILL, SIGSTOP, SIGTERM, SIGINT) are refused.
pub fn parse_signal(setting: &str, value: &str) -> Result<Signal, ConfigError> {
    let err = |reason: String| ConfigError {
        setting: setting.to_owned(),
        value: value.to_owned(),
        reason,
    };
    let trimmed = value.trim();
    let signal = if let Ok(number) = trimmed.parse::<i32>() {
        Signal::try_from(number).map_err(|_| err(format!("{number} is not a signal number")))?
    } else {
        let upper = trimmed.to_ascii_uppercase();
        let name = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        name.parse::<Signal>().map_err(|_| {
            err("unknown signal name; expected e.g. SIGUSR1, SIGUSR2 or SIGHUP".to_owned())
        })?
    };
    match signal {
        Signal::SIGKILL | Signal::SIGSTOP => Err(err("this signal cannot be caught".to_owned())),
        Signal::SIGTERM | Signal::SIGINT => Err(err(
            "SIGTERM and SIGINT stop the service gracefully; pick another signal for restarts"
                .to_owned(),
        )),
        Signal::SIGSEGV
        | Signal::SIGBUS
        | Signal::SIGILL
        | Signal::SIGFPE
        | Signal::SIGCHLD
        | Signal::SIGPIPE => Err(err(
            "this signal has another meaning for the process; use SIGUSR1, SIGUSR2 or SIGHUP"
                .to_owned(),
        )),
        other => Ok(other),
    }
}

/// Parses `fail` or `fresh`.
pub fn parse_state_mismatch(setting: &str, value: &str) -> Result<StateMismatch, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "fail" => Ok(StateMismatch::Fail),
        "fresh" => Ok(StateMismatch::Fresh),
        _ => Err(ConfigError {
            setting: setting.to_owned(),
            value: value.to_owned(),
            reason: "expected \"fail\" or \"fresh\"".to_owned(),
        }),
    }
}

/// Parses `process` or `inline`.
pub fn parse_spawner(setting: &str, value: &str) -> Result<SpawnerMode, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "process" => Ok(SpawnerMode::Process),
        "inline" => Ok(SpawnerMode::Inline),
        _ => Err(ConfigError {
            setting: setting.to_owned(),
            value: value.to_owned(),
            reason: "expected \"process\" (a spawner forked at start-up) or \"inline\" (spawn from the service process)".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::ffi::OsString;

    fn with(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        Config::default().apply_overrides(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_are_documented_values() {
        let c = Config::default();
        assert_eq!(c.control_socket, None);
        assert_eq!(c.ready_timeout, Duration::from_secs(30));
        assert_eq!(c.drain_timeout, Duration::from_secs(30));
        assert_eq!(c.restart_signal, Signal::SIGUSR1);
        assert_eq!(c.on_state_mismatch, StateMismatch::Fail);
        assert_eq!(c.spawner, SpawnerMode::Process);
    }

    #[test]
    fn env_overrides_every_setting() {
        let c = with(&[
            ("SHELLFLIP_CONTROL", "/run/x.sock"),
            ("SHELLFLIP_READY_TIMEOUT", "500ms"),
            ("SHELLFLIP_READY_GRACE", "250ms"),
            ("SHELLFLIP_DRAIN_TIMEOUT", "2m"),
            ("SHELLFLIP_RESTART_SIGNAL", "hup"),
            ("SHELLFLIP_PID_FILE", "/run/x.pid"),
            ("SHELLFLIP_ON_STATE_MISMATCH", "fresh"),
            ("SHELLFLIP_WORKER_THREADS", "3"),
            ("SHELLFLIP_SPAWNER", "inline"),
        ])
        .unwrap();
        assert_eq!(c.control_socket, Some(PathBuf::from("/run/x.sock")));
        assert_eq!(c.ready_timeout, Duration::from_millis(500));
        assert_eq!(c.ready_grace, Duration::from_millis(250));
        assert_eq!(c.drain_timeout, Duration::from_secs(120));
        assert_eq!(c.restart_signal, Signal::SIGHUP);
        assert_eq!(c.pid_file, Some(PathBuf::from("/run/x.pid")));
        assert_eq!(c.on_state_mismatch, StateMismatch::Fresh);
        assert_eq!(c.worker_threads, Some(3));
        assert_eq!(c.spawner, SpawnerMode::Inline);
    }

    #[test]
    fn empty_control_disables_it() {
        let c = Config::default().control_socket("/a");
        let c = c
            .apply_overrides(|n| (n == ENV_CONTROL).then(OsString::new))
            .unwrap();
        assert_eq!(c.control_socket, None);
    }

    #[test]
    fn ready_grace_may_be_zero() {
        assert_eq!(parse_grace("g", "0").unwrap(), Duration::ZERO);
        assert_eq!(parse_grace("g", "0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_grace("g", "1s").unwrap(), Duration::from_secs(1));
        assert!(parse_grace("g", "soon").is_err());
    }

    #[test]
    fn bare_number_is_seconds() {
        assert_eq!(parse_duration("x", "7").unwrap(), Duration::from_secs(7));
    }

    #[test]
    fn bad_values_are_errors_naming_the_variable() {
        let e = with(&[("SHELLFLIP_READY_TIMEOUT", "soon")]).unwrap_err();
        assert_eq!(e.setting, "SHELLFLIP_READY_TIMEOUT");
        assert!(e.to_string().contains("\"soon\""), "{e}");
        assert!(with(&[("SHELLFLIP_DRAIN_TIMEOUT", "0s")]).is_err());
        assert!(with(&[("SHELLFLIP_RESTART_SIGNAL", "SIGNOPE")]).is_err());
        assert!(with(&[("SHELLFLIP_RESTART_SIGNAL", "KILL")]).is_err());
        assert!(with(&[("SHELLFLIP_RESTART_SIGNAL", "TERM")]).is_err());
        assert!(with(&[("SHELLFLIP_ON_STATE_MISMATCH", "maybe")]).is_err());
        assert!(with(&[("SHELLFLIP_WORKER_THREADS", "0")]).is_err());
        assert!(with(&[("SHELLFLIP_SPAWNER", "fork")]).is_err());
    }

    #[test]
    fn signal_numbers_and_names() {
        assert_eq!(parse_signal("s", "12").unwrap(), Signal::SIGUSR2);
        assert_eq!(parse_signal("s", "SIGUSR2").unwrap(), Signal::SIGUSR2);
        assert_eq!(parse_signal("s", "usr1").unwrap(), Signal::SIGUSR1);
    }
}
