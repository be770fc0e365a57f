//! Every process of one service, wherever it ended up.
//!
//! A service's processes are its generations, their spawners
//! (`shellflip-spawn`), a keeper, a wrapper script a deploy put at the
//! executable's path. They change parents as they go: a committed
//! generation is re-parented to the nearest subreaper once its spawner
//! exits, an orphan to the keeper, a leftover to PID 1. What they all
//! share is the environment the first process was started with: every
//! generation is spawned with its predecessor's environment, and a spawner
//! is a fork. So the harness starts each service with a marker of its own
//! in its environment ([`MARKER_VAR`]), and a [`Census`] finds every
//! process of that service by reading `/proc/<pid>/environ`.
//!
//! A zombie has no environment left to read: a process found here is a
//! live one (an exited process waiting to be reaped is not "left"). The
//! zombies that matter are those a live process of the service fails to
//! reap ([`Census::zombies`]); those re-parented to this process (a child
//! subreaper) are this process's to reap, and [`Census::processes`] reaps
//! the ones it has seen alive.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

use crate::process::SPAWNER_NAME;

/// The environment variable whose value marks every process of one
/// service.
pub const MARKER_VAR: &str = "TESTKIT_SERVICE_MARKER";

/// A process of the service, as `/proc/<pid>/stat` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceProcess {
    /// Its pid (in this process's PID namespace).
    pub pid: u32,
    /// Its parent.
    pub ppid: u32,
    /// Its name (`comm`): the binary's file name, or `shellflip-spawn`.
    pub name: String,
    /// Its state letter (`R`, `S`, `Z`...).
    pub state: String,
    /// When it started, in clock ticks after boot: orders generations by
    /// age, whatever the pids.
    pub started: u64,
}

impl ServiceProcess {
    /// True for a generation's spawner.
    pub fn is_spawner(&self) -> bool {
        self.name == SPAWNER_NAME
    }
}

impl std::fmt::Display for ServiceProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}, {}, parent {})",
            self.pid, self.name, self.state, self.ppid
        )
    }
}

/// Lists processes for a message: `12 (echo, S, parent 1), ...`.
pub fn describe(processes: &[ServiceProcess]) -> String {
    if processes.is_empty() {
        return "none".to_owned();
    }
    processes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The processes of one service: those whose environment holds
/// [`MARKER_VAR`] with this census's marker.
#[derive(Debug)]
pub struct Census {
    marker: String,
    /// Every process seen alive, with its name: the ones to reap once they
    /// are zombies of this process.
    seen: Mutex<BTreeMap<u32, String>>,
}

impl Default for Census {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `/proc/<pid>/stat`: the process as a [`ServiceProcess`].
fn stat(pid: u32) -> Option<ServiceProcess> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (3), ppid (4), ... starttime (22).
    Some(ServiceProcess {
        pid,
        state: fields.first()?.to_string(),
        ppid: fields.get(1)?.parse().ok()?,
        started: fields.get(19)?.parse().ok()?,
        name,
    })
}

pub(crate) fn all_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .collect()
}

/// True if the environment of `pid` holds `entry` (`VAR=value`).
fn environ_holds(pid: u32, entry: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|environ| environ.split(|b| *b == 0).any(|e| e == entry))
        .unwrap_or(false)
}

impl Census {
    /// A census with a marker no other service has (this process's pid, a
    /// counter and the time).
    pub fn new() -> Census {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Census {
            marker: format!(
                "{}-{}-{nanos}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ),
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// The marker: the value of [`MARKER_VAR`] to start the service with.
    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// `(MARKER_VAR, marker)`, for a service's environment.
    pub fn env(&self) -> (&'static str, &str) {
        (MARKER_VAR, &self.marker)
    }

    fn entry(&self) -> Vec<u8> {
        format!("{MARKER_VAR}={}", self.marker).into_bytes()
    }

    /// True if `pid` is a live process of this service.
    pub fn owns(&self, pid: u32) -> bool {
        stat(pid).is_some_and(|p| p.state != "Z" && p.state != "X")
            && environ_holds(pid, &self.entry())
    }

    /// The live processes of the service, oldest first. Reaps the ones
    /// seen alive before that are now zombies of this process.
    pub fn processes(&self) -> Vec<ServiceProcess> {
        self.reap_seen();
        let entry = self.entry();
        let mut found: Vec<ServiceProcess> = all_pids()
            .into_iter()
            .filter(|&pid| environ_holds(pid, &entry))
            .filter_map(stat)
            .filter(|p| p.state != "Z" && p.state != "X")
            .collect();
        found.sort_by_key(|p| (p.started, p.pid));
        let mut seen = lock(&self.seen);
        for p in &found {
            seen.insert(p.pid, p.name.clone());
        }
        found
    }

    /// The live generations (every process but the spawners), oldest
    /// first.
    pub fn generations(&self) -> Vec<ServiceProcess> {
        self.processes()
            .into_iter()
            .filter(|p| !p.is_spawner())
            .collect()
    }

    /// The live spawners.
    pub fn spawners(&self) -> Vec<ServiceProcess> {
        self.processes()
            .into_iter()
            .filter(ServiceProcess::is_spawner)
            .collect()
    }

    /// Zombies whose parent is a live process of the service: children it
    /// does not reap.
    pub fn zombies(&self) -> Vec<ServiceProcess> {
        let parents: Vec<u32> = self.processes().iter().map(|p| p.pid).collect();
        all_pids()
            .into_iter()
            .filter_map(stat)
            .filter(|p| p.state == "Z" && parents.contains(&p.ppid))
            .collect()
    }

    /// Waits until no process of the service is alive; the ones still
    /// alive at `timeout` otherwise.
    pub fn wait_gone(&self, timeout: Duration) -> Result<(), Vec<ServiceProcess>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = self.processes();
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(left);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until no live process of the service has a zombie child; the
    /// zombies left at `timeout` otherwise (a child that has just exited
    /// is a zombie until its parent reaps it, a moment later).
    pub fn wait_no_zombies(&self, timeout: Duration) -> Result<(), Vec<ServiceProcess>> {
        let deadline = Instant::now() + timeout;
        loop {
            let zombies = self.zombies();
            if zombies.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(zombies);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` to `pid` if it is a live process of this service;
    /// true if it was sent.
    pub fn signal(&self, pid: u32, signal: Signal) -> bool {
        self.owns(pid) && kill(Pid::from_raw(pid as i32), signal).is_ok()
    }

    /// SIGKILLs every live process of the service until none is left (a
    /// spawner may start a generation meanwhile), and reaps those that
    /// were this process's children. For clean-up: only this service's
    /// processes are signalled.
    pub fn kill_all(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = self.processes();
            if left.is_empty() || Instant::now() >= deadline {
                break;
            }
            for p in &left {
                self.signal(p.pid, Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.reap_seen();
    }

    /// Reaps the processes seen alive before that are now zombies of this
    /// process (re-parented here, as to a subreaper, or started here).
    fn reap_seen(&self) {
        let me = std::process::id();
        let mut seen = lock(&self.seen);
        seen.retain(|&pid, name| match stat(pid) {
            Some(p) if p.name == *name => {
                if p.state == "Z" && p.ppid == me {
                    let _ = waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG));
                    false
                } else {
                    true
                }
            }
            // Gone (reaped by its parent), or the pid belongs to another
            // process now.
            _ => false,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn finds_marked_processes_and_their_children_only() {
        let census = Census::new();
        let other = Census::new();
        assert_ne!(census.marker(), other.marker());
        let (key, value) = census.env();
        // A shell (marked) whose child (marked by inheritance) outlives it.
        let mut sh = Command::new("sh")
            .arg("-c")
            .arg("sleep 30 & echo $!; wait")
            .env(key, value)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(sh.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let sleep: u32 = line.trim().parse().unwrap();
        let pids: Vec<u32> = census.processes().iter().map(|p| p.pid).collect();
        assert_eq!(pids, vec![sh.id(), sleep]);
        assert!(other.processes().is_empty());
        assert!(census.owns(sleep));
        assert!(!other.owns(sleep));
        assert!(!other.signal(sleep, Signal::SIGKILL));
        census.kill_all();
        assert!(census.wait_gone(Duration::from_secs(10)).is_ok());
        assert!(!census.owns(sleep));
        // Reaped by kill_all, or now.
        let _ = sh.wait();
    }
}
