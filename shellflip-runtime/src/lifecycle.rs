//! The lifecycle of one generation, top to bottom:
//!
//! 1. [`run`] adopts the channel from the previous generation (if any) or
//!    the sockets systemd passed (socket activation, first generation only),
//!    applies the `SHELLFLIP_*` overrides, forks the spawner (see
//!    `spawner`) while the process still has a single thread, receives the
//!    listeners and the state, and builds the Tokio runtime.
//! 2. The [`Supervisor`] task installs the signal handlers and owns the
//!    control socket; the service's `main` runs beside it.
//! 3. When `main` calls `ready()`, it writes the pid file and tells the
//!    previous generation (which then drains and exits) at once; the
//!    supervisor then tells systemd in the first generation, closes inherited descriptors nobody
//!    claimed, and starts answering the control socket.
//! 4. A restart request tells systemd `RELOADING=1` and has the spawner
//!    start the next generation (see `parent`); on its READY this generation tells systemd
//!    the new `MAINPID`, answers the initiator, stops accepting, cancels the
//!    shutdown token and drains; on failure it rewrites the pid file, tells
//!    systemd `READY=1` again, reports the reason and carries on.
//! 5. A stop (SIGTERM, SIGINT, `stop` request, or `main` returning) tells
//!    systemd `STOPPING=1`, drains the same way and removes the control
//!    socket and the pid file.

use std::future::Future;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::channel::{ChildMessage, Lineage, Received};
use crate::child::{self, ParentLink};
use crate::config::{Config, RuntimeFlavor, SpawnerMode, StateMismatch};
use crate::context::Context;
use crate::control::protocol::{self, LastRestart, Request, Response, RestartSuccess, Status};
use crate::control::server::{self as control, ControlCommand, ControlSocketFile};
use crate::error::{Error, RestartError};
use crate::parent::{self, EncodedStateParts, Launch, NewGeneration, Plan, Spawner};
use crate::pidfile::PidFile;
use crate::registry::{Registry, CONTROL_FD_NAME, STATE_FD_PREFIX};
use crate::shutdown::{self, SignalRequest, Signals};
use crate::spawner::{self, SpawnerClient, SpawnerProcess};
use crate::state::{decode_envelope, EncodedState, HandoverState, StateError, StateFds};
use crate::sync::lock;
use crate::systemd::{self, Notification, Notifier};

/// What a service's `main` may return: `()` or `Result<(), E>` with a
/// displayable error. An error makes the process exit with status 1 (and,
/// in a new generation that was not ready yet, fails the restart with the
/// error's message).
#[diagnostic::on_unimplemented(
    message = "a restartable `main` must return `()` or `Result<(), E>` with `E: Display`, not `{Self}`",
    label = "this return type is not supported"
)]
pub trait MainResult {
    /// `Err` with a message when the service failed.
    fn into_main_result(self) -> Result<(), String>;
}

impl MainResult for () {
    fn into_main_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: std::fmt::Display> MainResult for Result<(), E> {
    fn into_main_result(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

type StateEncoder = Box<dyn Fn(&mut StateFds) -> Result<EncodedState, StateError> + Send + Sync>;

/// Why this generation is ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// A successor is ready: drain and exit, keep the control socket file.
    HandedOver,
    /// Stopped: drain, exit, remove the control socket file.
    Stopped,
}

/// When shutdown began, when the drain must end, and why.
#[derive(Debug, Clone, Copy)]
struct Drain {
    began: Instant,
    deadline: Instant,
    ending: Ending,
}

/// What the generation's parts share: the fd registry, readiness, the
/// shutdown token and the tracked tasks.
pub(crate) struct Service {
    pub(crate) generation: u64,
    pub(crate) state_was_handed_over: bool,
    registry: Mutex<Registry>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tracker: TaskTracker,
    ready: watch::Sender<bool>,
    state_encoder: Mutex<Option<StateEncoder>>,
    /// The control socket file as the previous generation recorded it.
    inherited_control_file: Option<ControlSocketFile>,
    /// The control socket, once opened, until the supervisor serves it.
    control: Mutex<Option<OpenControl>>,
    /// Set when shutdown begins: when the drain must end.
    drain_deadline: Mutex<Option<Drain>>,
    /// Cancelled when the service's `main` has returned.
    main_returned: CancellationToken,
    main_outcome: Mutex<Option<Result<(), String>>>,
    /// The link to the previous generation (a new generation until the
    /// previous one is gone).
    parent: Mutex<Option<Arc<ParentLink>>>,
    /// The pid file, written by the ready generation.
    pid_file: Option<PidFile>,
    /// What `ready()` already did about READY, for the supervisor.
    ready_report: Mutex<ReadyReport>,
}

/// How far `ready()` got with telling the previous generation.
#[derive(Debug, Default)]
enum ReadyReport {
    /// Nothing done: the supervisor writes the pid file and reports.
    #[default]
    NotSent,
    /// The pid file is written and READY sent, but for these bytes.
    Sent { rest: Vec<u8> },
    /// Sending failed: the previous generation is probably gone.
    Failed(String),
}

/// A control socket opened but not served yet.
pub(crate) struct OpenControl {
    path: std::path::PathBuf,
    file: ControlSocketFile,
    listener: StdUnixListener,
}

/// Adopts the inherited control socket or binds it at `path`, and registers
/// it for the next generation.
fn open_control_socket(
    registry: &mut Registry,
    inherited_file: Option<&ControlSocketFile>,
    path: &std::path::Path,
) -> Result<OpenControl, Error> {
    let (listener, file) = match (registry.claim(CONTROL_FD_NAME), inherited_file) {
        (Some(fd), Some(file)) => (StdUnixListener::from(fd), file.clone()),
        (Some(fd), None) => {
            let file = ControlSocketFile::identify(path)
                .map_err(|e| Error::io(format!("control socket {}", path.display()), e))?;
            (StdUnixListener::from(fd), file)
        }
        (None, _) => control::bind_control_socket(path)?,
    };
    registry.register(CONTROL_FD_NAME, listener.as_fd())?;
    Ok(OpenControl {
        path: path.to_path_buf(),
        file,
        listener,
    })
}

impl Service {
    /// Opens the control socket at `path` unless one is open already (the
    /// attribute's or SHELLFLIP_CONTROL's path takes precedence).
    pub(crate) fn open_control(&self, path: &std::path::Path) -> Result<(), Error> {
        let mut control = lock(&self.control);
        if let Some(open) = control.as_ref() {
            if open.path != path {
                tracing::info!(
                    configured = %open.path.display(),
                    asked = %path.display(),
                    "a control socket is already configured; keeping it"
                );
            }
            return Ok(());
        }
        if self.is_ready() {
            return Err(Error::ControlSocket {
                path: path.to_path_buf(),
                reason: "open the control socket before calling ready()".to_owned(),
            });
        }
        let opened = open_control_socket(
            &mut self.registry(),
            self.inherited_control_file.as_ref(),
            path,
        )?;
        *control = Some(opened);
        Ok(())
    }

    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    pub(crate) fn set_state_encoder(&self, encoder: StateEncoder) {
        *lock(&self.state_encoder) = Some(encoder);
    }

    pub(crate) fn mark_ready(&self) -> Result<(), Error> {
        if self.shutdown.is_cancelled() && !*self.ready.borrow() {
            return Err(Error::ShuttingDown);
        }
        if !*self.ready.borrow() {
            self.report_ready_now();
        }
        self.ready.send_replace(true);
        Ok(())
    }

    /// Tells the previous generation at once, on the caller's thread, rather
    /// than after a hop to the supervisor task: under load, every wake-up of
    /// another thread costs a wait for a CPU. The pid file first, so whoever
    /// learns of the successful restart finds this pid in it.
    fn report_ready_now(&self) {
        let Some(parent) = lock(&self.parent).clone() else {
            return;
        };
        // Held throughout: two racing ready() calls report once.
        let mut report = lock(&self.ready_report);
        if !matches!(*report, ReadyReport::NotSent) {
            return;
        }
        write_pid_file(self.pid_file.as_ref());
        *report = match parent.try_report(&ChildMessage::Ready) {
            Ok(rest) => ReadyReport::Sent { rest },
            Err(e) => ReadyReport::Failed(e.to_string()),
        };
    }

    fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    fn encode_state(&self) -> Result<Option<(EncodedState, StateFds)>, StateError> {
        let encoder = lock(&self.state_encoder);
        match encoder.as_ref() {
            None => Ok(None),
            Some(encode) => {
                let mut fds = StateFds::default();
                let bytes = encode(&mut fds)?;
                Ok(Some((bytes, fds)))
            }
        }
    }
}

/// Runs a restartable service: the target of `#[restartable]`.
///
/// Builds the Tokio runtime described by `config` (after applying the
/// `SHELLFLIP_*` environment overrides), hands the service's `main` a
/// [`Context`] and runs it until the service stops or hands over to its
/// successor. Returns the process's exit code.
///
/// In a new generation, a failure before `ready()` (a bad setting, state
/// from an incompatible build, `main` returning an error or panicking) is
/// reported to the previous generation, which keeps serving.
pub fn run<S, F, Fut>(config: Config, main: F) -> ExitCode
where
    S: HandoverState,
    F: FnOnce(Context<S>) -> Fut,
    Fut: Future,
    Fut::Output: MainResult,
{
    let mut times = StartupTimes {
        entered: SystemTime::now(),
        ..StartupTimes::default()
    };
    let mut channel = match child::take_channel() {
        Ok(channel) => channel,
        Err(e) => return fail_start(None, &e.to_string()),
    };
    let activated = match systemd::take_socket_activation(channel.is_none()) {
        Ok(activated) => activated,
        Err(e) => return fail_start(channel.as_mut(), &Error::from(e).to_string()),
    };
    let config = match config.apply_env() {
        Ok(config) => config,
        Err(e) => return fail_start(channel.as_mut(), &e.to_string()),
    };
    let launch = Launch::resolve();
    // Before the runtime and the service's code: the process has a single
    // thread, so the spawner can be forked safely.
    let spawner = match config.spawner {
        SpawnerMode::Inline => Err("SHELLFLIP_SPAWNER=inline".to_owned()),
        SpawnerMode::Process => spawner::start(&launch)
            .map_err(|e| format!("the spawner process could not be started: {e}")),
    };
    times.spawner_forked = SystemTime::now();
    let received = match channel.as_mut() {
        None => None,
        Some(stream) => match child::receive(stream, config.ready_timeout) {
            Ok(received) => Some(received),
            Err(e) => return fail_start(channel.as_mut(), &e.to_string()),
        },
    };
    times.received = SystemTime::now();
    let runtime = match build_runtime(&config) {
        Ok(runtime) => runtime,
        Err(e) => return fail_start(channel.as_mut(), &e.to_string()),
    };
    times.runtime_built = SystemTime::now();
    let start = Start {
        times,
        launch,
        spawner,
        channel,
        received,
        activated,
    };
    let code = runtime.block_on(serve::<S, F, Fut>(config, start, main));
    runtime.shutdown_background();
    tracing::debug!("process exit");
    code
}

fn fail_start(channel: Option<&mut StdUnixStream>, reason: &str) -> ExitCode {
    if let Some(stream) = channel {
        child::report_failure_blocking(stream, reason);
    }
    eprintln!("shellflip: {reason}");
    tracing::error!(reason, "start-up failed");
    ExitCode::FAILURE
}

fn build_runtime(config: &Config) -> Result<tokio::runtime::Runtime, Error> {
    let mut builder = match config.flavor {
        RuntimeFlavor::MultiThread => tokio::runtime::Builder::new_multi_thread(),
        RuntimeFlavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
    };
    if let (RuntimeFlavor::MultiThread, Some(threads)) = (config.flavor, config.worker_threads) {
        builder.worker_threads(threads);
    }
    builder.enable_all().build().map_err(Error::Runtime)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// When the steps of start-up before the runtime ended (logged at
/// readiness, as the subscriber is only installed by the service's main).
#[derive(Debug, Clone, Copy)]
struct StartupTimes {
    entered: SystemTime,
    spawner_forked: SystemTime,
    received: SystemTime,
    runtime_built: SystemTime,
}

impl Default for StartupTimes {
    fn default() -> Self {
        StartupTimes {
            entered: UNIX_EPOCH,
            spawner_forked: UNIX_EPOCH,
            received: UNIX_EPOCH,
            runtime_built: UNIX_EPOCH,
        }
    }
}

/// Milliseconds from `from` to `to` (negative if the clock stepped back).
fn ms_between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -e.duration().as_secs_f64() * 1000.0,
    }
}

/// What start-up found before the runtime was built.
struct Start {
    times: StartupTimes,
    launch: Launch,
    /// The spawner forked at start-up, or why there is none.
    spawner: Result<SpawnerProcess, String>,
    /// The channel to the previous generation (`None` in the first).
    channel: Option<StdUnixStream>,
    /// What the previous generation handed over.
    received: Option<Received>,
    /// The sockets systemd passed to the first generation, by name.
    activated: Vec<(String, OwnedFd)>,
}

/// Everything after start-up, inside the runtime.
async fn serve<S, F, Fut>(config: Config, start: Start, main: F) -> ExitCode
where
    S: HandoverState,
    F: FnOnce(Context<S>) -> Fut,
    Fut: Future,
    Fut::Output: MainResult,
{
    let started = Instant::now();
    let Start {
        times,
        launch,
        spawner,
        mut channel,
        received,
        activated,
    } = start;
    let spawner = match spawner.and_then(|process| {
        SpawnerClient::connect(process)
            .map_err(|e| format!("could not talk to the spawner process: {e}"))
    }) {
        Ok(client) => Spawner::Process(client),
        Err(reason) => {
            if config.spawner == SpawnerMode::Process {
                tracing::warn!(%reason, "new generations will be spawned by the service process itself");
            }
            Spawner::Inline { reason }
        }
    };
    let restart_began = received
        .as_ref()
        .map(|r| r.header.restart_began_unix_us)
        .filter(|&us| us > 0)
        .map(|us| UNIX_EPOCH + Duration::from_micros(us));
    let (generation, lineage, fds, state_bytes) = match received {
        Some(r) => (r.header.generation, r.header.lineage, r.fds, r.state),
        None => (
            1,
            Lineage {
                started_at_unix_ms: unix_ms(),
                systemd_sockets: activated.iter().map(|(name, _)| name.clone()).collect(),
                ..Lineage::default()
            },
            activated,
            None,
        ),
    };
    let mut registry = Registry::new(fds);
    registry.mark_socket_activated(&lineage.systemd_sockets);

    // The handed-over state, decoded before the service's code runs.
    let state_fds = StateFds::from_vec(registry.claim_prefixed(STATE_FD_PREFIX));
    let state: Option<S> = match state_bytes {
        None => None,
        Some(bytes) => {
            let mut state_fds = state_fds;
            match decode_envelope::<S>(&bytes, &mut state_fds) {
                Ok(state) => Some(state),
                Err(e) if e.is_mismatch() && config.on_state_mismatch == StateMismatch::Fresh => {
                    tracing::warn!(error = %e, "handed-over state is incompatible; starting with fresh state as configured");
                    None
                }
                Err(e) => return fail_start(channel.as_mut(), &e.to_string()),
            }
        }
    };

    // The control socket, when configured (attribute or SHELLFLIP_CONTROL):
    // inherited, or bound by the first generation. Otherwise the service may
    // open it from its main with `Context::control_socket`.
    let control_file = lineage.control_socket_file.clone();
    let mut control = None;
    if let Some(path) = config.control_socket.as_deref() {
        match open_control_socket(&mut registry, control_file.as_ref(), path) {
            Ok(opened) => control = Some(opened),
            Err(e) => return fail_start(channel.as_mut(), &e.to_string()),
        }
    }

    let signals = match Signals::install(config.restart_signal) {
        Ok(signals) => signals,
        Err(e) => {
            let e = Error::io("could not install signal handlers", e);
            return fail_start(channel.as_mut(), &e.to_string());
        }
    };

    let parent_gone = CancellationToken::new();
    let parent = match channel {
        None => {
            parent_gone.cancel();
            None
        }
        Some(stream) => match ParentLink::start(stream, parent_gone.clone()) {
            Ok(link) => Some(Arc::new(link)),
            Err(e) => {
                tracing::warn!(error = %e, "lost the channel to the previous generation");
                parent_gone.cancel();
                None
            }
        },
    };

    let (ready_tx, ready_rx) = watch::channel(false);
    let service = Arc::new(Service {
        generation,
        state_was_handed_over: state.is_some(),
        registry: Mutex::new(registry),
        shutdown: CancellationToken::new(),
        tracker: TaskTracker::new(),
        ready: ready_tx,
        state_encoder: Mutex::new(None),
        inherited_control_file: control_file,
        control: Mutex::new(control),
        drain_deadline: Mutex::new(None),
        main_returned: CancellationToken::new(),
        main_outcome: Mutex::new(None),
        parent: Mutex::new(parent.clone()),
        pid_file: config.pid_file.as_ref().map(PidFile::new),
        ready_report: Mutex::new(ReadyReport::NotSent),
    });
    let context = Context::<S>::new(Arc::clone(&service), state);

    let (control_tx, control_rx) = mpsc::channel(64);
    let (outcome_tx, outcome_rx) = mpsc::channel(1);
    let control_connections = TaskTracker::new();
    let pid_file = config.pid_file.as_ref().map(PidFile::new);
    let supervisor = Supervisor {
        service: Arc::clone(&service),
        systemd: Notifier::from_env(),
        pid_file: pid_file.clone(),
        ready_timeout: config.ready_timeout,
        ready_grace: config.ready_grace,
        drain_timeout: config.drain_timeout,
        launch,
        spawner,
        phase: Phase::Starting,
        started,
        startup_times: times,
        restart_began,
        lineage,
        parent,
        parent_gone,
        control: None,
        control_tx,
        control_rx,
        control_connections: control_connections.clone(),
        restart: None,
        outcome_tx,
        outcome_rx,
        successor: None,
        ready_rx,
        signals,
    };
    let supervisor = tokio::spawn(supervisor.run());
    tracing::info!(generation, pid = std::process::id(), "generation starting");

    // The service's main, until it returns or shutdown begins.
    let mut main_future = CatchUnwind(Box::pin(main(context)));
    let finished_first = tokio::select! {
        outcome = &mut main_future => Some(outcome),
        _ = service.shutdown.cancelled() => None,
    };
    let main_outcome = match finished_first {
        Some(outcome) => Some(outcome),
        None => {
            let deadline = drain_of(&service).deadline;
            match tokio::time::timeout_at(deadline, &mut main_future).await {
                Ok(outcome) => Some(outcome),
                Err(_) => {
                    tracing::warn!("main did not return within the drain timeout; exiting anyway");
                    None
                }
            }
        }
    };
    let main_outcome = main_outcome.map(|o| o.and_then(MainResult::into_main_result));
    if let Some(Err(reason)) = &main_outcome {
        tracing::error!(%reason, "the service's main failed");
    }
    *lock(&service.main_outcome) = main_outcome.clone();
    service.main_returned.cancel();

    // Drain: tracked tasks and control replies, until the deadline.
    service.shutdown.cancelled().await;
    let Drain {
        began,
        deadline,
        ending,
    } = drain_of(&service);
    let report = shutdown::drain(&service.tracker, began, deadline).await;
    control_connections.close();
    let _ = tokio::time::timeout_at(deadline, control_connections.wait()).await;
    if report.tasks_cut > 0 {
        tracing::warn!(
            tasks_cut = report.tasks_cut,
            "drain timeout reached; in-flight tasks are cut"
        );
    }
    tracing::info!(
        generation,
        ?ending,
        drain_ms = report.duration.as_secs_f64() * 1000.0,
        tasks_cut = report.tasks_cut,
        "generation exiting"
    );
    let finished = match tokio::time::timeout(Duration::from_secs(1), supervisor).await {
        Ok(Ok(finished)) => Some(finished),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the supervisor task failed");
            None
        }
        Err(_) => {
            tracing::warn!("the supervisor did not finish within 1s of the drain; exiting anyway");
            None
        }
    };
    if let (Ending::Stopped, Some(finished)) = (ending, &finished) {
        if let Some(file) = &finished.control_file {
            control::remove_control_socket(file);
        }
    }
    if let (Ending::Stopped, Some(pid_file)) = (ending, &pid_file) {
        // Only if it still names this process: never another's pid file.
        match pid_file.remove_if_names(std::process::id()) {
            Ok(removed) => tracing::debug!(removed, path = %pid_file.path().display(), "pid file"),
            Err(e) => tracing::warn!(error = %e, "could not remove the pid file"),
        }
    }
    match main_outcome {
        Some(Err(_)) => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    }
}

fn drain_of(service: &Service) -> Drain {
    lock(&service.drain_deadline).unwrap_or_else(|| {
        let now = Instant::now();
        Drain {
            began: now,
            deadline: now,
            ending: Ending::Stopped,
        }
    })
}

/// Points the pid file (if any) at this process.
fn write_pid_file(pid_file: Option<&PidFile>) {
    let Some(pid_file) = pid_file else {
        return;
    };
    match pid_file.write(std::process::id()) {
        Ok(()) => tracing::debug!(path = %pid_file.path().display(), "pid file written"),
        Err(e) => tracing::warn!(error = %e, "could not write the pid file"),
    }
}

/// Encodes the service's state (if it has one) on the blocking pool; with
/// its descriptors, named for the handover.
async fn encode_state(service: Arc<Service>) -> Result<EncodedStateParts, RestartError> {
    let encoded = tokio::task::spawn_blocking(move || service.encode_state())
        .await
        .map_err(|e| RestartError::Handover {
            pid: 0,
            reason: format!("encoding the state failed: {e}"),
        })??;
    Ok(encoded.map(|(bytes, state_fds)| {
        let fds = state_fds
            .into_vec()
            .into_iter()
            .map(|(name, fd)| (format!("{STATE_FD_PREFIX}{name}"), fd))
            .collect();
        (bytes, fds)
    }))
}

/// Polls a future, turning a panic into an error message.
struct CatchUnwind<F: Future>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic with a non-text payload".to_owned());
                Poll::Ready(Err(format!("the service panicked: {message}")))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Starting,
    Serving,
    Restarting,
    Draining,
    Stopping,
}

impl Phase {
    fn as_protocol(self) -> protocol::Phase {
        match self {
            Phase::Starting => protocol::Phase::Starting,
            Phase::Serving => protocol::Phase::Serving,
            Phase::Restarting => protocol::Phase::Restarting,
            Phase::Draining => protocol::Phase::Draining,
            Phase::Stopping => protocol::Phase::Stopping,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Signal,
    Control,
}

struct ControlServer {
    file: ControlSocketFile,
    stop_accepting: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// A restart's result, with the initiator's reply channel when the
/// supervisor is to answer it.
type RestartOutcome = (
    Result<NewGeneration, RestartError>,
    Option<oneshot::Sender<Response>>,
);

struct RunningRestart {
    trigger: Trigger,
    started: Instant,
    abort: CancellationToken,
}

struct Finished {
    control_file: Option<ControlSocketFile>,
    /// Kept until the process exits: its channel closing is what tells the
    /// new generation that this one is gone.
    _successor: Option<NewGeneration>,
}

/// The supervisor of one generation: one task that owns the phase and
/// handles every event in order, so two restarts can never overlap.
struct Supervisor {
    service: Arc<Service>,
    /// Notifications to systemd (nothing without `NOTIFY_SOCKET`).
    systemd: Notifier,
    pid_file: Option<PidFile>,
    ready_timeout: Duration,
    ready_grace: Duration,
    drain_timeout: Duration,
    launch: Launch,
    spawner: Spawner,
    phase: Phase,
    started: Instant,
    /// Start-up steps before the runtime.
    startup_times: StartupTimes,
    /// When the previous generation began the restart that started this
    /// one.
    restart_began: Option<SystemTime>,
    lineage: Lineage,
    parent: Option<Arc<ParentLink>>,
    parent_gone: CancellationToken,
    control: Option<ControlServer>,
    control_tx: mpsc::Sender<ControlCommand>,
    control_rx: mpsc::Receiver<ControlCommand>,
    control_connections: TaskTracker,
    restart: Option<RunningRestart>,
    outcome_tx: mpsc::Sender<RestartOutcome>,
    outcome_rx: mpsc::Receiver<RestartOutcome>,
    successor: Option<NewGeneration>,
    ready_rx: watch::Receiver<bool>,
    signals: Signals,
}

impl Supervisor {
    async fn run(mut self) -> Finished {
        let main_returned = self.service.main_returned.clone();
        let mut main_seen = false;
        let mut parent_seen = self.parent_gone.is_cancelled();
        loop {
            // Biased, readiness first: a restart request that arrives just
            // after main called ready() must find this generation serving,
            // not "not ready yet".
            tokio::select! {
                biased;
                Ok(()) = self.ready_rx.changed(), if self.phase == Phase::Starting => {
                    if *self.ready_rx.borrow_and_update() {
                        self.on_ready().await;
                    }
                }
                Some((outcome, reply)) = self.outcome_rx.recv() => self.on_outcome(outcome, reply).await,
                _ = self.parent_gone.cancelled(), if !parent_seen => {
                    parent_seen = true;
                    self.on_parent_gone();
                }
                _ = main_returned.cancelled(), if !main_seen => {
                    main_seen = true;
                    self.on_main_returned().await;
                    if self.restart.is_none() {
                        break;
                    }
                }
                Some(command) = self.control_rx.recv() => self.on_control(command).await,
                request = self.signals.next() => match request {
                    SignalRequest::Restart => self.request_restart(Trigger::Signal, None),
                    SignalRequest::Stop(signal) => {
                        tracing::info!(signal = signal.as_str(), "stop requested by signal");
                        self.begin_stop().await;
                    }
                },
            }
            if main_seen && self.restart.is_none() {
                break;
            }
        }
        Finished {
            control_file: self.control.as_ref().map(|c| c.file.clone()),
            _successor: self.successor.take(),
        }
    }

    async fn on_control(&mut self, command: ControlCommand) {
        match command.request {
            Request::Restart { .. } => self.request_restart(Trigger::Control, Some(command.reply)),
            Request::Status => {
                let _ = command.reply.send(Response::Status(self.status()));
            }
            Request::Stop => {
                let _ = command.reply.send(Response::Stopping {
                    pid: std::process::id(),
                });
                tracing::info!("stop requested on the control socket");
                self.begin_stop().await;
            }
        }
    }

    fn status(&self) -> Status {
        Status {
            pid: std::process::id(),
            generation: self.service.generation,
            phase: self.phase.as_protocol(),
            uptime_secs: self.started.elapsed().as_secs_f64(),
            restarts: self.lineage.restarts,
            failed_restarts: self.lineage.failed_restarts,
            last_restart: self.lineage.last_restart.clone(),
            spawner_pid: self.spawner.pid(),
        }
    }

    fn refuse(reply: Option<oneshot::Sender<Response>>, error: &RestartError) {
        tracing::info!(reason = %error, "restart refused");
        if let Some(reply) = reply {
            let _ = reply.send(Response::RestartFailed {
                kind: error.kind().to_owned(),
                reason: error.to_string(),
            });
        }
    }

    fn request_restart(&mut self, trigger: Trigger, reply: Option<oneshot::Sender<Response>>) {
        let refusal = match self.phase {
            Phase::Starting => RestartError::NotReady("it has not reported ready yet".to_owned()),
            // Handed over and draining: the restart is not over until this
            // generation has exited.
            Phase::Restarting | Phase::Draining => RestartError::InProgress,
            Phase::Stopping => RestartError::ShuttingDown,
            Phase::Serving if !self.parent_gone.is_cancelled() => RestartError::InProgress,
            Phase::Serving => return self.start_restart(trigger, reply),
        };
        if trigger == Trigger::Signal && matches!(self.phase, Phase::Serving | Phase::Restarting) {
            // Under Type=notify-reload, systemd sent this signal and waits
            // for RELOADING=1 then READY=1: answer now rather than let the
            // reload hang until TimeoutStartSec=.
            let status = format!(
                "serving: generation {}, pid {}; a restart was refused: {refusal}",
                self.service.generation,
                std::process::id()
            );
            self.systemd
                .send(&Notification::reloading(systemd::monotonic_usec(), &status));
            self.systemd.send(&Notification::ready(&status));
        }
        Self::refuse(reply, &refusal);
    }

    fn on_parent_gone(&mut self) {
        tracing::debug!("the previous generation is gone");
        self.parent = None;
        *lock(&self.service.parent) = None;
    }

    fn start_restart(&mut self, trigger: Trigger, reply: Option<oneshot::Sender<Response>>) {
        let started = Instant::now();
        self.systemd.send(&Notification::reloading(
            systemd::monotonic_usec(),
            &format!(
                "restarting: starting generation {}",
                self.service.generation + 1
            ),
        ));
        let plan = match self.plan() {
            Ok(plan) => plan,
            Err(error) => {
                self.record_failure(started, &error);
                self.back_to_serving(&error);
                Self::refuse(reply, &error);
                return;
            }
        };
        tracing::info!(
            ?trigger,
            generation = plan.generation,
            spawner = %self.spawner.describe(),
            "restart started"
        );
        self.phase = Phase::Restarting;
        let abort = CancellationToken::new();
        self.restart = Some(RunningRestart {
            trigger,
            started,
            abort: abort.clone(),
        });
        let launch = self.launch.clone();
        let spawner = self.spawner.clone();
        let outcome_tx = self.outcome_tx.clone();
        let service = Arc::clone(&self.service);
        tokio::spawn(async move {
            // Encoding a large state takes a while (about 130 ms for 100 MB):
            // done on the blocking pool, not in the supervisor, which keeps
            // answering status requests and signals meanwhile, and while the
            // new process starts.
            let outcome =
                parent::spawn_next(&spawner, &launch, plan, encode_state(service), abort).await;
            match (&outcome, reply) {
                (Ok(next), Some(reply)) => {
                    // The initiator hears of a success from here, a hop
                    // sooner than through the supervisor, but only once
                    // the outcome is queued for it: any request the
                    // initiator sends next is handled after the outcome.
                    let response = Response::Restarted(RestartSuccess {
                        pid: next.pid,
                        generation: next.generation,
                        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
                    });
                    let _ = outcome_tx.send((outcome, None)).await;
                    let _ = reply.send(response);
                }
                // A failure is answered by the supervisor, after it has
                // rewritten the pid file and told systemd.
                (_, reply) => {
                    let _ = outcome_tx.send((outcome, reply)).await;
                }
            }
        });
    }

    /// What the restart hands over, but the state (see [`encode_state`]).
    fn plan(&self) -> Result<Plan, RestartError> {
        let (fds, systemd_sockets) = {
            let registry = self.service.registry();
            (registry.snapshot(), registry.socket_activated_in_use())
        };
        let fds = fds.map_err(|e| RestartError::Handover {
            pid: 0,
            reason: format!("could not duplicate the listeners: {e}"),
        })?;
        // The lineage as the new generation will see it if it becomes ready.
        let mut lineage = self.lineage.clone();
        lineage.systemd_sockets = systemd_sockets;
        lineage.restarts += 1;
        lineage.last_restart = Some(LastRestart {
            ok: true,
            at_unix_ms: unix_ms(),
            duration_ms: 0.0,
            pid: None,
            generation: Some(self.service.generation + 1),
            error: None,
        });
        Ok(Plan {
            generation: self.service.generation + 1,
            fds,
            lineage,
            ready_timeout: self.ready_timeout,
            ready_grace: self.ready_grace,
        })
    }

    fn record_failure(&mut self, started: Instant, error: &RestartError) {
        self.lineage.failed_restarts += 1;
        self.lineage.last_restart = Some(LastRestart {
            ok: false,
            at_unix_ms: unix_ms(),
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            pid: None,
            generation: None,
            error: Some(error.to_string()),
        });
    }

    async fn on_outcome(
        &mut self,
        outcome: Result<NewGeneration, RestartError>,
        reply: Option<oneshot::Sender<Response>>,
    ) {
        let Some(restart) = self.restart.take() else {
            return;
        };
        let elapsed = restart.started.elapsed();
        match outcome {
            Ok(next) => {
                let duration_ms = elapsed.as_secs_f64() * 1000.0;
                let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                tracing::info!(
                    trigger = ?restart.trigger,
                    pid = next.pid,
                    generation = next.generation,
                    spawn_ms = ms(next.timings.spawned),
                    handover_ms = ms(next.timings.handover_sent),
                    ready_ms = ms(next.timings.ready),
                    duration_ms,
                    "restart succeeded; handing over"
                );
                // Sent while this process is still the main one, before it
                // exits: systemd follows the new generation from now on.
                self.systemd.send(&Notification::handed_over(
                    next.pid,
                    &format!("serving: generation {}, pid {}", next.generation, next.pid),
                ));
                self.phase = Phase::Draining;
                // (The restart task has answered the initiator.)
                if let Some(reply) = reply {
                    let _ = reply.send(Response::Restarted(RestartSuccess {
                        pid: next.pid,
                        generation: next.generation,
                        duration_ms,
                    }));
                }
                self.stop_accepting_control().await;
                self.successor = Some(next);
                self.begin_shutdown(Ending::HandedOver);
            }
            Err(error) => {
                tracing::error!(
                    trigger = ?restart.trigger,
                    reason = %error,
                    duration_ms = elapsed.as_secs_f64() * 1000.0,
                    "restart failed; this generation keeps serving"
                );
                self.record_failure(restart.started, &error);
                if self.phase == Phase::Restarting {
                    self.phase = Phase::Serving;
                    self.back_to_serving(&error);
                } else {
                    // Aborted by a stop: the killed successor may have
                    // written the pid file; this generation removes it when
                    // its drain ends.
                    self.write_pid_file();
                }
                if let Some(reply) = reply {
                    let _ = reply.send(Response::RestartFailed {
                        kind: error.kind().to_owned(),
                        reason: error.to_string(),
                    });
                }
            }
        }
    }

    async fn on_ready(&mut self) {
        let pid = std::process::id();
        let generation = self.service.generation;
        tracing::info!(
            generation,
            pid,
            startup_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            "ready"
        );
        let times = self.startup_times;
        let now = SystemTime::now();
        tracing::debug!(
            restart_to_run_ms = self
                .restart_began
                .map(|began| ms_between(began, times.entered)),
            spawner_fork_ms = ms_between(times.entered, times.spawner_forked),
            receive_ms = ms_between(times.spawner_forked, times.received),
            runtime_ms = ms_between(times.received, times.runtime_built),
            main_to_ready_ms = ms_between(times.runtime_built, now),
            restart_to_ready_ms = self.restart_began.map(|began| ms_between(began, now)),
            "start-up phases"
        );
        let already = std::mem::take(&mut *lock(&self.service.ready_report));
        let reported = match (already, self.parent.as_ref()) {
            (_, None) => {
                self.write_pid_file();
                Ok(false)
            }
            // ready() wrote the pid file and sent READY (or most of it).
            (ReadyReport::Sent { rest }, Some(parent)) => parent
                .send(&rest)
                .await
                .map(|()| true)
                .map_err(|e| e.to_string()),
            (ReadyReport::Failed(reason), Some(_)) => Err(reason),
            (ReadyReport::NotSent, Some(parent)) => {
                // Before READY reaches the previous generation: whoever
                // learns that the restart succeeded finds this pid in it.
                self.write_pid_file();
                parent
                    .report(&ChildMessage::Ready)
                    .await
                    .map(|()| true)
                    .map_err(|e| e.to_string())
            }
        };
        let told_parent = match reported {
            Ok(told) => told,
            Err(reason) => {
                tracing::warn!(error = %reason, "could not tell the previous generation that this one is ready; it is probably gone");
                false
            }
        };
        let status = format!("serving: generation {generation}, pid {pid}");
        if generation == 1 {
            self.systemd.send(&Notification::ready(&status));
        } else if !told_parent {
            // The previous generation would have sent MAINPID; it is gone.
            self.systemd.send(&Notification::handed_over(pid, &status));
        }
        if self.service.generation > 1 {
            // The restart that started this generation succeeded.
            if let Some(last) = self.lineage.last_restart.as_mut() {
                last.pid = Some(std::process::id());
                last.duration_ms = unix_ms().saturating_sub(last.at_unix_ms) as f64;
            }
        }
        for name in self.service.registry().close_unclaimed() {
            tracing::warn!(
                name,
                "an inherited descriptor was not claimed by this generation; closed it"
            );
        }
        if self.phase == Phase::Starting {
            self.phase = Phase::Serving;
        }
        self.start_accepting_control();
    }

    fn start_accepting_control(&mut self) {
        let Some(open) = lock(&self.service.control).take() else {
            return;
        };
        self.lineage.control_socket_file = Some(open.file.clone());
        let control = self.control.insert(ControlServer {
            file: open.file,
            stop_accepting: CancellationToken::new(),
            task: None,
        });
        let listener = open.listener;
        let listener = match listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixListener::from_std(listener))
        {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, "could not serve the control socket");
                return;
            }
        };
        control.task = Some(tokio::spawn(control::serve(
            listener,
            self.control_tx.clone(),
            control.stop_accepting.clone(),
            self.control_connections.clone(),
        )));
    }

    async fn stop_accepting_control(&mut self) {
        if let Some(control) = self.control.as_mut() {
            control.stop_accepting.cancel();
            if let Some(task) = control.task.take() {
                let _ = task.await;
            }
        }
    }

    async fn begin_stop(&mut self) {
        match self.phase {
            Phase::Draining | Phase::Stopping => return,
            _ => {}
        }
        if let Some(restart) = &self.restart {
            restart.abort.cancel();
        }
        self.phase = Phase::Stopping;
        // A new generation that never became ready is not the service in
        // systemd's eyes: its end is the old generation's business.
        let is_main = self.service.generation == 1 || self.service.is_ready();
        if is_main {
            self.systemd.send(&Notification::stopping(
                systemd::drain_extension(self.drain_timeout),
                &format!(
                    "stopping: draining for up to {}",
                    humantime::format_duration(self.drain_timeout)
                ),
            ));
        }
        self.stop_accepting_control().await;
        self.begin_shutdown(Ending::Stopped);
        if is_main && self.systemd.is_enabled() {
            let deadline = drain_of(&self.service).deadline;
            tokio::spawn(systemd::keep_extending_stop_timeout(
                self.systemd.clone(),
                deadline,
            ));
        }
    }

    /// After a failed restart: this generation serves again. The pid file
    /// is rewritten (it names this process) and systemd hears `READY=1`.
    fn back_to_serving(&self, error: &RestartError) {
        self.write_pid_file();
        self.systemd.send(&Notification::ready(&format!(
            "serving: generation {}, pid {}; the last restart failed: {error}",
            self.service.generation,
            std::process::id()
        )));
    }

    fn write_pid_file(&self) {
        write_pid_file(self.pid_file.as_ref());
    }

    fn begin_shutdown(&mut self, ending: Ending) {
        let began = Instant::now();
        {
            let mut slot = lock(&self.service.drain_deadline);
            if slot.is_none() {
                *slot = Some(Drain {
                    began,
                    deadline: began + self.drain_timeout,
                    ending,
                });
            }
        }
        self.service.registry().close_all();
        self.service.shutdown.cancel();
    }

    async fn on_main_returned(&mut self) {
        if !matches!(self.phase, Phase::Draining | Phase::Stopping) {
            tracing::info!("the service's main returned; stopping");
        }
        let outcome = lock(&self.service.main_outcome).clone();
        if !self.service.is_ready() {
            if let Some(parent) = self.parent.as_mut() {
                let reason = match outcome {
                    Some(Err(reason)) => reason,
                    _ => "main returned before calling ready()".to_owned(),
                };
                if let Err(e) = parent.report(&ChildMessage::Failed { reason }).await {
                    tracing::debug!(error = %e, "could not report the failure to the previous generation");
                }
            }
        }
        self.begin_stop().await;
    }
}
