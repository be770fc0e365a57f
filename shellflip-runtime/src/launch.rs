//! How a next generation is launched: the executable path resolved once at
//! start-up, the arguments, the one inherited descriptor, and the text that
//! says how a process ended.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::process::{Child, Command};

use crate::channel::ENV_HANDOVER_FD;
use crate::fd;
use crate::memory;
use crate::shutdown;

/// Variables of systemd socket activation; they describe this process's
/// descriptors, so a new generation must not read them.
pub(crate) const SOCKET_ACTIVATION_VARS: [&str; 3] = ["LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID"];

/// How the next generation is started: the executable path resolved once at
/// start-up, and this process's arguments.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    pub exe: PathBuf,
    pub arg0: OsString,
    pub args: Vec<OsString>,
    /// The restart signal: blocked in the new process until it has its
    /// handler.
    pub restart_signal: shellflip_settings::Signal,
}

impl Launch {
    /// Resolves the executable path from `argv[0]` (made absolute against
    /// the start-up directory, or looked up in `PATH`), without resolving
    /// symlinks — so a deploy that swaps a symlink or renames a new build
    /// over the path starts the new build. Falls back to `/proc/self/exe`.
    pub(crate) fn resolve(restart_signal: shellflip_settings::Signal) -> Self {
        let mut argv = std::env::args_os();
        let arg0 = argv.next().unwrap_or_default();
        let args: Vec<OsString> = argv.collect();
        let exe = resolve_exe(&arg0)
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| PathBuf::from(&arg0));
        Launch {
            exe,
            arg0,
            args,
            restart_signal,
        }
    }

    /// Starts the next generation with `posix_spawn` (no copy of the page
    /// tables): for the spawner, which has a single thread and has cleared
    /// close-on-exec on `channel` for this spawn only.
    ///
    /// The new process starts in a process group of its own (so that a
    /// failed restart can kill everything it started) with the restart
    /// signal blocked (sent to the whole group or cgroup
    /// before the new generation has its handler, it waits instead of
    /// killing it; the runtime unblocks it once handled) and default
    /// dispositions for `defaults` (the spawner's own handlers). Its heap
    /// variables are [`memory::successor_heap_env_here`]'s for `large_heap`.
    pub(crate) async fn spawn_posix(
        &self,
        channel: &OwnedFd,
        defaults: &[Signal],
        large_heap: bool,
    ) -> std::io::Result<u32> {
        retry_busy(|| self.try_spawn_posix(channel, defaults, large_heap)).await
    }

    fn try_spawn_posix(
        &self,
        channel: &OwnedFd,
        defaults: &[Signal],
        large_heap: bool,
    ) -> std::io::Result<u32> {
        use nix::spawn::{posix_spawn, PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags};
        use nix::sys::signal::SigSet;
        use std::os::unix::ffi::OsStrExt;

        let c_string = |bytes: &[u8]| {
            std::ffi::CString::new(bytes).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "an argument or environment variable holds a NUL byte",
                )
            })
        };
        let argv = std::iter::once(&self.arg0)
            .chain(&self.args)
            .map(|arg| c_string(arg.as_bytes()))
            .collect::<std::io::Result<Vec<_>>>()?;
        let heap = memory::successor_heap_env_here(large_heap);
        let mut envp = Vec::new();
        for (key, value) in std::env::vars_os() {
            if key == ENV_HANDOVER_FD
                || SOCKET_ACTIVATION_VARS.iter().any(|v| key == *v)
                || heap.iter().any(|(name, _)| key == *name)
            {
                continue;
            }
            envp.push(c_string(
                &[key.as_bytes(), b"=", value.as_bytes()].concat(),
            )?);
        }
        for (name, value) in heap {
            if let Some(value) = value {
                envp.push(c_string(format!("{name}={value}").as_bytes())?);
            }
        }
        envp.push(c_string(
            format!("{ENV_HANDOVER_FD}={}", channel.as_raw_fd()).as_bytes(),
        )?);

        let mut attr = PosixSpawnAttr::init()?;
        attr.set_pgroup(nix::unistd::Pid::from_raw(0))?;
        attr.set_sigmask(&shutdown::signal_set(self.restart_signal))?;
        attr.set_sigdefault(&defaults.iter().copied().collect::<SigSet>())?;
        attr.set_flags(
            PosixSpawnFlags::POSIX_SPAWN_SETPGROUP
                | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK
                | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
        )?;
        let actions = PosixSpawnFileActions::init()?;
        let pid = posix_spawn(self.exe.as_path(), &actions, &attr, &argv, &envp)?;
        crate::profile::mark(crate::profile::Hop::Spawned);
        Ok(pid.as_raw() as u32)
    }

    /// Starts the next generation from this (multi-threaded) process: like
    /// [`spawn_posix`](Self::spawn_posix), but `channel` is made
    /// inheritable in the child only, between `fork` and `exec`, where the
    /// signal mask is set too.
    pub(crate) async fn spawn_inline(
        &self,
        channel: &OwnedFd,
        large_heap: bool,
    ) -> std::io::Result<Child> {
        let mut command = Command::new(&self.exe);
        command
            .arg0(&self.arg0)
            .args(&self.args)
            .env(ENV_HANDOVER_FD, channel.as_raw_fd().to_string())
            .process_group(0)
            .kill_on_drop(false);
        for var in SOCKET_ACTIVATION_VARS {
            command.env_remove(var);
        }
        for (name, value) in memory::successor_heap_env_here(large_heap) {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        fd::prepare_inline_child(
            &mut command,
            channel.as_raw_fd(),
            shutdown::signal_set(self.restart_signal),
        );
        retry_busy(|| command.spawn()).await
    }
}

fn resolve_exe(arg0: &OsString) -> Option<PathBuf> {
    let path = Path::new(arg0);
    if arg0.is_empty() {
        return None;
    }
    let candidate = if path.is_absolute() {
        path.to_path_buf()
    } else if path.components().count() > 1 {
        std::env::current_dir().ok()?.join(path)
    } else {
        let search = std::env::var_os("PATH")?;
        std::env::split_paths(&search)
            .map(|dir| dir.join(path))
            .find(|p| p.is_file())?
    };
    candidate.is_file().then_some(candidate)
}

/// Runs `spawn` again while the executable is busy being written
/// (ETXTBSY), up to [`BUSY_RETRIES`] times.
async fn retry_busy<T>(mut spawn: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    let mut attempts = 0;
    loop {
        match spawn() {
            Err(e)
                if e.kind() == std::io::ErrorKind::ExecutableFileBusy
                    && attempts < BUSY_RETRIES =>
            {
                attempts += 1;
                tracing::debug!(
                    attempts,
                    "the executable is busy (being written?); retrying"
                );
                tokio::time::sleep(BUSY_PAUSE).await;
            }
            result => return result,
        }
    }
}

/// A build busy being written (ETXTBSY) is retried this often...
const BUSY_RETRIES: u32 = 50;
/// ...this far apart: up to a second in all.
const BUSY_PAUSE: Duration = Duration::from_millis(20);

/// Sends SIGKILL to the process group led by `pid` (a new generation, and
/// whatever it started before it took over), or to `pid` alone if it left
/// that group.
pub(crate) fn kill_group(pid: u32) -> std::io::Result<()> {
    match kill_group_only(pid) {
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
            Ok(nix::sys::signal::kill(to_pid(pid)?, Signal::SIGKILL)?)
        }
        killed => killed,
    }
}

/// Sends SIGKILL to the process group `pgid`, never to a process by pid
/// (whose pid may have been reused once it was reaped).
pub(crate) fn kill_group_only(pgid: u32) -> std::io::Result<()> {
    Ok(nix::sys::signal::killpg(to_pid(pgid)?, Signal::SIGKILL)?)
}

/// `pid` as nix takes it.
fn to_pid(pid: u32) -> std::io::Result<nix::unistd::Pid> {
    let raw = i32::try_from(pid).map_err(|_| std::io::Error::other("not a pid"))?;
    Ok(nix::unistd::Pid::from_raw(raw))
}

/// "exited with status 3", "was killed by signal SIGSEGV (core dumped)".
pub(crate) fn describe_status(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Err(e) => format!("ended in an unknown way ({e})"),
        Ok(status) => {
            if let Some(code) = status.code() {
                format!("exited with status {code}")
            } else if let Some(signal) = status.signal() {
                let name = Signal::try_from(signal)
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_else(|_| format!("signal {signal}"));
                let core = status.core_dumped().then_some(" (core dumped)");
                let core = core.unwrap_or_default();
                format!("was killed by signal {name}{core}")
            } else {
                format!("ended with {status}")
            }
        }
    }
}

/// Moves this process into the first generation's process group, where a
/// terminal's Ctrl-C and signals to the group reach the generation that
/// serves. A new generation starts in a group of its own, so that a failed
/// restart can kill everything it started; a group that no longer exists
/// (every earlier member exited) is not an error.
pub(crate) fn join_process_group(group: u32) {
    let Ok(group) = to_pid(group) else {
        return;
    };
    if nix::unistd::getpgrp() == group {
        return;
    }
    match nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), group) {
        Ok(()) => tracing::debug!(group = group.as_raw(), "joined the service's process group"),
        Err(e) => {
            tracing::debug!(group = group.as_raw(), error = %e, "could not join the service's process group; staying in this one")
        }
    }
}

/// Watches a process that is not necessarily this one's child: tells when
/// it has exited (a pidfd where the kernel has them, else polling).
#[derive(Debug)]
pub(crate) struct ExitWatch {
    /// The watched pid.
    pub pid: u32,
    pidfd: Option<tokio::io::unix::AsyncFd<OwnedFd>>,
}

/// How often a process is polled where there is no pidfd.
const EXIT_POLL: Duration = Duration::from_millis(20);

impl ExitWatch {
    /// Starts watching `pid`. Inside the runtime. A process that is already
    /// gone is seen as exited.
    pub(crate) fn new(pid: u32) -> Self {
        let pidfd = match fd::pidfd_open(pid) {
            Ok(pidfd) => fd::register_async(pidfd).ok(),
            Err(e) => {
                tracing::debug!(pid, error = %e, "no pidfd; polling the process instead");
                None
            }
        };
        ExitWatch { pid, pidfd }
    }

    /// Resolves once the process has exited (reaped or not).
    pub(crate) async fn exited(&self) {
        match &self.pidfd {
            Some(pidfd) => {
                // Readable for good once the process has exited.
                let _ = pidfd.readable().await;
            }
            None => {
                while !process_gone(self.pid) {
                    tokio::time::sleep(EXIT_POLL).await;
                }
            }
        }
    }

    /// True if the process exits within `within`.
    pub(crate) async fn exits_within(&self, within: Duration) -> bool {
        tokio::time::timeout(within, self.exited()).await.is_ok()
    }

    /// True if the process has exited.
    pub(crate) fn has_exited(&self) -> bool {
        match &self.pidfd {
            // Readable (POLLIN) once the process has exited.
            Some(pidfd) => {
                let mut fds = [nix::poll::PollFd::new(
                    pidfd.get_ref().as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).is_ok_and(|n| n > 0)
            }
            None => process_gone(self.pid),
        }
    }

    /// Sends SIGKILL to the process (through its pidfd where there is one,
    /// so never to another process that reused the pid).
    pub(crate) fn kill(&self) -> std::io::Result<()> {
        match &self.pidfd {
            Some(pidfd) => fd::pidfd_send_signal(pidfd.get_ref().as_fd(), libc::SIGKILL),
            None => nix::sys::signal::kill(to_pid(self.pid)?, Signal::SIGKILL).map_err(Into::into),
        }
    }
}

/// The fields of `/proc/<pid>/stat` after the process's name (state, ppid,
/// pgrp, ...); `None` once it is gone.
fn stat_after_name(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat.rsplit_once(')')?.1.to_owned())
}

/// The process group of `pid` (`None` once it is gone).
fn process_group(pid: u32) -> Option<u32> {
    stat_after_name(pid)?
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// Watches every process of the process group `pgid` but its leader, as
/// they are now: after [`kill_group`], the processes that are still
/// exiting (a killed generation's spawner, what it started). Each is
/// watched through a pidfd opened while it is still in the group, so a
/// reused pid is never waited for.
pub(crate) fn watch_group_members(pgid: u32) -> Vec<ExitWatch> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != pgid && process_group(pid) == Some(pgid))
        .map(ExitWatch::new)
        // Still in the group once watched: the pidfd names that process.
        .filter(|watch| process_group(watch.pid) == Some(pgid))
        .collect()
}

/// How long the members of a killed process group are waited for: SIGKILL
/// ends them in milliseconds, unless a process is stuck in the kernel.
const KILLED_GROUP_EXIT: Duration = Duration::from_secs(5);

/// Waits (up to [`KILLED_GROUP_EXIT`]) until every watched member of a
/// killed group has exited, so that whoever waits for a killed generation
/// (a `stop`, a rollback) sees nothing of it left.
pub(crate) async fn wait_killed_group(members: &[ExitWatch]) {
    let all = async {
        for member in members {
            member.exited().await;
        }
    };
    if tokio::time::timeout(KILLED_GROUP_EXIT, all).await.is_err() {
        let left: Vec<u32> = members
            .iter()
            .filter(|m| !m.has_exited())
            .map(|member| member.pid)
            .collect();
        tracing::warn!(
            ?left,
            "processes of a killed generation had not exited after SIGKILL; going on"
        );
    }
}

/// True when `pid` names no process or a zombie.
fn process_gone(pid: u32) -> bool {
    let Ok(raw) = to_pid(pid) else {
        return true;
    };
    if nix::sys::signal::kill(raw, None) == Err(nix::errno::Errno::ESRCH) {
        return true;
    }
    // A zombie still answers kill(0): it has exited all the same.
    stat_after_name(pid).is_some_and(|rest| rest.split_whitespace().next() == Some("Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_described() {
        let exited = ExitStatus::from_raw(3 << 8);
        assert_eq!(describe_status(Ok(exited)), "exited with status 3");
        let killed = ExitStatus::from_raw(Signal::SIGKILL as i32);
        assert_eq!(describe_status(Ok(killed)), "was killed by signal SIGKILL");
    }

    #[tokio::test]
    async fn exit_watch_sees_a_child_exit_without_reaping_it() {
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", "read line"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let watch = ExitWatch::new(child.id().unwrap());
        assert!(!watch.exits_within(Duration::from_millis(50)).await);
        drop(child.stdin.take());
        assert!(watch.exits_within(Duration::from_secs(30)).await);
        child.wait().await.unwrap();
        assert!(process_gone(watch.pid));
    }

    #[tokio::test]
    async fn a_group_kill_reaches_what_the_new_generation_started() {
        // A shell (the group's leader) that started a grandchild without
        // exec, as a deploy wrapper does: both die.
        let mut leader = tokio::process::Command::new("sh")
            .args(["-c", "sleep 600 & echo $!; wait"])
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = tokio::io::BufReader::new(leader.stdout.take().unwrap());
        let mut line = String::new();
        tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line)
            .await
            .unwrap();
        let grandchild: u32 = line.trim().parse().unwrap();
        let watch = ExitWatch::new(grandchild);
        kill_group(leader.id().unwrap()).unwrap();
        assert!(leader.wait().await.unwrap().signal() == Some(libc::SIGKILL));
        assert!(watch.exits_within(Duration::from_secs(30)).await);
    }

    #[test]
    fn relative_arg0_is_made_absolute_without_resolving_symlinks() {
        let resolved = resolve_exe(&OsString::from("/bin/sh"));
        assert_eq!(resolved, Some(PathBuf::from("/bin/sh")));
        assert_eq!(resolve_exe(&OsString::from("")), None);
        assert_eq!(resolve_exe(&OsString::from("/no/such/binary")), None);
        let found = resolve_exe(&OsString::from("sh"));
        assert!(found.is_some_and(|p| p.is_absolute()));
    }
}
