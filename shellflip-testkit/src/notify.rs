//! The service manager's side of the notify protocol, played by a test: a
//! `NOTIFY_SOCKET` datagram socket in a temp dir whose messages the test
//! reads and checks.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use crate::wait::EVENT_TIMEOUT;

/// The test's side of `NOTIFY_SOCKET`.
pub struct FakeSystemd {
    socket: UnixDatagram,
    /// The socket's path: the service's `NOTIFY_SOCKET`.
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

/// One notification: its `KEY=value` assignments, in order.
pub type Message = Vec<(String, String)>;

impl FakeSystemd {
    /// Binds the socket.
    ///
    /// # Panics
    ///
    /// If it cannot be bound.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
        FakeSystemd {
            socket,
            path,
            _dir: dir,
        }
    }

    /// The next datagram, as its `KEY=value` assignments in order.
    ///
    /// # Panics
    ///
    /// If none arrives within [`EVENT_TIMEOUT`].
    pub fn next(&self) -> Message {
        let mut buf = vec![0u8; 4096];
        let n = self
            .socket
            .recv(&mut buf)
            .expect("a notification within the timeout");
        let text = String::from_utf8(buf[..n].to_vec()).expect("UTF-8 notification");
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l
                    .split_once('=')
                    .unwrap_or_else(|| panic!("not an assignment: {l:?}"));
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    /// The next datagram, which must assign exactly `keys`, in order.
    ///
    /// # Panics
    ///
    /// If the keys differ.
    pub fn next_with(&self, keys: &[&str]) -> Message {
        let message = self.next();
        assert_eq!(
            message.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            keys,
            "{message:?}"
        );
        message
    }

    /// Nothing more was sent.
    ///
    /// # Panics
    ///
    /// If something was sent.
    pub fn assert_silent(&self) {
        self.socket.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok(n) => panic!(
                "unexpected notification {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) => panic!("notify socket: {e}"),
        }
    }
}

/// The value of `key` in `message`.
///
/// # Panics
///
/// If `key` is missing.
pub fn value<'a>(message: &'a Message, key: &str) -> &'a str {
    message
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{key} missing in {message:?}"))
}

impl Default for FakeSystemd {
    fn default() -> Self {
        FakeSystemd::new()
    }
}

impl FakeSystemd {
    /// Waits for the next notification with `key` (skipping others) and
    /// returns it.
    ///
    /// # Panics
    ///
    /// If none arrives within [`EVENT_TIMEOUT`] each.
    pub fn next_having(&self, key: &str) -> Message {
        loop {
            let message = self.next();
            if message.iter().any(|(k, _)| k == key) {
                return message;
            }
        }
    }
}
