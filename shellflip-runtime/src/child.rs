//! The child side of a restart: receive what the previous generation hands
//! over, report ready or failed, and notice when the previous generation is
//! gone.

use std::io::{self, Write};
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

use crate::channel::{self, ChildMessage, Received, ENV_HANDOVER_FD};
use crate::error::Error;
use crate::fd;

/// Reads and removes [`ENV_HANDOVER_FD`]; adopts the channel it names.
/// `Ok(None)`: this is a first generation.
pub(crate) fn take_channel() -> Result<Option<StdUnixStream>, Error> {
    let Some(value) = std::env::var_os(ENV_HANDOVER_FD) else {
        return Ok(None);
    };
    // Removed so that programs this service runs do not mistake themselves
    // for a new generation. This runs before the runtime starts threads.
    std::env::remove_var(ENV_HANDOVER_FD);
    let raw: RawFd = value
        .to_str()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            Error::Handover(format!(
                "{ENV_HANDOVER_FD}={value:?} is not a descriptor number; this variable is set by shellflip for a new generation and should not be set by hand"
            ))
        })?;
    let owned = fd::adopt_inherited(raw).map_err(|e| {
        Error::Handover(format!(
            "{ENV_HANDOVER_FD}={raw} does not name an open descriptor ({e}); this variable is set by shellflip for a new generation and should not be set by hand"
        ))
    })?;
    Ok(Some(StdUnixStream::from(owned)))
}

/// Receives the handover, giving up after `timeout`.
pub(crate) fn receive(stream: &mut StdUnixStream, timeout: Duration) -> Result<Received, Error> {
    let io = |e: io::Error| Error::Handover(e.to_string());
    // Blocking reads bounded by the timeout, whatever mode the previous
    // generation left the descriptor in.
    stream.set_nonblocking(false).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    let received = channel::receive_handover(stream).map_err(|e| {
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            Error::Handover(format!(
                "nothing arrived from the previous generation within {}",
                humantime::format_duration(timeout)
            ))
        } else {
            Error::Handover(e.to_string())
        }
    })?;
    stream.set_read_timeout(None).map_err(io)?;
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

/// The link to the previous generation while it is alive. Shared: the
/// service's `ready()` sends READY through it at once, on its own thread.
pub(crate) struct ParentLink {
    writer: OwnedWriteHalf,
}

impl ParentLink {
    /// Splits the channel: the read half is watched for EOF (the previous
    /// generation exited), which cancels `gone`.
    pub(crate) fn start(stream: StdUnixStream, gone: CancellationToken) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        let (reader, writer) = UnixStream::from_std(stream)?.into_split();
        tokio::spawn(watch_for_exit(reader, gone));
        Ok(ParentLink { writer })
    }

    /// Sends as much of `message` as the socket takes without waiting;
    /// returns the bytes left to send with [`send`](Self::send) (none,
    /// unless the socket buffer is full).
    pub(crate) fn try_report(&self, message: &ChildMessage) -> io::Result<Vec<u8>> {
        let bytes = channel::encode_child_message(message)?;
        match self.writer.try_write(&bytes) {
            Ok(n) => Ok(bytes[n..].to_vec()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(bytes),
            Err(e) => Err(e),
        }
    }

    /// Sends a report to the previous generation.
    pub(crate) async fn report(&self, message: &ChildMessage) -> io::Result<()> {
        self.send(&channel::encode_child_message(message)?).await
    }

    /// Sends raw bytes of a report (what [`try_report`](Self::try_report)
    /// left).
    pub(crate) async fn send(&self, mut bytes: &[u8]) -> io::Result<()> {
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
