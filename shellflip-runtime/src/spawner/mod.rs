//! The spawner: a small helper process, forked by [`run`](crate::run) at
//! start-up — before the Tokio runtime exists and before any of the
//! service's own code runs — that starts the next generation when the
//! service asks for it.
//!
//! With it, the serving process itself never calls `fork` or `execve`
//! after start-up, so a service may lock itself down (a seccomp filter
//! forbidding them, dropped capabilities) and still restart. The spawner is
//! a copy of the service as it was at start-up: same environment, working
//! directory, credentials, limits and standard streams, and nothing else (it
//! closes every other descriptor). Each generation starts its own spawner.
//!
//! The service and its spawner talk over a `SOCK_SEQPACKET` socketpair, one
//! MessagePack message per packet: the service sends `Spawn` (with the new
//! generation's end of the handover channel attached, SCM_RIGHTS); the
//! spawner answers `Spawned`/`SpawnFailed` and later reports `Exited` with
//! the wait status, as it is the new generation's parent and reaps it.
//!
//! The spawner exits when the service's end of the socket closes: when the
//! service exits, or as soon as its restart committed ([`Spawner::release`]),
//! so that the new generation is re-parented at once to the service manager
//! (systemd, a container's init), which then sees it die if it ever does.
//!
//! Killing a new generation that failed does not need the spawner: it leads
//! its own process group, which the old generation kills directly
//! ([`launch::kill_group`]), and its exit is watched through a pidfd if the
//! spawner is gone.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};

use nix::sys::signal::Signal;
use nix::sys::socket::{shutdown, Shutdown};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::process::Child;
use tokio::sync::{oneshot, watch};

mod helper;

pub(crate) use helper::{start, SpawnerProcess};

use crate::error::RestartError;
use crate::fd;
use crate::launch::{self, ExitWatch, Launch};
use crate::sync::lock;

/// The spawner's process name (`comm`, as `ps` and `top` show it).
pub const PROCESS_NAME: &str = "shellflip-spawn";

/// Largest message either side sends (they are a few dozen bytes).
const MAX_MESSAGE_BYTES: usize = 4096;

/// The signals the spawner survives (see `serve`), reset to their default
/// in the generations it starts.
const SURVIVED: [Signal; 5] = [
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGTERM,
    Signal::SIGINT,
];

/// From the service to its spawner.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Request {
    /// Start the next generation. Carries exactly one descriptor: the new
    /// generation's end of the handover channel. `large_heap`: the service's
    /// heap is large, so the new generation's goes on huge pages (see
    /// [`memory::successor_heap_env`](crate::memory::successor_heap_env)).
    Spawn { large_heap: bool },
}

/// From the spawner to the service.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Event {
    /// The next generation runs (its `exec` succeeded).
    Spawned { pid: u32 },
    /// It could not be started; `errno` when the system said why.
    SpawnFailed { errno: Option<i32>, message: String },
    /// A generation it started has exited and was reaped (`None`: waiting
    /// for it failed, which the kernel never does for a child).
    Exited { pid: u32, wait_status: Option<i32> },
}

fn encode<T: Serialize>(message: &T) -> io::Result<Vec<u8>> {
    rmp_serde::to_vec(message).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> io::Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

async fn send(
    socket: &AsyncFd<OwnedFd>,
    bytes: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> io::Result<()> {
    socket
        .async_io(Interest::WRITABLE, |inner| {
            fd::send_with_fds(inner.as_fd(), bytes, fds)
        })
        .await
        .map(|_| ())
}

async fn recv(socket: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    socket
        .async_io(Interest::READABLE, |inner| {
            fd::recv_with_fds(inner.as_fd(), buf)
        })
        .await
}

// ---------------------------------------------------------------------------
// The service's side.

type SpawnReply = Result<(u32, watch::Receiver<Option<Option<i32>>>), io::Error>;

#[derive(Debug, Default)]
struct Routes {
    /// The caller of the spawn request in flight.
    pending: Option<oneshot::Sender<SpawnReply>>,
    /// Exit watchers of started generations, by pid.
    exits: HashMap<u32, watch::Sender<Option<Option<i32>>>>,
    /// Set once the spawner is gone (and reaped): how it ended.
    gone: Option<String>,
}

/// The service's handle on its spawner.
#[derive(Debug)]
pub(crate) struct SpawnerClient {
    pid: u32,
    socket: Arc<AsyncFd<OwnedFd>>,
    routes: Arc<Mutex<Routes>>,
    /// Becomes true once `routes.gone` is set.
    gone_rx: watch::Receiver<bool>,
}

impl SpawnerClient {
    /// Connects to the spawner forked at start-up and starts reading its
    /// events. Must be called inside the runtime.
    pub(crate) fn connect(process: SpawnerProcess) -> io::Result<Arc<Self>> {
        let pid = process.pid.as_raw() as u32;
        let socket = Arc::new(fd::register_async(process.socket)?);
        let routes: Arc<Mutex<Routes>> = Arc::default();
        let (gone_tx, gone_rx) = watch::channel(false);
        tokio::spawn(read_events(
            Arc::clone(&socket),
            Arc::clone(&routes),
            process.pid,
            gone_tx,
        ));
        Ok(Arc::new(SpawnerClient {
            pid,
            socket,
            routes,
            gone_rx,
        }))
    }

    /// The error once the spawner is found gone: waits (briefly) until its
    /// end was recorded, so the error says how it ended.
    async fn gone(&self) -> RestartError {
        self.gone_within(std::time::Duration::from_secs(2)).await;
        let reason = lock(&self.routes).gone.clone();
        RestartError::SpawnerGone {
            pid: self.pid,
            reason: reason.unwrap_or_else(|| "it closed its socket".to_owned()),
        }
    }

    /// True once the spawner is gone (and its end recorded), waiting up to
    /// `within` for that.
    async fn gone_within(&self, within: std::time::Duration) -> bool {
        let mut gone = self.gone_rx.clone();
        let waited = tokio::time::timeout(within, gone.wait_for(|gone| *gone)).await;
        waited.is_ok()
    }

    /// Asks the spawner to start the next generation with `channel` as its
    /// end of the handover channel (one at a time: restarts never overlap,
    /// and one request is pending at most); the system's refusal (exec failed:
    /// missing file, permissions...) is made an error by `spawn_error`.
    pub(crate) async fn spawn(
        self: &Arc<Self>,
        channel: OwnedFd,
        large_heap: bool,
        spawn_error: impl Fn(io::Error) -> RestartError,
    ) -> Result<SpawnedGeneration, RestartError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let already_gone = {
            let mut routes = lock(&self.routes);
            if routes.gone.is_none() {
                routes.pending = Some(reply_tx);
            }
            routes.gone.is_some()
        };
        if already_gone {
            return Err(self.gone().await);
        }
        let request = encode(&Request::Spawn { large_heap }).map_err(&spawn_error)?;
        if send(&self.socket, &request, &[channel.as_fd()])
            .await
            .is_err()
        {
            lock(&self.routes).pending = None;
            return Err(self.gone().await);
        }
        drop(channel);
        match reply_rx.await {
            Ok(Ok((pid, exit))) => Ok(SpawnedGeneration {
                pid,
                exit,
                watch: ExitWatch::new(pid),
            }),
            Ok(Err(e)) => Err(spawn_error(e)),
            Err(_) => Err(self.gone().await),
        }
    }
}

/// Routes the spawner's events to whoever waits for them; when it is gone,
/// reaps it and records how it ended.
async fn read_events(
    socket: Arc<AsyncFd<OwnedFd>>,
    routes: Arc<Mutex<Routes>>,
    pid: Pid,
    gone_tx: watch::Sender<bool>,
) {
    let mut buf = vec![0u8; MAX_MESSAGE_BYTES];
    loop {
        let event = match recv(&socket, &mut buf).await {
            Ok((0, _)) | Err(_) => break,
            Ok((len, _fds)) => match decode::<Event>(&buf[..len]) {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable message from the spawner; ignored");
                    continue;
                }
            },
        };
        let mut routes = lock(&routes);
        match event {
            Event::Spawned { pid } => {
                let (exit_tx, exit_rx) = watch::channel(None);
                routes.exits.insert(pid, exit_tx);
                if let Some(pending) = routes.pending.take() {
                    let _ = pending.send(Ok((pid, exit_rx)));
                }
            }
            Event::SpawnFailed { errno, message } => {
                let error =
                    errno.map_or_else(|| io::Error::other(message), io::Error::from_raw_os_error);
                if let Some(pending) = routes.pending.take() {
                    let _ = pending.send(Err(error));
                }
            }
            Event::Exited { pid, wait_status } => {
                if let Some(exit) = routes.exits.remove(&pid) {
                    let _ = exit.send(Some(wait_status));
                }
            }
        }
    }
    // Its socket closed: it has exited (or is exiting). Reap it — it is this
    // process's child — and keep how it ended for the errors to come.
    let status = tokio::task::spawn_blocking(move || waitpid(pid, None))
        .await
        .ok()
        .and_then(Result::ok);
    let (reason, released) = match status {
        Some(WaitStatus::Exited(_, 0)) => ("it exited with status 0".to_owned(), true),
        Some(WaitStatus::Exited(_, code)) => (format!("it exited with status {code}"), false),
        Some(WaitStatus::Signaled(_, signal, _)) => (
            format!("it was killed by signal {}", signal.as_str()),
            false,
        ),
        _ => ("it ended in an unknown way".to_owned(), false),
    };
    if released {
        tracing::debug!(spawner_pid = pid.as_raw(), "the spawner exited");
    } else {
        tracing::error!(
            spawner_pid = pid.as_raw(),
            reason,
            "the spawner is gone; this generation cannot start a new one"
        );
    }
    *lock(&routes) = Routes {
        gone: Some(reason),
        ..Routes::default()
    };
    let _ = gone_tx.send(true);
}

/// A generation started by the spawner.
#[derive(Debug)]
pub(crate) struct SpawnedGeneration {
    pid: u32,
    /// Its wait status, from the spawner that reaps it.
    exit: watch::Receiver<Option<Option<i32>>>,
    /// Its exit, seen directly (when the spawner is gone).
    watch: ExitWatch,
}

impl SpawnedGeneration {
    /// Waits until it has exited: with its status, from the spawner; if the
    /// spawner is gone (it was re-parented), without.
    async fn wait(&mut self) -> io::Result<ExitStatus> {
        let exit = self.exit.wait_for(Option::is_some).await;
        let Ok(status) = exit.map(|status| status.flatten()) else {
            self.watch.exited().await;
            return Err(io::Error::other(
                "its status is unknown: the spawner, its parent, is gone",
            ));
        };
        status
            .map(ExitStatus::from_raw)
            .ok_or_else(|| io::Error::other("the spawner could not wait for it"))
    }
}

// ---------------------------------------------------------------------------
// What the parent side uses: whoever starts the next generation.

/// What starts new generations, and how: the spawner forked at start-up,
/// or this process itself.
#[derive(Debug, Clone)]
pub(crate) struct Spawner {
    /// How a new generation is started.
    pub launch: Launch,
    /// The spawner process; else the reason it is not, and this process
    /// spawns, with `fork` + `execve`.
    pub process: Result<Arc<SpawnerClient>, String>,
}

impl Spawner {
    /// "the spawner process (pid 123)", "this process (SHELLFLIP_SPAWNER=inline)".
    pub(crate) fn describe(&self) -> String {
        match &self.process {
            Ok(client) => format!("the spawner process (pid {})", client.pid),
            Err(reason) => format!("this process ({reason})"),
        }
    }

    /// The spawner process's pid, while there is one.
    pub(crate) fn pid(&self) -> Option<u32> {
        match &self.process {
            // Until it has exited.
            Ok(client) if !*client.gone_rx.borrow() => Some(client.pid),
            _ => None,
        }
    }

    /// Lets the spawner process go once this generation has handed over:
    /// the new generation is re-parented to the service manager, which then
    /// watches it directly. (The spawner exits when its socket closes; the
    /// generations it started are re-parented to the nearest subreaper.)
    pub(crate) fn release(&self) {
        let Ok(client) = &self.process else {
            return;
        };
        if let Err(e) = shutdown(client.socket.get_ref().as_fd().as_raw_fd(), Shutdown::Both) {
            tracing::debug!(error = %e, "could not release the spawner (gone already?)");
        }
    }

    /// Lets the spawner process go and waits (up to `within`) until it has
    /// exited and was reaped: at this generation's exit, so that no process
    /// of the service outlives the generations.
    pub(crate) async fn release_and_wait(&self, within: std::time::Duration) {
        self.release();
        if let Ok(client) = &self.process {
            if !client.gone_within(within).await {
                tracing::warn!(
                    pid = client.pid,
                    "the spawner did not exit when released; exiting anyway"
                );
            }
        }
    }

    /// Starts `launch` with `channel` as the new process's end of the
    /// handover channel.
    pub(crate) async fn spawn(&self, channel: OwnedFd) -> Result<NextProcess, RestartError> {
        let spawn_error = |source: io::Error| RestartError::Spawn {
            exe: self.launch.exe.clone(),
            source,
        };
        let large_heap = crate::memory::heap_is_large();
        if large_heap {
            tracing::debug!(
                "this generation's heap is large: the next one's goes on transparent huge pages \
                 (glibc.malloc.hugetlb=1 added to GLIBC_TUNABLES unless the service set it)"
            );
        }
        let parent = match &self.process {
            Err(_) => {
                let child = self
                    .launch
                    .spawn_inline(&channel, large_heap)
                    .await
                    .map_err(spawn_error)?;
                let pid = child.id().ok_or_else(|| {
                    spawn_error(io::Error::other("the new process was reaped at once"))
                })?;
                NextParent::Inline { pid, child }
            }
            Ok(client) => {
                NextParent::Spawned(client.spawn(channel, large_heap, spawn_error).await?)
            }
        };
        Ok(NextProcess {
            parent,
            killed_group: Vec::new(),
        })
    }
}

/// The next generation's process, whoever its parent is.
#[derive(Debug)]
pub(crate) struct NextProcess {
    parent: NextParent,
    /// Once it was killed: the other processes of its group (its spawner,
    /// what it started), which its exit waits for too.
    killed_group: Vec<ExitWatch>,
}

#[derive(Debug)]
enum NextParent {
    /// A child of this process.
    Inline { pid: u32, child: Child },
    /// A child of the spawner.
    Spawned(SpawnedGeneration),
}

impl NextProcess {
    /// Once it has exited by itself: kills what is left of its process
    /// group (its spawner, what it started) and waits for that, as for a
    /// killed generation. The group is signalled only if members were found
    /// in it: while one lives, the group's id (its pid) is not reused.
    pub(crate) async fn end_what_it_left(&mut self) {
        let pid = self.pid();
        let members = launch::watch_group_members(pid);
        if members.is_empty() {
            return;
        }
        if let Err(e) = launch::kill_group_only(pid) {
            tracing::debug!(error = %e, pid, "could not kill what the exited new generation left");
        }
        launch::wait_killed_group(&members).await;
    }

    /// True once it has exited (reaped or not), without waiting.
    pub(crate) fn has_exited(&mut self) -> bool {
        match &mut self.parent {
            NextParent::Inline { child, .. } => !matches!(child.try_wait(), Ok(None)),
            NextParent::Spawned(spawned) => spawned.watch.has_exited(),
        }
    }
}

/// What `parent`'s decision table needs of the new process: the seam
/// through which it is tested with a fake.
pub(crate) trait Successor {
    /// Its pid (for messages).
    fn pid(&self) -> u32;
    /// Waits until it has exited and was reaped.
    fn wait(&mut self) -> impl Future<Output = io::Result<ExitStatus>> + Send;
    /// Sends it SIGKILL.
    fn start_kill(&mut self) -> io::Result<()>;
}

impl Successor for NextProcess {
    /// Its pid.
    fn pid(&self) -> u32 {
        match &self.parent {
            NextParent::Inline { pid, .. } => *pid,
            NextParent::Spawned(spawned) => spawned.pid,
        }
    }

    /// Waits until it has exited (and was reaped, where this process or
    /// its spawner is the parent); once it was killed, also until the rest
    /// of its process group has exited, so that nothing of a killed
    /// generation outlives the wait (its spawner, killed with it, may take
    /// longer to exit than it did).
    async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = match &mut self.parent {
            NextParent::Inline { child, .. } => child.wait().await,
            NextParent::Spawned(spawned) => spawned.wait().await,
        };
        launch::wait_killed_group(&self.killed_group).await;
        status
    }

    /// Sends SIGKILL to it and to everything it started (its process
    /// group), and notes the group's other processes for [`wait`](Self::wait).
    fn start_kill(&mut self) -> io::Result<()> {
        let pid = self.pid();
        let killed = launch::kill_group(pid);
        if self.killed_group.is_empty() {
            self.killed_group = launch::watch_group_members(pid);
        }
        killed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::describe_status;

    #[test]
    fn messages_round_trip() {
        let bytes = encode(&Request::Spawn { large_heap: true }).unwrap();
        assert_eq!(
            decode::<Request>(&bytes).unwrap(),
            Request::Spawn { large_heap: true }
        );
        for event in [
            Event::Spawned { pid: 7 },
            Event::SpawnFailed {
                errno: Some(2),
                message: "No such file".to_owned(),
            },
            Event::Exited {
                pid: 7,
                wait_status: Some(3 << 8),
            },
        ] {
            let bytes = encode(&event).unwrap();
            assert!(bytes.len() < MAX_MESSAGE_BYTES);
            assert_eq!(decode::<Event>(&bytes).unwrap(), event);
        }
    }

    /// A process group like a new generation's: a leader (`sh`) and two
    /// members it started, ready once the leader printed a line.
    async fn group_of_three() -> NextProcess {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", "sleep 60 & sleep 60 & echo started; wait"])
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        tokio::io::BufReader::new(stdout)
            .read_line(&mut line)
            .await
            .unwrap();
        assert_eq!(line.trim(), "started");
        let pid = child.id().unwrap();
        NextProcess {
            parent: NextParent::Inline { pid, child },
            killed_group: Vec::new(),
        }
    }

    /// A kill notes the group's other processes (a killed generation's
    /// spawner and children); the wait then finds every one exited.
    #[tokio::test]
    async fn a_killed_generation_is_waited_for_with_its_whole_group() {
        let mut process = group_of_three().await;
        let members = launch::watch_group_members(process.pid());
        assert_eq!(members.len(), 2, "the two sleeps: {members:?}");
        process.start_kill().unwrap();
        let noted: Vec<u32> = process
            .killed_group
            .iter()
            .map(|member| member.pid)
            .collect();
        let mut expected: Vec<u32> = members.iter().map(|member| member.pid).collect();
        expected.sort_unstable();
        let mut noted_sorted = noted.clone();
        noted_sorted.sort_unstable();
        assert_eq!(noted_sorted, expected);
        let status = process.wait().await.unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        for member in &members {
            assert!(member.has_exited(), "member {} still running", member.pid);
        }
    }

    /// The wait returns only once the noted members have exited, however
    /// long after the leader that is (here: a member ends 300 ms after
    /// the leader was reaped).
    #[tokio::test]
    async fn the_wait_for_a_killed_generation_outlasts_a_slow_member() {
        let mut slow = tokio::process::Command::new("sleep")
            .arg("60")
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let slow_pid = slow.id().unwrap();
        let mut process = group_of_three().await;
        process.start_kill().unwrap();
        process.killed_group.push(ExitWatch::new(slow_pid));
        let ends_later = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            slow.start_kill().unwrap();
            slow.wait().await.unwrap();
        });
        process.wait().await.unwrap();
        assert!(
            launch::ExitWatch::new(slow_pid).has_exited() || ends_later.is_finished(),
            "the wait returned while a noted member was still running"
        );
        ends_later.await.unwrap();
    }

    #[test]
    fn wait_statuses_are_rebuilt_as_the_kernel_writes_them() {
        // What spawn_and_watch sends for an exit code and a signal.
        assert_eq!(
            describe_status(Ok(ExitStatus::from_raw(3 << 8))),
            "exited with status 3"
        );
        assert_eq!(
            describe_status(Ok(ExitStatus::from_raw(Signal::SIGABRT as i32 | 0x80))),
            "was killed by signal SIGABRT (core dumped)"
        );
    }
}
