//! The decisions of one generation's life, as a synchronous state machine:
//! [`Machine::handle`] takes one [`Event`] and returns the [`Action`]s to
//! carry out. It does no I/O and reads no clock (the caller passes the
//! time), so the very code the supervisor runs is also what the table of
//! `docs/lifecycle.md` is generated from (`table`) and what the explorer
//! drives through random schedules of many generations (`explore`).
//!
//! The phase is one enum whose variants carry the data that only matters
//! in them: the restart request waiting for its outcome, the successor on
//! probation and when the probation ends, the restart requests deferred
//! until the predecessor commits. Every event is handled in every phase;
//! an event that cannot happen in a phase is ignored there.

mod stop;

#[cfg(test)]
mod explore;
#[cfg(test)]
mod table;
#[cfg(test)]
mod tests;

use std::time::Duration;

use shellflip_control::protocol::{FailureKind, Phase as ProtocolPhase};

use crate::error::RestartError;

/// A point in time: the time since an epoch the caller chose.
pub(crate) type Now = Duration;

/// An initiator waiting for an answer: a number the supervisor maps to its
/// reply channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ReplyTo(pub u64);

/// What asked for a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// The restart signal (from systemd's `ExecReload=`, the keeper, a user).
    Signal,
    /// A `restart` request on the control socket.
    Control,
}

/// A restart request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RestartAsk {
    pub trigger: Trigger,
    /// Who waits for the outcome (a control request; a signal has nobody).
    pub reply: Option<ReplyTo>,
    /// The new generation starts without the state (`--fresh-state`).
    pub fresh_state: bool,
}

/// A new generation that reported ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Successor {
    pub pid: u32,
    pub generation: u64,
}

/// Why a restart failed, as the initiator and `status` are told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub kind: FailureKind,
    pub reason: String,
}

/// Something that happened to this generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// The service's `main` called `ready()`.
    Ready,
    /// A restart was asked (control request or restart signal).
    RestartAsked(RestartAsk),
    /// A stop reached this process: a `stop` request (`control`), SIGTERM
    /// or SIGINT (from a user, the keeper or systemd).
    StopAsked { control: bool },
    /// The restart's new generation reported ready.
    RestartSucceeded(Successor),
    /// The restart failed (its new generation was killed and reaped).
    RestartFailed(Failure),
    /// The successor, ready, exited ("exited with status 0", "was killed by
    /// signal SIGKILL").
    SuccessorExited(String),
    /// The successor reported itself unhealthy.
    SuccessorUnhealthy(String),
    /// The successor was stopped (a stop reached it): the service stops;
    /// its claim to be the last to exit.
    SuccessorStopping(Claim),
    /// A time [`Machine::next_deadline`] named has come.
    Deadline,
    /// The predecessor ended its probation of this generation: this one is
    /// the service.
    PredecessorCommitted,
    /// The predecessor, holding its listeners during this generation's
    /// probation, was stopped: the service stops; its claim to be the last
    /// to exit.
    PredecessorStopping(Claim),
    /// The predecessor died (its channel closed and its process is gone).
    PredecessorGone,
    /// The predecessor, still alive, closed the channel without handing
    /// over: it gave this generation up.
    PredecessorGaveUp,
    /// The service's `main` returned.
    MainReturned,
    /// The drain is over: the tracked tasks finished, or the drain deadline
    /// passed.
    Drained,
}

/// What systemd (or the keeper) is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    /// `READY=1` and the status.
    Ready(String),
    /// `RELOADING=1` and the status: a restart began.
    Reloading(String),
    /// `RELOADING=1` then `READY=1`: a restart signal was refused (under
    /// `Type=notify-reload` systemd waits for both).
    ReloadRefused(String),
    /// `MAINPID=`, `READY=1` and the status: this pid is the service now.
    MainPid(u32, String),
    /// `STOPPING=1`, with time for the drain.
    Stopping,
}

/// Why a generation ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Its successor took over: drain and exit.
    HandedOver,
    /// The service stops: drain and exit.
    Stopped,
    /// Ended before the predecessor committed (given up by it, or `main`
    /// returned during the probation): exit, and leave the control socket
    /// and pid file to the predecessor, which serves on.
    GaveBack,
}

/// What the supervisor carries out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Tell systemd (and the keeper).
    Notify(Notice),
    /// Answer a restart request with its outcome.
    Answer(ReplyTo, Result<Successor, Failure>),
    /// Refuse a restart request (logged; answered if someone waits).
    Refuse(Option<ReplyTo>, Failure),
    /// Start a restart (a new generation); its outcome comes back as
    /// `RestartSucceeded` or `RestartFailed`.
    StartRestart { fresh_state: bool },
    /// Abort the running restart: its new generation is killed and reaped,
    /// and `RestartFailed` follows.
    AbortRestart,
    /// This generation is ready: the control socket is served from now on,
    /// unclaimed descriptors are closed.
    ServeReady,
    /// This generation became the service (the predecessor committed, died,
    /// or there is none): it joins the service's process group and keeps its
    /// sockets in systemd's fd store.
    BecomeService,
    /// Stop accepting connections and control requests, keeping the
    /// listeners: the successor is on probation.
    Pause,
    /// Accept connections and control requests again.
    Resume,
    /// Watch the successor during its probation: its exit and its reports
    /// come back as `Successor*` events.
    WatchSuccessor,
    /// Kill the successor (it reported itself unhealthy).
    KillSuccessor,
    /// Hand over for good: connections may be handed to the successor,
    /// shutdown begins ([`Ending::HandedOver`]), `Commit` tells the
    /// successor how the drain goes, the spawner is released.
    Commit,
    /// Tell the successor on probation that the service stops, with this
    /// generation's claim to be the last to exit.
    TellSuccessorToStop(Claim),
    /// Tell the predecessor (holding its listeners) that the service stops,
    /// with this generation's claim to be the last to exit.
    TellPredecessorStopping(Claim),
    /// Begin shutdown: stop accepting for good, drain.
    Shutdown(Ending),
    /// Point the pid file at this process.
    WritePidFile,
    /// Record a failed or rolled-back restart (shown by `status`).
    RecordFailure(String),
    /// The state's snapshot taken for a successor is void: this generation
    /// owns its state again.
    ReclaimState,
    /// Exit (the drain is over). `last`: this generation is the last of
    /// the service to exit: it first waits for every older generation (the
    /// predecessor included) to exit, then removes the control socket file.
    /// Every generation that stops removes the pid file if it names it.
    Exit { ending: Ending, last: bool },
}

/// Where a generation is in its life. See `docs/lifecycle.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Not ready yet. `predecessor_holds`: a predecessor waits for this
    /// generation's READY (false in a first generation, or once the
    /// predecessor died).
    Starting { predecessor_holds: bool },
    /// Ready, on probation as the new one: the predecessor holds its
    /// listeners and may take the service back. Restart requests wait for
    /// its commit.
    OnProbation { deferred: Vec<RestartAsk> },
    /// The service: accepts, answers the control socket, may restart.
    Serving,
    /// A restart runs; `ask` waits for its outcome.
    Restarting { ask: RestartAsk },
    /// The successor is ready and on probation until `ends`; this
    /// generation holds its listeners, paused.
    SuccessorOnProbation { successor: Successor, ends: Now },
    /// The successor reported itself unhealthy and is being killed; once it
    /// exited this generation serves again.
    RollingBack { successor: Successor, why: String },
    /// Handed over to `successor`: draining, then exit.
    Draining { successor: Successor },
    /// Stopping: draining, then exit. `aborting`: a restart whose outcome
    /// is still to come (its initiator is answered then). `other`: the
    /// generation on the other side of a probation, which stops too.
    /// `last`: this generation's claim to be the last of the service to
    /// exit (`None`: another generation exits last).
    Stopping {
        aborting: Option<RestartAsk>,
        other: Other,
        last: Option<Claim>,
        drained: bool,
    },
    /// Given back (see [`Ending::GaveBack`]): exiting.
    GivingBack,
    /// Exit asked; nothing more happens.
    Exited,
}

/// A stopping generation's claim to be the last of the service to exit
/// (the one that waits for every other and holds `shellflip stop`'s
/// connection until then). When both sides of a probation stop, each
/// announces its claim and the higher one wins: a `stop` request (whose
/// client waits on that generation) before a signal, then the newer
/// generation.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub(crate) struct Claim {
    /// Asked on the control socket.
    pub control: bool,
    /// The claiming generation.
    pub generation: u64,
}

/// The other side of a probation, for a stopping generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Other {
    /// None (or it is gone).
    None,
    /// The predecessor, which holds its listeners and stops too.
    Predecessor,
    /// The successor, told to stop; exited once `None`.
    Successor(Successor),
}

/// The settings the decisions depend on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// This process's pid (for statuses).
    pub pid: u32,
    /// This generation's number.
    pub generation: u64,
    /// How long a ready successor is watched before the handover commits.
    pub probation: Duration,
    /// How long a new generation may take to be ready (its predecessor
    /// enforces it while alive; once it is gone, the generation itself).
    pub ready_timeout: Duration,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    settings: Settings,
    phase: Phase,
}

impl Machine {
    /// A generation just started: a first one (`has_predecessor` false), or
    /// a new one whose predecessor waits for its READY.
    pub(crate) fn new(settings: Settings, has_predecessor: bool) -> Machine {
        Machine {
            settings,
            phase: Phase::Starting {
                predecessor_holds: has_predecessor,
            },
        }
    }

    /// The phase.
    pub(crate) fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The phase as `status` shows it.
    pub(crate) fn protocol_phase(&self) -> ProtocolPhase {
        match &self.phase {
            Phase::Starting { .. } => ProtocolPhase::Starting,
            Phase::OnProbation { .. } | Phase::Serving => ProtocolPhase::Serving,
            Phase::Restarting { .. } => ProtocolPhase::Restarting,
            Phase::SuccessorOnProbation { .. } | Phase::RollingBack { .. } => {
                ProtocolPhase::HandingOver
            }
            Phase::Draining { .. } => ProtocolPhase::Draining,
            Phase::Stopping { .. } | Phase::GivingBack | Phase::Exited => ProtocolPhase::Stopping,
        }
    }

    /// True while this generation is the service (it may cut older drains
    /// beyond `max_draining`).
    pub(crate) fn is_service(&self) -> bool {
        matches!(self.phase, Phase::Serving | Phase::Restarting { .. })
    }

    /// When [`Event::Deadline`] is due, if a deadline runs.
    pub(crate) fn next_deadline(&self) -> Option<Now> {
        match &self.phase {
            Phase::SuccessorOnProbation { ends, .. } => Some(*ends),
            Phase::Starting {
                predecessor_holds: false,
            } if self.settings.generation > 1 => Some(self.settings.ready_timeout),
            _ => None,
        }
    }

    /// Takes one event at time `now`; returns what to do, in order.
    pub(crate) fn handle(&mut self, event: Event, now: Now) -> Vec<Action> {
        let mut actions = Vec::new();
        match event {
            Event::Ready => self.on_ready(&mut actions),
            Event::RestartAsked(ask) => self.on_restart_asked(ask, &mut actions),
            Event::StopAsked { control } => self.on_stop_asked(control, &mut actions),
            Event::RestartSucceeded(successor) => {
                self.on_restart_succeeded(successor, now, &mut actions)
            }
            Event::RestartFailed(failure) => self.on_restart_failed(failure, &mut actions),
            Event::SuccessorExited(status) => self.on_successor_exited(status, &mut actions),
            Event::SuccessorUnhealthy(reason) => self.on_successor_unhealthy(reason, &mut actions),
            Event::SuccessorStopping(theirs) => self.on_other_stopping(theirs, true, &mut actions),
            Event::Deadline => self.on_deadline(now, &mut actions),
            Event::PredecessorCommitted | Event::PredecessorGone => {
                self.on_predecessor_handed_over(event == Event::PredecessorGone, &mut actions)
            }
            Event::PredecessorStopping(theirs) => {
                self.on_other_stopping(theirs, false, &mut actions)
            }
            Event::PredecessorGaveUp => self.give_back(&mut actions),
            Event::MainReturned => self.on_main_returned(&mut actions),
            Event::Drained => self.on_drained(&mut actions),
        }
        actions
    }

    fn status(&self, what: &str) -> String {
        format!(
            "{what}: generation {}, pid {}",
            self.settings.generation, self.settings.pid
        )
    }

    fn on_ready(&mut self, actions: &mut Vec<Action>) {
        let Phase::Starting { predecessor_holds } = self.phase else {
            return;
        };
        actions.push(Action::ServeReady);
        if predecessor_holds {
            // The predecessor read READY (or will): it moves MAINPID here
            // and watches this generation for the probation.
            self.phase = Phase::OnProbation {
                deferred: Vec::new(),
            };
            return;
        }
        let status = self.status("serving");
        actions.push(Action::Notify(if self.settings.generation == 1 {
            Notice::Ready(status)
        } else {
            // The predecessor died before this READY: nobody else moves
            // MAINPID here.
            Notice::MainPid(self.settings.pid, status)
        }));
        actions.push(Action::BecomeService);
        self.phase = Phase::Serving;
    }

    fn on_restart_asked(&mut self, ask: RestartAsk, actions: &mut Vec<Action>) {
        let refusal = match &mut self.phase {
            Phase::Starting { .. } => failure(RestartError::NotReady(
                "it has not reported ready yet".to_owned(),
            )),
            Phase::OnProbation { deferred } => {
                // Answered once the predecessor commits (or refused if it
                // takes the service back or the service stops).
                deferred.push(ask);
                return;
            }
            Phase::Serving => {
                actions.push(Action::Notify(Notice::Reloading(format!(
                    "restarting: starting generation {}",
                    self.settings.generation + 1
                ))));
                actions.push(Action::StartRestart {
                    fresh_state: ask.fresh_state,
                });
                self.phase = Phase::Restarting { ask };
                return;
            }
            Phase::Restarting { .. } => failure(RestartError::InProgress),
            Phase::SuccessorOnProbation { successor, .. }
            | Phase::RollingBack { successor, .. }
            | Phase::Draining { successor } => failure(RestartError::HandedOver {
                pid: successor.pid,
                generation: successor.generation,
            }),
            Phase::Stopping { .. } | Phase::GivingBack | Phase::Exited => shutting_down(),
        };
        if ask.trigger == Trigger::Signal && self.is_service() {
            // Under Type=notify-reload systemd sent this signal and waits
            // for RELOADING=1 then READY=1: answer at once.
            actions.push(Action::Notify(Notice::ReloadRefused(format!(
                "{}; a restart was refused: {}",
                self.status("serving"),
                refusal.reason
            ))));
        }
        actions.push(Action::Refuse(ask.reply, refusal));
    }

    fn on_restart_succeeded(&mut self, successor: Successor, now: Now, actions: &mut Vec<Action>) {
        match std::mem::replace(&mut self.phase, Phase::Exited) {
            Phase::Restarting { ask } => {
                // MAINPID while this process is still the main one.
                actions.push(Action::Notify(Notice::MainPid(
                    successor.pid,
                    format!(
                        "serving: generation {}, pid {}",
                        successor.generation, successor.pid
                    ),
                )));
                actions.push(Action::Pause);
                actions.push(Action::WatchSuccessor);
                // Only now, once paused: whatever the initiator sends next
                // reaches the successor.
                if let Some(reply) = ask.reply {
                    actions.push(Action::Answer(reply, Ok(successor)));
                }
                self.phase = Phase::SuccessorOnProbation {
                    successor,
                    ends: now + self.settings.probation,
                };
                if self.settings.probation.is_zero() {
                    self.on_deadline(now, actions);
                }
            }
            Phase::Stopping {
                aborting: Some(ask),
                last,
                drained,
                ..
            } => self.stopping_successor_ready(ask, successor, last, drained, actions),
            phase => self.phase = phase,
        }
    }

    fn on_restart_failed(&mut self, failure: Failure, actions: &mut Vec<Action>) {
        match std::mem::replace(&mut self.phase, Phase::Exited) {
            Phase::Restarting { ask } => {
                actions.push(Action::RecordFailure(failure.reason.clone()));
                actions.push(Action::ReclaimState);
                self.serve_again(&failure.reason, false, actions);
                if let Some(reply) = ask.reply {
                    actions.push(Action::Answer(reply, Err(failure)));
                }
            }
            Phase::Stopping {
                aborting: Some(ask),
                other,
                last,
                drained,
            } => self.stopping_restart_failed(ask, failure, other, last, drained, actions),
            phase => self.phase = phase,
        }
    }

    /// After a failed restart or a rollback: this generation serves again;
    /// the pid file names it, systemd hears READY (and MAINPID when it had
    /// been told of the successor).
    fn serve_again(&mut self, why: &str, main_pid_moved: bool, actions: &mut Vec<Action>) {
        actions.push(Action::WritePidFile);
        let status = format!("{}; the last restart failed: {why}", self.status("serving"));
        actions.push(Action::Notify(if main_pid_moved {
            Notice::MainPid(self.settings.pid, status)
        } else {
            Notice::Ready(status)
        }));
        self.phase = Phase::Serving;
    }

    fn on_successor_exited(&mut self, status: String, actions: &mut Vec<Action>) {
        let (successor, what) = match &mut self.phase {
            Phase::SuccessorOnProbation { successor, .. } => {
                (*successor, format!("{status} during its probation"))
            }
            Phase::RollingBack { successor, why } => (*successor, why.clone()),
            Phase::Stopping { other, .. } => {
                // Never a rollback after a stop.
                if let Other::Successor(_) = other {
                    *other = Other::None;
                }
                self.exit_if_done(actions);
                return;
            }
            // Draining: the successor is the service; its end is its own
            // successor's or the service manager's business.
            _ => return,
        };
        let why = format!(
            "the new generation {} (pid {}) {what}; rolled back",
            successor.generation, successor.pid
        );
        actions.push(Action::RecordFailure(why.clone()));
        actions.push(Action::ReclaimState);
        actions.push(Action::Resume);
        self.serve_again(&why, true, actions);
    }

    fn on_successor_unhealthy(&mut self, reason: String, actions: &mut Vec<Action>) {
        if let Phase::SuccessorOnProbation { successor, .. } = self.phase {
            actions.push(Action::KillSuccessor);
            self.phase = Phase::RollingBack {
                successor,
                why: format!(
                    "reported itself unhealthy during its probation ({reason}); it was killed"
                ),
            };
        }
    }

    fn on_deadline(&mut self, now: Now, actions: &mut Vec<Action>) {
        match self.phase {
            Phase::SuccessorOnProbation { successor, ends } if now >= ends => {
                self.commit(successor, actions)
            }
            Phase::Starting {
                predecessor_holds: false,
            } if self.settings.generation > 1 && now >= self.settings.ready_timeout => {
                // Never ready, and the predecessor that would have killed it
                // is gone: nobody else ends it.
                self.give_back(actions)
            }
            _ => {}
        }
    }

    /// Hands over to `successor` for good, and drains.
    fn commit(&mut self, successor: Successor, actions: &mut Vec<Action>) {
        actions.push(Action::Commit);
        self.phase = Phase::Draining { successor };
    }

    fn on_predecessor_handed_over(&mut self, died: bool, actions: &mut Vec<Action>) {
        match std::mem::replace(&mut self.phase, Phase::Exited) {
            Phase::Starting { .. } => {
                // Died before this READY (a commit cannot come before it):
                // taken over once ready.
                self.phase = Phase::Starting {
                    predecessor_holds: false,
                };
            }
            Phase::OnProbation { deferred } => {
                if died {
                    // It would have moved MAINPID back had it lived.
                    actions.push(Action::Notify(Notice::MainPid(
                        self.settings.pid,
                        self.status("serving"),
                    )));
                }
                actions.push(Action::BecomeService);
                self.phase = Phase::Serving;
                // The first waiting request starts a restart, the others
                // are told one is in progress.
                for ask in deferred {
                    self.on_restart_asked(ask, actions);
                }
            }
            phase => self.phase = phase,
        }
    }

    fn on_drained(&mut self, actions: &mut Vec<Action>) {
        match &mut self.phase {
            Phase::Draining { .. } => {
                actions.push(Action::Exit {
                    ending: Ending::HandedOver,
                    last: false,
                });
                self.phase = Phase::Exited;
            }
            Phase::Stopping { drained, .. } => {
                *drained = true;
                self.exit_if_done(actions);
            }
            _ => {}
        }
    }
}

/// What the initiator of a refused restart is told.
pub(crate) fn failure(error: RestartError) -> Failure {
    Failure {
        kind: error.kind(),
        reason: error.to_string(),
    }
}

pub(super) fn shutting_down() -> Failure {
    failure(RestartError::ShuttingDown)
}

pub(super) fn refuse_all(asks: Vec<RestartAsk>, why: fn() -> Failure, actions: &mut Vec<Action>) {
    for ask in asks {
        actions.push(Action::Refuse(ask.reply, why()));
    }
}
