//! Settings of a restartable service: the config struct and the
//! `SHELLFLIP_*` environment overrides.
//!
//! Every setting has a default, can be set in [`Config`] (which is what
//! `#[restartable(...)]` fills in) and can be overridden when the service is
//! started by an environment variable. What each setting means, accepts and
//! defaults to is in one table, in the docs of [`crate::settings`] (and the
//! README's Configuration section, kept equal to it by a test); the parsing
//! and the bounds are that crate's too, so the environment accepts and
//! refuses exactly what the attribute does.
//!
//! An empty `SHELLFLIP_CONTROL` or `SHELLFLIP_PID_FILE` turns the feature off.
//! A malformed or out-of-bounds value is an error at start-up
//! ([`ConfigError`]), never silently ignored; so is a value set in code
//! outside the bounds ([`Config::validate`]).

use std::path::PathBuf;
use std::time::Duration;

use shellflip_settings::{parse_flag, CountRule, DurationRule, Problem, RENAMED};

pub use shellflip_settings::{
    KeeperMode, RuntimeFlavor, Signal, SpawnerMode, StateMismatch, ENV_CONTROL, ENV_DRAIN_TIMEOUT,
    ENV_FD_STORE, ENV_KEEPER, ENV_MAX_DRAINING, ENV_ON_STATE_MISMATCH, ENV_PID_FILE, ENV_PROBATION,
    ENV_READY_TIMEOUT, ENV_RESTART_SIGNAL, ENV_SPAWNER, ENV_WORKER_THREADS,
};

/// A `SHELLFLIP_*` variable or a config value that could not be used: the
/// setting, the value, and the [`Problem`].
pub use shellflip_settings::SettingError as ConfigError;

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
    /// How long, after a new generation's READY, the old one holds its
    /// listeners (pausing its own accepting) and watches the new one: if
    /// the new one exits or reports itself unhealthy within it, the old one
    /// takes the service back (accepting, pid file, systemd's MAINPID) and
    /// the restart is recorded as rolled back. When it ends the new one takes
    /// over and the old one drains. Zero: the old one drains at READY (a
    /// build that crashes right after READY then takes the service down
    /// until its supervisor restarts it).
    pub probation: Duration,
    /// How many older generations may drain at once; a restart beyond that
    /// ends the oldest one's drain (its remaining work is cut).
    pub max_draining: usize,
    /// Whether the first generation keeps its listeners and the control
    /// socket in systemd's file descriptor store, so that they outlive a
    /// crash or `systemctl restart` (the unit needs `FileDescriptorStoreMax=`).
    /// They are stored as `shellflip.stored.<name>`; a later generation
    /// updates the store once it took over (a listener bound anew replaces
    /// the stored one, names no longer used are removed), and the next
    /// first generation adopts them by name. See `docs/systemd.md`.
    pub fd_store: bool,
    /// How long an old generation waits for its in-flight work after it
    /// stopped accepting, before it exits anyway.
    pub drain_timeout: Duration,
    /// The signal that triggers a restart (one of [`Signal::ALL`]).
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
            probation: Duration::from_secs(2),
            max_draining: 2,
            fd_store: false,
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

/// Builder-style setters, each replacing one field of [`Config`].
macro_rules! setters {
    ($($(#[$doc:meta])* $field:ident: $type:ty;)*) => {$(
        $(#[$doc])*
        pub fn $field(mut self, $field: $type) -> Self {
            self.$field = $field;
            self
        }
    )*};
}

impl Config {
    /// Sets the control socket path.
    pub fn control_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.control_socket = Some(path.into());
        self
    }

    setters! {
        /// Sets the ready timeout: from 1ms to 7 days (checked at start-up, by
        /// [`validate`](Self::validate)).
        ready_timeout: Duration;
        /// Sets the probation (see [`Config::probation`]): zero (off), or from
        /// 1ms to 7 days.
        probation: Duration;
        /// Sets how many older generations may drain at once: 1 to 16.
        max_draining: usize;
        /// Keeps the listeners in systemd's file descriptor store (see
        /// [`Config::fd_store`]).
        fd_store: bool;
        /// Sets the drain timeout: from 1ms to 7 days.
        drain_timeout: Duration;
        /// Sets the restart signal.
        restart_signal: Signal;
        /// Sets what to do with state from an incompatible build.
        on_state_mismatch: StateMismatch;
        /// Sets the Tokio scheduler.
        flavor: RuntimeFlavor;
        /// Sets what starts the next generation.
        spawner: SpawnerMode;
    }

    /// Sets the pid file path.
    pub fn pid_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.pid_file = Some(path.into());
        self
    }

    /// Sets the number of worker threads of the multi-threaded scheduler:
    /// from 1 to 1024.
    pub fn worker_threads(mut self, threads: usize) -> Self {
        self.worker_threads = Some(threads);
        self
    }

    /// Applies the `SHELLFLIP_*` overrides found in the process environment.
    pub fn apply_env(self) -> Result<Self, ConfigError> {
        self.apply_overrides(|name| std::env::var_os(name))
    }

    /// Applies overrides read through `lookup` (the environment, in
    /// [`apply_env`](Self::apply_env); a map in tests), then checks the
    /// result with [`validate`](Self::validate).
    pub fn apply_overrides(
        mut self,
        lookup: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<Self, ConfigError> {
        let text = |name: &str| -> Result<Option<String>, ConfigError> {
            match lookup(name) {
                None => Ok(None),
                Some(value) => value.into_string().map(Some).map_err(|value| {
                    ConfigError::new(name, value.to_string_lossy(), Problem::NotUtf8)
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
            self.ready_timeout = DurationRule::TIMEOUT.parse(ENV_READY_TIMEOUT, &value)?;
        }
        for (old, now) in RENAMED
            .iter()
            .filter(|(old, _)| old.starts_with("SHELLFLIP_"))
        {
            if let Some(value) = lookup(old) {
                return Err(ConfigError::new(
                    *old,
                    value.to_string_lossy(),
                    Problem::Renamed { now },
                ));
            }
        }
        if let Some(value) = text(ENV_PROBATION)? {
            self.probation = DurationRule::TIMEOUT_OR_OFF.parse(ENV_PROBATION, &value)?;
        }
        if let Some(value) = text(ENV_MAX_DRAINING)? {
            self.max_draining = CountRule::DRAINING.parse(ENV_MAX_DRAINING, &value)?;
        }
        if let Some(value) = text(ENV_FD_STORE)? {
            self.fd_store = parse_flag(ENV_FD_STORE, &value)?;
        }
        if let Some(value) = text(ENV_DRAIN_TIMEOUT)? {
            self.drain_timeout = DurationRule::TIMEOUT.parse(ENV_DRAIN_TIMEOUT, &value)?;
        }
        if let Some(value) = text(ENV_RESTART_SIGNAL)? {
            self.restart_signal = Signal::parse(ENV_RESTART_SIGNAL, &value)?;
        }
        if let Some(value) = text(ENV_ON_STATE_MISMATCH)? {
            self.on_state_mismatch = StateMismatch::parse(ENV_ON_STATE_MISMATCH, &value)?;
        }
        if let Some(value) = text(ENV_WORKER_THREADS)? {
            self.worker_threads =
                Some(CountRule::WORKER_THREADS.parse(ENV_WORKER_THREADS, &value)?);
        }
        if let Some(value) = text(ENV_SPAWNER)? {
            self.spawner = SpawnerMode::parse(ENV_SPAWNER, &value)?;
        }
        self.validate()?;
        Ok(self)
    }

    /// Checks the values set in code against the bounds the attribute and
    /// the environment enforce (durations from 1ms to 7 days, at most 1024
    /// worker threads, ...: see [`crate::settings`]), so that no value can
    /// make the runtime's timers or arithmetic on instants overflow.
    /// [`run`](crate::run) calls it (through [`apply_env`](Self::apply_env))
    /// and refuses to start on an error, which names the field:
    ///
    /// ```
    /// use std::time::Duration;
    /// use shellflip_runtime::Config;
    ///
    /// let error = Config::default()
    ///     .drain_timeout(Duration::from_secs(365 * 24 * 3600))
    ///     .validate()
    ///     .unwrap_err();
    /// assert_eq!(error.setting(), "Config::drain_timeout");
    /// assert!(error.to_string().contains("the maximum is 7d"));
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        DurationRule::TIMEOUT.check("Config::ready_timeout", self.ready_timeout)?;
        DurationRule::TIMEOUT_OR_OFF.check("Config::probation", self.probation)?;
        CountRule::DRAINING.check("Config::max_draining", self.max_draining)?;
        DurationRule::TIMEOUT.check("Config::drain_timeout", self.drain_timeout)?;
        if let Some(threads) = self.worker_threads {
            CountRule::WORKER_THREADS.check("Config::worker_threads", threads)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shellflip_settings::{Kind, SETTINGS};
    use std::collections::HashMap;
    use std::ffi::OsString;

    fn with(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        Config::default().apply_overrides(|name| map.get(name).cloned())
    }

    fn problem(name: &str, value: &str) -> Problem {
        let e = with(&[(name, value)]).unwrap_err();
        assert_eq!(e.setting(), name, "{e}");
        assert_eq!(e.value(), value, "{e}");
        e.problem().clone()
    }

    #[test]
    fn defaults_are_documented_values() {
        let c = Config::default();
        assert_eq!(c.control_socket, None);
        assert_eq!(c.ready_timeout, Duration::from_secs(30));
        assert_eq!(c.probation, Duration::from_secs(2));
        assert_eq!(c.max_draining, 2);
        assert!(!c.fd_store);
        assert_eq!(c.drain_timeout, Duration::from_secs(30));
        assert_eq!(c.restart_signal, Signal::SIGUSR1);
        assert_eq!(c.on_state_mismatch, StateMismatch::Fail);
        assert_eq!(c.flavor, RuntimeFlavor::MultiThread);
        assert_eq!(c.worker_threads, None);
        assert_eq!(c.spawner, SpawnerMode::Process);
        assert_eq!(c.validate(), Ok(()));
    }

    /// The defaults the settings table shows are the defaults of `Config`:
    /// setting each variable to its documented default changes nothing.
    #[test]
    fn the_table_shows_the_real_defaults() {
        let mut checked = 0;
        for setting in SETTINGS {
            let Some(env) = setting.env else { continue };
            let value = match (setting.kind, setting.default) {
                (Kind::FilePath, "none") => "",
                (Kind::Duration(_), "0 (off)") => "0",
                (Kind::Count(_), "one per core") => continue,
                (_, default) => default,
            };
            let c = with(&[(env, value)]).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(c, Config::default(), "{env}={value}");
            checked += 1;
        }
        // (SHELLFLIP_KEEPER is read by the keeper, not by `Config`: its
        // default changes nothing here either.)
        assert_eq!(checked, 11);
    }

    #[test]
    fn env_overrides_every_setting() {
        let c = with(&[
            ("SHELLFLIP_CONTROL", "/run/x.sock"),
            ("SHELLFLIP_READY_TIMEOUT", "500ms"),
            ("SHELLFLIP_PROBATION", "250ms"),
            ("SHELLFLIP_MAX_DRAINING", "3"),
            ("SHELLFLIP_FD_STORE", "yes"),
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
        assert_eq!(c.probation, Duration::from_millis(250));
        assert_eq!(c.max_draining, 3);
        assert!(c.fd_store);
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
    fn the_old_ready_grace_variable_names_its_new_name() {
        let error = with(&[("SHELLFLIP_READY_GRACE", "1s")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid value \"1s\" for SHELLFLIP_READY_GRACE: this setting is now called SHELLFLIP_PROBATION; rename it"
        );
    }

    #[test]
    fn probation_may_be_zero() {
        let grace = |value| with(&[(ENV_PROBATION, value)]).map(|c| c.probation);
        assert_eq!(grace("0"), Ok(Duration::ZERO));
        assert_eq!(grace("0s"), Ok(Duration::ZERO));
        assert_eq!(grace("1s"), Ok(Duration::from_secs(1)));
        assert!(grace("soon").is_err());
    }

    /// One rule for attribute, environment and CLI: a unit is required.
    #[test]
    fn a_bare_number_needs_a_unit() {
        let e = with(&[(ENV_READY_TIMEOUT, "7")]).unwrap_err();
        assert_eq!(
            e.problem(),
            &Problem::MissingUnit {
                number: "7".to_owned()
            }
        );
        assert!(e.to_string().contains("write \"7s\""), "{e}");
        assert_eq!(problem(ENV_DRAIN_TIMEOUT, "0"), Problem::Zero);
    }

    /// Values from issue 13 that used to pass and then panic with
    /// "overflow when adding duration to instant".
    #[test]
    fn huge_durations_are_refused_at_start_up() {
        for name in [ENV_READY_TIMEOUT, ENV_DRAIN_TIMEOUT, ENV_PROBATION] {
            assert!(matches!(
                problem(name, "300000000000y"),
                Problem::UnknownUnit { .. }
            ));
            for huge in ["300000000000h", "8d", "18446744073709551616s"] {
                assert_eq!(
                    problem(name, huge),
                    Problem::TooLong {
                        max: shellflip_settings::MAX_DURATION
                    },
                    "{name}={huge}"
                );
            }
        }
        let e = with(&[(ENV_READY_TIMEOUT, "300000000000y")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value \"300000000000y\" for SHELLFLIP_READY_TIMEOUT: unknown unit `y`; \
             a duration is at most 7d; the units are d, h, m, s, ms, us and ns, as in \"30s\""
        );
        let e = with(&[(ENV_DRAIN_TIMEOUT, "300000000000h")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value \"300000000000h\" for SHELLFLIP_DRAIN_TIMEOUT: too long: the maximum \
             is 7d, e.g. \"30s\" or \"2h\""
        );
    }

    #[test]
    fn values_set_in_code_are_bounded_too() {
        let huge = Duration::from_secs(u64::MAX);
        for (config, field) in [
            (
                Config::default().ready_timeout(huge),
                "Config::ready_timeout",
            ),
            (Config::default().probation(huge), "Config::probation"),
            (
                Config::default().drain_timeout(huge),
                "Config::drain_timeout",
            ),
            (
                Config::default().ready_timeout(Duration::ZERO),
                "Config::ready_timeout",
            ),
            (
                Config::default().worker_threads(0),
                "Config::worker_threads",
            ),
            (
                Config::default().worker_threads(100_000),
                "Config::worker_threads",
            ),
        ] {
            let e = config.apply_overrides(|_| None).unwrap_err();
            assert_eq!(e.setting(), field, "{e}");
        }
        // An override replaces a bad value from code before it is checked.
        let c = Config::default()
            .drain_timeout(huge)
            .apply_overrides(|n| (n == ENV_DRAIN_TIMEOUT).then(|| OsString::from("1m")))
            .unwrap();
        assert_eq!(c.drain_timeout, Duration::from_secs(60));
    }

    #[test]
    fn bad_values_are_errors_naming_the_variable() {
        let e = with(&[("SHELLFLIP_READY_TIMEOUT", "soon")]).unwrap_err();
        assert_eq!(e.setting(), "SHELLFLIP_READY_TIMEOUT");
        assert!(e.to_string().contains("\"soon\""), "{e}");
        assert_eq!(problem(ENV_DRAIN_TIMEOUT, "0s"), Problem::Zero);
        assert!(matches!(
            problem(ENV_RESTART_SIGNAL, "SIGNOPE"),
            Problem::UnknownSignal { .. }
        ));
        assert!(matches!(
            problem(ENV_ON_STATE_MISMATCH, "maybe"),
            Problem::UnknownChoice { .. }
        ));
        assert!(matches!(
            problem(ENV_WORKER_THREADS, "0"),
            Problem::OutOfRange { min: 1, max: 1024 }
        ));
        assert!(matches!(
            problem(ENV_WORKER_THREADS, "1025"),
            Problem::OutOfRange { .. }
        ));
        assert!(matches!(
            problem(ENV_SPAWNER, "fork"),
            Problem::UnknownChoice { .. }
        ));
    }

    #[test]
    fn not_utf8_is_an_error() {
        use std::os::unix::ffi::OsStringExt;
        let e = Config::default()
            .apply_overrides(|n| (n == ENV_SPAWNER).then(|| OsString::from_vec(vec![0xff])))
            .unwrap_err();
        assert_eq!(e.problem(), &Problem::NotUtf8);
        assert_eq!(e.setting(), ENV_SPAWNER);
    }

    /// The same signal list as the attribute: SIGCONT, SIGTERM and SIGKILL
    /// are refused with the reason, numbers with the name to write.
    #[test]
    fn restart_signals() {
        let signal = |value| with(&[(ENV_RESTART_SIGNAL, value)]).map(|c| c.restart_signal);
        assert_eq!(signal("SIGUSR2"), Ok(Signal::SIGUSR2));
        assert_eq!(signal("usr1"), Ok(Signal::SIGUSR1));
        assert_eq!(signal(" winch "), Ok(Signal::SIGWINCH));
        for (name, reason) in [
            ("SIGCONT", "every time a stopped process resumes"),
            ("TERM", "stops the service gracefully"),
            ("KILL", "cannot be caught"),
            ("SIGPROF", "profilers"),
        ] {
            let e = with(&[(ENV_RESTART_SIGNAL, name)]).unwrap_err();
            assert!(e.to_string().contains(reason), "{e}");
        }
        assert_eq!(
            problem(ENV_RESTART_SIGNAL, &Signal::SIGUSR2.number().to_string()),
            Problem::SignalNumber {
                signal: Some(Signal::SIGUSR2)
            }
        );
    }

    /// The settings crate has no dependencies, so its signal numbers are a
    /// table of its own: they must be the C library's.
    #[test]
    fn signal_numbers_are_the_c_librarys() {
        for signal in Signal::ALL {
            let expected = match signal {
                Signal::SIGHUP => libc::SIGHUP,
                Signal::SIGUSR1 => libc::SIGUSR1,
                Signal::SIGUSR2 => libc::SIGUSR2,
                Signal::SIGWINCH => libc::SIGWINCH,
                Signal::SIGQUIT => libc::SIGQUIT,
                other => panic!("{other} is missing here"),
            };
            assert_eq!(signal.number(), expected, "{signal}");
        }
    }
}
