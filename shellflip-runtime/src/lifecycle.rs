//! The life of one generation, top to bottom ([`run`]):
//!
//! 1. Before the Tokio runtime exists, with a single thread: adopt the
//!    channel from the previous generation (`child`), or the sockets systemd
//!    passed (first generation only); apply the `SHELLFLIP_*` overrides; fork
//!    the spawner; receive the listeners and the state; build the runtime.
//! 2. Inside the runtime ([`serve`]): decode the state, open the control
//!    socket, install the signal handlers, and start the `supervisor` task
//!    beside the service's `main`.
//! 3. `main` calls `ready()` (see `generation`); the supervisor takes it
//!    from there: restarts (`parent`), stops, the control socket.
//! 4. When shutdown begins (a successor is ready, or a stop), `main` returns
//!    or is given up on at the drain deadline; the tracked tasks drain; the
//!    control socket file and the pid file are removed at a stop; the
//!    process exits.
//!
//! Any failure before `ready()` in a new generation is reported to the
//! previous generation, which keeps serving and tells whoever asked.

use std::future::Future;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::channel::{Lineage, Received};
use crate::channel::{StateOffer, StateReport};
use crate::child::{self, PredecessorLink};
use crate::config::{Config, RuntimeFlavor, SpawnerMode, StateMismatch};
use crate::context::Context;
use crate::control::server as control;
use crate::error::Error;
use crate::generation::{open_control_socket, Ending, Generation, GenerationParts};
use crate::keeper::{self, Role};
use crate::launch::Launch;
use crate::pidfile::PidFile;
use crate::registry::{Registry, STATE_FD_PREFIX};
use crate::shutdown::{self, Signals};
use crate::spawner::{self, Spawner, SpawnerClient, SpawnerProcess};
use crate::state::{decode_envelope_with_report, HandoverState, StateFds};
use crate::supervisor::{Limits, Supervisor, SupervisorParts};
use crate::systemd::{self, Passed};
use crate::timing::{unix_ms, StartupTimes};

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
///
/// As PID 1 (a container), under an init that exits with its child
/// (`tini`, `dumb-init`), or with `SHELLFLIP_KEEPER=on`, the process
/// `run` starts in stays as a *keeper* and generation 1 runs as its
/// child: the keeper reaps orphans, forwards signals to the serving
/// generation and returns the last serving generation's exit code from
/// `run` when the service is over; it never runs `main`. See
/// `docs/containers.md`. Call `run` first thing in `main`.
pub fn run<S, F, Fut>(config: Config, main: F) -> ExitCode
where
    S: HandoverState,
    F: FnOnce(Context<S>) -> Fut,
    Fut: Future,
    Fut::Output: MainResult,
{
    // As PID 1 of a container, or under an init that exits with its child,
    // this process stays as the keeper and generation 1 runs as its child
    // (see `keeper`). Before anything else: it must fork with one thread.
    match keeper::start(&config) {
        Ok(Role::Service) => {}
        Ok(Role::KeeperDone(code)) => return code,
        Err(e) => return fail_start(None, &e.to_string()),
    }
    let mut times = StartupTimes {
        entered: SystemTime::now(),
        ..StartupTimes::default()
    };
    // Until its handler exists, the restart signal waits instead of
    // killing the process (a new generation starts with it blocked
    // already). Every thread started from here on inherits the mask; the
    // main thread unblocks it once the handler is installed.
    shutdown::block_until_handled(config.restart_signal);
    let mut channel = match child::take_channel() {
        Ok(channel) => channel,
        Err(e) => return fail_start(None, &e.to_string()),
    };
    let passed = match systemd::take_socket_activation(channel.is_none()) {
        Ok(passed) => passed,
        Err(e) => return fail_start(channel.as_mut(), &Error::from(e).to_string()),
    };
    let config = match config.apply_env() {
        Ok(config) => config,
        Err(e) => return fail_start(channel.as_mut(), &e.to_string()),
    };
    let launch = Launch::resolve(config.restart_signal);
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
        Some(stream) => match child::receive(stream, config.ready_timeout, keeps_state::<S>()) {
            Ok(received) => Some(received),
            Err(e) => return fail_start(channel.as_mut(), &e.to_string()),
        },
    };
    times.received = SystemTime::now();
    times.restart_began = received
        .as_ref()
        .map(|r| r.header.restart_began_unix_us)
        .filter(|&us| us > 0)
        .map(|us| UNIX_EPOCH + Duration::from_micros(us));
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
        passed,
    };
    let code = runtime.block_on(serve::<S, F, Fut>(config, start, main));
    runtime.shutdown_background();
    tracing::debug!("process exit");
    code
}

/// How long, after the drain, the supervisor and the control replies in
/// flight have to finish.
const LAST_WORDS: Duration = Duration::from_secs(1);

/// Reports a start-up failure to the previous generation (if any) and on
/// stderr.
fn fail_start(channel: Option<&mut StdUnixStream>, reason: &str) -> ExitCode {
    if let Some(stream) = channel {
        child::report_failure_blocking(stream, reason);
    }
    report_fatal(reason);
    ExitCode::FAILURE
}

/// Makes a fatal error reach stderr once: through the service's `tracing`
/// subscriber if it installed one (it writes to stderr unless told
/// otherwise), else printed with a `shellflip:` prefix — so that a service
/// without a subscriber does not exit 1 in silence.
fn report_fatal(message: &str) {
    if tracing::dispatcher::has_been_set() {
        tracing::error!("{message}");
    } else {
        eprintln!("shellflip: {message}");
    }
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
    /// What systemd passed to the first generation, by name: sockets of
    /// socket units and what the fd store kept.
    passed: Passed,
}

/// Everything after start-up, inside the runtime.
async fn serve<S, F, Fut>(config: Config, start: Start, main: F) -> ExitCode
where
    S: HandoverState,
    F: FnOnce(Context<S>) -> Fut,
    Fut: Future,
    Fut::Output: MainResult,
{
    let Start {
        times,
        launch,
        spawner,
        mut channel,
        received,
        passed,
    } = start;
    let spawner = connect_spawner(spawner, config.spawner);
    let (number, lineage, fds, state_bytes, predecessor_pid, draining, offer) = match received {
        Some(r) => (
            r.header.generation,
            r.header.lineage,
            r.fds,
            r.state,
            r.header.predecessor_pid,
            r.header.draining,
            Some(r.header.state),
        ),
        None => {
            let Passed { activated, stored } = passed;
            let lineage = Lineage {
                started_at_unix_ms: unix_ms(),
                systemd_sockets: activated.iter().map(|(name, _)| name.clone()).collect(),
                process_group: nix::unistd::getpgrp().as_raw() as u32,
                fd_store: systemd::stored_entries(&stored),
                ..Lineage::default()
            };
            let mut fds = activated;
            fds.extend(stored);
            (1, lineage, fds, None, 0, Vec::new(), None)
        }
    };
    let mut registry = Registry::new(fds);
    registry.mark_socket_activated(&lineage.systemd_sockets);

    // The handed-over state, decoded before the service's code runs.
    let state_fds = StateFds::from_vec(registry.claim_prefixed(STATE_FD_PREFIX));
    let mut report = keeps_state::<S>().then(|| StateReport {
        type_name: S::TYPE_NAME.to_owned(),
        version: S::VERSION,
        ..StateReport::default()
    });
    let state: Option<S> = match (state_bytes, offer) {
        (Some(bytes), _) => {
            let mut state_fds = state_fds;
            match decode_envelope_with_report::<S>(&bytes, &mut state_fds) {
                Ok((state, decoded)) => {
                    if let Some(report) = report.as_mut() {
                        report.bytes = decoded.len as u64;
                        report.migrated_from = (decoded.received_version < S::VERSION)
                            .then_some(decoded.received_version);
                        report.dropped = decoded.dropped;
                    }
                    Some(state)
                }
                Err(e) if e.is_mismatch() && config.on_state_mismatch == StateMismatch::Fresh => {
                    if let Some(report) = report.as_mut() {
                        report.bytes = bytes.len() as u64;
                        report.not_carried = Some(format!("{e} (on_state_mismatch = \"fresh\")"));
                    }
                    None
                }
                Err(e) => return fail_start(channel.as_mut(), &e.to_string()),
            }
        }
        (None, Some(StateOffer::Fresh { reason })) => {
            if let Some(report) = report.as_mut() {
                report.not_carried = Some(reason);
            }
            None
        }
        (None, Some(StateOffer::None)) => {
            if let Some(report) = report.as_mut() {
                report.not_carried = Some("the previous generation kept no state".to_owned());
            }
            None
        }
        (None, _) => None,
    };

    // The control socket, when configured (attribute or SHELLFLIP_CONTROL):
    // inherited, or bound by the first generation. Otherwise the service may
    // open it from its main with `Context::control_socket`.
    let inherited_control_file = lineage.control_socket_file.clone();
    let mut control = None;
    if let Some(path) = config.control_socket.as_deref() {
        match open_control_socket(&mut registry, inherited_control_file.as_ref(), path) {
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
    // Handled now: a restart signal that arrived meanwhile is delivered,
    // and refused as "not ready yet" if main has not called ready().
    shutdown::unblock_handled(config.restart_signal);

    let (predecessor, predecessor_drains, connections) = match channel {
        None => (None, None, None),
        Some(stream) => match PredecessorLink::start(stream, predecessor_pid, report.clone()) {
            Ok(parts) => (
                Some(parts.link),
                Some(parts.drains),
                Some(parts.connections),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "lost the channel to the previous generation");
                (None, None, None)
            }
        },
    };
    let pid_file = config.pid_file.as_ref().map(PidFile::new);
    let (generation, ready_rx) = Generation::new(GenerationParts {
        number,
        state_was_handed_over: state.is_some(),
        state_report: report,
        connections,
        registry,
        predecessor,
        pid_file: pid_file.clone(),
        inherited_control_file,
        control,
    });
    let context = Context::<S>::new(Arc::clone(&generation), state);

    let (main_outcome_tx, main_outcome_rx) = oneshot::channel();
    let control_connections = TaskTracker::new();
    let drained = CancellationToken::new();
    let supervisor = Supervisor::new(SupervisorParts {
        generation: Arc::clone(&generation),
        ready_rx,
        main_outcome: main_outcome_rx,
        limits: Limits {
            ready_timeout: config.ready_timeout,
            probation: config.probation,
            drain_timeout: config.drain_timeout,
            max_draining: config.max_draining,
            fd_store: config.fd_store,
        },
        launch,
        spawner,
        lineage,
        draining,
        predecessor_drains,
        signals,
        startup: times,
        control_connections: control_connections.clone(),
        drained: drained.clone(),
    });
    let supervisor = tokio::spawn(supervisor.run());
    tracing::info!(
        generation = number,
        pid = std::process::id(),
        "generation starting"
    );

    // The service's main, until it returns or shutdown begins; then until
    // the drain deadline at most.
    let mut main_future = CatchUnwind(Box::pin(main(context)));
    let main_outcome = tokio::select! {
        outcome = &mut main_future => Some(outcome),
        _ = generation.shutdown.cancelled() => {
            let deadline = generation.drain().deadline;
            match tokio::time::timeout_at(deadline, &mut main_future).await {
                Ok(outcome) => Some(outcome),
                Err(_) => {
                    tracing::warn!("main did not return within the drain timeout; exiting anyway");
                    None
                }
            }
        }
    };
    drop(main_future);
    let main_outcome = main_outcome.map(|o| o.and_then(MainResult::into_main_result));
    if let Some(Err(reason)) = &main_outcome {
        report_fatal(&format!("the service's main failed: {reason}"));
    }
    let failed = matches!(main_outcome, Some(Err(_)));
    let _ = main_outcome_tx.send(main_outcome);

    // Drain: tracked tasks until the deadline; then the supervisor stops
    // answering the control socket, and replies in flight get a moment.
    generation.shutdown.cancelled().await;
    let drain = generation.drain();
    let report = shutdown::drain(&generation.tracker, drain.began, drain.deadline).await;
    drained.cancel();
    if report.tasks_cut > 0 {
        tracing::warn!(
            tasks_cut = report.tasks_cut,
            "drain timeout reached; in-flight tasks are cut"
        );
    }
    tracing::info!(
        generation = number,
        ending = ?drain.ending,
        drain_ms = report.duration.as_millis() as u64,
        tasks_cut = report.tasks_cut,
        "generation exiting"
    );
    let finished = match tokio::time::timeout(LAST_WORDS, supervisor).await {
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
    control_connections.close();
    let _ = tokio::time::timeout(LAST_WORDS, control_connections.wait()).await;
    if drain.ending == Ending::Stopped {
        if let Some(file) = finished.as_ref().and_then(|f| f.control_file.as_ref()) {
            control::remove_control_socket(file);
        }
        if let Some(pid_file) = &pid_file {
            // Only if it still names this process: never another's pid file.
            match pid_file.remove_if_names(std::process::id()) {
                Ok(removed) => {
                    tracing::debug!(removed, path = %pid_file.path().display(), "pid file")
                }
                Err(e) => tracing::warn!(error = %e, "could not remove the pid file"),
            }
        }
    }
    if failed || drain.ending == Ending::Abandoned {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Whether the service keeps a state (a `Context<()>` keeps none).
fn keeps_state<S: HandoverState>() -> bool {
    std::any::TypeId::of::<S>() != std::any::TypeId::of::<()>()
}

/// Connects to the spawner forked at start-up, or falls back to spawning
/// from this process (with a warning, unless that was asked for).
fn connect_spawner(spawner: Result<SpawnerProcess, String>, mode: SpawnerMode) -> Spawner {
    match spawner.and_then(|process| {
        SpawnerClient::connect(process)
            .map_err(|e| format!("could not talk to the spawner process: {e}"))
    }) {
        Ok(client) => Spawner::Process(client),
        Err(reason) => {
            if mode == SpawnerMode::Process {
                tracing::warn!(%reason, "new generations will be spawned by the service process itself");
            }
            Spawner::Inline { reason }
        }
    }
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
