//! Soak: 200 restarts of the echo example under 16 concurrent clients.
//!
//! What must hold: no client connection fails, every old generation and
//! its spawner exit and are reaped (no zombie), the serving generation's descriptors and
//! memory stay flat from one generation to the next, and the control socket
//! still answers at the end.
//!
//! Long, so skipped by default:
//!
//! ```sh
//! cargo build --release --examples
//! cargo test --release --test soak -- --ignored --nocapture
//! ```
//!
//! `SHELLFLIP_SOAK_RESTARTS` (default 200) and `SHELLFLIP_SOAK_CLIENTS`
//! (default 16) change the run. With `--nocapture` it prints one line per
//! restart and a summary; `docs/reliability.md` has the figures of a run.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use shellflip::client::ControlClient;
use shellflip::control::Response;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Socket inodes of a process's network namespace that are *not* client
/// connections: Unix sockets (control socket, channels), UDP sockets and
/// listening TCP sockets.
fn non_connection_socket_inodes(pid: u32) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    // Inode column: /proc/net/unix has it 7th (index 6), tcp/udp 10th.
    let tables = [
        ("unix", 6, None),
        ("udp", 9, None),
        ("udp6", 9, None),
        ("tcp", 9, Some("0A")), // 0A: LISTEN
        ("tcp6", 9, Some("0A")),
    ];
    for (table, column, state) in tables {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let Some(wanted) = state {
                if fields.get(3) != Some(&wanted) {
                    continue;
                }
            }
            if let Some(inode) = fields.get(column).and_then(|v| v.parse().ok()) {
                inodes.insert(inode);
            }
        }
    }
    inodes
}

/// Open descriptors of `pid`: all of them, and all but client TCP
/// connections (which come and go with the load).
fn fd_counts(pid: u32) -> (usize, usize) {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return (0, 0);
    };
    let targets: Vec<String> = entries
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .collect();
    // Read after the fds: a connection closed in between is missing from
    // the tables, and so still counted as a connection.
    let keep = non_connection_socket_inodes(pid);
    let base = targets
        .iter()
        .filter(|t| {
            t.strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse::<u64>().ok())
                .is_none_or(|inode| keep.contains(&inode))
        })
        .count();
    (targets.len(), base)
}

/// The smallest fd counts over a few samples (a leak persists, a
/// connection being set up or torn down does not). With `down_to`, sampling
/// goes on until the count without client connections is at most that, or
/// for `EVENT_TIMEOUT`: a descriptor that the new generation closes once it
/// notices its predecessor's exit (the channel, the predecessor's pidfd) may
/// still be open right after the exit; a leaked one stays.
fn settled_fd_counts(pid: u32, down_to: Option<usize>) -> (usize, usize) {
    let started = Instant::now();
    let mut best = fd_counts(pid);
    let mut samples = 1;
    while samples < 5 || down_to.is_some_and(|d| best.1 > d && started.elapsed() < EVENT_TIMEOUT) {
        std::thread::sleep(Duration::from_millis(10));
        let (total, base) = fd_counts(pid);
        best = (best.0.min(total), best.1.min(base));
        samples += 1;
    }
    best
}

/// VmRSS of `pid`, in KiB.
fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Zombie processes whose parent is one of `parents`, as (pid, ppid).
fn zombies_of(parents: &HashSet<u32>) -> Vec<(u32, u32)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, split after ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        if let (Some("Z"), Some(ppid)) = (state, ppid) {
            if parents.contains(&ppid) {
                found.push((pid, ppid));
            }
        }
    }
    found
}

struct Sample {
    restart: usize,
    pid: u32,
    fds: usize,
    fds_base: usize,
    rss_kb: u64,
}

#[test]
#[ignore = "soak: run with cargo test --release --test soak -- --ignored"]
fn two_hundred_restarts_under_load_leak_nothing() {
    let restarts = env_or("SHELLFLIP_SOAK_RESTARTS", 200);
    let clients = env_or("SHELLFLIP_SOAK_CLIENTS", 16);
    let started = Instant::now();
    let me = std::process::id();

    // A short probation (the default 2 s would make the run 400 s longer;
    // probation itself is tested in tests/probation.rs).
    let mut echo = Echo::start(&[("SHELLFLIP_PROBATION", "100ms")]);
    let load = Load::start(echo.addr, clients, u64::MAX, Duration::from_secs(3600));
    wait_until("load on the first generation", EVENT_TIMEOUT, || {
        load.count_from(echo.current.pid) >= clients
    });

    let mut generation_pids: HashSet<u32> = HashSet::from([echo.current.pid]);
    let (fds, fds_base) = settled_fd_counts(echo.current.pid, None);
    let mut samples = vec![Sample {
        restart: 0,
        pid: echo.current.pid,
        fds,
        fds_base,
        rss_kb: rss_kb(echo.current.pid),
    }];
    println!("restart      pid  fds  fds_base  rss_kb  restart_ms  exchanges");
    let print = |s: &Sample, ms: f64, exchanges: usize| {
        println!(
            "{:>7} {:>8} {:>4} {:>9} {:>7} {:>11.1} {:>10}",
            s.restart, s.pid, s.fds, s.fds_base, s.rss_kb, ms, exchanges
        )
    };
    print(&samples[0], 0.0, load.seen.lock().unwrap().len());

    let mut zombies_seen = Vec::new();
    let mut restart_ms = Vec::new();
    let mut old = echo.current;
    let warmup = restarts.min(5);
    for restart in 1..=restarts {
        let old_spawner = spawner_of(old.pid)
            .unwrap_or_else(|| panic!("restart {restart}: generation {} has no spawner", old.pid));
        let asked = Instant::now();
        // Mostly the library client; every 25th restart through the CLI.
        let pid = if restart % 25 == 0 {
            let out = cli(&echo, "restart", &[]);
            assert!(
                out.status.success(),
                "restart {restart} via the CLI failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            None
        } else {
            match ControlClient::restart(&echo.control) {
                Ok(Response::Restarted(done)) => Some(done.pid),
                other => panic!(
                    "restart {restart}: {other:?}\nstderr tail:\n{}",
                    tail(&echo.stderr())
                ),
            }
        };
        restart_ms.push(asked.elapsed().as_secs_f64() * 1e3);
        let ready = echo.next_ready();
        if let Some(pid) = pid {
            assert_eq!(ready.pid, pid, "restart {restart}");
        }
        assert_eq!(ready.generation, old.generation + 1, "restart {restart}");
        generation_pids.insert(ready.pid);
        assert!(
            wait_exit(old.pid, EVENT_TIMEOUT),
            "restart {restart}: old generation {} did not exit",
            old.pid
        );
        assert!(!is_alive(old.pid), "restart {restart}: {} alive", old.pid);
        // Its spawner follows it out (and is reaped here, the subreaper).
        assert!(
            wait_exit(old_spawner, EVENT_TIMEOUT),
            "restart {restart}: the spawner {old_spawner} of {} did not exit",
            old.pid
        );
        wait_until("clients on the new generation", EVENT_TIMEOUT, || {
            load.count_from(ready.pid) >= clients
        });
        zombies_seen.extend(zombies_of(&HashSet::from([me, ready.pid])));

        // After the first few generations (allocator and runtime warm-up),
        // the count of the first settled one is the bar.
        let bar = samples.get(warmup).map(|s| s.fds_base);
        let (fds, fds_base) = settled_fd_counts(ready.pid, bar);
        let sample = Sample {
            restart,
            pid: ready.pid,
            fds,
            fds_base,
            rss_kb: rss_kb(ready.pid),
        };
        print(
            &sample,
            restart_ms[restart - 1],
            load.seen.lock().unwrap().len(),
        );
        samples.push(sample);
        old = ready;
    }

    // The control socket still answers, with the whole history.
    let status = ControlClient::status(&echo.control).expect("status at the end");
    let report = load.stop();
    let elapsed = started.elapsed();

    // Stop the last generation gracefully and reap it.
    let last = echo.current.pid;
    let last_spawner = spawner_of(last).expect("the last generation's spawner");
    ControlClient::stop_and_wait(&echo.control, EVENT_TIMEOUT).expect("stop");
    assert!(
        wait_exit(last, EVENT_TIMEOUT),
        "last generation did not exit"
    );
    assert!(
        wait_exit(last_spawner, EVENT_TIMEOUT),
        "the last spawner did not exit"
    );
    generation_pids.insert(me);
    zombies_seen.extend(zombies_of(&generation_pids));

    let range = |f: fn(&Sample) -> u64| {
        let values = samples.iter().map(f);
        (values.clone().min().unwrap(), values.max().unwrap())
    };
    let fds_range = range(|s| s.fds as u64);
    let base_range = range(|s| s.fds_base as u64);
    let rss_range = range(|s| s.rss_kb);
    let settled: Vec<&Sample> = samples.iter().filter(|s| s.restart >= warmup).collect();
    let settled_base: HashSet<usize> = settled.iter().map(|s| s.fds_base).collect();
    let settled_rss = (
        settled.iter().map(|s| s.rss_kb).min().unwrap_or(0),
        settled.iter().map(|s| s.rss_kb).max().unwrap_or(0),
    );
    restart_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| restart_ms[((restart_ms.len() - 1) as f64 * p).round() as usize];
    println!(
        "\nsoak: {restarts} restarts with {clients} clients in {:.1}s\n\
         exchanges ok: {}   failed: {}\n\
         restart answered in (ms): median {:.1}  p99 {:.1}  max {:.1}\n\
         fds (all, under load): {}..{}   fds without client connections: {}..{} \
         (from restart {warmup}: {:?})\n\
         VmRSS kB: {}..{} (from restart {warmup}: {}..{})\n\
         zombies: {}   status at the end: pid={} generation={} restarts={} failed={}",
        elapsed.as_secs_f64(),
        report.ok,
        report.failures.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0),
        fds_range.0,
        fds_range.1,
        base_range.0,
        base_range.1,
        settled_base,
        rss_range.0,
        rss_range.1,
        settled_rss.0,
        settled_rss.1,
        zombies_seen.len(),
        status.pid,
        status.generation,
        status.restarts,
        status.failed_restarts,
    );

    report.assert_no_failures("");
    assert!(zombies_seen.is_empty(), "zombies: {zombies_seen:?}");
    assert_eq!(status.pid, last);
    assert_eq!(status.generation, restarts as u64 + 1);
    assert_eq!(status.restarts, restarts as u64);
    assert_eq!(status.failed_restarts, 0);
    let bar = samples[warmup].fds_base;
    assert!(
        settled_base.iter().all(|&n| n <= bar),
        "descriptors (without client connections) grew beyond the {bar} of restart {warmup}: \
         {settled_base:?}"
    );
    assert!(
        settled_rss.1 <= settled_rss.0 + settled_rss.0 / 2,
        "VmRSS of the serving generations ranges {}..{} kB",
        settled_rss.0,
        settled_rss.1
    );
    assert!(echo.wait_first_exit());
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
