//! The control socket: `restart`, `status` and `stop` requests over a Unix
//! stream socket.
//!
//! A service configured with a control socket path listens on it for the
//! whole lineage of generations: the listening socket is inherited by each
//! new generation like any other listener, so a client that connects while a
//! restart is running is still answered (by the old generation until it
//! stops accepting, by the new one after).
//!
//! # Wire format
//!
//! Every message is one *frame*: a 4-byte big-endian length followed by that
//! many bytes of JSON. A frame may not be longer than [`MAX_FRAME_BYTES`];
//! a longer announcement is rejected before anything is allocated or read.
//! A client sends one [`Request`] frame and receives one [`Response`] frame:
//!
//! ```text
//! -> 00 00 00 0f {"op":"status"}
//! <- 00 00 00 .. {"result":"status","pid":4242,"generation":3,"phase":"serving",...}
//! ```
//!
//! A client may send further requests on the same connection, one at a time,
//! each after reading the previous answer. The connection is closed by the
//! service after a malformed, oversized or late request (answered with
//! [`Response::Error`] first), when the client closes its end, and, between
//! requests, when the generation stops accepting (a restart handed over or a
//! stop began): reconnect to reach the generation that is serving now.
//!
//! After [`Response::Stopping`] the service keeps the connection open,
//! without sending anything more, until its process exits: the client sees
//! end-of-file when the service is gone ([`ControlClient::stop_and_wait`]
//! relies on this).
//!
//! # Security
//!
//! The socket file is created with mode `0600` (there is no moment where it
//! is more open), and every connection's peer credentials are checked: only
//! the service's own effective uid and root are answered.
//!
//! # Client
//!
//! [`ControlClient`] is a small blocking client (std only, no Tokio) used by
//! the `shellflip` command-line tool:
//!
//! ```no_run
//! use shellflip_runtime::control::{ControlClient, Response};
//!
//! # fn main() -> Result<(), shellflip_runtime::control::ClientError> {
//! let status = ControlClient::status("/run/my-service.sock")?;
//! println!("pid {} generation {}", status.pid, status.generation);
//!
//! match ControlClient::restart("/run/my-service.sock")? {
//!     Response::Restarted(done) => println!("new pid {}", done.pid),
//!     Response::RestartFailed { reason, .. } => eprintln!("restart failed: {reason}"),
//!     other => eprintln!("unexpected answer: {other:?}"),
//! }
//! # Ok(())
//! # }
//! ```

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// The largest frame, in bytes (not counting its 4-byte length prefix),
/// that either side accepts.
pub const MAX_FRAME_BYTES: u32 = 64 * 1024;

/// How long the service waits for a complete request frame, and for the
/// client to take an answer, before it gives up on a connection.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How many control connections are served at once; connections beyond
/// this are answered with [`Response::Error`] and closed immediately.
const MAX_CONNECTIONS: usize = 128;

/// The listen backlog of the control socket.
const LISTEN_BACKLOG: i32 = 1024;

/// Pause after a failed `accept()` (e.g. out of file descriptors), so the
/// accept loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Longest text (in bytes) of a message field in a response; longer texts
/// (a child's very long error message) are cut so the frame fits.
const MAX_TEXT_BYTES: usize = 8 * 1024;

/// Longest path a Unix socket can be bound or connected at (`sun_path`
/// minus the terminating NUL).
const MAX_SOCKET_PATH: usize = if cfg!(any(target_os = "linux", target_os = "android")) {
    107
} else {
    103
};

// ---------------------------------------------------------------------------
// Protocol
// ---------------------------------------------------------------------------

/// A request sent to the service. On the wire: `{"op":"restart"}`,
/// `{"op":"status"}` or `{"op":"stop"}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Start the next generation from the service's executable path and hand
    /// over to it. Answered with [`Response::Restarted`] or
    /// [`Response::RestartFailed`] once the outcome is known.
    Restart,
    /// Ask for the service's state. Answered with [`Response::Status`].
    Status,
    /// Stop the service gracefully (stop accepting, drain, exit). Answered
    /// with [`Response::Stopping`]; the connection is then held open until
    /// the process exits.
    Stop,
}

/// The service's answer to a [`Request`]. On the wire the variant is the
/// `result` key: `{"result":"restarted","pid":1234,...}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// The restart succeeded: the new generation is ready and serving.
    Restarted(RestartSuccess),
    /// The restart did not happen or failed; the old generation keeps serving.
    RestartFailed {
        /// `in_progress` (another restart is running), `not_ready` (this
        /// generation cannot restart yet), `shutting_down` or `failed`.
        kind: String,
        /// Why, in words: the new generation's own error message, its exit
        /// status or signal, or the ready timeout.
        reason: String,
    },
    /// The service's state.
    Status(Status),
    /// The stop was accepted. The connection stays open until the process
    /// exits, so the client can wait for end-of-file.
    Stopping {
        /// The pid of the process that is stopping.
        pid: u32,
    },
    /// The request could not be served: malformed request, oversized frame,
    /// timeout, permission denied, too many connections, or the service is
    /// shutting down.
    Error {
        /// What went wrong, in words.
        message: String,
    },
}

/// The outcome of a successful restart.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RestartSuccess {
    /// The new generation's pid.
    pub pid: u32,
    /// The new generation's number.
    pub generation: u64,
    /// How long the restart took, from the request until the new generation
    /// was ready, in milliseconds.
    pub duration_ms: f64,
}

/// The state of a service, as answered to [`Request::Status`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Status {
    /// The pid of the generation that answered.
    pub pid: u32,
    /// Its generation number (increases by one with each successful
    /// restart).
    pub generation: u64,
    /// `starting`, `serving`, `restarting`, `draining` or `stopping`.
    pub phase: String,
    /// How long this generation has been running, in seconds.
    pub uptime_secs: f64,
    /// Successful restarts so far in this service's lineage.
    pub restarts: u64,
    /// Failed restarts so far in this service's lineage.
    pub failed_restarts: u64,
    /// The most recent restart attempt, if any.
    pub last_restart: Option<LastRestart>,
    /// The pid of the spawner process that starts this generation's
    /// successor (`None`: the service process spawns it itself).
    #[serde(default)]
    pub spawner_pid: Option<u32>,
}

/// The most recent restart attempt of a service.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LastRestart {
    /// Whether it succeeded.
    pub ok: bool,
    /// When it finished, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// How long it took, in milliseconds.
    pub duration_ms: f64,
    /// The new generation's pid, if one was started.
    pub pid: Option<u32>,
    /// The new generation's number, if one was started.
    pub generation: Option<u64>,
    /// Why it failed (`None` when it succeeded).
    pub error: Option<String>,
}

impl Response {
    /// A [`Response::Error`] with the given message.
    pub fn error(message: impl Into<String>) -> Self {
        Response::Error {
            message: message.into(),
        }
    }

    /// Cuts overly long texts so that the encoded response always fits in
    /// a frame.
    fn fit(self) -> Self {
        match self {
            Response::RestartFailed { kind, reason } => Response::RestartFailed {
                kind: cut_text(kind),
                reason: cut_text(reason),
            },
            Response::Error { message } => Response::Error {
                message: cut_text(message),
            },
            Response::Status(mut status) => {
                status.phase = cut_text(status.phase);
                if let Some(last) = status.last_restart.as_mut() {
                    last.error = last.error.take().map(cut_text);
                }
                Response::Status(status)
            }
            other => other,
        }
    }
}

fn cut_text(mut text: String) -> String {
    if text.len() <= MAX_TEXT_BYTES {
        return text;
    }
    let mut end = MAX_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str("... (truncated)");
    text
}

/// Decodes a request frame's payload. Never panics, whatever the input;
/// the error says what a valid request looks like.
pub fn decode_request(bytes: &[u8]) -> Result<Request, String> {
    serde_json::from_slice(bytes).map_err(|error| {
        format!(
            "malformed request ({error}); a request is a JSON object like {{\"op\":\"status\"}} \
             with op restart, status or stop"
        )
    })
}

/// Decodes a response frame's payload. Never panics, whatever the input.
pub fn decode_response(bytes: &[u8]) -> Result<Response, String> {
    serde_json::from_slice(bytes).map_err(|error| format!("malformed response: {error}"))
}

/// Encodes a response as a frame payload (JSON), cutting overly long texts
/// so it always fits in [`MAX_FRAME_BYTES`].
fn encode_response(response: Response) -> Vec<u8> {
    match serde_json::to_vec(&response.fit()) {
        Ok(bytes) if bytes.len() <= MAX_FRAME_BYTES as usize => bytes,
        _ => br#"{"result":"error","message":"the service could not encode its answer"}"#.to_vec(),
    }
}

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The underlying read or write failed (including timeouts of a
    /// blocking socket, reported as `WouldBlock` or `TimedOut`).
    #[error("control socket I/O failed: {0}")]
    Io(#[from] io::Error),
    /// The frame is larger than allowed. When reading, nothing beyond the
    /// 4-byte length was read.
    #[error("a frame of {len} bytes is larger than the maximum of {max} bytes")]
    TooLarge {
        /// The frame's length.
        len: u64,
        /// The maximum, [`MAX_FRAME_BYTES`].
        max: u32,
    },
    /// The connection was closed cleanly before the first byte of a frame.
    #[error("the connection was closed")]
    Eof,
    /// The connection was closed in the middle of a frame.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

fn check_len(len: u64) -> Result<usize, FrameError> {
    if len > u64::from(MAX_FRAME_BYTES) {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_BYTES,
        });
    }
    usize::try_from(len).map_err(|_| FrameError::TooLarge {
        len,
        max: MAX_FRAME_BYTES,
    })
}

/// Builds a frame: the 4-byte big-endian length, then `payload`.
pub fn encode_frame(payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    check_len(payload.len() as u64)?;
    let mut frame = Vec::with_capacity(4 + payload.len());
    // check_len guarantees the length fits in a u32.
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    Ok(frame)
}

fn truncated(what: &str, got: usize, expected: usize) -> FrameError {
    FrameError::Malformed(format!(
        "the connection was closed after {got} of the {expected} bytes of the frame {what}"
    ))
}

/// Reads one frame and returns its payload.
///
/// A length above [`MAX_FRAME_BYTES`] is rejected with
/// [`FrameError::TooLarge`] without reading or allocating the payload.
/// End-of-file before the first byte gives [`FrameError::Eof`]; inside the
/// frame, [`FrameError::Malformed`].
pub async fn read_frame<R>(reader: &mut R) -> Result<Vec<u8>, FrameError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    let mut header = [0u8; 4];
    let mut filled = 0;
    while filled < header.len() {
        match reader.read(&mut header[filled..]).await? {
            0 if filled == 0 => return Err(FrameError::Eof),
            0 => return Err(truncated("length", filled, header.len())),
            n => filled += n,
        }
    }
    let len = check_len(u64::from(u32::from_be_bytes(header)))?;
    let mut payload = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match reader.read(&mut payload[filled..]).await? {
            0 => return Err(truncated("payload", filled, len)),
            n => filled += n,
        }
    }
    Ok(payload)
}

/// Writes one frame carrying `payload` and flushes the writer.
///
/// A payload above [`MAX_FRAME_BYTES`] is refused with
/// [`FrameError::TooLarge`] and nothing is written.
pub async fn write_frame<W>(writer: &mut W, payload: &[u8]) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    let frame = encode_frame(payload)?;
    writer.write_all(&frame).await?;
    writer.flush().await?;
    Ok(())
}

/// Blocking version of [`read_frame`], for std readers.
pub fn read_frame_blocking<R>(reader: &mut R) -> Result<Vec<u8>, FrameError>
where
    R: Read + ?Sized,
{
    fn read_some<R: Read + ?Sized>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match reader.read(buf) {
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    let mut header = [0u8; 4];
    let mut filled = 0;
    while filled < header.len() {
        match read_some(reader, &mut header[filled..])? {
            0 if filled == 0 => return Err(FrameError::Eof),
            0 => return Err(truncated("length", filled, header.len())),
            n => filled += n,
        }
    }
    let len = check_len(u64::from(u32::from_be_bytes(header)))?;
    let mut payload = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match read_some(reader, &mut payload[filled..])? {
            0 => return Err(truncated("payload", filled, len)),
            n => filled += n,
        }
    }
    Ok(payload)
}

/// Blocking version of [`write_frame`], for std writers.
pub fn write_frame_blocking<W>(writer: &mut W, payload: &[u8]) -> Result<(), FrameError>
where
    W: Write + ?Sized,
{
    let frame = encode_frame(payload)?;
    writer.write_all(&frame)?;
    writer.flush()?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Binding the socket file
// ---------------------------------------------------------------------------

/// The identity (device and inode) of the control socket file this lineage
/// created, so the final generation removes the file only if it is still
/// ours — not one that another instance has bound at the same path since.
///
/// [`bind_control_socket`] returns it; a generation that inherited the
/// listener either receives it from its parent (it is serializable) or
/// calls [`ControlSocketFile::identify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ControlSocketFile {
    /// The socket's path.
    pub(crate) path: PathBuf,
    /// The device of the socket file.
    pub(crate) dev: u64,
    /// The inode of the socket file.
    pub(crate) ino: u64,
}

impl ControlSocketFile {
    /// Records the identity of the socket file that is at `path` now.
    pub(crate) fn identify(path: &Path) -> io::Result<Self> {
        let metadata = fs::symlink_metadata(path)?;
        Ok(ControlSocketFile {
            path: path.to_path_buf(),
            dev: metadata.dev(),
            ino: metadata.ino(),
        })
    }

    /// Removes the socket file if `path` still refers to it (same device
    /// and inode, still a socket). Best-effort: returns whether it removed
    /// the file, and never fails.
    pub(crate) fn remove(&self) -> bool {
        match fs::symlink_metadata(&self.path) {
            Ok(metadata)
                if metadata.file_type().is_socket()
                    && metadata.dev() == self.dev
                    && metadata.ino() == self.ino =>
            {
                match fs::remove_file(&self.path) {
                    Ok(()) => {
                        debug!(path = %self.path.display(), "control socket removed");
                        true
                    }
                    Err(error) => {
                        debug!(path = %self.path.display(), %error, "could not remove the control socket");
                        false
                    }
                }
            }
            Ok(_) => {
                debug!(
                    path = %self.path.display(),
                    "the control socket path now refers to another file; leaving it in place"
                );
                false
            }
            Err(_) => false,
        }
    }
}

/// Removes the control socket file at final stop, if it is still ours; see
/// [`ControlSocketFile::remove`].
pub(crate) fn remove_control_socket(file: &ControlSocketFile) -> bool {
    file.remove()
}

/// What is at the control socket path before binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existing {
    /// Nothing: the new socket must not replace anything.
    Nothing,
    /// A socket nobody listens on (left by a crashed service): replaced.
    Stale,
}

/// Creates the control socket at `path`, mode `0600`, listening.
///
/// The socket is bound at a temporary name in the same directory, made
/// `0600`, then renamed over `path`, so the file at `path` is never more
/// open than `0600` (on Linux the temporary file is already created `0600`:
/// its mode comes from the socket's inode, which is restricted before
/// binding). If `path` exists:
///
/// - a socket with a live service behind it: error, nothing is touched;
/// - a stale socket (connection refused): replaced by the rename;
/// - anything else (a regular file, a directory, a symlink): error, nothing
///   is touched.
///
/// Returns the listener (blocking, `CLOEXEC`; the caller makes it
/// non-blocking and hands it to Tokio) and the identity of the socket file,
/// for [`remove_control_socket`] at final stop.
///
/// Two services starting at the same moment with the same stale path may
/// race; one of them then ends up with an unreachable socket. That is a
/// misconfiguration this function does not try to arbitrate.
pub(crate) fn bind_control_socket(
    path: &Path,
) -> Result<(StdUnixListener, ControlSocketFile), crate::error::Error> {
    let fail = |reason: String| crate::error::Error::ControlSocket {
        path: path.to_path_buf(),
        reason,
    };

    let Some(name) = path.file_name() else {
        return Err(fail(
            "the path has no file name; give a path like /run/my-service.sock".to_string(),
        ));
    };
    let path_len = path.as_os_str().len();
    if path_len > MAX_SOCKET_PATH {
        return Err(fail(format!(
            "the path is {path_len} bytes long, but Unix socket paths are limited to \
             {MAX_SOCKET_PATH} bytes; choose a shorter path"
        )));
    }
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    match fs::metadata(dir) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => {
            return Err(fail(format!(
                "{} is not a directory; choose a path inside an existing directory",
                dir.display()
            )))
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(fail(format!(
                "the directory {} does not exist; create it first (for example with \
                 `mkdir -p {}`, or RuntimeDirectory= in a systemd unit) or choose another path",
                dir.display(),
                dir.display()
            )))
        }
        Err(error) => {
            return Err(fail(format!(
                "cannot access the directory {}: {error}",
                dir.display()
            )))
        }
    }

    let existing = inspect_existing(path).map_err(fail)?;

    let temp = temp_path(dir, name);
    let listener = bind_private(&temp)
        .map_err(|error| fail(format!("could not bind {}: {error}", temp.display())))?;
    let guard = RemoveOnDrop(Some(&temp));

    fs::set_permissions(&temp, fs::Permissions::from_mode(0o600)).map_err(|error| {
        fail(format!(
            "could not set mode 0600 on {}: {error}",
            temp.display()
        ))
    })?;
    // The rename keeps the inode: this is the identity of the final file.
    let metadata = fs::symlink_metadata(&temp)
        .map_err(|error| fail(format!("could not inspect {}: {error}", temp.display())))?;
    move_into_place(&temp, path, existing).map_err(fail)?;
    guard.disarm();

    debug!(path = %path.display(), replaced_stale = existing == Existing::Stale, "control socket bound");
    Ok((
        listener,
        ControlSocketFile {
            path: path.to_path_buf(),
            dev: metadata.dev(),
            ino: metadata.ino(),
        },
    ))
}

/// Removes a temporary socket file on failure paths.
struct RemoveOnDrop<'a>(Option<&'a Path>);

impl RemoveOnDrop<'_> {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(path) = self.0 {
            let _ = fs::remove_file(path);
        }
    }
}

fn inspect_existing(path: &Path) -> Result<Existing, String> {
    let metadata = match fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Existing::Nothing),
        Err(error) => return Err(format!("cannot inspect the existing path: {error}")),
    };
    let file_type = metadata.file_type();
    if !file_type.is_socket() {
        let what = if file_type.is_file() {
            "a regular file"
        } else if file_type.is_dir() {
            "a directory"
        } else if file_type.is_symlink() {
            "a symbolic link"
        } else {
            "not a socket"
        };
        return Err(format!(
            "the path exists and is {what}, not a socket; refusing to replace it: remove it or \
             choose another control socket path"
        ));
    }
    match probe_socket(path) {
        Ok(()) => Err(
            "another service is already listening on this socket; stop it first or \
                       choose another control socket path"
                .to_string(),
        ),
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => Ok(Existing::Stale),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Existing::Nothing),
        Err(error) => Err(format!(
            "a socket exists at this path but it cannot be checked for a live service ({error}); \
             remove it if it is stale"
        )),
    }
}

/// Connects to `path` without blocking: `Ok` (or a full backlog) means a
/// service is listening there.
fn probe_socket(path: &Path) -> io::Result<()> {
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    match socket.connect(&socket2::SockAddr::unix(path)?) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(error) => Err(error),
    }
}

/// `.<name>.<pid>.tmp` in `dir`, or a shorter `.shellflip.<pid>.tmp` if
/// that would be too long for a socket address.
fn temp_path(dir: &Path, name: &std::ffi::OsStr) -> PathBuf {
    let pid = std::process::id();
    let mut long = OsString::from(".");
    long.push(name);
    long.push(format!(".{pid}.tmp"));
    let candidate = dir.join(long);
    if candidate.as_os_str().len() <= MAX_SOCKET_PATH {
        candidate
    } else {
        dir.join(format!(".shellflip.{pid}.tmp"))
    }
}

/// Binds a listening Unix socket at `path` whose file is created `0600`
/// on Linux (elsewhere the caller's chmod closes the window).
fn bind_private(path: &Path) -> io::Result<StdUnixListener> {
    // A leftover from an earlier attempt of this very pid: only ever a socket.
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        fs::remove_file(path)?;
    }
    // socket2 creates the socket with CLOEXEC.
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    // Linux creates the socket file with the socket inode's mode (minus the
    // umask): restricting it first means the file never exists with a
    // wider mode. Best-effort: other systems may refuse, the chmod follows.
    let _ = nix::sys::stat::fchmod(&socket, nix::sys::stat::Mode::from_bits_truncate(0o600));
    socket.bind(&socket2::SockAddr::unix(path)?)?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(StdUnixListener::from(socket))
}

fn move_into_place(temp: &Path, path: &Path, existing: Existing) -> Result<(), String> {
    if existing == Existing::Nothing {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            use nix::errno::Errno;
            use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
            match renameat2(
                AT_FDCWD,
                temp,
                AT_FDCWD,
                path,
                RenameFlags::RENAME_NOREPLACE,
            ) {
                Ok(()) => return Ok(()),
                Err(Errno::EEXIST) => {
                    return Err(
                        "another process created this path while the control socket \
                                was being set up; is another instance of the service starting?"
                            .to_string(),
                    )
                }
                // The file system does not support RENAME_NOREPLACE: plain rename.
                Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {}
                Err(errno) => {
                    return Err(format!(
                        "could not move {} into place: {}",
                        temp.display(),
                        io::Error::from(errno)
                    ))
                }
            }
        }
    }
    fs::rename(temp, path)
        .map_err(|error| format!("could not move {} into place: {error}", temp.display()))
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

/// A request received on the control socket, for the supervisor to act on.
/// The connection waits for the answer on `reply`; dropping `reply` answers
/// "the service is shutting down".
#[derive(Debug)]
pub(crate) struct ControlCommand {
    /// The request.
    pub request: Request,
    /// Where to send the answer.
    pub reply: oneshot::Sender<Response>,
}

/// Tunables of the server; tests shorten them.
#[derive(Debug, Clone, Copy)]
struct ServerOptions {
    request_timeout: Duration,
    max_connections: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            request_timeout: REQUEST_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// Serves the control socket until `stop_accepting` is cancelled, then
/// returns, dropping (closing this process's copy of) `listener`.
///
/// Each connection runs as a task of `connections`, so the drain can wait
/// for requests in flight; a connection is bounded by [`REQUEST_TIMEOUT`]
/// while the client is sending a request or receiving an answer (the wait
/// for the supervisor's answer, e.g. a restart, is not bounded here). A
/// connection that was answered [`Response::Stopping`] is moved to an
/// untracked task and held open until the process exits.
///
/// Requests are forwarded on `commands`; if that channel is closed, or the
/// reply is dropped, the client is told the service is shutting down.
pub(crate) async fn serve(
    listener: tokio::net::UnixListener,
    commands: mpsc::Sender<ControlCommand>,
    stop_accepting: CancellationToken,
    connections: TaskTracker,
) {
    serve_with(
        listener,
        commands,
        stop_accepting,
        connections,
        ServerOptions::default(),
    )
    .await;
}

async fn serve_with(
    listener: tokio::net::UnixListener,
    commands: mpsc::Sender<ControlCommand>,
    stop_accepting: CancellationToken,
    connections: TaskTracker,
    options: ServerOptions,
) {
    let permits = Arc::new(Semaphore::new(options.max_connections));
    let service_uid = nix::unistd::geteuid().as_raw();
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop_accepting.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                warn!(%error, "control socket: accept failed");
                tokio::select! {
                    biased;
                    () = stop_accepting.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            warn!(
                limit = options.max_connections,
                "control socket: too many connections; refusing one"
            );
            refuse_now(
                stream,
                &format!(
                    "too many control connections (at most {} at once); try again shortly",
                    options.max_connections
                ),
            );
            continue;
        };
        let connection = Connection {
            commands: commands.clone(),
            stop_accepting: stop_accepting.clone(),
            options,
            service_uid,
        };
        connections.spawn(async move {
            connection.run(stream).await;
            drop(permit);
        });
    }
    debug!("control socket: stopped accepting");
}

/// Answers `message` without waiting (the answer fits in the empty send
/// buffer of a fresh connection) and closes the connection.
fn refuse_now(stream: UnixStream, message: &str) {
    let Ok(frame) = encode_frame(&encode_response(Response::error(message))) else {
        return;
    };
    if let Ok(mut stream) = stream.into_std() {
        // Non-blocking: if it does not fit, the client just sees the close.
        let _ = stream.write(&frame);
    }
}

/// Whether a peer with `peer_uid` may use a service running as
/// `service_uid`: the same user, or root.
fn peer_allowed(peer_uid: u32, service_uid: u32) -> bool {
    peer_uid == service_uid || peer_uid == 0
}

fn shutting_down() -> Response {
    Response::error("the service is shutting down; no request is served any more")
}

struct Connection {
    commands: mpsc::Sender<ControlCommand>,
    stop_accepting: CancellationToken,
    options: ServerOptions,
    service_uid: u32,
}

impl Connection {
    async fn run(self, mut stream: UnixStream) {
        if let Err(message) = self.check_peer(&stream) {
            warn!("control socket: {message}");
            self.send(&mut stream, Response::error(message)).await;
            return;
        }
        let timeout = self.options.request_timeout;
        let mut answered = 0u64;
        loop {
            let read = tokio::time::timeout(timeout, read_frame(&mut stream));
            // The first request is always waited for, even when the
            // generation stops accepting meanwhile: the client connected to
            // this generation and is owed an answer. Between requests, a
            // generation that stops accepting lets the client go.
            let frame = if answered == 0 {
                read.await
            } else {
                tokio::select! {
                    biased;
                    frame = read => frame,
                    () = self.stop_accepting.cancelled() => {
                        debug!("control socket: closing an idle connection; this generation stopped accepting");
                        return;
                    }
                }
            };
            let payload = match frame {
                Ok(Ok(payload)) => payload,
                Ok(Err(FrameError::Eof)) => return,
                Ok(Err(FrameError::Io(error))) => {
                    debug!(%error, "control socket: read failed");
                    return;
                }
                Ok(Err(error)) => {
                    warn!(%error, "control socket: bad request frame");
                    self.send(
                        &mut stream,
                        Response::error(format!("request rejected: {error}")),
                    )
                    .await;
                    return;
                }
                Err(_elapsed) => {
                    warn!("control socket: no complete request within {timeout:?}");
                    self.send(
                        &mut stream,
                        Response::error(format!(
                            "timed out: no complete request within {}; closing the connection",
                            humantime::format_duration(timeout)
                        )),
                    )
                    .await;
                    return;
                }
            };
            let request = match decode_request(&payload) {
                Ok(request) => request,
                Err(message) => {
                    warn!("control socket: {message}");
                    self.send(&mut stream, Response::error(message)).await;
                    return;
                }
            };
            debug!(?request, "control socket: request");
            let response = self.dispatch(request).await;
            debug!(?response, "control socket: answer");
            let stopping = matches!(response, Response::Stopping { .. });
            if !self.send(&mut stream, response).await {
                return;
            }
            if stopping {
                // Held outside `connections`, so the drain does not wait for
                // it: the client sees end-of-file when the process is gone.
                tokio::spawn(async move {
                    let _held = stream;
                    std::future::pending::<()>().await
                });
                return;
            }
            answered += 1;
        }
    }

    fn check_peer(&self, stream: &UnixStream) -> Result<(), String> {
        let credentials = stream.peer_cred().map_err(|error| {
            format!("permission denied: the peer's credentials cannot be read ({error})")
        })?;
        if peer_allowed(credentials.uid(), self.service_uid) {
            Ok(())
        } else {
            Err(format!(
                "permission denied: the control socket only answers uid {} (the service's user) \
                 and root, not uid {}",
                self.service_uid,
                credentials.uid()
            ))
        }
    }

    async fn dispatch(&self, request: Request) -> Response {
        let (reply, answer) = oneshot::channel();
        if self
            .commands
            .send(ControlCommand { request, reply })
            .await
            .is_err()
        {
            return shutting_down();
        }
        answer.await.unwrap_or_else(|_| shutting_down())
    }

    /// Writes `response`, bounded by the request timeout; returns whether it
    /// was written.
    async fn send(&self, stream: &mut UnixStream, response: Response) -> bool {
        let payload = encode_response(response);
        match tokio::time::timeout(self.options.request_timeout, write_frame(stream, &payload))
            .await
        {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                debug!(%error, "control socket: could not write the answer");
                false
            }
            Err(_elapsed) => {
                warn!("control socket: the client did not take the answer in time");
                false
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Blocking client
// ---------------------------------------------------------------------------

/// Why a [`ControlClient`] call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing is listening at the path (no file, not a socket, or a stale
    /// socket of a service that is gone).
    #[error(
        "no service is listening on {} ({}): is it running, and is this the control socket \
         path it was started with?",
        path.display(),
        describe_connect_error(source)
    )]
    NoService {
        /// The control socket path.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The socket exists but this user may not connect to it.
    #[error(
        "permission denied on the control socket {}: it is accessible only to the user the \
         service runs as (mode 0600); run this command as that user or as root",
        path.display()
    )]
    PermissionDenied {
        /// The control socket path.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// A system call on the connection failed.
    #[error("control socket {}: {context}: {source}", path.display())]
    Io {
        /// The control socket path.
        path: PathBuf,
        /// What was being done.
        context: &'static str,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The service closed the connection early or answered something that
    /// is not a valid answer.
    #[error("control socket {}: {message}", path.display())]
    Protocol {
        /// The control socket path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The service answered with [`Response::Error`].
    #[error("control socket {}: the service refused the request: {message}", path.display())]
    Refused {
        /// The control socket path.
        path: PathBuf,
        /// The service's message.
        message: String,
    },
    /// Nothing happened within the timeout.
    #[error("timed out after {} waiting for {waiting_for}", humantime::format_duration(*after))]
    Timeout {
        /// What was awaited.
        waiting_for: String,
        /// The timeout.
        after: Duration,
    },
}

fn describe_connect_error(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::ENOENT) => "no such file".to_string(),
        Some(libc::ECONNREFUSED) => "connection refused".to_string(),
        Some(libc::ENOTSOCK) => "not a socket".to_string(),
        Some(libc::ENOTDIR) => "a parent is not a directory".to_string(),
        _ => error.to_string(),
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn is_closed(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

/// A blocking client of the control socket (std only; usable from any
/// thread, without a Tokio runtime).
///
/// By default reads and writes wait without a time limit: a restart takes
/// as long as the new generation needs to become ready (bounded by the
/// service's ready timeout). Use [`ControlClient::set_timeout`] to bound
/// them.
#[derive(Debug)]
pub struct ControlClient {
    stream: StdUnixStream,
    path: PathBuf,
    timeout: Option<Duration>,
}

impl ControlClient {
    /// Connects to the control socket at `path`.
    ///
    /// Fails with [`ClientError::NoService`] if no service listens there
    /// (`ENOENT`, `ECONNREFUSED`, `ENOTSOCK`, `ENOTDIR`) and with
    /// [`ClientError::PermissionDenied`] if this user may not connect.
    pub fn connect(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let path = path.as_ref().to_path_buf();
        match StdUnixStream::connect(&path) {
            Ok(stream) => Ok(ControlClient {
                stream,
                path,
                timeout: None,
            }),
            Err(mut source) => Err(match source.raw_os_error() {
                // Linux refuses connections to a regular file like to a
                // stale socket; say which it is.
                Some(libc::ECONNREFUSED)
                    if fs::symlink_metadata(&path).is_ok_and(|m| !m.file_type().is_socket()) =>
                {
                    source = io::Error::from_raw_os_error(libc::ENOTSOCK);
                    ClientError::NoService { path, source }
                }
                Some(libc::ENOENT | libc::ECONNREFUSED | libc::ENOTSOCK | libc::ENOTDIR) => {
                    ClientError::NoService { path, source }
                }
                Some(libc::EACCES | libc::EPERM) => ClientError::PermissionDenied { path, source },
                _ => ClientError::Io {
                    path,
                    context: "could not connect",
                    source,
                },
            }),
        }
    }

    /// The control socket path this client is connected to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bounds each read and write on the connection (`None`: no bound, the
    /// default). A zero duration is refused by the system (an
    /// [`ClientError::Io`] error).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.stream
            .set_read_timeout(timeout)
            .and_then(|()| self.stream.set_write_timeout(timeout))
            .map_err(|source| ClientError::Io {
                path: self.path.clone(),
                context: "could not set the timeout",
                source,
            })?;
        self.timeout = timeout;
        Ok(())
    }

    /// Sends `request` and returns the service's answer. A
    /// [`Response::Error`] is returned as an answer, not as an error.
    pub fn request(&mut self, request: &Request) -> Result<Response, ClientError> {
        let payload =
            serde_json::to_vec(request).map_err(|error| self.protocol(error.to_string()))?;
        if let Err(error) = write_frame_blocking(&mut self.stream, &payload) {
            // A service that refuses a connection (too many connections,
            // permission denied) answers and closes at once, which can make
            // the write fail: its answer says why, so prefer it.
            if matches!(&error, FrameError::Io(e) if is_closed(e)) {
                if let Ok(Ok(response)) =
                    read_frame_blocking(&mut self.stream).map(|payload| decode_response(&payload))
                {
                    return Ok(response);
                }
            }
            return Err(self.frame_error(error, "sending the request"));
        }
        match read_frame_blocking(&mut self.stream) {
            Ok(payload) => decode_response(&payload).map_err(|message| {
                self.protocol(format!(
                    "the service's answer is not understood ({message}); is this the control \
                     socket of a shellflip service of a compatible version?"
                ))
            }),
            Err(error) => Err(self.frame_error(error, "reading the answer")),
        }
    }

    /// Connects to `path`, asks for a restart and waits for its outcome:
    /// [`Response::Restarted`] or [`Response::RestartFailed`] (or
    /// [`Response::Error`] if the service refused the request).
    pub fn restart(path: impl AsRef<Path>) -> Result<Response, ClientError> {
        ControlClient::connect(path)?.request(&Request::Restart)
    }

    /// Connects to `path` and asks for the service's status. An answer
    /// other than [`Response::Status`] is an error.
    pub fn status(path: impl AsRef<Path>) -> Result<Status, ClientError> {
        let mut client = ControlClient::connect(path)?;
        match client.request(&Request::Status)? {
            Response::Status(status) => Ok(status),
            other => Err(client.unexpected(other)),
        }
    }

    /// Connects to `path`, asks the service to stop, and waits until its
    /// process has exited; returns the pid that stopped.
    ///
    /// The service holds the connection open until its process ends; after
    /// end-of-file, this waits until the pid no longer exists or is a zombie
    /// (its parent has yet to reap it). The whole call is bounded by
    /// `timeout` ([`ClientError::Timeout`]).
    pub fn stop_and_wait(path: impl AsRef<Path>, timeout: Duration) -> Result<u32, ClientError> {
        let deadline = Instant::now() + timeout;
        let mut client = ControlClient::connect(path)?;
        client.set_timeout(Some(timeout))?;
        let pid = match client.request(&Request::Stop) {
            Ok(Response::Stopping { pid }) => pid,
            Ok(other) => return Err(client.unexpected(other)),
            Err(ClientError::Timeout { .. }) => {
                return Err(ClientError::Timeout {
                    waiting_for: "the service to accept the stop request".to_string(),
                    after: timeout,
                })
            }
            Err(error) => return Err(error),
        };
        if pid == 0 || i32::try_from(pid).is_err() {
            return Err(client.protocol(format!("the service announced an invalid pid {pid}")));
        }
        let waiting_for = || format!("the service (pid {pid}) to exit");

        // End-of-file: the process (or at least its runtime) is gone.
        let mut buf = [0u8; 256];
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ClientError::Timeout {
                    waiting_for: waiting_for(),
                    after: timeout,
                });
            }
            client.set_timeout(Some(remaining))?;
            match client.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) if is_closed(&error) => break,
                Err(error) if is_timeout(&error) => {
                    return Err(ClientError::Timeout {
                        waiting_for: waiting_for(),
                        after: timeout,
                    })
                }
                Err(source) => {
                    return Err(ClientError::Io {
                        path: client.path.clone(),
                        context: "waiting for the service to exit",
                        source,
                    })
                }
            }
        }

        // Then the process itself: usually gone already.
        let mut pause = Duration::from_millis(1);
        while process_running(pid) {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ClientError::Timeout {
                    waiting_for: waiting_for(),
                    after: timeout,
                });
            }
            std::thread::sleep(pause.min(remaining));
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        Ok(pid)
    }

    fn protocol(&self, message: String) -> ClientError {
        ClientError::Protocol {
            path: self.path.clone(),
            message,
        }
    }

    fn unexpected(&self, response: Response) -> ClientError {
        match response {
            Response::Error { message } => ClientError::Refused {
                path: self.path.clone(),
                message,
            },
            other => self.protocol(format!("unexpected answer from the service: {other:?}")),
        }
    }

    fn frame_error(&self, error: FrameError, doing: &'static str) -> ClientError {
        match error {
            FrameError::Eof => self.protocol(format!(
                "the service closed the connection while {doing} (did it exit or restart? check \
                 its logs)"
            )),
            FrameError::Io(error) if is_timeout(&error) => ClientError::Timeout {
                waiting_for: if doing == "sending the request" {
                    "the service to take the request".to_string()
                } else {
                    "an answer from the service".to_string()
                },
                after: self.timeout.unwrap_or_default(),
            },
            FrameError::Io(error) if is_closed(&error) => self.protocol(format!(
                "the service closed the connection while {doing} (did it exit or restart? check \
                 its logs)"
            )),
            FrameError::Io(source) => ClientError::Io {
                path: self.path.clone(),
                context: doing,
                source,
            },
            other => self.protocol(format!("{doing}: {other}")),
        }
    }
}

/// Whether `pid` names a process that has not exited yet (a zombie has).
fn process_running(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last parenthesis (comm
        // may itself contain parentheses and spaces).
        Ok(stat) => match stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next())
        {
            Some('Z' | 'X') => false,
            Some(_) => true,
            None => false,
        },
        Err(error) if error.kind() == io::ErrorKind::NotFound => false,
        // No procfs: ask the kernel whether the pid exists.
        Err(_) => {
            let Ok(raw) = i32::try_from(pid) else {
                return false;
            };
            !matches!(
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None),
                Err(nix::errno::Errno::ESRCH)
            )
        }
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    // ----- protocol and frames -----

    #[test]
    fn wire_format_is_tagged_json() {
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"op":"status"}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::Restart).unwrap(),
            r#"{"op":"restart"}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::Stop).unwrap(),
            r#"{"op":"stop"}"#
        );
        let restarted = Response::Restarted(RestartSuccess {
            pid: 7,
            generation: 2,
            duration_ms: 1.5,
        });
        let json: serde_json::Value = serde_json::to_value(&restarted).unwrap();
        assert_eq!(json["result"], "restarted");
        assert_eq!(json["pid"], 7);
        assert_eq!(json["generation"], 2);
        let failed = Response::RestartFailed {
            kind: "in_progress".into(),
            reason: "busy".into(),
        };
        let json: serde_json::Value = serde_json::to_value(&failed).unwrap();
        assert_eq!(json["result"], "restart_failed");
        assert_eq!(json["kind"], "in_progress");
    }

    fn sample_status() -> Status {
        Status {
            pid: 42,
            generation: 3,
            phase: "serving".into(),
            uptime_secs: 12.5,
            restarts: 2,
            failed_restarts: 1,
            last_restart: Some(LastRestart {
                ok: false,
                at_unix_ms: 1_700_000_000_000,
                duration_ms: 30_000.0,
                pid: Some(43),
                generation: Some(4),
                error: Some("not ready within 30s".into()),
            }),
            spawner_pid: Some(44),
        }
    }

    #[test]
    fn every_response_round_trips() {
        let responses = [
            Response::Restarted(RestartSuccess {
                pid: 1,
                generation: 2,
                duration_ms: 3.25,
            }),
            Response::RestartFailed {
                kind: "failed".into(),
                reason: "exit status 3".into(),
            },
            Response::Status(sample_status()),
            Response::Stopping { pid: 9 },
            Response::error("nope"),
        ];
        for response in responses {
            let bytes = encode_response(response.clone());
            assert_eq!(decode_response(&bytes).unwrap(), response);
        }
    }

    #[test]
    fn long_texts_are_cut_to_fit_a_frame() {
        let huge = "é".repeat(100_000);
        let bytes = encode_response(Response::RestartFailed {
            kind: "failed".into(),
            reason: huge,
        });
        assert!(bytes.len() <= MAX_FRAME_BYTES as usize);
        match decode_response(&bytes).unwrap() {
            Response::RestartFailed { reason, .. } => assert!(reason.ends_with("(truncated)")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn blocking_frame_round_trip() {
        let mut wire = Vec::new();
        write_frame_blocking(&mut wire, b"hello").unwrap();
        write_frame_blocking(&mut wire, b"").unwrap();
        assert_eq!(&wire[..4], &[0, 0, 0, 5]);
        let mut reader = Cursor::new(wire);
        assert_eq!(read_frame_blocking(&mut reader).unwrap(), b"hello");
        assert_eq!(read_frame_blocking(&mut reader).unwrap(), b"");
        assert!(matches!(
            read_frame_blocking(&mut reader),
            Err(FrameError::Eof)
        ));
    }

    #[tokio::test]
    async fn async_frame_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let max = vec![b'x'; MAX_FRAME_BYTES as usize];
        let writer = tokio::spawn(async move {
            write_frame(&mut a, br#"{"op":"status"}"#).await.unwrap();
            write_frame(&mut a, &max).await.unwrap();
        });
        let first = read_frame(&mut b).await.unwrap();
        assert_eq!(decode_request(&first).unwrap(), Request::Status);
        assert_eq!(
            read_frame(&mut b).await.unwrap().len(),
            MAX_FRAME_BYTES as usize
        );
        writer.await.unwrap();
        assert!(matches!(read_frame(&mut b).await, Err(FrameError::Eof)));
    }

    /// A reader that fails the test if more than `limit` bytes are read.
    struct Limited<'a> {
        data: &'a [u8],
        limit: usize,
        read: usize,
    }

    impl Read for Limited<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.data.len() - self.read);
            assert!(self.read + n <= self.limit, "read beyond the frame header");
            buf[..n].copy_from_slice(&self.data[self.read..self.read + n]);
            self.read += n;
            Ok(n)
        }
    }

    #[test]
    fn oversized_announcement_is_rejected_without_reading_it() {
        for len in [MAX_FRAME_BYTES + 1, u32::MAX] {
            let mut data = len.to_be_bytes().to_vec();
            data.extend_from_slice(&[b'x'; 64]);
            let mut reader = Limited {
                data: &data,
                limit: 4,
                read: 0,
            };
            match read_frame_blocking(&mut reader) {
                Err(FrameError::TooLarge { len: got, max }) => {
                    assert_eq!(got, u64::from(len));
                    assert_eq!(max, MAX_FRAME_BYTES);
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(reader.read, 4);
        }
    }

    #[tokio::test]
    async fn oversized_announcement_is_rejected_without_reading_it_async() {
        let mut data = u32::MAX.to_be_bytes().to_vec();
        data.extend_from_slice(b"rest");
        let mut reader = &data[..];
        assert!(matches!(
            read_frame(&mut reader).await,
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(reader, b"rest");
    }

    #[test]
    fn oversized_payload_is_not_written() {
        let mut wire = Vec::new();
        let payload = vec![0u8; MAX_FRAME_BYTES as usize + 1];
        assert!(matches!(
            write_frame_blocking(&mut wire, &payload),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(wire.is_empty());
    }

    #[test]
    fn truncated_frames_are_malformed() {
        for data in [&[0u8, 0][..], &[0, 0, 0, 10, b'a', b'b'][..]] {
            let mut reader = Cursor::new(data);
            match read_frame_blocking(&mut reader) {
                Err(FrameError::Malformed(message)) => {
                    assert!(message.contains("closed"), "{message}")
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn decode_request_accepts_the_three_ops() {
        assert_eq!(decode_request(br#"{"op":"restart"}"#), Ok(Request::Restart));
        assert_eq!(decode_request(br#"{"op":"status"}"#), Ok(Request::Status));
        assert_eq!(
            decode_request(br#" {"op":"stop", "extra": 1} "#),
            Ok(Request::Stop)
        );
    }

    #[test]
    fn decode_request_rejects_garbage_with_a_helpful_message() {
        for garbage in [
            &b""[..],
            b"not json",
            b"{}",
            b"{\"op\":\"explode\"}",
            b"[1,2,3]",
            b"\xff\xfe",
            b"{\"op\":\"status\"} trailing",
        ] {
            let error = decode_request(garbage).unwrap_err();
            assert!(error.contains("malformed request"), "{error}");
            assert!(error.contains("op"), "{error}");
        }
    }

    #[test]
    fn decode_request_never_panics() {
        // Every input of up to two bytes.
        let _ = decode_request(b"");
        for a in 0..=255u8 {
            let _ = decode_request(&[a]);
            for b in 0..=255u8 {
                let _ = decode_request(&[a, b]);
            }
        }
        // Deterministic pseudo-random inputs over JSON-ish bytes.
        let alphabet = b"{}[]\":,\\ op restatusp0123456789-+.eEtrufalsn\x00\xff\xc3\xa9\n";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 48) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let _ = decode_request(&input);
        }
        // Deep nesting and huge numbers.
        let _ = decode_request(&[b'['; 100_000]);
        let _ = decode_request(&[b'{'; 100_000]);
        let _ = decode_request(format!("{{\"op\":{}}}", "9".repeat(10_000)).as_bytes());
        let _ = decode_request(format!("{{\"op\":\"{}\"}}", "\\u0000".repeat(1000)).as_bytes());
    }

    // ----- binding -----

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn bound_socket_is_0600_and_reachable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.sock");
        let (listener, file) = bind_control_socket(&path).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(file.path, path);
        let meta = fs::symlink_metadata(&path).unwrap();
        assert_eq!((file.dev, file.ino), (meta.dev(), meta.ino()));
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("svc.sock")]);
        // CLOEXEC, as every fd the runtime creates.
        let flags = nix::fcntl::fcntl(&listener, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert!(
            nix::fcntl::FdFlag::from_bits_truncate(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC)
        );
        let _client = StdUnixStream::connect(&path).unwrap();
        let (_server_side, _) = listener.accept().unwrap();
    }

    #[test]
    fn stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.sock");
        drop(StdUnixListener::bind(&path).unwrap());
        let old_ino = fs::symlink_metadata(&path).unwrap().ino();
        assert!(StdUnixStream::connect(&path).is_err());
        let (listener, file) = bind_control_socket(&path).unwrap();
        assert_ne!(file.ino, old_ino);
        assert_eq!(mode_of(&path), 0o600);
        let _client = StdUnixStream::connect(&path).unwrap();
        listener.accept().unwrap();
    }

    #[test]
    fn live_socket_is_refused_and_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.sock");
        let other = StdUnixListener::bind(&path).unwrap();
        let ino = fs::symlink_metadata(&path).unwrap().ino();
        let error = bind_control_socket(&path).unwrap_err().to_string();
        assert!(error.contains("already listening"), "{error}");
        assert_eq!(fs::symlink_metadata(&path).unwrap().ino(), ino);
        // The other service still gets its connections.
        let _client = StdUnixStream::connect(&path).unwrap();
        other.accept().unwrap();
    }

    #[test]
    fn regular_file_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.sock");
        fs::write(&path, "precious").unwrap();
        let error = bind_control_socket(&path).unwrap_err().to_string();
        assert!(error.contains("regular file"), "{error}");
        assert!(error.contains("not a socket"), "{error}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "precious");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn directory_and_symlink_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let error = bind_control_socket(&sub).unwrap_err().to_string();
        assert!(error.contains("a directory"), "{error}");
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink("/nonexistent", &link).unwrap();
        let error = bind_control_socket(&link).unwrap_err().to_string();
        assert!(error.contains("symbolic link"), "{error}");
    }

    #[test]
    fn missing_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("svc.sock");
        let error = bind_control_socket(&path).unwrap_err();
        assert!(matches!(error, crate::error::Error::ControlSocket { .. }));
        let message = error.to_string();
        assert!(message.contains("does not exist"), "{message}");
        assert!(message.contains("missing"), "{message}");
    }

    #[test]
    fn overlong_path_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x".repeat(120));
        let message = bind_control_socket(&path).unwrap_err().to_string();
        assert!(message.contains("shorter path"), "{message}");
    }

    #[test]
    fn long_names_bind_through_a_short_temporary_name() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().as_os_str().len() + 1;
        let path = dir.path().join("s".repeat(MAX_SOCKET_PATH - base));
        assert_eq!(path.as_os_str().len(), MAX_SOCKET_PATH);
        let (_listener, _file) = bind_control_socket(&path).unwrap();
        assert_eq!(mode_of(&path), 0o600);
    }

    #[test]
    fn removal_only_removes_our_own_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.sock");
        let (listener, file) = bind_control_socket(&path).unwrap();
        assert_eq!(ControlSocketFile::identify(&path).unwrap(), file);
        drop(listener);
        assert!(remove_control_socket(&file));
        assert!(!path.exists());
        assert!(!remove_control_socket(&file));

        // Another instance took the path since: leave its socket alone.
        let (_listener, file) = bind_control_socket(&path).unwrap();
        fs::remove_file(&path).unwrap();
        let _other = StdUnixListener::bind(&path).unwrap();
        assert!(!file.remove());
        assert!(path.exists());
    }

    #[test]
    fn peers_other_than_our_user_and_root_are_refused() {
        assert!(peer_allowed(1000, 1000));
        assert!(peer_allowed(0, 1000));
        assert!(peer_allowed(0, 0));
        assert!(!peer_allowed(1001, 1000));
        assert!(!peer_allowed(1000, 0));
    }

    // ----- client errors -----

    #[test]
    fn client_reports_no_service_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nothing.sock");
        let stale = dir.path().join("stale.sock");
        drop(StdUnixListener::bind(&stale).unwrap());
        let file = dir.path().join("file.sock");
        fs::write(&file, "").unwrap();
        for (path, why) in [
            (&missing, "no such file"),
            (&stale, "connection refused"),
            (&file, "not a socket"),
        ] {
            let error = ControlClient::connect(path).unwrap_err();
            assert!(matches!(error, ClientError::NoService { .. }), "{error:?}");
            let message = error.to_string();
            assert!(
                message.starts_with("no service is listening on"),
                "{message}"
            );
            assert!(message.contains(why), "{message}");
            assert!(message.contains("is it running"), "{message}");
        }
    }

    // ----- server -----

    const TEST_TIMEOUT: Duration = Duration::from_secs(20);

    struct TestServer {
        _dir: tempfile::TempDir,
        path: PathBuf,
        stop_accepting: CancellationToken,
        connections: TaskTracker,
        server: tokio::task::JoinHandle<()>,
        /// Every request the fake supervisor answered, in order.
        handled: std::sync::mpsc::Receiver<Request>,
    }

    /// Binds a control socket in a temp dir, serves it, and answers the
    /// commands like a supervisor would (pid 4242, generation counting
    /// restarts; stop answers `Stopping` for `stop_pid`).
    fn start_server(options: ServerOptions, stop_pid: u32) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let (listener, _file) = bind_control_socket(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::UnixListener::from_std(listener).unwrap();
        let (commands, mut received) = mpsc::channel::<ControlCommand>(16);
        let (handled_tx, handled) = std::sync::mpsc::channel();
        tokio::spawn(async move {
            let mut generation = 1;
            while let Some(command) = received.recv().await {
                let _ = handled_tx.send(command.request.clone());
                let response = match command.request {
                    Request::Status => Response::Status(Status {
                        generation,
                        ..sample_status()
                    }),
                    Request::Restart => {
                        generation += 1;
                        Response::Restarted(RestartSuccess {
                            pid: 4243,
                            generation,
                            duration_ms: 1.0,
                        })
                    }
                    Request::Stop => Response::Stopping { pid: stop_pid },
                };
                let _ = command.reply.send(response);
            }
        });
        let stop_accepting = CancellationToken::new();
        let connections = TaskTracker::new();
        let server = tokio::spawn(serve_with(
            listener,
            commands,
            stop_accepting.clone(),
            connections.clone(),
            options,
        ));
        TestServer {
            _dir: dir,
            path,
            stop_accepting,
            connections,
            server,
            handled,
        }
    }

    /// Runs blocking client code off the runtime, bounded in time.
    async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        tokio::time::timeout(TEST_TIMEOUT, tokio::task::spawn_blocking(f))
            .await
            .expect("the client did not finish in time")
            .unwrap()
    }

    fn raw(path: &Path) -> StdUnixStream {
        let stream = StdUnixStream::connect(path).unwrap();
        stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
        stream
    }

    fn read_response(stream: &mut StdUnixStream) -> Response {
        decode_response(&read_frame_blocking(stream).unwrap()).unwrap()
    }

    fn expect_error(response: Response, needle: &str) {
        match response {
            Response::Error { message } => assert!(message.contains(needle), "{message}"),
            other => panic!("expected an error containing {needle:?}, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn status_and_restart_are_answered() {
        let server = start_server(ServerOptions::default(), 1);
        let path = server.path.clone();
        let (status, restarted) = blocking(move || {
            let status = ControlClient::status(&path).unwrap();
            let restarted = ControlClient::restart(&path).unwrap();
            (status, restarted)
        })
        .await;
        assert_eq!(status.pid, 42);
        assert_eq!(status.generation, 1);
        assert_eq!(
            restarted,
            Response::Restarted(RestartSuccess {
                pid: 4243,
                generation: 2,
                duration_ms: 1.0
            })
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn several_requests_on_one_connection() {
        let server = start_server(ServerOptions::default(), 1);
        let path = server.path.clone();
        let generations = blocking(move || {
            let mut client = ControlClient::connect(&path).unwrap();
            client.set_timeout(Some(TEST_TIMEOUT)).unwrap();
            let mut generations = Vec::new();
            for request in [Request::Status, Request::Restart, Request::Status] {
                match client.request(&request).unwrap() {
                    Response::Status(status) => generations.push(status.generation),
                    Response::Restarted(done) => generations.push(done.generation),
                    other => panic!("{other:?}"),
                }
            }
            generations
        })
        .await;
        assert_eq!(generations, vec![1, 2, 2]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn bad_input_gets_an_error_and_the_server_carries_on() {
        let server = start_server(ServerOptions::default(), 1);
        let path = server.path.clone();
        blocking(move || {
            // Garbage JSON in a valid frame.
            let mut stream = raw(&path);
            write_frame_blocking(&mut stream, b"\x00garbage{").unwrap();
            expect_error(read_response(&mut stream), "malformed request");
            assert!(matches!(
                read_frame_blocking(&mut stream),
                Err(FrameError::Eof)
            ));

            // An unknown op.
            let mut stream = raw(&path);
            write_frame_blocking(&mut stream, br#"{"op":"format_disk"}"#).unwrap();
            expect_error(read_response(&mut stream), "unknown variant");

            // An oversized announcement, without its body.
            let mut stream = raw(&path);
            stream.write_all(&u32::MAX.to_be_bytes()).unwrap();
            expect_error(read_response(&mut stream), "larger than the maximum");

            // Just over the limit, body included.
            let mut stream = raw(&path);
            stream
                .write_all(&(MAX_FRAME_BYTES + 1).to_be_bytes())
                .unwrap();
            let _ = stream.write_all(&vec![b' '; MAX_FRAME_BYTES as usize + 1]);
            expect_error(read_response(&mut stream), "larger than the maximum");

            // A half-written frame, then the client goes away.
            let mut stream = raw(&path);
            stream.write_all(&[0, 0, 0, 100, b'{']).unwrap();
            drop(stream);

            // The service is fine.
            let status = ControlClient::status(&path).unwrap();
            assert_eq!(status.pid, 42);
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn silent_and_slow_clients_time_out() {
        let options = ServerOptions {
            request_timeout: Duration::from_millis(200),
            ..ServerOptions::default()
        };
        let server = start_server(options, 1);
        let path = server.path.clone();
        blocking(move || {
            let mut silent = raw(&path);
            expect_error(read_response(&mut silent), "timed out");
            assert!(matches!(
                read_frame_blocking(&mut silent),
                Err(FrameError::Eof)
            ));

            // Sends part of a frame and stalls.
            let mut slow = raw(&path);
            slow.write_all(&[0, 0, 0, 15, b'{']).unwrap();
            expect_error(read_response(&mut slow), "timed out");

            assert_eq!(ControlClient::status(&path).unwrap().pid, 42);
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn connections_beyond_the_limit_are_refused_at_once() {
        let options = ServerOptions {
            max_connections: 2,
            ..ServerOptions::default()
        };
        let server = start_server(options, 1);
        let path = server.path.clone();
        blocking(move || {
            // Two connections hold the permits (accepted in order)...
            let mut first = raw(&path);
            let _second = raw(&path);
            // ...so the third is refused without being served.
            let mut third = raw(&path);
            expect_error(read_response(&mut third), "too many control connections");
            // The held connections still work.
            write_frame_blocking(&mut first, br#"{"op":"status"}"#).unwrap();
            assert!(matches!(read_response(&mut first), Response::Status(_)));
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn many_concurrent_clients_are_all_answered() {
        let server = start_server(ServerOptions::default(), 1);
        let mut clients = Vec::new();
        for _ in 0..300 {
            let path = server.path.clone();
            clients.push(tokio::task::spawn_blocking(move || {
                match ControlClient::connect(&path).and_then(|mut c| c.request(&Request::Status)) {
                    Ok(Response::Status(status)) => assert_eq!(status.pid, 42),
                    Ok(Response::Error { message }) => {
                        assert!(message.contains("too many"), "{message}")
                    }
                    // Refused before the answer could be written.
                    Err(ClientError::Protocol { .. }) => {}
                    other => panic!("{other:?}"),
                }
            }));
        }
        tokio::time::timeout(TEST_TIMEOUT, async {
            for client in clients {
                client.await.unwrap();
            }
        })
        .await
        .unwrap();
        let path = server.path.clone();
        assert_eq!(
            blocking(move || ControlClient::status(&path).unwrap().pid).await,
            42
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn closed_command_channel_means_shutting_down() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let (listener, _file) = bind_control_socket(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::UnixListener::from_std(listener).unwrap();
        let (commands, received) = mpsc::channel::<ControlCommand>(1);
        drop(received);
        tokio::spawn(serve(
            listener,
            commands,
            CancellationToken::new(),
            TaskTracker::new(),
        ));
        let error = blocking(move || ControlClient::status(&path).unwrap_err()).await;
        match error {
            ClientError::Refused { message, .. } => {
                assert!(message.contains("shutting down"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn cancelling_stop_accepting_ends_serve() {
        let server = start_server(ServerOptions::default(), 1);
        // An idle connection that already had an answer is let go too.
        let path = server.path.clone();
        let mut idle = blocking(move || {
            let mut stream = raw(&path);
            write_frame_blocking(&mut stream, br#"{"op":"status"}"#).unwrap();
            assert!(matches!(read_response(&mut stream), Response::Status(_)));
            stream
        })
        .await;

        server.stop_accepting.cancel();
        tokio::time::timeout(TEST_TIMEOUT, server.server)
            .await
            .expect("serve did not return after stop_accepting")
            .unwrap();
        server.connections.close();
        tokio::time::timeout(TEST_TIMEOUT, server.connections.wait())
            .await
            .expect("connections did not finish");
        let path = server.path.clone();
        blocking(move || {
            assert!(matches!(
                read_frame_blocking(&mut idle),
                Err(FrameError::Eof)
            ));
            // The listener is closed: the file is now a stale socket.
            let error = ControlClient::connect(&path).unwrap_err();
            assert!(matches!(error, ClientError::NoService { .. }), "{error:?}");
        })
        .await;
    }

    #[test]
    fn stop_holds_the_connection_until_the_runtime_is_gone() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime.block_on(async { start_server(ServerOptions::default(), 77) });

        let mut stream = raw(&server.path);
        write_frame_blocking(&mut stream, br#"{"op":"stop"}"#).unwrap();
        assert_eq!(read_response(&mut stream), Response::Stopping { pid: 77 });

        // The drain does not wait for the held connection...
        server.stop_accepting.cancel();
        server.connections.close();
        runtime.block_on(async {
            tokio::time::timeout(TEST_TIMEOUT, server.connections.wait())
                .await
                .expect("the drain waited for the stop connection");
        });
        // ...which is still open.
        stream.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        let error = stream.read(&mut byte).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        stream.set_nonblocking(false).unwrap();

        // When the runtime (the process, in real life) goes, the client
        // sees end-of-file.
        drop(runtime);
        assert_eq!(stream.read(&mut byte).unwrap(), 0);
    }

    #[test]
    fn stop_and_wait_returns_once_the_process_has_exited() {
        let mut child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        let pid = child.id();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime.block_on(async { start_server(ServerOptions::default(), pid) });
        let path = server.path.clone();
        let client = std::thread::spawn(move || ControlClient::stop_and_wait(&path, TEST_TIMEOUT));

        // Once the stop was answered, the "service" exits: its process is
        // killed (left a zombie, which counts as exited) and its runtime
        // goes away.
        assert_eq!(
            server.handled.recv_timeout(TEST_TIMEOUT).unwrap(),
            Request::Stop
        );
        server.connections.close();
        runtime.block_on(async {
            // The connection task ends once `Stopping` is written.
            tokio::time::timeout(TEST_TIMEOUT, server.connections.wait())
                .await
                .unwrap();
        });
        assert!(process_running(pid));
        child.kill().unwrap();
        drop(runtime);
        let outcome = client.join().unwrap();
        let _ = child.wait();
        match outcome {
            Ok(stopped) => assert_eq!(stopped, pid),
            Err(error) => panic!("{error}"),
        }
    }

    #[test]
    fn stop_and_wait_times_out_while_the_service_lives() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server =
            runtime.block_on(async { start_server(ServerOptions::default(), std::process::id()) });
        let error =
            ControlClient::stop_and_wait(&server.path, Duration::from_millis(200)).unwrap_err();
        match &error {
            ClientError::Timeout { waiting_for, .. } => {
                assert!(waiting_for.contains("to exit"), "{waiting_for}")
            }
            other => panic!("{other:?}"),
        }
        assert!(
            error.to_string().starts_with("timed out after 200ms"),
            "{error}"
        );
    }

    #[test]
    fn process_running_sees_live_zombie_and_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(process_running(pid));
        assert!(process_running(std::process::id()));
        child.kill().unwrap();
        // Wait until it is a zombie (not reaped) — an event, via waitid
        // with WNOWAIT.
        nix::sys::wait::waitid(
            nix::sys::wait::Id::Pid(nix::unistd::Pid::from_raw(pid as i32)),
            nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT,
        )
        .unwrap();
        assert!(!process_running(pid));
        child.wait().unwrap();
        assert!(!process_running(pid));
    }
}
