//! The keeper: what stays of the first process when the service runs as
//! PID 1 of a container, or under an init that exits with its child
//! (`tini`, `docker --init`, `dumb-init`).
//!
//! Why: at a restart the old generation exits after its drain. As PID 1
//! that ends the PID namespace, and every later generation with it; under
//! `tini --` or `dumb-init --`, the init exits with its direct child and
//! the container stops. So `run` keeps the original process as a keeper
//! and runs generation 1 as its child. The keeper:
//!
//! - has no Tokio runtime and runs none of the service's code: a `poll`
//!   loop over a signalfd, a private notify socket and a pidfd;
//! - is a child subreaper (and, as PID 1, the namespace's reaper): every
//!   generation whose spawner is gone, and every orphan, is re-parented to
//!   it, and it reaps them all;
//! - learns the current main pid the way systemd does: generation 1 is its
//!   child, and each generation's notifications (`MAINPID=`, from the
//!   generation handing over or taking the service back) reach it on a
//!   private abstract socket it gives them as `NOTIFY_SOCKET`. Only
//!   processes of its own tree are believed (`SCM_CREDENTIALS`, checked
//!   against `/proc`). When the keeper itself runs under a service manager
//!   (`NOTIFY_SOCKET` was set), every notification is passed on to it —
//!   descriptors for the fd store included — without `MAINPID=`: to that
//!   manager the keeper is the service's main process;
//! - forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and
//!   SIGWINCH (so the restart signal too) to the current main pid;
//! - ends when the service is over: when the current main pid has exited
//!   and no generation took the service back (`MAINPID=` within
//!   [`ROLLBACK_WINDOW`], as a generation on probation does when its
//!   successor dies) — at once if the keeper passed a stop (SIGTERM,
//!   SIGINT) on: after a stop nothing takes the service back. It then forwards SIGTERM to what is left (an older
//!   generation still draining finishes its drain; anything else stops),
//!   waits for it up to the drain timeout plus [`EXIT_MARGIN`], kills what
//!   still runs, reaps everything and exits with the last main pid's exit
//!   code (128 + the signal number if a signal killed it). A main pid that
//!   exits before its spawner is reaped by that spawner, which reports its
//!   status to the keeper (`X_SHELLFLIP_EXITED=`, see `notify`); a spawner that exits first
//!   leaves it to the keeper, the subreaper. Only if neither happens (the
//!   spawner killed between the two) is the code 1.
//!
//! It is not a supervisor: it never restarts a crashed service. That is
//! the container runtime's job (`restart: always`, a Deployment).

use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

mod notify;

pub(crate) use notify::{exit_code, report_exit};
use notify::{parse_exit_report, Setup};

use crate::config::{Config, ConfigError, KeeperMode, ENV_KEEPER};
use crate::fd::{self, Forked};
use crate::systemd;

/// The signals the keeper passes on to the current main pid.
const FORWARDED: [Signal; 7] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// After the main pid exits, how long a generation that is still alive has
/// to take the service back (`MAINPID=`) before the keeper ends the
/// service. A generation whose successor dies during the probation does so
/// within milliseconds.
pub(crate) const ROLLBACK_WINDOW: Duration = Duration::from_secs(2);

/// After the stop is forwarded to what is left, how long beyond the drain
/// timeout the keeper waits before it kills it.
pub(crate) const EXIT_MARGIN: Duration = Duration::from_secs(5);

/// The parents that exit when their direct child exits: under them the
/// keeper is on in `auto` mode.
const MINIMAL_INITS: [&str; 4] = ["tini", "docker-init", "dumb-init", "catatonit"];

/// Which role this process has after [`start`].
#[derive(Debug)]
pub(crate) enum Role {
    /// Carry on as the service (no keeper, or the keeper's child).
    Service,
    /// This process was the keeper; the service is over: exit with this.
    KeeperDone(ExitCode),
}

/// Becomes the keeper if `SHELLFLIP_KEEPER` (default `auto`: when PID 1 or
/// under a minimal init) asks for one: forks generation 1, which returns
/// [`Role::Service`], and runs the keeper's loop in this process until the
/// service is over. Call it first thing in `run`, while the process has a
/// single thread.
///
/// A malformed `SHELLFLIP_KEEPER` is an error. If the keeper cannot be set
/// up (the process already runs threads, no socket), this process runs the
/// service itself, with a warning on stderr.
pub(crate) fn start(config: &Config) -> Result<Role, ConfigError> {
    if std::env::var_os(crate::channel::ENV_HANDOVER_FD).is_some() {
        return Ok(Role::Service); // a new generation: never a keeper
    }
    let mode =
        std::env::var_os(ENV_KEEPER).map(|value| KeeperMode::parse_env(&value.to_string_lossy()));
    let wanted = match mode.transpose()?.unwrap_or(KeeperMode::Auto) {
        KeeperMode::On => true,
        KeeperMode::Off => false,
        KeeperMode::Auto => std::process::id() == 1 || parent_is_minimal_init(),
    };
    if !wanted {
        return Ok(Role::Service);
    }
    // The drain timeout bounds the wait for what is left at the end; a
    // malformed override is the service's to report.
    let drain_timeout = config
        .clone()
        .apply_env()
        .map(|c| c.drain_timeout)
        .unwrap_or(config.drain_timeout);
    let keeper_pid = std::process::id();
    let started = Setup::new().and_then(|setup| {
        let forked = fd::fork_first_generation().inspect_err(|_| setup.restore_mask())?;
        Ok((setup, forked))
    });
    match started {
        Ok((setup, Forked::Service)) => {
            setup.into_service(keeper_pid);
            Ok(Role::Service)
        }
        Ok((setup, Forked::Keeper(first))) => {
            let first = first.as_raw() as u32;
            let keeper = Keeper {
                setup,
                main_pid: first,
                main_pidfd: fd::pidfd_open(first).ok(),
                main_exit: MainExit::Running,
                stopping: false,
                drain_timeout,
            };
            Ok(Role::KeeperDone(ExitCode::from(keeper.run())))
        }
        Err(e) => {
            eprintln!(
                "shellflip: could not start the keeper ({e}); this process runs the service itself"
            );
            Ok(Role::Service)
        }
    }
}

/// True when the parent is one of [`MINIMAL_INITS`].
fn parent_is_minimal_init() -> bool {
    let parent = nix::unistd::getppid();
    std::fs::read_to_string(format!("/proc/{parent}/comm"))
        .map(|comm| MINIMAL_INITS.contains(&comm.trim()))
        .unwrap_or(false)
}

/// The keeper's loop. See the module docs.
struct Keeper {
    setup: Setup,
    /// The process the keeper follows: the service's main process.
    main_pid: u32,
    /// Readable once it exits (whoever its parent is).
    main_pidfd: Option<OwnedFd>,
    main_exit: MainExit,
    /// A stop (SIGTERM, SIGINT) was passed on: once the main pid exits no
    /// generation may take the service back, so the keeper does not wait
    /// for one.
    stopping: bool,
    drain_timeout: Duration,
}

/// What the keeper knows of the main pid's end.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MainExit {
    Running,
    /// Exited, reaped by another process (its spawner), whose report of
    /// the status (`X_SHELLFLIP_EXITED=`) has not come.
    Unreported,
    /// Exited with this code.
    Code(u8),
}

impl MainExit {
    fn has_exited(self) -> bool {
        self != MainExit::Running
    }
}

/// What one wait of the loop saw.
#[derive(Default)]
struct Events {
    signals: bool,
    notify: bool,
    main_gone: bool,
}

impl Keeper {
    /// Runs until the service is over; returns the exit code.
    fn run(mut self) -> u8 {
        loop {
            // Serving: until the main pid exits.
            while !self.main_exit.has_exited() {
                self.handle(&self.wait(None), false);
            }
            // The main pid is gone: does another generation take the
            // service back? Never after a stop.
            let deadline = Instant::now() + ROLLBACK_WINDOW;
            while self.main_exit.has_exited() && !self.stopping && !self.children().is_empty() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                self.handle(&self.wait(Some(left)), false);
            }
            if self.main_exit.has_exited() {
                break;
            }
        }
        self.finish();
        // A spawner that reaped the main pid reported its status before it
        // exited: it is in the socket by now.
        self.read_notifications(true);
        // The main pid's exit code, or 1 when it is not known.
        match self.main_exit {
            MainExit::Code(code) => code,
            MainExit::Running | MainExit::Unreported => 1,
        }
    }

    /// Waits for a signal, a notification or the main pid's exit.
    fn wait(&self, timeout: Option<Duration>) -> Events {
        let mut fds = vec![
            PollFd::new(self.setup.signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.setup.socket.as_fd(), PollFlags::POLLIN),
        ];
        if let (MainExit::Running, Some(pidfd)) = (self.main_exit, &self.main_pidfd) {
            fds.push(PollFd::new(pidfd.as_fd(), PollFlags::POLLIN));
        }
        // At least a millisecond: a shorter wait would spin.
        let timeout = timeout.map_or(PollTimeout::NONE, |t| {
            PollTimeout::try_from(t.max(Duration::from_millis(1))).unwrap_or(PollTimeout::MAX)
        });
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => return Events::default(),
            Err(e) => {
                eprintln!("shellflip keeper: poll failed: {e}");
                // Nothing sensible to wait on: look at everything once.
                return Events {
                    signals: true,
                    notify: true,
                    main_gone: false,
                };
            }
        }
        let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
        Events {
            signals: ready(&fds[0]),
            notify: ready(&fds[1]),
            main_gone: fds.get(2).is_some_and(ready),
        }
    }

    /// Takes what `events` saw (`over`: see [`read_notifications`](Self::read_notifications)).
    fn handle(&mut self, events: &Events, over: bool) {
        if events.notify {
            self.read_notifications(over);
        }
        if events.signals {
            self.read_signals();
        }
        if events.main_gone {
            // Reap it if it is our child; otherwise its parent (a spawner)
            // did, and its status is lost to us.
            self.reap();
            if self.main_exit == MainExit::Running {
                // Its spawner reaped it and reports its status.
                self.main_exit = MainExit::Unreported;
            }
        }
    }

    fn read_signals(&mut self) {
        loop {
            match self.setup.signals.read_signal() {
                Ok(Some(info)) => {
                    let number = info.ssi_signo as i32;
                    if number == Signal::SIGCHLD as i32 {
                        self.reap();
                    } else if !self.main_exit.has_exited() {
                        if number == Signal::SIGTERM as i32 || number == Signal::SIGINT as i32 {
                            self.stopping = true;
                        }
                        self.forward(number);
                    } else {
                        // The service is ending: pass it on to everything
                        // left.
                        self.signal_children(number);
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    eprintln!("shellflip keeper: could not read a signal: {e}");
                    return;
                }
            }
        }
    }

    /// Sends `signal` to the main pid (through its pidfd when there is one:
    /// never to another process that reused the number).
    fn forward(&self, signal: i32) {
        let sent = match &self.main_pidfd {
            Some(pidfd) => fd::pidfd_send_signal(pidfd.as_fd(), signal),
            None => Signal::try_from(signal)
                .and_then(|s| nix::sys::signal::kill(Pid::from_raw(self.main_pid as i32), s))
                .map_err(std::io::Error::from),
        };
        if let Err(e) = sent {
            eprintln!(
                "shellflip keeper: could not forward signal {signal} to pid {}: {e}",
                self.main_pid
            );
        }
    }

    /// Reaps every exited child, noting the main pid's status.
    fn reap(&mut self) {
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => {
                    if let (Some(pid), Some(code)) = (status.pid(), exit_code(&status)) {
                        self.exit_learned(pid.as_raw() as u32, code);
                    }
                }
            }
        }
    }

    /// `pid` ended with exit `code`: reaped by this keeper, or by a spawner
    /// that reported it. Taken also after the exit was seen: a spawner that
    /// exits before it reaped the main pid leaves it to this keeper (the
    /// subreaper).
    fn exit_learned(&mut self, pid: u32, code: u8) {
        if pid == self.main_pid && !matches!(self.main_exit, MainExit::Code(_)) {
            self.main_exit = MainExit::Code(code);
        }
    }

    /// Applies the exit reports in a datagram from `uid` if the keeper
    /// believes that sender; true if the datagram held any (such a datagram
    /// is never passed on).
    fn exit_reports_in(&mut self, uid: u32, text: &str) -> bool {
        // Believed: its own user or root (a spawner may have exited since it
        // sent the report, so it cannot be checked as a process of the service).
        let trusted = uid == 0 || uid == nix::unistd::geteuid().as_raw();
        let mut any = false;
        for (pid, code) in text.lines().filter_map(parse_exit_report) {
            any = true;
            if trusted {
                self.exit_learned(pid, code);
            }
        }
        any
    }

    /// Reads what is queued on the notify socket. Once the service is over
    /// (`over`), only exit reports are acted on: nothing is passed on any
    /// more.
    fn read_notifications(&mut self, over: bool) {
        let mut buf = vec![0u8; 8192];
        loop {
            let datagram = match fd::recv_datagram(self.setup.socket.as_fd(), &mut buf) {
                Ok(datagram) => datagram,
                Err(e) if over || e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    eprintln!("shellflip keeper: dropped a notification: {e}");
                    continue;
                }
            };
            let Some((sender, uid)) = datagram.sender else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..datagram.len]).into_owned();
            if self.exit_reports_in(uid, &text) || over {
                continue;
            }
            if sender <= 0 || !self.is_ours(sender as u32) {
                eprintln!("shellflip keeper: ignored a notification from pid {sender}, which is not a process of this service");
                continue;
            }
            let mut passed_on = String::new();
            for line in text.lines() {
                match line.strip_prefix("MAINPID=") {
                    Some(pid) => self.main_pid_is(pid.trim()),
                    None => {
                        passed_on.push_str(line);
                        passed_on.push('\n');
                    }
                }
            }
            if let Some(upstream) = &self.setup.upstream {
                if !passed_on.is_empty() {
                    let fds: Vec<_> = datagram.fds.iter().map(|fd| fd.as_fd()).collect();
                    if let Err(e) = systemd::send_datagram(upstream, passed_on.as_bytes(), &fds) {
                        eprintln!("shellflip keeper: could not pass a notification on to the service manager: {e}");
                    }
                }
            }
        }
    }

    /// `MAINPID=<pid>` from a process of the service.
    fn main_pid_is(&mut self, pid: &str) {
        let Ok(pid) = pid.parse::<u32>() else {
            return;
        };
        if pid == self.main_pid && !self.main_exit.has_exited() {
            return;
        }
        if self.stopping && self.main_exit.has_exited() {
            eprintln!("shellflip keeper: ignored MAINPID={pid}: the service was stopped");
            return;
        }
        if pid <= 1 || !self.is_ours(pid) {
            eprintln!("shellflip keeper: ignored MAINPID={pid}: not a process of this service");
            return;
        }
        self.main_pid = pid;
        self.main_pidfd = fd::pidfd_open(pid).ok();
        self.main_exit = MainExit::Running;
    }

    /// True when `pid` is this keeper's descendant (walking up `/proc`).
    fn is_ours(&self, pid: u32) -> bool {
        let mut current = pid;
        for _ in 0..64 {
            match parent_of(current) {
                Some(parent) if parent == std::process::id() => return true,
                Some(parent) if parent > 1 => current = parent,
                _ => return false,
            }
        }
        false
    }

    fn children(&self) -> Vec<u32> {
        std::fs::read_to_string(format!("/proc/self/task/{}/children", std::process::id()))
            .map(|text| {
                text.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn signal_children(&self, signal: i32) {
        let Ok(signal) = Signal::try_from(signal) else {
            return;
        };
        for child in self.children() {
            let _ = nix::sys::signal::kill(Pid::from_raw(child as i32), signal);
        }
    }

    /// The service is over: a stop for what is left, bounded; then kill,
    /// reap, done.
    fn finish(&mut self) {
        self.reap();
        if self.children().is_empty() {
            return;
        }
        self.signal_children(Signal::SIGTERM as i32);
        let deadline = Instant::now() + self.drain_timeout + EXIT_MARGIN;
        while !self.children().is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let left_over = self.children();
                eprintln!(
                    "shellflip keeper: killing what is left of the service after the drain timeout: {left_over:?}"
                );
                self.signal_children(Signal::SIGKILL as i32);
                break;
            }
            self.handle(&self.wait(Some(left.min(Duration::from_millis(500)))), true);
            self.reap();
        }
        // Whatever the last kill left: reap until no child is left, bounded.
        // What the wait saw is taken in (a SIGCHLD left unread in the
        // signalfd would end every later wait at once: a busy loop).
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.children().is_empty() && Instant::now() < deadline {
            self.handle(&self.wait(Some(Duration::from_millis(50))), true);
            self.reap();
        }
    }
}

/// The parent of `pid`, from `/proc/<pid>/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: the fields
    // after the last ')' are `state ppid ...`.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_of_this_process_is_read_from_proc() {
        assert_eq!(
            parent_of(std::process::id()),
            Some(nix::unistd::getppid().as_raw() as u32)
        );
        assert_eq!(parent_of(u32::MAX), None);
    }

    #[test]
    fn keeper_mode_values() {
        assert_eq!(KeeperMode::parse_env("1"), Ok(KeeperMode::On));
        assert_eq!(KeeperMode::parse_env("off"), Ok(KeeperMode::Off));
        assert_eq!(KeeperMode::parse_env("AUTO"), Ok(KeeperMode::Auto));
        assert!(KeeperMode::parse_env("sometimes").is_err());
    }
}
