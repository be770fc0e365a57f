//! What the supervisor records of restarts — read from the events it gives
//! the machine and the actions the machine returns, never deciding anything:
//! each restart's final outcome in the totals carried across generations
//! (`telemetry::Ledger`), the durations of the restarts it ran, and the id
//! that every line of one restart carries (`telemetry::RestartId`).
//!
//! | outcome | counted when |
//! |---|---|
//! | `refused` | `Action::Refuse` |
//! | `succeeded` | `Action::Commit` (the probation passed) |
//! | `rolled_back` | `Action::Resume` (the successor failed its probation) |
//! | `failed` | `Event::RestartFailed` while the restart runs |
//! | `aborted` | `Event::RestartFailed` of kind `shutting_down` (a stop aborted it), a successor ready as the stop arrived, or a stop during the successor's probation |

use shellflip_control::protocol::FailureKind;
use tracing::{Instrument, Span};

use crate::generation::Generation;
use crate::machine::{Action, Event, Phase};
use crate::telemetry::{self, Gauges, Ledger, Outcome, RestartId, Totals};

use super::Supervisor;

/// The supervisor's records. See the module docs.
pub(super) struct Record {
    pub(super) ledger: Ledger,
    /// The restart whose lines are being logged: the one this generation
    /// runs (and, once it committed, the drain it began), or — in a new
    /// generation, until it is the service — the one that started it.
    pub(super) current: Option<RestartId>,
    /// Restarts this generation started.
    started: u64,
    /// The predecessor's final totals, from its commit until this
    /// generation becomes the service.
    pub(super) committed: Option<Totals>,
    /// The state envelope of the last handover.
    pub(super) state_bytes: Option<u64>,
}

impl Record {
    /// A generation's records at its start: `totals` and `restart` are what
    /// the predecessor handed over (`None` in a first generation).
    pub(super) fn new(
        generation: &Generation,
        restart: Option<RestartId>,
        totals: Option<Totals>,
    ) -> Record {
        Record {
            ledger: totals.map_or_else(Ledger::first, Ledger::inherited),
            current: restart,
            started: 0,
            committed: None,
            state_bytes: generation
                .state_report
                .as_ref()
                .filter(|_| generation.number > 1)
                .map(|report| report.bytes),
        }
    }

    /// The restart a dispatch whose machine returned `actions` is about:
    /// the one they start, if they start one (so that the event which
    /// triggered it is logged with its id), else the current one.
    pub(super) fn about(&self, actions: &[Action], generation: u64) -> Option<RestartId> {
        if actions
            .iter()
            .any(|a| matches!(a, Action::StartRestart { .. }))
        {
            return Some(RestartId {
                generation,
                ordinal: self.started + 1,
            });
        }
        self.current
    }

    /// Before `action` is carried out: counts what it makes final, and
    /// returns the span to carry it out in (a refusal is about no restart).
    fn before(&mut self, action: &Action, generation: u64) -> Span {
        match action {
            Action::Refuse(..) => {
                self.ledger.count(Outcome::Refused);
                return Span::none();
            }
            Action::StartRestart { .. } => {
                self.started += 1;
                self.current = Some(RestartId {
                    generation,
                    ordinal: self.started,
                });
                // What the header hands over is what is exposed now; what
                // this generation counts from here on waits for the outcome.
                self.ledger.hold();
            }
            Action::Commit => {
                self.ledger.settle(Some(Outcome::Succeeded));
                self.ledger.freeze();
            }
            Action::Resume => self.ledger.settle(Some(Outcome::RolledBack)),
            Action::BecomeService => self.ledger.take_over(self.committed.take()),
            _ => {}
        }
        telemetry::span_of(self.current)
    }
}

/// The outcome of this generation's restart that an event makes final,
/// read from the phases before and after it (the outcomes that come with
/// an action are counted in [`Record::before`]).
pub(super) fn settled_by(before: &Phase, event: &Event, after: &Phase) -> Option<Outcome> {
    match (before, event) {
        (
            Phase::Restarting { .. }
            | Phase::Stopping {
                aborting: Some(_), ..
            },
            Event::RestartFailed(failure),
        ) => Some(match failure.kind {
            FailureKind::ShuttingDown => Outcome::Aborted,
            _ => Outcome::Failed,
        }),
        (
            Phase::Stopping {
                aborting: Some(_), ..
            },
            Event::RestartSucceeded(_),
        ) => Some(Outcome::Aborted),
        (Phase::SuccessorOnProbation { .. } | Phase::RollingBack { .. }, _)
            if matches!(after, Phase::Stopping { .. }) =>
        {
            Some(Outcome::Aborted)
        }
        _ => None,
    }
}

impl Supervisor {
    /// Carries out `actions`, each in the span of the restart it is about,
    /// counting the outcomes they make final. `settled`: the outcome the
    /// event made final (see [`settled_by`]), counted first.
    pub(super) async fn carry_out_all(&mut self, actions: Vec<Action>, settled: Option<Outcome>) {
        if let Some(outcome) = settled {
            self.record.ledger.settle(Some(outcome));
        }
        let generation = self.generation.number;
        for action in actions {
            let span = self.record.before(&action, generation);
            // Whether the restart whose lines are logged ends with `action`:
            // a new generation that became the service logs its own lines
            // from then on; a rollback is the end of the restart.
            let ends = matches!(action, Action::Resume)
                || (matches!(action, Action::BecomeService) && generation > 1);
            self.carry_out(action).instrument(span).await;
            if ends {
                self.record.current = None;
            }
        }
        if settled.is_some() {
            self.record.current = None;
        }
    }

    /// Records the totals and gauges (through the `metrics` facade, with
    /// that feature; `ready()` records them again).
    pub(super) fn publish_metrics(&mut self) {
        let gauges = Gauges {
            generation: self.generation.number,
            draining: self.older.list().len(),
            state_bytes: self.record.state_bytes,
        };
        self.generation
            .publish_metrics(self.record.ledger.exposed(), gauges);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::machine::{Failure, Machine, ReplyTo, RestartAsk, Settings, Successor, Trigger};

    fn machine(generation: u64) -> Machine {
        Machine::new(
            Settings {
                pid: 100,
                generation,
                probation: Duration::from_secs(2),
                ready_timeout: Duration::from_secs(30),
            },
            false,
        )
    }

    fn ask() -> Event {
        Event::RestartAsked(RestartAsk {
            trigger: Trigger::Control,
            reply: Some(ReplyTo(1)),
            fresh_state: false,
        })
    }

    fn ready() -> Event {
        Event::RestartSucceeded(Successor {
            pid: 200,
            generation: 2,
        })
    }

    fn failed(kind: FailureKind) -> Event {
        Event::RestartFailed(Failure {
            kind,
            reason: "why".to_owned(),
        })
    }

    /// Drives the real machine through `events` (one second apart), keeping
    /// the ledger as the supervisor does; the totals at the end.
    fn totals_after(events: &[Event]) -> Totals {
        let mut machine = machine(1);
        let mut ledger = Ledger::first();
        let mut now = Duration::ZERO;
        for event in [Event::Ready].iter().chain(events) {
            let before = machine.phase().clone();
            let actions = machine.handle(event.clone(), now);
            if let Some(outcome) = settled_by(&before, event, machine.phase()) {
                ledger.settle(Some(outcome));
            }
            for action in &actions {
                match action {
                    Action::Refuse(..) => ledger.count(Outcome::Refused),
                    Action::StartRestart { .. } => ledger.hold(),
                    Action::Commit => {
                        ledger.settle(Some(Outcome::Succeeded));
                        ledger.freeze();
                    }
                    Action::Resume => ledger.settle(Some(Outcome::RolledBack)),
                    _ => {}
                }
            }
            now += Duration::from_secs(1);
        }
        ledger.exposed()
    }

    fn only(outcome: Outcome) -> Totals {
        let mut totals = Totals::default();
        totals.count(outcome);
        totals
    }

    #[test]
    fn each_restart_is_counted_once_by_its_final_outcome() {
        // Committed after the probation (two deadlines: the second one is
        // past its end).
        assert_eq!(
            totals_after(&[ask(), ready(), Event::Deadline, Event::Deadline]),
            only(Outcome::Succeeded)
        );
        assert_eq!(
            totals_after(&[ask(), failed(FailureKind::Failed)]),
            only(Outcome::Failed)
        );
        let exited = Event::SuccessorExited("exited with status 1".to_owned());
        assert_eq!(
            totals_after(&[ask(), ready(), exited.clone()]),
            only(Outcome::RolledBack)
        );
        let unhealthy = Event::SuccessorUnhealthy("warm-up".to_owned());
        assert_eq!(
            totals_after(&[ask(), ready(), unhealthy, exited]),
            only(Outcome::RolledBack)
        );
        let stop = Event::StopAsked { control: true };
        assert_eq!(
            totals_after(&[ask(), stop.clone(), failed(FailureKind::ShuttingDown)]),
            only(Outcome::Aborted)
        );
        assert_eq!(
            totals_after(&[ask(), stop.clone(), ready()]),
            only(Outcome::Aborted)
        );
        assert_eq!(
            totals_after(&[ask(), ready(), stop]),
            only(Outcome::Aborted)
        );
    }

    #[test]
    fn refusals_during_a_restart_show_with_its_outcome() {
        let totals = totals_after(&[
            ask(),
            ask(),
            ready(),
            ask(),
            Event::Deadline,
            Event::Deadline,
        ]);
        assert_eq!((totals.succeeded, totals.refused), (1, 2));
        // After the commit the totals are the successor's to carry on.
        let frozen = totals_after(&[ask(), ready(), Event::Deadline, Event::Deadline, ask()]);
        assert_eq!(frozen, only(Outcome::Succeeded));
    }
}
