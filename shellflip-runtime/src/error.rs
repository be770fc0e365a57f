//! The runtime's error types.

use std::path::PathBuf;
use std::time::Duration;

use shellflip_control::protocol::FailureKind;

use crate::config::ConfigError;
use crate::state::StateError;
use crate::unix_socket::UnixSocketError;

/// An error of the runtime, returned to the service or reported at start-up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting or `SHELLFLIP_*` variable is malformed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The Tokio runtime could not be built.
    #[error("could not start the Tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A listener could not be bound.
    #[error(
        "could not bind the listener `{name}` to {address}: {source}; is another process using it?"
    )]
    Bind {
        /// The listener's name.
        name: String,
        /// The address or path asked for.
        address: String,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// A listener's address could not be resolved.
    #[error("the address {address} of the listener `{name}` is not usable: {source}; give an address like 127.0.0.1:7000 or [::1]:7000")]
    Address {
        /// The listener's name.
        name: String,
        /// The address as given.
        address: String,
        /// What resolving it said.
        #[source]
        source: std::io::Error,
    },
    /// An inherited descriptor with the asked name is not of the asked kind.
    #[error("the inherited file descriptor `{name}` is {found}, not {expected}; two listeners of different kinds share a name")]
    WrongKind {
        /// The name.
        name: String,
        /// What the service asked for.
        expected: &'static str,
        /// What was inherited.
        found: String,
    },
    /// An inherited stream socket with the asked name is not listening: a
    /// connected socket (what systemd's `Accept=yes` passes) or one bound
    /// without `listen()`.
    #[error("the {origin} socket `{name}` is {found}, but it is not listening (a connected socket, or one never put in listening mode): {expected} needs a listening socket{hint}")]
    NotListening {
        /// The name.
        name: String,
        /// "inherited", or "systemd-passed".
        origin: &'static str,
        /// What the service asked for.
        expected: &'static str,
        /// What was inherited.
        found: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// The same name was asked for twice in one generation.
    #[error("a file descriptor named `{0}` was already registered in this generation; give each listener its own name")]
    DuplicateName(String),
    /// A user-provided fd could not be created or registered.
    #[error("file descriptor `{name}`: {source}")]
    Fd {
        /// The name.
        name: String,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// The control socket could not be set up.
    #[error("control socket {}: {reason}", path.display())]
    ControlSocket {
        /// Its path.
        path: PathBuf,
        /// What went wrong and what to do.
        reason: String,
    },
    /// The control socket file could not be created.
    #[error("control socket {}: {source}", path.display())]
    ControlSocketBind {
        /// Its path.
        path: PathBuf,
        /// What went wrong (and what to do).
        #[source]
        source: UnixSocketError,
    },
    /// The sockets systemd passed (socket activation) could not be adopted.
    #[error(transparent)]
    SocketActivation(#[from] SocketActivationError),
    /// The channel to the previous generation failed during start-up.
    #[error("handover from the previous generation failed: {source}")]
    Handover {
        /// What the channel said.
        #[source]
        source: std::io::Error,
    },
    /// Nothing arrived from the previous generation in time.
    #[error("nothing arrived from the previous generation within {}", shellflip_settings::format_duration(*.0))]
    HandoverTimeout(Duration),
    /// `SHELLFLIP_HANDOVER_FD` does not name an open descriptor.
    #[error("SHELLFLIP_HANDOVER_FD={value:?} does not name an open descriptor{}; this variable is set by shellflip for a new generation and should not be set by hand", .source.as_ref().map(|e| format!(" ({e})")).unwrap_or_default())]
    HandoverVariable {
        /// The variable's value.
        value: String,
        /// Why it could not be adopted.
        #[source]
        source: Option<std::io::Error>,
    },
    /// The handed-over state could not be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// `unhealthy()` was called when there is no previous generation to
    /// take the service back.
    #[error("unhealthy() was called outside a probation: {0}; there is no previous generation to roll back to, so stop the service or restart it instead")]
    NotOnProbation(&'static str),
    /// `ready()` was called after the service started shutting down.
    #[error("ready() was called after shutdown began; the generation is exiting")]
    ShuttingDown,
    /// Something else went wrong with a system call.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
}

/// Lets a service's `main` that returns `shellflip::Error` use `?` on I/O
/// results (an accept, a read).
impl From<std::io::Error> for Error {
    fn from(source: std::io::Error) -> Self {
        Error::io("I/O error in the service", source)
    }
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn fd(name: &str, source: std::io::Error) -> Self {
        Error::Fd {
            name: name.to_owned(),
            source,
        }
    }
}

/// Why a restart did not happen or did not succeed. The old generation keeps
/// serving in every case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestartError {
    /// Another restart is running.
    #[error("a restart is already in progress; wait for its outcome and try again")]
    InProgress,
    /// This generation has just handed over to its successor, which now
    /// answers requests.
    #[error("this generation has handed over to generation {generation} (pid {pid}); send the request again to reach it")]
    HandedOver {
        /// The successor's pid.
        pid: u32,
        /// The successor's generation.
        generation: u64,
    },
    /// This generation is not ready yet, or its predecessor has not finished
    /// draining.
    #[error("this generation is not ready to restart yet: {0}")]
    NotReady(String),
    /// The service is stopping.
    #[error("the service is shutting down; no restart")]
    ShuttingDown,
    /// The restart was abandoned because a stop was requested meanwhile.
    #[error("the restart was aborted because the service is stopping; the new generation (pid {pid}) was killed")]
    Aborted {
        /// The new generation's pid.
        pid: u32,
    },
    /// The state could not be encoded.
    #[error("{0}")]
    State(#[from] StateError),
    /// The new generation could not be started.
    #[error("could not start the new generation from {}: {source}", exe.display())]
    Spawn {
        /// The executable path.
        exe: PathBuf,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// The spawner process forked at start-up is gone (killed, or crashed),
    /// so this generation cannot start another.
    #[error("the spawner process (pid {pid}) that starts new generations is gone ({reason}); this generation keeps serving but cannot restart: restart the service through its supervisor (e.g. `systemctl restart`), or run it with SHELLFLIP_SPAWNER=inline to spawn from the service process itself")]
    SpawnerGone {
        /// The spawner's pid.
        pid: u32,
        /// How it ended.
        reason: String,
    },
    /// The listeners could not be duplicated for the handover.
    #[error("could not duplicate the listeners to hand over: {0}; is the process near its open-file limit?")]
    DuplicateListeners(#[source] std::io::Error),
    /// Encoding the state panicked.
    #[error("encoding the handover state panicked: {0}")]
    EncodePanicked(String),
    /// Listeners or state could not be sent to the new generation, or its
    /// report could not be read.
    #[error("could not hand over to the new generation (pid {pid}): {source}; it was killed")]
    Handover {
        /// The new generation's pid.
        pid: u32,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The new generation closed the channel without a report but did not
    /// exit.
    #[error("the new generation (pid {pid}) closed the handover channel without a report and did not exit; it was killed")]
    ClosedWithoutReport {
        /// The new generation's pid.
        pid: u32,
    },
    /// The new generation reported a failure.
    #[error("the new generation (pid {pid}) failed to start: {reason}")]
    ChildFailed {
        /// The new generation's pid.
        pid: u32,
        /// Its own message.
        reason: String,
    },
    /// The new generation exited before it was ready.
    #[error("the new generation (pid {pid}) {status} before it was ready")]
    ChildExited {
        /// The new generation's pid.
        pid: u32,
        /// "exited with status 3" or "was killed by signal SIGSEGV".
        status: String,
    },
    /// The new generation did not report ready in time.
    #[error("the new generation (pid {pid}) was not ready within {}; it was killed", shellflip_settings::format_duration(*timeout))]
    ReadyTimeout {
        /// The new generation's pid.
        pid: u32,
        /// The ready timeout.
        timeout: Duration,
    },
}

impl RestartError {
    /// The machine-readable kind, as answered on the control socket
    /// (`in_progress`, `not_ready`, `handed_over`, `shutting_down` or
    /// `failed`): `shellflip_control::protocol::FailureKind`, which the
    /// `shellflip` crate re-exports as `shellflip::control::FailureKind`.
    pub fn kind(&self) -> FailureKind {
        match self {
            RestartError::InProgress => FailureKind::InProgress,
            RestartError::HandedOver { .. } => FailureKind::HandedOver,
            RestartError::NotReady(_) => FailureKind::NotReady,
            RestartError::ShuttingDown | RestartError::Aborted { .. } => FailureKind::ShuttingDown,
            _ => FailureKind::Failed,
        }
    }
}

/// Why the socket-activation variables could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocketActivationError {
    /// `LISTEN_PID` is not a pid.
    #[error("LISTEN_PID={0:?} is not a process id; it is set by systemd socket activation and should not be set by hand")]
    BadPid(String),
    /// `LISTEN_FDS` is not a count.
    #[error("LISTEN_FDS={0:?} is not a number of file descriptors (at most 4096); it is set by systemd socket activation and should not be set by hand")]
    BadCount(String),
    /// A descriptor `LISTEN_FDS` announced is not open.
    #[error("systemd announced {count} socket(s) (LISTEN_FDS={count}) but file descriptor {fd} is not open: {source}")]
    NotOpen {
        /// The missing descriptor.
        fd: i32,
        /// `LISTEN_FDS`.
        count: usize,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
}
