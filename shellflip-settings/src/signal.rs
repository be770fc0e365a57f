//! The restart signals: the one list of signals that may trigger a restart,
//! with their names and numbers, and the signals refused, each with why.

use std::fmt;
use std::str::FromStr;

use crate::error::{Problem, SettingError};

/// A signal that may trigger a restart (`Config::restart_signal`,
/// `restart_signal = "..."`, `SHELLFLIP_RESTART_SIGNAL`).
///
/// shellflip's own type, so that a service does not depend on the version
/// of `nix` (or `libc`) shellflip uses. The runtime installs its handler by
/// [`number`](Signal::number).
///
/// | signal | note |
/// |---|---|
/// | `SIGUSR1` | the default; no other meaning to the system |
/// | `SIGUSR2` | no other meaning to the system |
/// | `SIGHUP` | the traditional "reload" signal of daemons; also sent when a controlling terminal hangs up (a service under systemd or in a container has none) |
/// | `SIGWINCH` | also sent to the foreground processes of a terminal whose window is resized: fine for a daemon, surprising in an interactive terminal |
/// | `SIGQUIT` | also sent by Ctrl-\\ in a terminal |
///
/// In text (attribute, environment) a signal is written by name, in any
/// case, with or without the `SIG` prefix: `"SIGUSR2"`, `"usr2"`. Numbers
/// are refused with the name to write instead: they differ between systems
/// (`SIGUSR1` is 10 on Linux, 30 on macOS), and the attribute is read on
/// the machine that compiles, which need not be the one that runs.
///
/// Refused, with the reason given in the error (see [`REFUSED_SIGNALS`]):
/// the signals that cannot be caught or stop the service, `SIGCONT` (sent
/// on every resume after a stop, so every `fg`, `kill -CONT` or debugger
/// detach would restart the service), the timer signals `SIGALRM`,
/// `SIGVTALRM`, `SIGPROF` (raised by `alarm`, `setitimer` and CPU profilers
/// such as pprof, which would then restart the service many times a
/// second), and every signal the system sends with a meaning of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signal {
    /// Hang-up: the traditional "reload" signal.
    SIGHUP,
    /// User signal 1: the default restart signal.
    SIGUSR1,
    /// User signal 2.
    SIGUSR2,
    /// Window size change of a terminal.
    SIGWINCH,
    /// Quit from a terminal (Ctrl-\\).
    SIGQUIT,
}

/// A signal that exists but cannot trigger a restart, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusedSignal {
    /// The name, with the `SIG` prefix.
    pub name: &'static str,
    /// Why, as the end of a sentence that starts with "it".
    pub reason: &'static str,
}

const fn refused(name: &'static str, reason: &'static str) -> RefusedSignal {
    RefusedSignal { name, reason }
}

/// Every signal refused as a restart signal, with the reason the error
/// message gives.
pub const REFUSED_SIGNALS: &[RefusedSignal] = &[
    refused("SIGKILL", "cannot be caught"),
    refused("SIGSTOP", "cannot be caught"),
    refused("SIGTERM", "stops the service gracefully"),
    refused("SIGINT", "stops the service gracefully"),
    refused(
        "SIGCONT",
        "is sent every time a stopped process resumes (`fg`, `kill -CONT`, a debugger detaching), \
         so every resume would restart the service",
    ),
    refused(
        "SIGALRM",
        "is raised by timers (`alarm`, `setitimer`), which would then restart the service",
    ),
    refused(
        "SIGVTALRM",
        "is raised by timers (`setitimer`), which would then restart the service",
    ),
    refused(
        "SIGPROF",
        "is raised by CPU profilers (pprof, gperftools) many times a second, \
         which would then restart the service",
    ),
    refused(
        "SIGCHLD",
        "is sent whenever a child process ends, and the runtime reaps the generations it starts",
    ),
    refused("SIGPIPE", "is raised by writing to a closed socket or pipe"),
    refused("SIGSEGV", "reports a fault of the process's own code"),
    refused("SIGBUS", "reports a fault of the process's own code"),
    refused("SIGILL", "reports a fault of the process's own code"),
    refused("SIGFPE", "reports a fault of the process's own code"),
    refused(
        "SIGABRT",
        "is raised by `abort` (a panic with panic = \"abort\")",
    ),
    refused(
        "SIGIOT",
        "is raised by `abort` (a panic with panic = \"abort\")",
    ),
    refused("SIGTRAP", "is used by debuggers"),
    refused("SIGSYS", "reports a forbidden system call (seccomp)"),
    refused("SIGTSTP", "belongs to job control: it stops the process"),
    refused("SIGTTIN", "belongs to job control: it stops the process"),
    refused("SIGTTOU", "belongs to job control: it stops the process"),
    refused("SIGURG", "reports urgent data on a socket"),
    refused("SIGIO", "reports asynchronous I/O"),
    refused("SIGPOLL", "reports asynchronous I/O"),
    refused("SIGXCPU", "reports an exceeded CPU time limit"),
    refused("SIGXFSZ", "reports an exceeded file size limit"),
    refused("SIGPWR", "reports a power failure"),
    refused("SIGSTKFLT", "is not portable (Linux only, unused)"),
    refused("SIGINFO", "is not portable (BSD only)"),
    refused("SIGEMT", "is not portable"),
];

impl Signal {
    /// Every permitted restart signal, the default first.
    pub const ALL: &'static [Signal] = &[
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGHUP,
        Signal::SIGWINCH,
        Signal::SIGQUIT,
    ];

    /// The name, with the `SIG` prefix, as the variant is written:
    /// `"SIGUSR1"`.
    pub const fn name(self) -> &'static str {
        match self {
            Signal::SIGHUP => "SIGHUP",
            Signal::SIGUSR1 => "SIGUSR1",
            Signal::SIGUSR2 => "SIGUSR2",
            Signal::SIGWINCH => "SIGWINCH",
            Signal::SIGQUIT => "SIGQUIT",
        }
    }

    /// The signal's number on the system this crate was compiled for
    /// (what `kill -<number>` and the C library's `SIGUSR1` mean there).
    pub const fn number(self) -> i32 {
        let (hup, quit, usr1, usr2, winch) = NUMBERS;
        match self {
            Signal::SIGHUP => hup,
            Signal::SIGQUIT => quit,
            Signal::SIGUSR1 => usr1,
            Signal::SIGUSR2 => usr2,
            Signal::SIGWINCH => winch,
        }
    }

    /// The permitted restart signal with this number on this system.
    pub fn from_number(number: i32) -> Option<Signal> {
        Signal::ALL.iter().copied().find(|s| s.number() == number)
    }

    /// Parses a restart signal's name for `setting`: `"SIGUSR2"`, `"usr2"`
    /// (any case, `SIG` optional, white space around ignored).
    ///
    /// ```
    /// use shellflip_settings::Signal;
    ///
    /// assert_eq!(Signal::parse("restart_signal", " hup "), Ok(Signal::SIGHUP));
    /// let refused = Signal::parse("restart_signal", "SIGTERM").unwrap_err();
    /// assert!(refused.to_string().contains("stops the service gracefully"));
    /// ```
    pub fn parse(setting: &str, text: &str) -> Result<Signal, SettingError> {
        parse_name(text).map_err(|problem| SettingError::new(setting, text, problem))
    }
}

/// The numbers of SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH on the
/// target system. (Tested against the C library's constants by the runtime,
/// which depends on `libc`.)
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    any(
        target_arch = "mips",
        target_arch = "mips32r6",
        target_arch = "mips64",
        target_arch = "mips64r6"
    )
))]
const NUMBERS: (i32, i32, i32, i32, i32) = (1, 3, 16, 17, 20);

/// See above: Linux on SPARC uses the BSD numbers.
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    any(target_arch = "sparc", target_arch = "sparc64")
))]
const NUMBERS: (i32, i32, i32, i32, i32) = (1, 3, 30, 31, 28);

/// See above: Linux on every other architecture.
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    not(any(
        target_arch = "mips",
        target_arch = "mips32r6",
        target_arch = "mips64",
        target_arch = "mips64r6",
        target_arch = "sparc",
        target_arch = "sparc64"
    ))
))]
const NUMBERS: (i32, i32, i32, i32, i32) = (1, 3, 10, 12, 28);

/// See above: System V numbering.
#[cfg(any(target_os = "solaris", target_os = "illumos"))]
const NUMBERS: (i32, i32, i32, i32, i32) = (1, 3, 16, 17, 20);

/// See above: the BSDs, macOS and the rest. (On a system without Unix
/// signals, where only the macros use this crate, to read names, the
/// numbers are never used.)
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "solaris",
    target_os = "illumos"
)))]
const NUMBERS: (i32, i32, i32, i32, i32) = (1, 3, 30, 31, 28);

fn parse_name(text: &str) -> Result<Signal, Problem> {
    let upper = text.trim().to_ascii_uppercase();
    if upper.is_empty() {
        return Err(Problem::Empty { example: "SIGUSR2" });
    }
    let digits = upper.strip_prefix('-').unwrap_or(&upper);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let signal = digits.parse::<i32>().ok().and_then(Signal::from_number);
        return Err(Problem::SignalNumber { signal });
    }
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    if let Some(signal) = Signal::ALL.iter().find(|s| s.name() == name) {
        return Ok(*signal);
    }
    if let Some(refused) = REFUSED_SIGNALS.iter().find(|r| r.name == name) {
        return Err(Problem::RefusedSignal {
            name: name.clone(),
            reason: refused.reason,
        });
    }
    if name.starts_with("SIGRT") {
        return Err(Problem::RefusedSignal {
            name,
            reason: "is a real-time signal, whose number depends on the C library \
                     (glibc keeps the first ones for itself)",
        });
    }
    let names: Vec<&str> = Signal::ALL.iter().map(|s| s.name()).collect();
    let suggestion = crate::closest(&name, &names)
        .and_then(|close| Signal::ALL.iter().copied().find(|s| s.name() == close));
    Err(Problem::UnknownSignal { name, suggestion })
}

/// The permitted signals as `"SIGUSR1", "SIGUSR2", … or "SIGQUIT"`.
pub(crate) fn one_of_signals() -> String {
    let names: Vec<String> = Signal::ALL
        .iter()
        .map(|s| format!("\"{}\"", s.name()))
        .collect();
    match names.split_last() {
        Some((last, init)) if !init.is_empty() => format!("{} or {last}", init.join(", ")),
        _ => names.concat(),
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Signal {
    type Err = SettingError;

    /// [`Signal::parse`] for the setting `restart_signal`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Signal::parse("restart_signal", text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(text: &str) -> Problem {
        Signal::parse("s", text).unwrap_err().problem().clone()
    }

    fn message(text: &str) -> String {
        Signal::parse("s", text).unwrap_err().to_string()
    }

    #[test]
    fn every_permitted_signal_by_every_spelling() {
        for signal in Signal::ALL {
            let name = signal.name();
            let short = &name[3..];
            for text in [
                name.to_owned(),
                short.to_owned(),
                name.to_ascii_lowercase(),
                short.to_ascii_lowercase(),
                format!("  {short}\t"),
            ] {
                assert_eq!(Signal::parse("s", &text), Ok(*signal), "{text:?}");
            }
            assert_eq!(signal.to_string(), name);
            assert_eq!(name.parse::<Signal>(), Ok(*signal));
            assert_eq!(
                format!("{signal:?}"),
                name,
                "the variant is named as the signal"
            );
        }
        assert_eq!(Signal::ALL[0], Signal::SIGUSR1, "the default comes first");
    }

    #[test]
    fn numbers_are_distinct_and_map_back() {
        for signal in Signal::ALL {
            assert_eq!(Signal::from_number(signal.number()), Some(*signal));
            assert!(signal.number() > 0);
        }
        assert_eq!(Signal::from_number(9), None);
        assert_eq!(Signal::from_number(0), None);
        assert_eq!(Signal::from_number(-1), None);
    }

    #[cfg(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "x86")
    ))]
    #[test]
    fn linux_numbers() {
        assert_eq!(Signal::SIGHUP.number(), 1);
        assert_eq!(Signal::SIGQUIT.number(), 3);
        assert_eq!(Signal::SIGUSR1.number(), 10);
        assert_eq!(Signal::SIGUSR2.number(), 12);
        assert_eq!(Signal::SIGWINCH.number(), 28);
    }

    #[test]
    fn numbers_are_refused_with_the_name_to_write() {
        for signal in Signal::ALL {
            let number = signal.number().to_string();
            assert_eq!(
                problem(&number),
                Problem::SignalNumber {
                    signal: Some(*signal)
                }
            );
            assert!(
                message(&number).contains(&format!("\"{}\"", signal.name())),
                "{}",
                message(&number)
            );
        }
        assert_eq!(problem("9"), Problem::SignalNumber { signal: None });
        assert_eq!(
            problem("-10"),
            Problem::SignalNumber {
                signal: Signal::from_number(10)
            }
        );
        assert_eq!(
            problem("99999999999"),
            Problem::SignalNumber { signal: None }
        );
        assert!(
            message("9").contains("one of \"SIGUSR1\""),
            "{}",
            message("9")
        );
    }

    #[test]
    fn refused_signals_say_why() {
        let reason = |text: &str| match problem(text) {
            Problem::RefusedSignal { reason, .. } => reason,
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(reason("SIGKILL"), "cannot be caught");
        assert_eq!(reason("stop"), "cannot be caught");
        assert_eq!(reason("SIGTERM"), "stops the service gracefully");
        assert_eq!(reason("int"), "stops the service gracefully");
        assert!(reason("SIGCONT").contains("every time a stopped process resumes"));
        assert!(reason("cont").contains("every resume would restart"));
        assert!(reason("SIGPROF").contains("profilers"));
        assert!(reason("ALRM").contains("timers"));
        assert!(reason("SIGCHLD").contains("child"));
        assert!(reason("SIGSEGV").contains("fault"));
        assert!(reason("SIGRTMIN").contains("C library"));
        assert!(reason("RTMIN+3").contains("C library"));
        for refused in REFUSED_SIGNALS {
            assert!(matches!(
                problem(refused.name),
                Problem::RefusedSignal { .. }
            ));
            assert!(
                !Signal::ALL.iter().any(|s| s.name() == refused.name),
                "{} is both permitted and refused",
                refused.name
            );
        }
        let kill = message("KILL");
        assert_eq!(
            kill,
            "invalid value \"KILL\" for s: SIGKILL cannot trigger a restart: it cannot be caught; \
             use one of \"SIGUSR1\", \"SIGUSR2\", \"SIGHUP\", \"SIGWINCH\" or \"SIGQUIT\""
        );
    }

    #[test]
    fn unknown_and_empty() {
        assert_eq!(
            problem("SIGUSR3"),
            Problem::UnknownSignal {
                name: "SIGUSR3".into(),
                suggestion: Some(Signal::SIGUSR1)
            }
        );
        assert_eq!(
            problem("nope"),
            Problem::UnknownSignal {
                name: "SIGNOPE".into(),
                suggestion: None
            }
        );
        assert!(message("SIGUSR3").contains("did you mean \"SIGUSR1\"?"));
        assert_eq!(problem(" "), Problem::Empty { example: "SIGUSR2" });
        assert!(matches!(problem("SIG"), Problem::UnknownSignal { .. }));
    }
}
