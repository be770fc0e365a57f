//! The supervisor of one generation: one task that turns what happens —
//! readiness, a restart's outcome, the successor's exit or reports, news
//! from the predecessor, `main` returning, a control request, a signal, a
//! deadline — into the `machine`'s events, one at a time, and carries out
//! the actions the machine decides (`actions.rs`). It decides nothing
//! itself: every decision is in `machine` and in its table,
//! `docs/lifecycle.md`.
//!
//! A restart reads top to bottom in `restart.rs` here and `parent` (this
//! side), `successor.rs` (the successor's probation) and `child` (the new
//! generation's side).

mod actions;
mod record;
mod restart;
mod successor;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use shellflip_control::protocol::{GenerationStatus, Request, Response, Status};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::Instrument;

use crate::channel::{ChildMessage, Draining, HandoverHeader, Lineage, ParentMessage};
use crate::child::FromPredecessor;
use crate::config::Config;
use crate::control::server::{self as control, ControlCommand, ControlSocketFile};
use crate::draining::DrainingGenerations;
use crate::generation::Generation;
use crate::machine::{self, Ending, Event, Machine, ReplyTo, RestartAsk, Trigger};
use crate::parent::NewGeneration;
use crate::profile::{self, Hop};
use crate::shutdown::{SignalRequest, Signals};
use crate::spawner::Spawner;
use crate::systemd::Notifier;
use crate::telemetry;
use crate::timing::{self, StartupTimes};

/// How `main` ended: `None` if it had not returned by the end of the drain.
pub(crate) type MainOutcome = Option<Result<(), String>>;

/// What the supervisor leaves when it finishes.
pub(crate) struct Finished {
    /// Why this generation ends.
    pub ending: Ending,
    /// The control socket file, to remove when the service stops; only in
    /// the last generation of the service (see [`machine::Action::Exit`]).
    pub control_file: Option<ControlSocketFile>,
    /// Kept until the process exits: its channel closing is what tells the
    /// new generation that this one is gone.
    pub _successor: Option<NewGeneration>,
}

/// See the module docs.
pub(crate) struct Supervisor {
    machine: Machine,
    /// The machine's clock starts here.
    epoch: Instant,
    generation: Arc<Generation>,
    ready_rx: watch::Receiver<bool>,
    main_outcome: oneshot::Receiver<MainOutcome>,
    /// The settings it acts on.
    config: Config,
    systemd: Notifier,
    spawner: Spawner,
    startup: StartupTimes,
    lineage: Lineage,
    /// Events to take before waiting for the next one.
    pending: VecDeque<Event>,
    /// Initiators waiting for an answer.
    replies: HashMap<ReplyTo, oneshot::Sender<Response>>,
    next_reply: u64,
    control: Option<control::Serving>,
    control_tx: mpsc::Sender<ControlCommand>,
    control_rx: mpsc::Receiver<ControlCommand>,
    restart: Option<restart::RunningRestart>,
    outcome_tx: mpsc::Sender<restart::RestartOutcome>,
    outcome_rx: mpsc::Receiver<restart::RestartOutcome>,
    /// The successor, from its READY: watched while on probation, kept
    /// until exit.
    successor: Option<NewGeneration>,
    watcher: Option<successor::Watcher>,
    successor_tx: mpsc::UnboundedSender<Event>,
    successor_rx: mpsc::UnboundedReceiver<Event>,
    /// Older generations still draining.
    older: DrainingGenerations,
    /// The predecessor link's news (closed at once without one).
    predecessor_events: mpsc::UnboundedReceiver<FromPredecessor>,
    signals: Signals,
    /// Set once the machine says to exit.
    exit: Option<(Ending, bool)>,
    /// Outcomes, durations, the restart id of the lines (`record.rs`).
    record: record::Record,
}

impl Supervisor {
    /// The supervisor of `generation`, which `header` started (a first
    /// generation's made up by `lifecycle`); and where `main`'s outcome goes.
    pub(crate) fn new(
        generation: Arc<Generation>,
        config: Config,
        header: HandoverHeader,
        spawner: Spawner,
        signals: Signals,
        startup: StartupTimes,
    ) -> (Self, oneshot::Sender<MainOutcome>) {
        let (control_tx, control_rx) = mpsc::channel(64);
        let (outcome_tx, outcome_rx) = mpsc::channel(1);
        let (successor_tx, successor_rx) = mpsc::unbounded_channel();
        let (main_outcome_tx, main_outcome) = oneshot::channel();
        let machine = Machine::new(
            machine::Settings {
                pid: std::process::id(),
                generation: generation.number,
                probation: config.probation,
                ready_timeout: config.ready_timeout,
            },
            generation.predecessor.is_some(),
        );
        let totals = (generation.number > 1).then_some(header.totals);
        let record = record::Record::new(&generation, header.restart_id, totals);
        let mut supervisor = Supervisor {
            machine,
            epoch: Instant::now(),
            ready_rx: generation.ready.subscribe(),
            predecessor_events: generation
                .predecessor
                .as_ref()
                .and_then(|l| l.take_events())
                .unwrap_or_else(|| mpsc::unbounded_channel().1),
            generation,
            main_outcome,
            config,
            systemd: Notifier::from_env(),
            spawner,
            startup,
            lineage: header.lineage,
            pending: VecDeque::new(),
            replies: HashMap::new(),
            next_reply: 0,
            control: None,
            control_tx,
            control_rx,
            restart: None,
            outcome_tx,
            outcome_rx,
            successor: None,
            watcher: None,
            successor_tx,
            successor_rx,
            older: DrainingGenerations::new(header.draining),
            signals,
            exit: None,
            record,
        };
        // For `ready()`, which may come before the supervisor's task first
        // runs: `lifecycle` builds the supervisor before `main` starts.
        supervisor.publish_metrics();
        (supervisor, main_outcome_tx)
    }

    /// Takes events until the machine says to exit; then waits for what
    /// the exit waits for (see `actions::finish`).
    pub(crate) async fn run(mut self) -> Finished {
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        let mut main_returned = false;
        let mut drained_seen = false;
        let drained = self.generation.drained.clone();
        while self.exit.is_none() {
            // After every event: the recorder the service installed (before
            // ready()) sees the totals from the first event on.
            self.publish_metrics();
            // Readiness first: a request that arrives just after main called
            // ready() must find this generation ready.
            if *self.ready_rx.borrow_and_update() && self.is_starting() {
                self.pending.push_back(Event::Ready);
            }
            if let Some(event) = self.pending.pop_front() {
                self.dispatch(event).await;
                continue;
            }
            let deadline = self.machine.next_deadline().map(|at| self.epoch + at);
            let draining = matches!(self.machine.phase(), machine::Phase::Draining { .. });
            // `None`: nothing for the machine (readiness is looked at again
            // at the loop's top).
            let event = tokio::select! {
                biased;
                Ok(()) = self.ready_rx.changed(), if self.is_starting() => None,
                Some(outcome) = self.outcome_rx.recv() => {
                    let span = telemetry::span_of(self.record.current);
                    Some(self.on_restart_outcome(outcome).instrument(span).await)
                }
                Some(event) = self.successor_rx.recv() => Some(event),
                Some(news) = self.predecessor_events.recv() => self.on_predecessor_news(news).await,
                outcome = &mut self.main_outcome, if !main_returned => {
                    main_returned = true;
                    Some(self.on_main_returned(outcome.unwrap_or(None)).await)
                }
                Some(command) = self.control_rx.recv() => self.on_control(command),
                () = tokio::time::sleep_until(deadline.unwrap_or(self.epoch)), if deadline.is_some() => {
                    Some(Event::Deadline)
                }
                Some(_) = self.older.next_exit() => {
                    self.older.forget_exited();
                    None
                }
                _ = progress.tick(), if draining => {
                    self.relay(self.own_drain()).await;
                    None
                }
                () = drained.cancelled(), if !drained_seen => {
                    drained_seen = true;
                    Some(Event::Drained)
                }
                request = self.signals.next() => Some(match request {
                    SignalRequest::Restart => {
                        profile::mark(Hop::TriggerRead);
                        Event::RestartAsked(RestartAsk {
                        trigger: Trigger::Signal,
                        reply: None,
                        fresh_state: false,
                    })
                    }
                    SignalRequest::Stop(signal) => {
                        tracing::info!(signal = signal.as_str(), "stop requested by signal");
                        Event::StopAsked { control: false }
                    }
                }),
            };
            if let Some(event) = event {
                self.dispatch(event).await;
            }
        }
        self.finish().await
    }

    fn is_starting(&self) -> bool {
        matches!(self.machine.phase(), machine::Phase::Starting { .. })
    }

    /// Gives the machine one event and carries out its decision.
    async fn dispatch(&mut self, event: Event) {
        let before = self.machine.phase().clone();
        if event == Event::Deadline && matches!(before, machine::Phase::Starting { .. }) {
            tracing::error!(
                ready_timeout = %shellflip_settings::format_duration(self.config.ready_timeout),
                "this generation was not ready within the ready timeout, and the previous generation is gone; exiting"
            );
        }
        let actions = self.machine.handle(event.clone(), self.epoch.elapsed());
        let about = self.record.about(&actions, self.generation.number);
        telemetry::span_of(about).in_scope(|| {
            tracing::debug!(?event, phase = ?before, next = ?self.machine.phase(), ?actions, "lifecycle");
        });
        let settled = record::settled_by(&before, &event, self.machine.phase());
        self.carry_out_all(actions, settled).await;
        if matches!(event, Event::RestartSucceeded(_) | Event::RestartFailed(_)) {
            self.restart = None;
        }
    }

    fn on_control(&mut self, command: ControlCommand) -> Option<Event> {
        match command.request {
            Request::Restart { fresh_state } => {
                let reply = ReplyTo(self.next_reply);
                self.next_reply += 1;
                self.replies.insert(reply, command.reply);
                Some(Event::RestartAsked(RestartAsk {
                    trigger: Trigger::Control,
                    reply: Some(reply),
                    fresh_state,
                }))
            }
            Request::Status => {
                let _ = command.reply.send(Response::Status(self.status()));
                None
            }
            Request::Stop => {
                // The connection is then held open until this process exits
                // (see `control::server`).
                let _ = command.reply.send(Response::Stopping {
                    pid: std::process::id(),
                });
                tracing::info!("stop requested on the control socket");
                Some(Event::StopAsked { control: true })
            }
        }
    }

    /// What the predecessor did, as an event of the machine (`None`: news
    /// of a drain, recorded here).
    async fn on_predecessor_news(&mut self, news: FromPredecessor) -> Option<Event> {
        match news {
            FromPredecessor::Committed(drain, totals) => {
                self.older.update(drain);
                self.record.committed = Some(totals);
                Some(Event::PredecessorCommitted)
            }
            FromPredecessor::ConnectionsTaken(n) => {
                self.record.ledger.count_connections(n);
                None
            }
            // News of a draining generation: recorded (and passed on to a
            // successor, if this one has handed over), and, if this
            // generation is the service, the oldest drains beyond
            // `max_draining` are ended.
            FromPredecessor::Progress(drain) => {
                self.older.update(drain.clone());
                self.relay(drain).await;
                if self.machine.is_service() {
                    for cut in self.older.cut_beyond(self.config.max_draining) {
                        tracing::warn!(
                            generation = cut.generation,
                            pid = cut.pid,
                            tasks = cut.tasks,
                            max_draining = self.config.max_draining,
                            "more generations drain than max_draining allows: ended the oldest one's drain (its remaining work is cut)"
                        );
                    }
                }
                None
            }
            FromPredecessor::Stop(claim) => Some(Event::PredecessorStopping(claim)),
            FromPredecessor::Gone => Some(Event::PredecessorGone),
            FromPredecessor::GaveUp => Some(Event::PredecessorGaveUp),
        }
    }

    /// `main` returned: a new generation that was not ready yet tells its
    /// predecessor why (the restart fails with that reason).
    async fn on_main_returned(&mut self, outcome: MainOutcome) -> Event {
        if !self.generation.shutdown.is_cancelled() {
            tracing::info!("the service's main returned");
        }
        if !self.generation.is_ready() {
            if let Some(link) = &self.generation.predecessor {
                let reason = match outcome {
                    Some(Err(reason)) => reason,
                    _ if self.generation.shutdown.is_cancelled() => {
                        "it was stopped before it was ready".to_owned()
                    }
                    _ => "main returned before calling ready()".to_owned(),
                };
                if let Err(e) = link.report(&ChildMessage::Failed { reason }).await {
                    tracing::debug!(error = %e, "could not report the failure to the previous generation");
                }
            }
        }
        Event::MainReturned
    }

    fn status(&mut self) -> Status {
        // Every live generation this one knows of, oldest first.
        let mut generations = self.older.statuses();
        generations.push(GenerationStatus {
            generation: self.generation.number,
            pid: std::process::id(),
            phase: self.machine.protocol_phase(),
            tasks: Some(self.generation.tracker.len() as u64),
            drain_deadline_unix_ms: self.drain_deadline_unix_ms(),
        });
        Status {
            pid: std::process::id(),
            generation: self.generation.number,
            phase: self.machine.protocol_phase(),
            uptime_secs: self.epoch.elapsed().as_secs_f64(),
            restarts: self.lineage.restarts,
            failed_restarts: self.lineage.failed_restarts,
            last_restart: self.lineage.last_restart.clone(),
            spawner_pid: self.spawner.pid(),
            generations,
            state: self.generation.state_report.clone(),
        }
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

    /// This generation's drain, as its successor learns of it.
    fn own_drain(&self) -> Draining {
        Draining {
            generation: self.generation.number,
            pid: std::process::id(),
            deadline_unix_ms: self
                .drain_deadline_unix_ms()
                .unwrap_or_else(timing::unix_ms),
            tasks: Some(self.generation.tracker.len() as u64),
        }
    }

    /// Tells the successor (if any) how a drain goes: this generation's
    /// own, or an older one's.
    async fn relay(&self, drain: Draining) {
        if let Some(next) = &self.successor {
            let _ = next.link.tell(&ParentMessage::Progress(drain)).await;
        }
    }
}

/// How often a draining generation reports its progress to its successor.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
