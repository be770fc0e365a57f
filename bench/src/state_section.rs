//! The state section (ours only), per state size: the encoder and the
//! decoder alone, in this process, against `rmp_serde` alone on the same
//! data, alternated in the same run; then the whole handover of the state
//! service (`src/bin/state_service.rs`), trigger → READY, with a prober
//! (connections that do not touch the state) measuring whether the old
//! generation's serving stalls while it encodes.
//!
//! The state service runs with `SHELLFLIP_PROBATION=0`: the probation
//! begins after READY, so it would only add its length to each restart's
//! wait for the old generation to be gone.

use std::path::Path;
use std::time::{Duration, Instant};

use shellflip::state::{decode_envelope, encode_envelope};
use shellflip::StateFds;
use shellflip_bench::report::{size_label, StateResult, StateSize};
use shellflip_bench::state::{BenchState, RmpState};
use shellflip_bench::stats::longest_gap;

use crate::harness::{mem_available_bytes, tail, Service};
use crate::load::Load;
use crate::{progress, Bench, Trigger};

/// The state service's probation.
const PROBATION: &str = "0";

/// Memory a size needs, as a multiple of its data: the driver holds the
/// state, an encoding and a decoded copy at once (the map's allocations
/// make a state larger than its nominal size); then, during a handover,
/// the old generation holds the state and its envelope while the new one
/// holds the envelope and the decoded state.
const MEMORY_FACTOR: u64 = 8;

/// Why a size does not fit the machine's available memory, if it does not.
fn memory_shortfall(data_bytes: usize) -> Option<String> {
    let need = data_bytes as u64 * MEMORY_FACTOR;
    let available = mem_available_bytes()?;
    (available < need).then(|| {
        format!(
            "needs about {:.1} GiB of memory, {:.1} GiB available (MemAvailable)",
            need as f64 / f64::from(1 << 30),
            available as f64 / f64::from(1 << 30)
        )
    })
}

fn mb_per_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64().max(1e-9)
}

/// The envelope and `rmp_serde` on the same state, `reps` times each,
/// alternating which goes first.
fn measure_codec(size: &mut StateSize, reps: usize) -> Result<(), String> {
    let state = BenchState::of_size(size.data_bytes);
    let data = size.data_bytes;
    let check = |blob: usize, entries: usize, what: &str| {
        if blob == state.blob.len() && entries == state.entries.len() {
            Ok(())
        } else {
            Err(format!("{what} did not give the state back"))
        }
    };
    for rep in 0..reps {
        for ours in [rep % 2 == 0, rep % 2 == 1] {
            if ours {
                let mut fds = StateFds::default();
                let start = Instant::now();
                let bytes =
                    encode_envelope(&state, &mut fds).map_err(|e| format!("encode: {e}"))?;
                let encode = start.elapsed();
                let start = Instant::now();
                let back: BenchState =
                    decode_envelope(&bytes, &mut fds).map_err(|e| format!("decode: {e}"))?;
                let decode = start.elapsed();
                check(back.blob.len(), back.entries.len(), "decode_envelope")?;
                size.envelope_bytes = bytes.len();
                size.encode_mb_per_s.push(mb_per_s(data, encode));
                size.decode_mb_per_s.push(mb_per_s(data, decode));
            } else {
                let start = Instant::now();
                let bytes = rmp_serde::to_vec(&state.rmp_view())
                    .map_err(|e| format!("rmp_serde::to_vec: {e}"))?;
                let encode = start.elapsed();
                let start = Instant::now();
                let back: RmpState = rmp_serde::from_slice(&bytes)
                    .map_err(|e| format!("rmp_serde::from_slice: {e}"))?;
                let decode = start.elapsed();
                check(
                    back.blob.0.len(),
                    back.entries.len(),
                    "rmp_serde::from_slice",
                )?;
                size.rmp_bytes = bytes.len();
                size.rmp_encode_mb_per_s.push(mb_per_s(data, encode));
                size.rmp_decode_mb_per_s.push(mb_per_s(data, decode));
            }
        }
    }
    Ok(())
}

impl Bench {
    pub(crate) fn run_state(&self, exe: &Path) -> StateResult {
        let mut out = StateResult {
            probation: PROBATION.to_string(),
            ..Default::default()
        };
        for &mb in self.opts.state_mb.as_deref().unwrap_or_default() {
            let label = size_label(mb);
            let mut size = StateSize {
                megabytes: mb,
                data_bytes: mb << 20,
                ..Default::default()
            };
            if let Some(why) = memory_shortfall(size.data_bytes) {
                eprintln!("  {label} state: skipped: {why}");
                size.skipped = Some(why);
                out.sizes.push(size);
                continue;
            }
            progress(&format!("state {label}: encoder and decoder alone"));
            if let Err(e) = measure_codec(&mut size, self.timing.codec_reps) {
                eprintln!("  {label} state: {e}");
            }
            self.state_handover(exe, &mut size);
            progress("done\n");
            out.sizes.push(size);
        }
        out
    }

    /// Restarts the state service with a state of `size`, a prober
    /// connecting every millisecond. Before each trigger, a steady window
    /// at least as long as the last handover.
    fn state_handover(&self, exe: &Path, size: &mut StateSize) {
        let mb = size.megabytes;
        let label = size_label(mb);
        let extra = ["--state-mb".to_string(), mb.to_string()];
        let env = self.ours_env(Some(PROBATION));
        let log = self.log_for(&format!("state-{mb}mb"));
        let mut service =
            match Service::start(exe, &extra, &env, log.as_deref(), self.clock, self.reaper) {
                Ok(service) => service,
                Err(e) => {
                    eprintln!("  {label} state: {e}");
                    return;
                }
            };
        // A gigabyte's restarts take seconds each: fewer of them.
        let restarts = if mb >= 512 {
            self.timing.state_restarts.min(3)
        } else {
            self.timing.state_restarts
        };
        let max_lead = Duration::from_secs(10);
        // About 3 ms per MiB until the first handover tells.
        let mut lead =
            (Duration::from_millis(3) * mb as u32).clamp(self.timing.state_lead, max_lead);
        let max_time = (max_lead + Duration::from_secs(80)) * restarts as u32;
        let load = Load::start(service.addr, 0, true, self.clock, max_time);
        // (trigger, READY, when the steady window may begin), µs.
        let mut windows = Vec::new();
        for i in 1..=restarts {
            let steady_from = self.clock.now();
            std::thread::sleep(lead);
            progress(&format!("state {label}: restart {i}/{restarts}"));
            match self.restart_once(&mut service, Trigger::Ours, i) {
                Ok((t0, rec)) => {
                    size.trigger_to_ready_ms.extend(rec.ready_ms);
                    size.trigger_to_told_ms.extend(rec.told_ms);
                    if let Some(ready) = rec.ready_ms {
                        windows.push((t0, t0 + (ready * 1000.0) as u64, steady_from));
                        lead = Duration::from_secs_f64(ready * 1.2 / 1000.0 + 0.1)
                            .clamp(self.timing.state_lead, max_lead);
                    }
                }
                Err(e) => {
                    eprintln!("  {label} state: {e}\n{}", tail(&service.log));
                    break;
                }
            }
        }
        let seen = load.stop();
        service.stop(self.reaper);
        let answers: Vec<u64> = seen
            .answers
            .iter()
            .filter(|a| a.probe)
            .map(|a| a.greeted)
            .collect();
        for (t0, ready, steady_from) in windows {
            let length = ready - t0;
            let ms = |us: u64| us as f64 / 1000.0;
            size.prober_gap_handover_ms
                .extend(longest_gap(&answers, t0, ready).map(ms));
            // Only what came before the trigger: a gap across it is the
            // handover's.
            let before = &answers[..answers.partition_point(|&t| t < t0)];
            let from = t0.saturating_sub(length).max(steady_from);
            size.prober_gap_steady_ms
                .extend(longest_gap(before, from, t0).map(ms));
        }
        size.prober_failures = seen.failures.len() as u64;
    }
}
