//! The new generation's side of a restart, top to bottom:
//!
//! 1. [`take_channel`]: adopt the channel the previous generation left
//!    (its number is in `SHELLFLIP_HANDOVER_FD`); none means this is a first
//!    generation.
//! 2. [`receive`]: read the handover — the named descriptors and the encoded
//!    state — before the Tokio runtime and the service's code exist.
//! 3. [`decode_state`]: the state, matched by field name, and the report of
//!    what became of it (inside the runtime, before the service's code).
//!    If start-up fails, [`report_failure_blocking`] tells the previous
//!    generation why (it keeps serving and tells whoever asked).
//! 4. Inside the runtime, a [`PredecessorLink`] carries the report: `ready()`
//!    writes READY on the caller's thread at once ([`PredecessorLink::report_ready_now`]),
//!    the supervisor finishes it ([`PredecessorLink::finish_ready_report`]);
//!    a failure of `main` before `ready()` is reported with
//!    [`PredecessorLink::report`].
//! 5. The link watches the channel and tells the supervisor what the
//!    previous generation does ([`FromPredecessor`]): it committed (this
//!    generation is the service now), it was stopped during this one's
//!    probation (the service stops), it died (this one takes over), or it
//!    closed the channel while still alive (it gave this one up: this one
//!    exits, or two generations would serve). A stop that reaches this
//!    generation during its probation is reported back
//!    ([`PredecessorLink::report`]), so that the previous one stops
//!    too. What each means is the `machine`'s decision.

use std::io::{self, Write};
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::channel::{
    self, ChildMessage, Draining, FromParent, ParentMessage, ParentReader, Received, StateOffer,
    StateReport, ENV_HANDOVER_FD,
};
use crate::config::StateMismatch;
use crate::connections::{self, Arrived};
use crate::error::Error;
use crate::fd;
use crate::launch::ExitWatch;
use crate::machine::Claim;
use crate::profile::{self, Hop};
use crate::registry::{Registry, STATE_FD_PREFIX};
use crate::state::{decode_envelope_with_report, HandoverState, StateError, StateFds};
use crate::sync::lock;
use crate::telemetry::{self, RestartId, Totals};

/// Reads and removes [`ENV_HANDOVER_FD`]; adopts the channel it names.
/// `Ok(None)`: this is a first generation.
pub(crate) fn take_channel() -> Result<Option<StdUnixStream>, Error> {
    let Some(value) = std::env::var_os(ENV_HANDOVER_FD) else {
        return Ok(None);
    };
    // Removed so that programs this service runs do not mistake themselves
    // for a new generation. This runs before the runtime starts threads.
    std::env::remove_var(ENV_HANDOVER_FD);
    let raw: RawFd =
        value
            .to_str()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::HandoverVariable {
                value: value.to_string_lossy().into_owned(),
                source: None,
            })?;
    let owned = fd::adopt_inherited(raw).map_err(|source| Error::HandoverVariable {
        value: raw.to_string(),
        source: Some(source),
    })?;
    Ok(Some(StdUnixStream::from(owned)))
}

/// Receives the handover, giving up after `timeout`; asks for the state if
/// it is offered and `wants_state` (the service keeps one).
pub(crate) fn receive(
    stream: &mut StdUnixStream,
    timeout: Duration,
    wants_state: bool,
) -> Result<Received, Error> {
    let failed = |source: io::Error| Error::Handover { source };
    // Blocking reads bounded by the timeout, whatever mode the previous
    // generation left the descriptor in.
    stream.set_nonblocking(false).map_err(failed)?;
    stream.set_read_timeout(Some(timeout)).map_err(failed)?;
    let received = channel::receive_handover(stream, wants_state).map_err(|source| {
        if matches!(
            source.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            Error::HandoverTimeout(timeout)
        } else {
            failed(source)
        }
    })?;
    stream.set_read_timeout(None).map_err(failed)?;
    Ok(received)
}

/// Decodes the handed-over state (`bytes`, with its descriptors from the
/// registry) as the previous generation offered it (`offer`; `None` in a
/// first generation), and says what became of it: `Ok((None, _))` when
/// there is none (or an incompatible one, with `on_state_mismatch =
/// "fresh"`), `Err` when it cannot be carried.
pub(crate) fn decode_state<S: HandoverState>(
    bytes: Option<&[u8]>,
    offer: Option<StateOffer>,
    registry: &mut Registry,
    on_mismatch: StateMismatch,
) -> Result<(Option<S>, Option<StateReport>), StateError> {
    let mut state_fds = StateFds {
        fds: registry.claim_prefixed(STATE_FD_PREFIX),
    };
    let mut report = StateReport {
        type_name: S::TYPE_NAME.to_owned(),
        version: S::VERSION,
        ..StateReport::default()
    };
    let state = match (bytes, offer) {
        (Some(bytes), _) => match decode_envelope_with_report::<S>(bytes, &mut state_fds) {
            Ok((state, decoded)) => {
                report.bytes = decoded.len as u64;
                report.migrated_from =
                    (decoded.received_version < S::VERSION).then_some(decoded.received_version);
                report.dropped = decoded.dropped;
                Some(state)
            }
            Err(e) if e.is_mismatch() && on_mismatch == StateMismatch::Fresh => {
                report.bytes = bytes.len() as u64;
                report.not_carried = Some(format!("{e} (on_state_mismatch = \"fresh\")"));
                None
            }
            Err(e) => return Err(e),
        },
        (None, Some(StateOffer::Fresh { reason })) => {
            report.not_carried = Some(reason);
            None
        }
        (None, Some(StateOffer::None)) => {
            report.not_carried = Some("the previous generation kept no state".to_owned());
            None
        }
        (None, _) => None,
    };
    Ok((state, keeps_state::<S>().then_some(report)))
}

/// Whether the service keeps a state (a `Context<()>` keeps none).
pub(crate) fn keeps_state<S: HandoverState>() -> bool {
    std::any::TypeId::of::<S>() != std::any::TypeId::of::<()>()
}

/// Reports a failure before the runtime runs (blocking, best effort: if
/// the previous generation is gone there is nobody to tell).
pub(crate) fn report_failure_blocking(stream: &mut StdUnixStream, reason: &str) {
    let message = ChildMessage::Failed {
        reason: reason.to_owned(),
    };
    if let Ok(bytes) = channel::encode_child_message(&message) {
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        let _ = stream.write_all(&bytes);
    }
}

/// How far the READY report got.
#[derive(Debug)]
enum ReadyReport {
    /// Not sent yet.
    NotSent,
    /// Sent as far as the socket took it at once; `rest` is still to send.
    Started { rest: Vec<u8> },
    /// Sending failed: the previous generation is probably gone.
    Failed(String),
    /// Finished (or there was nothing more to do).
    Finished,
}

/// The link to the previous generation while it is alive. Shared: the
/// service's `ready()` starts the READY report at once, on its own thread,
/// rather than after a hop to the supervisor task (under load every wake-up
/// of another thread costs a wait for a CPU).
pub(crate) struct PredecessorLink {
    writer: OwnedWriteHalf,
    /// One report at a time: a message's bytes must not interleave.
    sending: tokio::sync::Mutex<()>,
    /// What became of the state, for the READY report.
    state_report: Option<StateReport>,
    /// Cancelled once this generation is the service: the previous one
    /// committed the handover, or died.
    pub took_over: CancellationToken,
    /// The previous generation's process, watched for its exit (`None`:
    /// its pid is unknown).
    pub predecessor: Option<ExitWatch>,
    ready: Mutex<ReadyReport>,
    /// What the previous generation does, until the supervisor takes it.
    events: Mutex<Option<mpsc::UnboundedReceiver<FromPredecessor>>>,
    /// The connections it hands over, until the service takes them
    /// (`Context::connections`).
    connections: Mutex<Option<mpsc::UnboundedReceiver<Arrived>>>,
}

/// How long a previous generation that closed the channel has to be seen
/// exiting: its descriptors close a moment before its exit is visible.
const EXIT_AFTER_CLOSE: Duration = Duration::from_secs(2);

impl PredecessorLink {
    /// Splits the channel and watches its read half (see the module docs).
    /// `predecessor_pid` is the previous generation's pid (0: unknown — in
    /// tests — and a closed channel then means that it is gone). The
    /// supervisor takes what the previous generation does as
    /// [`FromPredecessor`] events ([`take_events`](Self::take_events)); the
    /// link's lines carry `restart`'s id. Must be called inside the runtime.
    pub(crate) fn start(
        stream: StdUnixStream,
        predecessor_pid: u32,
        state_report: Option<StateReport>,
        restart: Option<RestartId>,
    ) -> io::Result<Arc<Self>> {
        stream.set_nonblocking(true)?;
        let (reader, writer) = UnixStream::from_std(stream)?.into_split();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (arrived_tx, arrived) = mpsc::unbounded_channel();
        let link = Arc::new(PredecessorLink {
            writer,
            sending: tokio::sync::Mutex::new(()),
            state_report,
            took_over: CancellationToken::new(),
            predecessor: (predecessor_pid != 0).then(|| ExitWatch::new(predecessor_pid)),
            ready: Mutex::new(ReadyReport::NotSent),
            events: Mutex::new(Some(events)),
            connections: Mutex::new(Some(arrived)),
        });
        tokio::spawn(watch_predecessor(
            reader,
            Arc::clone(&link),
            events_tx,
            arrived_tx,
            restart,
        ));
        Ok(link)
    }

    /// What the previous generation does, for the supervisor (once).
    pub(crate) fn take_events(&self) -> Option<mpsc::UnboundedReceiver<FromPredecessor>> {
        lock(&self.events).take()
    }

    /// The connections it hands over, for the service (once).
    pub(crate) fn take_connections(&self) -> Option<mpsc::UnboundedReceiver<Arrived>> {
        lock(&self.connections).take()
    }

    /// Starts the READY report on the caller's thread: runs `before` (the
    /// pid file is written first, so whoever learns that the restart
    /// succeeded finds this pid in it), then writes as much of READY as the
    /// socket takes without waiting. Reports once, however often called.
    pub(crate) fn report_ready_now(&self, before: impl FnOnce()) {
        // Held throughout: two racing ready() calls report once.
        let mut report = lock(&self.ready);
        if !matches!(*report, ReadyReport::NotSent) {
            return;
        }
        before();
        *report = match self.try_send(&self.ready_message()) {
            Ok(rest) => ReadyReport::Started { rest },
            Err(e) => ReadyReport::Failed(e.to_string()),
        };
        profile::mark(Hop::ReadyWritten);
    }

    /// Finishes the READY report (the supervisor calls this once the
    /// generation is ready): sends what [`report_ready_now`] left, or the
    /// whole report if it was not started (then `before` runs first).
    /// `Ok(true)`: the previous generation was told.
    ///
    /// [`report_ready_now`]: Self::report_ready_now
    pub(crate) async fn finish_ready_report(&self, before: impl FnOnce()) -> Result<bool, String> {
        let report = std::mem::replace(&mut *lock(&self.ready), ReadyReport::Finished);
        let sent = match report {
            ReadyReport::Finished => return Ok(false),
            ReadyReport::Failed(reason) => return Err(reason),
            ReadyReport::Started { rest } => self.send(&rest).await,
            ReadyReport::NotSent => {
                before();
                let sent = self.report(&self.ready_message()).await;
                profile::mark(Hop::ReadyWritten);
                sent
            }
        };
        sent.map(|()| true).map_err(|e| e.to_string())
    }

    fn ready_message(&self) -> ChildMessage {
        ChildMessage::Ready {
            state: self.state_report.clone(),
        }
    }

    /// Writes as much of `message` as the socket takes without waiting;
    /// returns the bytes left to send (none, unless the buffer is full).
    ///
    /// A plain non-blocking `write(2)`, not Tokio's `try_write`: a socket
    /// just registered with the runtime reads as not writable until the
    /// reactor has polled it once, and READY would wait for that for
    /// nothing.
    fn try_send(&self, message: &ChildMessage) -> io::Result<Vec<u8>> {
        let bytes = channel::encode_child_message(message)?;
        loop {
            return match nix::unistd::write(self.writer.as_ref(), &bytes) {
                Ok(n) => Ok(bytes[n..].to_vec()),
                Err(nix::errno::Errno::EAGAIN) => Ok(bytes),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => Err(e.into()),
            };
        }
    }

    /// Sends a report to the previous generation: `Failed` (this one failed
    /// before it was ready), `Stopping` (on probation, it was stopped: the
    /// previous generation stops too instead of taking the service back),
    /// an answer about connections it handed over.
    pub(crate) async fn report(&self, message: &ChildMessage) -> io::Result<()> {
        self.send(&channel::encode_child_message(message)?).await
    }

    /// Sends `bytes`, one whole message, after what is left of the READY
    /// report: a report that follows READY (an Unhealthy report, answers
    /// about connections) never overtakes it or cuts into it on the wire.
    async fn send(&self, bytes: &[u8]) -> io::Result<()> {
        let _one = self.sending.lock().await;
        let ready_rest = match &mut *lock(&self.ready) {
            ReadyReport::Started { rest } => std::mem::take(rest),
            _ => Vec::new(),
        };
        let stream = self.writer.as_ref();
        if let Err(e) = channel::send(stream, &ready_rest, &[]).await {
            *lock(&self.ready) = ReadyReport::Failed(e.to_string());
            return Err(e);
        }
        channel::send(stream, bytes, &[]).await
    }
}

/// What the previous generation did, as the supervisor learns it.
#[derive(Debug)]
pub(crate) enum FromPredecessor {
    /// It handed over for good (its probation of this generation passed)
    /// and drains as said; its final totals, which this one carries on.
    Committed(Draining, Totals),
    /// It handed over live connections, of which this many were taken.
    ConnectionsTaken(u64),
    /// How a drain goes: its own, or an older generation's, relayed.
    Progress(Draining),
    /// It was stopped while holding its listeners: the service stops; its
    /// claim to exit last.
    Stop(Claim),
    /// It died before handing over (its channel closed, its process gone).
    Gone,
    /// It closed the channel without handing over and is still alive: it
    /// gave this generation up.
    GaveUp,
}

/// Reads the previous generation's messages until the channel closes; then
/// tells whether it died or gave this generation up. The lines about the
/// restart carry its id (`restart`): each in a span made as it is logged,
/// the service's subscriber being installed only after this task started.
/// What the previous generation does goes to `events` (for the supervisor),
/// the connections it hands over to `arrived` (for the service).
async fn watch_predecessor(
    reader: OwnedReadHalf,
    link: Arc<PredecessorLink>,
    events: mpsc::UnboundedSender<FromPredecessor>,
    arrived: mpsc::UnboundedSender<Arrived>,
    restart: Option<RestartId>,
) {
    let in_span = |log: &dyn Fn()| telemetry::span_of(restart).in_scope(log);
    let mut messages = ParentReader::new();
    loop {
        let (message, fds, fds_lost) = match messages.next(reader.as_ref()).await {
            Ok(Some(FromParent {
                message,
                fds,
                fds_lost,
            })) => (message, fds, fds_lost),
            Ok(None) => break,
            Err(e) => {
                in_span(
                    &|| tracing::warn!(error = %e, "the channel to the previous generation failed"),
                );
                break;
            }
        };
        let event = match message {
            ParentMessage::Commit { drain, totals } => {
                in_span(&|| tracing::debug!("the previous generation handed over"));
                link.took_over.cancel();
                FromPredecessor::Committed(drain, totals)
            }
            ParentMessage::Progress(drain) => FromPredecessor::Progress(drain),
            ParentMessage::Stop { claim } => {
                in_span(&|| {
                    tracing::info!("the previous generation was stopped during this one's probation: the service stops")
                });
                FromPredecessor::Stop(claim)
            }
            ParentMessage::Connections(headers) => {
                // Answered; the supervisor learns how many were taken.
                let answer = connections::take_connections(headers, fds, fds_lost, &arrived);
                if let Err(e) = link.report(&answer).await {
                    tracing::debug!(error = %e, "could not answer handed-over connections");
                }
                match answer {
                    ChildMessage::ConnectionsAnswered { taken, .. } if !taken.is_empty() => {
                        FromPredecessor::ConnectionsTaken(taken.len() as u64)
                    }
                    _ => continue,
                }
            }
        };
        let _ = events.send(event);
    }
    if link.took_over.is_cancelled() {
        return;
    }
    let event = closed_before_commit(&link, restart).await;
    if matches!(event, FromPredecessor::Gone) {
        link.took_over.cancel();
    }
    let _ = events.send(event);
}

/// The channel closed before a commit: the previous generation died (this
/// one takes over), or it is still running and gave this one up. Logged
/// in the span of `restart` (see [`watch_predecessor`]).
async fn closed_before_commit(
    link: &PredecessorLink,
    restart: Option<RestartId>,
) -> FromPredecessor {
    let in_span = |log: &dyn Fn()| telemetry::span_of(restart).in_scope(log);
    match &link.predecessor {
        None => FromPredecessor::Gone,
        Some(watch) if watch.exits_within(EXIT_AFTER_CLOSE).await => {
            in_span(&|| {
                tracing::warn!(
                    pid = watch.pid,
                    "the previous generation died before it handed over; this one takes over"
                )
            });
            FromPredecessor::Gone
        }
        Some(watch) => {
            in_span(&|| {
                tracing::error!(
                    pid = watch.pid,
                    "the previous generation closed the channel without handing over and is still running: it gave this restart up (see its log for why); exiting"
                )
            });
            FromPredecessor::GaveUp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> ChildMessage {
        ChildMessage::Ready { state: None }
    }

    /// The link on one end of a socketpair, the previous generation's end
    /// as a Tokio stream.
    fn linked() -> (Arc<PredecessorLink>, UnixStream) {
        let (ours, theirs) = StdUnixStream::pair().unwrap();
        let link = PredecessorLink::start(ours, 0, None, None).unwrap();
        theirs.set_nonblocking(true).unwrap();
        (link, UnixStream::from_std(theirs).unwrap())
    }

    async fn next(theirs: &UnixStream) -> ChildMessage {
        channel::read_child_message(theirs).await.unwrap().unwrap()
    }

    /// A connection handed over is answered, and the supervisor learns that
    /// one more was taken (`shellflip_connections_handed_over_total`).
    #[tokio::test]
    async fn a_connection_taken_over_is_counted_for_the_supervisor() {
        use std::os::fd::AsFd;
        let (link, theirs) = linked();
        let (handed, _peer) = StdUnixStream::pair().unwrap();
        let message = channel::encode_parent_message(&ParentMessage::Connections(vec![
            channel::ConnectionHeader {
                id: 7,
                kind: channel::StreamKind::Unix,
                state: Vec::new(),
                unread: Vec::new(),
            },
        ]))
        .unwrap();
        fd::send_with_fds(theirs.as_fd(), &message, &[handed.as_fd()]).unwrap();
        assert_eq!(
            next(&theirs).await,
            ChildMessage::ConnectionsAnswered {
                taken: vec![7],
                refused: Vec::new()
            }
        );
        match link.take_events().unwrap().recv().await {
            Some(FromPredecessor::ConnectionsTaken(1)) => {}
            other => panic!("expected one connection taken, got {other:?}"),
        }
        assert!(link.take_connections().unwrap().recv().await.is_some());
    }

    /// READY goes out from `ready()` at once, before the runtime has polled
    /// the new socket even once.
    #[tokio::test]
    async fn ready_is_written_at_once_on_a_socket_just_registered() {
        let (link, theirs) = linked();
        link.report_ready_now(|| ());
        assert!(
            matches!(&*lock(&link.ready), ReadyReport::Started { rest } if rest.is_empty()),
            "READY was left for later: {:?}",
            lock(&link.ready)
        );
        assert_eq!(next(&theirs).await, ready());
        assert_eq!(link.finish_ready_report(|| ()).await, Ok(true));
    }

    /// What `ready()` could not write at once goes before a report that
    /// follows it, whole: the previous generation reads READY, then
    /// Unhealthy (it once read Unhealthy first, as a failure to start).
    #[tokio::test]
    async fn a_report_after_ready_never_overtakes_it() {
        let bytes = channel::encode_child_message(&ready()).unwrap();
        for written in [0, 3] {
            let (link, theirs) = linked();
            // As if the socket had taken only `written` bytes of READY.
            nix::unistd::write(link.writer.as_ref(), &bytes[..written]).unwrap();
            *lock(&link.ready) = ReadyReport::Started {
                rest: bytes[written..].to_vec(),
            };
            let reason = "the warm-up check failed".to_owned();
            link.report(&ChildMessage::Unhealthy { reason })
                .await
                .unwrap();
            assert_eq!(
                next(&theirs).await,
                ready(),
                "{written} bytes written first"
            );
            assert_eq!(
                next(&theirs).await,
                ChildMessage::Unhealthy {
                    reason: "the warm-up check failed".to_owned()
                }
            );
            // The supervisor's end of the report: already told, nothing more
            // is sent.
            assert_eq!(link.finish_ready_report(|| ()).await, Ok(true));
        }
    }
}
