//! Live connections handed to the next generation, with their state and
//! the bytes read but not processed yet — the service chooses the moment
//! (between requests), the runtime carries the descriptor.
//!
//! ```text
//! old -> new   [frame: ParentMessage::Connections [header, header, ...]]   (their sockets attached, in order)
//! new -> old   [frame: ChildMessage::ConnectionsAnswered { taken: [id, ...], refused: [{ reason, ids }] }]
//!
//! header = ConnectionHeader { id, kind, state, unread }
//! ```
//!
//! All or nothing per connection: the old generation closes its copy only
//! once the new one has the descriptor ([`SuccessorLink::hand_over`] waits
//! for the answer); if the new one could not take it (out of descriptors,
//! say), the caller gets its stream back and serves it on.
//!
//! In batches: every task handing a connection over puts it in a queue;
//! one writer task sends what has queued up, up to 253 connections
//! (the kernel's `SCM_MAX_FD`, [`fd::MAX_FDS_PER_MESSAGE`]) and about
//! [`MAX_BATCH_BYTES`] per message (a connection larger than that goes
//! alone), without waiting for the answers to earlier ones. The new
//! generation receives a batch with one `recvmsg`, pairs the descriptors
//! with the headers in order and answers the whole batch in one message.
//! At its open-file limit the kernel installs the first descriptors of a
//! message and drops the rest (`MSG_CTRUNC`): the headers left without
//! one are refused ([`fd::FDS_LOST`]), and the framing stays intact.
//!
//! The old side is [`SuccessorLink`] (the write half of the channel to the
//! successor, shared by every task handing a connection over; its writer
//! and its reader of the answers), the new side [`take_connections`] and
//! [`take`], called by the channel's watcher in `child`, and
//! [`Connections`], which the service reads.

use std::collections::HashMap;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use crate::channel::{
    self, ChildMessage, ChildReader, ConnectionHeader, ParentMessage, Refusal, StreamKind,
    MAX_REASON_BYTES,
};
use crate::fd;
use crate::state::{decode_envelope, encode_envelope, HandoverState, StateError, StateFds};
use crate::sync::lock;

mod sending;

pub(crate) use sending::SuccessorLink;

/// The largest state plus unread bytes one connection may carry (1 MiB).
pub const MAX_CONNECTION_BYTES: usize = 1 << 20;

/// The most connections one generation hands to its successor.
pub const MAX_CONNECTIONS_HANDED_OVER: u64 = 1 << 20;

/// About the most bytes of connections' state and unread bytes one batch
/// carries: connections are added while the batch stays within it (the
/// first always is, so one larger connection goes alone).
pub(crate) const MAX_BATCH_BYTES: usize = 1 << 20;

/// What a connection adds to a batch, at most, besides its state and
/// unread bytes: its header's fields and names in MessagePack.
const HEADER_OVERHEAD_BYTES: usize = 64;

/// Why a connection is refused when the new generation is gone.
const GONE: &str = "the new generation is gone (its channel closed)";

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
        let socket = socket2::Socket::from(fd);
        socket.set_nonblocking(true)?;
        Ok(match kind {
            StreamKind::Tcp => HandoverStream::Tcp(tokio::net::TcpStream::from_std(socket.into())?),
            StreamKind::Unix => HandoverStream::Unix(UnixStream::from_std(socket.into())?),
        })
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
pub(crate) type Arrived = HandedOver<Vec<u8>>;

/// Why a connection without a descriptor is refused.
const NOT_ATTACHED: &str = "the connection's socket was not attached";

/// Why a connection is refused when the service's end of the connections
/// is gone.
const GOING_AWAY: &str = "this generation is going away";

/// New side: takes the connections of a batch. The descriptors go with the
/// headers in order; headers left without one are refused — with
/// [`fd::FDS_LOST`] if the kernel dropped descriptors (this process at its
/// open-file limit installs the first ones only). Each connection taken
/// goes to `to`. Returns the answer for the whole batch.
pub(crate) fn take_connections(
    headers: Vec<ConnectionHeader>,
    fds: Vec<OwnedFd>,
    fds_lost: bool,
    to: &mpsc::UnboundedSender<Arrived>,
) -> ChildMessage {
    if fds.len() > headers.len() {
        tracing::warn!(
            connections = headers.len(),
            descriptors = fds.len(),
            "a batch of connections came with more descriptors than connections; the extra ones were closed"
        );
    }
    let mut fds = fds.into_iter();
    let mut taken = Vec::with_capacity(headers.len());
    let mut refused: Vec<Refusal> = Vec::new();
    for header in headers {
        let id = header.id;
        let result = match fds.next() {
            Some(fd) => take(header, fd, to),
            None if fds_lost => Err(fd::FDS_LOST.to_owned()),
            None => Err(NOT_ATTACHED.to_owned()),
        };
        match result {
            Ok(()) => taken.push(id),
            Err(reason) => {
                let reason = bounded_reason(reason);
                match refused.iter_mut().find(|r| r.reason == reason) {
                    Some(same) => same.ids.push(id),
                    None => refused.push(Refusal {
                        reason,
                        ids: vec![id],
                    }),
                }
            }
        }
    }
    ChildMessage::ConnectionsAnswered { taken, refused }
}

/// Rebuilds a connection and passes it on to the service.
fn take(
    header: ConnectionHeader,
    fd: OwnedFd,
    to: &mpsc::UnboundedSender<Arrived>,
) -> Result<(), String> {
    let arrived = HandedOver {
        stream: HandoverStream::from_fd(fd, header.kind)
            .map_err(|e| format!("could not adopt the connection's socket: {e}"))?,
        state: header.state,
        unread: header.unread,
    };
    // Refused, the connection closes here; the old generation serves its
    // own copy on.
    to.send(arrived).map_err(|_| GOING_AWAY.to_owned())
}

/// `reason`, cut to [`MAX_REASON_BYTES`] (a batch's answer stays bounded).
fn bounded_reason(mut reason: String) -> String {
    if reason.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
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
    use super::sending::*;
    use super::*;
    use crate::channel::{Draining, FromParent, ParentReader};
    use crate::state::{StateDecoder, StateEncoder};
    use std::collections::BTreeMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::task::JoinHandle;

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

    /// How many connections wait in a link's queue (before `start`).
    fn queued(link: &SuccessorLink) -> usize {
        lock(&link.unstarted)
            .as_ref()
            .map_or(0, |queue| queue.len())
    }

    /// Hands `n` connections over, each from a task of its own, session
    /// `i` with `count: 100 + i` and the unread bytes `u<i>` (plus
    /// `padding` bytes), and returns once all are queued: the tasks, and
    /// the peers by session. `start` the link then.
    async fn queue_connections(
        link: &Arc<SuccessorLink>,
        n: u64,
        padding: usize,
    ) -> (
        Vec<JoinHandle<Result<(), HandOverFailed>>>,
        BTreeMap<u64, tokio::net::TcpStream>,
    ) {
        let mut tasks = Vec::new();
        let mut peers = BTreeMap::new();
        for i in 0..n {
            let (served, peer) = tcp_pair().await;
            peers.insert(i, peer);
            let link = Arc::clone(link);
            let mut unread = format!("u{i}").into_bytes();
            unread.resize(unread.len() + padding, b'.');
            tasks.push(tokio::spawn(async move {
                let session = Session {
                    id: i,
                    count: 100 + i,
                };
                link.hand_over(served.into(), &session, &unread).await
            }));
        }
        // Queued once each task ran up to its wait for the answer.
        while queued(link) < n as usize {
            tokio::task::yield_now().await;
        }
        (tasks, peers)
    }

    /// What the successor saw of one message.
    #[derive(Debug, PartialEq)]
    enum Seen {
        /// A batch: the connections' numbers, the descriptors attached.
        Batch {
            ids: Vec<u64>,
            fds: usize,
        },
        Progress,
    }

    /// The new generation's side: reads messages until `connections`
    /// connections and `progress` progress reports came, answering every
    /// connection — taken, or refused with `refuse(its session)`'s reason.
    /// What each message carried, and the connections taken.
    async fn successor(
        theirs: UnixStream,
        connections: usize,
        progress: usize,
        refuse: impl Fn(u64) -> Option<&'static str>,
    ) -> (Vec<Seen>, Vec<HandedOver<Session>>) {
        let mut reader = ParentReader::new();
        let (tx, rx) = mpsc::unbounded_channel();
        let mut seen = Vec::new();
        let (mut got, mut reports) = (0, 0);
        while got < connections || reports < progress {
            let FromParent {
                message,
                fds,
                fds_lost,
            } = reader.next(&theirs).await.unwrap().expect("a message");
            assert!(!fds_lost);
            let answer = match message {
                ParentMessage::Connections(headers) => {
                    seen.push(Seen::Batch {
                        ids: headers.iter().map(|h| h.id).collect(),
                        fds: fds.len(),
                    });
                    got += headers.len();
                    let mut taken = Vec::new();
                    let mut refused: Vec<Refusal> = Vec::new();
                    for (header, fd) in headers.into_iter().zip(fds) {
                        match refuse(session_of(&header)) {
                            Some(reason) => refused.push(Refusal {
                                reason: reason.to_owned(),
                                ids: vec![header.id],
                            }),
                            None => {
                                taken.push(header.id);
                                take(header, fd, &tx).unwrap();
                            }
                        }
                    }
                    ChildMessage::ConnectionsAnswered { taken, refused }
                }
                ParentMessage::Progress(_) => {
                    seen.push(Seen::Progress);
                    reports += 1;
                    continue;
                }
                ParentMessage::Commit { .. } | ParentMessage::Stop { .. } => {
                    panic!("no commit or stop here")
                }
            };
            send_answer(&theirs, &answer).await;
        }
        drop(tx);
        let mut handed = Vec::new();
        let mut arrived = Connections::<Session>::new(rx);
        while let Some(connection) = arrived.next().await {
            handed.push(connection.unwrap());
        }
        (seen, handed)
    }

    /// The session a header carries.
    fn session_of(header: &ConnectionHeader) -> u64 {
        decode_envelope::<Session>(&header.state, &mut StateFds::default())
            .unwrap()
            .id
    }

    async fn send_answer(theirs: &UnixStream, answer: &ChildMessage) {
        let bytes = channel::encode_child_message(answer).unwrap();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            theirs.writable().await.unwrap();
            match theirs.try_write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// The connection taken is `peer`'s: what one writes, the other reads.
    async fn same_connection(
        stream: HandoverStream,
        peer: &mut tokio::net::TcpStream,
        what: &[u8],
    ) {
        let HandoverStream::Tcp(mut stream) = stream else {
            panic!("a TCP connection");
        };
        peer.write_all(what).await.unwrap();
        let mut buf = vec![0u8; what.len()];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, what);
    }

    fn progress() -> ParentMessage {
        ParentMessage::Progress(Draining {
            generation: 1,
            pid: 1,
            deadline_unix_ms: 0,
            tasks: Some(1),
        })
    }

    #[tokio::test]
    async fn a_connection_arrives_with_its_state_and_unread_bytes() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let link = SuccessorLink::new(Arc::new(ours));
        link.start();
        let (served, mut client) = tcp_pair().await;
        let state = Session { id: 7, count: 41 };
        let successor = tokio::spawn(successor(theirs, 1, 0, |_| None));
        link.hand_over(served.into(), &state, b"in").await.unwrap();
        let (seen, mut handed) = successor.await.unwrap();
        assert_eq!(
            seen,
            [Seen::Batch {
                ids: vec![0],
                fds: 1
            }]
        );
        let handed = handed.pop().unwrap();
        assert_eq!(handed.state, state);
        assert_eq!(handed.unread, b"in");
        // The same connection: what the client writes, the new side reads.
        same_connection(handed.stream, &mut client, b"cr\n").await;
    }

    #[tokio::test]
    async fn a_refused_connection_comes_back_untouched() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let link = SuccessorLink::new(Arc::new(ours));
        link.start();
        let (served, mut client) = tcp_pair().await;
        let successor = tokio::spawn(successor(theirs, 1, 0, |_| Some("out of descriptors")));
        let failed = link
            .hand_over(served.into(), &Session { id: 1, count: 0 }, b"")
            .await
            .unwrap_err();
        assert!(successor.await.unwrap().1.is_empty());
        assert!(
            matches!(&failed.error, HandOverError::Refused(reason) if reason == "out of descriptors"),
            "{failed}"
        );
        let Some(stream) = failed.stream else {
            panic!("the stream comes back");
        };
        same_connection(stream, &mut client, b"x").await;
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
        assert_eq!(queued(&link), 0, "nothing was queued");
    }

    #[tokio::test]
    async fn a_successor_gone_refuses_every_waiting_connection() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let link = SuccessorLink::new(Arc::new(ours));
        let (tasks, _peers) = queue_connections(&link, 3, 0).await;
        link.start();
        // The successor reads the batch, then dies without answering.
        let mut reader = ParentReader::new();
        let from = reader.next(&theirs).await.unwrap().unwrap();
        assert_eq!(from.fds.len(), 3);
        drop((from, theirs));
        for task in tasks {
            let failed = task.await.unwrap().unwrap_err();
            assert!(
                matches!(&failed.error, HandOverError::Refused(reason) if reason == GONE),
                "{failed}"
            );
            assert!(failed.stream.is_some());
        }
        // And what comes later comes back at once.
        let (served, _client) = tcp_pair().await;
        let failed = link
            .hand_over(served.into(), &Session { id: 9, count: 0 }, b"")
            .await
            .unwrap_err();
        assert!(
            matches!(failed.error, HandOverError::Refused(_)),
            "{failed}"
        );
        assert!(failed.stream.is_some());
    }

    #[tokio::test]
    async fn connections_queued_together_go_in_one_message_and_one_answer() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let link = SuccessorLink::new(Arc::new(ours));
        let (tasks, mut peers) = queue_connections(&link, 10, 0).await;
        link.start();
        // Odd sessions are taken, even ones refused: one answer says both.
        let refuse = |session: u64| (session % 2 == 0).then_some("no room for it");
        let (seen, handed) = successor(theirs, 10, 0, refuse).await;
        let [Seen::Batch { ids, fds }] = &seen[..] else {
            panic!("one batch: {seen:?}");
        };
        assert_eq!((ids.len(), *fds), (10, 10));
        // Every descriptor went with its own header.
        assert_eq!(handed.len(), 5);
        for taken in handed {
            let i = taken.state.id;
            assert_eq!(i % 2, 1);
            assert_eq!(taken.state.count, 100 + i);
            assert_eq!(taken.unread, format!("u{i}").as_bytes());
            let peer = peers.get_mut(&i).unwrap();
            same_connection(taken.stream, peer, format!("to {i}").as_bytes()).await;
        }
        for (i, task) in tasks.into_iter().enumerate() {
            let i = i as u64;
            match task.await.unwrap() {
                Ok(()) => assert_eq!(i % 2, 1, "session {i} taken"),
                Err(failed) => {
                    assert_eq!(i % 2, 0, "session {i} refused");
                    assert!(
                        matches!(&failed.error, HandOverError::Refused(r) if r == "no room for it"),
                        "{failed}"
                    );
                    let stream = failed.stream.expect("the stream comes back");
                    let peer = peers.get_mut(&i).unwrap();
                    same_connection(stream, peer, b"still here").await;
                }
            }
        }
    }

    #[tokio::test]
    async fn a_batch_is_bounded_in_bytes() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let link = SuccessorLink::new(Arc::new(ours));
        // Two fit in a batch, not three.
        let (tasks, _peers) = queue_connections(&link, 3, MAX_BATCH_BYTES * 2 / 5).await;
        link.start();
        let (seen, handed) = successor(theirs, 3, 0, |_| None).await;
        let sizes: Vec<(usize, usize)> = seen
            .iter()
            .map(|s| match s {
                Seen::Batch { ids, fds } => (ids.len(), *fds),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(sizes, [(2, 2), (1, 1)]);
        assert_eq!(handed.len(), 3);
        for task in tasks {
            task.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn progress_reports_go_alongside_the_batches() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let link = SuccessorLink::new(Arc::new(ours));
        link.tell(&progress()).await.unwrap();
        let (tasks, _peers) = queue_connections(&link, 4, 0).await;
        link.start();
        let successor = tokio::spawn(successor(theirs, 4, 2, |_| None));
        link.tell(&progress()).await.unwrap();
        let (seen, handed) = successor.await.unwrap();
        // The first report before the batch; the second before or after.
        assert_eq!(seen.first(), Some(&Seen::Progress));
        assert_eq!(seen.iter().filter(|s| **s == Seen::Progress).count(), 2);
        let batches: Vec<&Seen> = seen.iter().filter(|s| **s != Seen::Progress).collect();
        assert!(
            matches!(batches[..], [Seen::Batch { ref ids, fds: 4 }] if ids.len() == 4),
            "{seen:?}"
        );
        // Each connection with its own state and socket.
        let mut sessions: Vec<u64> = handed.iter().map(|h| h.state.id).collect();
        sessions.sort_unstable();
        assert_eq!(sessions, [0, 1, 2, 3]);
        for handed in &handed {
            assert_eq!(handed.unread, format!("u{}", handed.state.id).as_bytes());
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
    }

    /// `n` Unix socket pairs: the ends to send, and the peers.
    fn unix_pairs(n: usize) -> (Vec<OwnedFd>, Vec<std::os::unix::net::UnixStream>) {
        (0..n)
            .map(|_| {
                let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
                (OwnedFd::from(a), b)
            })
            .unzip()
    }

    fn unix_header(id: u64) -> ConnectionHeader {
        let state = Session { id, count: 0 };
        ConnectionHeader {
            id,
            kind: StreamKind::Unix,
            state: encode_envelope(&state, &mut StateFds::default()).unwrap(),
            unread: format!("u{id}").into_bytes(),
        }
    }

    #[tokio::test]
    async fn descriptors_lost_from_a_batch_refuse_exactly_the_connections_without_one() {
        // Five connections, three descriptors installed before the limit.
        let headers: Vec<ConnectionHeader> = (10..15).map(unix_header).collect();
        let (fds, mut peers) = unix_pairs(3);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let answer = take_connections(headers, fds, true, &tx);
        assert_eq!(
            answer,
            ChildMessage::ConnectionsAnswered {
                taken: vec![10, 11, 12],
                refused: vec![Refusal {
                    reason: fd::FDS_LOST.to_owned(),
                    ids: vec![13, 14],
                }],
            }
        );
        // The first descriptors went with the first headers, in order.
        for (i, peer) in peers.iter_mut().enumerate() {
            let arrived = rx.try_recv().unwrap();
            assert_eq!(arrived.unread, format!("u{}", 10 + i).as_bytes());
            let HandoverStream::Unix(mut stream) = arrived.stream else {
                panic!("a Unix stream");
            };
            std::io::Write::write_all(peer, &[i as u8]).unwrap();
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.unwrap();
            assert_eq!(byte, [i as u8]);
        }
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_batch_without_enough_descriptors_or_with_too_many() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Missing, none lost: a sender's mistake, said so.
        let (fds, _peers) = unix_pairs(1);
        let answer = take_connections(vec![unix_header(0), unix_header(1)], fds, false, &tx);
        assert_eq!(
            answer,
            ChildMessage::ConnectionsAnswered {
                taken: vec![0],
                refused: vec![Refusal {
                    reason: NOT_ATTACHED.to_owned(),
                    ids: vec![1],
                }],
            }
        );
        // Too many: every connection taken, the extra descriptor closed.
        let (fds, mut peers) = unix_pairs(2);
        let answer = take_connections(vec![unix_header(2)], fds, false, &tx);
        assert_eq!(
            answer,
            ChildMessage::ConnectionsAnswered {
                taken: vec![2],
                refused: vec![],
            }
        );
        let mut buf = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut peers[1], &mut buf).unwrap(), 0);
        // The service gone: refused, not lost.
        while rx.try_recv().is_ok() {}
        drop(rx);
        let (fds, _peers) = unix_pairs(1);
        let answer = take_connections(vec![unix_header(3)], fds, false, &tx);
        assert_eq!(
            answer,
            ChildMessage::ConnectionsAnswered {
                taken: vec![],
                refused: vec![Refusal {
                    reason: GOING_AWAY.to_owned(),
                    ids: vec![3],
                }],
            }
        );
    }

    #[test]
    fn a_batch_answer_stays_within_its_bound() {
        // 253 connections refused, each for a long reason of its own.
        let refused = (0..fd::MAX_FDS_PER_MESSAGE as u64)
            .map(|id| Refusal {
                reason: bounded_reason(format!("{id}: {}", "é".repeat(MAX_REASON_BYTES))),
                ids: vec![u64::MAX - id],
            })
            .collect::<Vec<_>>();
        assert!(refused.iter().all(|r| r.reason.len() <= MAX_REASON_BYTES));
        let answer = ChildMessage::ConnectionsAnswered {
            taken: Vec::new(),
            refused,
        };
        channel::encode_child_message(&answer).unwrap();
    }

    /// Set in the process that plays the new generation at its open-file
    /// limit: the path of the socket to connect to.
    const AT_THE_LIMIT: &str = "SHELLFLIP_TEST_CONNECTIONS_AT_THE_LIMIT";

    /// The kernel itself drops descriptors: a new generation with room for
    /// three more receives a batch of ten. The first three connections are
    /// taken, the other seven come back refused, and the next message still
    /// reads.
    #[test]
    fn at_the_open_file_limit_the_connections_beyond_it_come_back() {
        if let Some(path) = std::env::var_os(AT_THE_LIMIT) {
            return receive_at_the_limit(std::path::Path::new(&path));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("channel.sock");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = tokio::net::UnixListener::bind(&path).unwrap();
            let receiver = tokio::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "connections::tests::at_the_open_file_limit_the_connections_beyond_it_come_back",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(AT_THE_LIMIT, &path)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let (ours, _) = listener.accept().await.unwrap();
            let link = SuccessorLink::new(Arc::new(ours));
            let (tasks, _peers) = queue_connections(&link, 10, 0).await;
            link.start();
            let mut outcomes = Vec::new();
            for task in tasks {
                outcomes.push(match task.await.unwrap() {
                    Ok(()) => "taken".to_owned(),
                    Err(failed) => {
                        assert!(failed.stream.is_some(), "{failed}");
                        failed.error.to_string()
                    }
                });
            }
            let lost = HandOverError::Refused(fd::FDS_LOST.to_owned()).to_string();
            let mut expected = vec!["taken".to_owned(); 3];
            expected.extend(std::iter::repeat_n(lost, 7));
            assert_eq!(outcomes, expected);
            // The framing held: the receiver reads this and exits.
            link.tell(&progress()).await.unwrap();
            let output = receiver.wait_with_output().await.unwrap();
            assert!(
                output.status.success(),
                "the receiver failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        });
    }

    /// The receiving side of the test above, in a process of its own.
    fn receive_at_the_limit(path: &std::path::Path) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let channel = UnixStream::connect(path).await.unwrap();
            let mut reader = ParentReader::new();
            let (tx, mut rx) = mpsc::unbounded_channel();
            leave_room_for(3);
            let from = reader.next(&channel).await.unwrap().unwrap();
            let ParentMessage::Connections(headers) = from.message else {
                panic!("a batch");
            };
            assert_eq!(headers.len(), 10);
            assert_eq!((from.fds.len(), from.fds_lost), (3, true));
            let first: Vec<Vec<u8>> = headers[..3].iter().map(|h| h.unread.clone()).collect();
            let answer = take_connections(headers, from.fds, from.fds_lost, &tx);
            send_answer(&channel, &answer).await;
            for unread in first {
                assert_eq!(rx.try_recv().unwrap().unread, unread);
            }
            let next = reader.next(&channel).await.unwrap().unwrap();
            assert!(matches!(next.message, ParentMessage::Progress(_)));
        });
    }

    /// Lowers this process's open-file limit so that exactly `room` more
    /// descriptors can be opened.
    fn leave_room_for(room: usize) {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        let open: std::collections::BTreeSet<u64> = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        // The directory's own descriptor is closed by now.
        let mut limit = 0;
        let mut free = 0;
        while free < room {
            if !open.contains(&limit) || !fd_is_open(limit) {
                free += 1;
            }
            limit += 1;
        }
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        setrlimit(Resource::RLIMIT_NOFILE, limit, hard).unwrap();
    }

    fn fd_is_open(fd: u64) -> bool {
        std::path::Path::new(&format!("/proc/self/fd/{fd}")).exists()
    }
}
