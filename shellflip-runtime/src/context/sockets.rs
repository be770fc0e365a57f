//! Finding or binding the sockets a service asks [`Context`] for: addresses
//! resolved, inherited sockets checked against what is asked, fresh ones bound.

use std::net::SocketAddr;

use socket2::{Domain, SockAddr};

use super::*;

pub(super) fn resolve(
    name: &str,
    addr: impl ToSocketAddrs + std::fmt::Debug,
) -> Result<Vec<SocketAddr>, Error> {
    let source = match addr.to_socket_addrs().map(Vec::from_iter) {
        Ok(addrs) if !addrs.is_empty() => return Ok(addrs),
        Ok(_) => std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "it resolved to no address",
        ),
        Err(source) => source,
    };
    Err(Error::Address {
        name: name.to_owned(),
        address: format!("{addr:?}"),
        source,
    })
}

/// True when `listen()` was called on `socket` (`SO_ACCEPTCONN`).
pub(super) fn is_listening(socket: &Socket) -> bool {
    nix::sys::socket::getsockopt(socket, nix::sys::socket::sockopt::AcceptConn).unwrap_or(false)
}

pub(super) fn found_matches_kind(socket: &Socket, expected: &str) -> bool {
    let is_unix = socket
        .local_addr()
        .is_ok_and(|a| a.domain() == Domain::UNIX);
    (expected == "a Unix listener") == is_unix
}

pub(super) fn describe(socket: &Socket) -> String {
    let kind = match socket.r#type() {
        Ok(t) if t == Type::STREAM => "a stream socket",
        Ok(t) if t == Type::DGRAM => "a datagram socket",
        Ok(_) => "a socket of another type",
        Err(_) => return "not a socket".to_owned(),
    };
    match socket.local_addr() {
        Ok(addr) => match (addr.as_socket(), addr.as_pathname()) {
            (Some(inet), _) => format!("{kind} on {inet}"),
            (None, Some(path)) => format!("{kind} at {}", path.display()),
            _ => format!("{kind} (unnamed)"),
        },
        Err(_) => kind.to_owned(),
    }
}

pub(super) fn inet_matches(socket: &Socket, wanted: &[SocketAddr]) -> bool {
    let Some(local) = socket.local_addr().ok().and_then(|a| a.as_socket()) else {
        return false;
    };
    wanted
        .iter()
        .any(|w| w.ip() == local.ip() && (w.port() == 0 || w.port() == local.port()))
}

pub(super) fn bind_inet(name: &str, addrs: &[SocketAddr], kind: Type) -> Result<Socket, Error> {
    let mut address = "the given address".to_owned();
    let mut source = std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address");
    for addr in addrs {
        let attempt = (|| {
            let socket = Socket::new(Domain::for_address(*addr), kind, None)?;
            if kind == Type::STREAM {
                socket.set_reuse_address(true)?;
            }
            socket.bind(&SockAddr::from(*addr))?;
            if kind == Type::STREAM {
                socket.listen(1024)?;
            }
            Ok::<_, std::io::Error>(socket)
        })();
        match attempt {
            Ok(socket) => return Ok(socket),
            Err(e) => (address, source) = (addr.to_string(), e),
        }
    }
    Err(Error::Bind {
        name: name.to_owned(),
        address,
        source,
    })
}

pub(super) fn bind_unix(name: &str, path: &Path) -> Result<Socket, Error> {
    let (listener, _file) =
        unix_socket::bind(path, Access::Umask).map_err(|error| Error::Bind {
            name: name.to_owned(),
            address: path.display().to_string(),
            source: std::io::Error::new(error.io_kind(), error),
        })?;
    Ok(Socket::from(OwnedFd::from(listener)))
}
