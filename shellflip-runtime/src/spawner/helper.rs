//! The spawner process itself: forked at start-up, it answers `Spawn`
//! requests until the service's end of its socket closes.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::mpsc;

use super::{
    decode, encode, recv, send, Event, Request, MAX_MESSAGE_BYTES, PROCESS_NAME, SURVIVED,
};
use crate::fd;
use crate::launch::{ExitWatch, Launch};

/// A spawner forked at start-up, before the runtime was built.
#[derive(Debug)]
pub(crate) struct SpawnerProcess {
    pub(super) pid: Pid,
    pub(super) socket: OwnedFd,
}

/// Forks the spawner. Must run before any thread is started (it fails,
/// forking nothing, otherwise).
pub(crate) fn start(launch: &Launch) -> io::Result<SpawnerProcess> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )?;
    let launch = launch.clone();
    // Named before the fork, so that the child has the spawner's name from
    // its first instant: named by itself, it shows under the service's name
    // until it first runs, which on a busy machine can be after this
    // generation's READY (and `ps`, a census, a test then see two of the
    // service). This process takes its own name back at once.
    let own_name = nix::sys::prctl::get_name().ok();
    if let Ok(name) = std::ffi::CString::new(PROCESS_NAME) {
        let _ = nix::sys::prctl::set_name(&name);
    }
    let forked = fd::fork_helper(theirs, move |socket| spawner_main(socket, launch));
    if let Some(own_name) = &own_name {
        let _ = nix::sys::prctl::set_name(own_name);
    }
    Ok(SpawnerProcess {
        pid: forked?,
        socket: ours,
    })
}

fn spawner_main(socket: OwnedFd, launch: Launch) -> i32 {
    // Not dumpable: the service (same user, its parent) can then neither
    // ptrace it nor write its memory through /proc, so a compromised
    // service that locked itself down cannot borrow the spawner's freedom
    // to run programs. Reset by execve: generations are unaffected.
    let _ = nix::sys::prctl::set_dumpable(false);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!(
                "shellflip: the spawner could not start its runtime: {e}; restarts will fail"
            );
            return 1;
        }
    };
    runtime.block_on(serve(socket, launch));
    0
}

/// Answers the service's requests until its end of the socket closes.
async fn serve(socket: OwnedFd, launch: Launch) {
    let Ok(socket) = fd::register_async(socket) else {
        return;
    };
    // Signals sent to the whole process group or cgroup reach the spawner
    // too: a restart signal (`kill -USR1 -PGID`), or the SIGTERM (SIGINT)
    // that systemd's KillMode=control-group (a terminal's Ctrl-C) sends
    // every process at a stop, while its generation may still be draining
    // and may still restart. It survives them all and exits only with its
    // generation (or when released). The generations it starts get the
    // default dispositions back (see `Launch::spawn_posix`).
    let _survive: Vec<_> = SURVIVED
        .iter()
        .filter_map(|signal| {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(*signal as i32))
                .ok()
        })
        .collect();
    let launch = Arc::new(launch);
    let spawning = Arc::new(tokio::sync::Mutex::new(()));
    let (events_tx, mut events_rx) = mpsc::unbounded_channel::<Event>();
    let mut buf = vec![0u8; MAX_MESSAGE_BYTES];
    loop {
        tokio::select! {
            received = recv(&socket, &mut buf) => {
                let (len, mut fds) = match received {
                    Ok((0, _)) | Err(_) => break, // the service is gone, or released us
                    Ok(message) => message,
                };
                match decode::<Request>(&buf[..len]) {
                    Ok(Request::Spawn { large_heap }) if fds.len() == 1 => {
                        crate::profile::mark(crate::profile::Hop::SpawnRead);
                        let channel = fds.remove(0);
                        tokio::spawn(spawn_and_watch(
                            Arc::clone(&launch),
                            Arc::clone(&spawning),
                            channel,
                            large_heap,
                            events_tx.clone(),
                        ));
                    }
                    Ok(Request::Spawn { .. }) => {
                        let _ = events_tx.send(Event::SpawnFailed {
                            errno: None,
                            message: format!(
                                "the spawn request carried {} descriptors instead of 1",
                                fds.len()
                            ),
                        });
                    }
                    // Cannot happen between a service and its own fork;
                    // nothing sensible to answer.
                    Err(_) => {}
                }
            }
            Some(event) = events_rx.recv() => {
                let Ok(bytes) = encode(&event) else { break };
                if send(&socket, &bytes, &[]).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// Starts one generation, reports it, and reaps it when it exits.
async fn spawn_and_watch(
    launch: Arc<Launch>,
    spawning: Arc<tokio::sync::Mutex<()>>,
    channel: OwnedFd,
    large_heap: bool,
    events: mpsc::UnboundedSender<Event>,
) {
    // The spawner has a single thread and starts one process at a time (the
    // lock), so the channel can be made inheritable here, for just this
    // spawn (it is closed right after).
    let spawned = {
        let _one_at_a_time = spawning.lock().await;
        let spawned = match fcntl(&channel, FcntlArg::F_SETFD(FdFlag::empty())) {
            Ok(_) => launch.spawn_posix(&channel, &SURVIVED, large_heap).await,
            Err(e) => Err(io::Error::from(e)),
        };
        drop(channel);
        spawned
    };
    let pid = match spawned {
        Ok(pid) => pid,
        Err(e) => {
            let _ = events.send(Event::SpawnFailed {
                errno: e.raw_os_error(),
                message: e.to_string(),
            });
            return;
        }
    };
    let _ = events.send(Event::Spawned { pid });
    // Not reaped before this: the pid cannot be reused meanwhile.
    ExitWatch::new(pid).exited().await;
    let waited = waitpid(Pid::from_raw(pid as i32), None);
    let wait_status = match waited {
        Ok(WaitStatus::Exited(_, code)) => Some(code << 8),
        Ok(WaitStatus::Signaled(_, signal, core)) => {
            Some(signal as i32 | if core { 0x80 } else { 0 })
        }
        _ => None,
    };
    if let Some(code) = waited.as_ref().ok().and_then(crate::keeper::exit_code) {
        // Under a keeper, this may have been the service's main pid.
        crate::keeper::report_exit(pid, code);
    }
    let _ = events.send(Event::Exited { pid, wait_status });
}
