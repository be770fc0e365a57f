//! [`Context`]: what the service's `main` receives.

use std::future::Future;
use std::net::ToSocketAddrs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

use socket2::{Socket, Type};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

use crate::accept::{Accept, AcceptBackoff};
use crate::accept_watch::{self, AcceptWatch, Listener, Watched};
use crate::connections::{Connections, HandOverError, HandOverFailed, HandoverStream};
use crate::error::Error;
use crate::generation::{Admission, Generation};
use crate::registry::RESERVED_PREFIX;
use crate::state::{encode_envelope_parts, HandoverState};
use crate::state_cell::StateCell;
use crate::sync::lock;
use crate::unix_socket::{self, Access};

mod sockets;

use sockets::*;

/// The handle a restartable service's `main` receives: listeners that survive
/// restarts, the handed-over state, readiness, the shutdown signal and the
/// tasks the drain waits for.
///
/// Cheap to clone; every clone refers to the same generation.
pub struct Context<S: HandoverState = ()> {
    generation: Arc<Generation>,
    /// The state, once handed over or built (by `state_or_else`...).
    state: Arc<Mutex<Option<StateCell<S>>>>,
    accept_watch: Arc<AcceptWatch>,
}

impl<S: HandoverState> Clone for Context<S> {
    fn clone(&self) -> Self {
        Context {
            generation: Arc::clone(&self.generation),
            state: Arc::clone(&self.state),
            accept_watch: Arc::clone(&self.accept_watch),
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
            accept_watch: watch_accepts(&generation),
            generation,
            state: Arc::new(Mutex::new(None)),
        };
        if let Some(value) = handed_over {
            context.install_state(value);
        }
        context
    }

    fn install_state(&self, value: S) -> StateCell<S> {
        let cell = StateCell::new(value, Arc::clone(&self.generation.state_handed_over));
        let for_encoder = cell.clone();
        let encoder = Box::new(move |fds: &mut _| {
            for_encoder.snapshot(|state| encode_envelope_parts(state, fds))
        });
        if self.generation.state_encoder.set(encoder).is_err() {
            tracing::debug!("the state encoder was already installed");
        }
        *lock(&self.state) = Some(cell.clone());
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
        let cell = self.try_state_or_else(|| Ok::<S, std::convert::Infallible>(init()));
        cell.unwrap_or_else(|never| match never {})
    }

    /// Like [`state_or_else`](Self::state_or_else) with a fallible `init`
    /// (opening the files or sockets a first generation puts in its state).
    /// `init` runs only when no state was handed over.
    pub fn try_state_or_else<E>(
        &self,
        init: impl FnOnce() -> Result<S, E>,
    ) -> Result<StateCell<S>, E> {
        if let Some(cell) = &*lock(&self.state) {
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
        let socket = self.inet_socket(name, addr, "a TCP listener", Type::STREAM)?;
        tokio::net::TcpListener::from_std(socket.into())
            .map_err(|e| Error::io(format!("listener `{name}`"), e))
    }

    /// A UDP socket named `name`, inherited or bound to `addr`.
    pub fn udp_socket(
        &self,
        name: &str,
        addr: impl ToSocketAddrs + std::fmt::Debug,
    ) -> Result<tokio::net::UdpSocket, Error> {
        let socket = self.inet_socket(name, addr, "a UDP socket", Type::DGRAM)?;
        tokio::net::UdpSocket::from_std(socket.into())
            .map_err(|e| Error::io(format!("UDP socket `{name}`"), e))
    }

    /// A TCP or UDP socket named `name`, inherited or bound to `addr`.
    fn inet_socket(
        &self,
        name: &str,
        addr: impl ToSocketAddrs + std::fmt::Debug,
        expected: &'static str,
        kind: Type,
    ) -> Result<Socket, Error> {
        let wanted = resolve(name, addr)?;
        self.inherit_or_bind(
            name,
            expected,
            kind,
            |socket| inet_matches(socket, &wanted),
            || bind_inet(name, &wanted, kind),
        )
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
                    .is_ok_and(|a| a.as_pathname() == Some(path))
            },
            || bind_unix(name, path),
        )?;
        tokio::net::UnixListener::from_std(OwnedFd::from(socket).into())
            .map_err(|e| Error::io(format!("Unix listener `{name}`"), e))
    }

    /// Any other descriptor to keep across restarts, named `name`: the
    /// inherited one, or the one `create` opens in the first generation.
    ///
    /// Names are the service's own, one per descriptor in a generation, and
    /// shared with the listeners; names starting with `shellflip.` are the
    /// runtime's and refused ([`Error::Fd`]), as they are for listeners.
    pub fn fd(
        &self,
        name: &str,
        create: impl FnOnce() -> std::io::Result<OwnedFd>,
    ) -> Result<OwnedFd, Error> {
        let mut registry = self.generation.registry();
        let fd = registry.claim_for_service(name)?.map_or_else(create, Ok);
        let fd = fd.map_err(|e| Error::fd(name, e))?;
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
        let mut registry = self.generation.registry();
        let from_systemd = registry.is_socket_activated(name);
        let socket = match registry.claim_for_service(name)? {
            Some(fd) => {
                let socket = Socket::from(fd);
                let found = describe(&socket);
                let right_kind = socket.r#type().is_ok_and(|t| t == kind)
                    && found_matches_kind(&socket, expected);
                if !right_kind {
                    return Err(Error::WrongKind {
                        name: name.to_owned(),
                        expected,
                        found,
                    });
                }
                if kind == Type::STREAM && !is_listening(&socket) {
                    let (origin, hint) = match from_systemd {
                        true => ("systemd-passed", "; in the .socket unit, use Accept=no (the default) so that systemd passes the listening socket itself"),
                        false => ("inherited", ""),
                    };
                    return Err(Error::NotListening {
                        name: name.to_owned(),
                        origin,
                        expected,
                        found,
                        hint,
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
        socket
            .set_nonblocking(true)
            .map_err(|e| Error::io(format!("{expected} `{name}`"), e))?;
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
        if link.took_over.is_cancelled() {
            return Err(Error::NotOnProbation(
                "the previous generation has handed over already",
            ));
        }
        let reason = reason.into();
        tracing::warn!(%reason, "this generation reports itself unhealthy; the previous one takes the service back");
        // During its probation the previous generation then kills this one
        // and takes the service back.
        link.report(&crate::channel::ChildMessage::Unhealthy { reason })
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
        let successor = lock(&self.generation.successor).clone();
        match successor {
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
        let predecessor = self.generation.predecessor.as_ref();
        let arrived = predecessor.and_then(|link| link.take_connections());
        // In a first generation, or taken already: a closed channel.
        Connections::new(arrived.unwrap_or_else(|| tokio::sync::mpsc::unbounded_channel().1))
    }

    /// Resolves when this generation must stop accepting new work (its
    /// successor took over, or a stop was requested); in-flight work then
    /// has the drain timeout to finish. Accept with [`accept`](Self::accept)
    /// rather than `select!` on this and `listener.accept()`: such a loop
    /// also accepts while a successor is on probation, when this generation
    /// must not (a warning says so at the first connection it takes then).
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
        // Each poll is counted: the accept watch takes its baseline when
        // none is under way (a poll begun before a pause may still accept).
        let mut accepting = std::pin::pin!(self.accept_while_admitted(listener));
        std::future::poll_fn(|cx| {
            let _polling = self.accept_watch.polling();
            accepting.as_mut().poll(cx)
        })
        .await
    }

    async fn accept_while_admitted<L: Accept>(&self, listener: &L) -> Option<L::Connection> {
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
    /// loops that do not use [`accept`](Self::accept). Such a loop must not
    /// accept while this is [`Admission::Paused`] (a successor is on
    /// probation); [`admission_changed`](Self::admission_changed) says when
    /// to look again. A service that calls either is trusted to pause by
    /// itself: its accept loops are not watched for connections taken
    /// during a probation.
    pub fn admission(&self) -> Admission {
        self.accept_watch.consulted();
        *self.generation.admission.borrow()
    }

    /// Resolves when [`admission`](Self::admission) changes.
    pub async fn admission_changed(&self) {
        self.accept_watch.consulted();
        // A new receiver has seen the current value already.
        let _ = self.generation.admission.subscribe().changed().await;
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
        let draining = self.generation.shutdown.is_cancelled();
        draining.then(|| self.generation.drain().deadline)
    }
}

/// Starts the accept watch of this generation (see `accept_watch`): it
/// follows the admission and the service's stream listeners.
fn watch_accepts(generation: &Arc<Generation>) -> Arc<AcceptWatch> {
    let shared = Arc::new(AcceptWatch::default());
    let registry_of = Arc::downgrade(generation);
    let listeners = move || {
        let Some(generation) = registry_of.upgrade() else {
            return Vec::new();
        };
        let registry = generation.registry();
        registry
            .active()
            .filter(|(name, _)| !name.starts_with(RESERVED_PREFIX))
            .filter_map(|(name, fd)| Listener::of(name, fd))
            .collect()
    };
    let watched = Watched {
        generation: generation.number,
        admission: generation.admission.subscribe(),
        is_paused: |admission| *admission == Admission::Paused,
        shutdown: generation.shutdown.clone(),
        listeners: Arc::new(listeners),
    };
    accept_watch::start(watched, Arc::clone(&shared));
    shared
}
