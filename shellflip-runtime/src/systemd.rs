//! systemd integration: the notify protocol (`sd_notify`) and socket
//! activation (`LISTEN_FDS`), written against the documented wire format,
//! without linking libsystemd.
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
//!
//! Every message also carries a `STATUS=` line for `systemctl status`.
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
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::SocketActivationError;
use crate::fd;
use crate::registry::RESERVED_PREFIX;

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

/// While a stop drains, `EXTEND_TIMEOUT_USEC` is sent this often...
const EXTEND_PERIOD: Duration = Duration::from_secs(5);
/// ...each time asking for this much more time (at most what the drain has
/// left)...
const EXTEND_STEP: Duration = Duration::from_secs(10);
/// ...plus this margin for the exit after the drain.
const EXIT_MARGIN: Duration = Duration::from_secs(5);

/// Where notifications go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotifyTarget {
    /// A socket file.
    Path(PathBuf),
    /// A Linux abstract socket (`@name` in `NOTIFY_SOCKET`).
    Abstract(Vec<u8>),
}

/// Reads a `NOTIFY_SOCKET` value: `/path`, or `@name` for an abstract
/// socket. Other forms (e.g. `vsock:`) are not supported: `Err` says why.
pub(crate) fn parse_notify_socket(value: &OsStr) -> Result<NotifyTarget, String> {
    let bytes = value.as_bytes();
    match bytes.first() {
        Some(b'/') => Ok(NotifyTarget::Path(PathBuf::from(value))),
        Some(b'@') if bytes.len() > 1 => Ok(NotifyTarget::Abstract(bytes[1..].to_vec())),
        _ => Err(format!(
            "NOTIFY_SOCKET={value:?} is neither a socket path nor an abstract socket (@name); notifications are off"
        )),
    }
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

    /// A notifier sending to `target`.
    #[cfg(test)]
    pub(crate) fn to(target: NotifyTarget) -> Self {
        Notifier {
            target: Some(target),
        }
    }

    /// True when notifications go somewhere.
    pub(crate) fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `notification` (one datagram), without blocking. Failures are
    /// logged, never returned: systemd being unreachable must not affect
    /// the service.
    pub(crate) fn send(&self, notification: &Notification) {
        let Some(target) = &self.target else {
            return;
        };
        let message = notification.to_message();
        match send_datagram(target, message.as_bytes()) {
            Ok(()) => tracing::debug!(message = %message.replace('\n', " "), "notified systemd"),
            Err(e) => tracing::warn!(
                error = %e,
                message = %message.replace('\n', " "),
                "could not notify systemd"
            ),
        }
    }
}

fn send_datagram(target: &NotifyTarget, message: &[u8]) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    let sent = match target {
        NotifyTarget::Path(path) => socket.send_to(message, path)?,
        NotifyTarget::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(message, &addr)?
        }
    };
    if sent != message.len() {
        return Err(std::io::Error::other(format!(
            "only {sent} of {} bytes were sent",
            message.len()
        )));
    }
    Ok(())
}

/// One notification: `KEY=value` assignments, sent as one datagram.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Notification {
    assignments: Vec<(&'static str, String)>,
}

impl Notification {
    fn with(mut self, key: &'static str, value: impl ToString) -> Self {
        // One assignment per line: a newline in a value would start a new
        // (bogus) assignment.
        let value = value.to_string().replace(['\n', '\r'], " ");
        self.assignments.push((key, value));
        self
    }

    /// `READY=1`: this generation serves (start-up, or a failed restart).
    pub(crate) fn ready(status: &str) -> Self {
        Notification::default()
            .with("READY", 1)
            .with("STATUS", status)
    }

    /// `RELOADING=1` with the `CLOCK_MONOTONIC` time the restart began.
    pub(crate) fn reloading(monotonic_usec: u64, status: &str) -> Self {
        Notification::default()
            .with("RELOADING", 1)
            .with("MONOTONIC_USEC", monotonic_usec)
            .with("STATUS", status)
    }

    /// `MAINPID=<pid>` and `READY=1`: the new generation `pid` took over.
    pub(crate) fn handed_over(pid: u32, status: &str) -> Self {
        Notification::default()
            .with("MAINPID", pid)
            .with("READY", 1)
            .with("STATUS", status)
    }

    /// `STOPPING=1`, with time for the drain.
    pub(crate) fn stopping(extend: Duration, status: &str) -> Self {
        Notification::default()
            .with("STOPPING", 1)
            .with("EXTEND_TIMEOUT_USEC", extend.as_micros())
            .with("STATUS", status)
    }

    /// `EXTEND_TIMEOUT_USEC`: more time for the running drain.
    pub(crate) fn extend_timeout(extend: Duration) -> Self {
        Notification::default().with("EXTEND_TIMEOUT_USEC", extend.as_micros())
    }

    /// The datagram's text: one `KEY=value` per line.
    pub(crate) fn to_message(&self) -> String {
        let mut message = String::new();
        for (key, value) in &self.assignments {
            message.push_str(key);
            message.push('=');
            message.push_str(value);
            message.push('\n');
        }
        message
    }
}

/// `CLOCK_MONOTONIC` in microseconds, as `MONOTONIC_USEC` wants it.
pub(crate) fn monotonic_usec() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(now) => (now.tv_sec() as u64)
            .saturating_mul(1_000_000)
            .saturating_add(now.tv_nsec() as u64 / 1_000),
        Err(_) => 0,
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
        notifier.send(&Notification::extend_timeout(drain_extension(remaining)));
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
    let mut names: Vec<String> = listen_fdnames
        .map(|names| names.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    if names.len() > count {
        tracing::warn!(
            names = listen_fdnames.unwrap_or_default(),
            count,
            "LISTEN_FDNAMES has more names than LISTEN_FDS descriptors; the extra names are ignored"
        );
    }
    names.resize(count, String::new());
    for name in &mut names {
        if name.is_empty() {
            *name = UNKNOWN_NAME.to_owned();
        }
    }
    Ok(Some(names))
}

/// Takes the sockets systemd passed to this process, named as in
/// `LISTEN_FDNAMES`, and removes the `LISTEN_*` variables from the
/// environment (call it before the runtime starts threads). Only a first
/// generation adopts anything: later ones get their sockets from the
/// previous generation.
pub(crate) fn take_socket_activation(
    first_generation: bool,
) -> Result<Vec<(String, OwnedFd)>, SocketActivationError> {
    let text = |name: &str| {
        std::env::var_os(name).map(|v| v.to_str().map(str::to_owned).unwrap_or_default())
    };
    let (pid, count, names) = (
        text(ENV_LISTEN_PID),
        text(ENV_LISTEN_FDS),
        text(ENV_LISTEN_FDNAMES),
    );
    for var in [ENV_LISTEN_PID, ENV_LISTEN_FDS, ENV_LISTEN_FDNAMES] {
        std::env::remove_var(var);
    }
    if !first_generation {
        return Ok(Vec::new());
    }
    let Some(names) = parse_socket_activation(
        pid.as_deref(),
        count.as_deref(),
        names.as_deref(),
        std::process::id(),
    )?
    else {
        return Ok(Vec::new());
    };
    let count = names.len();
    let mut adopted = Vec::with_capacity(count);
    for (index, name) in names.into_iter().enumerate() {
        let raw = LISTEN_FDS_START + index as i32;
        let owned = fd::adopt_inherited(raw).map_err(|source| SocketActivationError::NotOpen {
            fd: raw,
            count,
            source,
        })?;
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
        adopted.push((name, owned));
    }
    Ok(adopted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn keys(message: &str) -> Vec<(&str, &str)> {
        message
            .lines()
            .map(|l| l.split_once('=').unwrap())
            .collect()
    }

    #[test]
    fn messages_are_newline_separated_assignments() {
        assert_eq!(
            Notification::ready("serving").to_message(),
            "READY=1\nSTATUS=serving\n"
        );
        assert_eq!(
            Notification::reloading(123_456, "restarting").to_message(),
            "RELOADING=1\nMONOTONIC_USEC=123456\nSTATUS=restarting\n"
        );
        assert_eq!(
            keys(&Notification::handed_over(42, "s").to_message()),
            vec![("MAINPID", "42"), ("READY", "1"), ("STATUS", "s")]
        );
        assert_eq!(
            Notification::stopping(Duration::from_secs(3), "bye").to_message(),
            "STOPPING=1\nEXTEND_TIMEOUT_USEC=3000000\nSTATUS=bye\n"
        );
        assert_eq!(
            Notification::extend_timeout(Duration::from_millis(1)).to_message(),
            "EXTEND_TIMEOUT_USEC=1000\n"
        );
    }

    #[test]
    fn newlines_in_values_cannot_inject_assignments() {
        let message = Notification::ready("line one\nMAINPID=1\r\n").to_message();
        assert_eq!(message, "READY=1\nSTATUS=line one MAINPID=1  \n");
    }

    #[test]
    fn notify_socket_forms() {
        assert_eq!(
            parse_notify_socket(&OsString::from("/run/systemd/notify")),
            Ok(NotifyTarget::Path(PathBuf::from("/run/systemd/notify")))
        );
        assert_eq!(
            parse_notify_socket(&OsString::from("@/org/systemd/notify")),
            Ok(NotifyTarget::Abstract(b"/org/systemd/notify".to_vec()))
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
        Notifier::to(NotifyTarget::Path(path)).send(&Notification::ready("x"));
        let mut buf = [0u8; 256];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=x\n");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("shellflip-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::to(NotifyTarget::Abstract(name.into_bytes()))
            .send(&Notification::extend_timeout(Duration::from_secs(1)));
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"EXTEND_TIMEOUT_USEC=1000000\n");
    }

    #[test]
    fn an_unreachable_socket_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let notifier = Notifier::to(NotifyTarget::Path(dir.path().join("nobody")));
        assert!(notifier.is_enabled());
        notifier.send(&Notification::ready("x"));
        assert!(!Notifier::default().is_enabled());
        Notifier::default().send(&Notification::ready("x"));
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
