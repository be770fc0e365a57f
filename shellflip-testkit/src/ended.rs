//! Whether a service is over: no process of it left ([`Census`]), its TCP
//! port refusing connections, its Unix sockets (the control socket, a
//! Unix listener) gone or refusing.
//!
//! Each check returns what it found instead of panicking, so that a test
//! running many scenarios can report every violation with its context.

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::census::{describe, Census};

/// `Ok` if nothing accepts connections at `addr` any more (the connection
/// is refused); otherwise what answered, with its first line if it sent
/// one.
pub fn tcp_refused(addr: SocketAddr) -> Result<(), String> {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(format!(
            "a connection to {addr} failed, but not refused: {e}"
        )),
        Ok(mut stream) => {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut first = [0u8; 128];
            let n = stream.read(&mut first).unwrap_or(0);
            Err(format!(
                "{addr} still accepts connections (it said {:?})",
                String::from_utf8_lossy(&first[..n])
            ))
        }
    }
}

/// `Ok` if no Unix stream socket listens at `path` any more: the path is
/// gone, or a connection to it is refused.
pub fn unix_refused(path: &Path) -> Result<(), String> {
    match UnixStream::connect(path) {
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => Ok(()),
        Err(e) => Err(format!(
            "a connection to {} failed, but not refused: {e}",
            path.display()
        )),
        Ok(_) => Err(format!("{} still accepts connections", path.display())),
    }
}

/// `Ok` if the service is over now: no process of it is alive, `tcp`
/// refuses connections, and each of `unix` is gone or refuses.
pub fn check_ended(census: &Census, tcp: Option<SocketAddr>, unix: &[&Path]) -> Result<(), String> {
    let left = census.processes();
    if !left.is_empty() {
        return Err(format!(
            "processes of the service are still running: {}",
            describe(&left)
        ));
    }
    let mut problems = Vec::new();
    if let Some(addr) = tcp {
        problems.extend(tcp_refused(addr).err());
    }
    for path in unix {
        problems.extend(unix_refused(path).err());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Waits up to `bound` for every process of the service to exit, then
/// [`check_ended`].
pub fn wait_ended(
    census: &Census,
    bound: Duration,
    tcp: Option<SocketAddr>,
    unix: &[&Path],
) -> Result<(), String> {
    census.wait_gone(bound).map_err(|left| {
        format!(
            "processes of the service still running {bound:?} later: {}",
            describe(&left)
        )
    })?;
    check_ended(census, tcp, unix)
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::os::unix::net::UnixListener;

    use super::*;

    /// A socket closed here stays open until a child that another test
    /// thread forked meanwhile has exec'd (it holds a copy until then):
    /// wait a moment for the refusal.
    fn soon(check: impl Fn() -> Result<(), String>) -> Result<(), String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let result = check();
            if result.is_ok() || std::time::Instant::now() > deadline {
                return result;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_closed_port_and_a_removed_or_stale_socket_refuse() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(tcp_refused(addr).unwrap_err().contains("still accepts"));
        drop(listener);
        assert_eq!(soon(|| tcp_refused(addr)), Ok(()));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        assert_eq!(unix_refused(&path), Ok(()));
        let unix = UnixListener::bind(&path).unwrap();
        assert!(unix_refused(&path).is_err());
        drop(unix); // the path stays, nothing listens
        assert_eq!(soon(|| unix_refused(&path)), Ok(()));
    }

    #[test]
    fn a_census_with_nothing_alive_is_ended() {
        assert_eq!(check_ended(&Census::new(), None, &[]), Ok(()));
    }
}
