//! The longest accept gap around a restart: the echo example (which
//! accepts through `Context::accept`, so the old generation pauses during
//! the new one's probation) restarted with the default probation, then
//! with none, a prober alone connecting every millisecond. For each
//! restart, the longest interval without a prober answer that overlaps the
//! window from the trigger to the trigger + probation + 0.5 s (so that the
//! probation's end and the old generation's exit are inside it), and, as
//! the baseline, the same over as long a window just before the trigger.

use std::path::Path;
use std::time::Duration;

use shellflip_bench::report::AcceptGapResult;
use shellflip_bench::stats::longest_gap;

use crate::harness::{tail, Service};
use crate::load::Load;
use crate::{progress, Bench, Trigger};

/// Past the probation's end, still in the window.
const PAST_PROBATION: Duration = Duration::from_millis(500);

/// Per restart: the longest gap in the window after the trigger and in
/// as long a window before it, and the prober's failed connections.
struct Gaps {
    after_ms: Vec<f64>,
    before_ms: Vec<f64>,
    failures: u64,
}

impl Bench {
    pub(crate) fn run_accept_gap(&self, echo: &Path) -> AcceptGapResult {
        let probation = shellflip::Config::default().probation;
        let window = probation + PAST_PROBATION;
        let mut result = AcceptGapResult {
            window_ms: window.as_secs_f64() * 1000.0,
            probation: humanize(probation),
            ..Default::default()
        };
        // Set even for the default, so that a SHELLFLIP_PROBATION in the
        // driver's environment changes nothing.
        let default = result.probation.clone();
        for (key, env_probation) in [("on", default.as_str()), ("off", "0")] {
            match self.accept_gaps(echo, key, env_probation, window) {
                Ok(gaps) => {
                    result.steady_ms.extend(gaps.before_ms);
                    if key == "on" {
                        result.on_ms = gaps.after_ms;
                        result.failures_on = gaps.failures;
                    } else {
                        result.off_ms = gaps.after_ms;
                        result.failures_off = gaps.failures;
                    }
                }
                Err(e) => {
                    result.error = Some(format!("probation {key}: {e}"));
                    break;
                }
            }
        }
        progress("done\n");
        result
    }

    fn accept_gaps(
        &self,
        echo: &Path,
        key: &str,
        probation: &str,
        window: Duration,
    ) -> Result<Gaps, String> {
        let env = self.ours_env(Some(probation));
        let mut service = Service::start(
            echo,
            &[],
            &env,
            self.log_for(&format!("accept-gap-{key}")).as_deref(),
            self.clock,
            self.reaper,
        )?;
        let k = self.timing.gap_restarts;
        let max_time = (window * 2 + Duration::from_secs(80)) * k as u32;
        let load = Load::start(service.addr, 0, true, self.clock, max_time);
        let mut triggers = Vec::new();
        let mut error = None;
        for i in 1..=k {
            progress(&format!("accept gap, probation {key}: restart {i}/{k}"));
            std::thread::sleep(window);
            match self.restart_once(&mut service, Trigger::Ours, i) {
                Ok((t0, _)) => triggers.push(t0),
                Err(e) => {
                    error = Some(format!("{e}; stderr:\n{}", tail(&service.log)));
                    break;
                }
            }
            // The whole window after the trigger is the prober's.
            let end = triggers.last().copied().unwrap_or(0) + window.as_micros() as u64;
            let now = self.clock.now();
            if now < end {
                std::thread::sleep(Duration::from_micros(end - now));
            }
        }
        let seen = load.stop();
        service.stop(self.reaper);
        if let Some(e) = error {
            return Err(e);
        }
        let answers: Vec<u64> = seen
            .answers
            .iter()
            .filter(|a| a.probe)
            .map(|a| a.greeted)
            .collect();
        let span = window.as_micros() as u64;
        let ms = |us: u64| us as f64 / 1000.0;
        let mut gaps = Gaps {
            after_ms: Vec::new(),
            before_ms: Vec::new(),
            failures: seen.failures.len() as u64,
        };
        for t0 in triggers {
            gaps.after_ms
                .extend(longest_gap(&answers, t0, t0 + span).map(ms));
            // Only what came before the trigger: a gap across it is the
            // restart's.
            let before = &answers[..answers.partition_point(|&t| t < t0)];
            gaps.before_ms
                .extend(longest_gap(before, t0.saturating_sub(span), t0).map(ms));
        }
        Ok(gaps)
    }
}

/// `2s`, `500ms`: a duration as the settings write it.
pub(crate) fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
