//! The result of a run, its markdown table and its JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cli::{cli_rows, CliResult, Goal};
use crate::stats::{summarize, Summary};

/// Everything one run measured (the `--json` output).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub machine: Machine,
    pub config: RunConfig,
    pub systems: Vec<SystemResult>,
    pub state: Option<StateResult>,
    pub overhead: Option<Overhead>,
    /// The HTTP section (absent with `--no-http`).
    #[serde(default)]
    pub http: Option<HttpResult>,
    /// Live connections handed over (absent with `--no-sessions`).
    #[serde(default)]
    pub sessions: Option<SessionsResult>,
    /// Memory of a generation draining held connections (absent with
    /// `--no-sessions`).
    #[serde(default)]
    pub drain_memory: Option<DrainMemoryResult>,
    /// The accept gap around a restart, probation on and off (absent with
    /// `--no-accept-gap`).
    #[serde(default)]
    pub accept_gap: Option<AcceptGapResult>,
    /// Restarts triggered by a process, pid protocol, both runtime flavors
    /// (absent with `--no-cli`).
    #[serde(default)]
    pub cli: Option<CliResult>,
    /// The goals, computed from `cli`.
    #[serde(default)]
    pub goals: Vec<Goal>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub kernel: String,
    /// /proc/loadavg when the run started.
    pub load_avg: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunConfig {
    pub clients: usize,
    pub restarts: usize,
    pub idle_restarts: usize,
    pub quick: bool,
    pub steady_secs: f64,
}

/// One benchmarked system.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SystemResult {
    /// `ours`, `cf-shellflip`, `ecdysis`.
    pub key: String,
    /// Name shown in the table.
    pub name: String,
    /// How the driver triggers a restart.
    pub trigger: String,
    /// Environment the driver set for the service (`SHELLFLIP_PROBATION=0`
    /// for ours, ...).
    #[serde(default)]
    pub env: Vec<String>,
    /// Restarts under load.
    pub restarts: Vec<RestartRecord>,
    /// Restarts with nothing in flight.
    pub idle_restarts: Vec<RestartRecord>,
    /// Failed connection attempts by kind, over the whole run.
    pub failures: BTreeMap<String, u64>,
    /// Exchanges completed by the clients.
    pub exchanges: u64,
    /// Open fds of the first generation, idle, before any load.
    pub initial_fds: Option<u64>,
    /// Exchanges per second in windows without restarts.
    pub steady_rates: Vec<f64>,
    /// Exchanges per second from each trigger until the old generation
    /// was gone (at least 100 ms).
    pub restart_rates: Vec<f64>,
    /// Why the run of this system stopped early, if it did.
    pub error: Option<String>,
}

/// One restart. Times are milliseconds from the trigger.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RestartRecord {
    pub index: usize,
    pub old_pid: u32,
    pub new_pid: Option<u32>,
    pub generation: Option<u64>,
    /// The initiator was told the outcome.
    pub told_ms: Option<f64>,
    /// What the initiator was told.
    pub outcome: String,
    /// The new generation printed its ready line.
    pub ready_ms: Option<f64>,
    /// The first connection answered by the new generation.
    pub new_answer_ms: Option<f64>,
    /// The old generation exited (reaped).
    pub old_gone_ms: Option<f64>,
    /// Failed connection attempts from this trigger to the next.
    pub failures: u64,
    /// VmRSS of the serving generation after the restart, KiB.
    pub rss_kib: Option<u64>,
    /// PSS of its spawner process (ours only), KiB.
    #[serde(default)]
    pub spawner_pss_kib: Option<u64>,
    /// Its open file descriptors after the restart.
    pub fds: Option<u64>,
    /// CPU time the new generation had used (all threads) when its ready
    /// line arrived, ms.
    pub startup_cpu_ms: Option<f64>,
    /// Time its threads had waited on a run queue by then, ms.
    pub startup_wait_ms: Option<f64>,
}

impl RestartRecord {
    /// From READY (the new generation's ready line) to the old generation
    /// gone.
    pub fn ready_to_old_gone_ms(&self) -> Option<f64> {
        Some(self.old_gone_ms? - self.ready_ms?)
    }
}

/// The state handover benchmark (ours only).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StateResult {
    pub sizes: Vec<StateSize>,
    /// `SHELLFLIP_PROBATION` of the state service (`0`: off, so that the
    /// old generation is gone right after READY).
    #[serde(default)]
    pub probation: String,
}

/// One state size. Throughputs are MB (10^6 bytes) of state data (the
/// state's nominal size, the same for both codecs) per second.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StateSize {
    /// The state's data, in MiB (`--state-mb`).
    pub megabytes: usize,
    /// Why this size was not run (not enough memory), if it was not.
    #[serde(default)]
    pub skipped: Option<String>,
    /// The state's nominal size in bytes.
    #[serde(default)]
    pub data_bytes: usize,
    /// The envelope (`encode_envelope`), bytes.
    pub envelope_bytes: usize,
    /// `rmp_serde::to_vec` of the same data, bytes.
    #[serde(default)]
    pub rmp_bytes: usize,
    /// Trigger → the new generation's ready line, per restart triggered
    /// through the control socket by the driver (`ControlClient::restart`).
    pub trigger_to_ready_ms: Vec<f64>,
    /// Trigger → initiator told (the control socket's answer), per restart
    /// triggered through the control socket.
    pub trigger_to_told_ms: Vec<f64>,
    /// Trigger (`shellflip restart SOCKET` spawned) → the new generation's
    /// ready line, per restart triggered by the CLI.
    #[serde(default)]
    pub cli_trigger_to_ready_ms: Vec<f64>,
    /// Trigger → the `shellflip restart` process exited (initiator told),
    /// per restart triggered by the CLI.
    #[serde(default)]
    pub cli_trigger_to_told_ms: Vec<f64>,
    /// Per restart (either trigger): the old generation's peak RSS
    /// (`VmHWM`, reset just before the trigger) until it stopped serving
    /// after its successor's READY, KiB.
    #[serde(default)]
    pub old_peak_rss_kib: Vec<u64>,
    /// Per restart: the new generation's peak RSS (`VmHWM` of its whole
    /// life: start-up and the handover) read after its READY, KiB.
    #[serde(default)]
    pub new_peak_rss_kib: Vec<u64>,
    /// Why the peak RSS of a generation is missing for some restarts: one
    /// entry per generation and reason, with for how many restarts (the
    /// rows then leave those restarts out rather than give a wrong figure).
    #[serde(default)]
    pub peak_rss_unavailable: Vec<String>,
    /// `encode_envelope` alone, in-process, per repetition.
    pub encode_mb_per_s: Vec<f64>,
    /// `decode_envelope` alone, in-process, per repetition.
    pub decode_mb_per_s: Vec<f64>,
    /// `rmp_serde::to_vec` of the same data, alternated with the above.
    #[serde(default)]
    pub rmp_encode_mb_per_s: Vec<f64>,
    /// `rmp_serde::from_slice` of it.
    #[serde(default)]
    pub rmp_decode_mb_per_s: Vec<f64>,
    /// Per restart: the longest interval without a prober answer that
    /// overlaps trigger → READY (the old generation alone serves and
    /// encodes), ms.
    #[serde(default)]
    pub prober_gap_handover_ms: Vec<f64>,
    /// Per restart: the same over as long a window just before the
    /// trigger, ms.
    #[serde(default)]
    pub prober_gap_steady_ms: Vec<f64>,
    /// Prober connections that failed during this size's restarts.
    #[serde(default)]
    pub prober_failures: u64,
}

/// Live connections handed over: the sessions example holding N idle
/// sessions, restarted, against the same restart with no session.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SessionsResult {
    /// Idle sessions held by the driver.
    pub sessions: usize,
    /// `SHELLFLIP_PROBATION` of the service (`0`: off).
    pub probation: String,
    /// Restarts with no session open.
    pub plain: Vec<RestartRecord>,
    /// Restarts with the N sessions open (each hands all of them over).
    pub handed: Vec<RestartRecord>,
    /// Per restart with sessions: sessions not answered by the new
    /// generation with their count continued (closed, wrong count, old pid).
    pub lost: Vec<u64>,
    /// Per restart with sessions, after the old generation was gone: one
    /// `incr` sent on every session, until the last answer, ms.
    pub check_ms: Vec<f64>,
    pub error: Option<String>,
}

/// Memory of a draining generation holding connections: the echo example
/// with N connections open (greeted, idle), restarted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DrainMemoryResult {
    /// Connections held open by the driver.
    pub connections: usize,
    /// `SHELLFLIP_PROBATION` of the service.
    pub probation: String,
    pub samples: Vec<DrainSample>,
    pub error: Option<String>,
}

/// One restart with held connections. KiB.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DrainSample {
    /// The generation's RSS before the connections were opened.
    pub idle_rss_kib: Option<u64>,
    /// Its RSS holding them, before the restart.
    pub holding_rss_kib: Option<u64>,
    /// Its RSS after the new generation's READY, draining them.
    pub draining_rss_kib: Option<u64>,
    /// Its PSS then.
    pub draining_pss_kib: Option<u64>,
    /// The new generation's RSS and PSS at the same moment.
    pub new_rss_kib: Option<u64>,
    pub new_pss_kib: Option<u64>,
}

/// The longest accept gap around a restart of the echo example, with the
/// default probation and without.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AcceptGapResult {
    /// The window after each trigger (and before it, for the steady
    /// baseline), ms.
    pub window_ms: f64,
    /// The probation of the "on" runs (the default).
    pub probation: String,
    /// Per restart, probation on: the longest interval without a prober
    /// answer overlapping trigger → trigger + window, ms.
    pub on_ms: Vec<f64>,
    /// The same, probation off.
    pub off_ms: Vec<f64>,
    /// The same over the window just before each trigger (both runs).
    pub steady_ms: Vec<f64>,
    /// Prober connections that failed, per run.
    pub failures_on: u64,
    pub failures_off: u64,
    pub error: Option<String>,
}

/// Throughput of the echo example vs the same accept loop on a bare tokio
/// listener, alternated in the same run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Overhead {
    pub ours_rates: Vec<f64>,
    pub bare_rates: Vec<f64>,
}

/// The HTTP section: the same axum service served by `shellflip::http`
/// (examples/http.rs) and by `axum::serve(..).with_graceful_shutdown(..)`,
/// restarted under the same HTTP load.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HttpResult {
    /// Clients of each kind (`fresh`, `keep-alive`, `pausing`).
    pub clients: BTreeMap<String, usize>,
    /// The longest pause of a pausing client, ms.
    pub pause_ms: u64,
    /// The services' drain timeout (`SHELLFLIP_DRAIN_TIMEOUT`).
    pub drain_timeout: String,
    pub systems: Vec<HttpSystemResult>,
}

/// One HTTP system.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HttpSystemResult {
    /// `ours-http`, `axum-serve`.
    pub key: String,
    pub name: String,
    pub restarts: Vec<HttpRestart>,
    /// Requests sent, by client kind.
    pub requests: BTreeMap<String, u64>,
    /// Failed requests, by client kind.
    pub failures: BTreeMap<String, u64>,
    /// A few failure messages, for the curious.
    pub failure_examples: Vec<String>,
    /// Keep-alive connections found closed by the server before a request
    /// was sent on them (no request lost; the client reconnected).
    pub closed_idle: u64,
    /// Latencies (ms) of the requests begun in the steady window.
    pub steady_p50_ms: Option<f64>,
    pub steady_p99_ms: Option<f64>,
    /// Latencies (ms) of the requests begun from a trigger until the old
    /// generation was gone (at least 100 ms).
    pub restart_p50_ms: Option<f64>,
    pub restart_p99_ms: Option<f64>,
    pub error: Option<String>,
}

/// One HTTP restart. Times in ms from the trigger.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HttpRestart {
    pub old_gone_ms: Option<f64>,
    /// Failed requests begun from this trigger to the next, by client kind.
    pub failures: BTreeMap<String, u64>,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub metric: String,
    pub system: String,
    pub median: Option<f64>,
    pub max: Option<f64>,
    /// Ours ÷ this system, medians.
    pub ratio: Option<f64>,
    /// Digits after the point.
    pub decimals: usize,
}

/// A number for the table: `—` when missing.
pub fn fmt_num(v: Option<f64>, decimals: usize) -> String {
    match v {
        None => "—".to_string(),
        Some(v) if v.is_nan() => "—".to_string(),
        Some(v) => format!("{v:.decimals$}"),
    }
}

/// A ratio for the table: `0.31×`, `—` when missing.
pub fn fmt_ratio(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => {
            if v != 0.0 && v.abs() < 0.01 {
                format!("{v:.4}×")
            } else {
                format!("{v:.2}×")
            }
        }
        _ => "—".to_string(),
    }
}

/// Renders rows as a markdown table; the metric is written once per group
/// of consecutive rows.
pub fn markdown_table(rows: &[Row]) -> String {
    let header = ["metric", "system", "median", "max", "ours ÷ system"];
    let mut cells: Vec<[String; 5]> = Vec::new();
    let mut previous: Option<&str> = None;
    for row in rows {
        let metric = if previous == Some(row.metric.as_str()) {
            String::new()
        } else {
            row.metric.clone()
        };
        previous = Some(row.metric.as_str());
        cells.push([
            metric,
            row.system.clone(),
            fmt_num(row.median, row.decimals),
            fmt_num(row.max, row.decimals),
            fmt_ratio(row.ratio),
        ]);
    }
    let width = |i: usize| {
        cells
            .iter()
            .map(|c| c[i].chars().count())
            .chain([header[i].chars().count(), 3])
            .max()
            .unwrap_or(3)
    };
    let widths: Vec<usize> = (0..5).map(width).collect();
    let pad = |s: &str, w: usize, right: bool| {
        let fill = " ".repeat(w.saturating_sub(s.chars().count()));
        if right {
            format!("{fill}{s}")
        } else {
            format!("{s}{fill}")
        }
    };
    let right = [false, false, true, true, true];
    let mut out = String::new();
    let line = |cols: Vec<String>| format!("| {} |\n", cols.join(" | "));
    out.push_str(&line(
        (0..5)
            .map(|i| pad(header[i], widths[i], right[i]))
            .collect(),
    ));
    out.push_str(&line(
        (0..5)
            .map(|i| {
                if right[i] {
                    format!("{}:", "-".repeat(widths[i] - 1))
                } else {
                    "-".repeat(widths[i])
                }
            })
            .collect(),
    ));
    for c in &cells {
        out.push_str(&line(
            (0..5).map(|i| pad(&c[i], widths[i], right[i])).collect(),
        ));
    }
    out
}

fn values(records: &[RestartRecord], f: impl Fn(&RestartRecord) -> Option<f64>) -> Vec<f64> {
    records.iter().filter_map(f).collect()
}

/// One metric across the systems; the ratio is ours' median over each
/// system's median.
fn metric_rows(
    rows: &mut Vec<Row>,
    metric: &str,
    decimals: usize,
    with_ratio: bool,
    systems: &[SystemResult],
    sample: impl Fn(&SystemResult) -> Vec<f64>,
) {
    let named: Vec<(&str, &str, Vec<f64>)> = systems
        .iter()
        .map(|s| (s.key.as_str(), s.name.as_str(), sample(s)))
        .collect();
    keyed_rows(rows, metric, decimals, with_ratio, "ours", &named);
}

/// One metric over `(key, name, sample)` of each system; the ratio is the
/// median of the system keyed `base` over each other's median.
fn keyed_rows(
    rows: &mut Vec<Row>,
    metric: &str,
    decimals: usize,
    with_ratio: bool,
    base: &str,
    systems: &[(&str, &str, Vec<f64>)],
) {
    let summaries: Vec<Option<Summary>> = systems.iter().map(|s| summarize(&s.2)).collect();
    let ours = systems
        .iter()
        .position(|s| s.0 == base)
        .and_then(|i| summaries[i]);
    for ((key, name, _), summary) in systems.iter().zip(&summaries) {
        let ratio = match (ours, summary) {
            (Some(o), Some(s)) if with_ratio && *key != base && s.median != 0.0 => {
                Some(o.median / s.median)
            }
            _ => None,
        };
        rows.push(Row {
            metric: metric.to_string(),
            system: name.to_string(),
            median: summary.map(|s| s.median),
            max: summary.map(|s| s.max),
            ratio,
            decimals,
        });
    }
}

/// The HTTP section's rows: per-restart failures by client kind, idle
/// connections closed, p99 latency steady and during restarts, the drain.
fn http_rows(rows: &mut Vec<Row>, http: &HttpResult) {
    let systems = &http.systems;
    let per_system = |f: &dyn Fn(&HttpSystemResult) -> Vec<f64>| -> Vec<(&str, &str, Vec<f64>)> {
        systems
            .iter()
            .map(|s| (s.key.as_str(), s.name.as_str(), f(s)))
            .collect()
    };
    let base = "ours-http";
    for (kind, label) in [
        ("fresh", "fresh connections"),
        ("keep-alive", "keep-alive clients"),
        ("pausing", "keep-alive clients idle between requests"),
    ] {
        if http.clients.get(kind).copied().unwrap_or(0) == 0 {
            continue;
        }
        keyed_rows(
            rows,
            &format!("HTTP: failed requests per restart, {label}"),
            0,
            false,
            base,
            &per_system(&|s| {
                s.restarts
                    .iter()
                    .map(|r| r.failures.get(kind).copied().unwrap_or(0) as f64)
                    .collect()
            }),
        );
    }
    keyed_rows(
        rows,
        "HTTP: idle keep-alive connections closed by the server (run)",
        0,
        false,
        base,
        &per_system(&|s| vec![s.closed_idle as f64]),
    );
    keyed_rows(
        rows,
        "HTTP: p99 latency, steady (ms)",
        2,
        true,
        base,
        &per_system(&|s| s.steady_p99_ms.into_iter().collect()),
    );
    keyed_rows(
        rows,
        "HTTP: p99 latency, during restarts (ms)",
        2,
        true,
        base,
        &per_system(&|s| s.restart_p99_ms.into_iter().collect()),
    );
    keyed_rows(
        rows,
        "HTTP: p99 during restarts ÷ p99 steady (goal ≤ 1.5)",
        2,
        false,
        base,
        &per_system(&|s| match (s.restart_p99_ms, s.steady_p99_ms) {
            (Some(r), Some(st)) if st > 0.0 => vec![r / st],
            _ => vec![],
        }),
    );
    keyed_rows(
        rows,
        "HTTP: trigger → old generation gone (ms)",
        1,
        true,
        base,
        &per_system(&|s| s.restarts.iter().filter_map(|r| r.old_gone_ms).collect()),
    );
}

/// A state size for the table: `100 MiB`, `1 GiB`.
pub fn size_label(mebibytes: usize) -> String {
    if mebibytes >= 1024 && mebibytes % 1024 == 0 {
        format!("{} GiB", mebibytes / 1024)
    } else {
        format!("{mebibytes} MiB")
    }
}

/// Issue 11's goal for trigger → READY: 100 ms for 100 MB, 1 s for 1 GB.
fn ready_goal_ms(mebibytes: usize) -> Option<u64> {
    match mebibytes {
        100 => Some(100),
        1000 | 1024 => Some(1000),
        _ => None,
    }
}

/// One row of a single sample.
fn single_row(rows: &mut Vec<Row>, metric: &str, system: &str, sample: &[f64], decimals: usize) {
    keyed_rows(
        rows,
        metric,
        decimals,
        false,
        "",
        &[("", system, sample.to_vec())],
    );
}

fn mib(kib: Option<u64>) -> Option<f64> {
    kib.map(|k| k as f64 / 1024.0)
}

/// The state section's restarts triggered through the control socket, by
/// the driver.
const STATE_BY_LIBRARY: &str = "control socket (ControlClient::restart)";
/// Those triggered by starting the CLI.
const STATE_BY_CLI: &str = "`shellflip restart` (CLI)";

impl StateSize {
    /// The median peak RSS of the old and of the new generation during a
    /// handover, each as a multiple of the state's nominal size
    /// ([`data_bytes`](Self::data_bytes)).
    pub fn peak_rss_multiples(&self) -> (Option<f64>, Option<f64>) {
        let multiple = |kib: &[u64]| {
            let kib: Vec<f64> = kib.iter().map(|&k| k as f64).collect();
            let median = summarize(&kib)?.median;
            (self.data_bytes > 0).then(|| median * 1024.0 / self.data_bytes as f64)
        };
        (
            multiple(&self.old_peak_rss_kib),
            multiple(&self.new_peak_rss_kib),
        )
    }
}

/// The note under the table for one state size: its restarts and how they
/// were triggered, the prober's failures, and each generation's peak RSS
/// as a multiple of the state's size (or why it is missing).
pub fn state_note(size: &StateSize, probation: &str) -> String {
    let label = size_label(size.megabytes);
    if let Some(why) = &size.skipped {
        return format!("- {label} state: skipped: {why}\n");
    }
    let (library, cli) = (
        size.trigger_to_ready_ms.len(),
        size.cli_trigger_to_ready_ms.len(),
    );
    let multiple = |m: Option<f64>| m.map_or("—".to_string(), |m| format!("{m:.2}×"));
    let (old, new) = size.peak_rss_multiples();
    let mut note = format!(
        "- {label} state: restarts: {}, alternately through the control socket ({library}) and by `shellflip restart` ({cli}) (SHELLFLIP_PROBATION={probation}), prober only (each connection reads the state); prober connections failed: {}; peak RSS during the handover (medians): old generation {}, new generation {} the state's data ({} bytes)",
        library + cli,
        size.prober_failures,
        multiple(old),
        multiple(new),
        size.data_bytes
    );
    for why in &size.peak_rss_unavailable {
        note.push_str(&format!("; peak RSS unavailable: {why}"));
    }
    note.push('\n');
    note
}

/// The state section: per size, the whole handover (probation off) by
/// either trigger, the peak RSS of both generations, the codec against
/// rmp_serde alone, sizes, and the prober's longest gap while the old
/// generation encodes.
fn state_rows(rows: &mut Vec<Row>, state: &StateResult) {
    let ours = "shellflip (ours), probation off";
    for size in state.sizes.iter().filter(|s| s.skipped.is_none()) {
        let label = size_label(size.megabytes);
        let goal = ready_goal_ms(size.megabytes)
            .map(|g| format!("; goal ≤ {g}"))
            .unwrap_or_default();
        let pair = |a: &'static str, av: &[f64], b: &'static str, bv: &[f64]| {
            vec![("a", a, av.to_vec()), ("b", b, bv.to_vec())]
        };
        keyed_rows(
            rows,
            &format!("{label} state: trigger → READY (ms{goal})"),
            1,
            true,
            "a",
            &pair(
                STATE_BY_LIBRARY,
                &size.trigger_to_ready_ms,
                STATE_BY_CLI,
                &size.cli_trigger_to_ready_ms,
            ),
        );
        keyed_rows(
            rows,
            &format!("{label} state: trigger → initiator told (ms)"),
            1,
            true,
            "a",
            &pair(
                STATE_BY_LIBRARY,
                &size.trigger_to_told_ms,
                "`shellflip restart` (CLI), until it exits",
                &size.cli_trigger_to_told_ms,
            ),
        );
        for (which, kib) in [
            ("old", &size.old_peak_rss_kib),
            ("new", &size.new_peak_rss_kib),
        ] {
            let mib: Vec<f64> = kib.iter().map(|&k| k as f64 / 1024.0).collect();
            single_row(
                rows,
                &format!("{label} state: peak RSS during the handover: {which} generation (MiB)"),
                ours,
                &mib,
                1,
            );
        }
        keyed_rows(
            rows,
            &format!("{label} state: encode (MB of state/s)"),
            0,
            true,
            "a",
            &pair(
                "encode_envelope (ours)",
                &size.encode_mb_per_s,
                "rmp_serde::to_vec alone",
                &size.rmp_encode_mb_per_s,
            ),
        );
        keyed_rows(
            rows,
            &format!("{label} state: decode (MB of state/s)"),
            0,
            true,
            "a",
            &pair(
                "decode_envelope (ours)",
                &size.decode_mb_per_s,
                "rmp_serde::from_slice alone",
                &size.rmp_decode_mb_per_s,
            ),
        );
        let mb = |bytes: usize| {
            if bytes == 0 {
                vec![]
            } else {
                vec![bytes as f64 / 1e6]
            }
        };
        keyed_rows(
            rows,
            &format!("{label} state: encoded size (MB)"),
            1,
            true,
            "a",
            &pair(
                "envelope (ours)",
                &mb(size.envelope_bytes),
                "rmp_serde::to_vec",
                &mb(size.rmp_bytes),
            ),
        );
        keyed_rows(
            rows,
            &format!("{label} state: longest gap between prober answers (ms)"),
            1,
            true,
            "a",
            &pair(
                "trigger → READY (old generation encoding)",
                &size.prober_gap_handover_ms,
                "as long just before the trigger",
                &size.prober_gap_steady_ms,
            ),
        );
    }
}

/// The sessions section: N idle sessions handed over against a plain
/// restart.
fn sessions_rows(rows: &mut Vec<Row>, s: &SessionsResult) {
    let n = s.sessions;
    let handed = "handed over (examples/sessions.rs), probation off";
    let plain = "no session open (plain restart)";
    let both = |f: &dyn Fn(&RestartRecord) -> Option<f64>| {
        vec![
            ("a", handed, values(&s.handed, f)),
            ("b", plain, values(&s.plain, f)),
        ]
    };
    keyed_rows(
        rows,
        &format!("{n} idle sessions: trigger → old generation gone (ms)"),
        1,
        true,
        "a",
        &both(&|r| r.old_gone_ms),
    );
    let gone = |v: &[RestartRecord]| summarize(&values(v, |r| r.old_gone_ms));
    let (cost_median, cost_max) = match (gone(&s.handed), gone(&s.plain)) {
        (Some(h), Some(p)) => (Some(h.median - p.median), Some(h.max - p.median)),
        _ => (None, None),
    };
    rows.push(Row {
        metric: format!(
            "{n} idle sessions: handing them over beyond a plain restart (ms; goal ≤ 100)"
        ),
        system: handed.to_string(),
        median: cost_median,
        max: cost_max,
        ratio: None,
        decimals: 1,
    });
    keyed_rows(
        rows,
        &format!("{n} idle sessions: trigger → READY (ms)"),
        1,
        true,
        "a",
        &both(&|r| r.ready_ms),
    );
    single_row(
        rows,
        &format!("{n} idle sessions: sessions lost per restart"),
        handed,
        &s.lost.iter().map(|&l| l as f64).collect::<Vec<_>>(),
        0,
    );
    single_row(
        rows,
        &format!("{n} idle sessions: then one incr on each, until the last answer (ms)"),
        handed,
        &s.check_ms,
        1,
    );
}

/// Memory of a generation draining N held connections.
fn drain_memory_rows(rows: &mut Vec<Row>, m: &DrainMemoryResult) {
    let n = m.connections;
    let sample = |f: &dyn Fn(&DrainSample) -> Option<f64>| -> Vec<f64> {
        m.samples.iter().filter_map(f).collect()
    };
    keyed_rows(
        rows,
        &format!("echo example, {n} held connections: RSS (MiB)"),
        1,
        false,
        "",
        &[
            (
                "",
                "old generation draining them",
                sample(&|d| mib(d.draining_rss_kib)),
            ),
            (
                "",
                "the same before the restart",
                sample(&|d| mib(d.holding_rss_kib)),
            ),
            (
                "",
                "the same before they were opened",
                sample(&|d| mib(d.idle_rss_kib)),
            ),
            (
                "",
                "new generation (none held)",
                sample(&|d| mib(d.new_rss_kib)),
            ),
        ],
    );
    keyed_rows(
        rows,
        &format!("echo example, {n} held connections: PSS (MiB)"),
        1,
        false,
        "",
        &[
            (
                "",
                "old generation draining them",
                sample(&|d| mib(d.draining_pss_kib)),
            ),
            (
                "",
                "new generation (none held)",
                sample(&|d| mib(d.new_pss_kib)),
            ),
        ],
    );
    single_row(
        rows,
        &format!("echo example, {n} held connections: RSS per connection, draining (KiB)"),
        "old generation draining them",
        &sample(&|d| match (d.draining_rss_kib, d.idle_rss_kib) {
            (Some(dr), Some(idle)) if n > 0 => Some((dr as f64 - idle as f64) / n as f64),
            _ => None,
        }),
        2,
    );
}

/// The longest accept gap around a restart, probation on and off.
fn accept_gap_rows(rows: &mut Vec<Row>, g: &AcceptGapResult) {
    let window = g.window_ms / 1000.0;
    let on = format!("probation on ({}, the default)", g.probation);
    keyed_rows(
        rows,
        &format!("longest interval without a successful accept, trigger → +{window:.1} s (ms)"),
        1,
        true,
        "on",
        &[
            ("on", on.as_str(), g.on_ms.clone()),
            ("off", "probation off", g.off_ms.clone()),
            (
                "steady",
                &format!("no restart ({window:.1} s before a trigger)"),
                g.steady_ms.clone(),
            ),
        ],
    );
    keyed_rows(
        rows,
        "prober connections failed around the restarts",
        0,
        false,
        "",
        &[
            ("", on.as_str(), vec![g.failures_on as f64]),
            ("", "probation off", vec![g.failures_off as f64]),
        ],
    );
}

/// The rows of a report, in the order of the table.
pub fn rows(report: &Report) -> Vec<Row> {
    let systems = &report.systems;
    let mut rows = Vec::new();
    metric_rows(
        &mut rows,
        "trigger → initiator told (ms)",
        1,
        true,
        systems,
        |s| values(&s.restarts, |r| r.told_ms),
    );
    metric_rows(
        &mut rows,
        "trigger → first answer from new generation (ms)",
        1,
        true,
        systems,
        |s| values(&s.restarts, |r| r.new_answer_ms),
    );
    metric_rows(
        &mut rows,
        "new generation READY → initiator told (ms)",
        1,
        true,
        systems,
        |s| values(&s.restarts, |r| Some(r.told_ms? - r.ready_ms?)),
    );
    metric_rows(
        &mut rows,
        "trigger → old generation gone (ms)",
        1,
        true,
        systems,
        |s| values(&s.restarts, |r| r.old_gone_ms),
    );
    metric_rows(
        &mut rows,
        "idle: trigger → initiator told (ms)",
        1,
        true,
        systems,
        |s| values(&s.idle_restarts, |r| r.told_ms),
    );
    metric_rows(
        &mut rows,
        "idle: READY → old generation gone (ms)",
        1,
        true,
        systems,
        |s| values(&s.idle_restarts, RestartRecord::ready_to_old_gone_ms),
    );
    metric_rows(
        &mut rows,
        "failed connections per restart",
        0,
        true,
        systems,
        |s| values(&s.restarts, |r| Some(r.failures as f64)),
    );
    metric_rows(
        &mut rows,
        "throughput without restarts (exchanges/s)",
        0,
        true,
        systems,
        |s| s.steady_rates.clone(),
    );
    metric_rows(
        &mut rows,
        "throughput during restarts (exchanges/s)",
        0,
        true,
        systems,
        |s| s.restart_rates.clone(),
    );
    metric_rows(
        &mut rows,
        "RSS of the serving generation (MiB)",
        1,
        true,
        systems,
        |s| values(&s.restarts, |r| r.rss_kib.map(|k| k as f64 / 1024.0)),
    );
    metric_rows(
        &mut rows,
        "its spawner process: PSS (MiB)",
        1,
        false,
        systems,
        |s| {
            values(&s.restarts, |r| {
                r.spawner_pss_kib.map(|k| k as f64 / 1024.0)
            })
        },
    );
    metric_rows(
        &mut rows,
        "new generation at READY: CPU time used (ms)",
        1,
        true,
        systems,
        |s| values(&s.restarts, |r| r.startup_cpu_ms),
    );
    metric_rows(
        &mut rows,
        "new generation at READY: time waiting for a CPU (ms)",
        1,
        true,
        systems,
        |s| values(&s.restarts, |r| r.startup_wait_ms),
    );
    metric_rows(
        &mut rows,
        "open fds, idle: first generation",
        0,
        false,
        systems,
        |s| s.initial_fds.map(|f| vec![f as f64]).unwrap_or_default(),
    );
    metric_rows(
        &mut rows,
        "open fds, idle: after each idle restart",
        0,
        false,
        systems,
        |s| values(&s.idle_restarts, |r| r.fds.map(|f| f as f64)),
    );
    metric_rows(
        &mut rows,
        "open fds leaked per restart",
        2,
        false,
        systems,
        |s| match (s.initial_fds, s.idle_restarts.last().and_then(|r| r.fds)) {
            (Some(first), Some(last)) if !s.restarts.is_empty() => {
                let n = (s.restarts.len() + s.idle_restarts.len()) as f64;
                vec![(last as f64 - first as f64) / n]
            }
            _ => vec![],
        },
    );
    if let Some(cli) = &report.cli {
        cli_rows(&mut rows, cli);
    }
    if let Some(state) = &report.state {
        state_rows(&mut rows, state);
    }
    if let Some(o) = &report.overhead {
        let ours = summarize(&o.ours_rates);
        let bare = summarize(&o.bare_rates);
        rows.push(Row {
            metric: "serving throughput, no restarts (exchanges/s)".to_string(),
            system: "echo example (ours)".to_string(),
            median: ours.map(|s| s.median),
            max: ours.map(|s| s.max),
            ratio: None,
            decimals: 0,
        });
        rows.push(Row {
            metric: "serving throughput, no restarts (exchanges/s)".to_string(),
            system: "bare tokio listener".to_string(),
            median: bare.map(|s| s.median),
            max: bare.map(|s| s.max),
            ratio: match (ours, bare) {
                (Some(o), Some(b)) if b.median != 0.0 => Some(o.median / b.median),
                _ => None,
            },
            decimals: 0,
        });
    }
    if let Some(http) = &report.http {
        http_rows(&mut rows, http);
    }
    if let Some(sessions) = &report.sessions {
        sessions_rows(&mut rows, sessions);
    }
    if let Some(memory) = &report.drain_memory {
        drain_memory_rows(&mut rows, memory);
    }
    if let Some(gap) = &report.accept_gap {
        accept_gap_rows(&mut rows, gap);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(told: f64, failures: u64, fds: u64) -> RestartRecord {
        RestartRecord {
            told_ms: Some(told),
            failures,
            fds: Some(fds),
            ..Default::default()
        }
    }

    #[test]
    fn numbers_and_ratios_format() {
        assert_eq!(fmt_num(Some(1.24), 1), "1.2");
        assert_eq!(fmt_num(Some(12.0), 0), "12");
        assert_eq!(fmt_num(None, 1), "—");
        assert_eq!(fmt_num(Some(f64::NAN), 1), "—");
        assert_eq!(fmt_ratio(Some(0.3123)), "0.31×");
        assert_eq!(fmt_ratio(Some(0.006)), "0.0060×");
        assert_eq!(fmt_ratio(Some(f64::INFINITY)), "—");
        assert_eq!(fmt_ratio(None), "—");
    }

    #[test]
    fn table_is_aligned_and_groups_metrics() {
        let rows = vec![
            Row {
                metric: "m (ms)".into(),
                system: "ours".into(),
                median: Some(1.25),
                max: Some(10.0),
                ratio: None,
                decimals: 1,
            },
            Row {
                metric: "m (ms)".into(),
                system: "peer".into(),
                median: Some(100.0),
                max: None,
                ratio: Some(0.0125),
                decimals: 1,
            },
        ];
        let table = markdown_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("| metric "));
        assert!(lines[1].contains("---:"));
        assert!(lines[2].starts_with("| m (ms) | ours "));
        assert!(lines[3].starts_with("|        | peer "));
        let cells =
            |line: &str| -> Vec<String> { line.split('|').map(|c| c.trim().to_string()).collect() };
        assert_eq!(cells(lines[2])[3], "1.2");
        assert_eq!(cells(lines[2])[5], "—");
        assert_eq!(cells(lines[3])[4], "—");
        assert_eq!(cells(lines[3])[5], "0.01×");
        let widths: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|w| *w == widths[0]), "{table}");
    }

    #[test]
    fn rows_compute_medians_maxima_and_ratios() {
        let ours = SystemResult {
            key: "ours".into(),
            name: "ours".into(),
            restarts: vec![record(2.0, 0, 10), record(4.0, 0, 10), record(3.0, 0, 10)],
            idle_restarts: vec![record(1.0, 0, 10)],
            initial_fds: Some(10),
            ..Default::default()
        };
        let peer = SystemResult {
            key: "peer".into(),
            name: "peer".into(),
            restarts: vec![
                record(10.0, 2, 10),
                record(20.0, 0, 11),
                record(30.0, 1, 12),
            ],
            idle_restarts: vec![record(1.0, 0, 12)],
            initial_fds: Some(10),
            ..Default::default()
        };
        let report = Report {
            systems: vec![ours, peer],
            ..Default::default()
        };
        let rows = rows(&report);
        let told: Vec<&Row> = rows
            .iter()
            .filter(|r| r.metric.starts_with("trigger → initiator told"))
            .collect();
        assert_eq!(told[0].median, Some(3.0));
        assert_eq!(told[0].max, Some(4.0));
        assert_eq!(told[0].ratio, None);
        assert_eq!(told[1].median, Some(20.0));
        assert_eq!(told[1].ratio, Some(0.15));
        let leaked: Vec<&Row> = rows
            .iter()
            .filter(|r| r.metric.starts_with("open fds leaked"))
            .collect();
        assert_eq!(leaked[0].median, Some(0.0));
        assert_eq!(leaked[1].median, Some(0.5));
        assert_eq!(leaked[1].ratio, None);
        let failed: Vec<&Row> = rows
            .iter()
            .filter(|r| r.metric.starts_with("failed"))
            .collect();
        assert_eq!(failed[1].max, Some(2.0));
        // The JSON round-trips.
        let json = serde_json::to_string(&report).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back.systems[1].restarts[2].fds, Some(12));
    }

    #[test]
    fn http_rows_count_failures_per_restart_and_compare_latency() {
        let restart = |fresh: u64| HttpRestart {
            old_gone_ms: Some(10.0),
            failures: [("fresh".to_string(), fresh)].into_iter().collect(),
        };
        let system = |key: &str, fresh: Vec<u64>, p99: f64| HttpSystemResult {
            key: key.to_string(),
            name: key.to_string(),
            restarts: fresh.into_iter().map(restart).collect(),
            steady_p99_ms: Some(2.0),
            restart_p99_ms: Some(p99),
            ..Default::default()
        };
        let http = HttpResult {
            clients: [("fresh".to_string(), 4)].into_iter().collect(),
            systems: vec![
                system("ours-http", vec![0, 0], 2.5),
                system("axum-serve", vec![1, 3], 5.0),
            ],
            ..Default::default()
        };
        let mut rows = Vec::new();
        http_rows(&mut rows, &http);
        let find = |metric: &str, system: &str| {
            rows.iter()
                .find(|r| r.metric.starts_with(metric) && r.system == system)
                .unwrap_or_else(|| panic!("no row {metric} / {system}"))
                .clone()
        };
        let fresh = find("HTTP: failed requests per restart, fresh", "axum-serve");
        assert_eq!((fresh.median, fresh.max), (Some(2.0), Some(3.0)));
        assert!(
            !rows
                .iter()
                .any(|r| r.metric.starts_with("HTTP: failed") && r.metric.contains("keep-alive")),
            "no keep-alive clients, no row for them"
        );
        let during = find("HTTP: p99 latency, during", "axum-serve");
        assert_eq!(during.ratio, Some(0.5));
        let ratio = find("HTTP: p99 during restarts ÷", "ours-http");
        assert_eq!(ratio.median, Some(1.25));
    }

    fn find<'a>(rows: &'a [Row], metric: &str, system: &str) -> &'a Row {
        rows.iter()
            .find(|r| r.metric.starts_with(metric) && r.system.starts_with(system))
            .unwrap_or_else(|| panic!("no row {metric} / {system}"))
    }

    #[test]
    fn state_rows_compare_with_rmp_serde_and_skip_what_did_not_run() {
        let size = StateSize {
            megabytes: 100,
            data_bytes: 100 << 20,
            envelope_bytes: 99_000_000,
            rmp_bytes: 90_000_000,
            trigger_to_ready_ms: vec![80.0, 120.0, 90.0],
            encode_mb_per_s: vec![1000.0, 1200.0],
            rmp_encode_mb_per_s: vec![500.0, 600.0],
            decode_mb_per_s: vec![800.0],
            rmp_decode_mb_per_s: vec![1600.0],
            prober_gap_handover_ms: vec![3.0],
            prober_gap_steady_ms: vec![1.5],
            cli_trigger_to_ready_ms: vec![100.0],
            cli_trigger_to_told_ms: vec![102.0],
            old_peak_rss_kib: vec![250 * 1024, 300 * 1024, 200 * 1024],
            new_peak_rss_kib: vec![200 * 1024],
            ..Default::default()
        };
        let skipped = StateSize {
            megabytes: 1024,
            skipped: Some("not enough memory".into()),
            ..Default::default()
        };
        let mut rows = Vec::new();
        state_rows(
            &mut rows,
            &StateResult {
                sizes: vec![size, skipped],
                probation: "0".into(),
            },
        );
        assert!(rows.iter().all(|r| r.metric.starts_with("100 MiB state")));
        let ready = find(&rows, "100 MiB state: trigger → READY (ms; goal ≤ 100)", "");
        assert_eq!((ready.median, ready.max), (Some(90.0), Some(120.0)));
        let encode = find(&rows, "100 MiB state: encode", "rmp_serde");
        assert_eq!(encode.ratio, Some(2.0));
        let decode = find(&rows, "100 MiB state: decode", "rmp_serde");
        assert_eq!(decode.ratio, Some(0.5));
        let size = find(&rows, "100 MiB state: encoded size", "rmp_serde");
        assert_eq!(size.ratio, Some(1.1));
        let gap = find(&rows, "100 MiB state: longest gap", "as long");
        assert_eq!(gap.ratio, Some(2.0));
        let cli = find(
            &rows,
            "100 MiB state: trigger → READY",
            "`shellflip restart`",
        );
        assert_eq!((cli.median, cli.ratio), (Some(100.0), Some(0.9)));
        let told = find(
            &rows,
            "100 MiB state: trigger → initiator told",
            "`shellflip",
        );
        assert_eq!(told.median, Some(102.0));
        let old = find(
            &rows,
            "100 MiB state: peak RSS during the handover: old",
            "",
        );
        assert_eq!((old.median, old.max), (Some(250.0), Some(300.0)));
        let new = find(
            &rows,
            "100 MiB state: peak RSS during the handover: new",
            "",
        );
        assert_eq!(new.median, Some(200.0));
        assert_eq!(size_label(1024), "1 GiB");
        assert_eq!(size_label(100), "100 MiB");
    }

    #[test]
    fn state_notes_give_the_peaks_as_multiples_of_the_state() {
        let mut size = StateSize {
            megabytes: 100,
            data_bytes: 100 << 20,
            trigger_to_ready_ms: vec![1.0, 2.0, 3.0],
            cli_trigger_to_ready_ms: vec![1.0, 2.0],
            old_peak_rss_kib: vec![250 * 1024, 210 * 1024],
            new_peak_rss_kib: vec![200 * 1024],
            ..Default::default()
        };
        assert_eq!(size.peak_rss_multiples(), (Some(2.3), Some(2.0)));
        let note = state_note(&size, "0");
        assert!(note.contains("restarts: 5, alternately through the control socket (3) and by `shellflip restart` (2) (SHELLFLIP_PROBATION=0)"), "{note}");
        assert!(
            note.contains(
                "old generation 2.30×, new generation 2.00× the state's data (104857600 bytes)"
            ),
            "{note}"
        );
        assert!(!note.contains("unavailable"), "{note}");
        size.old_peak_rss_kib.clear();
        size.peak_rss_unavailable = vec!["old generation, 5 of 5 restarts: no clear_refs".into()];
        let note = state_note(&size, "0");
        assert!(
            note.contains("old generation —, new generation 2.00×"),
            "{note}"
        );
        assert!(
            note.ends_with(
                "; peak RSS unavailable: old generation, 5 of 5 restarts: no clear_refs\n"
            ),
            "{note}"
        );
        size.skipped = Some("not enough memory".into());
        assert_eq!(
            state_note(&size, "0"),
            "- 100 MiB state: skipped: not enough memory\n"
        );
    }

    #[test]
    fn sessions_rows_subtract_the_plain_restart() {
        let gone = |ms: f64| RestartRecord {
            old_gone_ms: Some(ms),
            ready_ms: Some(5.0),
            ..Default::default()
        };
        let sessions = SessionsResult {
            sessions: 10,
            plain: vec![gone(10.0), gone(12.0), gone(11.0)],
            handed: vec![gone(60.0), gone(80.0), gone(70.0)],
            lost: vec![0, 1, 0],
            check_ms: vec![4.0],
            ..Default::default()
        };
        let mut rows = Vec::new();
        sessions_rows(&mut rows, &sessions);
        let cost = find(&rows, "10 idle sessions: handing them over beyond", "");
        assert_eq!((cost.median, cost.max), (Some(59.0), Some(69.0)));
        let gone = find(
            &rows,
            "10 idle sessions: trigger → old generation gone",
            "no session",
        );
        assert_eq!(gone.ratio, Some(70.0 / 11.0));
        let lost = find(&rows, "10 idle sessions: sessions lost", "");
        assert_eq!(lost.max, Some(1.0));
    }

    #[test]
    fn drain_memory_and_accept_gap_rows() {
        let memory = DrainMemoryResult {
            connections: 1024,
            samples: vec![DrainSample {
                idle_rss_kib: Some(5 * 1024),
                draining_rss_kib: Some(15 * 1024),
                draining_pss_kib: Some(12 * 1024),
                ..Default::default()
            }],
            ..Default::default()
        };
        let gap = AcceptGapResult {
            window_ms: 2500.0,
            probation: "2s".into(),
            on_ms: vec![4.0],
            off_ms: vec![2.0],
            steady_ms: vec![1.0, 1.0],
            ..Default::default()
        };
        let mut rows = Vec::new();
        drain_memory_rows(&mut rows, &memory);
        accept_gap_rows(&mut rows, &gap);
        let per = find(&rows, "echo example, 1024 held connections: RSS per", "");
        assert_eq!(per.median, Some(10.0));
        let rss = find(
            &rows,
            "echo example, 1024 held connections: RSS (MiB)",
            "old",
        );
        assert_eq!(rss.median, Some(15.0));
        let off = find(
            &rows,
            "longest interval without a successful accept",
            "probation off",
        );
        assert_eq!(off.ratio, Some(2.0));
        let steady = find(
            &rows,
            "longest interval without a successful accept",
            "no restart",
        );
        assert_eq!(steady.ratio, Some(4.0));
        // The JSON of a report with every section round-trips.
        let report = Report {
            drain_memory: Some(memory),
            accept_gap: Some(gap),
            ..Default::default()
        };
        let back: Report = serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
        assert_eq!(back.accept_gap.unwrap().on_ms, vec![4.0]);
    }
}
