//! The supervisor of one generation: one task that owns the phase and takes
//! every event in order — readiness, a restart's outcome, the end of a
//! successor's probation, news from the previous generation, `main`
//! returning, a control request, a signal — so two restarts can never
//! overlap. It only dispatches: a restart reads top to bottom in `parent`
//! and in `restart.rs` here (this side) and in `child` (the new
//! generation's side).

mod restart;

use restart::Trigger;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::channel::{Draining, Lineage};
use crate::control::protocol::{self, GenerationStatus, Request, Response, Status};
use crate::control::server::{self as control, ControlCommand, ControlSocketFile};
use crate::draining::DrainingGenerations;
use crate::error::RestartError;
use crate::generation::{Ending, Generation};
use crate::launch::{self, Launch};
use crate::parent::{NewGeneration, Verdict};
use crate::registry::CONTROL_FD_NAME;
use crate::shutdown::{SignalRequest, Signals};
use crate::spawner::Spawner;
use crate::systemd::{self, Notification, Notifier};
use crate::timing::{self, StartupTimes};

/// Where a generation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Started, not ready yet.
    Starting,
    /// Ready and accepting; may restart.
    Serving,
    /// A restart runs.
    Restarting,
    /// The successor is ready and on probation: this generation holds its
    /// listeners without accepting, ready to take the service back.
    HandingOver,
    /// Handed over to its successor; draining, then exit.
    Draining,
    /// Stopping: draining, then exit.
    Stopping,
}

impl Phase {
    fn as_protocol(self) -> protocol::Phase {
        match self {
            Phase::Starting => protocol::Phase::Starting,
            Phase::Serving => protocol::Phase::Serving,
            Phase::Restarting => protocol::Phase::Restarting,
            Phase::HandingOver => protocol::Phase::HandingOver,
            Phase::Draining => protocol::Phase::Draining,
            Phase::Stopping => protocol::Phase::Stopping,
        }
    }
}

/// How `main` ended: `None` if it had not returned by the end of the drain.
pub(crate) type MainOutcome = Option<Result<(), String>>;

/// What the supervisor leaves when it finishes.
pub(crate) struct Finished {
    /// The control socket file, to remove when the service stops.
    pub control_file: Option<ControlSocketFile>,
    /// Kept until the process exits: its channel closing is what tells the
    /// new generation that this one is gone.
    pub _successor: Option<NewGeneration>,
}

/// The settings the supervisor acts on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub ready_timeout: Duration,
    pub probation: Duration,
    pub drain_timeout: Duration,
    pub max_draining: usize,
    /// Keep the sockets in systemd's fd store (`systemd::sync_fd_store`).
    pub fd_store: bool,
}

/// What the supervisor starts with.
pub(crate) struct SupervisorParts {
    pub generation: Arc<Generation>,
    pub ready_rx: watch::Receiver<bool>,
    pub main_outcome: oneshot::Receiver<MainOutcome>,
    pub limits: Limits,
    pub launch: Launch,
    pub spawner: Spawner,
    pub lineage: Lineage,
    /// Older generations still draining, as the handover said.
    pub draining: Vec<Draining>,
    /// What the previous generation reports of drains (its own, relayed).
    pub predecessor_drains: Option<mpsc::UnboundedReceiver<Draining>>,
    pub signals: Signals,
    pub startup: StartupTimes,
    /// Control connections, which the drain waits for.
    pub control_connections: TaskTracker,
    /// Cancelled when the drain is over: the supervisor stops accepting
    /// on the control socket and finishes.
    pub drained: CancellationToken,
}

/// See the module docs.
pub(crate) struct Supervisor {
    generation: Arc<Generation>,
    ready_rx: watch::Receiver<bool>,
    main_outcome: oneshot::Receiver<MainOutcome>,
    limits: Limits,
    systemd: Notifier,
    launch: Launch,
    spawner: Spawner,
    phase: Phase,
    started: Instant,
    startup: StartupTimes,
    lineage: Lineage,
    /// Cancelled once this generation is the service (see `child`).
    took_over: CancellationToken,
    /// Cancelled if the previous generation gave this one up.
    abandoned: CancellationToken,
    /// Restart requests that arrived before this generation took over
    /// (with their `fresh_state`).
    deferred: Vec<(Trigger, Option<oneshot::Sender<Response>>, bool)>,
    control: Option<control::Serving>,
    control_tx: mpsc::Sender<ControlCommand>,
    control_rx: mpsc::Receiver<ControlCommand>,
    control_connections: TaskTracker,
    restart: Option<restart::RunningRestart>,
    outcome_tx: mpsc::Sender<restart::RestartOutcome>,
    outcome_rx: mpsc::Receiver<restart::RestartOutcome>,
    /// The successor on probation: its verdict, with it.
    verdict_tx: mpsc::Sender<(NewGeneration, Verdict)>,
    verdict_rx: mpsc::Receiver<(NewGeneration, Verdict)>,
    /// The successor that took over (kept until exit: its channel closing
    /// tells it this generation is gone), and while on probation its pid
    /// and generation.
    successor: Option<NewGeneration>,
    handed_to: Option<(u32, u64)>,
    /// While a successor is on probation: cancelling it ends the probation
    /// at once, as passed.
    probation: Option<CancellationToken>,
    /// A stop was asked during the successor's probation: carried out even
    /// if the probation ends in a rollback (the successor, stopped by the
    /// same signal, exited meanwhile).
    stop_after_probation: bool,
    /// Older generations still draining.
    older: DrainingGenerations,
    predecessor_drains: Option<mpsc::UnboundedReceiver<Draining>>,
    signals: Signals,
    drained: CancellationToken,
}

impl Supervisor {
    pub(crate) fn new(parts: SupervisorParts) -> Self {
        let (control_tx, control_rx) = mpsc::channel(64);
        let (outcome_tx, outcome_rx) = mpsc::channel(1);
        let (verdict_tx, verdict_rx) = mpsc::channel(1);
        let (took_over, abandoned) = match &parts.generation.predecessor {
            Some(link) => (link.took_over().clone(), link.abandoned().clone()),
            None => {
                let took_over = CancellationToken::new();
                took_over.cancel();
                (took_over, CancellationToken::new())
            }
        };
        Supervisor {
            generation: parts.generation,
            ready_rx: parts.ready_rx,
            main_outcome: parts.main_outcome,
            limits: parts.limits,
            systemd: Notifier::from_env(),
            launch: parts.launch,
            spawner: parts.spawner,
            phase: Phase::Starting,
            started: Instant::now(),
            startup: parts.startup,
            lineage: parts.lineage,
            took_over,
            abandoned,
            deferred: Vec::new(),
            control: None,
            control_tx,
            control_rx,
            control_connections: parts.control_connections,
            restart: None,
            outcome_tx,
            outcome_rx,
            verdict_tx,
            verdict_rx,
            successor: None,
            handed_to: None,
            probation: None,
            stop_after_probation: false,
            older: DrainingGenerations::new(parts.draining),
            predecessor_drains: parts.predecessor_drains,
            signals: parts.signals,
            drained: parts.drained,
        }
    }

    /// Takes events until the drain is over and no restart runs: a
    /// draining or stopping generation still answers `status` and refuses
    /// restart requests and signals with the reason.
    pub(crate) async fn run(mut self) -> Finished {
        let mut took_over_seen = self.took_over.is_cancelled();
        let mut abandoned_seen = false;
        let mut main_returned = false;
        let drained = self.drained.clone();
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        let mut drains = self.predecessor_drains.take();
        while !(drained.is_cancelled() && self.restart.is_none()) {
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
                Some((next, verdict)) = self.verdict_rx.recv() => self.on_verdict(next, verdict).await,
                _ = self.abandoned.cancelled(), if !abandoned_seen => {
                    abandoned_seen = true;
                    self.on_abandoned();
                }
                _ = self.took_over.cancelled(), if !took_over_seen => {
                    took_over_seen = true;
                    self.on_took_over();
                }
                outcome = &mut self.main_outcome, if !main_returned => {
                    main_returned = true;
                    self.on_main_returned(outcome.unwrap_or(None)).await;
                }
                Some(command) = self.control_rx.recv() => self.on_control(command).await,
                Some(drain) = recv(&mut drains) => self.on_older_drain(drain).await,
                generation = self.older.next_exit() => self.older.forget(generation),
                _ = progress.tick(), if self.phase == Phase::Draining => self.report_progress().await,
                _ = drained.cancelled(), if !drained.is_cancelled() => {}
                request = self.signals.next() => match request {
                    SignalRequest::Restart => self.request_restart(Trigger::Signal, None, false),
                    SignalRequest::Stop(signal) => {
                        tracing::info!(signal = signal.as_str(), "stop requested by signal");
                        self.begin_stop().await;
                    }
                },
            }
        }
        self.stop_accepting_control().await;
        Finished {
            control_file: self.control.as_ref().map(|c| c.file().clone()),
            _successor: self.successor.take(),
        }
    }

    async fn on_control(&mut self, command: ControlCommand) {
        match command.request {
            Request::Restart { fresh_state } => {
                self.request_restart(Trigger::Control, Some(command.reply), fresh_state)
            }
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

    fn status(&mut self) -> Status {
        Status {
            pid: std::process::id(),
            generation: self.generation.number,
            phase: self.phase.as_protocol(),
            uptime_secs: self.started.elapsed().as_secs_f64(),
            restarts: self.lineage.restarts,
            failed_restarts: self.lineage.failed_restarts,
            last_restart: self.lineage.last_restart.clone(),
            spawner_pid: self.spawner.pid(),
            generations: self.generations(),
            state: self.generation.state_report.clone(),
        }
    }

    /// Every live generation this one knows of, oldest first.
    fn generations(&mut self) -> Vec<GenerationStatus> {
        let mut generations = self.older.statuses();
        generations.push(GenerationStatus {
            generation: self.generation.number,
            pid: std::process::id(),
            phase: self.phase.as_protocol(),
            tasks: Some(self.generation.tracker.len() as u64),
            drain_deadline_unix_ms: self.drain_deadline_unix_ms(),
        });
        generations
    }

    /// When this generation's drain ends, once it drains.
    fn drain_deadline_unix_ms(&self) -> Option<u64> {
        self.generation.shutdown.is_cancelled().then(|| {
            let left = self
                .generation
                .drain()
                .deadline
                .saturating_duration_since(Instant::now());
            timing::unix_ms() + left.as_millis() as u64
        })
    }

    /// News of a draining generation from the previous one: recorded (and
    /// passed on to a successor, if this one has handed over), and, if this
    /// generation is the service, the oldest drains beyond `max_draining`
    /// are ended.
    async fn on_older_drain(&mut self, drain: Draining) {
        self.older.update(drain.clone());
        if let Some(next) = &self.successor {
            let _ = next
                .tell(&crate::channel::ParentMessage::Progress(drain))
                .await;
        }
        if matches!(self.phase, Phase::Serving | Phase::Restarting) {
            for cut in self.older.cut_beyond(self.limits.max_draining) {
                tracing::warn!(
                    generation = cut.generation,
                    pid = cut.pid,
                    tasks = cut.tasks,
                    max_draining = self.limits.max_draining,
                    "more generations drain than max_draining allows: ended the oldest one's drain (its remaining work is cut)"
                );
            }
        }
    }

    /// This generation is the service now: restart requests that waited
    /// for it are served (the first starts a restart, the others are told
    /// that one is in progress).
    fn on_took_over(&mut self) {
        tracing::debug!(
            "the previous generation handed over (or is gone); this one is the service"
        );
        let group = self.lineage.process_group;
        if group != 0 {
            launch::join_process_group(group);
        }
        if self.generation.number > 1 {
            self.sync_fd_store();
        }
        for (trigger, reply, fresh_state) in std::mem::take(&mut self.deferred) {
            self.request_restart(trigger, reply, fresh_state);
        }
    }

    /// The previous generation, still alive, gave this one up: it reported
    /// the restart as failed and serves on. Exit at once, so that only one
    /// generation serves, leaving its control socket and pid file alone.
    fn on_abandoned(&mut self) {
        if let Some(restart) = &self.restart {
            restart.abort.cancel();
        }
        self.phase = Phase::Stopping;
        for (_, reply, _) in std::mem::take(&mut self.deferred) {
            Self::refuse(reply, &RestartError::ShuttingDown);
        }
        self.generation
            .begin_shutdown(Ending::Abandoned, Duration::ZERO);
    }

    async fn on_ready(&mut self) {
        let pid = std::process::id();
        let number = self.generation.number;
        tracing::info!(
            generation = number,
            pid,
            startup_ms = timing::ms(self.started.elapsed()),
            "ready"
        );
        self.startup.log_phases();
        match &self.generation.state_report {
            Some(report) if report.not_carried.is_some() && number > 1 => {
                tracing::warn!("{report}");
            }
            Some(report) if number > 1 => tracing::info!("{report}"),
            _ => {}
        }
        let told_predecessor = match &self.generation.predecessor {
            None => {
                self.generation.write_pid_file();
                false
            }
            Some(link) => match link
                .finish_ready_report(|| self.generation.write_pid_file())
                .await
            {
                Ok(told) => told,
                Err(reason) => {
                    tracing::warn!(error = %reason, "could not tell the previous generation that this one is ready; it is probably gone");
                    false
                }
            },
        };
        let status = format!("serving: generation {number}, pid {pid}");
        if number == 1 {
            self.systemd.send(&Notification::ready(&status));
            self.sync_fd_store();
        } else if !told_predecessor {
            // The previous generation would have sent MAINPID; it is gone.
            self.systemd.send(&Notification::handed_over(pid, &status));
        }
        if number > 1 {
            self.lineage.record_success(pid);
        }
        for name in self.generation.registry().close_unclaimed() {
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

    /// systemd's fd store holds this generation's sockets (or none, with
    /// `fd_store` off); see `systemd::sync_fd_store`.
    fn sync_fd_store(&mut self) {
        let registry = self.generation.registry();
        systemd::sync_fd_store(
            &self.systemd,
            self.limits.fd_store,
            &registry,
            &mut self.lineage.fd_store,
        );
    }

    fn start_accepting_control(&mut self) {
        let Some(open) = self.generation.take_control() else {
            return;
        };
        self.lineage.control_socket_file = Some(open.file.clone());
        match control::Serving::start(
            open.file,
            open.listener,
            self.control_tx.clone(),
            self.control_connections.clone(),
        ) {
            Ok(serving) => self.control = Some(serving),
            Err(e) => tracing::error!(error = %e, "could not serve the control socket"),
        }
    }

    async fn stop_accepting_control(&mut self) {
        if let Some(control) = self.control.as_mut() {
            control.stop().await;
        }
    }

    async fn begin_stop(&mut self) {
        if matches!(self.phase, Phase::Draining | Phase::Stopping) {
            return;
        }
        if self.phase == Phase::HandingOver {
            // The successor is the service already (for systemd too): this
            // generation ends its hold as if the probation had passed.
            tracing::info!("stop asked during the successor's probation: handing over at once");
            self.stop_after_probation = true;
            if let Some(cut_short) = &self.probation {
                cut_short.cancel();
            }
            return;
        }
        if let Some(restart) = &self.restart {
            restart.abort.cancel();
        }
        self.phase = Phase::Stopping;
        // A new generation that never became ready is not the service in
        // systemd's eyes: its end is the old generation's business.
        let is_main = self.generation.number == 1 || self.generation.is_ready();
        if is_main {
            self.systemd.send(&Notification::stopping(
                systemd::drain_extension(self.limits.drain_timeout),
                &format!(
                    "stopping: draining for up to {}",
                    humantime::format_duration(self.limits.drain_timeout)
                ),
            ));
        }
        // The control socket stays open until the drain is over: `status`
        // is answered, restarts are refused as stopping.
        self.generation
            .begin_shutdown(Ending::Stopped, self.limits.drain_timeout);
        if is_main && self.systemd.is_enabled() {
            tokio::spawn(systemd::keep_extending_stop_timeout(
                self.systemd.clone(),
                self.generation.drain().deadline,
            ));
        }
    }

    /// After a failed restart: this generation serves again. The pid file
    /// is rewritten (it names this process) and systemd hears `READY=1`
    /// with the reason in `STATUS=` — and `MAINPID=` this process, after a
    /// rollback, when systemd was told of the successor.
    fn back_to_serving(&self, why: &dyn std::fmt::Display, main_pid_moved: bool) {
        self.generation.write_pid_file();
        let pid = std::process::id();
        let status = format!(
            "serving: generation {}, pid {pid}; the last restart failed: {why}",
            self.generation.number,
        );
        if main_pid_moved {
            self.systemd.send(&Notification::handed_over(pid, &status));
        } else {
            self.systemd.send(&Notification::ready(&status));
        }
    }

    /// Serves the control socket again after a rollback: from the
    /// registry's copy of the listener.
    fn resume_accepting_control(&mut self) {
        let Some(file) = self.control.as_ref().map(|c| c.file().clone()) else {
            return;
        };
        let listener = match self.generation.registry().duplicate(CONTROL_FD_NAME) {
            Some(Ok(fd)) => std::os::unix::net::UnixListener::from(fd),
            Some(Err(e)) => {
                tracing::error!(error = %e, "could not serve the control socket again");
                return;
            }
            None => return,
        };
        match control::Serving::start(
            file,
            listener,
            self.control_tx.clone(),
            self.control_connections.clone(),
        ) {
            Ok(serving) => self.control = Some(serving),
            Err(e) => tracing::error!(error = %e, "could not serve the control socket again"),
        }
    }

    async fn on_main_returned(&mut self, outcome: MainOutcome) {
        if !matches!(self.phase, Phase::Draining | Phase::Stopping) {
            tracing::info!("the service's main returned; stopping");
        }
        if !self.generation.is_ready() {
            if let Some(link) = &self.generation.predecessor {
                let reason = match outcome {
                    Some(Err(reason)) => reason,
                    _ => "main returned before calling ready()".to_owned(),
                };
                if let Err(e) = link.report_failure(reason).await {
                    tracing::debug!(error = %e, "could not report the failure to the previous generation");
                }
            }
        }
        self.begin_stop().await;
    }
}

/// How often a draining generation reports its progress to its successor.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// The next message of an optional receiver (never, without one).
async fn recv<T>(receiver: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match receiver {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}
