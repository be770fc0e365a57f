//! Wall-clock bookkeeping: the start-up phases of a generation, and Unix
//! times for the restart history.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// When the steps of start-up before the runtime ended (logged at
/// readiness, as the subscriber is only installed by the service's main).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StartupTimes {
    pub entered: SystemTime,
    pub spawner_forked: SystemTime,
    pub received: SystemTime,
    pub runtime_built: SystemTime,
    /// When the previous generation began the restart that started this one.
    pub restart_began: Option<SystemTime>,
}

impl StartupTimes {
    /// Logs (at debug) how long each start-up phase took, up to now.
    pub(crate) fn log_phases(&self) {
        let now = SystemTime::now();
        tracing::debug!(
            restart_to_run_ms = self
                .restart_began
                .map(|began| ms_between(began, self.entered)),
            spawner_fork_ms = ms_between(self.entered, self.spawner_forked),
            receive_ms = ms_between(self.spawner_forked, self.received),
            runtime_ms = ms_between(self.received, self.runtime_built),
            main_to_ready_ms = ms_between(self.runtime_built, now),
            restart_to_ready_ms = self.restart_began.map(|began| ms_between(began, now)),
            "start-up phases"
        );
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Milliseconds from `from` to `to` (negative if the clock stepped back),
/// to the hundredth.
pub(crate) fn ms_between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => ms(d),
        Err(e) => -ms(e.duration()),
    }
}

/// `duration` in milliseconds, to the hundredth: what logs and answers
/// show (`22.25`, never `22.246094000000001`).
pub(crate) fn ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 100_000.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_are_rounded_to_the_hundredth() {
        assert_eq!(ms(Duration::from_nanos(22_246_094)), 22.25);
        assert_eq!(ms(Duration::from_nanos(51_797)), 0.05);
        assert_eq!(format!("{}", ms(Duration::from_micros(300))), "0.3");
    }
}
