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
///
/// A connection to itself is no answer: connecting to a free port of the
/// ephemeral range, the kernel may pick that very port as the connection's
/// own, and the two ends meet (TCP's simultaneous open). It only happens
/// when nothing is bound to the port, so it counts as refused.
pub fn tcp_refused(addr: SocketAddr) -> Result<(), String> {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(format!(
            "a connection to {addr} failed, but not refused: {e}"
        )),
        Ok(stream) if connected_to_itself(&stream, addr) => Ok(()),
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

/// Whether `stream`, a connection to `addr`, is `addr` itself.
fn connected_to_itself(stream: &TcpStream, addr: SocketAddr) -> bool {
    stream.local_addr().ok() == Some(addr)
}

/// Like [`tcp_refused`], for the port of the service `census` counts: a
/// listener there that only processes of *other* services hold is not
/// this one's. Tests that run services side by side free ports that the
/// next service's `bind` to port 0 may be given.
pub fn tcp_refused_by(addr: SocketAddr, census: &Census) -> Result<(), String> {
    let answered = match tcp_refused(addr) {
        Ok(()) => return Ok(()),
        Err(answered) => answered,
    };
    let holders = listening_pids(addr.port());
    if !holders.is_empty() && holders.iter().all(|&pid| !census.owns(pid)) {
        return Ok(());
    }
    let holders = match holders.as_slice() {
        [] => "no process found holding it".to_owned(),
        pids => format!("held by pid {pids:?}"),
    };
    Err(format!("{answered}; its listener is {holders}"))
}

/// The pids holding a listening TCP socket on `port` (IPv4 or IPv6), found
/// through `/proc/net/tcp{,6}` and every process's descriptors.
fn listening_pids(port: u16) -> Vec<u32> {
    // A line: "sl local_address rem_address st ... inode", addresses as
    // HEX_IP:HEX_PORT; state 0A is LISTEN.
    let mut sockets = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if let (Some(local_port), Some(&"0A"), Some(inode)) =
                (local_port, fields.get(3), fields.get(9))
            {
                if local_port == port {
                    sockets.push(format!("socket:[{inode}]"));
                }
            }
        }
    }
    if sockets.is_empty() {
        return Vec::new();
    }
    crate::census::all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
                .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
                .any(|target| sockets.iter().any(|s| target.as_os_str() == s.as_str()))
        })
        .collect()
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
        problems.extend(tcp_refused_by(addr, census).err());
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
    fn a_port_another_service_took_is_refused_for_this_one() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(listening_pids(addr.port()).contains(&std::process::id()));
        // This test's process is no process of a new census's service.
        assert_eq!(tcp_refused_by(addr, &Census::new()), Ok(()));
        assert!(tcp_refused(addr).unwrap_err().contains("still accepts"));
    }

    #[test]
    fn a_connection_to_itself_is_no_listener() {
        use nix::sys::socket::{
            bind, connect, getsockname, socket, AddressFamily, SockFlag, SockType, SockaddrIn,
        };
        // Bound to a port, then connected to that same port: TCP's
        // simultaneous open joins the socket to itself.
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
        .unwrap();
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &SockaddrIn::new(127, 0, 0, 1, 0),
        )
        .unwrap();
        let own: SockaddrIn = getsockname(std::os::fd::AsRawFd::as_raw_fd(&fd)).unwrap();
        connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &own).unwrap();
        let stream = TcpStream::from(fd);
        let addr = SocketAddr::from(([127, 0, 0, 1], own.port()));
        assert!(connected_to_itself(&stream, addr));
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let to_other = TcpStream::connect(other.local_addr().unwrap()).unwrap();
        assert!(!connected_to_itself(&to_other, other.local_addr().unwrap()));
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
