//! Reading the channel: [`ParentReader`] and [`ChildReader`] take in several
//! messages per read and attach each message's descriptors to it.

use super::*;

/// A message from the old generation with what was attached to it.
pub(crate) struct FromParent {
    pub message: ParentMessage,
    /// The descriptors attached (a handed-over connection's socket, or a
    /// batch's, in order).
    pub fds: Vec<OwnedFd>,
    /// Descriptors were attached but some (the last ones) were lost: this
    /// process is at its open-file limit.
    pub fds_lost: bool,
}

/// Child side: the old generation's messages once the handover is
/// received, with the descriptors attached to them. Buffered: one read
/// takes in as many messages as the socket holds (a burst of batches,
/// progress reports); the surplus waits here for the next call, so keep
/// one reader for the channel's whole life.
#[derive(Debug)]
pub(crate) struct ParentReader {
    pub(super) frames: FrameBuffer,
    /// Descriptors received, by the stream offset of the message they came
    /// with, oldest first.
    pub(super) attached: VecDeque<Attached>,
}

#[derive(Debug)]
pub(super) struct Attached {
    pub(super) message: u64,
    pub(super) fds: Vec<OwnedFd>,
    pub(super) lost: bool,
}

impl ParentReader {
    pub(crate) fn new() -> Self {
        ParentReader {
            frames: FrameBuffer::new(MAX_PARENT_MESSAGE_BYTES),
            attached: VecDeque::new(),
        }
    }

    /// The next message, with the descriptors attached to it (a
    /// handed-over connection's socket, a batch's sockets). `None`: the
    /// channel closed (between messages or inside one). Cancel-safe: what
    /// was read stays in the reader.
    pub(crate) async fn next(&mut self, stream: &UnixStream) -> io::Result<Option<FromParent>> {
        loop {
            if let Some((offset, payload)) = self.frames.next_frame() {
                let (fds, fds_lost) = self.take_attached(offset);
                let message = rmp_serde::from_slice(&payload).map_err(|e| {
                    invalid(format!(
                        "unreadable message from the previous generation: {e}"
                    ))
                })?;
                return Ok(Some(FromParent {
                    message,
                    fds,
                    fds_lost,
                }));
            }
            let frames = &mut self.frames;
            let received = stream
                .async_io(Interest::READABLE, || {
                    fd::recv_with_fds_or_lost(stream.as_fd(), frames.spare())
                })
                .await;
            let (n, fds, lost) = match received {
                Ok(received) => received,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            // Handed-over connections: not accepted here (see accept_watch).
            crate::accept_watch::received(&fds);
            if n == 0 {
                return Ok(None);
            }
            let starts = self.frames.filled(n).map_err(|e| match e {
                FrameError::TooLarge { len, max } => invalid(format!(
                    "the previous generation sent a {len}-byte message, more than {max}"
                )),
                e => e.into(),
            })?;
            if fds.is_empty() && !lost {
                continue;
            }
            // Descriptors come with the first byte of the sendmsg that
            // carried them, which is the first byte of a message, and the
            // kernel ends the read after that sendmsg's bytes: they belong
            // to the last message starting in this read.
            let Some(message) = starts else {
                return Err(invalid(
                    "descriptors arrived in the middle of a message from the previous generation"
                        .to_owned(),
                ));
            };
            self.attached.push_back(Attached { message, fds, lost });
        }
    }

    pub(super) fn take_attached(&mut self, message: u64) -> (Vec<OwnedFd>, bool) {
        // Each message takes its own, so none is left for an earlier one.
        while let Some(first) = self.attached.front() {
            if first.message > message {
                break;
            }
            if let Some(attached) = self.attached.pop_front() {
                if attached.message == message {
                    return (attached.fds, attached.lost);
                }
            }
        }
        (Vec::new(), false)
    }
}

/// Parent side, once the new generation took over: its answers about
/// handed-over connections. Buffered like [`ParentReader`]; keep one
/// reader for the channel's remaining life.
#[derive(Debug)]
pub(crate) struct ChildReader {
    pub(super) frames: FrameBuffer,
}

impl ChildReader {
    pub(crate) fn new() -> Self {
        ChildReader {
            frames: FrameBuffer::new(MAX_ANSWER_BYTES),
        }
    }

    /// The next message. `None`: the channel closed (between messages or
    /// inside one). Cancel-safe.
    pub(crate) async fn next(&mut self, stream: &UnixStream) -> io::Result<Option<ChildMessage>> {
        loop {
            if let Some((_, payload)) = self.frames.next_frame() {
                return rmp_serde::from_slice(&payload).map(Some).map_err(|e| {
                    invalid(format!("unreadable message from the new generation: {e}"))
                });
            }
            stream.readable().await?;
            let n = match stream.try_read(self.frames.spare()) {
                Ok(0) => return Ok(None),
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            };
            self.frames.filled(n).map_err(|e| match e {
                FrameError::TooLarge { len, max } => invalid(format!(
                    "the new generation sent a {len}-byte message, more than {max}"
                )),
                e => e.into(),
            })?;
        }
    }
}
