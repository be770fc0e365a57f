//! What operators see of restarts: the totals that the generations of a
//! service carry from one to the next ([`Totals`], kept by a [`Ledger`]),
//! the id every log line of one restart carries ([`RestartId`]), and — with
//! the `metrics` feature — their recording through the `metrics` facade
//! ([`publish`], [`observe_restart`]), to whatever recorder the service
//! installed (say `metrics-exporter-prometheus`).
//!
//! The counters continue across generations: a new generation starts from
//! the totals its predecessor handed over (`HandoverHeader`) and, at the
//! commit, takes its predecessor's final ones (`ParentMessage::Commit`).
//! While a restart's outcome is pending, both generations may be scraped
//! (the old one over a kept-alive connection, the new one over a new
//! connection), so each *exposes* only what both agree on — the totals at
//! the restart's start — and *holds* what it counts meanwhile until the
//! outcome is final. So no total ever goes down from one scrape to the
//! next, whichever generation answers it, rollbacks included.
//!
//! The histograms are per generation: the old generation observes each
//! restart it ran when the new one reports READY.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The final outcome of a restart request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The new generation passed its probation: the handover committed.
    Succeeded,
    /// The new generation never became ready (it failed, exited, timed out).
    Failed,
    /// The new generation was ready but failed its probation: the old one
    /// took the service back.
    RolledBack,
    /// A stop ended the restart before its outcome.
    Aborted,
    /// The request was refused (not ready, in progress, handed over,
    /// stopping): no restart began.
    Refused,
}

/// The counters a service's generations carry from one to the next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Totals {
    pub succeeded: u64,
    pub failed: u64,
    pub rolled_back: u64,
    pub aborted: u64,
    pub refused: u64,
    /// Live connections taken over from a predecessor.
    pub connections_handed_over: u64,
}

impl Totals {
    fn slot(&mut self, outcome: Outcome) -> &mut u64 {
        match outcome {
            Outcome::Succeeded => &mut self.succeeded,
            Outcome::Failed => &mut self.failed,
            Outcome::RolledBack => &mut self.rolled_back,
            Outcome::Aborted => &mut self.aborted,
            Outcome::Refused => &mut self.refused,
        }
    }

    /// Counts one `outcome`.
    pub(crate) fn count(&mut self, outcome: Outcome) {
        let slot = self.slot(outcome);
        *slot = slot.saturating_add(1);
    }

    /// Field by field, `f` of both.
    fn zip(self, other: Totals, f: fn(u64, u64) -> u64) -> Totals {
        Totals {
            succeeded: f(self.succeeded, other.succeeded),
            failed: f(self.failed, other.failed),
            rolled_back: f(self.rolled_back, other.rolled_back),
            aborted: f(self.aborted, other.aborted),
            refused: f(self.refused, other.refused),
            connections_handed_over: f(self.connections_handed_over, other.connections_handed_over),
        }
    }

    /// Both added up.
    pub(crate) fn plus(self, other: Totals) -> Totals {
        self.zip(other, u64::saturating_add)
    }

    /// The larger of both, field by field.
    pub(crate) fn max(self, other: Totals) -> Totals {
        self.zip(other, u64::max)
    }
}

/// One generation's totals: what it exposes (and hands over), and what it
/// holds back while the outcome of a restart is pending (see the module
/// docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Ledger {
    exposed: Totals,
    /// `Some` while a restart's outcome is pending: this generation's own
    /// counts since it began.
    held: Option<Totals>,
    /// Handed over for good: the successor carries the totals on, and this
    /// generation counts no more.
    frozen: bool,
}

impl Ledger {
    /// A first generation's: nothing counted yet.
    pub(crate) fn first() -> Ledger {
        Ledger::default()
    }

    /// A new generation's: its predecessor's totals as handed over, exposed
    /// as they are until it is the service (its own counts held until then).
    pub(crate) fn inherited(totals: Totals) -> Ledger {
        Ledger {
            exposed: totals,
            held: Some(Totals::default()),
            frozen: false,
        }
    }

    /// What this generation exposes, and hands to a successor.
    pub(crate) fn exposed(&self) -> Totals {
        self.exposed
    }

    fn counting(&mut self) -> Option<&mut Totals> {
        if self.frozen {
            return None;
        }
        Some(self.held.as_mut().unwrap_or(&mut self.exposed))
    }

    /// Counts one `outcome` of this generation's own (held while a
    /// restart's outcome is pending).
    pub(crate) fn count(&mut self, outcome: Outcome) {
        if let Some(totals) = self.counting() {
            totals.count(outcome);
        }
    }

    /// Counts `n` connections taken over from the predecessor.
    pub(crate) fn count_connections(&mut self, n: u64) {
        if let Some(totals) = self.counting() {
            totals.connections_handed_over = totals.connections_handed_over.saturating_add(n);
        }
    }

    /// A restart began: from now on this generation's counts are held until
    /// its outcome ([`Ledger::settle`]).
    pub(crate) fn hold(&mut self) {
        if !self.frozen && self.held.is_none() {
            self.held = Some(Totals::default());
        }
    }

    /// The pending restart's outcome is final (`None`: it is not one of
    /// this generation's to count): what was held is exposed, and so is
    /// `outcome`.
    pub(crate) fn settle(&mut self, outcome: Option<Outcome>) {
        if self.frozen {
            return;
        }
        if let Some(held) = self.held.take() {
            self.exposed = self.exposed.plus(held);
        }
        if let Some(outcome) = outcome {
            self.exposed.count(outcome);
        }
    }

    /// This new generation is the service: it exposes its predecessor's
    /// final totals (`None`: it died, the ones handed over stand) plus its
    /// own. Never less than it exposed already.
    pub(crate) fn take_over(&mut self, predecessor: Option<Totals>) {
        if let Some(last) = predecessor {
            self.exposed = self.exposed.max(last);
        }
        self.settle(None);
    }

    /// Handed over for good: exposes (and counts) no more changes.
    pub(crate) fn freeze(&mut self) {
        self.frozen = true;
    }
}

/// Identifies one restart in the log lines of both generations: the old
/// generation's number and the ordinal of the restart it started
/// (`3.1`: the first restart generation 3 started).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RestartId {
    pub generation: u64,
    pub ordinal: u64,
}

impl fmt::Display for RestartId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.generation, self.ordinal)
    }
}

impl RestartId {
    /// The span the lines of this restart are logged in: `restart` with the
    /// field `restart_id`. At the ERROR level, so that a subscriber that
    /// shows only warnings and errors still shows which restart they are
    /// about. Created when a line is to be logged: a span created before
    /// the service installed its subscriber would stay disabled.
    pub(crate) fn span(self) -> tracing::Span {
        tracing::error_span!("restart", restart_id = %self)
    }
}

/// The span of `restart`, or none.
pub(crate) fn span_of(restart: Option<RestartId>) -> tracing::Span {
    restart.map_or_else(tracing::Span::none, RestartId::span)
}

/// The gauges of one generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Gauges {
    pub generation: u64,
    /// Older generations still draining, as this one knows them.
    pub draining: usize,
    /// The state envelope of the last handover (to this generation or
    /// from it); `None` before any.
    pub state_bytes: Option<u64>,
}

/// How long a restart that reached READY took, from its start.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct RestartDurations {
    /// Until the new generation reported READY.
    pub ready: Duration,
    /// Until the new process was spawned.
    pub spawn: Duration,
    /// Until the header and the listeners were written to the channel.
    pub handover: Duration,
    /// From the new generation's request for the state until the snapshot
    /// was sent (`None`: no state was sent).
    pub state: Option<Duration>,
}

/// Records the totals and gauges through the `metrics` facade (counters as
/// absolute values: a recorder keeps the largest it saw). Called after
/// every event, so whatever the service installed as its recorder before
/// `ready()` gets them. Without the `metrics` feature, nothing.
pub(crate) fn publish(totals: &Totals, gauges: &Gauges) {
    #[cfg(feature = "metrics")]
    recording::publish(totals, gauges);
    #[cfg(not(feature = "metrics"))]
    let _ = (totals, gauges);
}

/// Observes a restart's durations in the histograms (this generation's).
/// Without the `metrics` feature, nothing.
pub(crate) fn observe_restart(durations: &RestartDurations) {
    #[cfg(feature = "metrics")]
    recording::observe_restart(durations);
    #[cfg(not(feature = "metrics"))]
    let _ = durations;
}

#[cfg(feature = "metrics")]
mod recording {
    use super::*;
    use ::metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge};
    use ::metrics::{histogram, Unit};

    /// `shellflip_restarts_total{outcome}`: restarts by their final outcome.
    pub(super) const RESTARTS_TOTAL: &str = "shellflip_restarts_total";
    /// `shellflip_restart_duration_seconds`: from a restart's start to the new
    /// generation's READY.
    pub(super) const RESTART_DURATION_SECONDS: &str = "shellflip_restart_duration_seconds";
    /// `shellflip_restart_phase_duration_seconds{phase}`: how long the steps of
    /// a restart took (`spawn`, `handover`, `state`).
    pub(super) const RESTART_PHASE_DURATION_SECONDS: &str =
        "shellflip_restart_phase_duration_seconds";
    /// `shellflip_generation`: the generation that answers.
    pub(super) const GENERATION: &str = "shellflip_generation";
    /// `shellflip_draining_generations`: older generations still draining.
    pub(super) const DRAINING_GENERATIONS: &str = "shellflip_draining_generations";
    /// `shellflip_state_bytes`: the state envelope of the last handover.
    pub(super) const STATE_BYTES: &str = "shellflip_state_bytes";
    /// `shellflip_connections_handed_over_total`: live connections taken over
    /// from a predecessor.
    pub(super) const CONNECTIONS_HANDED_OVER_TOTAL: &str =
        "shellflip_connections_handed_over_total";
    /// `shellflip_probation_rollbacks_total`: new generations that failed their
    /// probation, the service taken back by their predecessor.
    pub(super) const PROBATION_ROLLBACKS_TOTAL: &str = "shellflip_probation_rollbacks_total";

    /// Each outcome's `outcome` label, and its count.
    fn by_outcome(totals: &Totals) -> [(&'static str, u64); 5] {
        [
            ("succeeded", totals.succeeded),
            ("failed", totals.failed),
            ("rolled_back", totals.rolled_back),
            ("aborted", totals.aborted),
            ("refused", totals.refused),
        ]
    }

    pub(super) fn publish(totals: &Totals, gauges: &Gauges) {
        describe();
        for (outcome, count) in by_outcome(totals) {
            counter!(RESTARTS_TOTAL, "outcome" => outcome).absolute(count);
        }
        counter!(PROBATION_ROLLBACKS_TOTAL).absolute(totals.rolled_back);
        counter!(CONNECTIONS_HANDED_OVER_TOTAL).absolute(totals.connections_handed_over);
        gauge!(GENERATION).set(gauges.generation as f64);
        gauge!(DRAINING_GENERATIONS).set(gauges.draining as f64);
        if let Some(bytes) = gauges.state_bytes {
            gauge!(STATE_BYTES).set(bytes as f64);
        }
    }

    pub(super) fn observe_restart(durations: &RestartDurations) {
        histogram!(RESTART_DURATION_SECONDS).record(durations.ready.as_secs_f64());
        let phases = [
            ("spawn", Some(durations.spawn)),
            ("handover", Some(durations.handover)),
            ("state", durations.state),
        ];
        for (phase, took) in phases {
            if let Some(took) = took {
                histogram!(RESTART_PHASE_DURATION_SECONDS, "phase" => phase)
                    .record(took.as_secs_f64());
            }
        }
    }

    fn describe() {
        describe_counter!(
            RESTARTS_TOTAL,
            Unit::Count,
            "Restarts by final outcome (succeeded: committed after the probation), carried across generations"
        );
        describe_counter!(
            PROBATION_ROLLBACKS_TOTAL,
            Unit::Count,
            "New generations that failed their probation (the old one took the service back)"
        );
        describe_counter!(
            CONNECTIONS_HANDED_OVER_TOTAL,
            Unit::Count,
            "Live connections taken over from a predecessor"
        );
        describe_gauge!(GENERATION, Unit::Count, "The generation that answers");
        describe_gauge!(
            DRAINING_GENERATIONS,
            Unit::Count,
            "Older generations still draining"
        );
        describe_gauge!(
            STATE_BYTES,
            Unit::Bytes,
            "The state envelope of the last handover"
        );
        describe_histogram!(
            RESTART_DURATION_SECONDS,
            Unit::Seconds,
            "From a restart's start to the new generation's READY (observed by the old generation)"
        );
        describe_histogram!(
            RESTART_PHASE_DURATION_SECONDS,
            Unit::Seconds,
            "Steps of a restart: spawn and handover from its start, state from the request to the snapshot sent"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(succeeded: u64, refused: u64) -> Totals {
        Totals {
            succeeded,
            refused,
            ..Totals::default()
        }
    }

    #[test]
    fn counts_made_during_a_restart_show_once_its_outcome_is_final() {
        let mut ledger = Ledger::first();
        ledger.count(Outcome::Refused);
        assert_eq!(ledger.exposed(), totals(0, 1));
        ledger.hold();
        ledger.count(Outcome::Refused);
        assert_eq!(
            ledger.exposed(),
            totals(0, 1),
            "held while the restart runs"
        );
        ledger.settle(Some(Outcome::Succeeded));
        assert_eq!(ledger.exposed(), totals(1, 2));
        ledger.freeze();
        ledger.count(Outcome::Refused);
        ledger.hold();
        ledger.settle(Some(Outcome::Failed));
        assert_eq!(ledger.exposed(), totals(1, 2), "frozen once handed over");
    }

    /// The scenario of the module docs: whichever generation answers a
    /// scrape, old or new, before or after the commit or a rollback, no
    /// total is lower than one exposed before.
    #[test]
    fn no_total_goes_down_whichever_generation_answers() {
        let mut old = Ledger::first();
        old.count(Outcome::Failed);
        old.hold();
        let mut new = Ledger::inherited(old.exposed());
        // Both count while the outcome is pending.
        old.count(Outcome::Refused);
        new.count(Outcome::Refused);
        let seen = [old.exposed(), new.exposed()];
        assert_eq!(seen[0], seen[1]);
        // Rolled back: the old one goes on with its own.
        let mut rolled_back = old.clone();
        rolled_back.settle(Some(Outcome::RolledBack));
        assert!(seen
            .iter()
            .all(|s| s.max(rolled_back.exposed()) == rolled_back.exposed()));
        // Committed: the new one takes the old one's final totals.
        old.settle(Some(Outcome::Succeeded));
        old.freeze();
        new.take_over(Some(old.exposed()));
        let after = new.exposed();
        assert_eq!(after.succeeded, 1);
        assert_eq!(after.refused, 2, "the old one's and the new one's own");
        assert_eq!(after.failed, 1);
        assert_eq!(after.max(old.exposed()), after);
    }

    #[test]
    fn taking_over_never_lowers_a_total() {
        let mut new = Ledger::inherited(totals(3, 1));
        new.count_connections(2);
        // A predecessor whose totals are lower than what this one shows.
        new.take_over(Some(Totals::default()));
        assert_eq!(new.exposed().succeeded, 3);
        assert_eq!(new.exposed().connections_handed_over, 2);
        let mut orphan = Ledger::inherited(totals(3, 1));
        orphan.count(Outcome::Refused);
        orphan.take_over(None);
        assert_eq!(orphan.exposed(), totals(3, 2));
    }

    #[test]
    fn totals_decode_from_older_builds_and_ids_read_as_generation_dot_ordinal() {
        #[derive(Serialize)]
        struct Older {
            succeeded: u64,
        }
        let bytes = rmp_serde::to_vec_named(&Older { succeeded: 4 }).unwrap();
        let decoded: Totals = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(decoded, totals(4, 0));
        let id = RestartId {
            generation: 3,
            ordinal: 2,
        };
        assert_eq!(id.to_string(), "3.2");
    }
}
