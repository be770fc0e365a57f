//! A blocking client of a service's control socket (std only, no Tokio),
//! behind the `client` feature: what the `shellflip` command-line tool
//! uses, and what a deploy tool written in Rust can use instead of running
//! it. The `shellflip` crate re-exports it as `shellflip::client` (its
//! feature `client`).
//!
//! ```no_run
//! use shellflip_control::client::ControlClient;
//! use shellflip_control::protocol::Response;
//!
//! # fn main() -> Result<(), shellflip_control::client::ClientError> {
//! let status = ControlClient::status("/run/my-service.sock")?;
//! println!("pid {} generation {}", status.pid, status.generation);
//!
//! match ControlClient::restart("/run/my-service.sock")? {
//!     Response::Restarted(done) => println!("new pid {}", done.pid),
//!     Response::RestartFailed { kind, reason } if kind.is_temporary() => {
//!         eprintln!("try again later: {reason}")
//!     }
//!     Response::RestartFailed { reason, .. } => eprintln!("restart failed: {reason}"),
//!     other => eprintln!("unexpected answer: {other:?}"),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Pids across PID namespaces
//!
//! The pids in the service's answers are as the *service* sees them. When
//! the service runs in another PID namespace (a container), those numbers
//! name other processes, or none, here. The service attaches its
//! credentials to every answer and this client asks the kernel for them
//! (`SO_PASSCRED`): [`ControlClient::answered_by`] is the answering
//! process's pid as *this* process sees it.
//!
//! # Waiting for a stop
//!
//! [`ControlClient::stop_and_wait`] does not look the service's pid up in
//! `/proc` (in another PID namespace that number is another process): the
//! service keeps the connection of a stop request open until its process
//! exits, and the client waits for that end-of-file. The generation that
//! answers exits last: after every other generation of the service (one
//! on probation, those still draining) and their spawners, so the
//! end-of-file means that no process of the service is left.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::frame::{write_frame_blocking, FrameDecoder, FrameError};
use crate::protocol::{decode_response, DecodeError, Request, Response, Status, MAX_FRAME_BYTES};

/// The default bound of [`ControlClient::status`] (and of the CLI's
/// `status`): a status is answered at once by a service that runs.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// The default bound of [`ControlClient::restart`] (and of the CLI's
/// `restart`): long enough for a new generation that uses most of a ready
/// timeout of a few minutes (the default ready timeout is 30 s).
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// The default bound of the CLI's `stop`, from the request until the
/// service's process has exited: room for a long drain.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(2 * 60);

/// How long [`ControlClient::stop_and_wait`] waits for the stop request to
/// be *answered* (within its whole timeout): a running service answers at
/// once; the drain that follows may take the rest.
pub const STOP_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a client was waiting for when its time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Waiting {
    /// For the service to take the request.
    Send,
    /// For the answer to a request it sent.
    Answer,
    /// For the process that accepted a stop to exit.
    Exit {
        /// Its pid, as this process sees it when known.
        pid: u32,
    },
}

/// Why a [`ControlClient`] call failed: on which control socket, and what
/// went wrong.
///
/// Its message says both, and what to do (`no service is listening on
/// /run/app.sock (no such file): is it running, ...`); match on
/// [`ClientError::kind`] to act on it:
///
/// ```no_run
/// use shellflip_control::client::{ClientErrorKind, ControlClient};
///
/// match ControlClient::status("/run/my-service.sock") {
///     Ok(status) => println!("generation {}", status.generation),
///     Err(error) if matches!(error.kind, ClientErrorKind::NoService { .. }) => {
///         println!("not running")
///     }
///     Err(error) => eprintln!("{error}"),
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{}", describe(.path, .kind))]
#[non_exhaustive]
pub struct ClientError {
    /// The control socket path.
    pub path: PathBuf,
    /// What went wrong.
    #[source]
    pub kind: ClientErrorKind,
}

/// What went wrong in a [`ControlClient`] call (the [`ClientError`] around
/// it names the control socket). Its message is a short one, without the
/// path or advice, for a program that reports the kind alone.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientErrorKind {
    /// Nothing is listening at the path (no file, not a socket, or a stale
    /// socket of a service that is gone).
    #[error("no service is listening")]
    NoService {
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The socket exists but this user may not connect to it.
    #[error("permission denied")]
    PermissionDenied {
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// A system call on the connection failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The service closed the connection before its answer was complete.
    #[error("the service closed the connection while {doing}")]
    Closed {
        /// "sending the request" or "reading the answer".
        doing: &'static str,
        /// How it ended, when it ended in the middle of a frame.
        #[source]
        source: Option<FrameError>,
    },
    /// The service's answer is not a frame this client accepts (too large).
    #[error("the service's answer is unusable")]
    Frame {
        /// What was wrong.
        #[source]
        source: FrameError,
    },
    /// The service's answer is not a valid [`Response`].
    #[error("the service's answer is not understood")]
    NotUnderstood {
        /// Why it does not decode.
        #[source]
        source: DecodeError,
    },
    /// The service answered, but not what the request calls for.
    #[error("unexpected answer from the service: {answer:?}")]
    Unexpected {
        /// The answer.
        answer: Box<Response>,
    },
    /// The service answered with [`Response::Error`].
    #[error("the service refused the request: {message}")]
    Refused {
        /// The service's message.
        message: String,
    },
    /// Nothing happened within the timeout.
    #[error("{}", describe_timeout(*waiting, *after))]
    Timeout {
        /// What was awaited.
        waiting: Waiting,
        /// The timeout.
        after: Duration,
    },
}

/// The whole message of a [`ClientError`]: what happened on which socket,
/// its cause, and what to do.
fn describe(path: &Path, kind: &ClientErrorKind) -> String {
    let path = path.display();
    match kind {
        ClientErrorKind::NoService { source } => format!(
            "no service is listening on {path} ({}): is it running, and is this the control \
             socket path it was started with?",
            describe_connect_error(source)
        ),
        ClientErrorKind::PermissionDenied { .. } => format!(
            "permission denied on the control socket {path}: it is accessible only to the user \
             the service runs as (mode 0600); run this command as that user or as root"
        ),
        ClientErrorKind::Io { context, source } => {
            format!("control socket {path}: {context}: {source}")
        }
        ClientErrorKind::Closed { doing, .. } => format!(
            "control socket {path}: the service closed the connection while {doing} (did it \
             exit or restart? check its logs)"
        ),
        ClientErrorKind::Frame { source } => {
            format!("control socket {path}: the service's answer is unusable: {source}")
        }
        ClientErrorKind::NotUnderstood { source } => format!(
            "control socket {path}: the service's answer is not understood ({source}); is this \
             the control socket of a shellflip service of a compatible version?"
        ),
        ClientErrorKind::Unexpected { .. } | ClientErrorKind::Refused { .. } => {
            format!("control socket {path}: {kind}")
        }
        // Said right after the command that named the socket: "connected,
        // but ...".
        ClientErrorKind::Timeout { .. } => kind.to_string(),
    }
}

fn describe_timeout(waiting: Waiting, after: Duration) -> String {
    let after = shellflip_settings::format_duration(after);
    match waiting {
        Waiting::Send => format!(
            "connected, but the service did not take the request within {after}: the service may \
             be stopped (SIGSTOP) or its first generation not ready yet"
        ),
        Waiting::Answer => format!(
            "connected, but no answer within {after}: the service may be stopped (SIGSTOP) or its \
             first generation not ready yet"
        ),
        Waiting::Exit { pid } => format!(
            "the service (pid {pid}) accepted the stop but had not exited within {after}; its \
             drain may still be running"
        ),
    }
}

fn describe_connect_error(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::ENOENT) => "no such file".to_string(),
        Some(libc::ECONNREFUSED) => "connection refused".to_string(),
        Some(libc::ENOTSOCK) => "not a socket".to_string(),
        Some(libc::ENOTDIR) => "a parent is not a directory".to_string(),
        _ => error.to_string(),
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// True when `pid` is gone or a zombie (it has exited; its parent has not
/// reaped it yet), as `/proc` says.
fn has_exited(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and
        // may hold anything.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| matches!(state, 'Z' | 'X')),
        Err(_) => true,
    }
}

fn is_closed(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

/// A blocking client of the control socket (std only; usable from any
/// thread, without a Tokio runtime).
///
/// By default a request waits for its answer without a time limit; bound it
/// with [`ControlClient::set_timeout`]. The one-call helpers
/// ([`ControlClient::status`], [`ControlClient::restart`],
/// [`ControlClient::stop_and_wait`]) are always bounded.
#[derive(Debug)]
pub struct ControlClient {
    stream: UnixStream,
    path: PathBuf,
    timeout: Option<Duration>,
    answered_by: Option<u32>,
}

impl ControlClient {
    /// Connects to the control socket at `path`.
    ///
    /// Fails with [`ClientErrorKind::NoService`] if no service listens
    /// there (`ENOENT`, `ECONNREFUSED`, `ENOTSOCK`, `ENOTDIR`) and with
    /// [`ClientErrorKind::PermissionDenied`] if this user may not connect.
    pub fn connect(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let path = path.as_ref().to_path_buf();
        let stream = match UnixStream::connect(&path) {
            Ok(stream) => stream,
            Err(source) => {
                let kind = connect_error(&path, source);
                return Err(ClientError { path, kind });
            }
        };
        let client = ControlClient {
            stream,
            path,
            timeout: None,
            answered_by: None,
        };
        // Before the first request, so that every answer comes with the
        // answering process's credentials.
        credentials::enable(&client.stream).map_err(|source| {
            client.error(ClientErrorKind::Io {
                context: "could not ask for the service's credentials (SO_PASSCRED)",
                source,
            })
        })?;
        Ok(client)
    }

    /// The control socket path this client is connected to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bounds each [`ControlClient::request`] as a whole, from sending the
    /// request to the end of the answer (`None`: no bound, the default).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    /// The pid of the process that sent the last answer, as *this* process
    /// sees it (the kernel translates it from the service's PID namespace).
    /// `None` before the first answer, when the system does not pass
    /// credentials, or when that process is not visible from here (the
    /// service runs in a PID namespace that is not this one's descendant).
    pub fn answered_by(&self) -> Option<u32> {
        self.answered_by
    }

    /// Sends `request` and returns the service's answer. A
    /// [`Response::Error`] is returned as an answer, not as an error.
    pub fn request(&mut self, request: &Request) -> Result<Response, ClientError> {
        let deadline = self
            .timeout
            .map(|timeout| (Instant::now() + timeout, timeout));
        self.request_until(request, deadline)
    }

    /// Connects to `path`, asks for a restart and waits for its outcome,
    /// at most [`RESTART_TIMEOUT`]: [`Response::Restarted`] or
    /// [`Response::RestartFailed`] (or [`Response::Error`] if the service
    /// refused the request).
    pub fn restart(path: impl AsRef<Path>) -> Result<Response, ClientError> {
        let mut client = ControlClient::connect(path)?;
        client.set_timeout(Some(RESTART_TIMEOUT));
        client.request(&Request::restart())
    }

    /// Connects to `path` and asks for the service's status, at most
    /// [`STATUS_TIMEOUT`]. An answer other than [`Response::Status`] is an
    /// error.
    pub fn status(path: impl AsRef<Path>) -> Result<Status, ClientError> {
        let mut client = ControlClient::connect(path)?;
        client.set_timeout(Some(STATUS_TIMEOUT));
        client.status_request()
    }

    /// Asks this connection's service for its status (bounded by
    /// [`ControlClient::set_timeout`]). An answer other than
    /// [`Response::Status`] is an error.
    pub fn status_request(&mut self) -> Result<Status, ClientError> {
        match self.request(&Request::Status)? {
            Response::Status(status) => Ok(status),
            other => Err(self.error(unexpected_answer(other))),
        }
    }

    /// Connects to `path`, asks the service to stop, and waits until its
    /// processes have exited (the answering one exits last); returns that
    /// process's pid, as this process
    /// sees it when the kernel says (see [`ControlClient::answered_by`]),
    /// otherwise as the service reported it.
    ///
    /// The service holds the connection of a stop request open until its
    /// process ends; this waits for that end-of-file, which means the same
    /// in every PID namespace. The whole call is bounded by `timeout`, the
    /// wait for the answer to the request by [`STOP_ANSWER_TIMEOUT`] too
    /// ([`ClientErrorKind::Timeout`]).
    pub fn stop_and_wait(path: impl AsRef<Path>, timeout: Duration) -> Result<u32, ClientError> {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut client = ControlClient::connect(path)?;
        let answer_within = timeout.min(STOP_ANSWER_TIMEOUT);
        let pid = match client
            .request_until(&Request::Stop, Some((start + answer_within, answer_within)))?
        {
            Response::Stopping { pid } => pid,
            other => return Err(client.error(unexpected_answer(other))),
        };
        let pid = client.answered_by.unwrap_or(pid);
        let mut buf = [0u8; 256];
        loop {
            client.set_read_deadline(deadline, timeout, Waiting::Exit { pid })?;
            match client.stream.read(&mut buf) {
                Ok(0) => return client.exited(deadline, timeout).map(|()| pid),
                // Nothing more is sent after `Stopping`; ignore it if it is.
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if is_closed(&error) => {
                    return client.exited(deadline, timeout).map(|()| pid)
                }
                Err(error) if is_timeout(&error) => {
                    return Err(client.error(ClientErrorKind::Timeout {
                        waiting: Waiting::Exit { pid },
                        after: timeout,
                    }))
                }
                Err(source) => {
                    return Err(client.error(ClientErrorKind::Io {
                        context: "waiting for the service to exit",
                        source,
                    }))
                }
            }
        }
    }

    fn request_until(
        &mut self,
        request: &Request,
        deadline: Option<(Instant, Duration)>,
    ) -> Result<Response, ClientError> {
        let payload = serde_json::to_vec(request).map_err(|source| {
            self.error(ClientErrorKind::Io {
                context: "could not encode the request",
                source: source.into(),
            })
        })?;
        let write_timeout = match deadline {
            Some((at, timeout)) => Some(self.remaining(at, timeout, Waiting::Send)?),
            None => None,
        };
        self.stream
            .set_write_timeout(write_timeout)
            .map_err(|source| {
                self.error(ClientErrorKind::Io {
                    context: SET_TIMEOUT,
                    source,
                })
            })?;
        if let Err(error) = write_frame_blocking(&mut self.stream, &payload, MAX_FRAME_BYTES) {
            // A service that refuses a connection (too many connections,
            // permission denied) answers and closes at once, which can make
            // the write fail: its answer says why, so prefer it.
            if matches!(&error, FrameError::Io(e) if is_closed(e)) {
                if let Ok(response) = self.read_answer(deadline) {
                    return Ok(response);
                }
            }
            return Err(self.error(match error {
                FrameError::Io(e) if is_timeout(&e) => ClientErrorKind::Timeout {
                    waiting: Waiting::Send,
                    after: deadline.map_or(Duration::ZERO, |(_, t)| t),
                },
                FrameError::Io(e) if is_closed(&e) => ClientErrorKind::Closed {
                    doing: "sending the request",
                    source: None,
                },
                FrameError::Io(source) => ClientErrorKind::Io {
                    context: "could not send the request",
                    source,
                },
                source => ClientErrorKind::Frame { source },
            }));
        }
        self.read_answer(deadline)
    }

    /// Reads one answer frame, noting whose credentials came with it.
    fn read_answer(
        &mut self,
        deadline: Option<(Instant, Duration)>,
    ) -> Result<Response, ClientError> {
        const DOING: &str = "reading the answer";
        let mut decoder = FrameDecoder::new(MAX_FRAME_BYTES);
        let payload = loop {
            match deadline {
                Some((at, timeout)) => self.set_read_deadline(at, timeout, Waiting::Answer)?,
                None => self.stream.set_read_timeout(None).map_err(|source| {
                    self.error(ClientErrorKind::Io {
                        context: SET_TIMEOUT,
                        source,
                    })
                })?,
            }
            let (n, pid) = match credentials::recv(&self.stream, decoder.buf()) {
                Ok(received) => received,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    return Err(self.error(match error {
                        e if is_timeout(&e) => ClientErrorKind::Timeout {
                            waiting: Waiting::Answer,
                            after: deadline.map_or(Duration::ZERO, |(_, t)| t),
                        },
                        e if is_closed(&e) => ClientErrorKind::Closed {
                            doing: DOING,
                            source: None,
                        },
                        source => ClientErrorKind::Io {
                            context: "could not read the answer",
                            source,
                        },
                    }))
                }
            };
            if let Some(pid) = pid {
                self.answered_by = Some(pid);
            }
            match decoder.advance(n) {
                Ok(Some(payload)) => break payload,
                Ok(None) => {}
                Err(error) => {
                    return Err(self.error(match error {
                        FrameError::Eof => ClientErrorKind::Closed {
                            doing: DOING,
                            source: None,
                        },
                        error @ FrameError::Truncated { .. } => ClientErrorKind::Closed {
                            doing: DOING,
                            source: Some(error),
                        },
                        source => ClientErrorKind::Frame { source },
                    }))
                }
            }
        };
        decode_response(&payload)
            .map_err(|source| self.error(ClientErrorKind::NotUnderstood { source }))
    }

    /// The time left until `at`, or the timeout error for `waiting`.
    fn remaining(
        &self,
        at: Instant,
        timeout: Duration,
        waiting: Waiting,
    ) -> Result<Duration, ClientError> {
        let remaining = at.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(self.error(ClientErrorKind::Timeout {
                waiting,
                after: timeout,
            }));
        }
        Ok(remaining)
    }

    /// After the end-of-file of a stop: the kernel closes the connection
    /// while the process exits; waits (up to the deadline) until it has
    /// exited for good, where this process can see it (`answered_by`).
    fn exited(&self, deadline: Instant, timeout: Duration) -> Result<(), ClientError> {
        // Not known here, or this very process (a service in-process, in
        // tests): nothing more to wait for.
        let Some(pid) = self.answered_by.filter(|&pid| pid != std::process::id()) else {
            return Ok(());
        };
        while !has_exited(pid) {
            if Instant::now() >= deadline {
                return Err(self.error(ClientErrorKind::Timeout {
                    waiting: Waiting::Exit { pid },
                    after: timeout,
                }));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    fn set_read_deadline(
        &self,
        at: Instant,
        timeout: Duration,
        waiting: Waiting,
    ) -> Result<(), ClientError> {
        let remaining = self.remaining(at, timeout, waiting)?;
        self.stream
            .set_read_timeout(Some(remaining))
            .map_err(|source| {
                self.error(ClientErrorKind::Io {
                    context: SET_TIMEOUT,
                    source,
                })
            })
    }

    /// A [`ClientError`] of this connection's socket.
    fn error(&self, kind: ClientErrorKind) -> ClientError {
        ClientError {
            path: self.path.clone(),
            kind,
        }
    }
}

/// The context of a failed `set_read_timeout`/`set_write_timeout`.
const SET_TIMEOUT: &str = "could not set a timeout";

/// What a failed `connect()` means: no service, no permission, or another
/// system error.
fn connect_error(path: &Path, source: io::Error) -> ClientErrorKind {
    match source.raw_os_error() {
        // Linux refuses connections to a regular file like to a stale
        // socket; say which it is.
        Some(libc::ECONNREFUSED)
            if fs::symlink_metadata(path).is_ok_and(|m| !m.file_type().is_socket()) =>
        {
            ClientErrorKind::NoService {
                source: io::Error::from_raw_os_error(libc::ENOTSOCK),
            }
        }
        Some(libc::ENOENT | libc::ECONNREFUSED | libc::ENOTSOCK | libc::ENOTDIR) => {
            ClientErrorKind::NoService { source }
        }
        Some(libc::EACCES | libc::EPERM) => ClientErrorKind::PermissionDenied { source },
        _ => ClientErrorKind::Io {
            context: "could not connect",
            source,
        },
    }
}

/// An answer that is not the one a request calls for: the service's
/// refusal ([`Response::Error`]), or another answer.
fn unexpected_answer(answer: Response) -> ClientErrorKind {
    match answer {
        Response::Error { message } => ClientErrorKind::Refused { message },
        other => ClientErrorKind::Unexpected {
            answer: Box::new(other),
        },
    }
}

/// Receiving the answering process's credentials with its bytes.
#[cfg(any(target_os = "linux", target_os = "android"))]
mod credentials {
    use std::io::{self, IoSliceMut};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use nix::sys::socket::{
        recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, UnixCredentials,
    };

    pub(super) fn enable(stream: &UnixStream) -> io::Result<()> {
        setsockopt(stream, sockopt::PassCred, &true).map_err(io::Error::from)
    }

    /// Reads into `buf`: the byte count (0 at end of stream) and the
    /// sender's pid if credentials came with the bytes (and the sender is
    /// visible from this PID namespace).
    pub(super) fn recv(stream: &UnixStream, buf: &mut [u8]) -> io::Result<(usize, Option<u32>)> {
        let mut space = nix::cmsg_space!(UnixCredentials);
        let mut iov = [IoSliceMut::new(buf)];
        let message = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let pid = message
            .cmsgs()
            .map_err(io::Error::from)?
            .find_map(|cmsg| match cmsg {
                ControlMessageOwned::ScmCredentials(credentials) => Some(credentials.pid()),
                _ => None,
            })
            .and_then(|pid| u32::try_from(pid).ok())
            .filter(|&pid| pid != 0);
        Ok((message.bytes, pid))
    }
}

/// Elsewhere: no credentials, plain reads.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod credentials {
    use std::io::{self, Read};
    use std::os::unix::net::UnixStream;

    pub(super) fn enable(_stream: &UnixStream) -> io::Result<()> {
        Ok(())
    }

    pub(super) fn recv(
        mut stream: &UnixStream,
        buf: &mut [u8],
    ) -> io::Result<(usize, Option<u32>)> {
        Ok((stream.read(buf)?, None))
    }
}

#[cfg(test)]
mod tests;
