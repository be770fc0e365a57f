//! The old generation's side of a restart, top to bottom ([`restart`]):
//!
//! 1. A socketpair is opened; its far end goes to the new process, which
//!    the spawner (or this process, inline) starts from the executable path.
//! 2. Meanwhile the state is encoded (on the blocking pool) and the named
//!    descriptors and the state are written into the socket, before the new
//!    process even exists: the socket buffers them.
//! 3. [`decide`] waits for the new generation's report, its exit, the ready
//!    timeout or an abort — the decision table of a restart, unit-tested
//!    below against a fake process. Whatever fails, the new process is
//!    killed if needed and always reaped.
//! 4. On READY the caller (the supervisor) gets a [`NewGeneration`]: it tells
//!    systemd the new main pid, answers the initiator and pauses accepting.
//!    On failure it gets the [`RestartError`] saying why, and this
//!    generation serves on.
//! 5. [`probation`]: for a while after READY this generation holds its
//!    listeners and watches the new one; if it exits or reports itself
//!    unhealthy, the supervisor takes the service back. Otherwise
//!    [`NewGeneration::commit`] hands over for good and this generation
//!    drains, reporting its progress ([`NewGeneration::tell`]).

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use tokio::net::UnixStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::channel::{
    self, ChildMessage, Draining, HandoverHeader, Lineage, ParentMessage, StateOffer, StateReport,
};
use crate::error::RestartError;
use crate::handoff::SuccessorLink;
use crate::launch::{describe_status, Launch};
use crate::spawner::{NextProcess, Spawner};
use crate::state::EncodedState;
use crate::timing;

/// What a restart hands over, but the state.
pub(crate) struct Plan {
    pub generation: u64,
    pub fds: Vec<(String, OwnedFd)>,
    pub lineage: Lineage,
    /// Older generations still draining, for the new one to know of.
    pub draining: Vec<Draining>,
    /// What is offered of the state.
    pub state: StateOffer,
    pub ready_timeout: Duration,
}

/// The encoded state to hand over, with the descriptors it holds (already
/// named for the handover).
pub(crate) type EncodedStateParts = Option<(EncodedState, Vec<(String, OwnedFd)>)>;

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

/// What a new generation's READY says.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Readiness {
    /// What became of the state (`None`: the service keeps none).
    pub state: Option<StateReport>,
    /// It takes handed-over connections in batches (builds before batches
    /// do not say so: they get one connection per message).
    pub connection_batches: bool,
}

/// A new generation that reported ready. Keep it until this process exits:
/// the channel closing tells the new generation that this one is gone.
#[derive(Debug)]
pub(crate) struct NewGeneration {
    pub pid: u32,
    pub generation: u64,
    pub timings: PhaseTimings,
    /// What became of the state, as the new generation reported.
    pub state_report: Option<StateReport>,
    /// Not waited for: the new generation outlives this process.
    pub _process: NextProcess,
    channel: Arc<UnixStream>,
    /// Messages and connections to it.
    pub link: Arc<SuccessorLink>,
}

impl NewGeneration {
    /// Tells the new generation that the hand-over is complete: this one
    /// stopped accepting for good and drains as `drain` says, so the new one
    /// is the service (until then it does not take over: see `child`).
    pub(crate) async fn commit(&self, drain: Draining) -> io::Result<()> {
        self.tell(&ParentMessage::Commit { drain }).await
    }

    /// Watches the new generation for `duration` (see [`probation`]).
    pub(crate) async fn probation(&mut self, duration: Duration) -> Verdict {
        let NewGeneration {
            _process: process,
            channel,
            ..
        } = self;
        let channel: &UnixStream = channel;
        probation(process, || channel::read_child_message(channel), duration).await
    }

    /// Sends a message to the new generation.
    pub(crate) async fn tell(&self, message: &ParentMessage) -> io::Result<()> {
        self.link.tell(message).await
    }
}

/// What the decision table needs of the new process: the seam through
/// which it is tested with a fake.
pub(crate) trait Successor {
    /// Its pid (for messages).
    fn pid(&self) -> u32;
    /// Waits until it has exited and was reaped.
    fn wait(&mut self) -> impl Future<Output = io::Result<ExitStatus>> + Send;
    /// Sends it SIGKILL.
    fn start_kill(&mut self) -> io::Result<()>;
}

impl Successor for NextProcess {
    fn pid(&self) -> u32 {
        NextProcess::pid(self)
    }

    fn wait(&mut self) -> impl Future<Output = io::Result<ExitStatus>> + Send {
        NextProcess::wait(self)
    }

    fn start_kill(&mut self) -> io::Result<()> {
        NextProcess::start_kill(self)
    }
}

/// Starts the next generation and supervises it until it is ready or has
/// failed; on failure it is killed if needed and always reaped.
///
/// The spawn and the handover's header run at the same time: the header
/// and the listeners go into the socket's buffer before the new process
/// exists, so it never waits for them. The state is encoded
/// (`encode_state`: the snapshot) only when the new generation asks for
/// it, as late as possible.
pub(crate) async fn restart(
    spawner: &Spawner,
    launch: &Launch,
    plan: Plan,
    encode_state: impl Future<Output = Result<EncodedStateParts, RestartError>>,
    abort: CancellationToken,
) -> Result<NewGeneration, RestartError> {
    let started = Instant::now();
    let began_unix_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let spawn_failed = |source: io::Error| RestartError::Spawn {
        exe: launch.exe.clone(),
        source,
    };
    // 1. The channel: non-blocking on this end only (the flag belongs to
    // each end's open file); the new generation reads its end blocking.
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| spawn_failed(e.into()))?;
    let ours = StdUnixStream::from(ours);
    let stream = ours
        .set_nonblocking(true)
        .and_then(|()| UnixStream::from_std(ours))
        .map_err(spawn_failed)?;
    let Plan {
        generation,
        fds,
        lineage,
        draining,
        state,
        ready_timeout,
    } = plan;

    // 2. The handover's header and listeners, written while the process
    // starts.
    let prepare = async {
        let header = HandoverHeader {
            generation,
            fd_names: fds.iter().map(|(name, _)| name.clone()).collect(),
            state,
            lineage,
            restart_began_unix_us: began_unix_us,
            predecessor_pid: std::process::id(),
            draining,
        };
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|(_, fd)| fd.as_fd()).collect();
        channel::send_handover(&stream, &header, &borrowed)
            .await
            .map_err(HandshakeError::Io)?;
        // The kernel holds the descriptors in flight; the copies go with
        // `fds` at the end of this block.
        Ok::<_, HandshakeError>(header.fd_names.len())
    };
    // Boxed, so it can be dropped (ending its borrow of the stream) before
    // the stream is kept for the new generation.
    let mut prepare = Box::pin(prepare);
    let mut prepared = None;
    let mut process = {
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
    let pid = process.pid();
    let spawned = started.elapsed();
    tracing::debug!(
        pid,
        exe = %launch.exe.display(),
        spawn_ms = timing::ms(spawned),
        "spawned the next generation"
    );

    // 3. The state when the new generation asks for it, then its report,
    // the exit, the timeout or an abort.
    let handover_sent = std::sync::OnceLock::new();
    let decision = {
        let handshake = async {
            let outcome = match prepared.take() {
                Some(outcome) => outcome,
                None => prepare.as_mut().await,
            };
            let fd_count = outcome?;
            let sent = started.elapsed();
            let _ = handover_sent.set(sent);
            tracing::debug!(
                pid,
                fds = fd_count,
                handover_ms = timing::ms(sent),
                "handover sent; waiting for the new generation"
            );
            let mut encode_state = Some(encode_state);
            loop {
                let message = channel::read_child_message(&stream)
                    .await
                    .map_err(HandshakeError::Io)?;
                let Some(ChildMessage::SendState) = message else {
                    return Ok(message);
                };
                // The snapshot: taken now, on the new generation's request.
                let Some(encode) = encode_state.take() else {
                    return Err(HandshakeError::Io(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the new generation asked for the state twice",
                    )));
                };
                let asked = started.elapsed();
                let Some((state, state_fds)) = encode.await.map_err(HandshakeError::Prepare)?
                else {
                    return Err(HandshakeError::Io(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the new generation asked for a state this service does not keep",
                    )));
                };
                channel::send_state(&stream, &state, &state_fds)
                    .await
                    .map_err(HandshakeError::Io)?;
                tracing::debug!(
                    pid,
                    state_bytes = state.len(),
                    asked_ms = timing::ms(asked),
                    sent_ms = timing::ms(started.elapsed()),
                    "state snapshot sent"
                );
            }
        };
        tokio::pin!(handshake);
        decide(&mut process, handshake, ready_timeout, &abort).await
    };
    drop(prepare);

    // 4. Ready, or why not.
    match decision {
        Ok(readiness) => {
            let timings = PhaseTimings {
                spawned,
                handover_sent: handover_sent.get().copied().unwrap_or_default(),
                ready: started.elapsed(),
            };
            tracing::debug!(
                pid,
                ready_ms = timing::ms(timings.ready),
                "the new generation reported ready"
            );
            let channel = Arc::new(stream);
            Ok(NewGeneration {
                pid,
                generation,
                timings,
                state_report: readiness.state,
                _process: process,
                link: SuccessorLink::new(Arc::clone(&channel), readiness.connection_batches),
                channel,
            })
        }
        Err(error) => {
            tracing::debug!(
                pid,
                elapsed_ms = timing::ms(started.elapsed()),
                handover_sent = handover_sent.get().is_some(),
                reason = %error,
                "the new generation failed"
            );
            Err(error)
        }
    }
}

/// Why the handshake with the new generation did not produce a report.
#[derive(Debug)]
pub(crate) enum HandshakeError {
    /// The state could not be encoded (or the listeners duplicated).
    Prepare(RestartError),
    /// The channel failed.
    Io(io::Error),
}

/// How long a process that reported FAILED or closed the channel has to
/// exit by itself before it is killed.
const EXIT_AFTER_REPORT: Duration = Duration::from_secs(5);
/// How long a process whose channel broke has to exit by itself.
const EXIT_AFTER_BROKEN_CHANNEL: Duration = Duration::from_millis(500);
/// How long a FAILED report may lag behind the exit it explains.
const LATE_REPORT: Duration = Duration::from_millis(200);

/// The decision table of a restart: waits for the first of the report
/// (`handshake`: the handover written, then the new generation's message),
/// the process's exit, the ready timeout and `abort`, and decides. Every
/// failure leaves the process reaped.
///
/// | first event                     | then                                   | outcome                         |
/// |---------------------------------|----------------------------------------|---------------------------------|
/// | READY                           | —                                      | ready (then the [`probation`])  |
/// | FAILED                          | exits (else killed after 5 s)          | `ChildFailed` with its reason   |
/// | channel closed, no report       | exits within 5 s                       | `ChildExited` with its status   |
/// | channel closed, no report       | still alive after 5 s                  | killed, `ClosedWithoutReport`   |
/// | channel broken                  | exits within 0.5 s / still alive       | `ChildExited` / killed, `Handover` |
/// | state could not be prepared     | —                                      | killed, that error              |
/// | process exits                   | FAILED arrives within 0.2 s / not      | `ChildFailed` / `ChildExited`   |
/// | ready timeout                   | —                                      | killed, `ReadyTimeout`          |
/// | abort (the service stops)       | —                                      | killed, `Aborted`               |
pub(crate) async fn decide<P: Successor>(
    process: &mut P,
    mut handshake: Pin<&mut impl Future<Output = Result<Option<ChildMessage>, HandshakeError>>>,
    ready_timeout: Duration,
    abort: &CancellationToken,
) -> Result<Readiness, RestartError> {
    let pid = process.pid();
    enum First {
        Report(Result<Option<ChildMessage>, HandshakeError>),
        Exited(io::Result<ExitStatus>),
        Timeout,
        Aborted,
    }
    let first = tokio::select! {
        report = &mut handshake => First::Report(report),
        status = process.wait() => First::Exited(status),
        _ = tokio::time::sleep(ready_timeout) => First::Timeout,
        _ = abort.cancelled() => First::Aborted,
    };
    match first {
        First::Report(Ok(Some(ChildMessage::Ready {
            state,
            connection_batches,
        }))) => Ok(Readiness {
            state,
            connection_batches,
        }),
        First::Report(Ok(Some(
            ChildMessage::SendState
            | ChildMessage::ConnectionTaken { .. }
            | ChildMessage::ConnectionRefused { .. }
            | ChildMessage::ConnectionsAnswered { .. },
        ))) => {
            // Out of place before READY (the handshake answers state
            // requests itself): a confused new generation.
            kill_and_reap(process).await;
            Err(RestartError::Handover {
                pid,
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a message out of place before READY",
                ),
            })
        }
        First::Report(Ok(Some(
            ChildMessage::Failed { reason } | ChildMessage::Unhealthy { reason },
        ))) => {
            let _ = reap_within(process, EXIT_AFTER_REPORT).await;
            Err(RestartError::ChildFailed { pid, reason })
        }
        First::Report(Ok(None)) => match reap_within(process, EXIT_AFTER_REPORT).await {
            Some(status) => Err(RestartError::ChildExited { pid, status }),
            None => Err(RestartError::ClosedWithoutReport { pid }),
        },
        First::Report(Err(HandshakeError::Prepare(error))) => {
            kill_and_reap(process).await;
            Err(error)
        }
        First::Report(Err(HandshakeError::Io(source))) => {
            match reap_within(process, EXIT_AFTER_BROKEN_CHANNEL).await {
                Some(status) => Err(RestartError::ChildExited { pid, status }),
                None => Err(RestartError::Handover { pid, source }),
            }
        }
        First::Exited(status) => {
            // A FAILED report may already sit in the socket buffer.
            let late = tokio::time::timeout(LATE_REPORT, &mut handshake).await;
            match late {
                Ok(Ok(Some(ChildMessage::Failed { reason }))) => {
                    Err(RestartError::ChildFailed { pid, reason })
                }
                _ => Err(RestartError::ChildExited {
                    pid,
                    status: describe_status(status),
                }),
            }
        }
        First::Timeout => {
            kill_and_reap(process).await;
            Err(RestartError::ReadyTimeout {
                pid,
                timeout: ready_timeout,
            })
        }
        First::Aborted => {
            kill_and_reap(process).await;
            Err(RestartError::Aborted { pid })
        }
    }
}

/// How a new generation's probation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It stayed alive and healthy throughout: it takes over.
    Passed,
    /// It exited ("exited with status 7", "was killed by signal SIGKILL").
    Exited(String),
    /// It reported itself unhealthy; it was killed and reaped.
    Unhealthy(String),
}

/// The probation of a ready new generation: watches it for `probation`
/// (its exit, an `Unhealthy` report on the channel `reports` reads) while
/// this generation still holds the listeners.
///
/// | first event            | verdict                                  |
/// |------------------------|------------------------------------------|
/// | the probation ends     | `Passed`                                 |
/// | it exits               | `Exited` with its status                 |
/// | it reports Unhealthy   | it is killed and reaped; `Unhealthy`     |
/// | its channel closes     | whichever of its exit or the end comes   |
pub(crate) async fn probation<P: Successor, R>(
    process: &mut P,
    mut reports: impl FnMut() -> R,
    probation: Duration,
) -> Verdict
where
    R: Future<Output = io::Result<Option<ChildMessage>>>,
{
    let end = tokio::time::sleep(probation);
    tokio::pin!(end);
    let mut channel_open = true;
    loop {
        tokio::select! {
            biased;
            status = process.wait() => return Verdict::Exited(describe_status(status)),
            () = &mut end => return Verdict::Passed,
            report = reports(), if channel_open => match report {
                Ok(Some(ChildMessage::Unhealthy { reason })) => {
                    kill_and_reap(process).await;
                    return Verdict::Unhealthy(reason);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => channel_open = false,
            },
        }
    }
}

/// Waits up to `grace` for the process to exit, then kills it; always
/// reaps. Returns how it ended if it exited by itself, `None` if killed.
async fn reap_within<P: Successor>(process: &mut P, grace: Duration) -> Option<String> {
    match tokio::time::timeout(grace, process.wait()).await {
        Ok(status) => Some(describe_status(status)),
        Err(_) => {
            kill_and_reap(process).await;
            None
        }
    }
}

async fn kill_and_reap<P: Successor>(process: &mut P) {
    if let Err(e) = process.start_kill() {
        tracing::debug!(error = %e, "kill of the new generation failed (already exited?)");
    }
    if let Err(e) = process.wait().await {
        tracing::warn!(error = %e, "could not reap the new generation");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tokio::sync::watch;

    /// A new generation without a process: it exits when the test (or a
    /// kill) says so.
    struct FakeProcess {
        exit: watch::Receiver<Option<i32>>,
        kill: watch::Sender<Option<i32>>,
        killed: Arc<AtomicBool>,
        reaped: bool,
    }

    /// Ends the fake process with a raw wait status.
    struct ExitSwitch(watch::Sender<Option<i32>>);

    impl ExitSwitch {
        fn exit_with(&self, code: i32) {
            self.0.send_replace(Some(code << 8));
        }
    }

    fn fake() -> (FakeProcess, ExitSwitch, Arc<AtomicBool>) {
        let (tx, rx) = watch::channel(None);
        let killed = Arc::new(AtomicBool::new(false));
        let process = FakeProcess {
            exit: rx,
            kill: tx.clone(),
            killed: Arc::clone(&killed),
            reaped: false,
        };
        (process, ExitSwitch(tx), killed)
    }

    impl Successor for FakeProcess {
        fn pid(&self) -> u32 {
            4242
        }

        fn wait(&mut self) -> impl Future<Output = io::Result<ExitStatus>> + Send {
            let mut exit = self.exit.clone();
            let reaped = &mut self.reaped;
            async move {
                let status = *exit
                    .wait_for(Option::is_some)
                    .await
                    .map_err(io::Error::other)?;
                *reaped = true;
                Ok(ExitStatus::from_raw(status.unwrap_or_default()))
            }
        }

        fn start_kill(&mut self) -> io::Result<()> {
            self.killed.store(true, Ordering::SeqCst);
            self.kill.send_replace(Some(libc_sigkill()));
            Ok(())
        }
    }

    fn libc_sigkill() -> i32 {
        nix::sys::signal::Signal::SIGKILL as i32
    }

    fn limits(timeout_ms: u64) -> Duration {
        Duration::from_millis(timeout_ms)
    }

    /// The new generation's end of a channel, and the handshake reading
    /// the old generation's end.
    fn channel() -> (
        UnixStream,
        impl Future<Output = Result<Option<ChildMessage>, HandshakeError>>,
    ) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let handshake = async move {
            channel::read_child_message(&ours)
                .await
                .map_err(HandshakeError::Io)
        };
        (theirs, handshake)
    }

    async fn send(stream: &mut UnixStream, message: ChildMessage) {
        use tokio::io::AsyncWriteExt;
        let bytes = channel::encode_child_message(&message).unwrap();
        stream.write_all(&bytes).await.unwrap();
    }

    const LONG: u64 = 60_000;

    #[tokio::test(start_paused = true)]
    async fn ready_is_success_at_once() {
        let (mut process, _exit, killed) = fake();
        let (mut child, handshake) = channel();
        send(
            &mut child,
            ChildMessage::Ready {
                state: None,
                connection_batches: true,
            },
        )
        .await;
        tokio::pin!(handshake);
        let abort = CancellationToken::new();
        let readiness = decide(&mut process, handshake, limits(LONG), &abort)
            .await
            .unwrap();
        // What the READY said reaches the caller (the hand-over's format).
        assert_eq!(
            readiness,
            Readiness {
                state: None,
                connection_batches: true
            }
        );
        assert!(!killed.load(Ordering::SeqCst));
        assert!(!process.reaped, "a ready generation is not waited for");
    }

    #[tokio::test(start_paused = true)]
    async fn failed_report_carries_the_reason_and_reaps() {
        let (mut process, exit, killed) = fake();
        let (mut child, handshake) = channel();
        send(
            &mut child,
            ChildMessage::Failed {
                reason: "port in use".into(),
            },
        )
        .await;
        exit.exit_with(1);
        tokio::pin!(handshake);
        let abort = CancellationToken::new();
        let error = decide(&mut process, handshake, limits(LONG), &abort)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, RestartError::ChildFailed { reason, .. } if reason == "port in use"),
            "{error}"
        );
        assert!(!killed.load(Ordering::SeqCst));
        assert!(process.reaped);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_report_from_a_process_that_stays_is_killed_after_a_while() {
        let (mut process, _exit, killed) = fake();
        let (mut child, handshake) = channel();
        send(
            &mut child,
            ChildMessage::Failed {
                reason: "bad state".into(),
            },
        )
        .await;
        tokio::pin!(handshake);
        let abort = CancellationToken::new();
        let error = decide(&mut process, handshake, limits(LONG), &abort)
            .await
            .unwrap_err();
        assert!(matches!(error, RestartError::ChildFailed { .. }), "{error}");
        assert!(killed.load(Ordering::SeqCst));
        assert!(process.reaped);
    }

    #[tokio::test(start_paused = true)]
    async fn closed_channel_then_exit_reports_the_status() {
        let (mut process, exit, _) = fake();
        let (child, handshake) = channel();
        drop(child);
        tokio::pin!(handshake);
        let abort = CancellationToken::new();
        let decided = decide(&mut process, handshake, limits(LONG), &abort);
        tokio::pin!(decided);
        tokio::select! {
            _ = &mut decided => panic!("decided before the exit"),
            _ = tokio::time::sleep(Duration::from_millis(100)) => exit.exit_with(3),
        }
        let error = decided.await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "the new generation (pid 4242) exited with status 3 before it was ready"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn closed_channel_and_still_alive_is_killed() {
        let (mut process, _exit, killed) = fake();
        let (child, handshake) = channel();
        drop(child);
        tokio::pin!(handshake);
        let abort = CancellationToken::new();
        let error = decide(&mut process, handshake, limits(LONG), &abort)
            .await
            .unwrap_err();
        assert!(
            matches!(error, RestartError::ClosedWithoutReport { pid: 4242 }),
            "{error}"
        );
        assert!(killed.load(Ordering::SeqCst));
        assert!(process.reaped);
    }

    #[tokio::test(start_paused = true)]
    async fn broken_channel_is_a_handover_error_naming_the_pid() {
        let (mut process, _exit, killed) = fake();
        let handshake = async {
            Err::<Option<ChildMessage>, _>(HandshakeError::Io(io::Error::from(
                io::ErrorKind::BrokenPipe,
            )))
        };
        tokio::pin!(handshake);
        let abort = CancellationToken::new();
        let error = decide(&mut process, handshake, limits(LONG), &abort)
            .await
            .unwrap_err();
        assert!(
            matches!(error, RestartError::Handover { pid: 4242, .. }),
            "{error}"
        );
        assert!(!error.to_string().contains("pid 0"));
        assert!(killed.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn state_that_cannot_be_prepared_kills_the_process() {
        let (mut process, _exit, killed) = fake();
        let handshake = async {
            Err::<Option<ChildMessage>, _>(HandshakeError::Prepare(RestartError::EncodePanicked(
                "boom".into(),
            )))
        };
        tokio::pin!(handshake);
        let abort = CancellationToken::new();
        let error = decide(&mut process, handshake, limits(LONG), &abort)
            .await
            .unwrap_err();
        assert!(matches!(error, RestartError::EncodePanicked(_)), "{error}");
        assert!(killed.load(Ordering::SeqCst));
        assert!(process.reaped);
    }

    #[tokio::test(start_paused = true)]
    async fn exit_first_then_a_late_failure_report_gives_the_reason() {
        let (mut process, exit, _) = fake();
        let (mut child, handshake) = channel();
        exit.exit_with(1);
        tokio::pin!(handshake);
        let abort = CancellationToken::new();
        let decided = decide(&mut process, handshake, limits(LONG), &abort);
        tokio::pin!(decided);
        // The exit wins the race; the report follows within the lag.
        tokio::select! {
            biased;
            _ = &mut decided => panic!("decided before the late report"),
            _ = tokio::task::yield_now() => {}
        }
        send(
            &mut child,
            ChildMessage::Failed {
                reason: "late words".into(),
            },
        )
        .await;
        let error = decided.await.unwrap_err();
        assert!(
            matches!(&error, RestartError::ChildFailed { reason, .. } if reason == "late words"),
            "{error}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn exit_without_a_report_gives_the_status() {
        let (mut process, exit, _) = fake();
        let (_child, handshake) = channel();
        tokio::pin!(handshake);
        let abort = CancellationToken::new();
        let decided = decide(&mut process, handshake, limits(LONG), &abort);
        tokio::pin!(decided);
        tokio::select! {
            _ = &mut decided => panic!("decided before the exit"),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                exit.0.send_replace(Some(nix::sys::signal::Signal::SIGABRT as i32));
            }
        }
        let error = decided.await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "the new generation (pid 4242) was killed by signal SIGABRT before it was ready"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn silence_until_the_timeout_kills() {
        let (mut process, _exit, killed) = fake();
        let (_child, handshake) = channel();
        tokio::pin!(handshake);
        let abort = CancellationToken::new();
        let error = decide(&mut process, handshake, limits(2_000), &abort)
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "the new generation (pid 4242) was not ready within 2s; it was killed"
        );
        assert!(killed.load(Ordering::SeqCst));
        assert!(process.reaped);
    }

    #[tokio::test(start_paused = true)]
    async fn abort_before_any_report_kills() {
        let (mut process, _exit, killed) = fake();
        let (_child, handshake) = channel();
        tokio::pin!(handshake);
        let abort = CancellationToken::new();
        abort.cancel();
        let error = decide(&mut process, handshake, limits(LONG), &abort)
            .await
            .unwrap_err();
        assert!(
            matches!(error, RestartError::Aborted { pid: 4242 }),
            "{error}"
        );
        assert!(killed.load(Ordering::SeqCst));
        assert!(process.reaped);
    }

    /// The reports of the new generation's end of a channel, for
    /// `probation`.
    fn reports<'a>(
        ours: &'a UnixStream,
    ) -> impl FnMut() -> Pin<Box<dyn Future<Output = io::Result<Option<ChildMessage>>> + 'a>> + 'a
    {
        move || Box::pin(channel::read_child_message(ours))
    }

    #[tokio::test(start_paused = true)]
    async fn a_generation_alive_through_its_probation_passes() {
        let (mut process, _exit, killed) = fake();
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let verdict = probation(&mut process, reports(&ours), Duration::from_secs(2)).await;
        assert_eq!(verdict, Verdict::Passed);
        assert!(!killed.load(Ordering::SeqCst));
        assert!(!process.reaped);
    }

    #[tokio::test(start_paused = true)]
    async fn an_exit_within_the_probation_fails_it_with_the_status() {
        let (mut process, exit, _) = fake();
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let verdict = probation(&mut process, reports(&ours), Duration::from_secs(2));
        tokio::pin!(verdict);
        tokio::select! {
            _ = &mut verdict => panic!("decided before the exit"),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                exit.0.send_replace(Some(nix::sys::signal::Signal::SIGKILL as i32));
            }
        }
        assert_eq!(
            verdict.await,
            Verdict::Exited("was killed by signal SIGKILL".into())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unhealthy_report_kills_and_reaps() {
        let (mut process, _exit, killed) = fake();
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        send(
            &mut theirs,
            ChildMessage::Unhealthy {
                reason: "database unreachable".into(),
            },
        )
        .await;
        let verdict = probation(&mut process, reports(&ours), Duration::from_secs(2)).await;
        assert_eq!(verdict, Verdict::Unhealthy("database unreachable".into()));
        assert!(killed.load(Ordering::SeqCst));
        assert!(process.reaped);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_channel_still_waits_for_the_exit_or_the_end() {
        let (mut process, exit, _) = fake();
        let (ours, theirs) = UnixStream::pair().unwrap();
        drop(theirs);
        let verdict = probation(&mut process, reports(&ours), Duration::from_secs(2));
        tokio::pin!(verdict);
        tokio::select! {
            _ = &mut verdict => panic!("decided on the closed channel alone"),
            _ = tokio::time::sleep(Duration::from_millis(100)) => exit.exit_with(7),
        }
        assert_eq!(
            verdict.await,
            Verdict::Exited("exited with status 7".into())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_probation_passes_at_once() {
        let (mut process, _exit, _) = fake();
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let verdict = probation(&mut process, reports(&ours), Duration::ZERO).await;
        assert_eq!(verdict, Verdict::Passed);
    }
}
