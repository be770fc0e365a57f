//! Live connections handed over: the sessions example keeps every client's
//! TCP connection and counter across restarts (`Context::hand_over`,
//! `Context::connections`).

mod common;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use common::*;

fn start_sessions(env: &[(&str, &str)]) -> Echo {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<OsString> = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--control".into(),
        dir.path().join("control.sock").into(),
    ];
    Echo::start_in(dir, &example_binary("sessions"), &args, env)
}

/// One client session.
struct Client {
    id: u64,
    count: u64,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn open(service: &Echo) -> Client {
        let stream = TcpStream::connect(service.addr).expect("connect");
        stream.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
        let mut reader = BufReader::new(stream);
        let line = read_line(&mut reader);
        let id = line
            .strip_prefix("session=")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("not a session line: {line:?}"));
        Client {
            id,
            count: 0,
            reader,
        }
    }

    fn send(&mut self, bytes: &str) {
        self.reader
            .get_mut()
            .write_all(bytes.as_bytes())
            .unwrap_or_else(|e| panic!("session {}: the connection was closed: {e}", self.id));
    }

    /// Reads the answer to an `incr`: checks the session and the count
    /// (one more than the last), returns the answering pid.
    fn counted(&mut self) -> u32 {
        let line = read_line(&mut self.reader);
        let mut words = line.split_whitespace();
        let id: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        let n: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        assert_eq!(id, self.id, "{line:?}");
        assert_eq!(n, self.count + 1, "session {}: {line:?}", self.id);
        self.count = n;
        words
            .find_map(|w| w.strip_prefix("pid="))
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no pid in {line:?}"))
    }

    fn incr(&mut self) -> u32 {
        self.send("incr\n");
        self.counted()
    }
}

fn read_line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => panic!("the connection was closed"),
        Ok(_) => line.trim_end().to_owned(),
        Err(e) => panic!("reading from a session: {e}"),
    }
}

/// A thousand sessions, ten restarts: not one connection is closed, every
/// counter goes on by one, and at the end every session is served by the
/// newest generation.
#[test]
fn a_thousand_sessions_cross_ten_restarts() {
    raise_open_file_limit();
    let mut service = start_sessions(&[("SHELLFLIP_PROBATION", "200ms")]);
    let mut clients: Vec<Client> = (0..1000).map(|_| Client::open(&service)).collect();
    for _ in 0..10 {
        for client in &mut clients {
            client.incr();
        }
        let old = service.current.pid;
        restart_ok(&service);
        service.next_ready();
        // The old generation hands every session over, then exits.
        assert!(wait_exit(old, EVENT_TIMEOUT), "the old generation exits");
    }
    let newest = service.current.pid;
    for client in &mut clients {
        assert_eq!(client.incr(), newest, "session {}", client.id);
        assert_eq!(client.count, 11);
    }
    let status = shellflip::client::ControlClient::status(&service.control).unwrap();
    assert_eq!(status.generation, 11);
}

/// A session handed over in the middle of a line keeps the bytes already
/// sent: the new generation completes the line.
#[test]
fn a_session_handed_over_mid_line_keeps_its_unread_bytes() {
    let mut service = start_sessions(&[("SHELLFLIP_PROBATION", "200ms")]);
    let mut client = Client::open(&service);
    assert_eq!(client.incr(), service.current.pid);
    client.send("in");
    let old = service.current.pid;
    restart_ok(&service);
    let new = service.next_ready();
    assert!(wait_exit(old, EVENT_TIMEOUT), "the old generation exits");
    client.send("cr\n");
    assert_eq!(client.counted(), new.pid);
    assert_eq!(client.incr(), new.pid);
    assert_eq!(client.count, 3);
}

/// At a stop there is no successor: sessions are served until they end
/// (or the drain timeout), never cut at once.
#[test]
fn at_a_stop_sessions_are_served_until_they_quit() {
    let service = start_sessions(&[]);
    let mut client = Client::open(&service);
    client.incr();
    let pid = service.current.pid;
    let mut stopper = shellflip::client::ControlClient::connect(&service.control).unwrap();
    stopper.request(&shellflip::control::Request::Stop).unwrap();
    // Still served, by the stopping generation.
    assert_eq!(client.incr(), pid);
    client.send("quit\n");
    assert!(wait_exit(pid, EVENT_TIMEOUT));
}

fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}
