//! The supervisor's side of a restart, in the order things happen:
//! a request is refused, deferred or started ([`Supervisor::request_restart`]);
//! `parent::restart` runs on a task of its own; on READY the new generation
//! goes on probation while this one holds its listeners
//! ([`Supervisor::on_outcome`]); the verdict either hands over for good —
//! this generation drains ([`Supervisor::commit`]) — or takes the service
//! back ([`Supervisor::roll_back`]). A failure before READY is answered with
//! its reason and this generation serves on.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Phase, Supervisor};
use crate::channel::{Draining, ParentMessage, StateOffer};
use crate::control::protocol::{Response, RestartSuccess};
use crate::error::RestartError;
use crate::generation::{encode_state_for_handover, Admission, Ending};
use crate::parent::{self, NewGeneration, Plan, Verdict};
use crate::systemd::{self, Notification};
use crate::timing;

/// What asked for a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trigger {
    Signal,
    Control,
}

/// A restart's result, with the initiator's reply channel when the
/// supervisor is to answer it.
pub(super) type RestartOutcome = (
    Result<NewGeneration, RestartError>,
    Option<oneshot::Sender<Response>>,
);

pub(super) struct RunningRestart {
    trigger: Trigger,
    /// Whether the new generation starts with fresh state (asked with
    /// `--fresh-state`).
    fresh_state: bool,
    pub(super) started: Instant,
    pub(super) abort: CancellationToken,
}

impl Supervisor {
    pub(super) fn refuse(reply: Option<oneshot::Sender<Response>>, error: &RestartError) {
        tracing::info!(reason = %error, "restart refused");
        if let Some(reply) = reply {
            let _ = reply.send(Response::RestartFailed {
                kind: error.kind(),
                reason: error.to_string(),
            });
        }
    }

    /// A restart request: refused with the reason, deferred until this
    /// generation took over, or started.
    pub(super) fn request_restart(
        &mut self,
        trigger: Trigger,
        reply: Option<oneshot::Sender<Response>>,
        fresh_state: bool,
    ) {
        let refusal = match self.phase {
            Phase::Starting => RestartError::NotReady("it has not reported ready yet".to_owned()),
            Phase::Restarting => RestartError::InProgress,
            Phase::HandingOver | Phase::Draining => match self.handed_to {
                Some((pid, generation)) => RestartError::HandedOver { pid, generation },
                None => RestartError::InProgress,
            },
            Phase::Stopping => RestartError::ShuttingDown,
            Phase::Serving if !self.took_over.is_cancelled() => {
                // Ready, but the previous generation has not handed over
                // yet (its probation of this one runs): the request waits.
                tracing::info!(
                    ?trigger,
                    "restart requested before the previous generation handed over; it waits for the hand-over"
                );
                self.deferred.push((trigger, reply, fresh_state));
                return;
            }
            Phase::Serving => return self.start_restart(trigger, reply, fresh_state),
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

    fn start_restart(
        &mut self,
        trigger: Trigger,
        reply: Option<oneshot::Sender<Response>>,
        fresh_state: bool,
    ) {
        let started = Instant::now();
        self.systemd.send(&Notification::reloading(
            systemd::monotonic_usec(),
            &format!(
                "restarting: starting generation {}",
                self.generation.number + 1
            ),
        ));
        let plan = match self.plan(fresh_state) {
            Ok(plan) => plan,
            Err(error) => {
                self.lineage.record_failure(started.elapsed(), &error);
                self.back_to_serving(&error, false);
                Self::refuse(reply, &error);
                return;
            }
        };
        tracing::info!(
            ?trigger,
            generation = plan.generation,
            spawner = %self.spawner.describe(),
            fresh_state,
            "restart started"
        );
        self.phase = Phase::Restarting;
        let abort = CancellationToken::new();
        self.restart = Some(RunningRestart {
            trigger,
            fresh_state,
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
            // The supervisor answers the initiator: a success once this
            // generation takes no new work, a failure once the pid file and
            // systemd are set right again.
            let _ = outcome_tx.send((outcome, reply)).await;
        });
    }

    /// What the restart hands over, but the state (offered: sent when the
    /// new generation asks).
    fn plan(&mut self, fresh_state: bool) -> Result<Plan, RestartError> {
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
            draining: self.older.list(),
            state: match (self.generation.keeps_state(), fresh_state) {
                (false, _) => StateOffer::None,
                (true, false) => StateOffer::OnRequest,
                (true, true) => StateOffer::Fresh {
                    reason: "the restart was asked with --fresh-state".to_owned(),
                },
            },
            ready_timeout: self.limits.ready_timeout,
        })
    }

    /// The restart's outcome: on READY the new generation goes on
    /// probation; on failure this generation serves on.
    pub(super) async fn on_outcome(
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
                match &next.state_report {
                    Some(report) if report.not_carried.is_some() => {
                        tracing::warn!(generation = next.generation, "{report}");
                    }
                    Some(report) => tracing::info!(generation = next.generation, "{report}"),
                    None => {}
                }
                let ms = timing::ms;
                tracing::info!(
                    fresh_state = restart.fresh_state,
                    trigger = ?restart.trigger,
                    pid = next.pid,
                    generation = next.generation,
                    spawn_ms = ms(next.timings.spawned),
                    handover_ms = ms(next.timings.handover_sent),
                    ready_ms = ms(next.timings.ready),
                    duration_ms = ms(elapsed),
                    probation = %humantime::format_duration(self.limits.probation),
                    "restart succeeded; the new generation is on probation"
                );
                let answer = Response::Restarted(RestartSuccess {
                    pid: next.pid,
                    generation: next.generation,
                    duration_ms: ms(elapsed),
                    state: next.state_report.clone(),
                });
                self.begin_probation(next).await;
                // Only now: this generation accepts no connection and no
                // control request any more, so whatever the initiator sends
                // once answered reaches the new generation (answered
                // sooner, a request or a connection could still be taken
                // here, and be refused or drained with this generation).
                if let Some(reply) = reply {
                    let _ = reply.send(answer);
                }
            }
            Err(error) => {
                tracing::error!(
                    trigger = ?restart.trigger,
                    reason = %error,
                    duration_ms = timing::ms(elapsed),
                    "restart failed; this generation keeps serving"
                );
                self.lineage.record_failure(elapsed, &error);
                // A snapshot the failed generation took is void.
                self.generation.reclaim_state();
                if self.phase == Phase::Restarting {
                    self.phase = Phase::Serving;
                    self.back_to_serving(&error, false);
                } else {
                    // Aborted by a stop: the killed successor may have
                    // written the pid file; this generation removes it when
                    // its drain ends.
                    self.generation.write_pid_file();
                }
                if let Some(reply) = reply {
                    let _ = reply.send(Response::RestartFailed {
                        kind: error.kind(),
                        reason: error.to_string(),
                    });
                }
            }
        }
    }

    /// The new generation is ready: systemd follows it, this generation
    /// stops accepting (connections and control requests) but holds its
    /// listeners, and watches the new one for the probation.
    async fn begin_probation(&mut self, mut next: NewGeneration) {
        // Sent while this process is still the main one: systemd follows
        // the new generation from now on (and back, on a rollback).
        self.systemd.send(&Notification::handed_over(
            next.pid,
            &format!("serving: generation {}, pid {}", next.generation, next.pid),
        ));
        self.phase = Phase::HandingOver;
        self.handed_to = Some((next.pid, next.generation));
        self.generation.admission.send_replace(Admission::Paused);
        self.stop_accepting_control().await;
        let cut_short = CancellationToken::new();
        self.probation = Some(cut_short.clone());
        let probation = self.limits.probation;
        let verdicts = self.verdict_tx.clone();
        tokio::spawn(async move {
            let verdict = tokio::select! {
                verdict = next.probation(probation) => verdict,
                () = cut_short.cancelled() => Verdict::Passed,
            };
            let _ = verdicts.send((next, verdict)).await;
        });
    }

    /// The end of a successor's probation.
    pub(super) async fn on_verdict(&mut self, next: NewGeneration, verdict: Verdict) {
        self.probation = None;
        match verdict {
            Verdict::Passed => self.commit(next).await,
            Verdict::Exited(status) => {
                self.roll_back(next, format!("{status} during its probation"))
                    .await;
            }
            Verdict::Unhealthy(reason) => {
                self.roll_back(
                    next,
                    format!(
                        "reported itself unhealthy during its probation ({reason}); it was killed"
                    ),
                )
                .await;
            }
        }
        if std::mem::take(&mut self.stop_after_probation) && self.phase == Phase::Serving {
            // Rolled back after a stop was asked: the stop still holds
            // (the successor most likely exited of the same SIGTERM).
            tracing::info!("a stop was asked during the probation: this generation stops too");
            self.begin_stop().await;
        }
    }

    /// Hands over for good: the new generation takes over (restart
    /// requests, the older generations' drains), and this one drains.
    async fn commit(&mut self, next: NewGeneration) {
        // Connections may be handed to it from the moment shutdown fires.
        next.link.start();
        self.generation.set_successor(Arc::clone(&next.link));
        self.generation
            .begin_shutdown(Ending::HandedOver, self.limits.drain_timeout);
        let drain = self.own_drain();
        if let Err(e) = next.commit(drain).await {
            tracing::warn!(error = %e, pid = next.pid, "could not tell the new generation that the hand-over is complete; it takes over when this one exits");
        }
        for older in self.older.list() {
            let _ = next.tell(&ParentMessage::Progress(older)).await;
        }
        tracing::info!(
            pid = next.pid,
            generation = next.generation,
            "handed over; draining"
        );
        // The spawner's job is done: it exits, and the new generation is
        // re-parented to the service manager, which then sees it die if it
        // does.
        self.spawner.release();
        self.phase = Phase::Draining;
        self.successor = Some(next);
    }

    /// The successor failed its probation: this generation takes the
    /// service back — accepting, the control socket, the pid file and
    /// systemd's MAINPID — and records the restart as rolled back.
    async fn roll_back(&mut self, next: NewGeneration, what: String) {
        let (pid, generation) = (next.pid, next.generation);
        drop(next);
        let why = format!("the new generation {generation} (pid {pid}) {what}; rolled back");
        tracing::error!(pid, generation, "{why}; this generation serves again");
        self.handed_to = None;
        self.lineage.record_rollback(&why);
        self.generation.reclaim_state();
        self.phase = Phase::Serving;
        self.generation.admission.send_replace(Admission::Open);
        self.resume_accepting_control();
        self.back_to_serving(&why, true);
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

    /// Tells the successor how the drain goes.
    pub(super) async fn report_progress(&mut self) {
        if let Some(next) = &self.successor {
            let _ = next.tell(&ParentMessage::Progress(self.own_drain())).await;
        }
    }
}
