//! The restart-command section (issue 23), its pure parts: what it
//! records, its rows in the main table, the hop-by-hop profile of ours'
//! restarts and the goals.
//!
//! Every system serves the pid protocol (a line in, `pid=<pid>` out,
//! closed) on each Tokio flavor and is restarted by starting a process
//! (ours: `shellflip restart SOCKET`; the peers: their restart command),
//! timed from its spawn until it exits. Ratios compare ours (probation off)
//! with the systems of the same flavor, in the same run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::report::{fmt_num, fmt_ratio, RestartRecord, Row};
use crate::stats::{median, summarize};

/// Ours with the probation off: the system the goals are about.
pub const OURS: &str = "ours";
/// Ours with the default probation: shown beside, not in the goals.
pub const OURS_PROBATION: &str = "ours-probation";
/// The peers, by key.
pub const PEERS: [&str; 2] = ["cf-shellflip", "ecdysis"];

/// The section's result (absent with `--no-cli`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CliResult {
    /// Clients (each: connect, send a line, read the pid, closed by the
    /// server, again), besides the prober (the same every millisecond).
    pub clients: usize,
    /// Restarts per system and flavor.
    pub restarts: usize,
    /// From one restart's end (the trigger process exited, the old
    /// generation reaped) to the next trigger, ms.
    pub gap_ms: u64,
    /// The probation of `ours-probation` (the runtime's default).
    pub probation: String,
    pub systems: Vec<CliSystemResult>,
}

/// One system in one flavor.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CliSystemResult {
    /// `ours`, `ours-probation`, `cf-shellflip`, `ecdysis`.
    pub key: String,
    /// `current_thread` or `multi_thread`.
    pub flavor: String,
    /// The system's name, without the flavor.
    pub name: String,
    /// The restart command the driver starts.
    pub trigger: String,
    /// Environment the driver set for the service.
    pub env: Vec<String>,
    /// Per restart. `told_ms` is the trigger process's exit; `outcome` what
    /// it printed.
    pub restarts: Vec<RestartRecord>,
    /// Per restart, the hops of ours' profile (`SHELLFLIP_PROFILE`); empty
    /// when not profiled.
    #[serde(default)]
    pub hops: Vec<HopRestart>,
    /// Failed connections by kind, over the whole run.
    pub failures: BTreeMap<String, u64>,
    /// Exchanges answered (clients and prober).
    pub exchanges: u64,
    pub error: Option<String>,
}

impl CliSystemResult {
    /// `shellflip (ours), current_thread`.
    pub fn label(&self) -> String {
        format!("{}, {}", self.name, self.flavor)
    }
}

/// The hops of one restart, in ms since the trigger process was spawned.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HopRestart {
    pub marks: Vec<HopMark>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HopMark {
    pub hop: String,
    /// `old` or `new` generation (by the line's pid), or `driver`.
    pub side: String,
    pub ms: f64,
}

impl HopRestart {
    fn at(&self, hop: &str) -> Option<f64> {
        self.marks.iter().find(|m| m.hop == hop).map(|m| m.ms)
    }
}

/// The driver's marks: the trigger process spawned and exited, and the old
/// generation reaped.
pub const CLI_SPAWNED: &str = "trigger process spawned";
pub const CLI_EXITED: &str = "trigger process exited";
pub const OLD_REAPED: &str = "old generation reaped";

/// The rows of the hop table, in the order of a restart, with the side
/// that writes each. The runtime's hops are `shellflip-runtime/src/profile.rs`'s;
/// a hop of a profile missing here gets a row too ([`hop_rows`]).
pub const HOPS: [(&str, &str); 22] = [
    (CLI_SPAWNED, "driver"),
    ("trigger_read", "old"),
    ("spawn_asked", "old"),
    ("exec_done", "new"),
    ("spawner_forked", "new"),
    ("handover_read", "new"),
    ("state_asked", "old"),
    ("state_encoded", "old"),
    ("state_sent", "old"),
    ("state_received", "new"),
    ("state_decoded", "new"),
    ("runtime_built", "new"),
    ("adopted", "new"),
    ("ready_written", "new"),
    ("ready_read", "old"),
    ("paused", "old"),
    ("answer_written", "old"),
    (CLI_EXITED, "driver"),
    ("drained", "old"),
    ("supervisor_done", "old"),
    ("exiting", "old"),
    (OLD_REAPED, "driver"),
];

/// The rows of a hop table over these restarts: [`HOPS`], and before the
/// trigger process's exit every other hop the restarts have, in the order first seen,
/// with the side it came from.
pub fn hop_rows<'a>(restarts: impl IntoIterator<Item = &'a HopRestart>) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = HOPS
        .iter()
        .map(|(h, side)| (h.to_string(), side.to_string()))
        .collect();
    let mut extra: Vec<(String, String)> = Vec::new();
    for r in restarts {
        for m in &r.marks {
            let known = rows.iter().chain(&extra).any(|(h, _)| *h == m.hop);
            if !known {
                extra.push((m.hop.clone(), m.side.clone()));
            }
        }
    }
    let at = rows
        .iter()
        .position(|(h, _)| h == CLI_EXITED)
        .unwrap_or(rows.len());
    rows.splice(at..at, extra);
    rows
}

/// One line of a profile file: `<Unix time in µs> <pid> <hop>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileLine {
    pub unix_us: u64,
    pub pid: u32,
    pub hop: String,
}

/// The lines of a profile file; malformed lines are skipped.
pub fn parse_profile(text: &str) -> Vec<ProfileLine> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let unix_us = fields.next()?.parse().ok()?;
            let pid = fields.next()?.parse().ok()?;
            let hop = fields.next()?.to_string();
            fields
                .next()
                .is_none()
                .then_some(ProfileLine { unix_us, pid, hop })
        })
        .collect()
}

/// One restart as the driver saw it, to find its hops in a profile.
#[derive(Debug, Clone, Copy)]
pub struct RestartWindow {
    /// The trigger process spawned, Unix µs.
    pub from_unix_us: u64,
    /// The next restart's trigger (or the end of the run), Unix µs.
    pub to_unix_us: u64,
    pub old_pid: u32,
    pub new_pid: u32,
    /// The trigger process exited, ms after its spawn.
    pub exited_ms: Option<f64>,
    /// The old generation reaped, ms after the trigger's spawn.
    pub old_reaped_ms: Option<f64>,
}

/// The hops of one restart: for each hop, the first line of the old or the
/// new generation's pid in the window (other pids, such as spawners, are
/// left out), in ms since the trigger process was spawned; with the
/// driver's three marks.
pub fn hops_of(lines: &[ProfileLine], w: &RestartWindow) -> HopRestart {
    let mut marks = vec![HopMark {
        hop: CLI_SPAWNED.to_string(),
        side: "driver".to_string(),
        ms: 0.0,
    }];
    for line in lines {
        if line.unix_us < w.from_unix_us || line.unix_us >= w.to_unix_us {
            continue;
        }
        let side = if line.pid == w.old_pid {
            "old"
        } else if line.pid == w.new_pid {
            "new"
        } else {
            continue;
        };
        if marks.iter().any(|m| m.hop == line.hop) {
            continue;
        }
        marks.push(HopMark {
            hop: line.hop.clone(),
            side: side.to_string(),
            ms: (line.unix_us - w.from_unix_us) as f64 / 1000.0,
        });
    }
    for (hop, ms) in [(CLI_EXITED, w.exited_ms), (OLD_REAPED, w.old_reaped_ms)] {
        if let Some(ms) = ms {
            marks.push(HopMark {
                hop: hop.to_string(),
                side: "driver".to_string(),
                ms,
            });
        }
    }
    marks.sort_by(|a, b| a.ms.total_cmp(&b.ms));
    HopRestart { marks }
}

/// One row of the hop table for one flavor: medians over the restarts of
/// the hop's time since `trigger_read` and since the hop before it (in the
/// table's order; the nearest earlier one the restart has).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HopStat {
    pub since_trigger_ms: Option<f64>,
    pub since_previous_ms: Option<f64>,
    /// Restarts that have this hop.
    pub n: usize,
}

/// The statistics of every hop of `rows` ([`hop_rows`]) over `restarts`.
pub fn hop_stats(rows: &[(String, String)], restarts: &[HopRestart]) -> Vec<HopStat> {
    rows.iter()
        .enumerate()
        .map(|(i, (hop, _))| {
            let mut since_trigger = Vec::new();
            let mut since_previous = Vec::new();
            for r in restarts {
                let Some(at) = r.at(hop) else { continue };
                if let Some(t) = r.at("trigger_read") {
                    since_trigger.push(at - t);
                }
                let previous = rows[..i].iter().rev().find_map(|(h, _)| r.at(h));
                if let Some(p) = previous {
                    since_previous.push(at - p);
                }
            }
            HopStat {
                since_trigger_ms: median(&since_trigger),
                since_previous_ms: median(&since_previous),
                n: restarts.iter().filter(|r| r.at(hop).is_some()).count(),
            }
        })
        .collect()
}

/// The hop table of the system keyed `key` (ours), one pair of columns per
/// flavor that has a profile; `None` if none has.
pub fn hop_table(cli: &CliResult, key: &str) -> Option<String> {
    let profiled: Vec<&CliSystemResult> = cli
        .systems
        .iter()
        .filter(|s| s.key == key && !s.hops.is_empty())
        .collect();
    if profiled.is_empty() {
        return None;
    }
    let rows = hop_rows(profiled.iter().flat_map(|s| &s.hops));
    let stats: Vec<Vec<HopStat>> = profiled.iter().map(|s| hop_stats(&rows, &s.hops)).collect();
    let mut header = vec!["hop".to_string(), "side".to_string()];
    for s in &profiled {
        header.push(format!(
            "{}: since trigger_read (ms, n={})",
            s.flavor,
            s.hops.len()
        ));
        header.push(format!("{}: since previous hop (ms)", s.flavor));
    }
    let mut cells = Vec::new();
    for (i, (hop, side)) in rows.iter().enumerate() {
        let mut row = vec![hop.clone(), side.clone()];
        for st in &stats {
            let missing = |v: Option<f64>| match (v, st[i].n) {
                (_, 0) => "—".to_string(),
                (v, _) => fmt_num(v, 2),
            };
            row.push(missing(st[i].since_trigger_ms));
            row.push(missing(st[i].since_previous_ms));
        }
        cells.push(row);
    }
    let right: Vec<bool> = (0..header.len()).map(|i| i >= 2).collect();
    Some(render(&header, &cells, &right))
}

/// A markdown table with aligned columns.
fn render(header: &[String], cells: &[Vec<String>], right: &[bool]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].chars().count())
                .chain([header[i].chars().count(), 3])
                .max()
                .unwrap_or(3)
        })
        .collect();
    let pad = |s: &str, i: usize| {
        let fill = " ".repeat(widths[i].saturating_sub(s.chars().count()));
        if right[i] {
            format!("{fill}{s}")
        } else {
            format!("{s}{fill}")
        }
    };
    let line = |cols: Vec<String>| format!("| {} |\n", cols.join(" | "));
    let mut out = line(header.iter().enumerate().map(|(i, h)| pad(h, i)).collect());
    out.push_str(&line(
        (0..header.len())
            .map(|i| {
                if right[i] {
                    format!("{}:", "-".repeat(widths[i] - 1))
                } else {
                    "-".repeat(widths[i])
                }
            })
            .collect(),
    ));
    for c in cells {
        out.push_str(&line(
            c.iter().enumerate().map(|(i, s)| pad(s, i)).collect(),
        ));
    }
    out
}

/// The flavors of the systems, in the order they first appear.
fn flavors(cli: &CliResult) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for s in &cli.systems {
        if !out.contains(&s.flavor.as_str()) {
            out.push(&s.flavor);
        }
    }
    out
}

fn values(records: &[RestartRecord], f: &dyn Fn(&RestartRecord) -> Option<f64>) -> Vec<f64> {
    records.iter().filter_map(f).collect()
}

fn mib(kib: Option<u64>) -> Option<f64> {
    kib.map(|k| k as f64 / 1024.0)
}

type Metric = fn(&RestartRecord) -> Option<f64>;

/// The section's metrics: label, decimals, whether a ratio is shown, and
/// the value of one restart.
const METRICS: [(&str, usize, bool, Metric); 6] = [
    (
        "restart command: trigger → initiator told (command exited) (ms)",
        1,
        true,
        |r| r.told_ms,
    ),
    (
        "restart command: trigger → first answer from the new pid (ms)",
        1,
        true,
        |r| r.new_answer_ms,
    ),
    (
        "restart command: trigger → old pid gone (ms)",
        1,
        true,
        |r| r.old_gone_ms,
    ),
    (
        "restart command: failed connections per restart",
        0,
        false,
        |r| Some(r.failures as f64),
    ),
    (
        "restart command: RSS of the serving generation (MiB)",
        1,
        true,
        |r| mib(r.rss_kib),
    ),
    (
        "restart command: its spawner process: PSS (MiB)",
        1,
        false,
        |r| mib(r.spawner_pss_kib),
    ),
];

/// The section's rows of the main table: per metric, every system in each
/// flavor; the ratio is ours' (probation off) median in the same flavor
/// over the system's.
pub fn cli_rows(rows: &mut Vec<Row>, cli: &CliResult) {
    for (metric, decimals, with_ratio, f) in METRICS {
        for flavor in flavors(cli) {
            let ours = cli
                .systems
                .iter()
                .find(|s| s.key == OURS && s.flavor == flavor)
                .and_then(|s| median(&values(&s.restarts, &f)));
            for s in cli.systems.iter().filter(|s| s.flavor == flavor) {
                let summary = summarize(&values(&s.restarts, &f));
                let ratio = match (ours, summary) {
                    (Some(o), Some(m)) if with_ratio && s.key != OURS && m.median != 0.0 => {
                        Some(o / m.median)
                    }
                    _ => None,
                };
                rows.push(Row {
                    metric: metric.to_string(),
                    system: s.label(),
                    median: summary.map(|m| m.median),
                    max: summary.map(|m| m.max),
                    ratio,
                    decimals,
                });
            }
        }
    }
}

/// One goal of the issue in one flavor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Goal {
    pub flavor: String,
    /// What is compared, with its unit.
    pub goal: String,
    /// Ours' median (probation off).
    pub ours: Option<f64>,
    /// The peer compared with: the fastest (or, for memory, the smallest).
    pub against: Option<String>,
    /// Its median.
    pub reference: Option<f64>,
    /// Ours ÷ reference.
    pub ratio: Option<f64>,
    /// The goal: ratio ≤ limit.
    pub limit: f64,
    /// `None`: a median is missing.
    pub met: Option<bool>,
    /// What is reported beside (the spawner's PSS).
    #[serde(default)]
    pub note: String,
}

/// The goals, per flavor: ours (probation off) against the
/// fastest peer of the same flavor (for memory, the peer with the smallest
/// RSS: ours must be within 1.1× of each peer's).
pub fn goals(cli: &CliResult) -> Vec<Goal> {
    let table: [(&str, f64, Metric); 4] = [
        ("trigger → initiator told (ms)", 0.8, |r| r.told_ms),
        (
            "trigger → first answer from the new generation (ms)",
            0.9,
            |r| r.new_answer_ms,
        ),
        ("trigger → old generation gone (ms)", 0.8, |r| {
            r.old_gone_ms
        }),
        ("RSS of the serving generation (MiB)", 1.1, |r| {
            mib(r.rss_kib)
        }),
    ];
    let mut out = Vec::new();
    for flavor in flavors(cli) {
        let of = |key: &str| {
            cli.systems
                .iter()
                .find(|s| s.key == key && s.flavor == flavor)
        };
        let ours = of(OURS);
        for (i, (goal, limit, f)) in table.iter().enumerate() {
            let ours_median = ours.and_then(|s| median(&values(&s.restarts, f)));
            let best = PEERS
                .iter()
                .filter_map(|k| of(k))
                .filter_map(|s| Some((s.name.clone(), median(&values(&s.restarts, f))?)))
                .min_by(|a, b| a.1.total_cmp(&b.1));
            let ratio = match (ours_median, &best) {
                (Some(o), Some((_, r))) if *r > 0.0 => Some(o / r),
                _ => None,
            };
            let mut note = String::new();
            if i == 3 {
                let pss =
                    ours.and_then(|s| median(&values(&s.restarts, &|r| mib(r.spawner_pss_kib))));
                if let Some(pss) = pss {
                    note = format!("spawner PSS {pss:.1} MiB beside it");
                    if let (Some(o), Some((_, r))) = (ours_median, &best) {
                        if *r > 0.0 {
                            note.push_str(&format!(
                                " (RSS + spawner PSS: {})",
                                fmt_ratio(Some((o + pss) / r))
                            ));
                        }
                    }
                }
            }
            out.push(Goal {
                flavor: flavor.to_string(),
                goal: goal.to_string(),
                ours: ours_median,
                against: best.as_ref().map(|b| b.0.clone()),
                reference: best.map(|b| b.1),
                ratio,
                limit: *limit,
                met: ratio.map(|r| r <= *limit),
                note,
            });
        }
    }
    out
}

/// The goals as a markdown table, then one line per flavor counting them.
pub fn goals_table(goals: &[Goal]) -> String {
    let header: Vec<String> = [
        "flavor",
        "goal",
        "ours",
        "peer compared",
        "peer",
        "ours ÷ peer",
        "goal",
        "verdict",
        "beside it",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cells: Vec<Vec<String>> = goals
        .iter()
        .map(|g| {
            vec![
                g.flavor.clone(),
                g.goal.clone(),
                fmt_num(g.ours, 1),
                g.against.clone().unwrap_or_else(|| "—".to_string()),
                fmt_num(g.reference, 1),
                fmt_ratio(g.ratio),
                format!("≤ {:.1}×", g.limit),
                match g.met {
                    Some(true) => "met".to_string(),
                    Some(false) => "MISSED".to_string(),
                    None => "no data".to_string(),
                },
                g.note.clone(),
            ]
        })
        .collect();
    let right = [false, false, true, false, true, true, true, false, false];
    let mut out = render(&header, &cells, &right);
    let mut flavors: Vec<&str> = Vec::new();
    for g in goals {
        if !flavors.contains(&g.flavor.as_str()) {
            flavors.push(&g.flavor);
        }
    }
    for flavor in flavors {
        let of: Vec<&Goal> = goals.iter().filter(|g| g.flavor == flavor).collect();
        let met = of.iter().filter(|g| g.met == Some(true)).count();
        out.push_str(&format!("\n{flavor}: {met} of {} goals met", of.len()));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(told: f64, answer: f64, gone: f64, rss_mib: u64) -> RestartRecord {
        RestartRecord {
            told_ms: Some(told),
            new_answer_ms: Some(answer),
            old_gone_ms: Some(gone),
            rss_kib: Some(rss_mib * 1024),
            ..Default::default()
        }
    }

    fn system(key: &str, flavor: &str, restarts: Vec<RestartRecord>) -> CliSystemResult {
        CliSystemResult {
            key: key.into(),
            flavor: flavor.into(),
            name: key.into(),
            restarts,
            ..Default::default()
        }
    }

    #[test]
    fn profile_lines_parse_and_hops_are_found_by_pid_and_window() {
        let text = "\
1000 10 trigger_read
1500 10 spawn_asked
1600 99 exec_done
2100 20 exec_done
garbage
2200 20 ready_written 1
2300 20 ready_written
2400 10 ready_read
9000 10 trigger_read
";
        let lines = parse_profile(text);
        assert_eq!(lines.len(), 7);
        assert_eq!(
            lines[0],
            ProfileLine {
                unix_us: 1000,
                pid: 10,
                hop: "trigger_read".into()
            }
        );
        let hops = hops_of(
            &lines,
            &RestartWindow {
                from_unix_us: 500,
                to_unix_us: 5000,
                old_pid: 10,
                new_pid: 20,
                exited_ms: Some(2.5),
                old_reaped_ms: Some(3.5),
            },
        );
        let names: Vec<(&str, &str, f64)> = hops
            .marks
            .iter()
            .map(|m| (m.hop.as_str(), m.side.as_str(), m.ms))
            .collect();
        assert_eq!(
            names,
            vec![
                (CLI_SPAWNED, "driver", 0.0),
                ("trigger_read", "old", 0.5),
                ("spawn_asked", "old", 1.0),
                // Pid 99 (a spawner) is left out; 20's is taken.
                ("exec_done", "new", 1.6),
                ("ready_written", "new", 1.8),
                ("ready_read", "old", 1.9),
                (CLI_EXITED, "driver", 2.5),
                (OLD_REAPED, "driver", 3.5),
            ]
        );
    }

    #[test]
    fn hop_stats_are_medians_since_trigger_read_and_since_the_previous_hop() {
        let restart = |marks: &[(&str, f64)]| HopRestart {
            marks: marks
                .iter()
                .map(|(h, ms)| HopMark {
                    hop: h.to_string(),
                    side: String::new(),
                    ms: *ms,
                })
                .collect(),
        };
        let restarts = vec![
            restart(&[
                (CLI_SPAWNED, 0.0),
                ("trigger_read", 1.0),
                ("spawn_asked", 1.5),
                ("exec_done", 3.0),
            ]),
            restart(&[
                (CLI_SPAWNED, 0.0),
                ("trigger_read", 2.0),
                ("exec_done", 5.0),
            ]),
            restart(&[
                (CLI_SPAWNED, 0.0),
                ("trigger_read", 1.0),
                ("spawn_asked", 2.0),
                ("exec_done", 4.0),
            ]),
        ];
        let rows = hop_rows(&restarts);
        assert_eq!(rows.len(), HOPS.len());
        let stats = hop_stats(&rows, &restarts);
        let of = |hop: &str| stats[rows.iter().position(|(h, _)| *h == hop).unwrap()];
        assert_eq!(of(CLI_SPAWNED).since_trigger_ms, Some(-1.0));
        assert_eq!(of("trigger_read").since_previous_ms, Some(1.0));
        assert_eq!(of("spawn_asked").since_trigger_ms, Some(0.75));
        assert_eq!(of("spawn_asked").n, 2);
        // From spawn_asked where there is one, else from trigger_read.
        assert_eq!(of("exec_done").since_previous_ms, Some(2.0));
        assert_eq!(of("exec_done").since_trigger_ms, Some(3.0));
        assert_eq!(of("paused").n, 0);
        let cli = CliResult {
            systems: vec![CliSystemResult {
                key: OURS.into(),
                flavor: "current_thread".into(),
                hops: restarts,
                ..Default::default()
            }],
            ..Default::default()
        };
        let table = hop_table(&cli, OURS).unwrap();
        assert_eq!(table.lines().count(), 2 + HOPS.len());
        assert!(table.contains("current_thread: since trigger_read (ms, n=3)"));
        let widths: Vec<usize> = table.lines().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|w| *w == widths[0]), "{table}");
        assert!(hop_table(&cli, "ecdysis").is_none());
    }

    #[test]
    fn a_hop_the_table_does_not_know_gets_a_row_before_the_commands_exit() {
        let mark = |hop: &str, side: &str, ms: f64| HopMark {
            hop: hop.into(),
            side: side.into(),
            ms,
        };
        let restart = HopRestart {
            marks: vec![
                mark("trigger_read", "old", 1.0),
                mark("drain_begun", "old", 3.0),
                mark(CLI_EXITED, "driver", 4.0),
            ],
        };
        let rows = hop_rows([&restart]);
        assert_eq!(rows.len(), HOPS.len() + 1);
        let exit = rows.iter().position(|(h, _)| h == CLI_EXITED).unwrap();
        assert_eq!(rows[exit - 1], ("drain_begun".into(), "old".into()));
        assert_eq!(rows[rows.len() - 1].0, OLD_REAPED);
        let stats = hop_stats(&rows, &[restart]);
        assert_eq!(stats[exit - 1].since_trigger_ms, Some(2.0));
        assert_eq!(stats[exit].since_previous_ms, Some(1.0));
    }

    #[test]
    fn rows_compare_with_ours_of_the_same_flavor() {
        let cli = CliResult {
            systems: vec![
                system(OURS, "current_thread", vec![record(4.0, 5.0, 6.0, 3)]),
                system(
                    "ecdysis",
                    "current_thread",
                    vec![record(8.0, 5.0, 500.0, 2)],
                ),
                system(OURS, "multi_thread", vec![record(1.0, 1.0, 1.0, 6)]),
                system("ecdysis", "multi_thread", vec![record(2.0, 2.0, 2.0, 3)]),
            ],
            ..Default::default()
        };
        let mut rows = Vec::new();
        cli_rows(&mut rows, &cli);
        assert_eq!(rows.len(), METRICS.len() * 4);
        let told: Vec<&Row> = rows
            .iter()
            .filter(|r| r.metric.contains("initiator told"))
            .collect();
        assert_eq!(told[0].system, "ours, current_thread");
        assert_eq!(told[0].ratio, None);
        assert_eq!(told[1].ratio, Some(0.5));
        assert_eq!(told[3].system, "ecdysis, multi_thread");
        assert_eq!(told[3].ratio, Some(0.5));
    }

    #[test]
    fn goals_take_the_fastest_peer_of_the_same_flavor() {
        let mut ours = system(OURS, "current_thread", vec![record(4.0, 9.0, 6.0, 4)]);
        ours.restarts[0].spawner_pss_kib = Some(1024);
        let cli = CliResult {
            systems: vec![
                ours,
                // Not in the goals.
                system(
                    OURS_PROBATION,
                    "current_thread",
                    vec![record(0.1, 0.1, 0.1, 1)],
                ),
                system(
                    "cf-shellflip",
                    "current_thread",
                    vec![record(5.0, 10.0, 20.0, 5)],
                ),
                system(
                    "ecdysis",
                    "current_thread",
                    vec![record(500.0, 9.0, 500.0, 4)],
                ),
            ],
            ..Default::default()
        };
        let goals = goals(&cli);
        assert_eq!(goals.len(), 4);
        assert_eq!(goals[0].against.as_deref(), Some("cf-shellflip"));
        assert_eq!(goals[0].ratio, Some(0.8));
        assert_eq!(goals[0].met, Some(true));
        assert_eq!(goals[1].against.as_deref(), Some("ecdysis"));
        assert_eq!(goals[1].ratio, Some(1.0));
        assert_eq!(goals[1].met, Some(false));
        assert_eq!(goals[2].ratio, Some(0.3));
        // Memory: against the smallest peer (4 MiB), the spawner beside it.
        assert_eq!(goals[3].ratio, Some(1.0));
        assert_eq!(goals[3].met, Some(true));
        assert!(
            goals[3].note.contains("spawner PSS 1.0 MiB"),
            "{}",
            goals[3].note
        );
        assert!(goals[3].note.contains("1.25×"), "{}", goals[3].note);
        let table = goals_table(&goals);
        assert!(table.contains("MISSED"));
        assert!(
            table.contains("current_thread: 3 of 4 goals met"),
            "{table}"
        );
        // No peer: no verdict.
        let alone = CliResult {
            systems: vec![system(OURS, "multi_thread", vec![record(1.0, 1.0, 1.0, 1)])],
            ..Default::default()
        };
        assert!(goals_table(&super::goals(&alone)).contains("no data"));
    }
}
