//! The old generation's side of a restart, top to bottom ([`restart`]):
//!
//! 1. A socketpair is opened; its far end goes to the new process, which
//!    the spawner (or this process, inline) starts from the executable path.
//! 2. Meanwhile the header and the named descriptors are written into the
//!    socket, before the new process even exists: the socket buffers them.
//!    The state is encoded (on the blocking pool) and sent when the new
//!    generation asks for it: the snapshot is taken as late as possible.
//! 3. [`decide`] waits for the new generation's report, its exit, the ready
//!    timeout or an abort — the decision table of a restart, unit-tested
//!    below against a fake process. Whatever fails, the new process is
//!    killed if needed and always reaped.
//! 4. On READY the caller (the supervisor) gets a [`NewGeneration`]; on
//!    failure the [`RestartError`] saying why, and this generation serves
//!    on. What follows READY — the probation, the commit or the rollback —
//!    is the `machine`'s decision, carried out by the `supervisor`.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::channel::{self, ChildMessage, HandoverHeader, StateReport};
use crate::connections::SuccessorLink;
use crate::error::RestartError;
use crate::launch::describe_status;
use crate::profile::{self, Hop};
use crate::spawner::{NextProcess, Spawner, Successor};
use crate::state::EncodedState;
use crate::telemetry::RestartDurations;
use crate::timing;

/// What a restart hands over, but the state.
pub(crate) struct Plan {
    /// The handover's first message, all but the time the restart began
    /// (stamped as the new process is spawned).
    pub header: HandoverHeader,
    /// The named descriptors, in the order of `header.fd_names`.
    pub fds: Vec<(String, OwnedFd)>,
    pub ready_timeout: Duration,
}

/// The encoded state to hand over, with the descriptors it holds (already
/// named for the handover).
pub(crate) type EncodedStateParts = Option<(EncodedState, Vec<(String, OwnedFd)>)>;

/// A new generation that reported ready. Keep it until this process exits:
/// the channel closing tells the new generation that this one is gone.
#[derive(Debug)]
pub(crate) struct NewGeneration {
    pub pid: u32,
    pub generation: u64,
    /// How long each phase of the restart took, from its start.
    pub timings: RestartDurations,
    /// What became of the state, as the new generation reported.
    pub state_report: Option<StateReport>,
    /// Its process: watched during its probation (see `supervisor`), then
    /// kept, not waited for: the new generation outlives this process.
    pub process: Option<NextProcess>,
    /// The channel to it, on which it reports.
    pub channel: Arc<UnixStream>,
    /// Messages and connections to it.
    pub link: Arc<SuccessorLink>,
}

impl NewGeneration {
    /// How it ended, if it has exited already (it may die right after its
    /// READY, before this generation takes that in).
    pub(crate) async fn exited(&mut self) -> Option<String> {
        let process = self.process.as_mut()?;
        if !process.has_exited() {
            return None;
        }
        Some(describe_status(process.wait().await))
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
    mut plan: Plan,
    encode_state: impl Future<Output = Result<EncodedStateParts, RestartError>>,
    abort: CancellationToken,
) -> Result<NewGeneration, RestartError> {
    let started = Instant::now();
    // 1. The channel, and the new process started while the header and the
    // listeners are written into it.
    let (stream, theirs) = open_channel().map_err(|source| RestartError::Spawn {
        exe: spawner.launch.exe.clone(),
        source,
    })?;
    plan.header.restart_began_unix_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let borrowed: Vec<BorrowedFd<'_>> = plan.fds.iter().map(|(_, fd)| fd.as_fd()).collect();
    let mut prepare = Box::pin(async {
        channel::send_handover(&stream, &plan.header, &borrowed)
            .await
            .map_err(HandshakeError::Io)
    });
    profile::mark(Hop::SpawnAsked);
    // The spawn, while `prepare` writes the header (its outcome kept if it
    // finished first). The header is written first: into the socket's
    // buffer before the spawn is even asked, so that the new process never
    // waits for it, however the two cores run the spawner, the new process
    // and this thread. A header too large for the buffer leaves `prepare`
    // pending, and the spawn goes ahead meanwhile.
    let spawn = spawner.spawn(theirs);
    tokio::pin!(spawn);
    let mut prepared = None;
    let mut process = loop {
        tokio::select! {
            biased;
            done = prepare.as_mut(), if prepared.is_none() => prepared = Some(done),
            spawned = &mut spawn => break spawned?,
        }
    };
    let pid = process.pid();
    let spawned = started.elapsed();
    tracing::debug!(pid, exe = %spawner.launch.exe.display(), spawn_ms = timing::ms(spawned), "spawned the next generation");

    // 2. The state when the new generation asks for it, then its report,
    // the exit, the timeout or an abort.
    let handover_sent = std::sync::OnceLock::new();
    let state_sent = std::sync::OnceLock::new();
    let decision = {
        let handshake = async {
            match prepared.take() {
                Some(outcome) => outcome,
                None => prepare.as_mut().await,
            }?;
            let _ = handover_sent.set(started.elapsed());
            tracing::debug!(
                pid,
                fds = plan.fds.len(),
                "handover sent; waiting for the new generation"
            );
            serve_state_requests(&stream, pid, encode_state, started, &state_sent).await
        };
        tokio::pin!(handshake);
        decide(&mut process, handshake, plan.ready_timeout, &abort).await
    };
    drop(prepare);

    // 3. Ready, or why not.
    let state_report = decision.inspect_err(|error| {
        tracing::debug!(pid, elapsed_ms = timing::ms(started.elapsed()), reason = %error, "the new generation failed");
    })?;
    profile::mark(Hop::ReadyRead);
    let timings = RestartDurations {
        spawn: spawned,
        handover: handover_sent.get().copied().unwrap_or_default(),
        ready: started.elapsed(),
        state: state_sent.get().copied(),
    };
    tracing::debug!(
        pid,
        ready_ms = timing::ms(timings.ready),
        "the new generation reported ready"
    );
    let channel = Arc::new(stream);
    Ok(NewGeneration {
        pid,
        generation: plan.header.generation,
        timings,
        state_report,
        process: Some(process),
        link: SuccessorLink::new(Arc::clone(&channel)),
        channel,
    })
}

/// The channel to the new generation: this end non-blocking for Tokio (the
/// flag belongs to each end's open file; the new generation reads its end
/// blocking), the other end for the new process.
fn open_channel() -> io::Result<(UnixStream, OwnedFd)> {
    // Both ends close-on-exec (std's `pair`): the new process's end is made
    // inheritable for its spawn only.
    let (ours, theirs) = StdUnixStream::pair()?;
    ours.set_nonblocking(true)?;
    Ok((UnixStream::from_std(ours)?, theirs.into()))
}

/// Answers the new generation's request for the state (once: the snapshot
/// is taken then; `state_sent` says how long from the request), and
/// returns its next report.
async fn serve_state_requests(
    stream: &UnixStream,
    pid: u32,
    encode_state: impl Future<Output = Result<EncodedStateParts, RestartError>>,
    started: Instant,
    state_sent: &std::sync::OnceLock<Duration>,
) -> Result<Option<ChildMessage>, HandshakeError> {
    let mut encode_state = Some(encode_state);
    loop {
        let message = channel::read_child_message(stream)
            .await
            .map_err(HandshakeError::Io)?;
        let Some(ChildMessage::SendState) = message else {
            return Ok(message);
        };
        let invalid =
            |what: &str| HandshakeError::Io(io::Error::new(io::ErrorKind::InvalidData, what));
        let encode = encode_state
            .take()
            .ok_or_else(|| invalid("the new generation asked for the state twice"))?;
        let asked = started.elapsed();
        profile::mark(Hop::StateAsked);
        let (state, state_fds) =
            encode
                .await
                .map_err(HandshakeError::Prepare)?
                .ok_or_else(|| {
                    invalid("the new generation asked for a state this service does not keep")
                })?;
        profile::mark(Hop::StateEncoded);
        channel::send_state(stream, &state, &state_fds)
            .await
            .map_err(HandshakeError::Io)?;
        profile::mark(Hop::StateSent);
        let _ = state_sent.set(started.elapsed().saturating_sub(asked));
        tracing::debug!(
            pid,
            state_bytes = state.len(),
            asked_ms = timing::ms(asked),
            sent_ms = timing::ms(started.elapsed()),
            "state snapshot sent"
        );
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
/// failure leaves the process reaped. Ready: what became of the state, as
/// READY said (`None`: the service keeps none).
///
/// | first event                     | then                                   | outcome                         |
/// |---------------------------------|----------------------------------------|---------------------------------|
/// | READY                           | —                                      | ready (then the probation)      |
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
) -> Result<Option<StateReport>, RestartError> {
    let pid = process.pid();
    tokio::select! {
        report = &mut handshake => conclude_report(process, report).await,
        status = process.wait() => {
            // A FAILED report may already sit in the socket buffer.
            match tokio::time::timeout(LATE_REPORT, &mut handshake).await {
                Ok(Ok(Some(ChildMessage::Failed { reason }))) => {
                    Err(RestartError::ChildFailed { pid, reason })
                }
                _ => Err(RestartError::ChildExited {
                    pid,
                    status: describe_status(status),
                }),
            }
        }
        _ = tokio::time::sleep(ready_timeout) => {
            kill_and_reap(process).await;
            Err(RestartError::ReadyTimeout {
                pid,
                timeout: ready_timeout,
            })
        }
        _ = abort.cancelled() => {
            kill_and_reap(process).await;
            Err(RestartError::Aborted { pid })
        }
    }
}

/// The decision when the handshake ended first: with a report, the
/// channel closed, or an error.
async fn conclude_report<P: Successor>(
    process: &mut P,
    report: Result<Option<ChildMessage>, HandshakeError>,
) -> Result<Option<StateReport>, RestartError> {
    let pid = process.pid();
    match report {
        Ok(Some(ChildMessage::Ready { state })) => Ok(state),
        Ok(Some(
            ChildMessage::SendState
            | ChildMessage::Stopping { .. }
            | ChildMessage::ConnectionsAnswered { .. },
        )) => {
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
        Ok(Some(ChildMessage::Failed { reason } | ChildMessage::Unhealthy { reason })) => {
            let _ = reap_within(process, EXIT_AFTER_REPORT).await;
            Err(RestartError::ChildFailed { pid, reason })
        }
        Ok(None) => match reap_within(process, EXIT_AFTER_REPORT).await {
            Some(status) => Err(RestartError::ChildExited { pid, status }),
            None => Err(RestartError::ClosedWithoutReport { pid }),
        },
        Err(HandshakeError::Prepare(error)) => {
            kill_and_reap(process).await;
            Err(error)
        }
        Err(HandshakeError::Io(source)) => {
            match reap_within(process, EXIT_AFTER_BROKEN_CHANNEL).await {
                Some(status) => Err(RestartError::ChildExited { pid, status }),
                None => Err(RestartError::Handover { pid, source }),
            }
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
    use std::process::ExitStatus;
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
        send(&mut child, ChildMessage::Ready { state: None }).await;
        tokio::pin!(handshake);
        let abort = CancellationToken::new();
        let readiness = decide(&mut process, handshake, limits(LONG), &abort)
            .await
            .unwrap();
        // What the READY said reaches the caller (the handover's format).
        assert_eq!(readiness, None);
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
}
