//! Live connections handed to the next generation, with their state and
//! the bytes read but not processed yet — the service chooses the moment
//! (between requests), the runtime carries the descriptor.
//!
//! ```text
//! old -> new   [frame: ParentMessage::Connection { id, kind, state, unread }]  (the socket attached)
//! new -> old   [frame: ChildMessage::ConnectionTaken { id }]  or  ConnectionRefused { id, reason }
//! ```
//!
//! All or nothing per connection: the old generation closes its copy only
//! once the new one has the descriptor ([`SuccessorLink::hand_over`] waits
//! for the answer); if the new one could not take it (out of descriptors,
//! say), the caller gets its stream back and serves it on.
//!
//! The old side is [`SuccessorLink`] (the write half of the channel to the
//! successor, shared by every task handing a connection over); the new
//! side is [`Connections`], fed by the channel's watcher in `child`.

use std::collections::HashMap;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use crate::channel::{self, ChildMessage, ConnectionHeader, ParentMessage, StreamKind};
use crate::fd;
use crate::state::{decode_envelope, encode_envelope, HandoverState, StateError, StateFds};
use crate::sync::lock;

/// The largest state plus unread bytes one connection may carry (1 MiB).
pub const MAX_CONNECTION_BYTES: usize = 1 << 20;

/// The most connections one generation hands to its successor.
pub const MAX_CONNECTIONS_HANDED_OVER: u64 = 1 << 20;

/// A connected stream a generation can hand over.
#[derive(Debug)]
pub enum HandoverStream {
    /// A TCP connection.
    Tcp(tokio::net::TcpStream),
    /// A Unix stream connection.
    Unix(tokio::net::UnixStream),
}

impl From<tokio::net::TcpStream> for HandoverStream {
    fn from(stream: tokio::net::TcpStream) -> Self {
        HandoverStream::Tcp(stream)
    }
}

impl From<tokio::net::UnixStream> for HandoverStream {
    fn from(stream: tokio::net::UnixStream) -> Self {
        HandoverStream::Unix(stream)
    }
}

impl HandoverStream {
    /// The descriptor and its kind (the stream leaves Tokio's reactor).
    fn into_fd(self) -> io::Result<(OwnedFd, StreamKind)> {
        match self {
            HandoverStream::Tcp(stream) => Ok((stream.into_std()?.into(), StreamKind::Tcp)),
            HandoverStream::Unix(stream) => Ok((stream.into_std()?.into(), StreamKind::Unix)),
        }
    }

    /// Rebuilds a stream from a descriptor. Inside the runtime.
    fn from_fd(fd: OwnedFd, kind: StreamKind) -> io::Result<Self> {
        match kind {
            StreamKind::Tcp => {
                let std = std::net::TcpStream::from(fd);
                std.set_nonblocking(true)?;
                Ok(HandoverStream::Tcp(tokio::net::TcpStream::from_std(std)?))
            }
            StreamKind::Unix => {
                let std = std::os::unix::net::UnixStream::from(fd);
                std.set_nonblocking(true)?;
                Ok(HandoverStream::Unix(tokio::net::UnixStream::from_std(std)?))
            }
        }
    }
}

/// Why a connection could not be handed over. The stream comes back with
/// it ([`HandOverFailed::stream`]): serve it on, or close it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandOverError {
    /// No successor takes connections: this generation is stopping, or it
    /// has not handed over (yet, or at all).
    #[error("no successor takes connections: this generation is not handing over to one (a stop, or the restart has not committed); serve the connection on or close it")]
    NoSuccessor,
    /// The state and unread bytes are larger than a connection may carry.
    #[error("the connection's state and unread bytes are {bytes} bytes, more than the {max} a connection may carry; keep less per connection")]
    TooLarge {
        /// The size asked for.
        bytes: usize,
        /// [`MAX_CONNECTION_BYTES`].
        max: usize,
    },
    /// This generation already handed over as many connections as it may.
    #[error("{max} connections were handed over already, the most one generation may hand over")]
    TooMany {
        /// [`MAX_CONNECTIONS_HANDED_OVER`].
        max: u64,
    },
    /// The connection's state could not be encoded.
    #[error(transparent)]
    State(#[from] StateError),
    /// The successor could not take the connection (out of descriptors, or
    /// it is going away).
    #[error("the new generation could not take the connection: {0}")]
    Refused(String),
    /// The channel to the successor failed, or the stream could not be
    /// taken out of (or put back into) the runtime.
    #[error("could not hand the connection over: {0}")]
    Io(#[source] io::Error),
}

/// A connection that could not be handed over, with its stream back.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct HandOverFailed {
    /// The stream, still this generation's to serve or close (`None` only
    /// if it could not be taken out of the runtime or put back, which
    /// Tokio's connected streams never fail to do).
    pub stream: Option<HandoverStream>,
    /// Why.
    #[source]
    pub error: HandOverError,
}

type Answer = oneshot::Sender<Result<(), String>>;

/// The old generation's end of the channel to its successor, once the
/// successor took over: progress reports and connections go through it,
/// one message at a time.
#[derive(Debug)]
pub(crate) struct SuccessorLink {
    channel: Arc<UnixStream>,
    /// One sender at a time: a message's bytes must not interleave.
    sending: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, Answer>>,
}

impl SuccessorLink {
    /// Wraps the channel; [`read_answers`](Self::read_answers) must run
    /// (spawned) for connections to be handed over.
    pub(crate) fn new(channel: Arc<UnixStream>) -> Arc<Self> {
        Arc::new(SuccessorLink {
            channel,
            sending: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(0),
            pending: Mutex::default(),
        })
    }

    /// Sends a message to the successor.
    pub(crate) async fn tell(&self, message: &ParentMessage) -> io::Result<()> {
        let bytes = channel::encode_parent_message(message)?;
        let _one = self.sending.lock().await;
        self.send(&bytes, None).await
    }

    /// Hands `stream` to the successor with `state` and `unread`, and waits
    /// until it has it; this generation's copy is closed then. On an error
    /// the stream comes back.
    pub(crate) async fn hand_over<C: HandoverState>(
        &self,
        stream: HandoverStream,
        state: &C,
        unread: &[u8],
    ) -> Result<(), HandOverFailed> {
        let failed = |stream, error| HandOverFailed {
            stream: Some(stream),
            error,
        };
        let encoded = match encode_envelope(state, &mut StateFds::default()) {
            Ok(encoded) => encoded,
            Err(e) => return Err(failed(stream, e.into())),
        };
        let bytes = encoded.len() + unread.len();
        if bytes > MAX_CONNECTION_BYTES {
            let error = HandOverError::TooLarge {
                bytes,
                max: MAX_CONNECTION_BYTES,
            };
            return Err(failed(stream, error));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if id >= MAX_CONNECTIONS_HANDED_OVER {
            let error = HandOverError::TooMany {
                max: MAX_CONNECTIONS_HANDED_OVER,
            };
            return Err(failed(stream, error));
        }
        let (fd, kind) = match stream.into_fd() {
            Ok(taken) => taken,
            Err(e) => return Err(lost(e)),
        };
        let message = ParentMessage::Connection(ConnectionHeader {
            id,
            kind,
            state: encoded,
            unread: unread.to_vec(),
        });
        let (answer_tx, answer) = oneshot::channel();
        lock(&self.pending).insert(id, answer_tx);
        let sent = match channel::encode_parent_message(&message) {
            Ok(bytes) => {
                let _one = self.sending.lock().await;
                self.send(&bytes, Some(&fd)).await
            }
            Err(e) => Err(e),
        };
        let outcome = match sent {
            Ok(()) => match answer.await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(reason)) => HandOverError::Refused(reason),
                Err(_) => HandOverError::Refused("the new generation is gone".to_owned()),
            },
            Err(e) => HandOverError::Io(e),
        };
        lock(&self.pending).remove(&id);
        match HandoverStream::from_fd(fd, kind) {
            Ok(stream) => Err(failed(stream, outcome)),
            Err(e) => Err(lost(e)),
        }
    }

    /// Reads the successor's answers about connections until the channel
    /// closes; then every connection still waiting is refused.
    pub(crate) async fn read_answers(self: Arc<Self>) {
        loop {
            match channel::read_child_message(&self.channel).await {
                Ok(Some(ChildMessage::ConnectionTaken { id })) => self.answer(id, Ok(())),
                Ok(Some(ChildMessage::ConnectionRefused { id, reason })) => {
                    self.answer(id, Err(reason));
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        lock(&self.pending).clear();
    }

    fn answer(&self, id: u64, outcome: Result<(), String>) {
        if let Some(waiting) = lock(&self.pending).remove(&id) {
            let _ = waiting.send(outcome);
        }
    }

    async fn send(&self, mut bytes: &[u8], fd: Option<&OwnedFd>) -> io::Result<()> {
        if let Some(fd) = fd {
            // The descriptor travels with the first bytes.
            let channel = &self.channel;
            let sent = channel
                .async_io(Interest::WRITABLE, || {
                    fd::send_with_fds(channel.as_fd(), bytes, &[fd.as_fd()])
                })
                .await?;
            bytes = &bytes[sent..];
        }
        while !bytes.is_empty() {
            self.channel.writable().await?;
            match self.channel.try_write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A failure that lost the stream on the way out of (or back into) the
/// runtime.
fn lost(error: io::Error) -> HandOverFailed {
    HandOverFailed {
        stream: None,
        error: HandOverError::Io(error),
    }
}

/// A connection the previous generation handed over.
#[derive(Debug)]
pub struct HandedOver<C> {
    /// The connection.
    pub stream: HandoverStream,
    /// Its state, as the previous generation kept it (decoded by field
    /// name, like the service's state).
    pub state: C,
    /// Bytes the previous generation had read from it and not processed:
    /// process them before reading more.
    pub unread: Vec<u8>,
}

/// A received connection, its state still encoded.
#[derive(Debug)]
pub(crate) struct Arrived {
    pub stream: HandoverStream,
    pub state: Vec<u8>,
    pub unread: Vec<u8>,
}

impl Arrived {
    /// Rebuilds the connection from its descriptor. Inside the runtime.
    pub(crate) fn new(header: ConnectionHeader, fd: OwnedFd) -> io::Result<Self> {
        Ok(Arrived {
            stream: HandoverStream::from_fd(fd, header.kind)?,
            state: header.state,
            unread: header.unread,
        })
    }
}

/// The connections the previous generation hands over, as they arrive
/// (see [`Context::connections`](crate::Context::connections)).
#[derive(Debug)]
pub struct Connections<C> {
    arrived: mpsc::UnboundedReceiver<Arrived>,
    _state: PhantomData<fn() -> C>,
}

impl<C: HandoverState> Connections<C> {
    pub(crate) fn new(arrived: mpsc::UnboundedReceiver<Arrived>) -> Self {
        Connections {
            arrived,
            _state: PhantomData,
        }
    }

    /// The next connection handed over; `None` once the previous generation
    /// is gone (nothing more can come). A connection whose state cannot be
    /// decoded comes as an error, with its stream (close it, or serve it
    /// from a fresh state).
    pub async fn next(&mut self) -> Option<Result<HandedOver<C>, StateUndecodable>> {
        let arrived = self.arrived.recv().await?;
        Some(
            match decode_envelope::<C>(&arrived.state, &mut StateFds::default()) {
                Ok(state) => Ok(HandedOver {
                    stream: arrived.stream,
                    state,
                    unread: arrived.unread,
                }),
                Err(error) => Err(StateUndecodable {
                    stream: arrived.stream,
                    unread: arrived.unread,
                    error,
                }),
            },
        )
    }
}

/// A handed-over connection whose state this build cannot decode.
#[derive(Debug, thiserror::Error)]
#[error("a handed-over connection's state cannot be decoded: {error}")]
pub struct StateUndecodable {
    /// The connection.
    pub stream: HandoverStream,
    /// Its unread bytes.
    pub unread: Vec<u8>,
    /// Why.
    #[source]
    pub error: StateError,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{StateDecoder, StateEncoder};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Session {
        id: u64,
        count: u64,
    }

    impl HandoverState for Session {
        const TYPE_NAME: &'static str = "Session";
        fn encode_state(&self, state: &mut StateEncoder<'_>) -> Result<(), StateError> {
            state.put_data(self)
        }
        fn decode_state(state: &mut StateDecoder<'_>) -> Result<Self, StateError> {
            state.take_data()
        }
    }

    /// A connected TCP pair on loopback: (ours, the peer).
    async fn tcp_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        (accepted.unwrap().0, client.unwrap())
    }

    /// The new generation's side, minimal: reads one message, answers with
    /// `refuse` or takes the connection.
    async fn successor_side(theirs: UnixStream, refuse: Option<&'static str>) -> Option<Arrived> {
        let from = channel::read_parent_message(&theirs)
            .await
            .unwrap()
            .unwrap();
        let ParentMessage::Connection(header) = from.message else {
            panic!("not a connection");
        };
        let id = header.id;
        let mut fds = from.fds;
        let (answer, arrived) = match refuse {
            Some(reason) => (
                ChildMessage::ConnectionRefused {
                    id,
                    reason: reason.into(),
                },
                None,
            ),
            None => {
                let arrived = Arrived::new(header, fds.pop().unwrap()).unwrap();
                (ChildMessage::ConnectionTaken { id }, Some(arrived))
            }
        };
        let bytes = channel::encode_child_message(&answer).unwrap();
        theirs.writable().await.unwrap();
        assert_eq!(theirs.try_write(&bytes).unwrap(), bytes.len());
        arrived
    }

    #[tokio::test]
    async fn a_connection_arrives_with_its_state_and_unread_bytes() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let link = SuccessorLink::new(Arc::new(ours));
        tokio::spawn(Arc::clone(&link).read_answers());
        let (served, mut client) = tcp_pair().await;
        let state = Session { id: 7, count: 41 };
        let successor = tokio::spawn(successor_side(theirs, None));
        link.hand_over(served.into(), &state, b"in").await.unwrap();
        let arrived = successor.await.unwrap().unwrap();
        assert_eq!(arrived.unread, b"in");
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(arrived).unwrap();
        drop(tx);
        let mut connections = Connections::<Session>::new(rx);
        let handed = connections.next().await.unwrap().unwrap();
        assert_eq!(handed.state, state);
        // The same connection: what the client writes, the new side reads.
        let HandoverStream::Tcp(mut stream) = handed.stream else {
            panic!("a TCP connection");
        };
        client.write_all(b"cr\n").await.unwrap();
        let mut buf = [0u8; 3];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"cr\n");
        assert!(connections.next().await.is_none());
    }

    #[tokio::test]
    async fn a_refused_connection_comes_back_untouched() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let link = SuccessorLink::new(Arc::new(ours));
        tokio::spawn(Arc::clone(&link).read_answers());
        let (served, mut client) = tcp_pair().await;
        let successor = tokio::spawn(successor_side(theirs, Some("out of descriptors")));
        let failed = link
            .hand_over(served.into(), &Session { id: 1, count: 0 }, b"")
            .await
            .unwrap_err();
        assert!(successor.await.unwrap().is_none());
        assert!(
            matches!(&failed.error, HandOverError::Refused(reason) if reason == "out of descriptors"),
            "{failed}"
        );
        let Some(HandoverStream::Tcp(mut stream)) = failed.stream else {
            panic!("the stream comes back");
        };
        client.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 1];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"x");
    }

    #[tokio::test]
    async fn too_large_a_connection_is_refused_before_anything_is_sent() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let link = SuccessorLink::new(Arc::new(ours));
        let (served, _client) = tcp_pair().await;
        let unread = vec![0u8; MAX_CONNECTION_BYTES + 1];
        let failed = link
            .hand_over(served.into(), &Session { id: 1, count: 0 }, &unread)
            .await
            .unwrap_err();
        assert!(
            matches!(failed.error, HandOverError::TooLarge { .. }),
            "{failed}"
        );
        assert!(failed.stream.is_some());
    }

    #[tokio::test]
    async fn a_successor_gone_refuses_every_waiting_connection() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let link = SuccessorLink::new(Arc::new(ours));
        tokio::spawn(Arc::clone(&link).read_answers());
        let (served, _client) = tcp_pair().await;
        // The successor reads the connection, then dies without answering.
        let successor = tokio::spawn(async move {
            let _ = channel::read_parent_message(&theirs).await;
            drop(theirs);
        });
        let failed = link
            .hand_over(served.into(), &Session { id: 1, count: 0 }, b"")
            .await
            .unwrap_err();
        successor.await.unwrap();
        assert!(
            matches!(failed.error, HandOverError::Refused(_)),
            "{failed}"
        );
        assert!(failed.stream.is_some());
    }
}
