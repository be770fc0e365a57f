//! Reading the channel: [`Reader`] ([`ParentReader`], [`ChildReader`]) takes
//! in several messages per read and attaches each message's descriptors to
//! it.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use super::*;

/// A message from the other generation with what was attached to it.
pub(crate) struct Incoming<M> {
    pub message: M,
    /// The descriptors attached (a handed-over connection's socket, or a
    /// batch's, in order).
    pub fds: Vec<OwnedFd>,
    /// Descriptors were attached but some (the last ones) were lost: this
    /// process is at its open-file limit.
    pub fds_lost: bool,
}

/// A message from the old generation.
pub(crate) type FromParent = Incoming<ParentMessage>;

/// The other generation's messages, with the descriptors attached to them.
/// Buffered: one read takes in as many messages as the socket holds (a
/// burst of batches, progress reports); the surplus waits here for the
/// next call, so keep one reader for the channel's whole (remaining) life.
#[derive(Debug)]
pub(crate) struct Reader<M> {
    frames: FrameBuffer,
    /// Descriptors received, by the stream offset of the message they came
    /// with, oldest first.
    attached: VecDeque<Attached>,
    /// Who sends: "the previous generation", "the new generation".
    peer: &'static str,
    message: PhantomData<fn() -> M>,
}

/// Child side: the old generation's messages once the handover is
/// received.
pub(crate) type ParentReader = Reader<ParentMessage>;

/// Parent side, once the new generation took over: its answers about
/// handed-over connections.
pub(crate) type ChildReader = Reader<ChildMessage>;

#[derive(Debug)]
struct Attached {
    message: u64,
    fds: Vec<OwnedFd>,
    lost: bool,
}

impl ParentReader {
    pub(crate) fn new() -> Self {
        Reader::with(MAX_PARENT_MESSAGE_BYTES, "the previous generation")
    }
}

impl ChildReader {
    pub(crate) fn new() -> Self {
        Reader::with(MAX_ANSWER_BYTES, "the new generation")
    }
}

impl<M: DeserializeOwned> Reader<M> {
    fn with(max: u32, peer: &'static str) -> Self {
        Reader {
            frames: FrameBuffer::new(max),
            attached: VecDeque::new(),
            peer,
            message: PhantomData,
        }
    }

    /// The next message, with the descriptors attached to it (a
    /// handed-over connection's socket, a batch's sockets). `None`: the
    /// channel closed (between messages or inside one). Cancel-safe: what
    /// was read stays in the reader.
    pub(crate) async fn next(&mut self, stream: &UnixStream) -> io::Result<Option<Incoming<M>>> {
        let peer = self.peer;
        loop {
            if let Some((offset, payload)) = self.frames.next_frame() {
                let (fds, fds_lost) = self.take_attached(offset);
                let message = rmp_serde::from_slice(&payload)
                    .map_err(|e| invalid(format!("unreadable message from {peer}: {e}")))?;
                return Ok(Some(Incoming {
                    message,
                    fds,
                    fds_lost,
                }));
            }
            let frames = &mut self.frames;
            let (n, fds, lost) = stream
                .async_io(Interest::READABLE, || {
                    fd::recv_with_fds_or_lost(stream.as_fd(), frames.spare())
                })
                .await?;
            // Handed-over connections: not accepted here (see accept_watch).
            crate::accept_watch::received(&fds);
            if n == 0 {
                return Ok(None);
            }
            let starts = self
                .frames
                .filled(n)
                .map_err(|e| frame_error(e, &format!("{peer} sent")))?;
            if fds.is_empty() && !lost {
                continue;
            }
            // Descriptors come with the first byte of the sendmsg that
            // carried them, which is the first byte of a message, and the
            // kernel ends the read after that sendmsg's bytes: they belong
            // to the last message starting in this read.
            let Some(message) = starts else {
                return Err(invalid(format!(
                    "descriptors arrived in the middle of a message from {peer}"
                )));
            };
            self.attached.push_back(Attached { message, fds, lost });
        }
    }

    fn take_attached(&mut self, message: u64) -> (Vec<OwnedFd>, bool) {
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
