//! The state section (ours only), per state size: the encoder and the
//! decoder alone, in this process, against `rmp_serde` alone on the same
//! data, alternated in the same run; then the whole handover of the state
//! service (`src/bin/state_service.rs`), trigger → READY and trigger →
//! initiator told, the restarts triggered alternately through the control
//! socket by the driver and by the `shellflip restart` CLI, with the peak
//! RSS of both generations and a prober (connections that read the state
//! before they are greeted) measuring whether the old generation's serving
//! stalls while it encodes.
//!
//! The state service runs with `SHELLFLIP_PROBATION=0`: the probation
//! begins after READY, so it would only add its length to each restart's
//! wait for the old generation to be gone.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use shellflip::state::{decode_envelope, encode_envelope};
use shellflip::StateFds;
use shellflip_bench::report::{size_label, RestartRecord, StateResult, StateSize};
use shellflip_bench::state::{parse_peak_line, vm_hwm_kib, BenchState, RmpState};
use shellflip_bench::stats::longest_gap;

use crate::harness::{mem_available_bytes, tail, Service};
use crate::load::Load;
use crate::{progress, Bench, Trigger};

/// The state service's probation.
const PROBATION: &str = "0";

/// Bound on the wait for the old generation's peak line once it is gone
/// (it prints it before it exits).
const PEAK_LINE_TIMEOUT: Duration = Duration::from_secs(2);

/// Bound on the lines read while looking for one peak line.
const MAX_LINES_PER_PEAK: usize = 100;

/// How a state restart is triggered: the odd ones through the control
/// socket, the even ones by the CLI.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StateTrigger {
    /// `ControlClient::restart` in the driver, until its answer.
    Library,
    /// `shellflip restart SOCKET` spawned, until it exits.
    Cli,
}

impl StateTrigger {
    fn of_restart(index: usize) -> StateTrigger {
        if index % 2 == 1 {
            StateTrigger::Library
        } else {
            StateTrigger::Cli
        }
    }
}

/// Resets the peak RSS (`VmHWM`) of `pid` to its current RSS: `5` written
/// to `/proc/<pid>/clear_refs` (which takes the right to write there: the
/// driver runs as root). The error names no pid, so that the same failure
/// of several restarts is noted once, with their number.
fn reset_peak_rss(pid: u32) -> Result<(), String> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .map_err(|e| format!("writing 5 to /proc/<pid>/clear_refs failed: {e}"))
}

/// `VmHWM` of a running process, KiB.
fn peak_rss_kib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("reading /proc/<pid>/status failed: {e}"))?;
    vm_hwm_kib(&status).ok_or_else(|| "no VmHWM in /proc/<pid>/status".to_string())
}

/// The peak line of `pid` among the lines the service printed: the old
/// generation prints it when it stops serving, before it exits.
fn reported_peak_kib(service: &Service, pid: u32) -> Result<u64, String> {
    for _ in 0..MAX_LINES_PER_PEAK {
        let Some((_, line)) = service.next_line(PEAK_LINE_TIMEOUT) else {
            break;
        };
        match parse_peak_line(&line) {
            Some((from, kib)) if from == pid => return Ok(kib),
            _ => continue,
        }
    }
    Err(format!(
        "the old generation printed no peak line (within {PEAK_LINE_TIMEOUT:?} of its exit)"
    ))
}

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
    /// The state section: `exe` is the state service, `cli` the
    /// `shellflip` CLI.
    pub(crate) fn run_state(&self, exe: &Path, cli: &Path) -> StateResult {
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
            self.state_handover(exe, cli, &mut size);
            progress("done\n");
            out.sizes.push(size);
        }
        out
    }

    /// One restart of the state service by `trigger`: its start (µs) and
    /// record, the old generation gone.
    fn state_restart(
        &self,
        service: &mut Service,
        cli: &Path,
        trigger: StateTrigger,
        index: usize,
    ) -> Result<(u64, RestartRecord), String> {
        match trigger {
            StateTrigger::Library => self.restart_once(service, Trigger::Ours, index),
            StateTrigger::Cli => self
                .restart_by_command(service, cli, &["restart"], index)
                .map(|t| (t.at, t.record)),
        }
    }

    /// Restarts the state service with a state of `size`, a prober
    /// connecting every millisecond, alternately through the control
    /// socket and by `cli` (`shellflip restart`). Before each trigger, a
    /// steady window at least as long as the last handover, and the old
    /// generation's peak RSS reset.
    fn state_handover(&self, exe: &Path, cli: &Path, size: &mut StateSize) {
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
        // Why a peak is missing → for how many restarts.
        let mut missing: BTreeMap<String, usize> = BTreeMap::new();
        let mut done = 0;
        for i in 1..=restarts {
            let steady_from = self.clock.now();
            std::thread::sleep(lead);
            let trigger = StateTrigger::of_restart(i);
            let how = match trigger {
                StateTrigger::Library => "control socket",
                StateTrigger::Cli => "shellflip restart",
            };
            progress(&format!("state {label}: restart {i}/{restarts} ({how})"));
            let old_pid = service.current.pid;
            // The old generation's peak from here on: a failed reset would
            // leave its peak since it started (its own decode included).
            let reset = reset_peak_rss(old_pid);
            match self.state_restart(&mut service, cli, trigger, i) {
                Ok((t0, rec)) => {
                    done += 1;
                    let (ready_ms, told_ms) = match trigger {
                        StateTrigger::Library => {
                            (&mut size.trigger_to_ready_ms, &mut size.trigger_to_told_ms)
                        }
                        StateTrigger::Cli => (
                            &mut size.cli_trigger_to_ready_ms,
                            &mut size.cli_trigger_to_told_ms,
                        ),
                    };
                    ready_ms.extend(rec.ready_ms);
                    told_ms.extend(rec.told_ms);
                    // The new generation's peak covers its whole life.
                    let new_peak = rec
                        .new_pid
                        .ok_or_else(|| "no new pid".to_string())
                        .and_then(peak_rss_kib);
                    // Read even when the reset failed, so that the line is
                    // not left for a later restart.
                    let old_peak = reported_peak_kib(&service, old_pid);
                    for (which, peak, into) in [
                        ("new", new_peak, &mut size.new_peak_rss_kib),
                        ("old", reset.and(old_peak), &mut size.old_peak_rss_kib),
                    ] {
                        match peak {
                            Ok(kib) => into.push(kib),
                            Err(why) => {
                                *missing
                                    .entry(format!("{which} generation: {why}"))
                                    .or_default() += 1
                            }
                        }
                    }
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
        size.peak_rss_unavailable = missing
            .into_iter()
            .map(|(why, n)| format!("{why} ({n} of {done} restarts)"))
            .collect();
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
