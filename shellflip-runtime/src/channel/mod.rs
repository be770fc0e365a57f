//! The private channel between a generation and the next one: a Unix
//! stream socketpair whose child end is the only descriptor the new process
//! inherits (its number is in [`ENV_HANDOVER_FD`]).
//!
//! ```text
//! parent -> child   [u32 BE n][n bytes: MessagePack HandoverHeader]   (listener fds attached, SCM_RIGHTS)
//! child -> parent   [u32 BE n][n bytes: MessagePack ChildMessage]     SendState, if the header offers state
//! parent -> child   [u32 BE n][n bytes: MessagePack StateHeader]      (the state's fds attached)
//!                   [len bytes: the state envelope]                     snapshot taken on SendState
//! child -> parent   [u32 BE n][n bytes: MessagePack ChildMessage]     (Ready with what became of the state,
//!                                                                      or Failed with a reason)
//! child -> parent   (later, during the probation) Unhealthy with a reason: roll back
//! parent -> child   [u32 BE n][n bytes: MessagePack ParentMessage]    (Commit once the probation is
//!                   over; then, while the old generation drains, Progress: its own and that of
//!                   older generations still draining, relayed)
//! parent -> child   [u32 BE n][n bytes: MessagePack ParentMessage]    Connections: live connections
//!                   handed over, up to 253 per message, their sockets attached in order (see
//!                   `connections`)
//! child -> parent   [u32 BE n][n bytes: MessagePack ChildMessage]     ConnectionsAnswered for a batch
//!                   (the ids taken, the ids refused with why)
//! ```
//!
//! | message (direction)                      | when                                   | max bytes |
//! |------------------------------------------|----------------------------------------|----------:|
//! | `HandoverHeader` (old → new, fds)        | first, while the new process starts    |     1 MiB |
//! | `ChildMessage::SendState` (new → old)    | the new generation wants the state     |    64 KiB |
//! | `StateHeader` + envelope (old → new, fds)| on `SendState`                         |  1 MiB + state |
//! | `ChildMessage::Ready` / `Failed`         | the report                             |    64 KiB |
//! | `ChildMessage::Unhealthy`                | during the probation                   |    64 KiB |
//! | `ParentMessage::Commit` / `Progress`     | after the probation, while draining    | 1 MiB + 4 KiB |
//! | `ParentMessage::Connections` (fds)       | while draining                         | 1 MiB + 4 KiB |
//! | `ChildMessage::ConnectionsAnswered`      | once per batch                         |     1 MiB |
//!
//! The old generation's messages after the READY are read by a buffered
//! reader ([`ParentReader`]: several messages per read); the descriptors
//! received with a read belong to the last message that starts in it (a
//! `sendmsg` carrying descriptors always begins a message, and the kernel
//! ends a read after the bytes that came with descriptors).
//!
//! The new generation takes over — answers restart requests, may start a
//! generation of its own — only on `Commit`, or when the channel closes
//! *and* the old generation's process is gone (it died). A channel closed
//! by an old generation that is still alive means the restart failed on its
//! side (say the ready timeout passed): the new generation must not serve,
//! and exits.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shellflip_control::frame::{encode_frame, FrameBuffer, FrameDecoder, FrameError, FramePart};
use shellflip_control::protocol::LastRestart;

use crate::machine::Claim;
use crate::profile::{self, Hop};
use tokio::io::Interest;
use tokio::net::UnixStream;

use crate::control::server::ControlSocketFile;
use crate::fd;
use crate::frame::read_frame;
use crate::registry::StoredFd;
use crate::state::EncodedState;
use crate::telemetry::{RestartId, Totals};
use crate::timing::{self, unix_ms};

mod reading;

pub(crate) use reading::{ChildReader, FromParent, Incoming, ParentReader};

/// The environment variable naming the channel descriptor of a new
/// generation. Read and removed at start-up.
pub(crate) const ENV_HANDOVER_FD: &str = "SHELLFLIP_HANDOVER_FD";
const MAX_HEADER_BYTES: u32 = 1 << 20;
const MAX_MESSAGE_BYTES: u32 = 64 * 1024;
/// The largest message from the old generation: a handed-over connection
/// with its state and unread bytes (1 MiB at most), and its header; or a
/// batch of connections, bounded alike (see `connections`).
pub(crate) const MAX_PARENT_MESSAGE_BYTES: u32 = (1 << 20) + 4096;
/// The largest answer about a batch of connections (253 ids with reasons
/// of at most [`MAX_REASON_BYTES`] fit many times over).
const MAX_ANSWER_BYTES: u32 = 1 << 20;
/// The longest reason for refusing a connection, in an answer.
pub(crate) const MAX_REASON_BYTES: usize = 1024;

/// What a service's lineage carries from generation to generation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Lineage {
    /// When the first generation started (Unix time, ms).
    pub started_at_unix_ms: u64,
    /// Successful restarts so far.
    pub restarts: u64,
    /// Failed restarts so far.
    pub failed_restarts: u64,
    /// The last restart attempt.
    pub last_restart: Option<LastRestart>,
    /// The control socket file the first generation created (removed by
    /// the generation that finally stops).
    pub control_socket_file: Option<ControlSocketFile>,
    /// Names of the listeners systemd passed by socket activation (to the
    /// first generation): adopted by name, whatever the configured address.
    pub systemd_sockets: Vec<String>,
    /// The process group of the first generation: each generation joins it
    /// once it took over, so that a terminal's Ctrl-C (or a signal to the
    /// group) reaches the generation that serves. 0: none.
    pub process_group: u32,
    /// What systemd's fd store holds of this service's descriptors (with
    /// `fd_store` on): kept up to date by the generation that is the
    /// service.
    pub fd_store: Vec<StoredFd>,
}

impl Lineage {
    /// The lineage as generation `generation` will see it if the restart
    /// that starts it succeeds.
    pub(crate) fn for_successor(&self, generation: u64, systemd_sockets: Vec<String>) -> Lineage {
        let mut lineage = self.clone();
        lineage.systemd_sockets = systemd_sockets;
        lineage.restarts += 1;
        lineage.last_restart = Some(LastRestart {
            ok: true,
            at_unix_ms: unix_ms(),
            generation: Some(generation),
            ..LastRestart::default()
        });
        lineage
    }

    /// Records a failed restart that took `took`.
    pub(crate) fn record_failure(&mut self, took: Duration, error: &impl std::fmt::Display) {
        self.failed_restarts += 1;
        self.last_restart = Some(LastRestart {
            at_unix_ms: unix_ms(),
            duration_ms: timing::ms(took),
            error: Some(error.to_string()),
            ..LastRestart::default()
        });
    }

    /// Completes the record of the restart that started this generation
    /// (pid `pid`), now that it is ready.
    pub(crate) fn record_success(&mut self, pid: u32) {
        if let Some(last) = self.last_restart.as_mut() {
            last.pid = Some(pid);
            last.duration_ms = unix_ms().saturating_sub(last.at_unix_ms) as f64;
        }
    }
}

/// The first message to a new generation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub(crate) struct HandoverHeader {
    /// The new generation's number.
    pub generation: u64,
    /// Names of the attached descriptors, in order.
    pub fd_names: Vec<String>,
    /// Whether the new generation may ask for the state.
    pub state: StateOffer,
    /// Counters carried across generations.
    pub lineage: Lineage,
    /// When the previous generation began this restart (Unix time, µs):
    /// the new generation logs how long its start-up took from there.
    pub restart_began_unix_us: u64,
    /// The pid of the generation sending this handover, which the new one
    /// watches to tell its death from a failed restart.
    pub predecessor_pid: u32,
    /// The generations older than the sender that still drain.
    pub draining: Vec<Draining>,
    /// The restart that starts the new generation: the new generation's
    /// lines about it carry this id too (`None` in a first generation).
    pub restart_id: Option<RestartId>,
    /// The sender's totals at the restart's start, which the new generation
    /// exposes (and adds to) until it takes over (see `telemetry`).
    pub totals: Totals,
}

/// A generation that drains, as the newest generation learns of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Draining {
    /// Its generation number.
    pub generation: u64,
    /// Its pid.
    pub pid: u32,
    /// When its drain ends at the latest (Unix time, ms).
    pub deadline_unix_ms: u64,
    /// Its tasks still running, as it last reported.
    pub tasks: Option<u64>,
}

/// What kind of socket a handed-over connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StreamKind {
    Tcp,
    Unix,
}

/// One connection on its way: what the old generation sends with the
/// socket attached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ConnectionHeader {
    /// Numbers the connections of one batch handed over, for the answers.
    pub id: u64,
    pub kind: StreamKind,
    /// The connection's state, as a state envelope.
    #[serde(with = "crate::state::bytes")]
    pub state: Vec<u8>,
    /// Bytes read from the connection and not processed yet.
    #[serde(with = "crate::state::bytes")]
    pub unread: Vec<u8>,
}

/// The old generation's word to the new one after the handover.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) enum ParentMessage {
    /// The probation is over: the old generation stopped accepting for good
    /// and drains (as `drain` says); the new one is the service now.
    Commit {
        /// The old generation's drain.
        drain: Draining,
        /// The old generation's final totals (this restart counted), which
        /// the new one carries on.
        totals: Totals,
    },
    /// How a draining generation is doing: the sender's own drain, or an
    /// older generation's, relayed.
    Progress(Draining),
    /// The old generation was stopped during the new one's probation: the
    /// service stops, the new generation too; whichever claim is higher
    /// exits last.
    Stop { claim: Claim },
    /// Live connections, their sockets attached in the same order, one
    /// each (see `connections`).
    Connections(Vec<ConnectionHeader>),
}

/// A new generation's report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) enum ChildMessage {
    /// Send the state (the header offered it): the snapshot is taken now.
    SendState,
    /// Initialised and serving; what became of the handed-over state.
    Ready {
        /// `None`: the service keeps no state.
        state: Option<StateReport>,
    },
    /// Could not start; the reason is shown to whoever asked for the restart.
    Failed {
        /// The child's own explanation.
        reason: String,
    },
    /// Ready, but unfit (`Context::unhealthy`): during its probation, the
    /// old generation kills it and takes the service back.
    Unhealthy {
        /// The child's own explanation.
        reason: String,
    },
    /// Ready and on probation, it was stopped: the service stops, and the
    /// old generation stops too instead of taking the service back when it
    /// exits; whichever claim is higher exits last.
    Stopping { claim: Claim },
    /// The answer about a batch (`ParentMessage::Connections`): every
    /// connection of it is either taken (the old generation closes its
    /// copy) or refused (it serves it on).
    ConnectionsAnswered {
        /// The numbers of the connections taken.
        taken: Vec<u64>,
        /// The connections refused, by reason.
        refused: Vec<Refusal>,
    },
}

/// Connections of a batch refused for the same reason.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Refusal {
    /// Why (at most [`MAX_REASON_BYTES`]).
    pub reason: String,
    /// Their numbers in the batch handed over.
    pub ids: Vec<u64>,
}

/// What the old generation offers of its state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub(crate) enum StateOffer {
    /// The service keeps no state.
    #[default]
    None,
    /// The state is sent when the new generation asks for it
    /// (`ChildMessage::SendState`): the snapshot is taken then, as late
    /// as possible.
    OnRequest,
    /// The service has a state, but this restart starts the new generation
    /// with fresh state (for this reason).
    Fresh {
        /// Why: "asked with --fresh-state".
        reason: String,
    },
}

/// Announces the state envelope that follows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct StateHeader {
    /// The envelope's length.
    pub len: u64,
    /// Names of the attached descriptors (the state's), in order.
    pub fd_names: Vec<String>,
}

/// What became of the handed-over state in the new generation: in its
/// READY report, the restart's answer and `status`.
pub use shellflip_control::protocol::StateReport;

/// What a new generation received from its parent.
#[derive(Debug)]
pub(crate) struct Received {
    pub header: HandoverHeader,
    /// The listeners and other named descriptors, and the state's (named
    /// with their prefix).
    pub fds: Vec<(String, OwnedFd)>,
    pub state: Option<Vec<u8>>,
}

/// `value` in MessagePack, framed (at most `max` bytes).
fn encode<T: Serialize>(value: &T, max: u32) -> io::Result<Vec<u8>> {
    let payload = rmp_serde::to_vec_named(value).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(encode_frame(&payload, max)?)
}

/// A frame's payload decoded as `T`; else an error about `what`.
fn decode<T: DeserializeOwned>(payload: &[u8], what: &str) -> io::Result<T> {
    rmp_serde::from_slice(payload).map_err(|e| invalid(format!("unreadable {what}: {e}")))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// A frame error as an `io::Error`; an oversized frame says who `sent` it.
fn frame_error(error: FrameError, sent: &str) -> io::Error {
    match error {
        FrameError::TooLarge { len, max } => {
            invalid(format!("{sent} a {len}-byte message, more than {max}"))
        }
        error => error.into(),
    }
}

/// Whether the stream ended before a frame's payload began: between
/// frames or within a length.
fn closed_before_payload(error: &FrameError) -> bool {
    matches!(
        error,
        FrameError::Eof
            | FrameError::Truncated {
                part: FramePart::Length,
                ..
            }
    )
}

/// Parent side: sends the header with the descriptors. Takes the stream by
/// shared reference, so that the parent can send before the new process
/// even exists (the socket buffers it) while it waits for the spawn, then
/// read the reports on the same stream.
pub(crate) async fn send_handover(
    stream: &UnixStream,
    header: &HandoverHeader,
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    send(stream, &encode(header, MAX_HEADER_BYTES)?, fds).await
}

/// Parent side: sends the state (on the new generation's request), its
/// descriptors attached to the header.
pub(crate) async fn send_state(
    stream: &UnixStream,
    state: &EncodedState,
    fds: &[(String, OwnedFd)],
) -> io::Result<()> {
    let header = StateHeader {
        len: state.len() as u64,
        fd_names: fds.iter().map(|(name, _)| name.clone()).collect(),
    };
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|(_, fd)| fd.as_fd()).collect();
    send(stream, &encode(&header, MAX_HEADER_BYTES)?, &borrowed).await?;
    send(stream, &state.header, &[]).await?;
    send(stream, &state.payload, &[]).await
}

/// Writes all of `bytes`, with `fds` attached to the first of them.
pub(crate) async fn send(
    stream: &UnixStream,
    mut bytes: &[u8],
    mut fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    while !bytes.is_empty() {
        let sent = stream
            .async_io(Interest::WRITABLE, || {
                fd::send_with_fds(stream.as_fd(), bytes, fds)
            })
            .await?;
        if sent == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        (bytes, fds) = (&bytes[sent..], &[]);
    }
    Ok(())
}

/// Parent side: waits for the child's report. `None`: the child closed the
/// channel without reporting (it exited or crashed) — before or within the
/// report's length; a report cut in its payload is an error.
pub(crate) async fn read_child_message(stream: &UnixStream) -> io::Result<Option<ChildMessage>> {
    let payload = match read_frame(stream, MAX_MESSAGE_BYTES).await {
        Ok(payload) => payload,
        Err(e) if closed_before_payload(&e) => return Ok(None),
        Err(e) => return Err(frame_error(e, "the new generation sent")),
    };
    decode(&payload, "report from the new generation").map(Some)
}

/// Child side: encodes a report.
pub(crate) fn encode_child_message(message: &ChildMessage) -> io::Result<Vec<u8>> {
    let max = match message {
        ChildMessage::ConnectionsAnswered { .. } => MAX_ANSWER_BYTES,
        _ => MAX_MESSAGE_BYTES,
    };
    encode(message, max)
}

/// Parent side: encodes a message to the new generation.
pub(crate) fn encode_parent_message(message: &ParentMessage) -> io::Result<Vec<u8>> {
    encode(message, MAX_PARENT_MESSAGE_BYTES)
}

/// Child side: receives the handover, blocking (the caller sets a read
/// timeout on `stream`); asks for the state if it is offered and `wants_state`.
pub(crate) fn receive_handover(
    stream: &mut StdUnixStream,
    wants_state: bool,
) -> io::Result<Received> {
    let (payload, fds) = read_frame_with_fds(stream, MAX_HEADER_BYTES, "handing over")?;
    let header: HandoverHeader = decode(&payload, "handover header")?;
    let mut fds = name_fds(&header.fd_names, fds)?;
    profile::mark(Hop::HandoverRead);
    let state = match header.state {
        StateOffer::OnRequest if wants_state => {
            std::io::Write::write_all(stream, &encode_child_message(&ChildMessage::SendState)?)?;
            let (payload, state_fds) =
                read_frame_with_fds(stream, MAX_HEADER_BYTES, "sending the state")?;
            let state_header: StateHeader = decode(&payload, "state header")?;
            fds.extend(name_fds(&state_header.fd_names, state_fds)?);
            let state = read_state(stream, state_header.len)?;
            profile::mark(Hop::StateReceived);
            Some(state)
        }
        _ => None,
    };
    Ok(Received { header, fds, state })
}

/// Reads one frame, adopting the descriptors attached to any of its bytes.
fn read_frame_with_fds(
    stream: &mut StdUnixStream,
    max: u32,
    doing: &str,
) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut decoder = FrameDecoder::new(max);
    let mut fds = Vec::new();
    loop {
        let (n, mut got) = fd::recv_with_fds(stream.as_fd(), decoder.buf())?;
        fds.append(&mut got);
        match decoder.advance(n) {
            Ok(Some(payload)) => return Ok((payload, fds)),
            Ok(None) => {}
            Err(e) if closed_before_payload(&e) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the previous generation closed the channel before {doing}"),
                ))
            }
            Err(e) => return Err(frame_error(e, "the previous generation sent")),
        }
    }
}

fn name_fds(names: &[String], fds: Vec<OwnedFd>) -> io::Result<Vec<(String, OwnedFd)>> {
    if names.len() != fds.len() {
        return Err(invalid(format!(
            "the handover names {} descriptors but {} arrived",
            names.len(),
            fds.len()
        )));
    }
    Ok(names.iter().cloned().zip(fds).collect())
}

fn read_state(stream: &mut StdUnixStream, state_len: u64) -> io::Result<Vec<u8>> {
    if state_len > crate::state::MAX_STATE_BYTES {
        return Err(invalid(format!(
            "handover state of {state_len} bytes, more than {} (MAX_STATE_BYTES)",
            crate::state::MAX_STATE_BYTES
        )));
    }
    // Announced by the (trusted) previous generation and bounded above:
    // allocated once rather than grown and copied.
    let mut state = state_buffer(state_len)?;
    let read = stream.by_ref().take(state_len).read_to_end(&mut state)?;
    if read as u64 != state_len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("handover state truncated: {read} of {state_len} bytes arrived"),
        ));
    }
    Ok(state)
}

/// A buffer for a state of `len` bytes: an error naming the size, rather
/// than an abort, if the memory cannot be had; backed by huge pages when
/// large (receiving is mostly faulting fresh memory in).
fn state_buffer(len: u64) -> io::Result<Vec<u8>> {
    let out_of_memory = |why: String| {
        io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!(
                "cannot allocate {len} bytes ({:.2} GiB) to receive the handover state: {why}; give the service more memory, or have the old generation keep less state",
                len as f64 / f64::from(1u32 << 30)
            ),
        )
    };
    let len = usize::try_from(len)
        .map_err(|_| out_of_memory("more than the address space".to_owned()))?;
    fd::huge_buffer(len).map_err(|e| out_of_memory(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(names: &[&str], state: StateOffer) -> HandoverHeader {
        HandoverHeader {
            generation: 2,
            fd_names: names.iter().map(|s| s.to_string()).collect(),
            state,
            lineage: Lineage::default(),
            restart_began_unix_us: 1_700_000_000_000_000,
            predecessor_pid: 4242,
            draining: vec![Draining {
                generation: 1,
                pid: 41,
                deadline_unix_ms: 1_700_000_000_000,
                tasks: Some(3),
            }],
            restart_id: Some(RestartId {
                generation: 1,
                ordinal: 2,
            }),
            totals: Totals {
                succeeded: 5,
                ..Totals::default()
            },
        }
    }

    async fn send_child_message(stream: &UnixStream, message: &ChildMessage) {
        let bytes = encode_child_message(message).unwrap();
        send(stream, &bytes, &[]).await.unwrap();
    }

    fn state_header_frame(len: u64, names: &[&str]) -> Vec<u8> {
        let header = StateHeader {
            len,
            fd_names: names.iter().map(|s| s.to_string()).collect(),
        };
        encode(&header, MAX_HEADER_BYTES).unwrap()
    }

    #[tokio::test]
    async fn the_state_is_sent_on_request_with_its_fds() {
        let (parent, child) = StdUnixStream::pair().unwrap();
        parent.set_nonblocking(true).unwrap();
        let parent = UnixStream::from_std(parent).unwrap();
        let (keep, passed) = StdUnixStream::pair().unwrap();
        let (keep_state, state_fd) = StdUnixStream::pair().unwrap();
        let state = vec![7u8; 300_000];
        let h = header(&["echo"], StateOffer::OnRequest);
        let receiver = std::thread::spawn(move || {
            let mut child = child;
            receive_handover(&mut child, true).unwrap()
        });
        send_handover(&parent, &h, &[passed.as_fd()]).await.unwrap();
        // The new generation asks; the snapshot is sent then.
        assert_eq!(
            read_child_message(&parent).await.unwrap(),
            Some(ChildMessage::SendState)
        );
        let (head, tail) = state.split_at(10);
        let parts = EncodedState {
            header: head.to_vec(),
            payload: tail.to_vec(),
        };
        let state_fds = vec![("shellflip.state.peer".to_owned(), OwnedFd::from(state_fd))];
        send_state(&parent, &parts, &state_fds).await.unwrap();
        let received = receiver.join().unwrap();
        assert_eq!(received.header, h);
        assert_eq!(received.state.as_deref(), Some(&state[..]));
        let names: Vec<&str> = received.fds.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["echo", "shellflip.state.peer"]);
        drop((keep, keep_state));
    }

    #[test]
    fn an_offered_state_is_not_asked_for_by_a_service_without_state() {
        let (mut parent, mut child) = StdUnixStream::pair().unwrap();
        let message = encode(&header(&[], StateOffer::OnRequest), MAX_HEADER_BYTES).unwrap();
        std::io::Write::write_all(&mut parent, &message).unwrap();
        let received = receive_handover(&mut child, false).unwrap();
        assert_eq!(received.state, None);
        // Nothing was asked.
        parent.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 1];
        let read = std::io::Read::read(&mut parent, &mut buf);
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    #[tokio::test]
    async fn child_messages_round_trip_and_eof_is_none() {
        let (a, b) = UnixStream::pair().unwrap();
        let failed = ChildMessage::Failed {
            reason: "boom".into(),
        };
        send_child_message(&a, &failed).await;
        let report = StateReport {
            type_name: "State".into(),
            version: 2,
            bytes: 10,
            migrated_from: Some(1),
            dropped: vec!["State.old".into()],
            not_carried: None,
        };
        let ready = ChildMessage::Ready {
            state: Some(report),
        };
        send_child_message(&a, &ready).await;
        drop(a);
        assert_eq!(
            read_child_message(&b).await.unwrap(),
            Some(ChildMessage::Failed {
                reason: "boom".into()
            })
        );
        assert_eq!(read_child_message(&b).await.unwrap(), Some(ready));
        assert_eq!(read_child_message(&b).await.unwrap(), None);
    }

    /// Writes the header offering state, then (as the previous generation
    /// would on the request) `after` on the same socket.
    fn offered_then(after: &[u8]) -> Result<Received, io::Error> {
        let (mut parent, mut child) = StdUnixStream::pair().unwrap();
        let message = encode(&header(&[], StateOffer::OnRequest), MAX_HEADER_BYTES).unwrap();
        std::io::Write::write_all(&mut parent, &message).unwrap();
        std::io::Write::write_all(&mut parent, after).unwrap();
        // Nothing more comes; the request for the state can still be sent.
        parent.shutdown(std::net::Shutdown::Write).unwrap();
        receive_handover(&mut child, true)
    }

    #[test]
    fn truncated_state_is_an_error() {
        let mut after = state_header_frame(100, &[]);
        after.extend_from_slice(&[1, 2, 3]);
        let err = offered_then(&after).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn oversized_state_announcement_is_refused_without_reading_it() {
        let announced = crate::state::MAX_STATE_BYTES + 1;
        let err = offered_then(&state_header_frame(announced, &[])).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("more than"), "{err}");
    }

    #[test]
    fn a_state_that_cannot_be_allocated_is_an_error_naming_its_size() {
        let len = u64::MAX >> 1;
        let err = state_buffer(len).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::OutOfMemory);
        assert!(
            err.to_string()
                .contains(&format!("cannot allocate {len} bytes")),
            "{err}"
        );
        assert!(state_buffer(1000).unwrap().capacity() >= 1000);
    }

    #[test]
    fn fd_count_must_match_the_names() {
        let (parent, mut child) = StdUnixStream::pair().unwrap();
        let (a, _b) = StdUnixStream::pair().unwrap();
        let message = encode(&header(&["one", "two"], StateOffer::None), MAX_HEADER_BYTES).unwrap();
        let sent = fd::send_with_fds(parent.as_fd(), &message, &[a.as_fd()]).unwrap();
        assert_eq!(sent, message.len());
        let err = receive_handover(&mut child, true).unwrap_err();
        assert!(
            err.to_string()
                .contains("names 2 descriptors but 1 arrived"),
            "{err}"
        );
    }

    #[test]
    fn oversized_header_is_refused() {
        let (mut parent, mut child) = StdUnixStream::pair().unwrap();
        std::io::Write::write_all(&mut parent, &u32::MAX.to_be_bytes()).unwrap();
        let err = receive_handover(&mut child, true).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn descriptors_from_the_previous_generation_are_recorded_for_the_accept_watch() {
        let (parent, child) = UnixStream::pair().unwrap();
        let (passed, _peer) = StdUnixStream::pair().unwrap();
        let inode = crate::accept_watch::socket_inode_of(&passed).unwrap();
        let record = crate::accept_watch::process_record();
        record.arm();
        let message = encode_parent_message(&ParentMessage::Progress(Draining {
            generation: 1,
            pid: 1,
            deadline_unix_ms: 0,
            tasks: None,
        }))
        .unwrap();
        fd::send_with_fds(parent.as_fd(), &message, &[passed.as_fd()]).unwrap();
        let got = reading::ParentReader::new()
            .next(&child)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.fds.len(), 1);
        assert!(record.contains(inode));
        record.disarm();
    }

    #[test]
    fn eof_before_handover_is_reported() {
        let (parent, mut child) = StdUnixStream::pair().unwrap();
        drop(parent);
        let err = receive_handover(&mut child, true).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
