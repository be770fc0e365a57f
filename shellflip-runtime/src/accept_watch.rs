//! The accept watch: one warning for an accept loop that ignores the
//! probation's pause.
//!
//! While a successor is on probation this generation's admission is
//! `Paused`: it must take no new connection, since one taken now is served
//! by the generation being replaced, and what it changes in the state is
//! not carried. `Context::accept` (and `shellflip::http::serve`, which uses
//! it) waits; a plain `select!` on `listener.accept()` and `ctx.shutdown()`
//! does not, and the listeners are plain Tokio listeners, so nothing stops
//! it. This watch notices such a loop after the fact and says so, once per
//! process ([`warning`]).
//!
//! How: once paused, the socket inodes open in this process
//! (`/proc/self/fd`) are the baseline. Every [`SCAN_EVERY`] while paused
//! the sockets opened since are looked at: one whose local address is the
//! one of a registered stream listener (`Context::tcp_listener`,
//! `unix_listener`, or a listening stream socket kept with `Context::fd`;
//! not the runtime's own), without being that listener, is a connection
//! accepted on it (an accepted TCP socket has the listener's address, a
//! specific one when the listener is on a wildcard address; an accepted
//! Unix socket names the listener's path). A socket the service opens as a
//! client has an ephemeral port, or no name. Three kinds of sockets look
//! accepted while paused but were not, and are left out:
//!
//! - a connection `Context::accept` took in the instant the pause began:
//!   the baseline is taken after [`SETTLE`] and at a moment when no poll of
//!   `Context::accept` is in progress ([`AcceptWatch::polling`]), so it is
//!   in the baseline;
//! - connections the predecessor hands over (a generation may still be
//!   receiving them when its own successor is on probation): the channel's
//!   reader records what it receives while a watch is armed ([`received`]),
//!   and a suspect is reported only when the next scan finds it still open
//!   and not recorded (the record follows the receipt by a moment);
//! - every socket of a service that looks at `Context::admission()`: it
//!   pauses by itself ([`AcceptWatch::consulted`]), and is not watched.
//!
//! Not told apart (the socket type of a descriptor number cannot be read
//! without `unsafe`): a UDP socket bound during the pause to the port of a
//! TCP listener, or a second listener bound there with `SO_REUSEPORT`.
//!
//! The cost: nothing while admission is open. While paused, each scan lists
//! `/proc/self/fd` and reads one link per descriptor; only new sockets get
//! a `getsockname`. A scan that takes long (many descriptors) spaces the
//! next ones out ([`SCAN_SHARE`]).

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::socket::{getsockname, getsockopt, sockopt, SockType, SockaddrStorage};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::sync::lock;

/// How long after the pause the baseline is taken: an accept already under
/// way when the pause began has finished by then.
const SETTLE: Duration = Duration::from_millis(50);
/// How often the sockets are scanned while paused, at most.
const SCAN_EVERY: Duration = Duration::from_millis(100);
/// The time between two scans is at least this many times the last scan's
/// duration, so that the scans take at most a 20th of a core.
const SCAN_SHARE: u32 = 20;

/// A socket's local address, as `getsockname` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LocalAddr {
    /// TCP (or any IP socket).
    Inet(SocketAddr),
    /// A Unix socket bound to a path.
    UnixPath(PathBuf),
    /// A Unix socket in the abstract namespace.
    UnixAbstract(Vec<u8>),
}

impl LocalAddr {
    /// The local address of the socket `fd`: `None` if it has none (an
    /// unnamed Unix socket), is of another family, or is not a socket.
    fn of(fd: RawFd) -> Option<LocalAddr> {
        let address: SockaddrStorage = getsockname(fd).ok()?;
        if let Some(v4) = address.as_sockaddr_in() {
            return Some(LocalAddr::Inet(SocketAddr::from(*v4)));
        }
        if let Some(v6) = address.as_sockaddr_in6() {
            return Some(LocalAddr::Inet(SocketAddr::from(*v6)));
        }
        let unix = address.as_unix_addr()?;
        if let Some(path) = unix.path() {
            return Some(LocalAddr::UnixPath(path.to_path_buf()));
        }
        unix.as_abstract()
            .map(|name| LocalAddr::UnixAbstract(name.to_vec()))
    }

    /// True when a socket with this local address may be a connection
    /// accepted by a listener bound to `listener`: the same port and, for a
    /// listener on a wildcard address, any address of its family (an IPv6
    /// wildcard accepts IPv4 connections as IPv4-mapped IPv6 ones); the
    /// same path or abstract name for a Unix listener.
    fn accepted_by(&self, listener: &LocalAddr) -> bool {
        match (self, listener) {
            (LocalAddr::Inet(local), LocalAddr::Inet(listener)) => {
                local.port() == listener.port()
                    && match listener.ip() {
                        IpAddr::V4(ip) if ip.is_unspecified() => local.is_ipv4(),
                        IpAddr::V6(ip) if ip.is_unspecified() => local.is_ipv6(),
                        ip => local.ip() == ip,
                    }
            }
            (a, b) => a == b,
        }
    }
}

impl fmt::Display for LocalAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalAddr::Inet(address) => write!(f, "{address}"),
            LocalAddr::UnixPath(path) => write!(f, "{}", path.display()),
            LocalAddr::UnixAbstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
        }
    }
}

/// A listening stream socket of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listener {
    /// Its name in the registry.
    pub name: String,
    /// Where it listens.
    pub address: LocalAddr,
    /// Its socket's inode: a duplicate of it is the listener itself.
    inode: u64,
}

impl Listener {
    /// The descriptor `fd` registered as `name`, if it is a listening
    /// stream socket (TCP or Unix) with an address.
    pub(crate) fn of(name: &str, fd: BorrowedFd<'_>) -> Option<Listener> {
        let stream = getsockopt(&fd, sockopt::SockType).ok()? == SockType::Stream;
        if !stream || !getsockopt(&fd, sockopt::AcceptConn).ok()? {
            return None;
        }
        Some(Listener {
            name: name.to_owned(),
            address: LocalAddr::of(fd.as_raw_fd())?,
            inode: inode_of(fd)?,
        })
    }
}

/// The inode of what `fd` refers to.
#[allow(clippy::useless_conversion)] // `ino_t` is narrower on some 32-bit targets
fn inode_of(fd: impl AsFd) -> Option<u64> {
    nix::sys::stat::fstat(fd.as_fd())
        .ok()
        .map(|stat| u64::from(stat.st_ino))
}

/// An open descriptor of this process that is a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OpenSocket {
    fd: RawFd,
    inode: u64,
}

/// The sockets open in this process, from `/proc/self/fd`. A descriptor
/// closed while the list is read is left out.
fn open_sockets() -> io::Result<Vec<OpenSocket>> {
    let mut sockets = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Ok(entry) = entry else { continue };
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if let Some(inode) = socket_inode(&target) {
            sockets.push(OpenSocket { fd, inode });
        }
    }
    Ok(sockets)
}

/// The inode in a `/proc/self/fd` link to a socket (`socket:[12345]`);
/// `None` for anything else.
fn socket_inode(target: &Path) -> Option<u64> {
    target
        .to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The sockets the predecessor handed over while a watch is armed (see
/// the module docs): they have a listener's address, but were not accepted
/// here.
#[derive(Debug)]
pub(crate) struct Received {
    /// Their inodes; `None` while disarmed (nothing is recorded).
    inodes: Mutex<Option<HashSet<u64>>>,
}

/// The process's record, fed by [`received`].
static RECEIVED: Received = Received::new();

impl Received {
    const fn new() -> Self {
        Received {
            inodes: Mutex::new(None),
        }
    }

    /// Records from now on, forgetting what was recorded before.
    pub(crate) fn arm(&self) {
        *lock(&self.inodes) = Some(HashSet::new());
    }

    /// Records nothing from now on.
    pub(crate) fn disarm(&self) {
        *lock(&self.inodes) = None;
    }

    fn record(&self, fds: &[OwnedFd]) {
        if fds.is_empty() {
            return;
        }
        if let Some(inodes) = lock(&self.inodes).as_mut() {
            inodes.extend(fds.iter().filter_map(inode_of));
        }
    }

    /// True when the socket `inode` was recorded since the record was armed.
    pub(crate) fn contains(&self, inode: u64) -> bool {
        lock(&self.inodes)
            .as_ref()
            .is_some_and(|inodes| inodes.contains(&inode))
    }
}

/// Disarms a [`Received`] when dropped.
struct Disarm(&'static Received);

impl Drop for Disarm {
    fn drop(&mut self) {
        self.0.disarm();
    }
}

/// Records descriptors received from the previous generation (the sockets
/// of handed-over connections), so that a watch does not take them for
/// connections accepted here. Cheap when no watch is armed.
pub(crate) fn received(fds: &[OwnedFd]) {
    RECEIVED.record(fds);
}

/// The process's record of received sockets (for tests elsewhere).
#[cfg(test)]
pub(crate) fn process_record() -> &'static Received {
    &RECEIVED
}

/// The inode of the socket `fd` (for tests elsewhere).
#[cfg(test)]
pub(crate) fn socket_inode_of(fd: impl AsFd) -> Option<u64> {
    inode_of(fd)
}

/// A connection accepted on `listener` while paused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Accepted {
    /// The listener it was accepted on.
    pub listener: Listener,
}

/// The sockets of one pause: those seen so far, and the suspects of the
/// last scan.
#[derive(Debug)]
struct Scanner {
    /// The inodes of the sockets seen open (the baseline, then every new
    /// one once looked at), pruned to those still open.
    known: HashSet<u64>,
    /// New sockets with a listener's address at the last scan, to report
    /// if the next scan finds them still open and not received.
    suspects: Vec<(u64, Listener)>,
}

impl Scanner {
    /// The sockets open now are the baseline.
    fn baseline(open: &[OpenSocket]) -> Scanner {
        Scanner {
            known: open.iter().map(|s| s.inode).collect(),
            suspects: Vec::new(),
        }
    }

    /// Looks at the sockets open now (`open`): a suspect of the last scan
    /// still open and not `received` is a connection accepted while
    /// paused; new sockets with the address of one of `listeners` become
    /// the suspects of this scan.
    fn scan(
        &mut self,
        open: &[OpenSocket],
        listeners: &[Listener],
        received: &Received,
    ) -> Option<Accepted> {
        let open_now: HashSet<u64> = open.iter().map(|s| s.inode).collect();
        let suspects = std::mem::take(&mut self.suspects);
        if let Some((_, listener)) = suspects
            .into_iter()
            .find(|(inode, _)| open_now.contains(inode) && !received.contains(*inode))
        {
            return Some(Accepted { listener });
        }
        for socket in open {
            if !self.known.insert(socket.inode)
                || received.contains(socket.inode)
                || listeners.iter().any(|l| l.inode == socket.inode)
            {
                continue;
            }
            // The descriptor may have been closed and reused since it was
            // listed: then the suspect's inode is gone at the next scan,
            // and the new socket is new then.
            let Some(local) = LocalAddr::of(socket.fd) else {
                continue;
            };
            if let Some(listener) = listeners.iter().find(|l| local.accepted_by(&l.address)) {
                self.suspects.push((socket.inode, listener.clone()));
            }
        }
        self.known.retain(|inode| open_now.contains(inode));
        None
    }
}

/// What the watch must know of the service's own calls: shared with
/// `Context`.
#[derive(Debug, Default)]
pub(crate) struct AcceptWatch {
    /// Polls of `Context::accept` in progress.
    polls: AtomicUsize,
    /// The service looked at its admission.
    consulted: AtomicBool,
    /// Scans made, over every pause.
    scans: AtomicU64,
}

/// A poll of `Context::accept` in progress, until dropped.
pub(crate) struct Polling<'a>(&'a AtomicUsize);

impl Drop for Polling<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl AcceptWatch {
    /// Counts one poll of `Context::accept` until the guard is dropped. A
    /// poll that began before the pause may accept one more connection;
    /// one that begins after it sees the pause and accepts nothing.
    pub(crate) fn polling(&self) -> Polling<'_> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        Polling(&self.polls)
    }

    /// The service looked at its admission (`Context::admission`): it
    /// pauses its accept loops by itself, and they are not watched.
    pub(crate) fn consulted(&self) {
        self.consulted.store(true, Ordering::Relaxed);
    }

    fn is_consulted(&self) -> bool {
        self.consulted.load(Ordering::Relaxed)
    }

    /// Waits until no poll of `Context::accept` is in progress (polls
    /// after a pause are short: they see it and return).
    async fn no_accept_in_progress(&self) {
        while self.polls.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// The registered stream listeners, as they are now.
pub(crate) type ListListeners = Arc<dyn Fn() -> Vec<Listener> + Send + Sync>;

/// What the watch follows in one generation.
pub(crate) struct Watched<A> {
    /// This generation's number, for the warning.
    pub generation: u64,
    /// Its admission...
    pub admission: watch::Receiver<A>,
    /// ...and which of its values is the pause.
    pub is_paused: fn(&A) -> bool,
    /// Cancelled at shutdown: the watch ends.
    pub shutdown: CancellationToken,
    /// Its stream listeners.
    pub listeners: ListListeners,
}

/// Starts watching on the current Tokio runtime: the first call in the
/// process does (there is one generation per process), later ones and
/// calls outside a runtime do nothing. Warns at the first connection
/// accepted while paused, and stops.
pub(crate) fn start<A: Send + Sync + 'static>(watched: Watched<A>, shared: Arc<AcceptWatch>) {
    static STARTED: AtomicBool = AtomicBool::new(false);
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if STARTED.swap(true, Ordering::SeqCst) {
        return;
    }
    runtime.spawn(async move {
        let generation = watched.generation;
        if let Some(accepted) = watch_admission(watched, &shared, &RECEIVED).await {
            warn(generation, &accepted.listener);
        }
    });
}

/// Gives the warning: through `tracing`, or on stderr when the service
/// installed no subscriber (the warning is for its author).
fn warn(generation: u64, listener: &Listener) {
    let pid = std::process::id();
    let text = warning(pid, generation, listener);
    if tracing::dispatcher::has_been_set() {
        tracing::warn!(
            pid,
            generation,
            listener = %listener.name,
            address = %listener.address,
            "{text}"
        );
    } else {
        eprintln!("shellflip: warning: {text}");
    }
}

/// The warning for a connection accepted on `listener` while paused.
pub(crate) fn warning(pid: u32, generation: u64, listener: &Listener) -> String {
    format!(
        "generation {generation} (pid {pid}) accepted a connection on listener `{}` ({}) while paused for \
         its successor's probation: its accept loop ignores the pause, so it takes connections \
         meant for the new generation, and what they change in the state is not carried. \
         Accept with `ctx.accept(&listener)` (it waits during a probation and returns None at \
         shutdown) or serve HTTP with `shellflip::http::serve`; a loop of your own must not \
         accept while `ctx.admission()` is `Admission::Paused` (see \"A restartable service\" \
         in shellflip's README). Said once per process.",
        listener.name, listener.address
    )
}

/// How one pause ended.
#[derive(Debug, PartialEq, Eq)]
enum PauseEnd {
    /// A connection was accepted meanwhile.
    Accepted(Accepted),
    /// Admission is open again.
    Resumed,
    /// Shutdown, or the admission's sender is gone.
    Ended,
}

/// Follows the admission until shutdown: the first connection accepted
/// while paused, if any.
async fn watch_admission<A>(
    mut watched: Watched<A>,
    shared: &AcceptWatch,
    received: &'static Received,
) -> Option<Accepted> {
    let is_paused = watched.is_paused;
    loop {
        let pause = async { watched.admission.wait_for(is_paused).await.is_ok() };
        tokio::select! {
            () = watched.shutdown.cancelled() => return None,
            paused = pause => if !paused {
                return None;
            },
        }
        match watch_pause(&mut watched, shared, received).await {
            PauseEnd::Accepted(accepted) => return Some(accepted),
            PauseEnd::Resumed => continue,
            PauseEnd::Ended => return None,
        }
    }
}

/// One pause, from its beginning to its end.
async fn watch_pause<A>(
    watched: &mut Watched<A>,
    shared: &AcceptWatch,
    received: &'static Received,
) -> PauseEnd {
    received.arm();
    let _disarm = Disarm(received);
    let scans_before = shared.scans.load(Ordering::Relaxed);
    let is_paused = watched.is_paused;
    let admission = &mut watched.admission;
    let resumed = async { admission.wait_for(|a| !is_paused(a)).await.is_ok() };
    let scanning = scan_while_paused(&watched.listeners, shared, received);
    let end = tokio::select! {
        () = watched.shutdown.cancelled() => PauseEnd::Ended,
        open = resumed => if open { PauseEnd::Resumed } else { PauseEnd::Ended },
        accepted = scanning => PauseEnd::Accepted(accepted),
    };
    if !matches!(end, PauseEnd::Accepted(_)) {
        let scans = shared
            .scans
            .load(Ordering::Relaxed)
            .saturating_sub(scans_before);
        tracing::debug!(
            "accept watch of pid {}: the pause is over after {scans} scans; no connection \
             accepted during it was seen",
            std::process::id()
        );
    }
    end
}

/// Scans the sockets every [`SCAN_EVERY`] (or less often) from the
/// baseline on; resolves at the first connection accepted, never when the
/// service consults its admission or the sockets cannot be listed.
async fn scan_while_paused(
    listeners: &ListListeners,
    shared: &AcceptWatch,
    received: &'static Received,
) -> Accepted {
    tokio::time::sleep(SETTLE).await;
    shared.no_accept_in_progress().await;
    if shared.is_consulted() {
        tracing::debug!("accept watch: the service checks ctx.admission() itself; not watching");
        return std::future::pending().await;
    }
    let mut scanner = match on_blocking_pool(open_sockets).await {
        Some(Ok(open)) => Scanner::baseline(&open),
        Some(Err(error)) => {
            tracing::debug!(%error, "accept watch: cannot list this process's descriptors");
            return std::future::pending().await;
        }
        None => return std::future::pending().await,
    };
    tracing::debug!(
        sockets = scanner.known.len(),
        "accept watch of pid {}: paused for the successor's probation; watching for connections \
         accepted meanwhile",
        std::process::id()
    );
    let mut every = SCAN_EVERY;
    loop {
        tokio::time::sleep(every).await;
        let listeners = Arc::clone(listeners);
        let scanned = on_blocking_pool(move || {
            let started = Instant::now();
            let found = open_sockets()
                .ok()
                .and_then(|open| scanner.scan(&open, &listeners(), received));
            (scanner, found, started.elapsed())
        })
        .await;
        let Some((back, found, took)) = scanned else {
            return std::future::pending().await;
        };
        shared.scans.fetch_add(1, Ordering::Relaxed);
        // A service that looked at its admission since the pause began
        // (its accept loop, say) is trusted too.
        if shared.is_consulted() {
            return std::future::pending().await;
        }
        if let Some(accepted) = found {
            return accepted;
        }
        scanner = back;
        every = SCAN_EVERY.max(took.saturating_mul(SCAN_SHARE));
    }
}

/// Runs `f` on the blocking pool; `None` if it panicked.
async fn on_blocking_pool<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream, UdpSocket};
    use std::os::unix::net::{UnixListener, UnixStream};

    fn inet(address: &str) -> LocalAddr {
        LocalAddr::Inet(address.parse().unwrap())
    }

    fn listener_of(name: &str, fd: impl AsFd) -> Listener {
        Listener::of(name, fd.as_fd()).unwrap()
    }

    fn open() -> Vec<OpenSocket> {
        open_sockets().unwrap()
    }

    #[test]
    fn socket_inodes_are_read_from_proc_links() {
        assert_eq!(socket_inode(Path::new("socket:[4026]")), Some(4026));
        assert_eq!(socket_inode(Path::new("pipe:[4026]")), None);
        assert_eq!(socket_inode(Path::new("/dev/null")), None);
        assert_eq!(socket_inode(Path::new("socket:[]")), None);
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let inode = inode_of(&socket).unwrap();
        let fd = socket.as_raw_fd();
        assert!(open().contains(&OpenSocket { fd, inode }));
    }

    #[test]
    fn which_local_addresses_a_listener_accepts_on() {
        let specific = inet("127.0.0.1:7000");
        assert!(inet("127.0.0.1:7000").accepted_by(&specific));
        assert!(!inet("127.0.0.2:7000").accepted_by(&specific));
        assert!(!inet("127.0.0.1:7001").accepted_by(&specific));
        let any_v4 = inet("0.0.0.0:7000");
        assert!(inet("10.1.2.3:7000").accepted_by(&any_v4));
        assert!(!inet("10.1.2.3:7001").accepted_by(&any_v4));
        assert!(!inet("[::1]:7000").accepted_by(&any_v4));
        let any_v6 = inet("[::]:7000");
        assert!(inet("[::1]:7000").accepted_by(&any_v6));
        assert!(inet("[::ffff:127.0.0.1]:7000").accepted_by(&any_v6));
        assert!(!inet("127.0.0.1:7000").accepted_by(&any_v6));
        let path = LocalAddr::UnixPath("/run/a.sock".into());
        assert!(LocalAddr::UnixPath("/run/a.sock".into()).accepted_by(&path));
        assert!(!LocalAddr::UnixPath("/run/b.sock".into()).accepted_by(&path));
        assert!(!inet("127.0.0.1:7000").accepted_by(&path));
        let name = LocalAddr::UnixAbstract(b"a".to_vec());
        assert!(LocalAddr::UnixAbstract(b"a".to_vec()).accepted_by(&name));
        assert!(!LocalAddr::UnixAbstract(b"b".to_vec()).accepted_by(&name));
        assert_eq!(name.to_string(), "@a");
        assert_eq!(path.to_string(), "/run/a.sock");
    }

    #[test]
    fn only_listening_stream_sockets_are_listeners() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let found = listener_of("web", &tcp);
        assert_eq!(found.name, "web");
        assert_eq!(found.address, LocalAddr::Inet(tcp.local_addr().unwrap()));
        assert_eq!(found.inode, inode_of(&tcp).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.sock");
        let unix = UnixListener::bind(&path).unwrap();
        assert_eq!(
            listener_of("local", &unix).address,
            LocalAddr::UnixPath(path.clone())
        );
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(Listener::of("udp", udp.as_fd()), None);
        let client = TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
        assert_eq!(Listener::of("client", client.as_fd()), None);
        let (pair, _) = UnixStream::pair().unwrap();
        assert_eq!(Listener::of("pair", pair.as_fd()), None);
    }

    #[test]
    fn a_connection_accepted_after_the_baseline_is_reported_at_the_next_scan() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let listeners = [listener_of("web", &tcp)];
        let received = Received::new();
        let mut scanner = Scanner::baseline(&open());
        // The listener's duplicate and a client socket of this process are
        // new, and not connections accepted here.
        let _duplicate = tcp.try_clone().unwrap();
        let _client = TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
        assert_eq!(scanner.scan(&open(), &listeners, &received), None);
        assert!(scanner.suspects.is_empty());
        let (_accepted, _) = tcp.accept().unwrap();
        assert_eq!(scanner.scan(&open(), &listeners, &received), None);
        assert_eq!(scanner.suspects.len(), 1);
        let found = scanner.scan(&open(), &listeners, &received);
        assert_eq!(
            found,
            Some(Accepted {
                listener: listeners[0].clone()
            })
        );
    }

    #[test]
    fn connections_accepted_before_the_baseline_are_not_reported() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let listeners = [listener_of("web", &tcp)];
        let _client = TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
        let (_accepted, _) = tcp.accept().unwrap();
        let received = Received::new();
        let mut scanner = Scanner::baseline(&open());
        for _ in 0..3 {
            assert_eq!(scanner.scan(&open(), &listeners, &received), None);
        }
    }

    #[test]
    fn a_listener_on_a_wildcard_address_and_a_unix_listener_are_watched_too() {
        let any = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = any.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let unix = UnixListener::bind(dir.path().join("l.sock")).unwrap();
        let listeners = [listener_of("any", &any), listener_of("local", &unix)];
        let received = Received::new();

        let mut scanner = Scanner::baseline(&open());
        let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_accepted, _) = any.accept().unwrap();
        scanner.scan(&open(), &listeners, &received);
        let found = scanner.scan(&open(), &listeners, &received).unwrap();
        assert_eq!(found.listener.name, "any");

        let mut scanner = Scanner::baseline(&open());
        let _client = UnixStream::connect(dir.path().join("l.sock")).unwrap();
        assert_eq!(scanner.scan(&open(), &listeners, &received), None);
        let (_accepted, _) = unix.accept().unwrap();
        scanner.scan(&open(), &listeners, &received);
        let found = scanner.scan(&open(), &listeners, &received).unwrap();
        assert_eq!(found.listener.name, "local");
    }

    #[test]
    fn a_suspect_closed_or_received_by_the_next_scan_is_not_reported() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let listeners = [listener_of("web", &tcp)];
        let received = Received::new();
        received.arm();
        let mut scanner = Scanner::baseline(&open());
        let _client = TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
        let (accepted, _) = tcp.accept().unwrap();
        scanner.scan(&open(), &listeners, &received);
        drop(accepted);
        assert_eq!(scanner.scan(&open(), &listeners, &received), None);
        // A socket handed over by the predecessor, recorded a moment after
        // it arrived (here: after the scan that saw it).
        let _client = TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
        let (handed_over, _) = tcp.accept().unwrap();
        scanner.scan(&open(), &listeners, &received);
        assert_eq!(scanner.suspects.len(), 1);
        received.record(&[OwnedFd::from(handed_over)]);
        assert_eq!(scanner.scan(&open(), &listeners, &received), None);
        // Recorded before any scan saw it: never a suspect.
        let _client = TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
        let (handed_over, _) = tcp.accept().unwrap();
        let handed_over = OwnedFd::from(handed_over);
        received.record(std::slice::from_ref(&handed_over));
        scanner.scan(&open(), &listeners, &received);
        assert!(scanner.suspects.is_empty());
    }

    #[test]
    fn received_sockets_are_recorded_only_while_armed() {
        let received = Received::new();
        let socket = OwnedFd::from(UdpSocket::bind("127.0.0.1:0").unwrap());
        let inode = inode_of(&socket).unwrap();
        received.record(std::slice::from_ref(&socket));
        assert!(!received.contains(inode));
        received.arm();
        received.record(std::slice::from_ref(&socket));
        assert!(received.contains(inode));
        received.disarm();
        assert!(!received.contains(inode));
    }

    #[tokio::test(start_paused = true)]
    async fn the_baseline_waits_for_polls_of_accept_under_way() {
        let shared = Arc::new(AcceptWatch::default());
        let polling = shared.polling();
        let waiting = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move { shared.no_accept_in_progress().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(polling);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .unwrap()
            .unwrap();
    }

    /// What a watch of `tcp` follows, with a paused flag for admission.
    fn watched(
        tcp: &TcpListener,
        admission: watch::Receiver<bool>,
        shutdown: &CancellationToken,
    ) -> Watched<bool> {
        let listener = listener_of("web", tcp);
        Watched {
            generation: 2,
            admission,
            is_paused: |paused| *paused,
            shutdown: shutdown.clone(),
            listeners: Arc::new(move || vec![listener.clone()]),
        }
    }

    fn spawn_watch(
        watched: Watched<bool>,
        shared: &Arc<AcceptWatch>,
        received: &'static Received,
    ) -> tokio::task::JoinHandle<Option<Accepted>> {
        let shared = Arc::clone(shared);
        tokio::spawn(async move { watch_admission(watched, &shared, received).await })
    }

    async fn scans_reach(shared: &AcceptWatch, scans: u64) {
        let wait = async {
            while shared.scans.load(Ordering::Relaxed) < scans {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .unwrap_or_else(|_| panic!("fewer than {scans} scans in 30 s"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_plain_accept_loop_is_caught_during_a_pause_and_not_before() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        tcp.set_nonblocking(true).unwrap();
        let addr = tcp.local_addr().unwrap();
        let (admission, admission_rx) = watch::channel(false);
        let shutdown = CancellationToken::new();
        let shared = Arc::new(AcceptWatch::default());
        let received: &'static Received = Box::leak(Box::new(Received::new()));
        let mut watching = spawn_watch(watched(&tcp, admission_rx, &shutdown), &shared, received);
        // The plain loop: it accepts whatever the admission says.
        let plain = tokio::net::TcpListener::from_std(tcp.try_clone().unwrap()).unwrap();
        let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = plain.accept().await {
                let _ = accepted_tx.send(stream);
            }
        });
        let mut held = Vec::new();
        // Accepted while open: nothing to say.
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        held.push(accepted.recv().await.unwrap());
        assert!(!watching.is_finished());

        admission.send_replace(true);
        let caught = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                tokio::select! {
                    found = &mut watching => return found.unwrap(),
                    () = tokio::time::sleep(Duration::from_millis(20)) => {
                        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
                    }
                }
            }
        })
        .await
        .expect("the connections accepted while paused were not noticed");
        assert_eq!(caught.unwrap().listener.name, "web");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_is_reported_while_paused_connections_wait_or_are_handed_over() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let (admission, admission_rx) = watch::channel(false);
        let shutdown = CancellationToken::new();
        let shared = Arc::new(AcceptWatch::default());
        let received: &'static Received = Box::leak(Box::new(Received::new()));
        let watching = spawn_watch(watched(&tcp, admission_rx, &shutdown), &shared, received);
        admission.send_replace(true);
        // Clients of a service that honours the pause wait in the backlog.
        let _waiting: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        scans_reach(&shared, 3).await;
        // A connection handed over by the predecessor: recorded as it
        // arrives (here just after it was accepted, maybe after a scan).
        let (handed_over, _) = tcp.accept().unwrap();
        received.record(&[OwnedFd::from(handed_over)]);
        scans_reach(&shared, 6).await;
        assert!(!watching.is_finished());
        // Open again: the pause's watch ends (its record is disarmed);
        // paused again: scanning again; and the end.
        admission.send_replace(false);
        let disarmed = async {
            while lock(&received.inodes).is_some() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), disarmed)
            .await
            .expect("the pause's watch did not end when admission opened");
        admission.send_replace(true);
        scans_reach(&shared, 8).await;
        shutdown.cancel();
        assert_eq!(watching.await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_that_consults_its_admission_is_not_watched() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let shared = AcceptWatch::default();
        shared.consulted();
        let received: &'static Received = Box::leak(Box::new(Received::new()));
        let listeners = watched(&tcp, watch::channel(true).1, &CancellationToken::new()).listeners;
        let scanning = scan_while_paused(&listeners, &shared, received);
        assert!(tokio::time::timeout(Duration::from_secs(60), scanning)
            .await
            .is_err());
        assert_eq!(shared.scans.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_warning_names_the_listener_and_the_fix() {
        let listener = Listener {
            name: "echo".into(),
            address: inet("127.0.0.1:7000"),
            inode: 1,
        };
        let text = warning(42, 3, &listener);
        for part in [
            "generation 3 (pid 42)",
            "listener `echo` (127.0.0.1:7000)",
            "ctx.accept(&listener)",
            "shellflip::http::serve",
            "ctx.admission()",
            "A restartable service",
        ] {
            assert!(text.contains(part), "{part:?} missing from {text:?}");
        }
    }
}
