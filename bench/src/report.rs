//! The result of a run, its markdown table and its JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StateSize {
    pub megabytes: usize,
    pub envelope_bytes: usize,
    /// Trigger → the new generation's ready line, per restart.
    pub trigger_to_ready_ms: Vec<f64>,
    /// Trigger → initiator told, per restart.
    pub trigger_to_told_ms: Vec<f64>,
    /// `encode_envelope` alone, in-process, MB/s per repetition.
    pub encode_mb_per_s: Vec<f64>,
    /// `decode_envelope` alone, in-process, MB/s per repetition.
    pub decode_mb_per_s: Vec<f64>,
    /// The same state with the blob serialized as MessagePack `bin`
    /// (`BinBlob`): envelope size, encode and decode MB/s.
    pub bin_envelope_bytes: usize,
    pub bin_encode_mb_per_s: Vec<f64>,
    pub bin_decode_mb_per_s: Vec<f64>,
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
    if let Some(state) = &report.state {
        let ours = systems
            .iter()
            .find(|s| s.key == "ours")
            .map(|s| s.name.clone())
            .unwrap_or_else(|| "shellflip (ours)".to_string());
        for size in &state.sizes {
            let mb = size.megabytes;
            let mut push = |metric: String, sample: &[f64], decimals: usize| {
                let s = summarize(sample);
                rows.push(Row {
                    metric,
                    system: ours.clone(),
                    median: s.map(|s| s.median),
                    max: s.map(|s| s.max),
                    ratio: None,
                    decimals,
                });
            };
            push(
                format!("{mb} MB state: trigger → READY (ms)"),
                &size.trigger_to_ready_ms,
                1,
            );
            push(
                format!("{mb} MB state: trigger → initiator told (ms)"),
                &size.trigger_to_told_ms,
                1,
            );
            push(
                format!(
                    "{mb} MB state: encode_envelope alone (MB/s; envelope {:.1} MB)",
                    size.envelope_bytes as f64 / 1e6
                ),
                &size.encode_mb_per_s,
                0,
            );
            push(
                format!("{mb} MB state: decode_envelope alone (MB/s)"),
                &size.decode_mb_per_s,
                0,
            );
            if !size.bin_encode_mb_per_s.is_empty() {
                push(
                    format!(
                        "{mb} MB state, blob as MessagePack bin: encode_envelope (MB/s; envelope {:.1} MB)",
                        size.bin_envelope_bytes as f64 / 1e6
                    ),
                    &size.bin_encode_mb_per_s,
                    0,
                );
                push(
                    format!("{mb} MB state, blob as MessagePack bin: decode_envelope (MB/s)"),
                    &size.bin_decode_mb_per_s,
                    0,
                );
            }
        }
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
}
