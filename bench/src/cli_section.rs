//! The restart-command section (issue 23): every system serves the pid
//! protocol (a line in, `pid=<pid>` out, closed by the server), in each
//! Tokio flavor, under `--clients` clients and a prober (every
//! millisecond), and is restarted K times, each restart by starting a
//! process, timed from its spawn until it exits: for ours `shellflip
//! restart SOCKET` (the root workspace's CLI), for crates.io shellflip
//! `trigger_cf_shellflip` (`RestartConfig::request_restart`), for ecdysis
//! `trigger_ecdysis` (connect to the upgrade socket, wait for its close).
//! Ours runs with the probation off (the peers have none) and, as a
//! separate system, with the default probation. Ours' runs with the
//! probation off write the runtime's hop profile (`SHELLFLIP_PROFILE`),
//! read back into the hop table once the service is stopped.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shellflip_bench::cli::{
    hops_of, parse_profile, CliResult, CliSystemResult, RestartWindow, OURS, OURS_PROBATION,
};
use shellflip_bench::report::RestartRecord;
use shellflip_bench::service::{Flavor, Protocol};
use shellflip_testkit::process::{fd_count, rss_kib};

use crate::build::Binaries;
use crate::harness::{spawner_pss_kib, tail, Service};
use crate::load::Load;
use crate::{ms, progress, Bench};

/// From one restart's end to the next trigger (the 300 ms).
pub const GAP: Duration = Duration::from_millis(300);
/// Bound on a restart command's run; it is killed (by pid) after it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on the wait for the new generation's ready line once the command
/// exited.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the wait for the old generation's exit.
const GONE_TIMEOUT: Duration = Duration::from_secs(40);

/// One system of the section.
struct CliSystem {
    key: &'static str,
    name: &'static str,
    service: PathBuf,
    /// The restart command and its arguments before the socket.
    command: PathBuf,
    command_args: &'static [&'static str],
    describe: &'static str,
}

/// What one restart left for the derived numbers and the profile.
pub(crate) struct Triggered {
    /// The command spawned (driver µs) and the Unix time then (µs).
    pub(crate) at: u64,
    pub(crate) unix_us: u64,
    pub(crate) record: RestartRecord,
}

impl Bench {
    pub(crate) fn run_cli(&self, binaries: &Binaries) -> CliResult {
        let probation = crate::accept_gap::humanize(shellflip::Config::default().probation);
        let mut result = CliResult {
            clients: self.opts.clients,
            restarts: self.opts.cli_restarts,
            gap_ms: GAP.as_millis() as u64,
            probation: probation.clone(),
            systems: Vec::new(),
        };
        let ours = |key, name| {
            CliSystem {
            key,
            name,
            service: binaries.ours_pid.clone(),
            command: binaries.cli.clone(),
            command_args: &["restart"],
            describe: "`shellflip restart SOCKET` (the root workspace's CLI, target/release/shellflip): exits once the old generation answered, after the new one's READY",
        }
        };
        let all = [
            ours(OURS, "shellflip (ours)"),
            ours(OURS_PROBATION, "shellflip (ours), probation on"),
            CliSystem {
                key: "cf-shellflip",
                name: "shellflip 2.1.3 (crates.io)",
                service: binaries.peer_cf_shellflip.clone(),
                command: binaries.trigger_cf_shellflip.clone(),
                command_args: &[],
                describe: "`trigger_cf_shellflip SOCKET` (bench/src/bin: `RestartConfig::request_restart`, answered with the new pid once the new process reported startup complete)",
            },
            CliSystem {
                key: "ecdysis",
                name: "ecdysis 1.1.1",
                service: binaries.peer_ecdysis.clone(),
                command: binaries.trigger_ecdysis.clone(),
                command_args: &[],
                describe: "`trigger_ecdysis SOCKET` (bench/src/bin: connects to the `upgrade_on_socket` path and waits until ecdysis closes it; no outcome is sent)",
            },
        ];
        let profiles = match tempfile::Builder::new()
            .prefix("shellflip-bench-profile")
            .tempdir()
        {
            Ok(dir) => Some(dir),
            Err(e) => {
                eprintln!("note: no hop profile: temp dir: {e}");
                None
            }
        };
        for flavor in &self.opts.flavors {
            for system in all
                .iter()
                .filter(|s| self.opts.cli_systems.iter().any(|k| k == s.key))
            {
                let profile = match (&profiles, system.key == OURS && !self.opts.no_hops) {
                    (Some(dir), true) => Some(
                        self.opts
                            .log_dir
                            .as_deref()
                            .unwrap_or(dir.path())
                            .join(format!("profile-{}-{}.txt", system.key, flavor.name())),
                    ),
                    _ => None,
                };
                let mut env: Vec<(&str, String)> = Vec::new();
                if system.key == OURS {
                    env.push(("SHELLFLIP_PROBATION", "0".to_string()));
                }
                if system.key == OURS_PROBATION {
                    // Set even for the default, so that the driver's
                    // environment changes nothing.
                    env.push(("SHELLFLIP_PROBATION", probation.clone()));
                }
                if let Some(path) = &profile {
                    // A fresh file: a kept log dir may hold an older run's.
                    let _ = std::fs::remove_file(path);
                    env.push(("SHELLFLIP_PROFILE", path.display().to_string()));
                }
                eprintln!(
                    "restart command: {} ({}), {}",
                    system.name,
                    system.service.display(),
                    flavor.name()
                );
                let r = self.run_cli_system(system, *flavor, &env, profile.as_deref());
                if let Some(e) = &r.error {
                    eprintln!("  {}: {e}", r.label());
                }
                result.systems.push(r);
            }
        }
        progress("done\n");
        result
    }

    fn run_cli_system(
        &self,
        system: &CliSystem,
        flavor: Flavor,
        env: &[(&str, String)],
        profile: Option<&Path>,
    ) -> CliSystemResult {
        let mut result = CliSystemResult {
            key: system.key.to_string(),
            flavor: flavor.name().to_string(),
            name: system.name.to_string(),
            trigger: system.describe.to_string(),
            env: env
                .iter()
                .filter(|(k, _)| *k != "SHELLFLIP_PROFILE")
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            ..Default::default()
        };
        let extra: Vec<String> = [
            "--protocol",
            Protocol::Pid.name(),
            "--flavor",
            flavor.name(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let log = self.log_for(&format!("cli-{}-{}", system.key, flavor.name()));
        let mut service = match Service::start(
            &system.service,
            &extra,
            &env_refs,
            log.as_deref(),
            self.clock,
            self.reaper,
        ) {
            Ok(s) => s,
            Err(e) => {
                result.error = Some(e);
                return result;
            }
        };
        let t = &self.timing;
        let k = self.opts.cli_restarts;
        let probation = shellflip::Config::default().probation;
        // Bound on the load: generous for K slow restarts.
        let max_time = t.warmup + (GAP + probation + Duration::from_secs(15)) * k as u32;
        let load = Load::start_speaking(
            Protocol::Pid,
            service.addr,
            self.opts.clients,
            true,
            self.clock,
            max_time,
        );
        std::thread::sleep(t.warmup);
        let mut done: Vec<Triggered> = Vec::new();
        for i in 1..=k {
            progress(&format!(
                "{}, {}: restart {i}/{k}",
                system.name,
                flavor.name()
            ));
            match self.restart_by_command(&mut service, &system.command, system.command_args, i) {
                Ok(triggered) => done.push(triggered),
                Err(e) => {
                    result.error = Some(format!("{e}; stderr:\n{}", tail(&service.log)));
                    break;
                }
            }
            std::thread::sleep(GAP);
        }
        let end = self.clock.now_with_unix();
        let seen = load.stop();
        service.stop(self.reaper);
        for (i, d) in done.iter().enumerate() {
            let next = done.get(i + 1).map_or(end, |n| (n.at, n.unix_us));
            let mut rec = d.record.clone();
            if let Some(pid) = rec.new_pid {
                rec.new_answer_ms = seen.first_answer_from(pid, d.at).map(|a| ms(d.at, a));
            }
            rec.failures = seen
                .failures
                .iter()
                .filter(|f| f.at >= d.at && f.at < next.0)
                .count() as u64;
            result.restarts.push(rec);
        }
        for f in &seen.failures {
            *result.failures.entry(f.kind.to_string()).or_insert(0) += 1;
        }
        result.exchanges = seen.answers.len() as u64;
        if let Some(path) = profile {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    let lines = parse_profile(&text);
                    for (i, d) in done.iter().enumerate() {
                        let next = done.get(i + 1).map_or(end.1, |n| n.unix_us);
                        let Some(new_pid) = d.record.new_pid else {
                            continue;
                        };
                        result.hops.push(hops_of(
                            &lines,
                            &RestartWindow {
                                from_unix_us: d.unix_us,
                                to_unix_us: next,
                                old_pid: d.record.old_pid,
                                new_pid,
                                exited_ms: d.record.told_ms,
                                old_reaped_ms: d.record.old_gone_ms,
                            },
                        ));
                    }
                }
                Err(e) => eprintln!("note: profile {}: {e}", path.display()),
            }
        }
        result
    }

    /// One restart: `command command_args... SOCKET` spawned and reaped
    /// (its exit is the initiator told), the new generation's ready line,
    /// the old one reaped, then the new one's memory.
    pub(crate) fn restart_by_command(
        &self,
        service: &mut Service,
        command: &Path,
        command_args: &[&str],
        index: usize,
    ) -> Result<Triggered, String> {
        let old = service.current;
        let shown = format!(
            "{} {}",
            command.display(),
            command_args
                .iter()
                .map(|a| format!("{a} "))
                .collect::<String>()
                + &service.control.display().to_string()
        );
        // Exits numbered from here on are this restart's.
        let since = self.reaper.seq();
        let (at, unix_us) = self.clock.now_with_unix();
        let mut child = Command::new(command)
            .args(command_args)
            .arg(&service.control)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("restart {index}: could not start {shown}: {e}"))?;
        let pid = child.id();
        // The reaper thread reaps it (and records when): never `wait` here.
        let exit = self.reaper.wait_exit(pid, since, COMMAND_TIMEOUT);
        let Some(exit) = exit else {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            self.reaper.wait_exit(pid, since, Duration::from_secs(5));
            return Err(format!(
                "restart {index}: {shown} still ran after {COMMAND_TIMEOUT:?}; killed"
            ));
        };
        // It has exited: its pipes hold all it wrote (a few lines).
        let stdout = read_all(child.stdout.take());
        let stderr = read_all(child.stderr.take());
        if exit.code != Some(0) {
            let status = exit
                .code
                .map_or("a signal".to_string(), |c| format!("status {c}"));
            return Err(format!(
                "restart {index}: {shown} exited with {status}: {stdout} {stderr}"
            ));
        }
        let (ready_at, ready, _) = service.next_ready(READY_TIMEOUT).ok_or_else(|| {
            format!("restart {index}: no new generation within {READY_TIMEOUT:?} of {shown}'s exit")
        })?;
        if ready.pid == old.pid {
            return Err(format!("restart {index}: the same pid answered"));
        }
        let gone = self.reaper.wait_exit(old.pid, since, GONE_TIMEOUT);
        let record = RestartRecord {
            index,
            old_pid: old.pid,
            new_pid: Some(ready.pid),
            generation: Some(ready.generation),
            told_ms: Some(ms(at, exit.at)),
            outcome: if stderr.is_empty() {
                stdout
            } else {
                format!("{stdout} ({stderr})")
            },
            ready_ms: Some(ms(at, ready_at)),
            old_gone_ms: gone.map(|g| ms(at, g.at)),
            rss_kib: rss_kib(ready.pid),
            spawner_pss_kib: spawner_pss_kib(ready.pid),
            fds: fd_count(ready.pid),
            ..Default::default()
        };
        Ok(Triggered {
            at,
            unix_us,
            record,
        })
    }
}

/// What an exited process left in a pipe (bounded), trimmed.
fn read_all(pipe: Option<impl Read>) -> String {
    let mut text = String::new();
    if let Some(pipe) = pipe {
        let _ = pipe.take(1 << 16).read_to_string(&mut text);
    }
    text.trim().to_string()
}

/// `--cli-systems`' keys, checked.
pub fn check_systems(keys: &[String]) -> Result<(), String> {
    let known = [OURS, OURS_PROBATION, "cf-shellflip", "ecdysis"];
    match keys.iter().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "--cli-systems: unknown system {k:?} (known: {})",
            known.join(", ")
        )),
        None => Ok(()),
    }
}

/// A `--flavors` name.
pub fn parse_flavor(name: &str) -> Result<Flavor, String> {
    Flavor::parse(name).ok_or_else(|| "expected current_thread or multi_thread".to_string())
}
