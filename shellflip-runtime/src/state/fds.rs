//! File descriptors carried beside the state payload, by name.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::StateError;

/// Named file descriptors carried beside the state payload.
#[derive(Default)]
pub struct StateFds {
    /// The descriptors, by name.
    pub(crate) fds: Vec<(String, OwnedFd)>,
}

impl fmt::Debug for StateFds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.fds.iter().map(|(name, _)| name))
            .finish()
    }
}

impl StateFds {
    /// Adds a duplicate of `fd` under `name` (the original stays with the
    /// caller and keeps working).
    pub fn put(&mut self, name: &str, fd: BorrowedFd<'_>) -> Result<(), StateError> {
        let owned = fd.try_clone_to_owned().map_err(|source| StateError::Fd {
            name: name.to_owned(),
            source,
        })?;
        self.fds.push((name.to_owned(), owned));
        Ok(())
    }

    /// Takes the descriptor named `name` out.
    pub fn take(&mut self, name: &str) -> Result<OwnedFd, StateError> {
        let index = self
            .fds
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| StateError::MissingFd(name.to_owned()))?;
        Ok(self.fds.swap_remove(index).1)
    }

    /// Puts the value of an fd-holding field.
    pub fn put_field<T: HandoverFd>(&mut self, name: &str, value: &T) -> Result<(), StateError> {
        self.put(name, value.handover_fd())
    }

    /// Takes and adopts the value of an fd-holding field.
    pub fn take_field<T: HandoverFd>(&mut self, name: &str) -> Result<T, StateError> {
        let fd = self.take(name)?;
        T::from_handover_fd(fd).map_err(|source| StateError::Fd {
            name: name.to_owned(),
            source,
        })
    }

    /// True when a descriptor named `name` is held.
    pub fn contains(&self, name: &str) -> bool {
        self.fds.iter().any(|(n, _)| n == name)
    }

    /// The number of descriptors held.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    /// True when no descriptor is held.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }
}

/// A field type that is handed over as a file descriptor rather than
/// serialized: sockets, listeners, files.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be handed over as a file descriptor",
    note = "`#[handover(fd)]` works for sockets, listeners, files and `OwnedFd` (std and tokio), and `Arc`s of them"
)]
pub trait HandoverFd: Sized {
    /// The descriptor to hand over (it is duplicated; `self` keeps its own).
    fn handover_fd(&self) -> BorrowedFd<'_>;
    /// Rebuilds the value from a handed-over descriptor.
    fn from_handover_fd(fd: OwnedFd) -> std::io::Result<Self>;
}

/// Fd types, rebuilt from a descriptor `fd` by `adopt`.
macro_rules! handover_fd {
    (|$fd:ident| $adopt:expr; $($ty:ty),* $(,)?) => {$(
        impl HandoverFd for $ty {
            fn handover_fd(&self) -> BorrowedFd<'_> {
                self.as_fd()
            }
            fn from_handover_fd($fd: OwnedFd) -> std::io::Result<Self> {
                $adopt
            }
        }
    )*};
}

handover_fd!(|fd| Ok(fd); OwnedFd);
handover_fd!(|fd| Ok(fd.into());
    std::fs::File,
    std::net::TcpListener,
    std::net::TcpStream,
    std::net::UdpSocket,
    std::os::unix::net::UnixListener,
    std::os::unix::net::UnixStream,
    std::os::unix::net::UnixDatagram,
);

// Tokio's types must be rebuilt inside a Tokio runtime, its sockets
// non-blocking.
handover_fd!(|fd| Ok(Self::from_std(fd.into())); tokio::fs::File);
handover_fd!(|fd| Self::from_std(nonblocking(fd)?.into());
    tokio::net::TcpListener,
    tokio::net::TcpStream,
    tokio::net::UdpSocket,
    tokio::net::UnixListener,
    tokio::net::UnixStream,
    tokio::net::UnixDatagram,
);

/// `fd` set non-blocking, as Tokio's sockets require.
fn nonblocking(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    let socket = socket2::Socket::from(fd);
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// An `Arc` of an fd type hands over the shared descriptor, so a listener
/// kept in the state can also be shared with an accept loop.
impl<T: HandoverFd> HandoverFd for std::sync::Arc<T> {
    fn handover_fd(&self) -> BorrowedFd<'_> {
        (**self).handover_fd()
    }
    fn from_handover_fd(fd: OwnedFd) -> std::io::Result<Self> {
        T::from_handover_fd(fd).map(std::sync::Arc::new)
    }
}
