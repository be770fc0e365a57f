//! [`Context`]: what the service's `main` receives.

use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use socket2::{Domain, SockAddr, Socket, Type};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

use crate::accept::{Accept, AcceptBackoff};
use crate::error::Error;
use crate::generation::{Admission, Generation};
use crate::handoff::{Connections, HandOverError, HandOverFailed, HandoverStream};
use crate::registry::RESERVED_PREFIX;
use crate::state::{encode_envelope_parts, HandoverState};
use crate::sync::{lock, read, wait, write};
use crate::unix_socket::{self, Access};

/// The state a service carries across restarts, shared between its tasks.
///
/// # Reading and writing
///
/// The state is behind a read-write lock. Read it with [`read`](Self::read)
/// (or [`get`](Self::get) for a copy): readers never wait for one another,
/// nor for a restart encoding the state. Change it with
/// [`lock`](Self::lock), [`update`](Self::update) or
/// [`update_if_owned`](Self::update_if_owned): a writer waits for the
/// readers, and while a restart encodes the snapshot (0.1 s to 1 s for
/// 100 MB to 1 GB of state) it waits for the encoding to end without
/// holding up the readers that come after it.
///
/// # Who owns the state, when
///
/// A restart takes the state's *snapshot* as late as it can: when the new
/// generation asks for it, right after it started (not when the restart was
/// asked for). From that moment the new generation owns the state: changes
/// the old generation makes afterwards are not carried (the old generation
/// still serves until the new one is ready, and drains after). A service
/// whose state must not diverge — one that hands out IDs, say — learns of
/// the snapshot with [`is_handed_over`](Self::is_handed_over) or
/// [`handed_over`](Self::handed_over), and makes its changes with
/// [`update_if_owned`](Self::update_if_owned), which refuses them once the
/// snapshot is taken (atomically: the snapshot is taken under the read
/// lock, which excludes writers). If the restart fails, or the new
/// generation fails its probation, the old generation owns its state again.
#[derive(Debug)]
pub struct StateCell<S> {
    inner: Arc<RwLock<S>>,
    /// Set while a snapshot is being encoded: writers wait on it rather
    /// than queue on the lock, where they would hold up new readers.
    snapshot: Arc<SnapshotGate>,
    handed_over: Arc<watch::Sender<bool>>,
}

/// Whether a snapshot is being encoded, and the writers waiting for it.
#[derive(Debug, Default)]
struct SnapshotGate {
    state: Mutex<GateState>,
    ended: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    encoding: bool,
    /// Writers waiting for the encoding to end (for the tests).
    waiting: usize,
}

impl<S> Clone for StateCell<S> {
    fn clone(&self) -> Self {
        StateCell {
            inner: Arc::clone(&self.inner),
            snapshot: Arc::clone(&self.snapshot),
            handed_over: Arc::clone(&self.handed_over),
        }
    }
}

impl<S> StateCell<S> {
    fn new(value: S, handed_over: Arc<watch::Sender<bool>>) -> Self {
        StateCell {
            inner: Arc::new(RwLock::new(value)),
            snapshot: Arc::default(),
            handed_over,
        }
    }

    /// True from the moment a restart took the state's snapshot (see the
    /// type's docs) until that restart fails or is rolled back.
    pub fn is_handed_over(&self) -> bool {
        *self.handed_over.borrow()
    }

    /// Resolves once a restart has taken the state's snapshot (at once if
    /// it already has).
    pub async fn handed_over(&self) {
        let mut handed_over = self.handed_over.subscribe();
        let _ = handed_over.wait_for(|handed_over| *handed_over).await;
    }

    /// Runs `f` with the state write-locked, unless the state has been
    /// handed over to a successor (`None` then: a change would not be
    /// carried). During a snapshot it waits for the encoding to end, and
    /// then refuses.
    pub fn update_if_owned<R>(&self, f: impl FnOnce(&mut S) -> R) -> Option<R> {
        let mut state = self.lock();
        // Read under the write lock, which the snapshot's read lock
        // excludes: no change slips in after a snapshot that does not
        // contain it.
        if self.is_handed_over() {
            return None;
        }
        Some(f(&mut state))
    }

    /// Write-locks the state, to change it. Keep the guard for short,
    /// non-async sections: it holds up every reader. While a restart
    /// encodes the state's snapshot it waits for the encoding to end
    /// (readers meanwhile go on). To only read, use [`read`](Self::read).
    pub fn lock(&self) -> RwLockWriteGuard<'_, S> {
        let mut gate = lock(&self.snapshot.state);
        if gate.encoding {
            gate.waiting += 1;
            while gate.encoding {
                gate = wait(&self.snapshot.ended, gate);
            }
            gate.waiting -= 1;
        }
        // Taken with the gate held, so that a snapshot beginning now waits
        // for this writer rather than the other way round.
        write(&self.inner)
    }

    /// Read-locks the state. Readers never wait for one another nor for a
    /// restart encoding the state, only for a writer holding
    /// [`lock`](Self::lock). Keep the guard for short, non-async sections.
    pub fn read(&self) -> RwLockReadGuard<'_, S> {
        read(&self.inner)
    }

    /// Runs `f` with the state write-locked and returns its result (see
    /// [`lock`](Self::lock)).
    pub fn update<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        f(&mut self.lock())
    }

    /// A copy of the current value, taken under the read lock.
    pub fn get(&self) -> S
    where
        S: Clone,
    {
        self.read().clone()
    }

    /// Runs `encode` on the state read-locked, with the snapshot flag set:
    /// from now on the successor owns the state. Writers wait for the
    /// encoding to end (and [`update_if_owned`](Self::update_if_owned)
    /// then refuses); readers go on.
    fn snapshot<R>(&self, encode: impl FnOnce(&S) -> R) -> R {
        let state = {
            let mut gate = lock(&self.snapshot.state);
            gate.encoding = true;
            // With the gate held: no writer is about to queue on the lock.
            let state = read(&self.inner);
            self.handed_over.send_replace(true);
            state
        };
        // Ends the encoding whatever happens, a panic included.
        struct Ended<'a>(&'a SnapshotGate);
        impl Drop for Ended<'_> {
            fn drop(&mut self) {
                lock(&self.0.state).encoding = false;
                self.0.ended.notify_all();
            }
        }
        let _ended = Ended(&self.snapshot);
        encode(&state)
    }
}

pub(crate) enum StateSlot<S> {
    Empty,
    Ready(StateCell<S>),
}

/// The handle a restartable service's `main` receives: listeners that survive
/// restarts, the handed-over state, readiness, the shutdown signal and the
/// tasks the drain waits for.
///
/// Cheap to clone; every clone refers to the same generation.
pub struct Context<S: HandoverState = ()> {
    generation: Arc<Generation>,
    state: Arc<Mutex<StateSlot<S>>>,
}

impl<S: HandoverState> Clone for Context<S> {
    fn clone(&self) -> Self {
        Context {
            generation: Arc::clone(&self.generation),
            state: Arc::clone(&self.state),
        }
    }
}

impl<S: HandoverState> std::fmt::Debug for Context<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("generation", &self.generation.number)
            .field("state_type", &S::TYPE_NAME)
            .finish_non_exhaustive()
    }
}

impl<S: HandoverState> Context<S> {
    pub(crate) fn new(generation: Arc<Generation>, handed_over: Option<S>) -> Self {
        let context = Context {
            generation,
            state: Arc::new(Mutex::new(StateSlot::Empty)),
        };
        if let Some(value) = handed_over {
            context.install_state(value);
        }
        context
    }

    fn install_state(&self, value: S) -> StateCell<S> {
        let cell = StateCell::new(value, Arc::clone(&self.generation.state_handed_over));
        let for_encoder = cell.clone();
        self.generation.set_state_encoder(Box::new(move |fds| {
            for_encoder.snapshot(|state| encode_envelope_parts(state, fds))
        }));
        *lock(&self.state) = StateSlot::Ready(cell.clone());
        cell
    }

    /// This process's generation: 1 for the first, one more at each restart.
    pub fn generation(&self) -> u64 {
        self.generation.number
    }

    /// True when this process was started by a restart (generation > 1).
    pub fn is_restart(&self) -> bool {
        self.generation.number > 1
    }

    /// True when the previous generation handed over a state value.
    pub fn has_handed_over_state(&self) -> bool {
        self.generation.state_was_handed_over
    }

    /// The state carried across restarts: the value the previous generation
    /// handed over, or `S::default()` in the first generation.
    pub fn state(&self) -> StateCell<S>
    where
        S: Default,
    {
        self.state_or_else(S::default)
    }

    /// Like [`state`](Self::state), with `init` building the first
    /// generation's value (for states holding listeners or other values
    /// without a `Default`).
    pub fn state_or_else(&self, init: impl FnOnce() -> S) -> StateCell<S> {
        match self.try_state_or_else(|| Ok::<S, std::convert::Infallible>(init())) {
            Ok(cell) => cell,
            Err(never) => match never {},
        }
    }

    /// Like [`state_or_else`](Self::state_or_else) with a fallible `init`
    /// (opening the files or sockets a first generation puts in its state).
    /// `init` runs only when no state was handed over.
    pub fn try_state_or_else<E>(
        &self,
        init: impl FnOnce() -> Result<S, E>,
    ) -> Result<StateCell<S>, E> {
        if let StateSlot::Ready(cell) = &*lock(&self.state) {
            return Ok(cell.clone());
        }
        Ok(self.install_state(init()?))
    }

    /// A TCP listener named `name`: the very socket the previous generation
    /// listened on, or a new one bound to `addr` in the first generation.
    ///
    /// If the inherited socket is bound to another address than `addr` now
    /// asks for (the configuration changed), the new address is bound and the
    /// old socket is closed once this generation is ready.
    ///
    /// Under systemd socket activation, a socket passed with
    /// `FileDescriptorName=` equal to `name` is adopted whatever its address:
    /// the unit's `ListenStream=` wins over `addr`, and nothing is bound.
    pub fn tcp_listener(
        &self,
        name: &str,
        addr: impl ToSocketAddrs + std::fmt::Debug,
    ) -> Result<tokio::net::TcpListener, Error> {
        let wanted = resolve(name, addr)?;
        let socket = self.inherit_or_bind(
            name,
            "a TCP listener",
            Type::STREAM,
            |socket| inet_matches(socket, &wanted),
            || bind_inet(name, &wanted, Type::STREAM),
        )?;
        let listener = std::net::TcpListener::from(socket);
        listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(listener))
            .map_err(|e| Error::io(format!("listener `{name}`"), e))
    }

    /// A UDP socket named `name`, inherited or bound to `addr`.
    pub fn udp_socket(
        &self,
        name: &str,
        addr: impl ToSocketAddrs + std::fmt::Debug,
    ) -> Result<tokio::net::UdpSocket, Error> {
        let wanted = resolve(name, addr)?;
        let socket = self.inherit_or_bind(
            name,
            "a UDP socket",
            Type::DGRAM,
            |socket| inet_matches(socket, &wanted),
            || bind_inet(name, &wanted, Type::DGRAM),
        )?;
        let socket = std::net::UdpSocket::from(socket);
        socket
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UdpSocket::from_std(socket))
            .map_err(|e| Error::io(format!("UDP socket `{name}`"), e))
    }

    /// A Unix stream listener named `name`, inherited or bound at `path`.
    ///
    /// In the first generation a stale socket file at `path` (nobody
    /// listening) is replaced; a live one, or a file that is not a socket,
    /// is an error and left alone. The socket file gets the mode a plain
    /// `bind()` gives.
    pub fn unix_listener(
        &self,
        name: &str,
        path: impl AsRef<Path>,
    ) -> Result<tokio::net::UnixListener, Error> {
        let path = path.as_ref();
        let socket = self.inherit_or_bind(
            name,
            "a Unix listener",
            Type::STREAM,
            |socket| {
                socket
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(|p| p == path))
                    .unwrap_or(false)
            },
            || bind_unix(name, path),
        )?;
        let listener = std::os::unix::net::UnixListener::from(OwnedFd::from(socket));
        listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixListener::from_std(listener))
            .map_err(|e| Error::io(format!("Unix listener `{name}`"), e))
    }

    /// Any other descriptor to keep across restarts, named `name`: the
    /// inherited one, or the one `create` opens in the first generation.
    pub fn fd(
        &self,
        name: &str,
        create: impl FnOnce() -> std::io::Result<OwnedFd>,
    ) -> Result<OwnedFd, Error> {
        let mut registry = self.generation.registry();
        if registry.is_registered(name) {
            return Err(Error::DuplicateName(name.to_owned()));
        }
        let fd = match registry.claim(name) {
            Some(fd) => fd,
            None => create().map_err(|source| Error::Fd {
                name: name.to_owned(),
                source,
            })?,
        };
        registry.register(name, fd.as_fd())?;
        Ok(fd)
    }

    fn inherit_or_bind(
        &self,
        name: &str,
        expected: &'static str,
        kind: Type,
        matches: impl Fn(&Socket) -> bool,
        bind: impl FnOnce() -> Result<Socket, Error>,
    ) -> Result<Socket, Error> {
        if name.starts_with(RESERVED_PREFIX) {
            return Err(Error::Fd {
                name: name.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "names starting with \"shellflip.\" are reserved",
                ),
            });
        }
        let mut registry = self.generation.registry();
        if registry.is_registered(name) {
            return Err(Error::DuplicateName(name.to_owned()));
        }
        let from_systemd = registry.is_socket_activated(name);
        let socket = match registry.claim(name) {
            Some(fd) => {
                let socket = Socket::from(fd);
                let found = describe(&socket);
                let right_kind = socket.r#type().map(|t| t == kind).unwrap_or(false)
                    && found_matches_kind(&socket, expected);
                if !right_kind {
                    return Err(Error::WrongKind {
                        name: name.to_owned(),
                        expected,
                        found,
                    });
                }
                if kind == Type::STREAM && !is_listening(&socket) {
                    return Err(Error::NotListening {
                        name: name.to_owned(),
                        origin: if from_systemd {
                            "systemd-passed"
                        } else {
                            "inherited"
                        },
                        expected,
                        found,
                        hint: if from_systemd {
                            "; in the .socket unit, use Accept=no (the default) so that systemd passes the listening socket itself"
                        } else {
                            ""
                        },
                    });
                }
                if matches(&socket) {
                    tracing::debug!(name, "adopted inherited socket");
                    socket
                } else if from_systemd {
                    // The unit's ListenStream= is the operator's truth.
                    tracing::info!(
                        name,
                        socket = %found,
                        "adopted the socket systemd passed under this name; its address comes from the socket unit, not from the address configured in the code"
                    );
                    socket
                } else {
                    tracing::warn!(
                        name,
                        inherited = %found,
                        "the inherited socket has another address than the one configured now; binding the new address"
                    );
                    drop(socket);
                    bind()?
                }
            }
            None => bind()?,
        };
        registry.register(name, socket.as_fd())?;
        Ok(socket)
    }

    /// Opens the control socket at `path` (restart, status and stop
    /// requests; see the `shellflip` CLI), for services that choose the path
    /// at run time, e.g. from their command line. Call it before
    /// [`ready`](Self::ready). The first generation binds it (mode 0600);
    /// later generations inherit the same socket. A path configured in the
    /// [`Config`](crate::Config) or by `SHELLFLIP_CONTROL` takes precedence.
    pub fn control_socket(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        self.generation.open_control(path.as_ref())
    }

    /// Marks this generation ready: a restart that started it succeeds, the
    /// previous generation drains and exits, and this one starts answering
    /// restart requests. Call it once the service accepts work.
    pub fn ready(&self) -> Result<(), Error> {
        self.generation.mark_ready()
    }

    /// Reports this generation as unfit during its probation (after
    /// `ready()`, before the previous generation handed over for good): the
    /// previous generation then kills this one and takes the service back,
    /// and the restart is recorded as rolled back, with `reason`. Use it
    /// when a check after start-up fails (a dependency unreachable, a
    /// warm-up that went wrong).
    ///
    /// An error when there is nothing to roll back to: in a first
    /// generation, before `ready()`, or once the previous generation has
    /// handed over.
    pub async fn unhealthy(&self, reason: impl Into<String>) -> Result<(), Error> {
        let Some(link) = &self.generation.predecessor else {
            return Err(Error::NotOnProbation("this is the first generation"));
        };
        if !self.generation.is_ready() {
            return Err(Error::NotOnProbation(
                "ready() was not called yet (return an error from main instead)",
            ));
        }
        if link.took_over().is_cancelled() {
            return Err(Error::NotOnProbation(
                "the previous generation has handed over already",
            ));
        }
        let reason = reason.into();
        tracing::warn!(%reason, "this generation reports itself unhealthy; the previous one takes the service back");
        link.report_unhealthy(reason)
            .await
            .map_err(|e| Error::io("could not tell the previous generation", e))
    }

    /// Hands a live connection to the successor, with its state (same
    /// evolution rules as the service's state: derive `HandoverState` on
    /// it) and the bytes read from it but not processed. Call it at a
    /// point where the connection is between requests, once
    /// [`shutdown`](Self::shutdown) resolved: when the successor has taken
    /// over, the connection goes to it; when this generation is stopping
    /// there is no successor and the connection comes back
    /// ([`HandOverError::NoSuccessor`]) to be drained as usual. On success
    /// this generation's copy is closed: forget the connection.
    ///
    /// All or nothing: on any error (the successor out of descriptors, a
    /// state too large, ...) the stream comes back in the error, untouched.
    ///
    /// [`HandOverError::NoSuccessor`]: crate::HandOverError::NoSuccessor
    pub async fn hand_over<C: HandoverState>(
        &self,
        stream: impl Into<HandoverStream>,
        state: &C,
        unread: &[u8],
    ) -> Result<(), HandOverFailed> {
        let stream = stream.into();
        match self.generation.successor() {
            Some(link) => link.hand_over(stream, state, unread).await,
            None => Err(HandOverFailed {
                stream: Some(stream),
                error: HandOverError::NoSuccessor,
            }),
        }
    }

    /// The connections the previous generation hands over (see
    /// [`hand_over`](Self::hand_over)), as they arrive, with their state
    /// decoded as `C`. They come once the previous generation took over's
    /// probation ended; the stream ends when the previous generation is
    /// gone. Take it once (a second call gets an empty stream); in a first
    /// generation it is empty.
    pub fn connections<C: HandoverState>(&self) -> Connections<C> {
        let arrived = self.generation.take_connections().unwrap_or_else(|| {
            let (_, closed) = tokio::sync::mpsc::unbounded_channel();
            closed
        });
        Connections::new(arrived)
    }

    /// Resolves when this generation must stop accepting new work (its
    /// successor is ready, or a stop was requested). Accept loops should
    /// `select!` on it and return; in-flight work then has the drain timeout
    /// to finish.
    pub fn shutdown(&self) -> WaitForCancellationFutureOwned {
        self.generation.shutdown.clone().cancelled_owned()
    }

    /// True once shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.generation.shutdown.is_cancelled()
    }

    /// The token cancelled when shutdown begins (a child token: cancelling it
    /// does not shut the service down).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.generation.shutdown.child_token()
    }

    /// The next connection this generation should take on `listener`:
    /// accepts while this generation admits new work, waits while it is
    /// paused (a successor is on probation; if the successor fails, this
    /// generation takes over again and accepting resumes), and returns
    /// `None` once this generation stops accepting for good (its successor
    /// took over, or a stop was requested). Failed accepts (out of file
    /// descriptors, say) are retried with an [`AcceptBackoff`] and logged
    /// at most once a second, never returned.
    ///
    /// Cancel-safe: nothing is lost if the future is dropped.
    ///
    /// ```no_run
    /// # async fn service(ctx: shellflip_runtime::Context) -> Result<(), shellflip_runtime::Error> {
    /// let listener = ctx.tcp_listener("http", "127.0.0.1:8080")?;
    /// ctx.ready()?;
    /// while let Some((stream, _peer)) = ctx.accept(&listener).await {
    ///     ctx.spawn(async move { drop(stream) /* serve it */ });
    /// }
    /// Ok(()) // the drain waits for the spawned tasks
    /// # }
    /// ```
    ///
    /// [`AcceptBackoff`]: crate::AcceptBackoff
    pub async fn accept<L: Accept>(&self, listener: &L) -> Option<L::Connection> {
        let shutdown = &self.generation.shutdown;
        let mut admission = self.generation.admission.subscribe();
        let mut backoff = AcceptBackoff::default();
        loop {
            if shutdown.is_cancelled() {
                return None;
            }
            let open = *admission.borrow_and_update() == Admission::Open;
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return None,
                _ = admission.changed() => {}
                accepted = listener.accept(), if open => match accepted {
                    Ok(connection) => return Some(connection),
                    Err(error) => tokio::select! {
                        () = shutdown.cancelled() => return None,
                        () = backoff.failed(&error) => {}
                    },
                },
            }
        }
    }

    /// Whether this generation takes new connections now: for accept
    /// loops that do not use [`accept`](Self::accept).
    pub fn admission(&self) -> Admission {
        *self.generation.admission.borrow()
    }

    /// Resolves when [`admission`](Self::admission) changes.
    pub async fn admission_changed(&self) {
        let mut admission = self.generation.admission.subscribe();
        admission.borrow_and_update();
        let _ = admission.changed().await;
    }

    /// Spawns a task that the drain waits for (up to the drain timeout):
    /// use it for each connection or request in flight.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.generation.tracker.spawn(task)
    }

    /// The tracker of drained tasks, for frameworks that spawn on their own.
    pub fn task_tracker(&self) -> TaskTracker {
        self.generation.tracker.clone()
    }

    /// When the drain ends, once it has begun (`None` before): in-flight
    /// work still running then is cut by the exit. For servers that close
    /// idle connections just before it rather than have them cut.
    ///
    /// ```no_run
    /// # async fn service(ctx: shellflip_runtime::Context) {
    /// ctx.shutdown().await;
    /// if let Some(deadline) = ctx.drain_deadline() {
    ///     let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    ///     println!("draining; {left:?} left");
    /// }
    /// # }
    /// ```
    pub fn drain_deadline(&self) -> Option<tokio::time::Instant> {
        if self.generation.shutdown.is_cancelled() {
            Some(self.generation.drain().deadline)
        } else {
            None
        }
    }
}

fn resolve(
    name: &str,
    addr: impl ToSocketAddrs + std::fmt::Debug,
) -> Result<Vec<SocketAddr>, Error> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|source| Error::Address {
            name: name.to_owned(),
            address: format!("{addr:?}"),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(Error::Address {
            name: name.to_owned(),
            address: format!("{addr:?}"),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "it resolved to no address",
            ),
        });
    }
    Ok(addrs)
}

/// True when `listen()` was called on `socket` (`SO_ACCEPTCONN`).
fn is_listening(socket: &Socket) -> bool {
    nix::sys::socket::getsockopt(socket, nix::sys::socket::sockopt::AcceptConn).unwrap_or(false)
}

fn found_matches_kind(socket: &Socket, expected: &str) -> bool {
    let is_unix = socket
        .local_addr()
        .map(|a| a.domain() == Domain::UNIX)
        .unwrap_or(false);
    (expected == "a Unix listener") == is_unix
}

fn describe(socket: &Socket) -> String {
    let kind = match socket.r#type() {
        Ok(t) if t == Type::STREAM => "a stream socket",
        Ok(t) if t == Type::DGRAM => "a datagram socket",
        Ok(_) => "a socket of another type",
        Err(_) => return "not a socket".to_owned(),
    };
    match socket.local_addr() {
        Ok(addr) => match (addr.as_socket(), addr.as_pathname()) {
            (Some(inet), _) => format!("{kind} on {inet}"),
            (None, Some(path)) => format!("{kind} at {}", path.display()),
            _ => format!("{kind} (unnamed)"),
        },
        Err(_) => kind.to_owned(),
    }
}

fn inet_matches(socket: &Socket, wanted: &[SocketAddr]) -> bool {
    let Some(local) = socket.local_addr().ok().and_then(|a| a.as_socket()) else {
        return false;
    };
    wanted
        .iter()
        .any(|w| w.ip() == local.ip() && (w.port() == 0 || w.port() == local.port()))
}

fn bind_inet(name: &str, addrs: &[SocketAddr], kind: Type) -> Result<Socket, Error> {
    let mut last_error = None;
    for addr in addrs {
        let attempt = (|| {
            let socket = Socket::new(Domain::for_address(*addr), kind, None)?;
            if kind == Type::STREAM {
                socket.set_reuse_address(true)?;
            }
            socket.bind(&SockAddr::from(*addr))?;
            if kind == Type::STREAM {
                socket.listen(1024)?;
            }
            Ok::<_, std::io::Error>(socket)
        })();
        match attempt {
            Ok(socket) => return Ok(socket),
            Err(e) => last_error = Some((addr, e)),
        }
    }
    let (addr, source) = match last_error {
        Some((addr, e)) => (addr.to_string(), e),
        None => (
            "the given address".to_owned(),
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address"),
        ),
    };
    Err(Error::Bind {
        name: name.to_owned(),
        address: addr,
        source,
    })
}

fn bind_unix(name: &str, path: &Path) -> Result<Socket, Error> {
    let (listener, _file) =
        unix_socket::bind(path, Access::Umask).map_err(|error| Error::Bind {
            name: name.to_owned(),
            address: path.display().to_string(),
            source: std::io::Error::new(error.io_kind(), error),
        })?;
    Ok(Socket::from(OwnedFd::from(listener)))
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// A state whose encoding says it began and then waits for the test's
    /// go-ahead: the test acts while the snapshot is being encoded.
    struct Gated {
        value: u64,
        began: mpsc::SyncSender<()>,
        go: Mutex<mpsc::Receiver<()>>,
    }

    /// Long enough never to be reached unless something is blocked.
    const STUCK: Duration = Duration::from_secs(20);

    #[test]
    fn readers_go_on_while_the_snapshot_is_encoded_and_writers_after_it_are_refused() {
        let (began_tx, began) = mpsc::sync_channel(1);
        let (go, go_rx) = mpsc::channel();
        let (handed_over, _) = watch::channel(false);
        let cell = StateCell::new(
            Gated {
                value: 7,
                began: began_tx,
                go: Mutex::new(go_rx),
            },
            Arc::new(handed_over),
        );
        let encoder = cell.clone();
        let snapshot = std::thread::spawn(move || {
            encoder.snapshot(|state| {
                let _ = state.began.send(());
                let _ = lock(&state.go).recv();
                state.value
            })
        });
        began.recv().unwrap();
        assert!(cell.is_handed_over());
        // The read lock is held: no writer gets in.
        assert!(cell.inner.try_write().is_err());

        // A writer arrives during the encoding, and waits.
        let writer_cell = cell.clone();
        let writer = std::thread::spawn(move || writer_cell.update_if_owned(|s| s.value += 1));
        while lock(&cell.snapshot.state).waiting == 0 {
            std::thread::yield_now();
        }

        // Readers are not held up, neither by the encoding nor by the
        // waiting writer.
        let reader_cell = cell.clone();
        let (read_tx, read_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = read_tx.send(reader_cell.read().value);
        });
        assert_eq!(read_rx.recv_timeout(STUCK), Ok(7), "a reader was blocked");
        assert_eq!(cell.read().value, 7);

        go.send(()).unwrap();
        assert_eq!(snapshot.join().unwrap(), 7);
        // The writer got in after the snapshot, and was refused.
        assert_eq!(writer.join().unwrap(), None);
        assert_eq!(cell.read().value, 7);
        assert_eq!(cell.update_if_owned(|s| s.value), None);
        // A plain writer is not refused (its change is simply not carried).
        cell.update(|s| s.value = 8);
        assert_eq!(cell.read().value, 8);
    }

    #[test]
    fn a_writer_before_the_snapshot_is_carried() {
        let (handed_over, _) = watch::channel(false);
        let cell = StateCell::new(1u64, Arc::new(handed_over));
        assert_eq!(cell.update_if_owned(|v| *v += 1), Some(()));
        assert_eq!(cell.snapshot(|v| *v), 2);
        assert_eq!(cell.update_if_owned(|v| *v += 1), None);
        // The snapshot's end opened the gate: writers no longer wait.
        assert!(!lock(&cell.snapshot.state).encoding);
        *cell.lock() += 1;
        assert_eq!(cell.get(), 3);
    }

    #[test]
    fn a_panicking_encoder_does_not_leave_writers_waiting() {
        let (handed_over, _) = watch::channel(false);
        let cell = StateCell::new(1u64, Arc::new(handed_over));
        let encoder = cell.clone();
        let panicked = std::thread::spawn(move || encoder.snapshot(|_| panic!("encoder")));
        assert!(panicked.join().is_err());
        *cell.lock() = 5;
        assert_eq!(cell.get(), 5);
    }
}
