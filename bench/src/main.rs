//! `shellflip-bench`: restarts three equivalent echo services under the
//! same load, one after the other, and reports restart latency, failed
//! connections, throughput, memory and descriptors side by side, plus, for
//! ours: the state handover against `rmp_serde` (`src/state_section.rs`),
//! the serving overhead, an HTTP section (the same axum service on
//! `shellflip::http::serve` and on plain `axum::serve` restarted under HTTP
//! load, `src/http_section.rs`), live sessions handed over and the memory
//! of a generation draining held connections (`src/sessions_section.rs`),
//! and the longest accept gap around a restart with the probation on and
//! off (`src/accept_gap.rs`); and the restart-command section (issue 23,
//! `src/cli_section.rs`): the pid protocol on both Tokio flavors, each
//! restart triggered by starting a process (ours: `shellflip restart`),
//! with ours' hop-by-hop profile and the issue's goals.
//!
//! From the repository's root (the bench is its own workspace):
//!
//! ```text
//! cargo run --release --manifest-path bench/Cargo.toml -- --plot docs/bench.svg  # K=20, 32 clients
//! cargo run --release --manifest-path bench/Cargo.toml -- --quick                # K=3, ~1 min
//! cargo run --release --manifest-path bench/Cargo.toml -- --json > run.json      # machines
//! cargo run --release --manifest-path bench/Cargo.toml -- --goals                # issue 23 only
//! ```
//!
//! Before it runs, it has cargo build (in release) what it starts: the root
//! workspace's echo, HTTP and sessions examples and the services in
//! `src/bin/`; fresh builds are left as they are. `--echo` and `--bin-dir`
//! use given binaries instead.
//!
//! Loopback only. The driver is a child subreaper and reaps every
//! generation; it signals only processes it started, by pid.

mod accept_gap;
mod build;
mod cli_section;
mod harness;
mod http_section;
mod load;
mod plot;
mod sessions_section;
mod state_section;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use shellflip::client::ControlClient;
use shellflip::control::Response;
use shellflip_bench::cli::{goals, goals_table, hop_table, OURS};
use shellflip_bench::report::{
    fmt_num, markdown_table, rows, state_note, Machine, Overhead, Report, RestartRecord, RunConfig,
    SystemResult,
};
use shellflip_bench::service::Flavor;
use shellflip_bench::stats::{median, per_second};
use shellflip_testkit::process::{fd_count, rss_kib};

use harness::{spawner_pss_kib, tail, Clock, Reaper, Service};
use load::{Load, Seen};

#[derive(Parser, Debug)]
#[command(
    about = "Side-by-side restart benchmark: shellflip vs crates.io shellflip 2.1 vs ecdysis 1.1"
)]
struct Opts {
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Restarts under load, per system.
    #[arg(long, default_value_t = 20)]
    restarts: usize,
    /// Restarts with nothing in flight, per system (default: min(restarts, 10)).
    #[arg(long)]
    idle_restarts: Option<usize>,
    /// A short run: 3 restarts, short phases, < 60 s in all.
    #[arg(long)]
    quick: bool,
    /// Print the report as JSON on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// Write the SVG plot here.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Systems to run, comma-separated: ours,ours-inline,cf-shellflip,ecdysis
    /// (ours-inline: the echo example with SHELLFLIP_SPAWNER=inline, which
    /// spawns from the service process instead of its spawner).
    #[arg(long, value_delimiter = ',', default_values_t = ["ours".to_string(), "ours-inline".to_string(), "cf-shellflip".to_string(), "ecdysis".to_string()])]
    systems: Vec<String>,
    /// Skip the state handover benchmark.
    #[arg(long)]
    no_state: bool,
    /// Skip the serving overhead benchmark.
    #[arg(long)]
    no_overhead: bool,
    /// State sizes in MiB for the handover benchmark (default: 100,1024;
    /// 1,4 with --quick). A size is skipped, with a note, when the
    /// machine's available memory is below about 8 times it.
    #[arg(long, value_delimiter = ',')]
    state_mb: Option<Vec<usize>>,
    /// Skip the sessions section: N idle sessions handed over
    /// (examples/sessions.rs) and the memory of a generation draining N
    /// held connections (the echo example).
    #[arg(long)]
    no_sessions: bool,
    /// Sessions section: idle connections held (default 10000; 200 with
    /// --quick). Lowered to fit the open-file limit if needed.
    #[arg(long)]
    sessions: Option<usize>,
    /// Skip the accept-gap section (the echo example's longest accept gap
    /// around a restart, probation on and off).
    #[arg(long)]
    no_accept_gap: bool,
    /// Use the bench's services and restart commands (peer_cf_shellflip,
    /// peer_ecdysis, bare_echo, state_service, http_plain_axum, ours_pid,
    /// trigger_cf_shellflip, trigger_ecdysis) in this directory as they are
    /// (default: have cargo build them in release).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Use this echo example binary as it is (default: have cargo build
    /// the root workspace's in release).
    #[arg(long)]
    echo: Option<PathBuf>,
    /// Skip the HTTP section (shellflip::http vs plain axum::serve).
    #[arg(long)]
    no_http: bool,
    /// HTTP section: clients of each kind (fresh connections, keep-alive,
    /// keep-alive pausing between requests).
    #[arg(long, default_value_t = 8)]
    http_clients: usize,
    /// HTTP section: restarts per system.
    #[arg(long, default_value_t = 10)]
    http_restarts: usize,
    /// Keep each service's stderr in this directory (ours then runs with
    /// RUST_LOG=shellflip_runtime=debug, which logs its phase timings; the
    /// restart-command section's hop profiles are kept there too).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Skip the restart-command section (issue 23: the pid protocol on
    /// both Tokio flavors, each restart triggered by starting a process).
    #[arg(long)]
    no_cli: bool,
    /// Run the restart-command section only, and print its table, ours'
    /// hop table and the issue's goals (met or missed, per flavor).
    #[arg(long)]
    goals: bool,
    /// Restart-command section: restarts per system and flavor (3 with
    /// --quick).
    #[arg(long, default_value_t = 10)]
    cli_restarts: usize,
    /// Restart-command section: systems, comma-separated:
    /// ours,ours-probation,cf-shellflip,ecdysis (ours-probation: ours with
    /// the default probation, beside the goals).
    #[arg(long, value_delimiter = ',', default_values_t = ["ours".to_string(), "ours-probation".to_string(), "cf-shellflip".to_string(), "ecdysis".to_string()])]
    cli_systems: Vec<String>,
    /// Restart-command section: Tokio flavors, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = cli_section::parse_flavor, default_values = ["current_thread", "multi_thread"])]
    flavors: Vec<Flavor>,
    /// Restart-command section: run ours without the hop profile
    /// (SHELLFLIP_PROFILE), and print no hop table.
    #[arg(long)]
    no_hops: bool,
}

/// Phase lengths of a run.
struct Timing {
    warmup: Duration,
    steady: Duration,
    gap: Duration,
    overhead_rounds: usize,
    overhead_window: Duration,
    state_restarts: usize,
    codec_reps: usize,
    /// The shortest steady window before a state restart (the prober's
    /// baseline).
    state_lead: Duration,
    /// Restarts of each service in the sessions section.
    session_restarts: usize,
    /// Restarts with N held connections (memory of draining).
    drain_restarts: usize,
    /// Restarts per setting in the accept-gap section.
    gap_restarts: usize,
}

impl Timing {
    fn of(quick: bool) -> Timing {
        if quick {
            Timing {
                warmup: Duration::from_millis(200),
                steady: Duration::from_millis(1000),
                gap: Duration::from_millis(100),
                overhead_rounds: 2,
                overhead_window: Duration::from_millis(1000),
                state_restarts: 2,
                codec_reps: 2,
                state_lead: Duration::from_millis(200),
                session_restarts: 2,
                drain_restarts: 1,
                gap_restarts: 1,
            }
        } else {
            Timing {
                warmup: Duration::from_millis(500),
                steady: Duration::from_secs(3),
                gap: Duration::from_millis(200),
                overhead_rounds: 5,
                overhead_window: Duration::from_secs(2),
                state_restarts: 5,
                codec_reps: 3,
                state_lead: Duration::from_millis(500),
                session_restarts: 5,
                drain_restarts: 3,
                gap_restarts: 5,
            }
        }
    }
}

/// How the driver asks a system to restart.
#[derive(Clone, Copy, PartialEq)]
enum Trigger {
    /// Our control socket: `ControlClient::restart`.
    Ours,
    /// shellflip 2.1's restart coordination socket: `RestartConfig::request_restart`.
    CfShellflip,
    /// ecdysis' `upgrade_on_socket`: connect, wait for the close.
    Ecdysis,
}

impl Trigger {
    fn describe(self) -> &'static str {
        match self {
            Trigger::Ours => "`restart` request on the control socket (`ControlClient::restart`, answered with the new pid once it is READY)",
            Trigger::CfShellflip => "restart coordination socket (`RestartConfig::request_restart`, answered with the new pid once it reported startup complete)",
            Trigger::Ecdysis => "connection to the `upgrade_on_socket` path (closed by ecdysis when the upgrade is over; no outcome is sent)",
        }
    }

    /// Fires a restart and waits for the initiator's answer.
    fn fire(self, control: &Path, rt: &tokio::runtime::Runtime) -> Result<String, String> {
        match self {
            Trigger::Ours => match ControlClient::restart(control) {
                Ok(Response::Restarted(s)) => Ok(format!(
                    "restarted pid={} generation={} in {:.1} ms",
                    s.pid, s.generation, s.duration_ms
                )),
                Ok(other) => Err(format!("{other:?}")),
                Err(e) => Err(e.to_string()),
            },
            Trigger::CfShellflip => {
                let config = cf_shellflip::RestartConfig {
                    enabled: true,
                    coordination_socket_path: control.to_path_buf(),
                    ..Default::default()
                };
                rt.block_on(config.request_restart())
                    .map(|pid| format!("restarted pid={pid}"))
                    .map_err(|e| e.to_string())
            }
            Trigger::Ecdysis => {
                let mut s = UnixStream::connect(control).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(Duration::from_secs(60)))
                    .map_err(|e| e.to_string())?;
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).map_err(|e| e.to_string())?;
                Ok("upgrade socket closed".to_string())
            }
        }
    }
}

struct System {
    key: &'static str,
    name: &'static str,
    exe: PathBuf,
    trigger: Trigger,
}

/// A progress note on stderr, overwritten in place on a terminal and not
/// written at all otherwise.
fn progress(note: &str) {
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K  {note}");
    }
}

fn ms(from: u64, to: u64) -> f64 {
    (to as f64 - from as f64) / 1000.0
}

struct Bench {
    opts: Opts,
    timing: Timing,
    clock: Clock,
    reaper: &'static Reaper,
    rt: tokio::runtime::Runtime,
}

/// What a system's run leaves for the plot.
struct Trace {
    seen: Seen,
    triggers: Vec<u64>,
}

impl Bench {
    fn log_for(&self, key: &str) -> Option<PathBuf> {
        self.opts
            .log_dir
            .as_ref()
            .map(|d| d.join(format!("{key}.log")))
    }

    /// The environment of one of our services: the debug log when logs
    /// are kept, and `SHELLFLIP_PROBATION` if given (else the default).
    fn ours_env<'a>(&self, probation: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
        let mut env = vec![];
        if self.opts.log_dir.is_some() {
            env.push(("RUST_LOG", "shellflip_runtime=debug,info"));
        }
        if let Some(probation) = probation {
            env.push(("SHELLFLIP_PROBATION", probation));
        }
        env
    }

    /// The environment of a system of the side-by-side comparison. Ours
    /// runs with the probation off: the peers have none, and it would only
    /// add its length to "old generation gone" (the accept-gap section
    /// measures it).
    fn env_for(&self, key: &str) -> Vec<(&'static str, &'static str)> {
        if !key.starts_with("ours") {
            return vec![];
        }
        let mut env = self.ours_env(Some("0"));
        if key == "ours-inline" {
            env.push(("SHELLFLIP_SPAWNER", "inline"));
        }
        env
    }

    /// One restart: trigger, the initiator's answer, the new ready line,
    /// the old generation reaped, then RSS and fds of the new one.
    fn restart_once(
        &self,
        service: &mut Service,
        trigger: Trigger,
        index: usize,
    ) -> Result<(u64, RestartRecord), String> {
        let (t0, mut rec) = self.restart_until_ready(service, trigger, index)?;
        let gone = self.reaper.wait_gone(rec.old_pid, Duration::from_secs(40));
        rec.old_gone_ms = gone.map(|g| ms(t0, g));
        if let Some(pid) = rec.new_pid {
            rec.rss_kib = rss_kib(pid);
            rec.spawner_pss_kib = spawner_pss_kib(pid);
            rec.fds = fd_count(pid);
        }
        Ok((t0, rec))
    }

    /// The first half of [`restart_once`](Self::restart_once): trigger,
    /// the initiator's answer and the new ready line; the old generation
    /// may still be running.
    fn restart_until_ready(
        &self,
        service: &mut Service,
        trigger: Trigger,
        index: usize,
    ) -> Result<(u64, RestartRecord), String> {
        let old = service.current;
        let t0 = self.clock.now();
        let answer = trigger.fire(&service.control, &self.rt);
        let told = self.clock.now();
        let outcome = answer.map_err(|e| format!("restart {index} failed: {e}"))?;
        let (ready_at, ready, sched) = service
            .next_ready(Duration::from_secs(30))
            .ok_or_else(|| format!("restart {index}: no new generation within 30s"))?;
        if ready.pid == old.pid {
            return Err(format!("restart {index}: the same pid answered"));
        }
        Ok((
            t0,
            RestartRecord {
                index,
                old_pid: old.pid,
                new_pid: Some(ready.pid),
                generation: Some(ready.generation),
                told_ms: Some(ms(t0, told)),
                outcome,
                ready_ms: Some(ms(t0, ready_at)),
                startup_cpu_ms: sched.map(|s| s.cpu_ms),
                startup_wait_ms: sched.map(|s| s.wait_ms),
                ..Default::default()
            },
        ))
    }

    fn run_system(&self, system: &System) -> (SystemResult, Option<Trace>) {
        let mut result = SystemResult {
            key: system.key.to_string(),
            name: system.name.to_string(),
            trigger: system.trigger.describe().to_string(),
            ..Default::default()
        };
        let env = self.env_for(system.key);
        result.env = env
            .iter()
            .filter(|(k, _)| *k != "RUST_LOG")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut service = match Service::start(
            &system.exe,
            &[],
            &env,
            self.log_for(system.key).as_deref(),
            self.clock,
            self.reaper,
        ) {
            Ok(s) => s,
            Err(e) => {
                result.error = Some(e);
                return (result, None);
            }
        };
        result.initial_fds = fd_count(service.current.pid);
        let t = &self.timing;
        let k = self.opts.restarts;
        // Bound on the whole load phase: generous for K slow restarts.
        let max_time = t.warmup + t.steady + (t.gap + Duration::from_secs(5)) * k as u32;
        let load = Load::start(service.addr, self.opts.clients, true, self.clock, max_time);
        std::thread::sleep(t.warmup);
        let steady_from = self.clock.now();
        std::thread::sleep(t.steady);
        let steady_to = self.clock.now();
        let mut triggers = Vec::new();
        for i in 1..=k {
            progress(&format!("{}: restart {i}/{k} under load", system.name));
            match self.restart_once(&mut service, system.trigger, i) {
                Ok((t0, rec)) => {
                    triggers.push(t0);
                    result.restarts.push(rec);
                }
                Err(e) => {
                    result.error = Some(format!("{e}; stderr:\n{}", tail(&service.log)));
                    break;
                }
            }
            std::thread::sleep(t.gap);
        }
        let end = self.clock.now();
        let seen = load.stop();
        progress("done\n");
        // Derived per-restart numbers.
        for (i, rec) in result.restarts.iter_mut().enumerate() {
            let t0 = triggers[i];
            let next = triggers.get(i + 1).copied().unwrap_or(end);
            if let Some(pid) = rec.new_pid {
                rec.new_answer_ms = seen.first_answer_from(pid, t0).map(|a| ms(t0, a));
            }
            rec.failures = seen
                .failures
                .iter()
                .filter(|f| f.at >= t0 && f.at < next)
                .count() as u64;
            let window_end = rec
                .old_gone_ms
                .map_or(t0 + 100_000, |g| t0 + (g * 1000.0) as u64)
                .max(t0 + 100_000);
            result.restart_rates.push(per_second(
                seen.completed_between(t0, window_end),
                window_end - t0,
            ));
        }
        let window = 500_000;
        let mut from = steady_from;
        while from + window <= steady_to {
            result.steady_rates.push(per_second(
                seen.completed_between(from, from + window),
                window,
            ));
            from += window;
        }
        for f in &seen.failures {
            *result.failures.entry(f.kind.to_string()).or_insert(0) += 1;
        }
        result.exchanges = seen.answers.iter().filter(|a| !a.probe).count() as u64;
        // Restarts with nothing in flight.
        if result.error.is_none() {
            let idle = self.opts.idle_restarts.unwrap_or(k.min(10));
            std::thread::sleep(Duration::from_millis(100));
            for i in 1..=idle {
                progress(&format!("{}: idle restart {i}/{idle}", system.name));
                match self.restart_once(&mut service, system.trigger, i) {
                    Ok((_, rec)) => result.idle_restarts.push(rec),
                    Err(e) => {
                        result.error = Some(format!("idle {e}; stderr:\n{}", tail(&service.log)));
                        break;
                    }
                }
                std::thread::sleep(t.gap);
            }
            progress("done\n");
        }
        service.stop(self.reaper);
        (result, Some(Trace { seen, triggers }))
    }

    fn run_overhead(&self, echo: &Path, bare: &Path) -> Option<Overhead> {
        let start = |exe: &Path, key: &str| {
            Service::start(
                exe,
                &[],
                &[],
                self.log_for(key).as_deref(),
                self.clock,
                self.reaper,
            )
            .map_err(|e| eprintln!("overhead: {e}"))
            .ok()
        };
        let ours = start(echo, "overhead-ours")?;
        let Some(bare) = start(bare, "overhead-bare") else {
            ours.stop(self.reaper);
            return None;
        };
        let mut overhead = Overhead::default();
        let t = &self.timing;
        // Alternate, so that drift of the machine hits both alike.
        for round in 0..t.overhead_rounds {
            for (service, rates) in [
                (&ours, &mut overhead.ours_rates),
                (&bare, &mut overhead.bare_rates),
            ] {
                progress(&format!(
                    "overhead: round {}/{}",
                    round + 1,
                    t.overhead_rounds
                ));
                let load = Load::start(
                    service.addr,
                    self.opts.clients,
                    false,
                    self.clock,
                    t.warmup + t.overhead_window + Duration::from_secs(5),
                );
                std::thread::sleep(t.warmup);
                let from = self.clock.now();
                std::thread::sleep(t.overhead_window);
                let to = self.clock.now();
                let seen = load.stop();
                rates.push(per_second(seen.completed_between(from, to), to - from));
            }
        }
        progress("done\n");
        ours.stop(self.reaper);
        bare.stop(self.reaper);
        Some(overhead)
    }
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!("Linux {}", s.trim()))
        .unwrap_or_else(|_| "unknown".to_string());
    Machine {
        nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu,
        kernel,
        load_avg: std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
    }
}

/// The panel of one system: its median restart (by trigger → first answer
/// from the new generation), from 10 ms before the trigger to `to_ms`.
fn panel(result: &SystemResult, trace: &Trace, to_ms: i64) -> Option<plot::Panel> {
    let answered: Vec<f64> = result
        .restarts
        .iter()
        .filter_map(|r| r.new_answer_ms)
        .collect();
    let target = median(&answered)?;
    let (i, rec) = result.restarts.iter().enumerate().min_by(|a, b| {
        let d = |r: &RestartRecord| (r.new_answer_ms.unwrap_or(f64::MAX) - target).abs();
        d(a.1).total_cmp(&d(b.1))
    })?;
    let t0 = trace.triggers[i] as i64;
    let from_ms = -10;
    let mut by_generation: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
    for a in &trace.seen.answers {
        let rel = a.greeted as i64 - t0;
        if rel >= from_ms * 1000 && rel < to_ms * 1000 {
            by_generation.entry(a.generation).or_default().push(rel);
        }
    }
    let mut markers = vec![("trigger".to_string(), 0.0)];
    markers.extend(
        rec.ready_ms
            .map(|v| ("new generation READY".to_string(), v)),
    );
    markers.extend(rec.told_ms.map(|v| ("initiator told".to_string(), v)));
    markers.extend(
        rec.old_gone_ms
            .map(|v| ("old generation gone".to_string(), v)),
    );
    Some(plot::Panel {
        title: result.name.clone(),
        restart: i + 1,
        restarts: result.restarts.len(),
        from_ms,
        to_ms,
        answers: by_generation.into_iter().collect(),
        markers,
    })
}

/// One x range for all panels: 40 ms past the latest median READY or
/// first answer of any system, between 50 and 200 ms.
fn plot_window(results: &[SystemResult]) -> i64 {
    let latest = results
        .iter()
        .filter_map(|r| {
            let at: Vec<f64> = r
                .restarts
                .iter()
                .filter_map(|x| match (x.ready_ms, x.new_answer_ms) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                })
                .collect();
            median(&at)
        })
        .fold(0.0, f64::max);
    (latest as i64 + 40).clamp(50, 200)
}

/// The notes under the table for the state, sessions and accept-gap
/// sections: what ran how, what was skipped, what stopped early.
fn section_notes(report: &Report) -> String {
    let mut text = String::new();
    let stopped = |e: &Option<String>| {
        e.as_ref()
            .map(|e| format!("; stopped early: {}", e.lines().next().unwrap_or("")))
            .unwrap_or_default()
    };
    if let Some(state) = &report.state {
        for size in &state.sizes {
            text.push_str(&state_note(size, &state.probation));
        }
    }
    if let Some(s) = &report.sessions {
        text.push_str(&format!(
            "- sessions: {} idle sessions; restarts: {} with them, {} without, alternated (SHELLFLIP_PROBATION={}){}\n",
            s.sessions,
            s.handed.len(),
            s.plain.len(),
            s.probation,
            stopped(&s.error)
        ));
    }
    if let Some(m) = &report.drain_memory {
        text.push_str(&format!(
            "- draining memory: the echo example holding {} connections, restarts: {} (SHELLFLIP_PROBATION={}), sampled 200 ms after READY{}\n",
            m.connections,
            m.samples.len(),
            m.probation,
            stopped(&m.error)
        ));
    }
    if let Some(g) = &report.accept_gap {
        text.push_str(&format!(
            "- accept gap: the echo example, a prober alone (every ms), restarts: {} with the probation, {} without{}\n",
            g.on_ms.len(),
            g.off_ms.len(),
            stopped(&g.error)
        ));
    }
    if let Some(cli) = &report.cli {
        text.push_str(&format!(
            "- restart command: pid protocol, {} clients + a prober (every ms), {} restarts per system and flavor, the next {} ms after each restart's end; ratios against ours (probation off) of the same flavor\n",
            cli.clients, cli.restarts, cli.gap_ms
        ));
        for s in &cli.systems {
            let failures: Vec<String> = s
                .failures
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            text.push_str(&format!(
                "- restart command, {}{}: {} exchanges, {} restarts by {}; failed connections: {}{}\n",
                s.label(),
                if s.env.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", s.env.join(" "))
                },
                s.exchanges,
                s.restarts.len(),
                s.trigger,
                if failures.is_empty() {
                    "none".to_string()
                } else {
                    failures.join(", ")
                },
                stopped(&s.error)
            ));
        }
    }
    text
}

/// After the notes: ours' hop table and the goals, when the
/// restart-command section ran.
fn cli_tail(report: &Report) -> String {
    let Some(cli) = &report.cli else {
        return String::new();
    };
    let mut text = String::new();
    if let Some(table) = hop_table(cli, OURS) {
        let n = cli
            .systems
            .iter()
            .find(|s| s.key == OURS)
            .map_or(0, |s| s.hops.len());
        text.push_str(&format!(
            "\nHops of ours' restarts (SHELLFLIP_PROFILE; probation off; medians over {n} restarts per flavor; ms since the old generation read the restart request, and since the hop above; `—`: not seen):\n\n"
        ));
        text.push_str(&table);
    }
    if !report.goals.is_empty() {
        text.push_str(
            "\nGoals (issue 23): ours (probation off, restarted by `shellflip restart`) against the fastest peer of the same flavor (memory: the smallest), medians of this run:\n\n",
        );
        text.push_str(&goals_table(&report.goals));
    }
    text
}

fn main() -> std::process::ExitCode {
    let mut opts = Opts::parse();
    if let Err(e) = cli_section::check_systems(&opts.cli_systems) {
        eprintln!("error: {e}");
        return std::process::ExitCode::from(2);
    }
    if opts.goals {
        // The restart-command section alone.
        opts.no_cli = false;
        opts.systems.clear();
        opts.no_state = true;
        opts.no_overhead = true;
        opts.no_http = true;
        opts.no_sessions = true;
        opts.no_accept_gap = true;
    }
    if opts.quick {
        opts.cli_restarts = opts.cli_restarts.min(3);
        opts.restarts = opts.restarts.min(3);
        opts.http_restarts = opts.http_restarts.min(3);
        opts.http_clients = opts.http_clients.min(4);
        opts.idle_restarts = Some(opts.idle_restarts.unwrap_or(2).min(3));
    }
    if opts.state_mb.is_none() {
        opts.state_mb = Some(if opts.quick {
            vec![1, 4]
        } else {
            vec![100, 1024]
        });
    }
    // Thousands of held connections need as many descriptors, here and in
    // the services (which inherit the limit; the sessions example raises
    // its own too).
    let open_files = harness::raise_open_file_limit();
    if !opts.no_sessions {
        let wanted = opts
            .sessions
            .unwrap_or(if opts.quick { 200 } else { 10_000 });
        let room = open_files.saturating_sub(256) as usize;
        if wanted > room {
            eprintln!(
                "note: {wanted} sessions need more descriptors than the open-file limit ({open_files}) leaves; {room} are used"
            );
        }
        opts.sessions = Some(wanted.min(room));
    }
    // Built before the reaper thread exists, which would reap cargo too.
    let binaries = match build::binaries(opts.echo.clone(), opts.bin_dir.clone()) {
        Ok(binaries) => binaries,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let echo = binaries.echo.clone();
    if let Some(dir) = &opts.log_dir {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("error: {}: {e}", dir.display());
            return std::process::ExitCode::from(2);
        }
    }
    let clock = Clock::new();
    let bench = Bench {
        timing: Timing::of(opts.quick),
        clock,
        reaper: Reaper::get(clock),
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime"),
        opts,
    };
    let all = [
        System {
            key: "ours",
            name: "shellflip (ours)",
            exe: echo.clone(),
            trigger: Trigger::Ours,
        },
        System {
            key: "ours-inline",
            name: "shellflip (ours), inline spawn",
            exe: echo.clone(),
            trigger: Trigger::Ours,
        },
        System {
            key: "cf-shellflip",
            name: "shellflip 2.1.3 (crates.io)",
            exe: binaries.peer_cf_shellflip.clone(),
            trigger: Trigger::CfShellflip,
        },
        System {
            key: "ecdysis",
            name: "ecdysis 1.1.1",
            exe: binaries.peer_ecdysis.clone(),
            trigger: Trigger::Ecdysis,
        },
    ];
    let started = Instant::now();
    let mut report = Report {
        machine: machine(),
        config: RunConfig {
            clients: bench.opts.clients,
            restarts: bench.opts.restarts,
            idle_restarts: bench
                .opts
                .idle_restarts
                .unwrap_or(bench.opts.restarts.min(10)),
            quick: bench.opts.quick,
            steady_secs: bench.timing.steady.as_secs_f64(),
        },
        ..Default::default()
    };
    let mut traces = Vec::new();
    for system in all
        .iter()
        .filter(|s| bench.opts.systems.iter().any(|k| k == s.key))
    {
        eprintln!("{} ({})", system.name, system.exe.display());
        let (result, trace) = bench.run_system(system);
        if let Some(e) = &result.error {
            eprintln!("  {}: {e}", system.name);
        }
        traces.push(trace);
        report.systems.push(result);
    }
    if !bench.opts.no_cli {
        let flavors: Vec<&str> = bench.opts.flavors.iter().map(|f| f.name()).collect();
        eprintln!(
            "restart command: the pid protocol, each restart by starting a process; flavors: {}",
            flavors.join(", ")
        );
        let cli = bench.run_cli(&binaries);
        report.goals = goals(&cli);
        report.cli = Some(cli);
    }
    if !bench.opts.no_state {
        eprintln!("state handover (ours)");
        report.state = Some(bench.run_state(&binaries.state_service, &binaries.cli));
    }
    if !bench.opts.no_overhead {
        eprintln!("serving overhead: echo example vs bare tokio listener");
        report.overhead = bench.run_overhead(&echo, &binaries.bare_echo);
    }
    if !bench.opts.no_http {
        eprintln!("HTTP: shellflip::http::serve vs axum::serve + with_graceful_shutdown");
        report.http = Some(bench.run_http(&binaries.http_example, &binaries.http_plain_axum));
    }
    if !bench.opts.no_sessions {
        let n = bench.opts.sessions.unwrap_or(0);
        eprintln!("sessions: {n} idle sessions handed over (examples/sessions.rs)");
        report.sessions = Some(bench.run_sessions(&binaries.sessions));
        eprintln!("memory: the echo example draining {n} held connections");
        report.drain_memory = Some(bench.run_drain_memory(&echo));
    }
    if !bench.opts.no_accept_gap {
        eprintln!("accept gap around a restart: the echo example, probation on and off");
        report.accept_gap = Some(bench.run_accept_gap(&echo));
    }
    if let Some(path) = &bench.opts.plot {
        let to_ms = plot_window(&report.systems);
        let panels: Vec<plot::Panel> = report
            .systems
            .iter()
            .zip(&traces)
            .filter_map(|(r, t)| panel(r, t.as_ref()?, to_ms))
            .collect();
        if let Err(e) = plot::draw(path, &panels) {
            eprintln!("error: plot {}: {e}", path.display());
        }
    }
    let mut text = markdown_table(&rows(&report));
    text.push('\n');
    for s in &report.systems {
        let failures: Vec<String> = s
            .failures
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        text.push_str(&format!(
            "- {}{}: {} exchanges, {} restarts under load + {} idle; failed connections: {}{}\n",
            s.name,
            if s.env.is_empty() {
                String::new()
            } else {
                format!(" ({})", s.env.join(" "))
            },
            s.exchanges,
            s.restarts.len(),
            s.idle_restarts.len(),
            if failures.is_empty() {
                "none".to_string()
            } else {
                failures.join(", ")
            },
            s.error
                .as_ref()
                .map(|e| format!("; stopped early: {}", e.lines().next().unwrap_or("")))
                .unwrap_or_default()
        ));
    }
    if let Some(http) = &report.http {
        let clients: Vec<String> = http
            .clients
            .iter()
            .map(|(kind, n)| format!("{n} {kind}"))
            .collect();
        text.push_str(&format!(
            "- HTTP: clients {} (pausing up to {} ms), drain timeout {}\n",
            clients.join(", "),
            http.pause_ms,
            http.drain_timeout
        ));
        for s in &http.systems {
            let kinds: Vec<String> = s
                .requests
                .iter()
                .map(|(kind, n)| {
                    let failed = s.failures.get(kind).copied().unwrap_or(0);
                    format!("{kind} {failed} failed of {n}")
                })
                .collect();
            text.push_str(&format!(
                "- HTTP {}: {} restarts; requests: {}; idle connections closed by the server: {}; p50 steady {} ms, during restarts {} ms{}{}\n",
                s.name,
                s.restarts.len(),
                kinds.join(", "),
                s.closed_idle,
                fmt_num(s.steady_p50_ms, 2),
                fmt_num(s.restart_p50_ms, 2),
                if s.failure_examples.is_empty() {
                    String::new()
                } else {
                    format!("; e.g. {}", s.failure_examples.join("; "))
                },
                s.error
                    .as_ref()
                    .map(|e| format!("; stopped early: {}", e.lines().next().unwrap_or("")))
                    .unwrap_or_default()
            ));
        }
    }
    text.push_str(&section_notes(&report));
    text.push_str(&format!(
        "- machine: {} × {}, {}; load average at start {}; {} clients; run took {:.0} s\n",
        report.machine.nproc,
        report.machine.cpu,
        report.machine.kernel,
        report.machine.load_avg,
        report.config.clients,
        started.elapsed().as_secs_f64()
    ));
    text.push_str(&cli_tail(&report));
    if bench.opts.json {
        eprint!("{text}");
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serialize the report")
        );
    } else {
        print!("{text}");
    }
    let failed = report.systems.iter().any(|s| s.error.is_some())
        || report
            .http
            .iter()
            .any(|h| h.systems.iter().any(|s| s.error.is_some()))
        || report.sessions.iter().any(|s| s.error.is_some())
        || report.drain_memory.iter().any(|m| m.error.is_some())
        || report.accept_gap.iter().any(|g| g.error.is_some())
        || report
            .cli
            .iter()
            .any(|c| c.systems.iter().any(|s| s.error.is_some()));
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
