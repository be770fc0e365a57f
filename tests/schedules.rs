//! Random schedules of events against the echo example under load, on real
//! processes (issue 22, promise 14 of the design).
//!
//! Each schedule is a random sequence, from a seeded PRNG, of: restarts
//! through the CLI and through the restart signal (to the pid file's pid),
//! stops through the CLI and by SIGTERM (to the pid file's pid, or to a
//! random live generation), SIGKILL of the newest generation or of a
//! spawner, `status` requests, and pauses of up to 1.2 s; the probation is
//! 0.5 s or 2 s, the drain timeout 3 s. Two echo clients run throughout.
//!
//! What each event must do (the specification of issue 22):
//!
//! - a stop that reaches the serving generation or either side of a
//!   probation (`shellflip stop`, SIGTERM to the pid file's pid or to one
//!   of those generations) ends the whole service: every process of it
//!   exits within the probation, the drain timeout and a margin, the port
//!   refuses, and `shellflip stop` returns only once nothing is left;
//! - SIGTERM to a generation still starting is a failed restart, to a
//!   draining generation it ends only that one;
//! - SIGKILL of a generation on probation hands the service back to the
//!   old one; SIGKILL of a generation that had taken over leaves nothing
//!   serving, unless a successor it was starting takes over;
//! - a spawner's death stops no generation.
//!
//! The test tracks what the service must look like once it settles — it
//! serves, it is over, or either (after an event whose effect depends on
//! a phase the test cannot pin down: SIGTERM to a generation that may just
//! have become ready, SIGKILL of one that may have taken over) — and then
//! checks: a stopped service left no process and its port refuses; a
//! serving one has exactly one generation, which answers every new
//! connection and is the pid `status` names; no live process of the
//! service has an unreaped child. Along the way, `status` and `restart`
//! against a service that must be serving must be answered, and
//! `shellflip stop` must find nothing of the service left when it returns.
//! Once a stop reached the service, the schedule's later SIGTERMs and
//! SIGKILLs to generations are skipped: they could end a generation that
//! wrongly serves on, and hide it. A generation the schedule SIGKILLed
//! takes no later signal: until it is gone it is still in `/proc` (and
//! may be what the pid file names), but a SIGTERM to it would reach
//! nothing, so it is not taken for a stop.
//!
//! The seeds are random in each run. Every schedule prints its seed and its
//! steps before it runs. A failing
//! schedule prints what happened and its replay command:
//! `SHELLFLIP_SCHEDULE_SEED=<seed> cargo test --test schedules -- --nocapture`
//! runs exactly that one. `SHELLFLIP_SCHEDULES=<n>` runs `n` random ones
//! instead of 40. Processes are found by the marker the harness puts in the
//! service's environment ([`Census`]), wherever they were re-parented; only
//! those are ever signalled.

mod common;

use std::collections::BTreeSet;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use nix::sys::signal::Signal;
use shellflip::client::ControlClient;
use shellflip::control::{Phase, Status};
use shellflip_testkit::census::{describe, ServiceProcess};
use shellflip_testkit::ended::{tcp_refused_by, unix_refused};
use shellflip_testkit::process::reap_exited_children_named;

/// Replays the schedule with this seed, alone.
const SEED_VAR: &str = "SHELLFLIP_SCHEDULE_SEED";
/// How many random schedules to run (default [`DEFAULT_SCHEDULES`]).
const COUNT_VAR: &str = "SHELLFLIP_SCHEDULES";
const DEFAULT_SCHEDULES: usize = 40;
/// Schedules run side by side: most of a schedule's time is pauses and
/// waits, so two fit on two busy cores.
const WORKERS: usize = 2;
/// The services' drain timeout.
const DRAIN: Duration = Duration::from_secs(3);
/// Added to the probation and the drain timeout for a busy machine: how
/// long a stopped service may take to be gone.
const MARGIN: Duration = Duration::from_secs(10);
/// Added again while a schedule that did not stop the service settles (a
/// restart may still be under way).
const RESTART_ROOM: Duration = Duration::from_secs(10);
/// The bound of the `status` requests the test makes itself.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

/// SplitMix64: small, and good enough to pick events.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One event of a schedule.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// `shellflip restart`, waiting for its outcome.
    RestartCli,
    /// The restart signal (SIGUSR1) to the pid the pid file names.
    RestartSignal,
    /// `shellflip stop`.
    StopCli,
    /// SIGTERM to the pid the pid file names.
    TermPidFile,
    /// SIGTERM to one of the live generations (picked by this number).
    TermGeneration(u64),
    /// SIGKILL of the newest live generation.
    KillNewest,
    /// SIGKILL of one of the live spawners (picked by this number).
    KillSpawner(u64),
    /// `shellflip status`.
    Status,
    /// Nothing, for this many milliseconds.
    Pause(u64),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::RestartCli => write!(f, "restart (CLI)"),
            Step::RestartSignal => write!(f, "SIGUSR1 to the pid file's pid"),
            Step::StopCli => write!(f, "stop (CLI)"),
            Step::TermPidFile => write!(f, "SIGTERM to the pid file's pid"),
            Step::TermGeneration(pick) => write!(f, "SIGTERM to a live generation (pick {pick})"),
            Step::KillNewest => write!(f, "SIGKILL of the newest generation"),
            Step::KillSpawner(pick) => write!(f, "SIGKILL of a spawner (pick {pick})"),
            Step::Status => write!(f, "status (CLI)"),
            Step::Pause(ms) => write!(f, "pause {ms}ms"),
        }
    }
}

/// A schedule: its seed, the services' probation, its steps.
struct Schedule {
    seed: u64,
    probation: Duration,
    steps: Vec<Step>,
}

impl Schedule {
    /// The schedule of `seed`: 2 to 7 events, most after a pause. The
    /// newest generation is killed only once a restart was asked for (the
    /// first generation killed ends the service, and the rest of the
    /// schedule would find nothing to act on).
    fn from_seed(seed: u64) -> Schedule {
        let mut rng = Rng(seed);
        let probation = if rng.below(2) == 0 {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(2)
        };
        let mut steps = Vec::new();
        let mut restarted = false;
        for _ in 0..2 + rng.below(6) {
            if rng.below(3) != 0 {
                steps.push(Step::Pause(rng.below(1_201)));
            }
            let step = match rng.below(100) {
                0..=25 => Step::RestartCli,
                26..=43 => Step::RestartSignal,
                44..=50 => Step::StopCli,
                51..=56 => Step::TermPidFile,
                57..=66 => Step::TermGeneration(rng.below(1_000)),
                67..=77 if restarted => Step::KillNewest,
                67..=77 => Step::RestartCli,
                78..=83 => Step::KillSpawner(rng.below(1_000)),
                _ => Step::Status,
            };
            restarted |= matches!(step, Step::RestartCli | Step::RestartSignal);
            steps.push(step);
        }
        Schedule {
            seed,
            probation,
            steps,
        }
    }

    fn replay(&self) -> String {
        format!(
            "{SEED_VAR}={} cargo test --test schedules -- --nocapture",
            self.seed
        )
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "schedule seed={} probation={:?} drain={DRAIN:?}:",
            self.seed, self.probation
        )?;
        for (n, step) in self.steps.iter().enumerate() {
            write!(f, "\n  {:>2}. {step}", n + 1)?;
        }
        Ok(())
    }
}

/// What the service must look like once the schedule settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Exactly one generation serves.
    Serving,
    /// Nothing of the service is left: a stop reached it.
    Stopped,
    /// One or the other: an event's effect depended on a phase the test
    /// could not pin down, or it killed a generation that had taken over.
    Either,
}

/// What a SIGTERM or SIGKILL to a generation was, as far as the test can
/// tell from the live generations and the `status` taken just before. A
/// probation is recognised by the generations alive (the old side is
/// alive and not draining) and by time: only during its first half, far
/// from its end, since the answer does not have to list the old side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The generation that answers the control socket: serving (maybe
    /// restarting), or the new side of a probation.
    Answering,
    /// The new side of a probation in its first half.
    OnProbation,
    /// The old side of a probation in its first half: the answering
    /// generation's immediate predecessor, not draining.
    HandingOver,
    /// A generation that `status` lists as draining.
    Draining,
    /// A generation younger than the answering one, which is restarting:
    /// still starting (or just ready, on probation).
    Starting,
    /// Anything else: a phase that may change under the test's feet, no
    /// `status`.
    Unsure,
}

/// A violation of the specification, with what the test saw.
type Violation = String;

/// A line of the service's stderr without its colour codes.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `status` with a short bound.
fn status(control: &Path) -> Result<Status, String> {
    let mut client = ControlClient::connect(control).map_err(|e| e.to_string())?;
    client.set_timeout(Some(STATUS_TIMEOUT));
    client.status_request().map_err(|e| e.to_string())
}

/// One schedule being run.
struct Run<'a> {
    schedule: &'a Schedule,
    service: Echo,
    pid_file: PathBuf,
    _files: tempfile::TempDir,
    expect: Expect,
    /// When the first stop that reached the service was sent.
    stopped_at: Option<Instant>,
    /// The generations this schedule SIGKILLed. One stays in `/proc` for a
    /// moment while it exits (and the pid file may still name it), but no
    /// signal reaches it any more: a SIGTERM sent to it is no stop.
    killed: BTreeSet<u32>,
    /// What happened, step by step.
    log: Vec<String>,
}

impl<'a> Run<'a> {
    fn start(schedule: &'a Schedule) -> Run<'a> {
        let files = tempfile::tempdir().unwrap();
        let pid_file = files.path().join("echo.pid");
        let probation = format!("{}ms", schedule.probation.as_millis());
        let drain = format!("{}ms", DRAIN.as_millis());
        let service = Echo::start(&[
            ("SHELLFLIP_PROBATION", &probation),
            ("SHELLFLIP_DRAIN_TIMEOUT", &drain),
            ("SHELLFLIP_PID_FILE", pid_file.to_str().unwrap()),
        ]);
        let first = service.current.pid;
        wait_until("the pid file to name generation 1", EVENT_TIMEOUT, || {
            std::fs::read_to_string(&pid_file).is_ok_and(|pid| pid.trim() == first.to_string())
        });
        Run {
            schedule,
            service,
            pid_file,
            _files: files,
            expect: Expect::Serving,
            stopped_at: None,
            killed: BTreeSet::new(),
            log: vec![format!("started: generation 1 is pid {first}")],
        }
    }

    fn note(&mut self, line: String) {
        self.log.push(line);
    }

    /// A stop reached the service at `at`.
    fn stopped(&mut self, at: Instant) {
        self.expect = Expect::Stopped;
        self.stopped_at.get_or_insert(at);
    }

    /// The service may have ended.
    fn may_have_ended(&mut self) {
        if self.expect == Expect::Serving {
            self.expect = Expect::Either;
        }
    }

    /// The live pid the pid file names, if any (not one this schedule
    /// killed).
    fn pid_file_pid(&self) -> Option<u32> {
        let pid = std::fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        (self.service.census.owns(pid) && !self.killed.contains(&pid)).then_some(pid)
    }

    /// The live generations, oldest first, but those this schedule killed.
    fn live_generations(&self) -> Vec<ServiceProcess> {
        let mut generations = self.service.census.generations();
        generations.retain(|g| !self.killed.contains(&g.pid));
        generations
    }

    /// True if the generation `pid` reported READY less than half a
    /// probation ago (its ready line is read right after READY).
    fn early_in_probation(&self, pid: u32) -> bool {
        self.service
            .ready_seen_at(pid)
            .is_some_and(|at| at.elapsed() < self.schedule.probation / 2)
    }

    /// What `pid` is, among the live `generations` (oldest first), from
    /// `status` taken just before it is signalled.
    fn classify(
        &self,
        pid: u32,
        generations: &[ServiceProcess],
        status: &Result<Status, String>,
    ) -> Target {
        let Ok(status) = status else {
            return Target::Unsure;
        };
        let draining = |pid: u32| {
            status
                .generations
                .iter()
                .any(|g| g.pid == pid && g.phase == Phase::Draining)
        };
        let position = |pid: u32| generations.iter().position(|g| g.pid == pid);
        let (Some(target), Some(answering)) = (position(pid), position(status.pid)) else {
            return Target::Unsure;
        };
        let early = self.early_in_probation(status.pid);
        if draining(pid) {
            Target::Draining
        } else if target == answering {
            let predecessor_alive = answering > 0 && !draining(generations[answering - 1].pid);
            if predecessor_alive && early {
                Target::OnProbation
            } else {
                Target::Answering
            }
        } else if target + 1 == answering && early {
            Target::HandingOver
        } else if target > answering && status.phase == Phase::Restarting {
            Target::Starting
        } else {
            Target::Unsure
        }
    }

    fn cli(&self, command: &str, timeout: &str) -> (Option<i32>, String) {
        let out = cli(&self.service, command, &["--timeout", timeout]);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let said = said.lines().next().unwrap_or("").to_owned();
        (out.status.code(), said)
    }

    fn step(&mut self, step: Step) -> Result<(), Violation> {
        let hides = matches!(
            step,
            Step::TermPidFile | Step::TermGeneration(_) | Step::KillNewest
        );
        if self.expect == Expect::Stopped && hides {
            // The service must end by itself now: a SIGTERM or SIGKILL
            // would end a generation that wrongly serves on.
            self.note(format!("{step}: skipped after the stop"));
            return Ok(());
        }
        match step {
            Step::Pause(ms) => std::thread::sleep(Duration::from_millis(ms)),
            Step::RestartCli => {
                let (code, said) = self.cli("restart", "60s");
                self.note(format!("restart (CLI): exit {code:?}: {said}"));
                let unanswered = said.contains("no answer") || said.contains("no service");
                if self.expect == Expect::Serving
                    && (!matches!(code, Some(0 | 1 | 75)) || unanswered)
                {
                    return Err(format!(
                        "`shellflip restart` against a serving service: exit {code:?}: {said}"
                    ));
                }
            }
            Step::Status => {
                let (code, said) = self.cli("status", "10s");
                self.note(format!("status (CLI): exit {code:?}: {said}"));
                if self.expect == Expect::Serving && code != Some(0) {
                    return Err(format!(
                        "`shellflip status` against a serving service: exit {code:?}: {said}"
                    ));
                }
            }
            Step::RestartSignal => match self.pid_file_pid() {
                Some(pid) if self.service.census.signal(pid, Signal::SIGUSR1) => {
                    self.note(format!("SIGUSR1 to {pid}"));
                }
                _ => self.note("SIGUSR1: no live pid in the pid file; skipped".to_owned()),
            },
            Step::StopCli => {
                let sent = Instant::now();
                let (code, said) = self.cli("stop", "60s");
                // What is left the moment it returned.
                let left = self.service.census.processes();
                self.note(format!("stop (CLI): exit {code:?}: {said}"));
                match code {
                    Some(0) => {
                        self.stopped(sent);
                        if !left.is_empty() {
                            return Err(format!(
                                "`shellflip stop` returned ({said}) while processes of the \
                                 service were still running: {}",
                                describe(&left)
                            ));
                        }
                    }
                    _ if self.expect == Expect::Serving => {
                        return Err(format!(
                            "`shellflip stop` against a serving service: exit {code:?}: {said}"
                        ));
                    }
                    // Nothing to stop, or already stopping.
                    _ => {}
                }
            }
            Step::TermPidFile => match self.pid_file_pid() {
                Some(pid) => {
                    let sent = Instant::now();
                    if self.service.census.signal(pid, Signal::SIGTERM) {
                        self.note(format!("SIGTERM to {pid} (the pid file's): a stop"));
                        self.stopped(sent);
                    } else {
                        self.note(format!("SIGTERM to {pid}: gone meanwhile; skipped"));
                    }
                }
                None => self.note("SIGTERM: no live pid in the pid file; skipped".to_owned()),
            },
            Step::TermGeneration(pick) => {
                let generations = self.live_generations();
                if generations.is_empty() {
                    self.note("SIGTERM: no live generation; skipped".to_owned());
                    return Ok(());
                }
                let pid = generations[pick as usize % generations.len()].pid;
                let status = status(&self.service.control);
                let target = self.classify(pid, &generations, &status);
                let sent = Instant::now();
                if !self.service.census.signal(pid, Signal::SIGTERM) {
                    self.note(format!("SIGTERM to {pid}: gone meanwhile; skipped"));
                    return Ok(());
                }
                self.note(format!("SIGTERM to {pid} ({target:?})"));
                match target {
                    Target::Answering | Target::HandingOver | Target::OnProbation => {
                        self.stopped(sent)
                    }
                    Target::Draining => {}
                    Target::Starting | Target::Unsure => self.may_have_ended(),
                }
            }
            Step::KillNewest => {
                let generations = self.live_generations();
                let Some(newest) = generations.last().cloned() else {
                    self.note("SIGKILL: no live generation; skipped".to_owned());
                    return Ok(());
                };
                let status = status(&self.service.control);
                let target = self.classify(newest.pid, &generations, &status);
                if !self.service.census.signal(newest.pid, Signal::SIGKILL) {
                    self.note(format!("SIGKILL of {}: gone meanwhile", newest.pid));
                    return Ok(());
                }
                self.killed.insert(newest.pid);
                self.note(format!("SIGKILL of {} ({target:?})", newest.pid));
                match target {
                    // A failed restart, or a rollback: the old one serves.
                    Target::Starting | Target::OnProbation => {}
                    _ => self.may_have_ended(),
                }
            }
            Step::KillSpawner(pick) => {
                let spawners = self.service.census.spawners();
                if spawners.is_empty() {
                    self.note("SIGKILL: no live spawner; skipped".to_owned());
                    return Ok(());
                }
                let spawner = &spawners[pick as usize % spawners.len()];
                if self.service.census.signal(spawner.pid, Signal::SIGKILL) {
                    self.note(format!(
                        "SIGKILL of spawner {} (of {})",
                        spawner.pid, spawner.ppid
                    ));
                } else {
                    self.note(format!(
                        "SIGKILL of spawner {}: gone meanwhile",
                        spawner.pid
                    ));
                }
            }
        }
        Ok(())
    }

    /// The service serves, settled: one generation alive (and at most its
    /// own spawner), which answers `status` as serving (not restarting).
    fn settled_serving(&self, live: &[ServiceProcess]) -> Option<Status> {
        let generations: Vec<&ServiceProcess> = live.iter().filter(|p| !p.is_spawner()).collect();
        let [serving] = generations[..] else {
            return None;
        };
        if live.iter().any(|p| p.is_spawner() && p.ppid != serving.pid) {
            return None;
        }
        let status = status(&self.service.control).ok()?;
        (status.pid == serving.pid && status.phase == Phase::Serving).then_some(status)
    }

    /// Waits until the service settles (bounded), then checks it.
    fn settle_and_check(&mut self) -> Result<(), Violation> {
        let probation = self.schedule.probation;
        let deadline = match (self.expect, self.stopped_at) {
            (Expect::Stopped, Some(at)) => at + probation + DRAIN + MARGIN,
            _ => Instant::now() + probation + DRAIN + MARGIN + RESTART_ROOM,
        };
        let settled = loop {
            let live = self.service.census.processes();
            if live.is_empty() {
                break None;
            }
            if self.expect != Expect::Stopped {
                if let Some(status) = self.settled_serving(&live) {
                    break Some(status);
                }
            }
            if Instant::now() > deadline {
                let status = status(&self.service.control);
                let answers = exchange(self.service.addr, "who")
                    .map(|g| format!("pid {}", g.pid))
                    .unwrap_or_else(|e| e.to_string());
                return Err(match self.expect {
                    Expect::Stopped => format!(
                        "a stop reached the service, but processes of it are still running \
                         {:?} after it: {}; a new connection gets: {answers}; status: {status:?}",
                        probation + DRAIN + MARGIN,
                        describe(&live)
                    ),
                    _ => format!(
                        "did not settle: processes {}; a new connection gets: {answers}; \
                         status: {status:?}",
                        describe(&live)
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        match settled {
            None if self.expect == Expect::Serving => Err(
                "nothing of the service is left, but no event of the schedule could end it"
                    .to_owned(),
            ),
            None => {
                self.note("settled: nothing of the service is left".to_owned());
                let mut problems = Vec::new();
                problems.extend(tcp_refused_by(self.service.addr, &self.service.census).err());
                problems.extend(unix_refused(&self.service.control).err());
                if problems.is_empty() {
                    Ok(())
                } else {
                    Err(problems.join("; "))
                }
            }
            Some(status) => {
                self.note(format!(
                    "settled: generation {} (pid {}) serves",
                    status.generation, status.pid
                ));
                self.check_serving(status.pid)
            }
        }
    }

    /// Exactly one pid, `pid`, answers new connections and `status`, and no
    /// process of the service has an unreaped child.
    fn check_serving(&self, pid: u32) -> Result<(), Violation> {
        let mut answering = BTreeSet::new();
        for n in 0..10 {
            let greeting = exchange(self.service.addr, &format!("check {n}"))
                .map_err(|e| format!("a new connection to the serving service failed: {e}"))?;
            answering.insert(greeting.pid);
        }
        if answering != BTreeSet::from([pid]) {
            return Err(format!(
                "new connections were answered by {answering:?}, status names {pid}"
            ));
        }
        let again = status(&self.service.control)
            .map_err(|e| format!("status failed once settled: {e}"))?;
        if again.pid != pid {
            return Err(format!(
                "status named {pid}, then {} (nothing happened meanwhile)",
                again.pid
            ));
        }
        self.service
            .census
            .wait_no_zombies(Duration::from_secs(5))
            .map_err(|zombies| format!("zombies left: {}", describe(&zombies)))
    }

    /// The violation, with everything needed to understand and replay it.
    fn report(&self, violation: &str) -> String {
        let stderr = self.service.stderr();
        let lines: Vec<String> = stderr
            .lines()
            .filter(|l| !l.contains("DEBUG"))
            .map(plain)
            .collect();
        let tail = &lines[lines.len().saturating_sub(40)..];
        format!(
            "{}\nwhat happened:\n  {}\nVIOLATION (expected {:?}): {violation}\nreplay: {}\n\
             last lines of the service's stderr (no DEBUG):\n{}",
            self.schedule,
            self.log.join("\n  "),
            self.expect,
            self.schedule.replay(),
            tail.join("\n")
        )
    }
}

/// Runs one schedule: `Ok` with what happened, or the report of its
/// violation.
fn run(schedule: &Schedule) -> Result<String, String> {
    let mut run = Run::start(schedule);
    // Bounded in count too: once the service is stopped, each exchange
    // fails at once.
    let load = Load::start(run.service.addr, 2, 10_000, Duration::from_secs(60));
    let mut outcome = Ok(());
    for &step in &schedule.steps {
        outcome = run.step(step);
        if outcome.is_err() {
            break;
        }
    }
    let report = load.stop();
    run.note(format!(
        "load: {} exchanges, {} failed",
        report.ok,
        report.failures.len()
    ));
    if outcome.is_ok() {
        outcome = run.settle_and_check();
    }
    let result = match outcome {
        Ok(()) => Ok(format!(
            "seed={} ok (expected {:?}):\n  {}",
            schedule.seed,
            run.expect,
            run.log.join("\n  ")
        )),
        Err(violation) => Err(run.report(&violation)),
    };
    drop(run);
    reap_exited_children_named("echo");
    reap_exited_spawners();
    result
}

/// The seeds to run: the one to replay, or `count` random ones.
fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var(SEED_VAR) {
        let seed = seed
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{SEED_VAR}={seed:?}: {e}"));
        return vec![seed];
    }
    let count = std::env::var(COUNT_VAR)
        .ok()
        .map(|n| {
            n.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{COUNT_VAR}={n:?}: {e}"))
        })
        .unwrap_or(DEFAULT_SCHEDULES);
    let mut rng = Rng(SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ u64::from(std::process::id()));
    (0..count).map(|_| rng.next()).collect()
}

#[test]
fn random_schedules_keep_the_promises() {
    let started = Instant::now();
    let seeds = seeds();
    let total = seeds.len();
    let queue = Arc::new(Mutex::new(seeds));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..WORKERS.min(total))
        .map(|_| {
            let queue = Arc::clone(&queue);
            let failures = Arc::clone(&failures);
            std::thread::spawn(move || loop {
                let Some(seed) = queue.lock().unwrap().pop() else {
                    break;
                };
                let schedule = Schedule::from_seed(seed);
                eprintln!("{schedule}");
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| run(&schedule)))
                    .unwrap_or_else(|panic| {
                        let message = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        Err(format!(
                            "{schedule}\npanicked: {message}\nreplay: {}",
                            schedule.replay()
                        ))
                    });
                match result {
                    Ok(summary) => eprintln!("{summary}"),
                    Err(report) => {
                        eprintln!("---- seed={seed} FAILED\n{report}\n----");
                        failures.lock().unwrap().push((seed, schedule.replay()));
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    eprintln!(
        "{total} schedules in {:.1}s, {} violated the promises",
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {total} schedules violated the promises (their reports are above); replay:\n{}",
        failures.len(),
        failures
            .iter()
            .map(|(_, replay)| replay.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
