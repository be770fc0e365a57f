//! The old side of handing connections over: [`SuccessorLink`], its writer (which sends
//! queued connections in batches) and the reader of the successor's answers.

use super::*;
use crate::channel::Incoming;
use tracing::Instrument;

/// One connection on its way, from [`SuccessorLink::hand_over`] to the
/// writer.
#[derive(Debug)]
pub(super) struct Outgoing {
    pub(super) header: ConnectionHeader,
    pub(super) waiting: Waiting,
}

/// What became of a connection, for the task waiting in `hand_over`:
/// `Ok` with this generation's copy, to close, when the successor has it;
/// `Err` with the descriptor back, and why, when it stays here.
pub(super) type Outcome = Result<OwnedFd, (OwnedFd, HandOverError)>;

/// A connection's descriptor, and the task waiting for what becomes of it.
#[derive(Debug)]
pub(super) struct Waiting {
    pub(super) fd: OwnedFd,
    pub(super) outcome: oneshot::Sender<Outcome>,
}

impl Waiting {
    /// The connection stays here: its descriptor goes back to its task.
    pub(super) fn back(self, error: HandOverError) {
        let _ = self.outcome.send(Err((self.fd, error)));
    }
}

/// Answers of the successor, from the reader to the writer: the numbers
/// of the connections taken, and of those refused, with the reason.
pub(super) type Answers = (Vec<u64>, Vec<Refusal>);

/// The write half of the channel: one sender at a time, as a message's
/// bytes must not interleave.
pub(super) type Wire = tokio::sync::Mutex<Arc<UnixStream>>;

/// The old generation's end of the channel to its successor, once the
/// successor took over: progress reports and connections go through it.
#[derive(Debug)]
pub(crate) struct SuccessorLink {
    /// The channel, as the reader of the answers reads it.
    pub(super) channel: Arc<UnixStream>,
    pub(super) wire: Arc<Wire>,
    pub(super) next_id: AtomicU64,
    pub(super) queue: mpsc::UnboundedSender<Outgoing>,
    /// The writer's end of the queue, until [`start`](Self::start).
    pub(super) unstarted: Mutex<Option<mpsc::UnboundedReceiver<Outgoing>>>,
}

impl SuccessorLink {
    /// Wraps the channel. Connections are sent once [`start`](Self::start)
    /// ran.
    pub(crate) fn new(channel: Arc<UnixStream>) -> Arc<Self> {
        let (queue, queued) = mpsc::unbounded_channel();
        Arc::new(SuccessorLink {
            wire: Arc::new(Wire::new(Arc::clone(&channel))),
            channel,
            next_id: AtomicU64::new(0),
            queue,
            unstarted: Mutex::new(Some(queued)),
        })
    }

    /// Starts the two tasks that hand connections over: the writer, which
    /// sends what [`hand_over`](Self::hand_over) queues, and the reader of
    /// the successor's answers. Call it once the successor took over (until
    /// then the supervisor reads the channel); later calls do nothing. The
    /// tasks end when the channel closes, or when this link is dropped and
    /// every connection sent was answered.
    pub(crate) fn start(&self) {
        let Some(queued) = lock(&self.unstarted).take() else {
            return;
        };
        let (answers_tx, answers) = mpsc::unbounded_channel();
        let writer = Writer {
            wire: Arc::clone(&self.wire),
            waiting: HashMap::new(),
            broken: None,
        };
        // In the caller's span: the lines of a drain carry the id of the
        // restart that began it.
        let span = tracing::Span::current();
        tokio::spawn(writer.run(queued, answers).instrument(span.clone()));
        tokio::spawn(read_answers(Arc::clone(&self.channel), answers_tx).instrument(span));
    }

    /// Sends a message to the successor.
    pub(crate) async fn tell(&self, message: &ParentMessage) -> io::Result<()> {
        let bytes = channel::encode_parent_message(message)?;
        channel::send(&*self.wire.lock().await, &bytes, &[]).await
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
        let (fd, kind) = stream.into_fd().map_err(lost)?;
        let (outcome_tx, outcome) = oneshot::channel();
        let outgoing = Outgoing {
            header: ConnectionHeader {
                id,
                kind,
                state: encoded,
                unread: unread.to_vec(),
            },
            waiting: Waiting {
                fd,
                outcome: outcome_tx,
            },
        };
        let (fd, error) = match self.queue.send(outgoing) {
            Err(mpsc::error::SendError(outgoing)) => {
                (outgoing.waiting.fd, HandOverError::Refused(GONE.to_owned()))
            }
            Ok(()) => match outcome.await {
                // This generation's copy closes here.
                Ok(Ok(_copy)) => return Ok(()),
                Ok(Err((fd, error))) => (fd, error),
                Err(_) => {
                    return Err(lost(io::Error::other(
                        "the writer of the connections handed over ended without answering (the runtime is shutting down); the connection was closed",
                    )))
                }
            },
        };
        let stream = HandoverStream::from_fd(fd, kind).map_err(lost)?;
        Err(failed(stream, error))
    }
}

/// The writer of a [`SuccessorLink`]: sends the queued connections in
/// batches and, as the reader passes the answers on, tells each task what
/// became of its connection. The one owner of the descriptors in flight.
pub(super) struct Writer {
    pub(super) wire: Arc<Wire>,
    /// Sent, not answered yet.
    pub(super) waiting: HashMap<u64, Waiting>,
    /// Why the channel can take no more (a write failed mid-message).
    pub(super) broken: Option<(io::ErrorKind, String)>,
}

impl Writer {
    pub(super) async fn run(
        mut self,
        mut queue: mpsc::UnboundedReceiver<Outgoing>,
        mut answers: mpsc::UnboundedReceiver<Answers>,
    ) {
        let per_message = fd::MAX_FDS_PER_MESSAGE;
        let mut queued = Vec::with_capacity(per_message);
        let mut link_dropped = false;
        loop {
            tokio::select! {
                // Answers first: they free descriptors.
                biased;
                answered = answers.recv() => match answered {
                    Some(answered) => self.settle(answered),
                    // The successor is gone: nothing more is answered.
                    None => break,
                },
                n = queue.recv_many(&mut queued, per_message), if !link_dropped => {
                    if n == 0 {
                        link_dropped = true;
                    } else {
                        self.send(&mut queued).await;
                    }
                },
            }
            if link_dropped && self.waiting.is_empty() {
                return;
            }
        }
        for (_, waiting) in self.waiting.drain() {
            waiting.back(HandOverError::Refused(GONE.to_owned()));
        }
        // What is still queued comes back too, and nothing more is queued.
        queue.close();
        while let Some(outgoing) = queue.recv().await {
            outgoing
                .waiting
                .back(HandOverError::Refused(GONE.to_owned()));
        }
    }

    /// Sends `queued` (emptied), as many messages as the bounds need; the
    /// connections of a message that could not be written come back.
    pub(super) async fn send(&mut self, queued: &mut Vec<Outgoing>) {
        while !queued.is_empty() {
            // As many as fit in MAX_BATCH_BYTES, and at least one.
            let mut bytes = 0;
            let fit = queued.iter().take_while(|outgoing| {
                let header = &outgoing.header;
                bytes += header.state.len() + header.unread.len() + HEADER_OVERHEAD_BYTES;
                bytes <= MAX_BATCH_BYTES
            });
            let count = fit.count().max(1);
            let (sent, headers): (Vec<_>, Vec<_>) = queued
                .drain(..count)
                .map(|Outgoing { header, waiting }| ((header.id, waiting), header))
                .unzip();
            let result = match &self.broken {
                Some((kind, why)) => Err(io::Error::new(*kind, why.clone())),
                None => self.write(headers, &sent).await,
            };
            match result {
                Ok(()) => self.waiting.extend(sent),
                Err(e) => {
                    for (_, waiting) in sent {
                        waiting.back(HandOverError::Io(io::Error::new(e.kind(), e.to_string())));
                    }
                }
            }
        }
    }

    /// Writes one batch's message, with the descriptors of `sent`.
    async fn write(
        &mut self,
        headers: Vec<ConnectionHeader>,
        sent: &[(u64, Waiting)],
    ) -> io::Result<()> {
        // An encoding error writes nothing: the channel is still in step.
        let bytes = channel::encode_parent_message(&ParentMessage::Connections(headers))?;
        let fds: Vec<BorrowedFd<'_>> = sent.iter().map(|(_, w)| w.fd.as_fd()).collect();
        let written = channel::send(&*self.wire.lock().await, &bytes, &fds).await;
        if let Err(e) = &written {
            // Maybe in the middle of the message: nothing more can follow it.
            let why = format!("the channel to the new generation failed: {e}");
            self.broken = Some((e.kind(), why));
        }
        written
    }

    /// Tells the tasks whose connections were answered.
    pub(super) fn settle(&mut self, (taken, refused): Answers) {
        // A task no longer waiting (its future dropped): the descriptor
        // closes with the outcome.
        for waiting in taken.iter().filter_map(|id| self.waiting.remove(id)) {
            let _ = waiting.outcome.send(Ok(waiting.fd));
        }
        for Refusal { reason, ids } in refused {
            for waiting in ids.iter().filter_map(|id| self.waiting.remove(id)) {
                waiting.back(HandOverError::Refused(reason.clone()));
            }
        }
    }
}

/// Reads the successor's answers about connections and passes them to the
/// writer, until the channel closes (or the writer is gone).
pub(super) async fn read_answers(
    channel: Arc<UnixStream>,
    answers: mpsc::UnboundedSender<Answers>,
) {
    let mut reader = ChildReader::new();
    loop {
        let message = tokio::select! {
            message = reader.next(&channel) => message,
            () = answers.closed() => return,
        };
        let answered = match message {
            Ok(Some(Incoming {
                message: ChildMessage::ConnectionsAnswered { taken, refused },
                ..
            })) => (taken, refused),
            Ok(Some(_)) => continue,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "reading the new generation's answers about handed-over connections failed; those waiting come back");
                return;
            }
        };
        if answers.send(answered).is_err() {
            return;
        }
    }
}

/// A failure that lost the stream on the way out of (or back into) the
/// runtime.
pub(super) fn lost(error: io::Error) -> HandOverFailed {
    HandOverFailed {
        stream: None,
        error: HandOverError::Io(error),
    }
}
