//! The service's side of the control socket: binding it, accepting
//! connections, reading requests, handing them to the supervisor and
//! writing its answers.
//!
//! Each connection is served by its own task and forwards each request as
//! a [`ControlCommand`] to the supervisor, which answers on the command's
//! `reply`. The server never decides anything about restarts itself.
//!
//! # Slots
//!
//! At most [`MAX_CONNECTIONS`] connections are served at once. When all
//! slots are taken, a new connection pushes out the oldest connection that
//! is *waiting for a request* (it has not sent a complete one yet, or is
//! idle between requests): that one is told why and closed, and the new
//! one takes its slot. Only when every slot holds a request being served
//! (a restart waiting for its outcome, say) is the new connection refused
//! ("too many control connections"). So clients that connect and say
//! nothing can never lock out a request, however many they are; a client
//! that sends its request right after connecting, as every client does, is
//! only pushed out if [`MAX_CONNECTIONS`] other connections arrive in that
//! instant.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shellflip_control::frame::{encode_frame, FrameError};
use shellflip_control::protocol::{
    decode_request, encode_response, Request, Response, MAX_CONNECTIONS, MAX_FRAME_BYTES,
    REQUEST_TIMEOUT,
};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::error::Error;
use crate::frame::read_frame;
use crate::profile::{self, Hop};
use crate::sync::lock;
use crate::unix_socket::{self, Access};

/// The identity of the control socket file this lineage created, so that
/// the final generation removes the file only if it is still ours.
pub(crate) use crate::unix_socket::SocketFile as ControlSocketFile;

/// Pause after a failed `accept()` (e.g. out of file descriptors), so the
/// accept loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How long a new connection waits for the slot of the connection it
/// pushed out (which lets go at once: it is only waiting for a request).
const EVICTION_WAIT: Duration = Duration::from_secs(1);

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
/// for [`ControlSocketFile::remove`] at final stop.
pub(crate) fn bind_control_socket(
    path: &Path,
) -> Result<(StdUnixListener, ControlSocketFile), Error> {
    unix_socket::bind(path, Access::OwnerOnly).map_err(|source| Error::ControlSocketBind {
        path: path.to_path_buf(),
        source,
    })
}

/// The connections of stop requests: never closed by this process, so the
/// kernel closes them as it ends it, and the client sees end-of-file only
/// then (a task holding them would drop them when the runtime shuts down,
/// a moment before the exit).
static HELD_UNTIL_EXIT: Mutex<Vec<std::os::fd::OwnedFd>> = Mutex::new(Vec::new());

/// Keeps a stop request's connection open until this process exits.
fn hold_until_exit(stream: UnixStream) {
    match stream.into_std() {
        Ok(stream) => lock(&HELD_UNTIL_EXIT).push(stream.into()),
        Err(error) => debug!(%error, "control socket: could not keep a stop's connection open"),
    }
}

/// Tunables of the server; tests shorten them.
#[derive(Debug, Clone, Copy)]
struct ServerOptions {
    request_timeout: Duration,
    max_connections: usize,
}

/// The protocol's bounds.
const SERVER_OPTIONS: ServerOptions = ServerOptions {
    request_timeout: REQUEST_TIMEOUT,
    max_connections: MAX_CONNECTIONS,
};

/// The control socket being served by this generation.
pub(crate) struct Serving {
    /// The socket file, as this lineage created it.
    pub file: ControlSocketFile,
    stop_accepting: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Serving {
    /// Serves `listener` (see [`serve`]) on a task of its own.
    pub(crate) fn start(
        file: ControlSocketFile,
        listener: StdUnixListener,
        commands: mpsc::Sender<ControlCommand>,
        connections: TaskTracker,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::UnixListener::from_std(listener)?;
        let stop_accepting = CancellationToken::new();
        let task = tokio::spawn(serve(
            listener,
            commands,
            stop_accepting.clone(),
            connections,
            SERVER_OPTIONS,
        ));
        Ok(Serving {
            file,
            stop_accepting,
            task: Some(task),
        })
    }

    /// Stops accepting, and waits until this process's copy of the
    /// listener is closed (idempotent).
    pub(crate) async fn stop(&mut self) {
        self.stop_accepting.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
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
async fn serve(
    listener: tokio::net::UnixListener,
    commands: mpsc::Sender<ControlCommand>,
    stop_accepting: CancellationToken,
    connections: TaskTracker,
    options: ServerOptions,
) {
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let server = Arc::new(Server {
        commands,
        stop_accepting,
        waiting: Arc::new(Mutex::new(Waiting::default())),
        options,
        service_uid: nix::unistd::geteuid().as_raw(),
    });
    loop {
        // A connection and its slot, unless stop_accepting comes first.
        let next = async {
            match listener.accept().await {
                Ok((stream, _)) => Some((take_slot(&slots, &server.waiting).await, stream)),
                Err(error) => {
                    warn!(%error, "control socket: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    None
                }
            }
        };
        let (slot, stream) = tokio::select! {
            biased;
            () = server.stop_accepting.cancelled() => break,
            next = next => match next {
                Some(next) => next,
                None => continue,
            },
        };
        let Some(slot) = slot else {
            warn!(
                limit = options.max_connections,
                "control socket: too many connections serving a request; refusing one"
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
        // Waiting for its first request from now on (not from when its
        // task first runs), so connections are pushed out in the order they
        // came.
        let first_wait = WaitingForRequest::enter(&server.waiting);
        let server = Arc::clone(&server);
        connections.spawn(async move {
            server.run(stream, first_wait).await;
            drop(slot);
        });
    }
    debug!("control socket: stopped accepting");
}

/// A free slot, or the slot of the oldest connection waiting for a request
/// (pushed out), or `None` if every slot is serving a request.
async fn take_slot(
    slots: &Arc<Semaphore>,
    waiting: &Mutex<Waiting>,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(slot) = Arc::clone(slots).try_acquire_owned() {
        return Some(slot);
    }
    let (_, oldest) = lock(waiting).pop_first()?;
    oldest.cancel();
    // The pushed-out connection lets go of its slot as soon as its task
    // runs; only this loop takes slots, so it is ours.
    let slot = tokio::time::timeout(EVICTION_WAIT, Arc::clone(slots).acquire_owned()).await;
    slot.ok()?.ok()
}

/// The connections waiting for a request, oldest first: those a new
/// connection may push out when all slots are taken. By the order in which
/// they began to wait; cancelling the token pushes the connection out.
type Waiting = BTreeMap<u64, CancellationToken>;

/// A connection's place in [`Waiting`] while it waits for a request; leaves
/// it when dropped.
struct WaitingForRequest {
    waiting: Arc<Mutex<Waiting>>,
    id: u64,
    pushed_out: CancellationToken,
}

impl WaitingForRequest {
    fn enter(waiting: &Arc<Mutex<Waiting>>) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let pushed_out = CancellationToken::new();
        lock(waiting).insert(id, pushed_out.clone());
        WaitingForRequest {
            waiting: Arc::clone(waiting),
            id,
            pushed_out,
        }
    }
}

impl Drop for WaitingForRequest {
    fn drop(&mut self) {
        lock(&self.waiting).remove(&self.id);
    }
}

/// Writes `message` as an error answer if it fits in the socket buffer
/// right now (it does on a fresh or idle connection), without waiting; the
/// caller then closes the connection.
fn answer_now(stream: &UnixStream, message: &str) {
    if let Ok(frame) = frame_of(Response::error(message)) {
        // If it does not fit, the client just sees the close.
        let _ = stream.try_write(&frame);
    }
}

/// `response` as a frame (encode_response always fits one).
fn frame_of(response: Response) -> io::Result<Vec<u8>> {
    Ok(encode_frame(&encode_response(response), MAX_FRAME_BYTES)?)
}

/// Whether a peer with `peer_uid` may use a service running as
/// `service_uid`: the same user, or root.
fn peer_allowed(peer_uid: u32, service_uid: u32) -> bool {
    peer_uid == service_uid || peer_uid == 0
}

/// What the tasks serving the connections share.
struct Server {
    commands: mpsc::Sender<ControlCommand>,
    stop_accepting: CancellationToken,
    waiting: Arc<Mutex<Waiting>>,
    options: ServerOptions,
    service_uid: u32,
}

impl Server {
    async fn run(&self, mut stream: UnixStream, first_wait: WaitingForRequest) {
        if let Err(message) = self.check_peer(&stream) {
            drop(first_wait);
            warn!("control socket: {message}");
            self.send(&mut stream, Response::error(message)).await;
            return;
        }
        let (mut waiting, mut answered_before) = (first_wait, false);
        loop {
            let request = self.next_request(&mut stream, waiting, answered_before);
            let Some(request) = request.await else { return };
            if let Request::Restart { .. } = request {
                profile::mark(Hop::TriggerRead);
            }
            debug!(?request, "control socket: request");
            let response = self.dispatch(request).await;
            debug!(?response, "control socket: answer");
            if let Response::Stopping { .. } = response {
                if self.send(&mut stream, response).await {
                    hold_until_exit(stream);
                }
                return;
            }
            // Waiting for the next request as soon as the answer is on its
            // way: a client that reads it and connects again finds this
            // connection ready to make room.
            waiting = WaitingForRequest::enter(&self.waiting);
            let restarted = matches!(response, Response::Restarted(_));
            if !self.send(&mut stream, response).await {
                return;
            }
            if restarted {
                profile::mark(Hop::AnswerWritten);
            }
            answered_before = true;
        }
    }

    /// The next request on the connection; `None` when the connection
    /// ends (closed, pushed out, idle while this generation stops
    /// accepting, or a bad or late request, which is answered with the
    /// reason).
    ///
    /// The first request is always waited for, even when the generation
    /// stops accepting meanwhile: the client connected to this generation
    /// and is owed an answer. Between requests (`answered_before`), a
    /// generation that stops accepting lets the client go.
    async fn next_request(
        &self,
        stream: &mut UnixStream,
        waiting: WaitingForRequest,
        answered_before: bool,
    ) -> Option<Request> {
        let timeout = self.options.request_timeout;
        let read = tokio::time::timeout(timeout, read_frame(stream, MAX_FRAME_BYTES));
        let frame = tokio::select! {
            biased;
            () = waiting.pushed_out.cancelled() => {
                debug!("control socket: pushed out a connection waiting for a request");
                answer_now(
                    stream,
                    &format!(
                        "too many control connections (at most {} at once): this one had waited \
                         longest for a request and was closed to make room for a new one; send \
                         the request right after connecting",
                        self.options.max_connections
                    ),
                );
                return None;
            }
            () = self.stop_accepting.cancelled(), if answered_before => {
                debug!("control socket: closing an idle connection; this generation stopped accepting");
                return None;
            }
            frame = read => frame,
        };
        drop(waiting);
        let refusal = match frame {
            Ok(Ok(payload)) => match decode_request(&payload) {
                Ok(request) => return Some(request),
                Err(error) => {
                    warn!("control socket: {error}");
                    error.to_string()
                }
            },
            Ok(Err(error)) if error.is_closed() => return None,
            Ok(Err(FrameError::Io(error))) => {
                debug!(%error, "control socket: read failed");
                return None;
            }
            Ok(Err(error)) => {
                warn!(%error, "control socket: bad request frame");
                format!("request rejected: {error}")
            }
            Err(_elapsed) => {
                warn!("control socket: no complete request within {timeout:?}");
                format!(
                    "timed out: no complete request within {}; closing the connection",
                    shellflip_settings::format_duration(timeout)
                )
            }
        };
        self.send(stream, Response::error(refusal)).await;
        None
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
        // If the supervisor is gone, the command and its `reply` are dropped
        // with the error, and the answer says so.
        let _ = self.commands.send(ControlCommand { request, reply }).await;
        answer.await.unwrap_or_else(|_| {
            Response::error("the service is shutting down; no request is served any more")
        })
    }

    /// Writes `response` with this process's credentials, bounded by the
    /// request timeout; returns whether it was written.
    async fn send(&self, stream: &mut UnixStream, response: Response) -> bool {
        let write = async { write_with_credentials(stream, &frame_of(response)?).await };
        match tokio::time::timeout(self.options.request_timeout, write).await {
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
    // (A Unix stream has nothing to flush.)
    stream.write_all(&frame[sent..]).await
}

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

#[cfg(test)]
mod tests;
