//! Long-lived connections (issue 16), two measurements:
//!
//! - **Sessions handed over**: the root workspace's examples/sessions.rs
//!   holding N idle sessions (opened by the driver, each `incr`ed once) is
//!   restarted, alternately with a second instance holding none: trigger →
//!   old generation gone (it exits once every session is handed over and
//!   taken) with N sessions, against the same plain restart. After each
//!   restart, one `incr` on every session checks that none was lost: each
//!   must answer from the new generation's pid with its own count
//!   continued. Both run with `SHELLFLIP_PROBATION=0`: the sessions
//!   are handed over when the probation ends, which would add its length to both.
//! - **Memory of a draining generation**: the echo example holding N
//!   connections (greeted, idle) is restarted; 200 ms after the new
//!   generation's READY, the old one's RSS and PSS, while it drains them.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use shellflip_bench::report::{DrainMemoryResult, DrainSample, SessionsResult};
use shellflip_testkit::process::rss_kib;
use shellflip_testkit::proto::parse_greeting;

use crate::harness::{pss_kib, tail, Service};
use crate::{progress, Bench, Trigger};

/// The services' probation in this section.
const PROBATION: &str = "0";
/// Connections opened before their first lines are read.
const BATCH: usize = 128;
/// Bound on opening all connections, and on one check of all sessions.
const ALL_BY: Duration = Duration::from_secs(60);
/// When the draining generation's memory is read, after READY.
const SETTLE: Duration = Duration::from_millis(200);

/// Reads one line, waiting until `deadline` at most; `None` at the end of
/// the stream, on an error or when the time is up.
fn line_by(reader: &mut BufReader<TcpStream>, deadline: Instant) -> Option<String> {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    reader.get_ref().set_read_timeout(Some(left)).ok()?;
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(n) if n > 0 => Some(line.trim_end().to_string()),
        _ => None,
    }
}

/// Opens `n` connections to `addr` and reads the first line of each
/// (`BATCH` connections at a time, so that the listen queue never
/// overflows).
fn open_connections(
    addr: SocketAddr,
    n: usize,
) -> Result<Vec<(BufReader<TcpStream>, String)>, String> {
    let deadline = Instant::now() + ALL_BY;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let batch = BATCH.min(n - out.len());
        let mut opened = Vec::with_capacity(batch);
        for _ in 0..batch {
            let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                .map_err(|e| format!("connection {}: connect: {e}", out.len() + opened.len()))?;
            let _ = stream.set_nodelay(true);
            opened.push(BufReader::with_capacity(256, stream));
        }
        for mut reader in opened {
            let line = line_by(&mut reader, deadline)
                .ok_or_else(|| format!("connection {}: no first line", out.len()))?;
            out.push((reader, line));
        }
    }
    Ok(out)
}

/// One session as the driver holds it.
struct Session {
    id: u64,
    count: u64,
    reader: BufReader<TcpStream>,
    /// False once it was closed or answered wrong (counted lost once).
    alive: bool,
}

fn open_sessions(addr: SocketAddr, n: usize) -> Result<Vec<Session>, String> {
    open_connections(addr, n)?
        .into_iter()
        .map(|(reader, line)| {
            let id = line
                .strip_prefix("session=")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|id| id.parse().ok())
                .ok_or_else(|| format!("not a session line: {line:?}"))?;
            Ok(Session {
                id,
                count: 0,
                reader,
                alive: true,
            })
        })
        .collect()
}

/// `incr` on every live session (all sent, then all read): each must
/// answer `<id> <count + 1> pid=<pid> ...`. Returns the sessions lost in
/// this round.
fn incr_all(sessions: &mut [Session], pid: u32) -> u64 {
    let mut lost = 0;
    for s in sessions.iter_mut().filter(|s| s.alive) {
        if s.reader.get_mut().write_all(b"incr\n").is_err() {
            s.alive = false;
            lost += 1;
        }
    }
    let deadline = Instant::now() + ALL_BY;
    for s in sessions.iter_mut().filter(|s| s.alive) {
        let answered = line_by(&mut s.reader, deadline).and_then(|line| {
            let mut words = line.split_whitespace();
            let id: u64 = words.next()?.parse().ok()?;
            let n: u64 = words.next()?.parse().ok()?;
            let by: u32 = words.find_map(|w| w.strip_prefix("pid="))?.parse().ok()?;
            (id == s.id && n == s.count + 1 && by == pid).then_some(n)
        });
        match answered {
            Some(n) => s.count = n,
            None => {
                s.alive = false;
                lost += 1;
            }
        }
    }
    lost
}

impl Bench {
    fn start_ours(&self, exe: &Path, key: &str) -> Result<Service, String> {
        let env = self.ours_env(Some(PROBATION));
        Service::start(
            exe,
            &[],
            &env,
            self.log_for(key).as_deref(),
            self.clock,
            self.reaper,
        )
    }

    /// N idle sessions handed over, against a plain restart.
    pub(crate) fn run_sessions(&self, exe: &Path) -> SessionsResult {
        let n = self.opts.sessions.unwrap_or(0);
        let mut result = SessionsResult {
            sessions: n,
            probation: PROBATION.to_string(),
            ..Default::default()
        };
        if let Err(e) = self.sessions_into(exe, n, &mut result) {
            result.error = Some(e);
        }
        progress("done\n");
        result
    }

    fn sessions_into(
        &self,
        exe: &Path,
        n: usize,
        result: &mut SessionsResult,
    ) -> Result<(), String> {
        let mut plain = self.start_ours(exe, "sessions-plain")?;
        let mut held = match self.start_ours(exe, "sessions-held") {
            Ok(held) => held,
            Err(e) => {
                plain.stop(self.reaper);
                return Err(e);
            }
        };
        let outcome = (|| {
            progress(&format!("sessions: opening {n}"));
            let mut sessions = open_sessions(held.addr, n)?;
            // Every session counts once before any restart.
            let lost = incr_all(&mut sessions, held.current.pid);
            if lost > 0 {
                return Err(format!(
                    "{lost} of {n} sessions did not answer before any restart"
                ));
            }
            let k = self.timing.session_restarts;
            for i in 1..=k {
                progress(&format!("sessions: restart {i}/{k}, no session"));
                std::thread::sleep(self.timing.gap);
                let (_, rec) = self
                    .restart_once(&mut plain, Trigger::Ours, i)
                    .map_err(|e| format!("no session: {e}; stderr:\n{}", tail(&plain.log)))?;
                result.plain.push(rec);
                progress(&format!("sessions: restart {i}/{k}, {n} sessions"));
                std::thread::sleep(self.timing.gap);
                let (_, rec) = self
                    .restart_once(&mut held, Trigger::Ours, i)
                    .map_err(|e| format!("{n} sessions: {e}; stderr:\n{}", tail(&held.log)))?;
                if rec.old_gone_ms.is_none() {
                    return Err(format!(
                        "{n} sessions: restart {i}: the old generation was not gone within 40 s; stderr:\n{}",
                        tail(&held.log)
                    ));
                }
                let new_pid = rec.new_pid.unwrap_or(0);
                result.handed.push(rec);
                let start = Instant::now();
                result.lost.push(incr_all(&mut sessions, new_pid));
                result.check_ms.push(start.elapsed().as_secs_f64() * 1000.0);
            }
            Ok(())
        })();
        // Closed first: a stopping generation serves its sessions until
        // they end.
        plain.stop(self.reaper);
        held.stop(self.reaper);
        outcome
    }

    /// The echo example holding N connections, restarted: the old
    /// generation's memory while it drains them.
    pub(crate) fn run_drain_memory(&self, echo: &Path) -> DrainMemoryResult {
        let n = self.opts.sessions.unwrap_or(0);
        let mut result = DrainMemoryResult {
            connections: n,
            probation: PROBATION.to_string(),
            ..Default::default()
        };
        let mut service = match self.start_ours(echo, "drain-memory") {
            Ok(service) => service,
            Err(e) => {
                result.error = Some(e);
                return result;
            }
        };
        let k = self.timing.drain_restarts;
        for i in 1..=k {
            progress(&format!(
                "draining memory: restart {i}/{k} holding {n} connections"
            ));
            match self.drain_sample(&mut service, n, i) {
                Ok(sample) => result.samples.push(sample),
                Err(e) => {
                    result.error = Some(format!("{e}; stderr:\n{}", tail(&service.log)));
                    break;
                }
            }
            std::thread::sleep(self.timing.gap);
        }
        progress("done\n");
        service.stop(self.reaper);
        result
    }

    fn drain_sample(
        &self,
        service: &mut Service,
        n: usize,
        i: usize,
    ) -> Result<DrainSample, String> {
        let old = service.current.pid;
        let idle_rss_kib = rss_kib(old);
        let held = open_connections(service.addr, n)?;
        for (_, line) in &held {
            match parse_greeting(line) {
                Some(g) if g.pid == old => {}
                _ => return Err(format!("unexpected greeting {line:?} (serving pid {old})")),
            }
        }
        let holding_rss_kib = rss_kib(old);
        let (_, rec) = self.restart_until_ready(service, Trigger::Ours, i)?;
        std::thread::sleep(SETTLE);
        let new = rec.new_pid.unwrap_or(0);
        let sample = DrainSample {
            idle_rss_kib,
            holding_rss_kib,
            draining_rss_kib: rss_kib(old),
            draining_pss_kib: pss_kib(old),
            new_rss_kib: rss_kib(new),
            new_pss_kib: pss_kib(new),
        };
        let draining = !self.reaper.has_exited(old);
        // Closing them ends the drain.
        drop(held);
        let gone = self.reaper.wait_gone(old, Duration::from_secs(40));
        if !draining {
            return Err(format!(
                "restart {i}: the old generation exited within {SETTLE:?} of READY although {n} connections were open"
            ));
        }
        if gone.is_none() {
            return Err(format!(
                "restart {i}: the old generation was not gone 40 s after its connections closed"
            ));
        }
        Ok(sample)
    }
}
