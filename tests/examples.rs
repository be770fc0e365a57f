//! End-to-end tests of the HTTP and the Unix + UDP examples across restarts.

mod common;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;

/// One HTTP/1.1 GET; returns (status line, body).
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(String, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(EVENT_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.lines().next().unwrap_or_default().to_owned();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Reads one HTTP/1.1 response with a Content-Length body; returns the body.
fn read_one_response(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("content-length");
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).unwrap();
    String::from_utf8_lossy(&body).into_owned()
}

fn field(body: &str, key: &str) -> String {
    body.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key} in {body:?}"))
        .to_owned()
}

#[test]
fn http_requests_in_flight_complete_across_a_restart() {
    let mut service = Echo::start_with_binary(&example_binary("http"), &[]);
    let addr = service.addr;
    let old = service.current;
    let (status, body) = get(addr, "/").unwrap();
    assert!(status.contains("200"), "{status}");
    assert_eq!(field(&body, "requests"), "1");

    // A keep-alive connection the old generation has accepted (it answered
    // a first request on it), then a slow request in flight on it.
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let body = read_one_response(&mut conn);
    assert_eq!(field(&body, "pid"), old.pid.to_string());
    conn.write_all(b"GET /slow?ms=3000 HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let slow = std::thread::spawn(move || {
        let started = Instant::now();
        let mut response = String::new();
        let result = conn.read_to_string(&mut response).map(|_| {
            let status = response.lines().next().unwrap_or_default().to_owned();
            let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
            (status, body.unwrap_or_default())
        });
        (result, started.elapsed())
    });

    cli_restart_ok(&service);
    let new = service.next_ready();
    // The old generation may still accept for an instant after the
    // restart returns (until its accept loop sees the shutdown token):
    // ask until the new generation answers. Every answer is a 200.
    let mut from_new = None;
    wait_until("an answer from the new generation", EVENT_TIMEOUT, || {
        let (status, body) = get(addr, "/").unwrap();
        assert!(status.contains("200"), "{status}");
        let answered_by_new = field(&body, "pid") == new.pid.to_string();
        if answered_by_new {
            from_new = Some(body);
        }
        answered_by_new
    });
    let body = from_new.unwrap();
    let requests: u64 = field(&body, "requests").parse().unwrap();
    assert!(requests >= 3, "the counter was carried over: {body}");

    let (response, took) = slow.join().unwrap();
    let (status, body) = response.expect("the slow request completed");
    assert!(status.contains("200"), "{status}");
    assert_eq!(
        field(&body, "pid"),
        old.pid.to_string(),
        "served by the old generation"
    );
    assert!(took >= Duration::from_millis(2500), "{took:?}");
    assert!(
        wait_exit(old.pid, EVENT_TIMEOUT),
        "the old generation exits after its drain"
    );
}

#[test]
fn unix_and_udp_sockets_are_handed_over_together() {
    let dir = tempfile::tempdir().unwrap();
    let unix_path = dir.path().join("service.sock");
    let journal = dir.path().join("journal");
    let args: Vec<OsString> = vec![
        "--unix".into(),
        unix_path.clone().into(),
        "--udp".into(),
        "127.0.0.1:0".into(),
        "--control".into(),
        dir.path().join("control.sock").into(),
        "--journal".into(),
        journal.clone().into(),
    ];
    let mut service = Echo::start_in(dir, &example_binary("unix_udp"), &args, &[]);
    // The journal is moved away at once: only its handed-over descriptor
    // can reach it from now on (a generation that opened the path again
    // would write a new file there).
    let moved = journal.with_extension("moved");
    std::fs::rename(&journal, &moved).unwrap();
    let mut pids = Vec::new();
    let udp_addr = service.current.udp.expect("udp address in the ready line");
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
    let ask_udp = |payload: &str| -> String {
        client.send_to(payload.as_bytes(), udp_addr).unwrap();
        let mut buf = [0u8; 1024];
        let (n, _) = client.recv_from(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ask_unix = || -> String {
        let mut s = UnixStream::connect(&unix_path).unwrap();
        s.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
        let mut line = String::new();
        s.read_to_string(&mut line).unwrap();
        line
    };
    for generation in 1..=3u64 {
        let pid = service.current.pid;
        pids.push(format!("pid={pid} generation={generation}"));
        assert_eq!(service.current.udp, Some(udp_addr), "the same UDP socket");
        let answer = ask_udp("hello");
        assert_eq!(answer, format!("pid={pid} generation={generation} hello"));
        assert_eq!(ask_unix(), format!("pid={pid} generation={generation}\n"));
        if generation < 3 {
            cli_restart_ok(&service);
            service.next_ready();
            assert!(wait_exit(pid, EVENT_TIMEOUT));
        }
    }
    // Every generation wrote through the descriptor the first one opened.
    let lines = std::fs::read_to_string(&moved).unwrap();
    assert_eq!(
        lines.lines().collect::<Vec<_>>(),
        pids,
        "the journal: {lines}"
    );
    assert!(!journal.exists(), "no generation opened the path again");
}
