//! Binding a listening Unix socket at a path, carefully: the one way the
//! runtime creates socket files (the control socket, and
//! [`Context::unix_listener`](crate::Context::unix_listener)).
//!
//! What is at the path beforehand decides:
//!
//! | at the path | what happens |
//! |---|---|
//! | nothing | the socket appears (the control socket never replaces a file created meanwhile, where the file system allows) |
//! | a socket nobody listens on (left by a crashed service) | replaced |
//! | a socket with a live service behind it | error; nothing is touched |
//! | anything else (a regular file, a directory, a symlink) | error; nothing is touched |
//!
//! The two kinds of socket differ in how they appear ([`Access`]):
//!
//! - the control socket ([`Access::OwnerOnly`]) is bound and listening at a
//!   temporary name in the target's directory, made `0600` (on Linux it is
//!   created so), and only then renamed over the path: a client never finds
//!   a socket at the path that is not listening yet or more open than
//!   `0600`, and a stale one is replaced atomically;
//! - a service's listener ([`Access::Umask`]) is bound in place (a stale
//!   socket is removed just before), with the mode a plain `bind()` gives:
//!   its own address, which peers see and which later generations compare
//!   with the configured path when they inherit it, must be the path itself
//!   (also for generations built before this module existed).
//!
//! Two processes starting at the same moment with the same stale path may
//! race; one of them then ends up with an unreachable socket. That is a
//! misconfiguration this module does not try to arbitrate.

use std::collections::hash_map::RandomState;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::debug;

/// Longest path a Unix socket can be bound or connected at (Linux's
/// `sun_path` minus the terminating NUL).
pub(crate) const MAX_SOCKET_PATH: usize = 107;

/// The listen backlog of the sockets bound here.
const LISTEN_BACKLOG: i32 = 1024;

/// The prefix of the short temporary name used when `.<name>.<unique>.tmp`
/// would not fit in a socket address.
const SHORT_TEMP_PREFIX: &str = ".shellflip.";

/// Who may connect to the socket file, and how it appears at the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Mode `0600`: the owner only (and root), never more open; bound at a
    /// temporary name and renamed into place once listening.
    OwnerOnly,
    /// The mode `bind()` gives (`0777` minus the process's umask), as for
    /// any socket the service would bind itself; bound in place.
    Umask,
}

/// Why a Unix socket could not be bound at a path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnixSocketError {
    /// The path ends in `..` or `/`.
    #[error("the path has no file name; give a path like /run/my-service.sock")]
    NoFileName,
    /// The path does not fit in a socket address.
    #[error(
        "the path is {len} bytes long, but Unix socket paths are limited to {max} bytes; choose \
         a shorter path"
    )]
    PathTooLong {
        /// The path's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The directory of the path does not exist.
    #[error(
        "the directory {} does not exist; create it first (for example with `mkdir -p {}`, or \
         RuntimeDirectory= in a systemd unit) or choose another path",
        dir.display(),
        dir.display()
    )]
    NoDirectory {
        /// The directory.
        dir: PathBuf,
    },
    /// The parent of the path is not a directory.
    #[error("{} is not a directory; choose a path inside an existing directory", dir.display())]
    NotADirectory {
        /// The parent.
        dir: PathBuf,
    },
    /// Something that is not a socket is at the path.
    #[error(
        "the path exists and is {found}, not a socket; refusing to replace it: remove it or \
         choose another path"
    )]
    NotASocket {
        /// What is there: "a regular file", "a directory", ...
        found: &'static str,
    },
    /// A live socket is at the path.
    #[error(
        "another service is already listening on this socket; stop it first or choose another \
         path"
    )]
    InUse,
    /// A socket is at the path, but connecting to it to check it failed.
    #[error(
        "a socket exists at this path but it cannot be checked for a live service ({source}); \
         remove it if it is stale"
    )]
    Unverifiable {
        /// What connecting said.
        #[source]
        source: io::Error,
    },
    /// Something appeared at the path while the socket was being set up.
    #[error(
        "another process created this path while the socket was being set up; is another \
         instance of the service starting?"
    )]
    Raced,
    /// A system call failed.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
}

impl UnixSocketError {
    fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Self + 'a {
        move |source| UnixSocketError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The closest `io::ErrorKind`, for callers that report an `io::Error`.
    pub(crate) fn io_kind(&self) -> io::ErrorKind {
        match self {
            UnixSocketError::InUse => io::ErrorKind::AddrInUse,
            UnixSocketError::NotASocket { .. } | UnixSocketError::Raced => {
                io::ErrorKind::AlreadyExists
            }
            UnixSocketError::NoDirectory { .. } => io::ErrorKind::NotFound,
            UnixSocketError::Io { source, .. } | UnixSocketError::Unverifiable { source } => {
                source.kind()
            }
            _ => io::ErrorKind::InvalidInput,
        }
    }
}

/// The identity (device and inode) of a socket file, so that whoever
/// created it removes it only if it is still the same file, not one that
/// another instance has bound at the same path since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SocketFile {
    /// The socket's path.
    pub(crate) path: PathBuf,
    /// The device of the socket file.
    pub(crate) dev: u64,
    /// The inode of the socket file.
    pub(crate) ino: u64,
}

impl SocketFile {
    /// Records the identity of the file that is at `path` now.
    pub(crate) fn identify(path: &Path) -> io::Result<Self> {
        Ok(SocketFile::of(path, &fs::symlink_metadata(path)?))
    }

    /// The socket file at `path`, of `metadata` (its file's, or that of the
    /// file renamed to `path`).
    fn of(path: &Path, metadata: &fs::Metadata) -> Self {
        SocketFile {
            path: path.to_path_buf(),
            dev: metadata.dev(),
            ino: metadata.ino(),
        }
    }

    /// True when nothing is at the path any more (the file was removed).
    pub(crate) fn is_missing(&self) -> bool {
        matches!(fs::symlink_metadata(&self.path), Err(e) if e.kind() == io::ErrorKind::NotFound)
    }

    /// Removes the socket file if `path` still refers to it (same device
    /// and inode, still a socket). Best-effort: returns whether it removed
    /// the file, and never fails.
    pub(crate) fn remove(&self) -> bool {
        let path = self.path.display();
        match fs::symlink_metadata(&self.path) {
            Ok(metadata)
                if metadata.file_type().is_socket()
                    && metadata.dev() == self.dev
                    && metadata.ino() == self.ino =>
            {
                match fs::remove_file(&self.path) {
                    Ok(()) => {
                        debug!(%path, "socket file removed");
                        true
                    }
                    Err(error) => {
                        debug!(%path, %error, "could not remove the socket file");
                        false
                    }
                }
            }
            Ok(_) => {
                debug!(%path, "the socket path now refers to another file; leaving it in place");
                false
            }
            Err(_) => false,
        }
    }
}

/// Creates a listening Unix stream socket at `path` (see the module docs).
///
/// Returns the listener (blocking, `CLOEXEC`; the caller makes it
/// non-blocking) and the identity of the socket file. The listener's own
/// address is `path` with [`Access::Umask`], the temporary name with
/// [`Access::OwnerOnly`].
pub(crate) fn bind(
    path: &Path,
    access: Access,
) -> Result<(StdUnixListener, SocketFile), UnixSocketError> {
    let name = path.file_name().ok_or(UnixSocketError::NoFileName)?;
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(UnixSocketError::PathTooLong {
            len,
            max: MAX_SOCKET_PATH,
        });
    }
    let dir = dir_of(path);
    match fs::metadata(dir).map(|metadata| metadata.is_dir()) {
        Ok(true) => {}
        Ok(false) => return Err(UnixSocketError::NotADirectory { dir: dir.into() }),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(UnixSocketError::NoDirectory { dir: dir.into() })
        }
        Err(source) => return Err(UnixSocketError::io("access the directory", dir)(source)),
    }

    // Nothing there (false: the new socket must not replace anything), or
    // a socket nobody listens on (true: replaced).
    let stale = inspect_existing(path)?;
    if stale {
        debug!(path = %path.display(), "replacing a stale socket file");
    }
    if access == Access::Umask {
        return bind_in_place(path, stale);
    }

    let temp = temp_path(dir, name);
    let listener = bind_listening(&temp, access)?;
    let placed = (|| {
        fs::set_permissions(&temp, fs::Permissions::from_mode(0o600))
            .map_err(UnixSocketError::io("set mode 0600 on", &temp))?;
        // The rename keeps the inode: this is the identity of the final file.
        let metadata =
            fs::symlink_metadata(&temp).map_err(UnixSocketError::io("inspect", &temp))?;
        move_into_place(&temp, path, stale)?;
        Ok(metadata)
    })();
    // On failure the temporary socket file goes.
    let metadata = placed.inspect_err(|_| drop(fs::remove_file(&temp)))?;

    debug!(path = %path.display(), replaced_stale = stale, "Unix socket bound");
    Ok((listener, SocketFile::of(path, &metadata)))
}

/// Binds at `path` itself, after removing a stale socket there.
fn bind_in_place(
    path: &Path,
    stale: bool,
) -> Result<(StdUnixListener, SocketFile), UnixSocketError> {
    if stale {
        match fs::remove_file(path) {
            // Gone already is as good.
            Err(source) if source.kind() != io::ErrorKind::NotFound => {
                return Err(UnixSocketError::io("remove the stale socket", path)(source))
            }
            _ => {}
        }
    }
    let listener = bind_listening(path, Access::Umask).map_err(|error| match error {
        UnixSocketError::Io { source, .. } if source.kind() == io::ErrorKind::AddrInUse => {
            UnixSocketError::Raced
        }
        other => other,
    })?;
    let file = SocketFile::identify(path).map_err(UnixSocketError::io("inspect", path))?;
    debug!(path = %path.display(), "Unix socket bound");
    Ok((listener, file))
}

/// The directory of `path`, `.` for a bare file name.
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Whether a stale socket (one nobody listens on) is at `path`; false when
/// nothing is there, an error for anything else.
fn inspect_existing(path: &Path) -> Result<bool, UnixSocketError> {
    let metadata = match fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(UnixSocketError::io("inspect", path)(source)),
    };
    let file_type = metadata.file_type();
    if !file_type.is_socket() {
        let found = if file_type.is_file() {
            "a regular file"
        } else if file_type.is_dir() {
            "a directory"
        } else if file_type.is_symlink() {
            "a symbolic link"
        } else {
            "something else"
        };
        return Err(UnixSocketError::NotASocket { found });
    }
    match probe(path) {
        Ok(()) => Err(UnixSocketError::InUse),
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(UnixSocketError::Unverifiable { source }),
    }
}

/// Connects to `path` without blocking: `Ok` (or a full backlog) means a
/// process is listening there.
fn probe(path: &Path) -> io::Result<()> {
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    match socket.connect(&socket2::SockAddr::unix(path)?) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(error) => Err(error),
    }
}

/// `.<name>.<unique>.tmp` in `dir`, or `.shellflip.<unique>.tmp` if that
/// would be too long for a socket address. `<unique>` is hexadecimal and
/// differs between processes and calls (64 random bits: std seeds each
/// `RandomState` from the system's randomness, with distinct keys), so a
/// leftover never collides.
fn temp_path(dir: &Path, name: &OsStr) -> PathBuf {
    let unique = format!("{:016x}", RandomState::new().build_hasher().finish());
    let mut long = OsString::from(".");
    long.push(name);
    long.push(format!(".{unique}.tmp"));
    let candidate = dir.join(long);
    if candidate.as_os_str().len() <= MAX_SOCKET_PATH {
        candidate
    } else {
        dir.join(format!("{SHORT_TEMP_PREFIX}{unique}.tmp"))
    }
}

/// Binds a listening socket at `path`. With [`Access::OwnerOnly`] its file
/// is created `0600` on Linux (elsewhere the caller's chmod closes the
/// window).
fn bind_listening(path: &Path, access: Access) -> Result<StdUnixListener, UnixSocketError> {
    let io = |action| UnixSocketError::io(action, path);
    // socket2 creates the socket with CLOEXEC.
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)
        .map_err(io("create a socket for"))?;
    if access == Access::OwnerOnly {
        // Linux creates the socket file with the socket inode's mode (minus
        // the umask): restricting it first means the file never exists with
        // a wider mode. Best-effort: other systems may refuse.
        let _ = nix::sys::stat::fchmod(&socket, nix::sys::stat::Mode::from_bits_truncate(0o600));
    }
    let address = socket2::SockAddr::unix(path).map_err(io("make an address of"))?;
    socket.bind(&address).map_err(io("bind"))?;
    socket.listen(LISTEN_BACKLOG).map_err(io("listen on"))?;
    Ok(StdUnixListener::from(socket))
}

fn move_into_place(temp: &Path, path: &Path, stale: bool) -> Result<(), UnixSocketError> {
    let failed = UnixSocketError::io("move the new socket into place at", path);
    if !stale {
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
                Err(Errno::EEXIST) => return Err(UnixSocketError::Raced),
                // The file system does not support RENAME_NOREPLACE: plain rename.
                Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {}
                Err(errno) => return Err(failed(io::Error::from(errno))),
            }
        }
    }
    fs::rename(temp, path).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream as StdUnixStream;

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn names_in(dir: &Path) -> Vec<OsString> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    }

    #[test]
    fn owner_only_socket_is_0600_reachable_and_cloexec() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.sock");
        let (listener, file) = bind(&path, Access::OwnerOnly).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(file, SocketFile::identify(&path).unwrap());
        // No temporary file is left behind.
        assert_eq!(names_in(dir.path()), vec![OsString::from("svc.sock")]);
        let flags = nix::fcntl::fcntl(&listener, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert!(
            nix::fcntl::FdFlag::from_bits_truncate(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC)
        );
        let _client = StdUnixStream::connect(&path).unwrap();
        let (_server_side, _) = listener.accept().unwrap();
        // Its own address is the temporary name.
        let address = listener.local_addr().unwrap();
        assert_ne!(address.as_pathname().unwrap(), path);
    }

    #[test]
    fn umask_socket_gets_the_usual_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let (listener, file) = bind(&path, Access::Umask).unwrap();
        // Whatever the umask, group/other bits are not forced off: the mode
        // is what a plain bind() gives.
        let plain = dir.path().join("plain.sock");
        let _plain = StdUnixListener::bind(&plain).unwrap();
        assert_eq!(mode_of(&path), mode_of(&plain));
        // Bound in place: its address is the path.
        assert_eq!(listener.local_addr().unwrap().as_pathname(), Some(&*path));
        assert_eq!(file, SocketFile::identify(&path).unwrap());
        // A stale one is replaced, in place too.
        drop(listener);
        let (listener, _file) = bind(&path, Access::Umask).unwrap();
        let _client = StdUnixStream::connect(&path).unwrap();
        listener.accept().unwrap();
    }

    #[test]
    fn stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.sock");
        drop(StdUnixListener::bind(&path).unwrap());
        let old_ino = fs::symlink_metadata(&path).unwrap().ino();
        assert!(StdUnixStream::connect(&path).is_err());
        let (listener, file) = bind(&path, Access::OwnerOnly).unwrap();
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
        let error = bind(&path, Access::Umask).unwrap_err();
        assert!(matches!(error, UnixSocketError::InUse), "{error:?}");
        assert!(error.to_string().contains("already listening"), "{error}");
        assert_eq!(error.io_kind(), io::ErrorKind::AddrInUse);
        assert_eq!(fs::symlink_metadata(&path).unwrap().ino(), ino);
        assert_eq!(names_in(dir.path()).len(), 1);
        // The other service still gets its connections.
        let _client = StdUnixStream::connect(&path).unwrap();
        other.accept().unwrap();
    }

    #[test]
    fn regular_file_directory_and_symlink_are_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("svc.sock");
        fs::write(&file, "precious").unwrap();
        let error = bind(&file, Access::OwnerOnly).unwrap_err().to_string();
        assert!(error.contains("regular file"), "{error}");
        assert!(error.contains("not a socket"), "{error}");
        assert_eq!(fs::read_to_string(&file).unwrap(), "precious");

        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let error = bind(&sub, Access::OwnerOnly).unwrap_err().to_string();
        assert!(error.contains("a directory"), "{error}");

        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink("/nonexistent", &link).unwrap();
        let error = bind(&link, Access::OwnerOnly).unwrap_err().to_string();
        assert!(error.contains("symbolic link"), "{error}");
        assert_eq!(names_in(dir.path()).len(), 3);
    }

    #[test]
    fn missing_directory_and_overlong_path_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("svc.sock");
        let error = bind(&path, Access::OwnerOnly).unwrap_err();
        assert!(matches!(error, UnixSocketError::NoDirectory { .. }));
        let message = error.to_string();
        assert!(message.contains("does not exist"), "{message}");
        assert!(message.contains("missing"), "{message}");

        let path = dir.path().join("x".repeat(120));
        let message = bind(&path, Access::OwnerOnly).unwrap_err().to_string();
        assert!(message.contains("shorter path"), "{message}");

        let message = bind(Path::new("/tmp/.."), Access::OwnerOnly)
            .unwrap_err()
            .to_string();
        assert!(message.contains("no file name"), "{message}");
    }

    #[test]
    fn long_names_bind_through_a_short_temporary_name() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().as_os_str().len() + 1;
        let path = dir.path().join("s".repeat(MAX_SOCKET_PATH - base));
        assert_eq!(path.as_os_str().len(), MAX_SOCKET_PATH);
        let (_listener, _file) = bind(&path, Access::OwnerOnly).unwrap();
        assert_eq!(mode_of(&path), 0o600);
    }

    #[test]
    fn removal_only_removes_our_own_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.sock");
        let (listener, file) = bind(&path, Access::OwnerOnly).unwrap();
        drop(listener);
        assert!(file.remove());
        assert!(!path.exists());
        assert!(!file.remove());

        // Another instance took the path since: leave its socket alone.
        let (_listener, file) = bind(&path, Access::OwnerOnly).unwrap();
        fs::remove_file(&path).unwrap();
        let _other = StdUnixListener::bind(&path).unwrap();
        assert!(!file.remove());
        assert!(path.exists());
    }
}
