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
use std::process::ExitCode;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::runtime::Handle;
use tracing::Instrument;

use crate::channel::{HandoverHeader, Lineage, Received};
use crate::child::{self, PredecessorLink};
use crate::config::{Config, RuntimeFlavor, SpawnerMode};
use crate::context::Context;
use crate::error::Error;
use crate::generation::{open_control_socket, Ending, Generation};
use crate::keeper::{self, Role};
use crate::launch::Launch;
use crate::lifecycle_thread::LifecycleThread;
use crate::pidfile::PidFile;
use crate::profile::{self, Hop};
use crate::registry::Registry;
use crate::shutdown::{self, Signals};
use crate::spawner::{self, Spawner, SpawnerClient, SpawnerProcess};
use crate::state::HandoverState;
use crate::supervisor::{Finished, MainOutcome, Supervisor};
use crate::systemd::{self, Passed};
use crate::telemetry;
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
    let entered = SystemTime::now();
    profile::mark_at(Hop::ExecDone, entered);
    // Until its handler exists, the restart signal waits instead of
    // killing the process (a new generation starts with it blocked
    // already). Every thread started from here on inherits the mask; the
    // main thread unblocks it once the handler is installed.
    shutdown::block_until_handled(config.restart_signal);
    let mut channel = match child::take_channel() {
        Ok(channel) => channel,
        Err(e) => return fail_start(None, &e.to_string()),
    };
    let (start, runtime, lifecycle) = match start_up::<S>(config, &mut channel, entered) {
        Ok(started) => started,
        Err(reason) => return fail_start(channel.as_mut(), &reason),
    };
    let code = runtime.block_on(serve::<S, F, Fut>(start, main));
    drop(lifecycle);
    runtime.shutdown_background();
    profile::mark(Hop::Exiting);
    tracing::debug!("process exit");
    code
}

/// Start-up before the runtime, with a single thread: the socket
/// activation, the `SHELLFLIP_*` overrides, the spawner's fork, the
/// handover received on `channel` (taken into the [`Start`]); then the
/// runtime and the lifecycle thread. `Err`: why the generation cannot start.
fn start_up<S: HandoverState>(
    config: Config,
    channel: &mut Option<StdUnixStream>,
    entered: SystemTime,
) -> Result<(Start, tokio::runtime::Runtime, LifecycleThread), String> {
    let passed = systemd::take_socket_activation(channel.is_none())
        .map_err(|e| Error::from(e).to_string())?;
    let config = config.apply_env().map_err(|e| e.to_string())?;
    let launch = Launch::resolve(config.restart_signal);
    // Before the runtime and the service's code: the process has a single
    // thread, so the spawner can be forked safely.
    let spawner = match config.spawner {
        SpawnerMode::Inline => Err("SHELLFLIP_SPAWNER=inline".to_owned()),
        SpawnerMode::Process => spawner::start(&launch)
            .map_err(|e| format!("the spawner process could not be started: {e}")),
    };
    let spawner_forked = SystemTime::now();
    profile::mark_at(Hop::SpawnerForked, spawner_forked);
    let received = channel
        .as_mut()
        .map(|stream| child::receive(stream, config.ready_timeout, child::keeps_state::<S>()))
        .transpose()
        .map_err(|e| e.to_string())?;
    let received_at = SystemTime::now();
    let restart_began = received
        .as_ref()
        .map(|r| r.header.restart_began_unix_us)
        .filter(|&us| us > 0)
        .map(|us| UNIX_EPOCH + Duration::from_micros(us));
    let runtime = build_runtime(&config).map_err(|e| e.to_string())?;
    let lifecycle = LifecycleThread::start()
        .map_err(|e| Error::io("could not start the lifecycle thread", e).to_string())?;
    let runtime_built = SystemTime::now();
    profile::mark_at(Hop::RuntimeBuilt, runtime_built);
    let start = Start {
        config,
        times: StartupTimes {
            entered,
            spawner_forked,
            received: received_at,
            runtime_built,
            restart_began,
        },
        launch,
        spawner,
        channel: channel.take(),
        // A first generation starts from what systemd passed, as a
        // handover would say it.
        received: received.unwrap_or_else(|| first_generation(passed)),
        lifecycle: lifecycle.handle().clone(),
    };
    Ok((start, runtime, lifecycle))
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
    /// With the `SHELLFLIP_*` overrides applied.
    config: Config,
    times: StartupTimes,
    launch: Launch,
    /// The spawner forked at start-up, or why there is none.
    spawner: Result<SpawnerProcess, String>,
    /// The channel to the previous generation (`None` in the first).
    channel: Option<StdUnixStream>,
    /// What the previous generation handed over (in a first generation:
    /// what systemd passed, by name: sockets of socket units and what the
    /// fd store kept).
    received: Received,
    /// The lifecycle thread's runtime (see `lifecycle_thread`).
    lifecycle: Handle,
}

/// Everything after start-up, inside the runtime: the generation is built
/// from what was inherited, the supervisor runs beside `main`, the drain
/// follows shutdown, and what the exit leaves is cleaned up.
async fn serve<S, F, Fut>(mut start: Start, main: F) -> ExitCode
where
    S: HandoverState,
    F: FnOnce(Context<S>) -> Fut,
    Fut: Future,
    Fut::Output: MainResult,
{
    let config = &start.config;
    // Connects to the spawner forked at start-up, or falls back to spawning
    // from this process (with a warning, unless that was asked for).
    let spawner = {
        let _lifecycle = start.lifecycle.enter();
        let process = start.spawner.and_then(|process| {
            SpawnerClient::connect(process)
                .map_err(|e| format!("could not talk to the spawner process: {e}"))
        });
        if let (Err(reason), SpawnerMode::Process) = (&process, config.spawner) {
            tracing::warn!(%reason, "new generations will be spawned by the service process itself");
        }
        Spawner {
            launch: start.launch,
            process,
        }
    };
    let built = build_generation::<S>(config, start.received, &mut start.channel, &start.lifecycle);
    let (generation, state, signals, header) = match built {
        Ok(built) => built,
        Err(reason) => return fail_start(start.channel.as_mut(), &reason),
    };
    profile::mark(Hop::Adopted);
    let context = Context::<S>::new(Arc::clone(&generation), state);
    // Built here, before `main` runs: it publishes the metrics `ready()`
    // publishes again (the generation's number, the totals handed over), so
    // that a scrape right after READY never finds them missing or zero.
    let (supervisor, main_outcome_tx) = Supervisor::new(
        Arc::clone(&generation),
        config.clone(),
        header,
        spawner,
        signals,
        start.times,
    );
    // On the lifecycle thread: a restart's steps never wait behind the
    // service's own tasks.
    let supervisor = start.lifecycle.spawn(async move { supervisor.run().await });
    tracing::info!(
        generation = generation.number,
        pid = std::process::id(),
        "generation starting"
    );
    let main_outcome = run_main(&generation, main(context)).await;
    let failed = matches!(main_outcome, Some(Err(_)));
    let _ = main_outcome_tx.send(main_outcome);
    drain(&generation).await;
    profile::mark(Hop::Drained);
    // The supervisor ends once the machine says to exit: the last
    // generation of a stopped service waits for the older ones first.
    let bound = config.drain_timeout.saturating_mul(2) + LAST_WORDS * 10;
    let finished = match tokio::time::timeout(bound, supervisor).await {
        Ok(Ok(finished)) => Some(finished),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the supervisor task failed");
            None
        }
        Err(_) => {
            tracing::warn!("the supervisor did not finish in time after the drain; exiting anyway");
            None
        }
    };
    profile::mark(Hop::SupervisorDone);
    let control_connections = &generation.control_connections;
    control_connections.close();
    let _ = tokio::time::timeout(LAST_WORDS, control_connections.wait()).await;
    clean_up(finished.as_ref(), generation.pid_file.as_ref());
    // 1 if `main` failed or this generation gave the service back.
    if failed || finished.is_some_and(|f| f.ending == Ending::GaveBack) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// What a first generation starts from (systemd's sockets and fd store),
/// as a handover would say it.
fn first_generation(passed: Passed) -> Received {
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
    Received {
        header: HandoverHeader {
            generation: 1,
            fd_names: fds.iter().map(|(name, _)| name.clone()).collect(),
            lineage,
            ..HandoverHeader::default()
        },
        fds,
        state: None,
    }
}

/// Decodes the state, adopts the descriptors, opens the control socket,
/// installs the signal handlers and links to the predecessor (those two on
/// the lifecycle thread's runtime): the generation, its state, its signals
/// and the header it was started with. `Err`: why the generation cannot
/// start.
fn build_generation<S: HandoverState>(
    config: &Config,
    received: Received,
    channel: &mut Option<StdUnixStream>,
    lifecycle: &Handle,
) -> Result<(Arc<Generation>, Option<S>, Signals, HandoverHeader), String> {
    let Received { header, fds, state } = received;
    let mut registry = Registry::new(fds);
    registry.mark_socket_activated(&header.lineage.systemd_sockets);
    // A first generation was offered nothing.
    let offer = (header.generation > 1).then(|| header.state.clone());
    let (decoded, report) = child::decode_state::<S>(
        state.as_deref(),
        offer,
        &mut registry,
        config.on_state_mismatch,
    )
    .map_err(|e| e.to_string())?;
    if state.is_some() {
        profile::mark(Hop::StateDecoded);
    }
    // The control socket, when configured (attribute or SHELLFLIP_CONTROL):
    // inherited, or bound by the first generation. Otherwise the service may
    // open it from its main with `Context::control_socket`.
    let inherited_control = header.lineage.control_socket_file.as_ref();
    let control = config
        .control_socket
        .as_deref()
        .map(|path| open_control_socket(&mut registry, inherited_control, path))
        .transpose()
        .map_err(|e| e.to_string())?;
    let _lifecycle = lifecycle.enter();
    let signals = Signals::install(config.restart_signal)
        .map_err(|e| Error::io("could not install signal handlers", e).to_string())?;
    // Handled now (and unblocked): a restart signal that arrived meanwhile
    // is delivered, and refused as "not ready yet" if main has not called
    // ready().
    let link = channel.take().and_then(|stream| {
        PredecessorLink::start(
            stream,
            header.predecessor_pid,
            report.clone(),
            header.restart_id,
        )
        .inspect_err(|e| tracing::warn!(error = %e, "lost the channel to the previous generation"))
        .ok()
    });
    let generation = Generation::new(
        config,
        &header,
        registry,
        decoded.is_some(),
        report,
        link,
        control,
    );
    Ok((generation, decoded, signals, header))
}

/// Runs the service's `main` until it returns or shutdown begins; then
/// until the drain deadline at most. `None`: it had not returned by then.
async fn run_main<Fut>(generation: &Generation, main: Fut) -> MainOutcome
where
    Fut: Future,
    Fut::Output: MainResult,
{
    // Polled through `catch_unwind`: a panic becomes an error message.
    let mut main = Box::pin(main);
    let mut main_future = std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| main.as_mut().poll(cx))) {
            Ok(poll) => poll.map(Ok),
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic with a non-text payload".to_owned());
                Poll::Ready(Err(format!("the service panicked: {message}")))
            }
        }
    });
    let outcome = tokio::select! {
        outcome = &mut main_future => Some(outcome),
        _ = generation.shutdown.cancelled() => {
            let deadline = generation.drain().deadline;
            tokio::time::timeout_at(deadline, &mut main_future)
                .await
                .inspect_err(|_| tracing::warn!("main did not return within the drain timeout; exiting anyway"))
                .ok()
        }
    };
    let outcome = outcome.map(|o| o.and_then(MainResult::into_main_result));
    if let Some(Err(reason)) = &outcome {
        report_fatal(&format!("the service's main failed: {reason}"));
    }
    outcome
}

/// Once shutdown began: the tracked tasks until the drain deadline; then
/// `drained` tells the supervisor. The lines of a drain that a restart
/// began carry its id.
async fn drain(generation: &Generation) {
    generation.shutdown.cancelled().await;
    let drain = generation.drain();
    let span = telemetry::span_of(drain.restart);
    let report = shutdown::drain(&generation.tracker, drain.began, drain.deadline)
        .instrument(span.clone())
        .await;
    let _in_span = span.entered();
    generation.drained.cancel();
    if report.tasks_cut > 0 {
        tracing::warn!(
            tasks_cut = report.tasks_cut,
            "drain timeout reached; in-flight tasks are cut"
        );
    }
    tracing::info!(
        generation = generation.number,
        ending = ?drain.ending,
        drain_ms = report.duration.as_millis() as u64,
        tasks_cut = report.tasks_cut,
        "generation drained"
    );
}

/// At a stop, the pid file goes if it names this process, and the last
/// generation removes the control socket file (if it is still ours).
fn clean_up(finished: Option<&Finished>, pid_file: Option<&PidFile>) {
    let Some(finished) = finished.filter(|f| f.ending == Ending::Stopped) else {
        return;
    };
    if let Some(file) = &finished.control_file {
        file.remove();
    }
    if let Some(pid_file) = pid_file {
        // Only if it still names this process: never another's pid file.
        match pid_file.remove_if_names(std::process::id()) {
            Ok(removed) => {
                tracing::debug!(removed, path = %pid_file.path.display(), "pid file")
            }
            Err(e) => tracing::warn!(error = %e, "could not remove the pid file"),
        }
    }
}
