//! systemd integration: the notify protocol (`sd_notify`), socket
//! activation (`LISTEN_FDS`) and the file descriptor store.
//!
//! The messages are spelled by the `sd-notify` crate ([`NotifyState`]);
//! they are sent by this module, because `sd_notify::notify` does not fit
//! two rules of ours (measured with sd-notify 0.5.0): it sends on a
//! *blocking* socket, so a sender whose messages systemd does not read
//! fast enough blocks (after 11 datagrams to a receiver that does not read,
//! with Linux's default `net.unix.max_dgram_qlen`), and it cannot reach an
//! abstract `NOTIFY_SOCKET=@name` (`ENOENT`). `LISTEN_FDS` is parsed here
//! too: `sd_notify::listen_fds_with_names` fails on variables meant for
//! another process (`LISTEN_PID` not ours) when `LISTEN_FDNAMES` is set,
//! where libsystemd ignores them, and its errors are untyped.
//!
//! Who sends what (see `docs/systemd.md` for the unit files):
//!
//! | moment                          | sender           | message                                 |
//! |---------------------------------|------------------|-----------------------------------------|
//! | the first generation is ready   | generation 1     | `READY=1`                               |
//! | a restart starts                | the old one      | `RELOADING=1`, `MONOTONIC_USEC=…`       |
//! | the new generation is ready     | the old one      | `MAINPID=<new pid>`, `READY=1`          |
//! | the new generation failed       | the old one      | `READY=1`                               |
//! | a stop begins (and every 5s of its drain) | the stopping one | `STOPPING=1`, `EXTEND_TIMEOUT_USEC=…` |
//! | with `fd_store`: the first generation is ready, a later one took over | that one | `FDSTORE=1`, `FDNAME=shellflip.stored.<name>` with the descriptor; `FDSTOREREMOVE=1` for names no longer used |
//!
//! Every message but the fd store's also carries a `STATUS=` line for
//! `systemctl status`.
//!
//! The old generation sends `MAINPID=` itself, in one datagram with
//! `READY=1`, while it is still the main process: systemd accepts it even
//! with `NotifyAccess=main`, the two cannot be reordered, and it reaches
//! systemd before the old process exits (it still has to drain).
//!
//! Sending never blocks and never fails the service: a datagram that cannot
//! be sent is logged and dropped. Nothing is sent when `NOTIFY_SOCKET` is
//! unset. The variable stays in the environment: the next generation needs
//! it.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use nix::sys::socket::UnixAddr;
use sd_notify::NotifyState;
use tokio::time::Instant;

use crate::error::SocketActivationError;
use crate::fd;
use crate::registry::{Registry, StoredFd, RESERVED_PREFIX};

/// The notify socket systemd gives a `Type=notify` service.
pub(crate) const ENV_NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// The pid socket activation is meant for.
pub(crate) const ENV_LISTEN_PID: &str = "LISTEN_PID";
/// How many descriptors, from 3 on, socket activation passed.
pub(crate) const ENV_LISTEN_FDS: &str = "LISTEN_FDS";
/// Their names (`FileDescriptorName=`), colon-separated.
pub(crate) const ENV_LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
/// The first descriptor passed by socket activation (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;
/// More descriptors than this in `LISTEN_FDS` is taken as garbage.
pub(crate) const MAX_LISTEN_FDS: usize = 4096;
/// The name systemd gives a passed descriptor without `FileDescriptorName=`.
const UNKNOWN_NAME: &str = "unknown";
/// The `FDNAME=` prefix of the descriptors shellflip keeps in systemd's fd
/// store: `shellflip.stored.echo` for the listener `echo`. It tells them
/// apart from the sockets of socket units when systemd passes both back.
pub(crate) const FD_STORE_PREFIX: &str = "shellflip.stored.";
/// The longest `FDNAME=` systemd accepts (`FDNAME_MAX`).
const MAX_FD_NAME: usize = 255;

/// While a stop drains, `EXTEND_TIMEOUT_USEC` is sent this often...
const EXTEND_PERIOD: Duration = Duration::from_secs(5);
/// ...each time asking for this much more time (at most what the drain has
/// left)...
const EXTEND_STEP: Duration = Duration::from_secs(10);
/// ...plus this margin for the exit after the drain.
const EXIT_MARGIN: Duration = Duration::from_secs(5);

/// Where notifications go: a socket file, or a Linux abstract socket
/// (`@name` in `NOTIFY_SOCKET`).
pub(crate) type NotifyTarget = UnixAddr;

/// Reads a `NOTIFY_SOCKET` value: `/path`, or `@name` for an abstract
/// socket. Other forms (e.g. `vsock:`) are not supported: `Err` says why.
pub(crate) fn parse_notify_socket(value: &OsStr) -> Result<NotifyTarget, String> {
    let bytes = value.as_bytes();
    let target = match bytes.first() {
        Some(b'/') => UnixAddr::new(value),
        Some(b'@') if bytes.len() > 1 => UnixAddr::new_abstract(&bytes[1..]),
        _ => return Err(format!(
            "NOTIFY_SOCKET={value:?} is neither a socket path nor an abstract socket (@name); notifications are off"
        )),
    };
    target.map_err(|e| {
        format!("NOTIFY_SOCKET={value:?} is not a socket address ({e}); notifications are off")
    })
}

/// Sends notifications to systemd, or nothing when not run by it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Notifier {
    target: Option<NotifyTarget>,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` describes (left in the environment).
    pub(crate) fn from_env() -> Self {
        let target = std::env::var_os(ENV_NOTIFY_SOCKET).and_then(|value| {
            parse_notify_socket(&value)
                .map_err(|reason| tracing::warn!("{reason}"))
                .ok()
        });
        Notifier { target }
    }

    /// True when notifications go somewhere.
    pub(crate) fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `states` and, with `status`, a `STATUS=` line (see
    /// [`message`]) as one datagram, without blocking. Failures are logged,
    /// never returned: systemd being unreachable must not affect the
    /// service.
    pub(crate) fn send(&self, states: &[NotifyState<'_>], status: Option<&str>) {
        self.send_with_fds(states, status, &[]);
    }

    /// [`send`](Self::send) with `fds` attached (`SCM_RIGHTS`). True when
    /// it was sent; failures are logged.
    pub(crate) fn send_with_fds(
        &self,
        states: &[NotifyState<'_>],
        status: Option<&str>,
        fds: &[BorrowedFd<'_>],
    ) -> bool {
        let Some(target) = &self.target else {
            return false;
        };
        let text = message(states, status);
        let sent = send_datagram(target, text.as_bytes(), fds);
        // The log lines show the message on one line.
        let message = text.replace('\n', " ");
        match &sent {
            Ok(()) => tracing::debug!(%message, fds = fds.len(), "notified systemd"),
            Err(error) => tracing::warn!(%error, %message, "could not notify systemd"),
        }
        sent.is_ok()
    }
}

/// One datagram to `target`, from a non-blocking socket connected to it: a
/// full queue is an error (`EAGAIN`), not a wait.
pub(crate) fn send_datagram(
    target: &NotifyTarget,
    message: &[u8],
    fds: &[BorrowedFd<'_>],
) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    nix::sys::socket::connect(socket.as_raw_fd(), target)?;
    let sent = fd::send_with_fds(socket.as_fd(), message, fds)?;
    if sent != message.len() {
        return Err(std::io::Error::other(format!(
            "only {sent} of {} bytes were sent",
            message.len()
        )));
    }
    Ok(())
}

/// One notification: `states` (each spelled by the `sd-notify` crate's
/// [`NotifyState`]) and, with `status`, a `STATUS=` line for `systemctl
/// status`; one `KEY=value` assignment per line.
fn message(states: &[NotifyState<'_>], status: Option<&str>) -> String {
    // A newline in the status would start a new (bogus) assignment.
    let status = status.map(|status| status.replace(['\n', '\r'], " "));
    let status = status.as_deref().map(NotifyState::Status);
    let lines = states.iter().chain(&status);
    lines.map(|state| format!("{state}\n")).collect()
}

/// A duration in microseconds, as `EXTEND_TIMEOUT_USEC` takes it (at most
/// `u32::MAX` µs, 71 minutes, in the `sd-notify` crate).
pub(crate) fn usec(duration: Duration) -> u32 {
    u32::try_from(duration.as_micros()).unwrap_or(u32::MAX)
}

/// `CLOCK_MONOTONIC` in microseconds, as `MONOTONIC_USEC` wants it (0 if
/// the clock cannot be read, which Linux never refuses).
pub(crate) fn monotonic_usec() -> u64 {
    match NotifyState::monotonic_usec_now() {
        Ok(NotifyState::MonotonicUsec(usec)) => u64::try_from(usec).unwrap_or(0),
        _ => 0,
    }
}

/// How much more time to ask for when `remaining` of the drain is left.
pub(crate) fn drain_extension(remaining: Duration) -> Duration {
    remaining.min(EXTEND_STEP) + EXIT_MARGIN
}

/// Keeps asking systemd for more stop time while a drain ending at
/// `deadline` runs. The task ends with the process.
pub(crate) async fn keep_extending_stop_timeout(notifier: Notifier, deadline: Instant) {
    loop {
        tokio::time::sleep(EXTEND_PERIOD).await;
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return;
        }
        let extend = usec(drain_extension(remaining));
        notifier.send(&[NotifyState::ExtendTimeoutUsec(extend)], None);
    }
}

/// Reads the socket-activation variables (values as found, or `None`):
/// `Ok(None)` when they are absent or meant for another process
/// (`LISTEN_PID` is not `our_pid`), else the name of each passed
/// descriptor, in order from fd 3. Missing names are `unknown`, as systemd
/// names descriptors without `FileDescriptorName=`.
pub(crate) fn parse_socket_activation(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    listen_fdnames: Option<&str>,
    our_pid: u32,
) -> Result<Option<Vec<String>>, SocketActivationError> {
    let (Some(pid), Some(count)) = (listen_pid, listen_fds) else {
        return Ok(None);
    };
    let pid: u32 = pid
        .trim()
        .parse()
        .map_err(|_| SocketActivationError::BadPid(pid.to_owned()))?;
    if pid != our_pid {
        tracing::debug!(
            listen_pid = pid,
            our_pid,
            "socket activation variables are meant for another process; ignored"
        );
        return Ok(None);
    }
    let count: usize = match count.trim().parse() {
        Ok(n) if n <= MAX_LISTEN_FDS => n,
        _ => return Err(SocketActivationError::BadCount(count.to_owned())),
    };
    let given = listen_fdnames.unwrap_or_default();
    if listen_fdnames.is_some() && given.split(':').count() > count {
        tracing::warn!(
            names = given,
            count,
            "LISTEN_FDNAMES has more names than LISTEN_FDS descriptors; the extra names are ignored"
        );
    }
    let mut given = given.split(':');
    let names = (0..count).map(|_| match given.next() {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => UNKNOWN_NAME.to_owned(),
    });
    Ok(Some(names.collect()))
}

/// What systemd passed to a first generation, by name.
#[derive(Debug, Default)]
pub(crate) struct Passed {
    /// The sockets of socket units, under their `FileDescriptorName=`: for
    /// these the name wins over the address configured in the code.
    pub activated: Vec<(String, OwnedFd)>,
    /// What an earlier first generation kept in the fd store, under the
    /// registry's names (the `shellflip.stored.` prefix stripped): adopted
    /// like descriptors inherited from a previous generation.
    pub stored: Vec<(String, OwnedFd)>,
}

/// Takes the descriptors systemd passed to this process, named as in
/// `LISTEN_FDNAMES`, and removes the `LISTEN_*` variables from the
/// environment (call it before the runtime starts threads). Only a first
/// generation adopts anything: later ones get their sockets from the
/// previous generation.
pub(crate) fn take_socket_activation(
    first_generation: bool,
) -> Result<Passed, SocketActivationError> {
    let [pid, count, names] = [ENV_LISTEN_PID, ENV_LISTEN_FDS, ENV_LISTEN_FDNAMES].map(|name| {
        let value = std::env::var_os(name);
        std::env::remove_var(name);
        value.map(|v| v.to_str().map(str::to_owned).unwrap_or_default())
    });
    let mut passed = Passed::default();
    if !first_generation {
        return Ok(passed);
    }
    let Some(names) = parse_socket_activation(
        pid.as_deref(),
        count.as_deref(),
        names.as_deref(),
        std::process::id(),
    )?
    else {
        return Ok(passed);
    };
    let count = names.len();
    for (index, name) in names.into_iter().enumerate() {
        let raw = LISTEN_FDS_START + index as i32;
        let owned = fd::adopt_inherited(raw).map_err(|source| SocketActivationError::NotOpen {
            fd: raw,
            count,
            source,
        })?;
        if let Some(own_name) = name.strip_prefix(FD_STORE_PREFIX) {
            tracing::info!(
                name = own_name,
                fd = owned.as_raw_fd(),
                "adopted a descriptor kept in systemd's fd store"
            );
            passed.stored.push((own_name.to_owned(), owned));
            continue;
        }
        if name.starts_with(RESERVED_PREFIX) {
            tracing::warn!(
                name,
                fd = raw,
                "systemd passed a socket under a name reserved by shellflip; closed it"
            );
            continue;
        }
        tracing::info!(
            name,
            fd = owned.as_raw_fd(),
            "adopted a socket passed by systemd"
        );
        passed.activated.push((name, owned));
    }
    Ok(passed)
}

/// True when systemd accepts `name` as an `FDNAME=`: printable ASCII
/// without `:` (the separator of `LISTEN_FDNAMES`), at most 255 bytes.
pub(crate) fn is_valid_fd_name(name: &str) -> bool {
    name.len() <= MAX_FD_NAME && name.bytes().all(|b| (b' '..0x7f).contains(&b) && b != b':')
}

/// The identity of a descriptor kept in the store: its inode (sockets have
/// one of their own in the kernel's socket file system).
fn inode(fd: BorrowedFd<'_>) -> Option<(u64, bool)> {
    let stat = nix::sys::stat::fstat(fd).ok()?;
    let is_socket = stat.st_mode & libc::S_IFMT == libc::S_IFSOCK;
    Some((stat.st_ino, is_socket))
}

/// Makes systemd's fd store hold this generation's sockets — its listeners
/// and the control socket, but not the sockets of socket units, which
/// systemd holds anyway — under `shellflip.stored.<name>`, and nothing else
/// of ours: a name no longer used, or whose socket was replaced (bound
/// anew at another address), is removed (`FDSTOREREMOVE=1`) first.
/// `stored` is what the store holds (as the lineage knows it) and is
/// updated. With `enabled` false, everything shellflip stored is removed.
///
/// Called by the generation that is the service: the first one when it is
/// ready, a later one when it took over. Without `NOTIFY_SOCKET`, nothing
/// is sent and nothing recorded.
pub(crate) fn sync_fd_store(
    notifier: &Notifier,
    enabled: bool,
    registry: &Registry,
    stored: &mut Vec<StoredFd>,
) {
    if !notifier.is_enabled() || (!enabled && stored.is_empty()) {
        return;
    }
    let mut wanted: Vec<(String, BorrowedFd<'_>, u64)> = Vec::new();
    if enabled {
        for (name, fd) in registry.active() {
            if registry.is_socket_activated(name) {
                continue;
            }
            let Some((ino, true)) = inode(fd) else {
                continue; // not a socket: a file or a pipe kept with Context::fd
            };
            if !is_valid_fd_name(&format!("{FD_STORE_PREFIX}{name}")) {
                tracing::warn!(
                    name,
                    "this descriptor's name cannot be an FDNAME= (printable ASCII without ':', at most 255 bytes); it is not kept in systemd's fd store"
                );
                continue;
            }
            wanted.push((name.to_owned(), fd, ino));
        }
    }
    stored.retain(|old| {
        let same = wanted
            .iter()
            .any(|(name, _, ino)| *name == old.name && *ino == old.ino);
        if !same {
            let fd_name = format!("{FD_STORE_PREFIX}{}", old.name);
            notifier.send(
                &[NotifyState::FdStoreRemove, NotifyState::FdName(&fd_name)],
                None,
            );
        }
        same
    });
    for (name, fd, ino) in wanted {
        if stored.iter().any(|s| s.name == name) {
            continue;
        }
        let fd_name = format!("{FD_STORE_PREFIX}{name}");
        let states = [NotifyState::FdStore, NotifyState::FdName(&fd_name)];
        if notifier.send_with_fds(&states, None, &[fd]) {
            stored.push(StoredFd { name, ino });
        }
    }
    let names: Vec<&str> = stored.iter().map(|s| s.name.as_str()).collect();
    tracing::debug!(?names, "systemd's fd store holds these descriptors");
}

/// The store entries of descriptors adopted from the fd store.
pub(crate) fn stored_entries(stored: &[(String, OwnedFd)]) -> Vec<StoredFd> {
    stored
        .iter()
        .filter_map(|(name, fd)| {
            inode(fd.as_fd()).map(|(ino, _)| StoredFd {
                name: name.clone(),
                ino,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn notifier_to(target: NotifyTarget) -> Notifier {
        Notifier {
            target: Some(target),
        }
    }

    fn keys(message: &str) -> Vec<(&str, &str)> {
        message
            .lines()
            .map(|l| l.split_once('=').unwrap())
            .collect()
    }

    #[test]
    fn messages_are_newline_separated_assignments() {
        assert_eq!(
            message(&[NotifyState::Ready], Some("serving")),
            "READY=1\nSTATUS=serving\n"
        );
        assert_eq!(
            message(
                &[NotifyState::Reloading, NotifyState::MonotonicUsec(123_456)],
                Some("restarting")
            ),
            "RELOADING=1\nMONOTONIC_USEC=123456\nSTATUS=restarting\n"
        );
        assert_eq!(
            keys(&message(
                &[NotifyState::MainPid(42), NotifyState::Ready],
                Some("s")
            )),
            vec![("MAINPID", "42"), ("READY", "1"), ("STATUS", "s")]
        );
        assert_eq!(
            message(
                &[
                    NotifyState::Stopping,
                    NotifyState::ExtendTimeoutUsec(usec(Duration::from_secs(3)))
                ],
                Some("bye")
            ),
            "STOPPING=1\nEXTEND_TIMEOUT_USEC=3000000\nSTATUS=bye\n"
        );
        assert_eq!(
            message(
                &[NotifyState::ExtendTimeoutUsec(usec(Duration::from_millis(
                    1
                )))],
                None
            ),
            "EXTEND_TIMEOUT_USEC=1000\n"
        );
    }

    #[test]
    fn fd_store_messages() {
        assert_eq!(
            message(
                &[
                    NotifyState::FdStore,
                    NotifyState::FdName("shellflip.stored.echo")
                ],
                None
            ),
            "FDSTORE=1\nFDNAME=shellflip.stored.echo\n"
        );
        assert_eq!(
            message(
                &[
                    NotifyState::FdStoreRemove,
                    NotifyState::FdName("shellflip.stored.echo")
                ],
                None
            ),
            "FDSTOREREMOVE=1\nFDNAME=shellflip.stored.echo\n"
        );
        assert!(is_valid_fd_name("shellflip.stored.echo two"));
        assert!(!is_valid_fd_name("a:b"));
        assert!(!is_valid_fd_name("tab\there"));
        assert!(!is_valid_fd_name("é"));
        assert!(!is_valid_fd_name(&"x".repeat(256)));
    }

    /// The fd store holds the registry's sockets, replaces one bound anew,
    /// removes names no longer used, and leaves socket units' sockets and
    /// non-sockets alone.
    #[test]
    fn the_store_follows_the_registry() {
        use std::os::unix::net::UnixListener;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        receiver.set_nonblocking(true).unwrap();
        let notifier = notifier_to(UnixAddr::new(&path).unwrap());
        let received = || {
            let mut messages = Vec::new();
            let mut buf = [0u8; 512];
            while let Ok((n, fds)) = fd::recv_with_fds(receiver.as_fd(), &mut buf) {
                messages.push((
                    String::from_utf8_lossy(&buf[..n]).replace('\n', " "),
                    fds.len(),
                ));
            }
            messages
        };
        let listener = |name: &str| UnixListener::bind(dir.path().join(name)).unwrap();
        let (echo, admin, unit) = (listener("echo"), listener("admin"), listener("unit"));
        let file = std::fs::File::open("/dev/null").unwrap();
        let mut registry = Registry::new(vec![("unit".into(), OwnedFd::from(unit))]);
        registry.mark_socket_activated(&["unit".into()]);
        let unit = registry.claim("unit").unwrap();
        registry.register("unit", unit.as_fd()).unwrap();
        registry.register("echo", echo.as_fd()).unwrap();
        registry.register("admin", admin.as_fd()).unwrap();
        registry.register("file", file.as_fd()).unwrap();
        let mut stored = Vec::new();
        sync_fd_store(&notifier, true, &registry, &mut stored);
        assert_eq!(
            received(),
            vec![
                ("FDSTORE=1 FDNAME=shellflip.stored.echo ".to_owned(), 1),
                ("FDSTORE=1 FDNAME=shellflip.stored.admin ".to_owned(), 1),
            ]
        );
        let names: Vec<&str> = stored.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["echo", "admin"]);
        // Nothing changed: nothing sent.
        sync_fd_store(&notifier, true, &registry, &mut stored);
        assert_eq!(received(), vec![]);
        // `echo` bound anew, `admin` gone.
        let mut next = Registry::new(Vec::new());
        let echo2 = listener("echo2");
        next.register("echo", echo2.as_fd()).unwrap();
        sync_fd_store(&notifier, true, &next, &mut stored);
        assert_eq!(
            received(),
            vec![
                (
                    "FDSTOREREMOVE=1 FDNAME=shellflip.stored.echo ".to_owned(),
                    0
                ),
                (
                    "FDSTOREREMOVE=1 FDNAME=shellflip.stored.admin ".to_owned(),
                    0
                ),
                ("FDSTORE=1 FDNAME=shellflip.stored.echo ".to_owned(), 1),
            ]
        );
        // Turned off: everything of ours leaves the store.
        sync_fd_store(&notifier, false, &next, &mut stored);
        assert_eq!(
            received(),
            vec![(
                "FDSTOREREMOVE=1 FDNAME=shellflip.stored.echo ".to_owned(),
                0
            )]
        );
        assert!(stored.is_empty());
    }

    #[test]
    fn newlines_in_values_cannot_inject_assignments() {
        let message = message(&[NotifyState::Ready], Some("line one\nMAINPID=1\r\n"));
        assert_eq!(message, "READY=1\nSTATUS=line one MAINPID=1  \n");
    }

    #[test]
    fn notify_socket_forms() {
        assert_eq!(
            parse_notify_socket(&OsString::from("/run/systemd/notify")),
            Ok(UnixAddr::new("/run/systemd/notify").unwrap())
        );
        assert_eq!(
            parse_notify_socket(&OsString::from("@/org/systemd/notify")),
            Ok(UnixAddr::new_abstract(b"/org/systemd/notify").unwrap())
        );
        assert!(parse_notify_socket(&OsString::from("vsock:2:1234")).is_err());
        assert!(parse_notify_socket(&OsString::from("@")).is_err());
        assert!(parse_notify_socket(&OsString::from("")).is_err());
    }

    #[test]
    fn datagrams_reach_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        notifier_to(UnixAddr::new(&path).unwrap()).send(&[NotifyState::Ready], Some("x"));
        let mut buf = [0u8; 256];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=x\n");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("shellflip-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&addr).unwrap();
        notifier_to(UnixAddr::new_abstract(name.as_bytes()).unwrap()).send(
            &[NotifyState::ExtendTimeoutUsec(usec(Duration::from_secs(1)))],
            None,
        );
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"EXTEND_TIMEOUT_USEC=1000000\n");
    }

    #[test]
    fn an_unreachable_socket_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let notifier = notifier_to(UnixAddr::new(&dir.path().join("nobody")).unwrap());
        assert!(notifier.is_enabled());
        notifier.send(&[NotifyState::Ready], Some("x"));
        assert!(!Notifier::default().is_enabled());
        Notifier::default().send(&[NotifyState::Ready], Some("x"));
    }

    /// A receiver that does not read makes notifications fail (and be
    /// logged), never wait: `sd_notify::notify` would block here.
    #[test]
    fn a_full_queue_never_blocks_the_sender() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let _receiver = UnixDatagram::bind(&path).unwrap();
        let target = UnixAddr::new(&path).unwrap();
        let failed = (0..1_000)
            .filter(|_| send_datagram(&target, b"STATUS=x\n", &[]).is_err())
            .count();
        assert!(failed > 0, "the queue never filled up");
    }

    #[test]
    fn monotonic_clock_is_in_microseconds() {
        let a = monotonic_usec();
        std::thread::sleep(Duration::from_millis(2));
        let b = monotonic_usec();
        assert!(b >= a + 2_000, "{a} {b}");
    }

    #[test]
    fn extension_covers_the_rest_of_the_drain_in_steps() {
        assert_eq!(
            drain_extension(Duration::from_secs(2)),
            Duration::from_secs(7)
        );
        assert_eq!(
            drain_extension(Duration::from_secs(600)),
            Duration::from_secs(15)
        );
    }

    #[test]
    fn listen_vars_for_this_process_name_each_fd() {
        let names = parse_socket_activation(Some("7"), Some("2"), Some("echo:admin"), 7).unwrap();
        assert_eq!(names, Some(vec!["echo".to_owned(), "admin".to_owned()]));
    }

    #[test]
    fn missing_names_are_unknown() {
        assert_eq!(
            parse_socket_activation(Some("7"), Some("3"), Some("echo"), 7).unwrap(),
            Some(vec!["echo".into(), "unknown".into(), "unknown".into()])
        );
        assert_eq!(
            parse_socket_activation(Some("7"), Some("2"), None, 7).unwrap(),
            Some(vec!["unknown".into(), "unknown".into()])
        );
        assert_eq!(
            parse_socket_activation(Some("7"), Some("2"), Some("a::b"), 7).unwrap(),
            Some(vec!["a".into(), "unknown".into()])
        );
        assert_eq!(
            parse_socket_activation(Some("7"), Some("0"), Some(""), 7).unwrap(),
            Some(vec![])
        );
    }

    #[test]
    fn vars_for_another_process_or_absent_are_ignored() {
        assert_eq!(
            parse_socket_activation(Some("8"), Some("1"), Some("echo"), 7).unwrap(),
            None
        );
        assert_eq!(
            parse_socket_activation(None, Some("1"), None, 7).unwrap(),
            None
        );
        assert_eq!(
            parse_socket_activation(Some("7"), None, None, 7).unwrap(),
            None
        );
    }

    #[test]
    fn malformed_vars_are_errors() {
        assert!(matches!(
            parse_socket_activation(Some("seven"), Some("1"), None, 7),
            Err(SocketActivationError::BadPid(_))
        ));
        assert!(matches!(
            parse_socket_activation(Some("7"), Some("-1"), None, 7),
            Err(SocketActivationError::BadCount(_))
        ));
        assert!(matches!(
            parse_socket_activation(Some("7"), Some("100000"), None, 7),
            Err(SocketActivationError::BadCount(_))
        ));
    }
}
