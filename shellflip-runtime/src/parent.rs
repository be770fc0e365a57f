//! The parent side of a restart: have the next generation started from the
//! executable path (by the spawner, or by this process itself in inline
//! mode), hand it the listeners and the state, and wait — bounded by the
//! ready timeout — for its report, its exit, or an abort.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::channel::{self, ChildMessage, HandoverHeader, Lineage, ENV_HANDOVER_FD};
use crate::error::RestartError;
use crate::fd;
use crate::spawner::{SpawnError, SpawnedGeneration, SpawnerClient};
use crate::state::EncodedState;

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

/// What a restart hands over.
pub(crate) struct Plan {
    pub generation: u64,
    pub fds: Vec<(String, OwnedFd)>,
    pub lineage: Lineage,
    pub ready_timeout: Duration,
    /// How long the new generation must stay alive after READY before the
    /// restart is declared a success (zero: at once).
    pub ready_grace: Duration,
}

/// How long each phase of a successful restart took, from its start.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PhaseTimings {
    /// Until the new process was spawned.
    pub spawned: Duration,
    /// Until the listeners and state were sent.
    pub handover_sent: Duration,
    /// Until it reported ready.
    pub ready: Duration,
}

/// A new generation that reported ready. Keep it until this process exits:
/// dropping `channel` tells the new generation that this one is gone.
#[derive(Debug)]
pub(crate) struct NewGeneration {
    pub pid: u32,
    pub generation: u64,
    pub timings: PhaseTimings,
    /// Not waited for: the new generation outlives this process.
    pub _child: NextProcess,
    pub _channel: UnixStream,
}

/// What starts new generations: the spawner forked at start-up, or this
/// process itself.
#[derive(Debug, Clone)]
pub(crate) enum Spawner {
    /// The spawner process (see [`crate::spawner`]).
    Process(Arc<SpawnerClient>),
    /// This process, with `fork` + `execve`; the reason it is not the
    /// spawner process.
    Inline { reason: String },
}

impl Spawner {
    /// "the spawner process (pid 123)", "this process (SHELLFLIP_SPAWNER=inline)".
    pub(crate) fn describe(&self) -> String {
        match self {
            Spawner::Process(client) => format!("the spawner process (pid {})", client.pid()),
            Spawner::Inline { reason } => format!("this process ({reason})"),
        }
    }

    /// The spawner process's pid, if there is one.
    pub(crate) fn pid(&self) -> Option<u32> {
        match self {
            Spawner::Process(client) => Some(client.pid()),
            Spawner::Inline { .. } => None,
        }
    }

    async fn spawn(&self, launch: &Launch, channel: OwnedFd) -> Result<NextProcess, RestartError> {
        let spawn_error = |source: std::io::Error| RestartError::Spawn {
            exe: launch.exe.clone(),
            source,
        };
        match self {
            Spawner::Inline { .. } => {
                let child = spawn_next_process(launch, &channel, ChannelInheritance::ClearInChild)
                    .await
                    .map_err(spawn_error)?;
                Ok(NextProcess::Inline(child))
            }
            Spawner::Process(client) => match client.spawn(channel).await {
                Ok(spawned) => Ok(NextProcess::Spawned(spawned)),
                Err(SpawnError::Spawn(source)) => Err(spawn_error(source)),
                Err(SpawnError::Gone { pid, reason }) => {
                    Err(RestartError::SpawnerGone { pid, reason })
                }
            },
        }
    }
}

/// The next generation's process, whoever its parent is.
#[derive(Debug)]
pub(crate) enum NextProcess {
    /// A child of this process.
    Inline(Child),
    /// A child of the spawner.
    Spawned(SpawnedGeneration),
}

impl NextProcess {
    fn pid(&self) -> u32 {
        match self {
            NextProcess::Inline(child) => child.id().unwrap_or(0),
            NextProcess::Spawned(spawned) => spawned.pid(),
        }
    }

    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match self {
            NextProcess::Inline(child) => child.wait().await,
            NextProcess::Spawned(spawned) => spawned.wait().await,
        }
    }

    fn start_kill(&mut self) -> std::io::Result<()> {
        match self {
            NextProcess::Inline(child) => child.start_kill(),
            NextProcess::Spawned(spawned) => spawned.start_kill(),
        }
    }
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

/// The encoded state to hand over, with the descriptors it holds (already
/// named for the handover).
pub(crate) type EncodedStateParts = Option<(EncodedState, Vec<(String, OwnedFd)>)>;

/// Spawns and supervises the next generation until it is ready or has
/// failed; on failure it is killed if needed and always reaped.
///
/// The spawn, the state's encoding (`encode_state`) and the handover run
/// at the same time: the handover goes into the socket's buffer before
/// the new process exists, so it never waits for it, and encoding a large
/// state overlaps with the new process's start-up.
pub(crate) async fn spawn_next(
    spawner: &Spawner,
    launch: &Launch,
    plan: Plan,
    encode_state: impl std::future::Future<Output = Result<EncodedStateParts, RestartError>>,
    abort: CancellationToken,
) -> Result<NewGeneration, RestartError> {
    let started = Instant::now();
    let began_unix_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let spawn_failed = |source: std::io::Error| RestartError::Spawn {
        exe: launch.exe.clone(),
        source,
    };
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| spawn_failed(e.into()))?;
    // Non-blocking on this end only (the flag belongs to each end's open
    // file): the new generation reads its end with blocking calls.
    let ours = StdUnixStream::from(ours);
    let stream = ours
        .set_nonblocking(true)
        .and_then(|()| UnixStream::from_std(ours))
        .map_err(spawn_failed)?;
    let Plan {
        generation,
        fds,
        lineage,
        ready_timeout,
        ready_grace,
    } = plan;

    let prepare = async {
        let (state, mut fds) = match encode_state.await.map_err(HandshakeError::Prepare)? {
            Some((state, state_fds)) => {
                let mut all = fds;
                all.extend(state_fds);
                (Some(state), all)
            }
            None => (None, fds),
        };
        let header = HandoverHeader {
            generation,
            fd_names: fds.iter().map(|(name, _)| name.clone()).collect(),
            state_len: state.as_ref().map(|s| s.len() as u64),
            lineage,
            restart_began_unix_us: began_unix_us,
        };
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|(_, fd)| fd.as_fd()).collect();
        channel::send_handover(&stream, &header, &borrowed, state.as_ref())
            .await
            .map_err(HandshakeError::Io)?;
        // The kernel holds the descriptors in flight; these copies can go.
        drop(borrowed);
        fds.clear();
        Ok::<_, HandshakeError>((header.fd_names.len(), header.state_len.unwrap_or(0)))
    };
    // Boxed, so it can be dropped (ending its borrow of the stream) before
    // the stream is kept for the new generation.
    let mut prepare = Box::pin(prepare);

    // Phase 1: the spawn, while the handover is prepared and sent.
    let mut prepared = None;
    let mut child = {
        let spawn = spawner.spawn(launch, theirs);
        tokio::pin!(spawn);
        loop {
            tokio::select! {
                biased;
                spawned = &mut spawn => break spawned?,
                done = &mut prepare, if prepared.is_none() => prepared = Some(done),
            }
        }
    };
    let pid = child.pid();
    let spawned = started.elapsed();
    tracing::debug!(
        pid,
        exe = %launch.exe.display(),
        spawn_ms = spawned.as_secs_f64() * 1000.0,
        "spawned the next generation"
    );
    let deadline = Instant::now() + ready_timeout;

    let handover_sent = std::sync::OnceLock::new();
    let decision = {
        let handshake = async {
            let outcome = match prepared.take() {
                Some(outcome) => outcome,
                None => prepare.as_mut().await,
            };
            let (fd_count, state_bytes) = outcome?;
            let sent = started.elapsed();
            let _ = handover_sent.set(sent);
            tracing::debug!(
                pid,
                fds = fd_count,
                state_bytes,
                handover_ms = sent.as_secs_f64() * 1000.0,
                "handover sent; waiting for the new generation's report"
            );
            channel::read_child_message(&stream)
                .await
                .map_err(HandshakeError::Io)
        };
        tokio::pin!(handshake);
        let first = tokio::select! {
            report = &mut handshake => First::Report(report),
            status = child.wait() => First::Exited(status),
            _ = tokio::time::sleep_until(deadline) => First::Timeout,
            _ = abort.cancelled() => First::Aborted,
        };
        match first {
            First::Exited(status) => {
                // A FAILED report may already sit in the socket buffer.
                let late = tokio::time::timeout(Duration::from_millis(200), &mut handshake).await;
                let status = describe_status(status);
                match late {
                    Ok(Ok(Some(ChildMessage::Failed { reason }))) => Decision::Failed(
                        RestartError::ChildFailed { pid, reason },
                    ),
                    _ => Decision::Failed(RestartError::ChildExited { pid, status }),
                }
            }
            First::Report(report) => match report {
                Ok(Some(ChildMessage::Ready)) if ready_grace.is_zero() => Decision::Ready,
                Ok(Some(ChildMessage::Ready)) => {
                    // Still serving here: give the new generation the grace
                    // period to prove it does not die right after READY.
                    tokio::select! {
                        status = child.wait() => Decision::Failed(RestartError::ChildExited {
                            pid,
                            status: format!(
                                "reported ready, then {} within the ready grace of {}",
                                describe_status(status),
                                humantime::format_duration(ready_grace)
                            ),
                        }),
                        _ = tokio::time::sleep(ready_grace) => Decision::Ready,
                        _ = abort.cancelled() => {
                            kill_and_reap(&mut child).await;
                            Decision::Failed(RestartError::Aborted { pid })
                        }
                    }
                }
                Ok(Some(ChildMessage::Failed { reason })) => {
                    let _ = reap_within(&mut child, Duration::from_secs(5)).await;
                    Decision::Failed(RestartError::ChildFailed { pid, reason })
                }
                Ok(None) => match reap_within(&mut child, Duration::from_secs(5)).await {
                    Some(status) => Decision::Failed(RestartError::ChildExited { pid, status }),
                    None => Decision::Failed(RestartError::Handover {
                        pid,
                        reason: "it closed the handover channel without a report and did not exit; it was killed".to_owned(),
                    }),
                },
                Err(HandshakeError::Prepare(error)) => {
                    kill_and_reap(&mut child).await;
                    Decision::Failed(error)
                }
                Err(HandshakeError::Io(e)) => match reap_within(&mut child, Duration::from_millis(500)).await {
                    Some(status) => Decision::Failed(RestartError::ChildExited { pid, status }),
                    None => Decision::Failed(RestartError::Handover {
                        pid,
                        reason: format!("{e}; it was killed"),
                    }),
                },
            },
            First::Timeout => {
                kill_and_reap(&mut child).await;
                Decision::Failed(RestartError::ReadyTimeout {
                    pid,
                    timeout: ready_timeout,
                })
            }
            First::Aborted => {
                kill_and_reap(&mut child).await;
                Decision::Failed(RestartError::Aborted { pid })
            }
        }
    };
    drop(prepare);
    match decision {
        Decision::Ready => {
            let timings = PhaseTimings {
                spawned,
                handover_sent: handover_sent.get().copied().unwrap_or_default(),
                ready: started.elapsed(),
            };
            tracing::debug!(
                pid,
                ready_ms = timings.ready.as_secs_f64() * 1000.0,
                "the new generation reported ready"
            );
            Ok(NewGeneration {
                pid,
                generation,
                timings,
                _child: child,
                _channel: stream,
            })
        }
        Decision::Failed(error) => {
            tracing::debug!(
                pid,
                elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                handover_sent = handover_sent.get().is_some(),
                reason = %error,
                "the new generation failed"
            );
            Err(error)
        }
    }
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

/// Why the handshake with the new generation did not produce a report.
enum HandshakeError {
    /// The state could not be encoded.
    Prepare(RestartError),
    /// The channel failed.
    Io(std::io::Error),
}

enum First {
    Report(Result<Option<ChildMessage>, HandshakeError>),
    Exited(std::io::Result<ExitStatus>),
    Timeout,
    Aborted,
}

enum Decision {
    Ready,
    Failed(RestartError),
}

/// Waits up to `grace` for the child to exit, then kills it; always reaps.
/// Returns how it ended if it exited by itself, `None` if it was killed.
async fn reap_within(child: &mut NextProcess, grace: Duration) -> Option<String> {
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => Some(describe_status(status)),
        Err(_) => {
            kill_and_reap(child).await;
            None
        }
    }
}

async fn kill_and_reap(child: &mut NextProcess) {
    if let Err(e) = child.start_kill() {
        tracing::debug!(error = %e, "kill of the new generation failed (already exited?)");
    }
    if let Err(e) = child.wait().await {
        tracing::warn!(error = %e, "could not reap the new generation");
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
        let killed = ExitStatus::from_raw(libc_sigkill());
        assert_eq!(describe_status(Ok(killed)), "was killed by signal SIGKILL");
    }

    fn libc_sigkill() -> i32 {
        Signal::SIGKILL as i32
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
