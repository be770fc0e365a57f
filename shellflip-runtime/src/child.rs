//! The new generation's side of a restart, top to bottom:
//!
//! 1. [`take_channel`]: adopt the channel the previous generation left
//!    (its number is in `SHELLFLIP_HANDOVER_FD`); none means this is a first
//!    generation.
//! 2. [`receive`]: read the handover — the named descriptors and the encoded
//!    state — before the Tokio runtime and the service's code exist.
//! 3. If start-up fails, [`report_failure_blocking`] tells the previous
//!    generation why (it keeps serving and tells whoever asked).
//! 4. Inside the runtime, a [`PredecessorLink`] carries the report: `ready()`
//!    writes READY on the caller's thread at once ([`PredecessorLink::report_ready_now`]),
//!    the supervisor finishes it ([`PredecessorLink::finish_ready_report`]);
//!    a failure of `main` before `ready()` is reported with
//!    [`PredecessorLink::report_failure`].
//! 5. The link watches the channel: when it closes, the previous generation
//!    is gone and this one is the only one, answering restart requests itself.

use std::io::{self, Write};
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

use crate::channel::{self, ChildMessage, Received, ENV_HANDOVER_FD};
use crate::error::Error;
use crate::fd;
use crate::sync::lock;

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

/// Receives the handover, giving up after `timeout`.
pub(crate) fn receive(stream: &mut StdUnixStream, timeout: Duration) -> Result<Received, Error> {
    let failed = |source: io::Error| Error::Handover { source };
    // Blocking reads bounded by the timeout, whatever mode the previous
    // generation left the descriptor in.
    stream.set_nonblocking(false).map_err(failed)?;
    stream.set_read_timeout(Some(timeout)).map_err(failed)?;
    let received = channel::receive_handover(stream).map_err(|source| {
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
#[derive(Debug, Default)]
enum ReadyReport {
    /// Not sent yet.
    #[default]
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
    gone: CancellationToken,
    ready: Mutex<ReadyReport>,
}

impl PredecessorLink {
    /// Splits the channel: the read half is watched for end-of-file (the
    /// previous generation exited), which cancels [`gone`](Self::gone).
    /// Must be called inside the runtime.
    pub(crate) fn start(stream: StdUnixStream) -> io::Result<Arc<Self>> {
        stream.set_nonblocking(true)?;
        let (reader, writer) = UnixStream::from_std(stream)?.into_split();
        let gone = CancellationToken::new();
        tokio::spawn(watch_for_exit(reader, gone.clone()));
        Ok(Arc::new(PredecessorLink {
            writer,
            gone,
            ready: Mutex::new(ReadyReport::NotSent),
        }))
    }

    /// Cancelled once the previous generation is gone.
    pub(crate) fn gone(&self) -> &CancellationToken {
        &self.gone
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
        *report = match self.try_send(&ChildMessage::Ready) {
            Ok(rest) => ReadyReport::Started { rest },
            Err(e) => ReadyReport::Failed(e.to_string()),
        };
    }

    /// Finishes the READY report (the supervisor calls this once the
    /// generation is ready): sends what [`report_ready_now`] left, or the
    /// whole report if it was not started (then `before` runs first).
    /// `Ok(true)`: the previous generation was told.
    ///
    /// [`report_ready_now`]: Self::report_ready_now
    pub(crate) async fn finish_ready_report(&self, before: impl FnOnce()) -> Result<bool, String> {
        let report = std::mem::replace(&mut *lock(&self.ready), ReadyReport::Finished);
        match report {
            ReadyReport::Finished => Ok(false),
            ReadyReport::Failed(reason) => Err(reason),
            ReadyReport::Started { rest } => self
                .send(&rest)
                .await
                .map(|()| true)
                .map_err(|e| e.to_string()),
            ReadyReport::NotSent => {
                before();
                self.report(&ChildMessage::Ready)
                    .await
                    .map(|()| true)
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Reports that this generation failed before it was ready.
    pub(crate) async fn report_failure(&self, reason: String) -> io::Result<()> {
        self.report(&ChildMessage::Failed { reason }).await
    }

    /// Writes as much of `message` as the socket takes without waiting;
    /// returns the bytes left to send (none, unless the buffer is full).
    fn try_send(&self, message: &ChildMessage) -> io::Result<Vec<u8>> {
        let bytes = channel::encode_child_message(message)?;
        match self.writer.try_write(&bytes) {
            Ok(n) => Ok(bytes[n..].to_vec()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(bytes),
            Err(e) => Err(e),
        }
    }

    async fn report(&self, message: &ChildMessage) -> io::Result<()> {
        self.send(&channel::encode_child_message(message)?).await
    }

    async fn send(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            self.writer.writable().await?;
            match self.writer.try_write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

async fn watch_for_exit(mut reader: OwnedReadHalf, gone: CancellationToken) {
    let mut buf = [0u8; 64];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => continue,
        }
    }
    gone.cancel();
}
