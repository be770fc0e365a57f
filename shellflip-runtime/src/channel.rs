//! The private channel between a generation and the next one: a Unix
//! stream socketpair whose child end is the only descriptor the new process
//! inherits (its number is in [`ENV_HANDOVER_FD`]).
//!
//! ```text
//! parent -> child   [u32 BE n][n bytes: MessagePack HandoverHeader]   (all fds attached, SCM_RIGHTS)
//!                   [state_len bytes: the state envelope, if any]
//! child -> parent   [u32 BE n][n bytes: MessagePack ChildMessage]     (Ready, or Failed with a reason)
//! child -> parent   (later, during the probation) Unhealthy with a reason: roll back
//! parent -> child   [u32 BE n][n bytes: MessagePack ParentMessage]    (Commit once the probation is
//!                   over; then, while the old generation drains, Progress: its own and that of
//!                   older generations still draining, relayed)
//! ```
//!
//! The new generation takes over — answers restart requests, may start a
//! generation of its own — only on `Commit`, or when the channel closes
//! *and* the old generation's process is gone (it died). A channel closed
//! by an old generation that is still alive means the restart failed on its
//! side (say the ready timeout passed): the new generation must not serve,
//! and exits.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::Interest;
use tokio::net::UnixStream;

use crate::control::protocol::LastRestart;
use crate::control::server::ControlSocketFile;
use crate::fd;
use crate::frame::{encode_frame, read_frame, FrameDecoder, FrameError, FramePart};
use crate::registry::StoredFd;
use crate::state::EncodedState;
use crate::timing::{self, unix_ms};

/// The environment variable naming the channel descriptor of a new
/// generation. Read and removed at start-up.
pub(crate) const ENV_HANDOVER_FD: &str = "SHELLFLIP_HANDOVER_FD";
const MAX_HEADER_BYTES: u32 = 1 << 20;
const MAX_MESSAGE_BYTES: u32 = 64 * 1024;

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
    #[serde(default)]
    pub systemd_sockets: Vec<String>,
    /// The process group of the first generation: each generation joins it
    /// once it took over, so that a terminal's Ctrl-C (or a signal to the
    /// group) reaches the generation that serves. 0: none.
    #[serde(default)]
    pub process_group: u32,
    /// What systemd's fd store holds of this service's descriptors (with
    /// `fd_store` on): kept up to date by the generation that is the
    /// service.
    #[serde(default)]
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
            duration_ms: 0.0,
            pid: None,
            generation: Some(generation),
            error: None,
        });
        lineage
    }

    /// Records a failed restart that took `took`.
    pub(crate) fn record_failure(&mut self, took: Duration, error: &impl std::fmt::Display) {
        self.failed_restarts += 1;
        self.last_restart = Some(LastRestart {
            ok: false,
            at_unix_ms: unix_ms(),
            duration_ms: timing::ms(took),
            pid: None,
            generation: None,
            error: Some(error.to_string()),
        });
    }

    /// Records a restart rolled back after its READY (see `why`).
    pub(crate) fn record_rollback(&mut self, why: &str) {
        self.failed_restarts += 1;
        self.last_restart = Some(LastRestart {
            ok: false,
            at_unix_ms: unix_ms(),
            duration_ms: 0.0,
            pid: None,
            generation: None,
            error: Some(why.to_owned()),
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct HandoverHeader {
    /// The new generation's number.
    pub generation: u64,
    /// Names of the attached descriptors, in order.
    pub fd_names: Vec<String>,
    /// Length of the state envelope that follows, if state is handed over.
    pub state_len: Option<u64>,
    /// Counters carried across generations.
    pub lineage: Lineage,
    /// When the previous generation began this restart (Unix time, µs):
    /// the new generation logs how long its start-up took from there.
    #[serde(default)]
    pub restart_began_unix_us: u64,
    /// The pid of the generation sending this handover, which the new one
    /// watches to tell its death from a failed restart.
    #[serde(default)]
    pub predecessor_pid: u32,
    /// The generations older than the sender that still drain.
    #[serde(default)]
    pub draining: Vec<Draining>,
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

/// The old generation's word to the new one after the handover.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) enum ParentMessage {
    /// The probation is over: the old generation stopped accepting for good
    /// and drains (as `drain` says); the new one is the service now.
    Commit {
        /// The old generation's drain.
        drain: Draining,
    },
    /// How a draining generation is doing: the sender's own drain, or an
    /// older generation's, relayed.
    Progress(Draining),
}

/// A new generation's report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) enum ChildMessage {
    /// Initialised and serving.
    Ready,
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
}

/// What a new generation received from its parent.
#[derive(Debug)]
pub(crate) struct Received {
    pub header: HandoverHeader,
    pub fds: Vec<(String, OwnedFd)>,
    pub state: Option<Vec<u8>>,
}

fn frame(payload: &[u8], max: u32) -> io::Result<Vec<u8>> {
    Ok(encode_frame(payload, max)?)
}

fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    rmp_serde::to_vec_named(value).map_err(|e| io::Error::other(e.to_string()))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Parent side: sends the header with the descriptors, then the state.
/// Takes the stream by shared reference, so that the parent can start
/// sending before the new process even exists (the socket buffers what it
/// can) while it waits for the spawn, then read the report on the same
/// stream.
pub(crate) async fn send_handover(
    stream: &UnixStream,
    header: &HandoverHeader,
    fds: &[BorrowedFd<'_>],
    state: Option<&EncodedState>,
) -> io::Result<()> {
    let message = frame(&encode(header)?, MAX_HEADER_BYTES)?;
    let sent = stream
        .async_io(Interest::WRITABLE, || {
            fd::send_with_fds(stream.as_fd(), &message, fds)
        })
        .await?;
    write_all(stream, &message[sent..]).await?;
    if let Some(state) = state {
        write_all(stream, &state.header).await?;
        write_all(stream, &state.payload).await?;
    }
    Ok(())
}

async fn write_all(stream: &UnixStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Parent side: waits for the child's report. `None`: the child closed the
/// channel without reporting (it exited or crashed) — before or within the
/// report's length; a report cut in its payload is an error.
pub(crate) async fn read_child_message(stream: &UnixStream) -> io::Result<Option<ChildMessage>> {
    let mut decoder = FrameDecoder::new(MAX_MESSAGE_BYTES);
    let payload = loop {
        stream.readable().await?;
        let n = match stream.try_read(decoder.buf()) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        match decoder.advance(n) {
            Ok(Some(payload)) => break payload,
            Ok(None) => {}
            Err(
                FrameError::Eof
                | FrameError::Truncated {
                    part: FramePart::Length,
                    ..
                },
            ) => return Ok(None),
            Err(FrameError::TooLarge { len, max }) => {
                return Err(invalid(format!(
                    "the new generation sent a {len}-byte report, more than {max}"
                )))
            }
            Err(e) => return Err(e.into()),
        }
    };
    rmp_serde::from_slice(&payload)
        .map(Some)
        .map_err(|e| invalid(format!("unreadable report from the new generation: {e}")))
}

/// Child side: encodes a report.
pub(crate) fn encode_child_message(message: &ChildMessage) -> io::Result<Vec<u8>> {
    frame(&encode(message)?, MAX_MESSAGE_BYTES)
}

/// Parent side: encodes a message to the new generation.
pub(crate) fn encode_parent_message(message: &ParentMessage) -> io::Result<Vec<u8>> {
    frame(&encode(message)?, MAX_MESSAGE_BYTES)
}

/// Child side: waits for the old generation's next message. `None`: the
/// channel closed.
pub(crate) async fn read_parent_message(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
) -> io::Result<Option<ParentMessage>> {
    let payload = match read_frame(stream, MAX_MESSAGE_BYTES).await {
        Ok(payload) => payload,
        Err(e) if e.is_closed() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    rmp_serde::from_slice(&payload).map(Some).map_err(|e| {
        invalid(format!(
            "unreadable message from the previous generation: {e}"
        ))
    })
}

/// Child side: sends a report.
#[cfg(test)]
pub(crate) async fn send_child_message(
    stream: &mut UnixStream,
    message: &ChildMessage,
) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    stream.write_all(&encode_child_message(message)?).await?;
    stream.flush().await
}

/// Child side: receives the handover, blocking (the caller sets a read
/// timeout on `stream`).
pub(crate) fn receive_handover(stream: &mut StdUnixStream) -> io::Result<Received> {
    // The descriptors come with the header's first bytes; every read of the
    // header adopts whatever is attached.
    let mut decoder = FrameDecoder::new(MAX_HEADER_BYTES);
    let mut fds = Vec::new();
    let payload = loop {
        let (n, mut got) = match fd::recv_with_fds(stream.as_fd(), decoder.buf()) {
            Ok(received) => received,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        fds.append(&mut got);
        match decoder.advance(n) {
            Ok(Some(payload)) => break payload,
            Ok(None) => {}
            Err(
                FrameError::Eof
                | FrameError::Truncated {
                    part: FramePart::Length,
                    ..
                },
            ) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the previous generation closed the channel before handing over",
                ))
            }
            Err(FrameError::TooLarge { len, max }) => {
                return Err(invalid(format!(
                    "handover header of {len} bytes, more than {max}"
                )))
            }
            Err(e) => return Err(e.into()),
        }
    };
    let header: HandoverHeader = rmp_serde::from_slice(&payload)
        .map_err(|e| invalid(format!("unreadable handover header: {e}")))?;
    if header.fd_names.len() != fds.len() {
        return Err(invalid(format!(
            "the handover names {} descriptors but {} arrived",
            header.fd_names.len(),
            fds.len()
        )));
    }
    let state = match header.state_len {
        None => None,
        Some(state_len) if state_len > crate::state::MAX_STATE_BYTES => {
            return Err(invalid(format!(
                "handover state of {state_len} bytes, more than {}",
                crate::state::MAX_STATE_BYTES
            )))
        }
        Some(state_len) => {
            // Announced by the (trusted) previous generation and bounded
            // above: allocated once rather than grown and copied.
            let mut state = Vec::with_capacity(state_len as usize);
            let read = stream.by_ref().take(state_len).read_to_end(&mut state)?;
            if read as u64 != state_len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("handover state truncated: {read} of {state_len} bytes arrived"),
                ));
            }
            Some(state)
        }
    };
    let fds = header.fd_names.iter().cloned().zip(fds).collect();
    Ok(Received { header, fds, state })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(names: &[&str], state_len: Option<u64>) -> HandoverHeader {
        HandoverHeader {
            generation: 2,
            fd_names: names.iter().map(|s| s.to_string()).collect(),
            state_len,
            lineage: Lineage::default(),
            restart_began_unix_us: 1_700_000_000_000_000,
            predecessor_pid: 4242,
            draining: vec![Draining {
                generation: 1,
                pid: 41,
                deadline_unix_ms: 1_700_000_000_000,
                tasks: Some(3),
            }],
        }
    }

    #[tokio::test]
    async fn handover_round_trip_with_fds_and_state() {
        let (parent, child) = StdUnixStream::pair().unwrap();
        parent.set_nonblocking(true).unwrap();
        let parent = UnixStream::from_std(parent).unwrap();
        let (keep, passed) = StdUnixStream::pair().unwrap();
        let state = vec![7u8; 300_000];
        let h = header(&["echo"], Some(state.len() as u64));
        let receiver = std::thread::spawn(move || {
            let mut child = child;
            receive_handover(&mut child).unwrap()
        });
        let (head, tail) = state.split_at(10);
        let parts = EncodedState {
            header: head.to_vec(),
            payload: tail.to_vec(),
        };
        send_handover(&parent, &h, &[passed.as_fd()], Some(&parts))
            .await
            .unwrap();
        let received = receiver.join().unwrap();
        assert_eq!(received.header, h);
        assert_eq!(received.state.as_deref(), Some(&state[..]));
        assert_eq!(received.fds.len(), 1);
        assert_eq!(received.fds[0].0, "echo");
        drop(keep);
    }

    #[tokio::test]
    async fn child_messages_round_trip_and_eof_is_none() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, b) = (a, b);
        send_child_message(
            &mut a,
            &ChildMessage::Failed {
                reason: "boom".into(),
            },
        )
        .await
        .unwrap();
        send_child_message(&mut a, &ChildMessage::Ready)
            .await
            .unwrap();
        drop(a);
        assert_eq!(
            read_child_message(&b).await.unwrap(),
            Some(ChildMessage::Failed {
                reason: "boom".into()
            })
        );
        assert_eq!(
            read_child_message(&b).await.unwrap(),
            Some(ChildMessage::Ready)
        );
        assert_eq!(read_child_message(&b).await.unwrap(), None);
    }

    #[test]
    fn truncated_state_is_an_error() {
        let (mut parent, mut child) = StdUnixStream::pair().unwrap();
        let message = frame(&encode(&header(&[], Some(100))).unwrap(), MAX_HEADER_BYTES).unwrap();
        std::io::Write::write_all(&mut parent, &message).unwrap();
        std::io::Write::write_all(&mut parent, &[1, 2, 3]).unwrap();
        drop(parent);
        let err = receive_handover(&mut child).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn oversized_state_announcement_is_refused_without_reading_it() {
        let (mut parent, mut child) = StdUnixStream::pair().unwrap();
        let announced = crate::state::MAX_STATE_BYTES + 1;
        let message = frame(
            &encode(&header(&[], Some(announced))).unwrap(),
            MAX_HEADER_BYTES,
        )
        .unwrap();
        std::io::Write::write_all(&mut parent, &message).unwrap();
        let err = receive_handover(&mut child).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("more than"), "{err}");
    }

    #[test]
    fn fd_count_must_match_the_names() {
        let (parent, mut child) = StdUnixStream::pair().unwrap();
        let (a, _b) = StdUnixStream::pair().unwrap();
        let message = frame(
            &encode(&header(&["one", "two"], None)).unwrap(),
            MAX_HEADER_BYTES,
        )
        .unwrap();
        let sent = fd::send_with_fds(parent.as_fd(), &message, &[a.as_fd()]).unwrap();
        assert_eq!(sent, message.len());
        let err = receive_handover(&mut child).unwrap_err();
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
        let err = receive_handover(&mut child).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn eof_before_handover_is_reported() {
        let (parent, mut child) = StdUnixStream::pair().unwrap();
        drop(parent);
        let err = receive_handover(&mut child).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
