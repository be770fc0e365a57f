//! The supervisor's side of a restart, in the order things happen: the
//! machine starts it ([`Supervisor::start_restart`]); `parent::restart`
//! runs on a task of its own (spawn, handover, the state when asked, the
//! READY or why not); its outcome becomes `RestartSucceeded` or
//! `RestartFailed` ([`Supervisor::on_restart_outcome`]). What follows — the
//! probation, the commit or the rollback — is the machine's decision,
//! carried out in `actions.rs` and watched in `successor.rs`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Supervisor;
use crate::channel::{HandoverHeader, StateOffer};
use crate::error::RestartError;
use crate::generation::encode_state_for_handover;
use crate::machine::{Event, Failure, Phase, Successor, Trigger};
use crate::parent::{self, NewGeneration, Plan};
use crate::telemetry::{self, RestartId};
use crate::timing;

/// A restart's result.
pub(super) type RestartOutcome = Result<NewGeneration, RestartError>;

/// The restart running now.
pub(super) struct RunningRestart {
    /// Whether the new generation starts with fresh state.
    fresh_state: bool,
    pub(super) started: Instant,
    pub(super) abort: CancellationToken,
}

impl Supervisor {
    /// Starts a restart on a task of its own; its outcome comes back on
    /// `outcome_rx`. A restart that cannot even begin (the listeners cannot
    /// be duplicated) fails at once.
    pub(super) fn start_restart(&mut self, fresh_state: bool) {
        let abort = CancellationToken::new();
        self.restart = Some(RunningRestart {
            fresh_state,
            started: Instant::now(),
            abort: abort.clone(),
        });
        let plan = match self.plan(fresh_state) {
            Ok(plan) => plan,
            Err(error) => {
                self.pending.push_back(failed(&error));
                return;
            }
        };
        let trigger = match self.machine.phase() {
            Phase::Restarting { ask } if ask.trigger == Trigger::Signal => "signal",
            Phase::Restarting { .. } => "control socket",
            _ => "unknown",
        };
        tracing::info!(
            generation = plan.header.generation,
            trigger,
            spawner = %self.spawner.describe(),
            fresh_state,
            "restart started"
        );
        let spawner = self.spawner.clone();
        let outcome_tx = self.outcome_tx.clone();
        let generation = Arc::clone(&self.generation);
        let restart = async move {
            // Encoding a large state takes a while: done on the blocking
            // pool (when the new generation asks), not in the supervisor,
            // which keeps answering status requests and signals meanwhile.
            let encode = encode_state_for_handover(generation);
            let outcome = parent::restart(&spawner, plan, encode, abort).await;
            let _ = outcome_tx.send(outcome).await;
        };
        // In this restart's span: its lines carry its id.
        tokio::spawn(restart.instrument(tracing::Span::current()));
    }

    /// How long the running restart has taken (zero without one).
    pub(super) fn restart_elapsed(&self) -> Duration {
        self.restart
            .as_ref()
            .map(|r| r.started.elapsed())
            .unwrap_or_default()
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
            header: HandoverHeader {
                generation: self.generation.number + 1,
                fd_names: fds.iter().map(|(name, _)| name.clone()).collect(),
                state: match (self.generation.state_encoder.get().is_some(), fresh_state) {
                    (false, _) => StateOffer::None,
                    (true, false) => StateOffer::OnRequest,
                    (true, true) => StateOffer::Fresh {
                        reason: "the restart was asked with --fresh-state".to_owned(),
                    },
                },
                lineage: self
                    .lineage
                    .for_successor(self.generation.number + 1, systemd_sockets),
                restart_began_unix_us: 0,
                predecessor_pid: std::process::id(),
                // Older generations still draining, for the new one to know of.
                draining: self.older.list(),
                restart_id: Some(self.record.current.unwrap_or(RestartId {
                    generation: self.generation.number,
                    ordinal: 0,
                })),
                totals: self.record.ledger.exposed(),
            },
            fds,
            ready_timeout: self.config.ready_timeout,
        })
    }

    /// The restart's outcome, as the machine's event; a ready successor is
    /// kept (watched once the machine says so).
    pub(super) async fn on_restart_outcome(&mut self, outcome: RestartOutcome) -> Event {
        let elapsed = self.restart_elapsed();
        let fresh_state = self.restart.as_ref().is_some_and(|r| r.fresh_state);
        let outcome = match outcome {
            // READY, then dead before this generation took it in: the
            // restart failed (never answer `restarted` with a dead pid).
            Ok(mut next) => match next.exited().await {
                Some(status) => Err(RestartError::ChildFailed {
                    pid: next.pid,
                    reason: format!("it {status} right after it reported ready"),
                }),
                None => Ok(next),
            },
            Err(error) => Err(error),
        };
        match outcome {
            Ok(next) => {
                // This generation's histograms, and the state it handed over.
                telemetry::observe_restart(&next.timings);
                if let Some(report) = &next.state_report {
                    self.record.state_bytes = Some(report.bytes);
                }
                let ms = timing::ms;
                tracing::info!(
                    fresh_state,
                    pid = next.pid,
                    generation = next.generation,
                    spawn_ms = ms(next.timings.spawn),
                    handover_ms = ms(next.timings.handover),
                    ready_ms = ms(next.timings.ready),
                    duration_ms = ms(elapsed),
                    probation = %shellflip_settings::format_duration(self.config.probation),
                    "the new generation is ready; it goes on probation"
                );
                let successor = Successor {
                    pid: next.pid,
                    generation: next.generation,
                };
                self.successor = Some(next);
                Event::RestartSucceeded(successor)
            }
            Err(error) => {
                tracing::error!(
                    reason = %error,
                    duration_ms = timing::ms(elapsed),
                    "restart failed; this generation keeps serving"
                );
                failed(&error)
            }
        }
    }
}

/// A restart's error, as the machine's event.
fn failed(error: &RestartError) -> Event {
    Event::RestartFailed(Failure {
        kind: error.kind(),
        reason: error.to_string(),
    })
}
