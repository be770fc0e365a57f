//! The service's side of the control socket: binding it, accepting
//! connections, reading requests, handing them to the supervisor and
//! writing its answers.
//!
//! Each connection is served by its own task and forwards each request as
//! a [`ControlCommand`] to the supervisor, which answers on the command's
//! `reply`. The server never decides anything about restarts itself.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::control::protocol::{
    decode_request, encode_response, Request, Response, MAX_FRAME_BYTES,
};
use crate::error::Error;
use crate::frame::{encode_frame, read_frame, FrameError};
use crate::unix_socket::{self, Access};

/// The identity of the control socket file this lineage created, so that
/// the final generation removes the file only if it is still ours.
pub(crate) use crate::unix_socket::SocketFile as ControlSocketFile;

/// How long the service waits for a complete request frame, and for the
/// client to take an answer, before it gives up on a connection.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How many control connections are served at once; connections beyond
/// this are answered with [`Response::Error`] and closed immediately.
pub const MAX_CONNECTIONS: usize = 128;

/// Pause after a failed `accept()` (e.g. out of file descriptors), so the
/// accept loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A request received on the control socket, for the supervisor to act on.
/// The connection waits for the answer on `reply`; dropping `reply` answers
/// "the service is shutting down".
#[derive(Debug)]
pub(crate) struct ControlCommand {
    /// The request.
    pub request: Request,
    /// Where to send the answer.
    pub reply: oneshot::Sender<Response>,
}

/// Creates the control socket at `path`, mode `0600`, listening (see
/// [`unix_socket`] for what happens when something is at `path`).
///
/// Returns the listener (blocking, `CLOEXEC`; the caller makes it
/// non-blocking and hands it to Tokio) and the identity of the socket file,
/// for [`remove_control_socket`] at final stop.
pub(crate) fn bind_control_socket(
    path: &Path,
) -> Result<(StdUnixListener, ControlSocketFile), Error> {
    unix_socket::bind(path, Access::OwnerOnly).map_err(|source| Error::ControlSocketBind {
        path: path.to_path_buf(),
        source,
    })
}

/// Removes the control socket file at final stop, if it is still ours; see
/// [`ControlSocketFile::remove`].
pub(crate) fn remove_control_socket(file: &ControlSocketFile) -> bool {
    file.remove()
}

/// Tunables of the server; tests shorten them.
#[derive(Debug, Clone, Copy)]
struct ServerOptions {
    request_timeout: Duration,
    max_connections: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            request_timeout: REQUEST_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// Serves the control socket until `stop_accepting` is cancelled, then
/// returns, dropping (closing this process's copy of) `listener`.
///
/// Each connection runs as a task of `connections`, so the drain can wait
/// for requests in flight; a connection is bounded by [`REQUEST_TIMEOUT`]
/// while the client is sending a request or receiving an answer (the wait
/// for the supervisor's answer, e.g. a restart, is not bounded here). A
/// connection that was answered [`Response::Stopping`] is moved to an
/// untracked task and held open until the process exits.
///
/// Requests are forwarded on `commands`; if that channel is closed, or the
/// reply is dropped, the client is told the service is shutting down.
pub(crate) async fn serve(
    listener: tokio::net::UnixListener,
    commands: mpsc::Sender<ControlCommand>,
    stop_accepting: CancellationToken,
    connections: TaskTracker,
) {
    serve_with(
        listener,
        commands,
        stop_accepting,
        connections,
        ServerOptions::default(),
    )
    .await;
}

async fn serve_with(
    listener: tokio::net::UnixListener,
    commands: mpsc::Sender<ControlCommand>,
    stop_accepting: CancellationToken,
    connections: TaskTracker,
    options: ServerOptions,
) {
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let service_uid = nix::unistd::geteuid().as_raw();
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop_accepting.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                warn!(%error, "control socket: accept failed");
                tokio::select! {
                    biased;
                    () = stop_accepting.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            warn!(
                limit = options.max_connections,
                "control socket: too many connections; refusing one"
            );
            answer_now(
                &stream,
                &format!(
                    "too many control connections (at most {} at once); try again shortly",
                    options.max_connections
                ),
            );
            continue;
        };
        let connection = Connection {
            commands: commands.clone(),
            stop_accepting: stop_accepting.clone(),
            options,
            service_uid,
        };
        connections.spawn(async move {
            connection.run(stream).await;
            drop(slot);
        });
    }
    debug!("control socket: stopped accepting");
}

/// Writes `message` as an error answer if it fits in the socket buffer
/// right now (it does on a fresh or idle connection), without waiting; the
/// caller then closes the connection.
fn answer_now(stream: &UnixStream, message: &str) {
    if let Ok(frame) = encode_frame(&encode_response(Response::error(message)), MAX_FRAME_BYTES) {
        // If it does not fit, the client just sees the close.
        let _ = stream.try_write(&frame);
    }
}

/// Whether a peer with `peer_uid` may use a service running as
/// `service_uid`: the same user, or root.
fn peer_allowed(peer_uid: u32, service_uid: u32) -> bool {
    peer_uid == service_uid || peer_uid == 0
}

fn shutting_down() -> Response {
    Response::error("the service is shutting down; no request is served any more")
}

struct Connection {
    commands: mpsc::Sender<ControlCommand>,
    stop_accepting: CancellationToken,
    options: ServerOptions,
    service_uid: u32,
}

impl Connection {
    async fn run(self, mut stream: UnixStream) {
        if let Err(message) = self.check_peer(&stream) {
            warn!("control socket: {message}");
            self.send(&mut stream, Response::error(message)).await;
            return;
        }
        let timeout = self.options.request_timeout;
        let mut answered = 0u64;
        loop {
            let read = tokio::time::timeout(timeout, read_frame(&mut stream, MAX_FRAME_BYTES));
            // The first request is always waited for, even when the
            // generation stops accepting meanwhile: the client connected to
            // this generation and is owed an answer. Between requests, a
            // generation that stops accepting lets the client go.
            let frame = if answered == 0 {
                read.await
            } else {
                tokio::select! {
                    biased;
                    frame = read => frame,
                    () = self.stop_accepting.cancelled() => {
                        debug!("control socket: closing an idle connection; this generation stopped accepting");
                        return;
                    }
                }
            };
            let payload = match frame {
                Ok(Ok(payload)) => payload,
                Ok(Err(error)) if error.is_closed() => return,
                Ok(Err(FrameError::Io(error))) => {
                    debug!(%error, "control socket: read failed");
                    return;
                }
                Ok(Err(error)) => {
                    warn!(%error, "control socket: bad request frame");
                    let message = format!("request rejected: {error}");
                    self.send(&mut stream, Response::error(message)).await;
                    return;
                }
                Err(_elapsed) => {
                    warn!("control socket: no complete request within {timeout:?}");
                    let message = format!(
                        "timed out: no complete request within {}; closing the connection",
                        humantime::format_duration(timeout)
                    );
                    self.send(&mut stream, Response::error(message)).await;
                    return;
                }
            };
            let request = match decode_request(&payload) {
                Ok(request) => request,
                Err(error) => {
                    warn!("control socket: {error}");
                    self.send(&mut stream, Response::error(error.to_string()))
                        .await;
                    return;
                }
            };
            debug!(?request, "control socket: request");
            let response = self.dispatch(request).await;
            debug!(?response, "control socket: answer");
            let stopping = matches!(response, Response::Stopping { .. });
            if !self.send(&mut stream, response).await {
                return;
            }
            if stopping {
                // Held outside `connections`, so the drain does not wait for
                // it: the client sees end-of-file when the process is gone.
                tokio::spawn(async move {
                    let _held = stream;
                    std::future::pending::<()>().await
                });
                return;
            }
            answered += 1;
        }
    }

    fn check_peer(&self, stream: &UnixStream) -> Result<(), String> {
        let credentials = stream.peer_cred().map_err(|error| {
            format!("permission denied: the peer's credentials cannot be read ({error})")
        })?;
        if peer_allowed(credentials.uid(), self.service_uid) {
            Ok(())
        } else {
            Err(format!(
                "permission denied: the control socket only answers uid {} (the service's user) \
                 and root, not uid {}",
                self.service_uid,
                credentials.uid()
            ))
        }
    }

    async fn dispatch(&self, request: Request) -> Response {
        let (reply, answer) = oneshot::channel();
        if self
            .commands
            .send(ControlCommand { request, reply })
            .await
            .is_err()
        {
            return shutting_down();
        }
        answer.await.unwrap_or_else(|_| shutting_down())
    }

    /// Writes `response` with this process's credentials, bounded by the
    /// request timeout; returns whether it was written.
    async fn send(&self, stream: &mut UnixStream, response: Response) -> bool {
        let payload = encode_response(response);
        let written = match encode_frame(&payload, MAX_FRAME_BYTES) {
            Ok(frame) => {
                tokio::time::timeout(
                    self.options.request_timeout,
                    write_with_credentials(stream, &frame),
                )
                .await
            }
            // encode_response always fits a frame.
            Err(error) => Ok(Err(io::Error::from(error))),
        };
        match written {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                debug!(%error, "control socket: could not write the answer");
                false
            }
            Err(_elapsed) => {
                warn!("control socket: the client did not take the answer in time");
                false
            }
        }
    }
}

/// Writes `frame`, its first bytes with this process's credentials
/// attached (`SCM_CREDENTIALS`): a client with `SO_PASSCRED` set learns
/// this process's pid as seen from its own PID namespace. Attached by the
/// sender, they reach the client whenever it turns `SO_PASSCRED` on.
async fn write_with_credentials(stream: &mut UnixStream, frame: &[u8]) -> io::Result<()> {
    let sent = stream
        .async_io(Interest::WRITABLE, || {
            send_with_credentials(stream.as_fd(), frame)
        })
        .await?;
    stream.write_all(&frame[sent..]).await?;
    stream.flush().await
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_with_credentials(socket: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<usize> {
    use nix::errno::Errno;
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixCredentials};

    let credentials = UnixCredentials::new();
    let iov = [io::IoSlice::new(bytes)];
    let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
    let cmsgs = [ControlMessage::ScmCredentials(&credentials)];
    match sendmsg::<()>(socket.as_raw_fd(), &iov, &cmsgs, flags, None) {
        Ok(sent) => Ok(sent),
        // Credentials the kernel will not vouch for (an odd user namespace
        // set-up): the answer matters more than the pid translation.
        Err(Errno::EPERM | Errno::EINVAL) => {
            sendmsg::<()>(socket.as_raw_fd(), &iov, &[], flags, None).map_err(io::Error::from)
        }
        Err(errno) => Err(io::Error::from(errno)),
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_with_credentials(socket: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<usize> {
    use nix::sys::socket::{send, MsgFlags};
    send(socket.as_raw_fd(), bytes, MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)
}

#[cfg(test)]
mod tests;
