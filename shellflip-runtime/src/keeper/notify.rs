//! The keeper's notify socket and signal set-up, and the exit report a
//! spawner sends the keeper (see the parent module).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::wait::WaitStatus;

use super::FORWARDED;
use crate::config::ENV_KEEPER;
use crate::systemd::{self, NotifyTarget, ENV_LISTEN_PID, ENV_NOTIFY_SOCKET};

/// What the keeper opens before it forks generation 1.
pub(super) struct Setup {
    /// The signal mask before the keeper blocked its signals.
    pub(super) old_mask: SigSet,
    pub(super) signals: SignalFd,
    /// The private notify socket (abstract, SO_PASSCRED).
    pub(super) socket: UnixDatagram,
    /// Its abstract name.
    pub(super) name: String,
    /// The service manager's notify socket, if the keeper runs under one.
    pub(super) upstream: Option<NotifyTarget>,
}

impl Setup {
    pub(super) fn new() -> std::io::Result<Setup> {
        let upstream = std::env::var_os(ENV_NOTIFY_SOCKET)
            .and_then(|value| systemd::parse_notify_socket(&value).ok());
        let mask: SigSet = FORWARDED.into_iter().chain([Signal::SIGCHLD]).collect();
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
        let old_mask = mask.thread_swap_mask(SigmaskHow::SIG_BLOCK)?;
        let name = format!(
            "shellflip-keeper/{}/{:016x}",
            std::process::id(),
            RandomState::new().build_hasher().finish()
        );
        let bound = SocketAddr::from_abstract_name(name.as_bytes())
            .and_then(|address| UnixDatagram::bind_addr(&address))
            .and_then(|socket| {
                socket.set_nonblocking(true)?;
                setsockopt(&socket, sockopt::PassCred, &true)?;
                Ok(socket)
            });
        let socket = bound.inspect_err(|_| {
            let _ = old_mask.thread_set_mask();
        })?;
        // Orphans of the service are re-parented here, not to the init
        // above (a no-op for PID 1, which gets them anyway).
        let _ = nix::sys::prctl::set_child_subreaper(true);
        Ok(Setup {
            old_mask,
            signals,
            socket,
            name,
            upstream,
        })
    }

    pub(super) fn restore_mask(&self) {
        let _ = self.old_mask.thread_set_mask();
    }

    /// In generation 1 (the forked copy): closes the keeper's descriptors,
    /// restores the signal mask, and points the service at the keeper.
    pub(super) fn into_service(self, keeper_pid: u32) {
        self.restore_mask();
        let name = self.name.clone();
        drop(self);
        std::env::set_var(ENV_NOTIFY_SOCKET, format!("@{name}"));
        // Socket activation meant for the keeper is this process's now.
        if std::env::var(ENV_LISTEN_PID).ok().as_deref() == Some(&keeper_pid.to_string()) {
            std::env::set_var(ENV_LISTEN_PID, std::process::id().to_string());
        }
        std::env::remove_var(ENV_KEEPER);
    }
}

/// The line a spawner sends to the keeper's notify socket when it reaped a
/// generation: `X_SHELLFLIP_EXITED=<pid> <code>`, the code as the keeper
/// reports it (128 + the signal number for a signal). A generation the
/// keeper follows as the main pid may be reaped by its spawner instead of
/// the keeper (it exits before its spawner does: stopped during its
/// probation, say); the keeper learns its status from this. Never passed on.
pub(crate) const EXIT_REPORT: &str = "X_SHELLFLIP_EXITED=";

/// The prefix of the keeper's notify socket name, as the service sees it
/// in `NOTIFY_SOCKET`.
const SOCKET_PREFIX: &str = "@shellflip-keeper/";

/// The exit code the keeper reports for a process that ended with
/// `status`: its own code, or 128 + the signal number for a signal.
pub(crate) fn exit_code(status: &WaitStatus) -> Option<u8> {
    match *status {
        WaitStatus::Exited(_, code) => Some((code & 0xff) as u8),
        WaitStatus::Signaled(_, signal, _) => Some(128u8.saturating_add(signal as i32 as u8)),
        _ => None,
    }
}

/// Tells the keeper, if this process runs under one, that `pid` was
/// reaped with exit `code` (see [`exit_code`]). Best effort: without the
/// report the keeper exits 1 for a main pid it could not reap.
pub(crate) fn report_exit(pid: u32, code: u8) {
    let Some(target) = std::env::var_os(ENV_NOTIFY_SOCKET)
        .filter(|value| value.to_string_lossy().starts_with(SOCKET_PREFIX))
        .and_then(|value| systemd::parse_notify_socket(&value).ok())
    else {
        return;
    };
    let _ = systemd::send_datagram(
        &target,
        format!("{EXIT_REPORT}{pid} {code}\n").as_bytes(),
        &[],
    );
}

/// `(pid, code)` from an [`EXIT_REPORT`] line.
pub(super) fn parse_exit_report(line: &str) -> Option<(u32, u8)> {
    let (pid, code) = line.strip_prefix(EXIT_REPORT)?.trim().split_once(' ')?;
    Some((pid.parse().ok()?, code.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_reports_are_parsed() {
        assert_eq!(parse_exit_report("X_SHELLFLIP_EXITED=42 0"), Some((42, 0)));
        assert_eq!(
            parse_exit_report("X_SHELLFLIP_EXITED=7 143"),
            Some((7, 143))
        );
        assert_eq!(parse_exit_report("X_SHELLFLIP_EXITED=7"), None);
        assert_eq!(parse_exit_report("READY=1"), None);
    }
}
