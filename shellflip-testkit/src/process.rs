//! Processes, seen through `/proc` and `waitpid`: who is whose parent, the
//! spawner of a generation, zombies, liveness, reaping.
//!
//! A test process that calls [`become_subreaper`] inherits every generation
//! of the services it starts once the generation before it (and that one's
//! spawner) has exited, and must reap them: [`wait_exit`] does, for one
//! pid.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// The process name shellflip gives the spawner it forks at start-up.
pub const SPAWNER_NAME: &str = "shellflip-spawn";

/// Makes this process the reaper of orphaned descendants (once).
///
/// # Panics
///
/// If the kernel refuses `PR_SET_CHILD_SUBREAPER`.
pub fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        nix::sys::prctl::set_child_subreaper(true)
            .unwrap_or_else(|e| panic!("PR_SET_CHILD_SUBREAPER: {e}"));
    });
}

/// Waits until `pid` has exited and reaps it if it is a child of this
/// process. True if it exited within `timeout`.
///
/// A pid that is not (yet) a child — its parent, the previous generation's
/// spawner, is still alive — counts as exited once it is gone from `/proc`.
///
/// # Panics
///
/// On a `waitpid` error other than "not a child".
pub fn wait_exit(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let pid = Pid::from_raw(pid as i32);
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(_) => return true,
            Err(nix::errno::Errno::ECHILD) => {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    return true;
                }
            }
            Err(e) => panic!("waitpid {pid}: {e}"),
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Copies the executable `from` to `to` in a `cp` process of its own.
///
/// A copy written by this process would hold `to` open for writing in
/// every process another test thread forks meanwhile (until that one
/// execs), and an exec of `to` then fails with ETXTBSY. The runtime and
/// [`spawn_retrying_busy`] retry that, but `unshare`, systemd or a shell
/// script exec'ing the copy do not: with `cp` doing the writing, no
/// descriptor open for writing on `to` ever exists in this process.
///
/// # Errors
///
/// If `cp` cannot be started or fails.
pub fn copy_executable(from: &Path, to: &Path) -> std::io::Result<()> {
    let status = Command::new("cp")
        .arg("--")
        .arg(from)
        .arg(to)
        .stdin(Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "cp {} {}: {status}",
            from.display(),
            to.display()
        )))
    }
}

/// Spawns `cmd`, retrying while the kernel says the executable is busy: a
/// freshly copied binary is briefly held open for writing by any process
/// another thread forks meanwhile (ETXTBSY).
///
/// # Panics
///
/// If the spawn fails for another reason, or stays busy for a second.
pub fn spawn_retrying_busy(cmd: &mut Command) -> Child {
    let mut attempts = 0;
    loop {
        match cmd.spawn() {
            Ok(child) => return child,
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && attempts < 100 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("spawn {cmd:?}: {e}"),
        }
    }
}

/// Sends `signal` to `pid` (a process the caller started).
///
/// # Panics
///
/// If the signal cannot be sent (no such process, no permission).
pub fn kill_pid(pid: u32, signal: Signal) {
    kill(Pid::from_raw(pid as i32), signal).unwrap_or_else(|e| panic!("kill -{signal} {pid}: {e}"));
}

/// Name, state and parent of a process, from `/proc/<pid>/stat`.
fn stat_of(pid: u32) -> Option<(String, String, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name is in parentheses and may itself contain ')' or spaces.
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.to_owned();
    let ppid = fields.next()?.parse().ok()?;
    Some((comm, state, ppid))
}

fn all_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .collect()
}

/// The parent of `pid`, if it exists.
pub fn parent_of(pid: u32) -> Option<u32> {
    stat_of(pid).map(|(_, _, ppid)| ppid)
}

/// Children of `pid`: (pid, name, state letter of `/proc/<pid>/stat`).
pub fn children_of(pid: u32) -> Vec<(u32, String, String)> {
    all_pids()
        .into_iter()
        .filter_map(|child| {
            let (comm, state, ppid) = stat_of(child)?;
            (ppid == pid).then_some((child, comm, state))
        })
        .collect()
}

/// The spawner of the generation `pid`: its live child named
/// [`SPAWNER_NAME`].
pub fn spawner_of(pid: u32) -> Option<u32> {
    children_of(pid)
        .into_iter()
        .find(|(_, comm, state)| comm == SPAWNER_NAME && state != "Z")
        .map(|(child, _, _)| child)
}

/// Zombies among the descendants of `pid` (children not reaped by their
/// parent): the generation's own children, and those of its spawner.
pub fn zombies_of(pid: u32) -> Vec<u32> {
    let mut zombies = Vec::new();
    let mut parents = vec![pid];
    while let Some(parent) = parents.pop() {
        for (child, _, state) in children_of(parent) {
            if state == "Z" {
                zombies.push(child);
            } else {
                parents.push(child);
            }
        }
    }
    zombies
}

/// Reaps the spawners that ended up as this process's children (as a
/// subreaper: a spawner outlives its generation by a moment) and exited.
pub fn reap_exited_spawners() {
    reap_exited_children_named(SPAWNER_NAME);
}

/// Reaps the children of this process named `name` that exited: the
/// generations of services that ended up here (as a subreaper) and died
/// before anyone saw them alive. Only for a test binary whose every child
/// of that name is a service's: their exit status is lost.
pub fn reap_exited_children_named(name: &str) {
    let me = std::process::id();
    for (child, comm, state) in children_of(me) {
        if comm == name && state == "Z" {
            let _ = waitpid(Pid::from_raw(child as i32), Some(WaitPidFlag::WNOHANG));
        }
    }
}

/// True if `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    match stat_of(pid) {
        Some((_, state, _)) => state != "Z" && state != "X",
        None => false,
    }
}

/// Resident memory (`VmRSS`) of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The number of open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Copies this test executable (large: its copy takes a while) and has
    /// `sh` (which does not retry) exec the copy, `rounds` times, while
    /// other threads keep forking; the failures.
    fn exec_fresh_copies(copy: fn(&Path, &Path) -> std::io::Result<()>, rounds: u32) -> u32 {
        let me = std::env::current_exe().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let forkers: Vec<_> = (0..3)
            .map(|_| {
                let stop = std::sync::Arc::clone(&stop);
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let _ = Command::new("true").status();
                    }
                })
            })
            .collect();
        let mut failed = 0;
        for round in 0..rounds {
            let exe = dir.path().join(format!("copy-{round}"));
            copy(&me, &exe).unwrap();
            let status = Command::new("sh")
                .arg("-c")
                .arg(format!("'{}' --list >/dev/null", exe.display()))
                .status()
                .unwrap();
            let _ = std::fs::remove_file(&exe);
            if !status.success() {
                failed += 1;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for forker in forkers {
            forker.join().unwrap();
        }
        failed
    }

    #[test]
    fn a_copied_executable_is_never_busy_for_an_exec_that_does_not_retry() {
        assert_eq!(exec_fresh_copies(copy_executable, 20), 0);
    }

    #[test]
    #[ignore = "shows the failure copy_executable avoids; timing-dependent"]
    fn a_copy_written_here_can_be_busy_for_an_exec_that_does_not_retry() {
        let copy = |from: &Path, to: &Path| std::fs::copy(from, to).map(|_| ());
        assert!(exec_fresh_copies(copy, 20) > 0);
    }

    #[test]
    fn this_process_is_seen_through_proc() {
        let me = std::process::id();
        assert!(is_alive(me));
        assert_eq!(parent_of(me), Some(nix::unistd::getppid().as_raw() as u32));
        assert!(rss_kib(me).is_some_and(|kib| kib > 0));
        assert!(fd_count(me).is_some_and(|n| n >= 3));
        assert_eq!(spawner_of(me), None);
    }

    #[test]
    fn a_child_is_listed_reaped_and_then_gone() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let me = std::process::id();
        assert!(children_of(me)
            .iter()
            .any(|(p, name, _)| *p == pid && name == "sleep"));
        assert!(!wait_exit(pid, Duration::from_millis(20)));
        kill_pid(pid, Signal::SIGKILL);
        assert!(wait_exit(pid, Duration::from_secs(10)));
        assert!(!is_alive(pid));
        // Reaped by wait_exit: the handle has nothing left to wait for.
        assert!(child.try_wait().is_err());
    }
}
