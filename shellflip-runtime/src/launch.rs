//! How a next generation is launched: the executable path resolved once at
//! start-up, the arguments, the one inherited descriptor, and the text that
//! says how a process ended.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::process::{Child, Command};

use crate::channel::ENV_HANDOVER_FD;
use crate::fd;

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
}

impl Launch {
    /// Resolves the executable path from `argv[0]` (made absolute against
    /// the start-up directory, or looked up in `PATH`), without resolving
    /// symlinks — so a deploy that swaps a symlink or renames a new build
    /// over the path starts the new build. Falls back to `/proc/self/exe`.
    pub(crate) fn resolve() -> Self {
        let mut argv = std::env::args_os();
        let arg0 = argv.next().unwrap_or_default();
        let args: Vec<OsString> = argv.collect();
        let exe = resolve_exe(&arg0)
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| PathBuf::from(&arg0));
        Launch { exe, arg0, args }
    }
}

fn resolve_exe(arg0: &OsString) -> Option<PathBuf> {
    let path = Path::new(arg0);
    if arg0.is_empty() {
        return None;
    }
    let candidate = if path.components().count() > 1 || path.is_absolute() {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir().ok()?.join(path)
        }
    } else {
        let search = std::env::var_os("PATH")?;
        std::env::split_paths(&search)
            .map(|dir| dir.join(path))
            .find(|p| p.is_file())?
    };
    candidate.is_file().then_some(candidate)
}

/// How the handover channel reaches the new process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChannelInheritance {
    /// Close-on-exec is cleared in the child, between `fork` and `exec`: the
    /// only safe way in a multi-threaded process, where another thread may
    /// fork meanwhile.
    ClearInChild,
    /// The caller already cleared close-on-exec on `channel` and no other
    /// thread of the process can fork before it is closed (the spawner).
    /// Without a `pre_exec` step, std spawns with `posix_spawn` (vfork-like:
    /// no copy of the page tables).
    AlreadyInheritable,
}

/// Starts `launch` as a new generation whose handover channel is `channel`
/// (which stays open in the new process only). Used by the spawner and by
/// inline spawning.
pub(crate) async fn spawn_next_process(
    launch: &Launch,
    channel: &OwnedFd,
    inheritance: ChannelInheritance,
) -> std::io::Result<Child> {
    let mut command = Command::new(&launch.exe);
    command
        .arg0(&launch.arg0)
        .args(&launch.args)
        .env(ENV_HANDOVER_FD, channel.as_raw_fd().to_string())
        .kill_on_drop(false);
    for var in SOCKET_ACTIVATION_VARS {
        command.env_remove(var);
    }
    if inheritance == ChannelInheritance::ClearInChild {
        fd::inherit_in_child(&mut command, channel.as_raw_fd());
    }
    spawn_retrying_busy(&mut command).await
}

/// Spawns `command`, retrying for up to a second while the executable is
/// busy (ETXTBSY): a deploy that has just written the new build may still
/// hold it open for writing, or another process forked meanwhile may.
async fn spawn_retrying_busy(command: &mut Command) -> std::io::Result<Child> {
    let mut attempts = 0;
    loop {
        match command.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && attempts < 50 => {
                attempts += 1;
                tracing::debug!(
                    attempts,
                    "the executable is busy (being written?); retrying"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            result => return result,
        }
    }
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
                let core = if status.core_dumped() {
                    " (core dumped)"
                } else {
                    ""
                };
                format!("was killed by signal {name}{core}")
            } else {
                format!("ended with {status}")
            }
        }
    }
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
