//! The supervisor of one generation: one task that owns the phase and takes
//! every event in order — readiness, a restart's outcome, the previous
//! generation's exit, `main` returning, a control request, a signal — so two
//! restarts can never overlap. It only dispatches: a restart reads top to
//! bottom in `parent` (this side) and `child` (the new generation's side).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::channel::Lineage;
use crate::control::protocol::{self, Request, Response, RestartSuccess, Status};
use crate::control::server::{self as control, ControlCommand, ControlSocketFile};
use crate::error::RestartError;
use crate::generation::{encode_state_for_handover, Ending, Generation};
use crate::launch::{self, Launch};
use crate::parent::{self, NewGeneration, Plan};
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
            Phase::Draining => protocol::Phase::Draining,
            Phase::Stopping => protocol::Phase::Stopping,
        }
    }
}

/// What asked for a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Signal,
    Control,
}

/// How `main` ended: `None` if it had not returned by the end of the drain.
pub(crate) type MainOutcome = Option<Result<(), String>>;

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
pub(crate) struct Timeouts {
    pub ready: Duration,
    pub ready_grace: Duration,
    pub drain: Duration,
}

/// What the supervisor starts with.
pub(crate) struct SupervisorParts {
    pub generation: Arc<Generation>,
    pub ready_rx: watch::Receiver<bool>,
    pub main_outcome: oneshot::Receiver<MainOutcome>,
    pub timeouts: Timeouts,
    pub launch: Launch,
    pub spawner: Spawner,
    pub lineage: Lineage,
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
    timeouts: Timeouts,
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
    /// Restart requests that arrived before this generation took over.
    deferred: Vec<(Trigger, Option<oneshot::Sender<Response>>)>,
    control: Option<control::Serving>,
    control_tx: mpsc::Sender<ControlCommand>,
    control_rx: mpsc::Receiver<ControlCommand>,
    control_connections: TaskTracker,
    restart: Option<RunningRestart>,
    outcome_tx: mpsc::Sender<RestartOutcome>,
    outcome_rx: mpsc::Receiver<RestartOutcome>,
    successor: Option<NewGeneration>,
    signals: Signals,
    drained: CancellationToken,
}

impl Supervisor {
    pub(crate) fn new(parts: SupervisorParts) -> Self {
        let (control_tx, control_rx) = mpsc::channel(64);
        let (outcome_tx, outcome_rx) = mpsc::channel(1);
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
            timeouts: parts.timeouts,
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
            successor: None,
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
                _ = drained.cancelled(), if !drained.is_cancelled() => {}
                request = self.signals.next() => match request {
                    SignalRequest::Restart => self.request_restart(Trigger::Signal, None),
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
            generation: self.generation.number,
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
            Phase::Restarting => RestartError::InProgress,
            Phase::Draining => match &self.successor {
                Some(next) => RestartError::HandedOver {
                    pid: next.pid,
                    generation: next.generation,
                },
                None => RestartError::InProgress,
            },
            Phase::Stopping => RestartError::ShuttingDown,
            Phase::Serving if !self.took_over.is_cancelled() => {
                // Ready, but the previous generation has not handed over
                // yet (a moment): the request waits for it.
                tracing::info!(
                    ?trigger,
                    "restart requested before the previous generation handed over; it waits for the hand-over"
                );
                self.deferred.push((trigger, reply));
                return;
            }
            Phase::Serving => return self.start_restart(trigger, reply),
        };
        if trigger == Trigger::Signal && matches!(self.phase, Phase::Serving | Phase::Restarting) {
            // Under Type=notify-reload, systemd sent this signal and waits
            // for RELOADING=1 then READY=1: answer now rather than let the
            // reload hang until TimeoutStartSec=.
            let status = format!(
                "serving: generation {}, pid {}; a restart was refused: {refusal}",
                self.generation.number,
                std::process::id()
            );
            self.systemd
                .send(&Notification::reloading(systemd::monotonic_usec(), &status));
            self.systemd.send(&Notification::ready(&status));
        }
        Self::refuse(reply, &refusal);
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
        for (trigger, reply) in std::mem::take(&mut self.deferred) {
            self.request_restart(trigger, reply);
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
        for (_, reply) in std::mem::take(&mut self.deferred) {
            Self::refuse(reply, &RestartError::ShuttingDown);
        }
        self.generation
            .begin_shutdown(Ending::Abandoned, Duration::ZERO);
    }

    fn start_restart(&mut self, trigger: Trigger, reply: Option<oneshot::Sender<Response>>) {
        let started = Instant::now();
        self.systemd.send(&Notification::reloading(
            systemd::monotonic_usec(),
            &format!(
                "restarting: starting generation {}",
                self.generation.number + 1
            ),
        ));
        let plan = match self.plan() {
            Ok(plan) => plan,
            Err(error) => {
                self.lineage.record_failure(started.elapsed(), &error);
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
        let generation = Arc::clone(&self.generation);
        tokio::spawn(async move {
            // Encoding a large state takes a while: done on the blocking
            // pool, not in the supervisor, which keeps answering status
            // requests and signals meanwhile, and while the new process
            // starts.
            let encode = encode_state_for_handover(generation);
            let outcome = parent::restart(&spawner, &launch, plan, encode, abort).await;
            match (&outcome, reply) {
                (Ok(next), Some(reply)) => {
                    // The initiator hears of a success from here, a hop
                    // sooner than through the supervisor, but only once
                    // the outcome is queued for it: any request the
                    // initiator sends next is handled after the outcome.
                    let response = Response::Restarted(RestartSuccess {
                        pid: next.pid,
                        generation: next.generation,
                        duration_ms: timing::ms(started.elapsed()),
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

    /// What the restart hands over, but the state.
    fn plan(&self) -> Result<Plan, RestartError> {
        let (fds, systemd_sockets) = {
            let registry = self.generation.registry();
            (registry.snapshot(), registry.socket_activated_in_use())
        };
        let fds = fds.map_err(RestartError::DuplicateListeners)?;
        Ok(Plan {
            generation: self.generation.number + 1,
            fds,
            lineage: self
                .lineage
                .for_successor(self.generation.number + 1, systemd_sockets),
            ready_timeout: self.timeouts.ready,
            ready_grace: self.timeouts.ready_grace,
        })
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
                let ms = timing::ms;
                tracing::info!(
                    trigger = ?restart.trigger,
                    pid = next.pid,
                    generation = next.generation,
                    spawn_ms = ms(next.timings.spawned),
                    handover_ms = ms(next.timings.handover_sent),
                    ready_ms = ms(next.timings.ready),
                    duration_ms = ms(elapsed),
                    "restart succeeded; handing over"
                );
                // Sent while this process is still the main one, before it
                // exits: systemd follows the new generation from now on.
                self.systemd.send(&Notification::handed_over(
                    next.pid,
                    &format!("serving: generation {}, pid {}", next.generation, next.pid),
                ));
                self.phase = Phase::Draining;
                // (The restart task answered the initiator; `reply` is set
                // only for a failure.)
                drop(reply);
                self.stop_accepting_control().await;
                // Only now may the new generation take restart requests:
                // no request can reach this one any more.
                if let Err(e) = next.commit().await {
                    tracing::warn!(error = %e, pid = next.pid, "could not tell the new generation that the hand-over is complete; it takes over when this one exits");
                }
                // The spawner's job is done: it exits, and the new
                // generation is re-parented to the service manager, which
                // then sees it die if it does.
                self.spawner.release();
                self.successor = Some(next);
                self.generation
                    .begin_shutdown(Ending::HandedOver, self.timeouts.drain);
            }
            Err(error) => {
                tracing::error!(
                    trigger = ?restart.trigger,
                    reason = %error,
                    duration_ms = timing::ms(elapsed),
                    "restart failed; this generation keeps serving"
                );
                self.lineage.record_failure(elapsed, &error);
                if self.phase == Phase::Restarting {
                    self.phase = Phase::Serving;
                    self.back_to_serving(&error);
                } else {
                    // Aborted by a stop: the killed successor may have
                    // written the pid file; this generation removes it when
                    // its drain ends.
                    self.generation.write_pid_file();
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
        let number = self.generation.number;
        tracing::info!(
            generation = number,
            pid,
            startup_ms = timing::ms(self.started.elapsed()),
            "ready"
        );
        self.startup.log_phases();
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
        if let Some(restart) = &self.restart {
            restart.abort.cancel();
        }
        self.phase = Phase::Stopping;
        // A new generation that never became ready is not the service in
        // systemd's eyes: its end is the old generation's business.
        let is_main = self.generation.number == 1 || self.generation.is_ready();
        if is_main {
            self.systemd.send(&Notification::stopping(
                systemd::drain_extension(self.timeouts.drain),
                &format!(
                    "stopping: draining for up to {}",
                    humantime::format_duration(self.timeouts.drain)
                ),
            ));
        }
        // The control socket stays open until the drain is over: `status`
        // is answered, restarts are refused as stopping.
        self.generation
            .begin_shutdown(Ending::Stopped, self.timeouts.drain);
        if is_main && self.systemd.is_enabled() {
            tokio::spawn(systemd::keep_extending_stop_timeout(
                self.systemd.clone(),
                self.generation.drain().deadline,
            ));
        }
    }

    /// After a failed restart: this generation serves again. The pid file
    /// is rewritten (it names this process) and systemd hears `READY=1`.
    fn back_to_serving(&self, error: &RestartError) {
        self.generation.write_pid_file();
        self.systemd.send(&Notification::ready(&format!(
            "serving: generation {}, pid {}; the last restart failed: {error}",
            self.generation.number,
            std::process::id()
        )));
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
