//! `shellflip::http` end to end: the HTTP example (examples/http.rs)
//! restarted under HTTP load from real clients — hyper's HTTP/1.1 client,
//! the h2 crate's HTTP/2 client, a tokio-tungstenite WebSocket — with the
//! races of a drain provoked on purpose: a connection the old generation
//! accepted but whose request comes only after its drain began, an idle
//! keep-alive connection used again after that, an HTTP/2 connection whose
//! preface comes after that.
//!
//! Synchronised on events: a connection accepted by the server
//! (`wait_accepted`: its socket got an inode), the `ready` line of each generation, the `draining`
//! line the example prints when its drain begins.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// Bound on the load of one test; the test stops it much earlier.
const LOAD_TIME: Duration = Duration::from_secs(240);

fn start_http() -> Echo {
    // A short probation: these tests are about the drain that follows it
    // (a 2 s request sent before a restart is still in flight when the old
    // generation starts draining).
    Echo::start_with_binary(&example_binary("http"), &[("SHELLFLIP_PROBATION", "200ms")])
}

/// Restarts `service`, waits for the new generation's ready line and for
/// the old one's drain to begin; returns the new pid.
fn restart_until_draining(service: &mut Echo) -> u32 {
    let old = service.current.pid;
    let (pid, _) = restart_ok(service);
    assert_eq!(service.next_ready().pid, pid);
    wait_stderr(service, &format!("draining pid={old} "));
    pid
}

/// A connection the current generation has accepted, nothing sent on it.
fn accepted_connection(service: &Echo) -> RawHttp {
    let connection = RawHttp::connect(service.addr).unwrap();
    wait_accepted(connection.stream());
    connection
}

/// Sends `GET /` on a connection the old generation holds, after its drain
/// began: it must answer, with `Connection: close`, then close.
fn answered_by_draining(connection: &mut RawHttp, old: u32, service: &Echo, what: &str) {
    let response = connection.get("/").unwrap_or_else(|e| {
        panic!(
            "{what}: a request sent after the drain began was not answered: {e}\n{}",
            service.stderr()
        )
    });
    assert_eq!(response.status, 200, "{what}: {response:?}");
    assert_eq!(
        response.pid(),
        old,
        "{what}: answered by the old generation"
    );
    assert!(
        response.connection_close(),
        "{what}: sent during the drain, so `Connection: close`: {response:?}"
    );
    assert!(
        connection.closed_by_server(),
        "{what}: closed after that response"
    );
}

#[test]
fn fresh_connections_lose_nothing_across_ten_restarts() {
    let mut service = start_http();
    let load = HttpLoad::start(service.addr, 4, 0, "/", LOAD_TIME);
    for restart in 1..=10 {
        let old = service.current.pid;
        load.wait_answers_from(old, 20);
        // hyper issue #2730: accepted, its first request not read yet when
        // the drain begins. It must be served, not closed.
        let mut accepted = accepted_connection(&service);
        let new = restart_until_draining(&mut service);
        answered_by_draining(
            &mut accepted,
            old,
            &service,
            &format!("restart {restart}, accepted connection"),
        );
        load.wait_answers_from(new, 20);
        assert!(
            wait_exit(old, EVENT_TIMEOUT),
            "restart {restart}: the old generation exits once drained"
        );
    }
    let report = load.stop();
    report.assert_no_failures(&service.stderr());
    assert!(report.ok() >= 400, "{} requests", report.ok());
}

#[test]
fn keep_alive_clients_lose_nothing_across_ten_restarts() {
    let mut service = start_http();
    let load = HttpLoad::start(service.addr, 0, 4, "/", LOAD_TIME);
    for restart in 1..=10 {
        let old = service.current.pid;
        load.wait_answers_from(old, 20);
        // A keep-alive connection, idle when the drain begins, used again
        // after: not closed under the client's feet, answered.
        let mut idle = RawHttp::connect(service.addr).unwrap();
        let first = idle.get("/").unwrap();
        assert_eq!(first.pid(), old);
        assert!(!first.connection_close(), "{first:?}");
        let new = restart_until_draining(&mut service);
        answered_by_draining(
            &mut idle,
            old,
            &service,
            &format!("restart {restart}, idle keep-alive connection"),
        );
        load.wait_answers_from(new, 20);
        assert!(
            wait_exit(old, EVENT_TIMEOUT),
            "restart {restart}: the old generation exits once its keep-alive clients moved"
        );
    }
    let report = load.stop();
    report.assert_no_failures(&service.stderr());
    // Each client was told to move at each restart (at least once a
    // restart, by one of them).
    let told = report.samples.iter().filter(|s| s.connection_close).count();
    assert!(told >= 10, "{told} responses with Connection: close");
}

#[test]
fn a_slow_request_in_flight_completes_across_a_restart() {
    let mut service = start_http();
    let old = service.current.pid;
    // A keep-alive connection with a slow request in flight.
    let mut keep_alive = RawHttp::connect(service.addr).unwrap();
    assert_eq!(keep_alive.get("/").unwrap().pid(), old);
    keep_alive.send("/slow?ms=2000").unwrap();
    let sent = Instant::now();
    let slow = std::thread::spawn(move || {
        let response = keep_alive.read_response();
        let closed = response.is_ok() && keep_alive.closed_by_server();
        (response, sent.elapsed(), closed)
    });
    let mut accepted = accepted_connection(&service);

    let new = restart_until_draining(&mut service);
    answered_by_draining(&mut accepted, old, &service, "accepted connection");
    // From now on the old generation accepts nothing: a new connection is
    // the new generation's, while the slow request is still in flight.
    let mut fresh = RawHttp::connect(service.addr).unwrap();
    assert_eq!(fresh.get("/").unwrap().pid(), new);

    let (response, took, closed) = slow.join().unwrap();
    let response =
        response.unwrap_or_else(|e| panic!("the slow request was cut: {e}\n{}", service.stderr()));
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.pid(), old, "served by the old generation");
    assert!(response.connection_close(), "{response:?}");
    assert!(closed, "the connection closes after the slow response");
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    assert!(
        wait_exit(old, EVENT_TIMEOUT),
        "the old generation exits after its drain"
    );
}

type H2 = h2::client::SendRequest<Bytes>;

/// An HTTP/2 (prior knowledge) connection on `stream`; the connection runs
/// on the runtime until it ends (its result in the handle).
async fn h2_handshake(
    stream: std::net::TcpStream,
) -> (H2, tokio::task::JoinHandle<Result<(), h2::Error>>) {
    stream.set_nonblocking(true).unwrap();
    let stream = tokio::net::TcpStream::from_std(stream).unwrap();
    let (sender, connection) = h2::client::handshake(stream).await.unwrap();
    (sender, tokio::spawn(connection))
}

/// `GET path` on an HTTP/2 connection: status and body.
async fn h2_get(sender: H2, path: &str) -> Result<(StatusCode, String), h2::Error> {
    let mut sender = sender.ready().await?;
    let request = Request::get(format!("http://shellflip.test{path}"))
        .body(())
        .unwrap();
    let (response, _) = sender.send_request(request, true)?;
    let response = response.await?;
    let status = response.status();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

fn pid_of(body: &str) -> u32 {
    shellflip_testkit::http::field(body, "pid")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {body:?}"))
}

/// Runs `future` on `rt`, bounded by [`EVENT_TIMEOUT`].
fn within<F: std::future::Future>(
    rt: &tokio::runtime::Runtime,
    what: &str,
    future: F,
) -> F::Output {
    rt.block_on(async { tokio::time::timeout(EVENT_TIMEOUT, future).await })
        .unwrap_or_else(|_| panic!("{what}: not within {EVENT_TIMEOUT:?}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// True when opening a stream on `sender` is refused because the server
/// sent a GOAWAY.
fn refused_by_goaway(rt: &tokio::runtime::Runtime, sender: H2) -> bool {
    match rt.block_on(h2_get(sender, "/")) {
        Ok(answer) => panic!("a new stream after GOAWAY was answered: {answer:?}"),
        Err(e) => e.is_go_away(),
    }
}

#[test]
fn http2_clients_get_goaway_and_their_streams_in_flight_complete() {
    let rt = runtime();
    let mut service = start_http();
    let addr: SocketAddr = service.addr;
    let old = service.current.pid;
    // A: an HTTP/2 connection with a slow stream in flight.
    let (a, a_connection) = rt.block_on(h2_handshake(std::net::TcpStream::connect(addr).unwrap()));
    let (status, body) = rt.block_on(h2_get(a.clone(), "/")).unwrap();
    assert_eq!((status, pid_of(&body)), (StatusCode::OK, old));
    let slow = rt.spawn(h2_get(a.clone(), "/slow?ms=2000"));
    // B: accepted by the old generation; its preface comes after the drain
    // began (hyper's graceful shutdown would close it unread).
    let b_stream = std::net::TcpStream::connect(addr).unwrap();
    wait_accepted(&b_stream);

    let new = restart_until_draining(&mut service);
    let (b, b_connection) = rt.block_on(h2_handshake(b_stream));
    let answer = rt.block_on(h2_get(b.clone(), "/")).unwrap_or_else(|e| {
        panic!(
            "a stream on a connection accepted before the drain was not answered: {e}\n{}",
            service.stderr()
        )
    });
    assert_eq!((answer.0, pid_of(&answer.1)), (StatusCode::OK, old));
    // B is told GOAWAY, and the server closes it.
    let ended = within(&rt, "connection B ends after its GOAWAY", b_connection).unwrap();
    assert!(ended.is_ok(), "connection B: {ended:?}");
    assert!(refused_by_goaway(&rt, b), "B was told GOAWAY");

    // A's slow stream completes, then A is closed too.
    let (status, body) = rt
        .block_on(slow)
        .unwrap()
        .unwrap_or_else(|e| panic!("the slow stream was cut: {e}\n{}", service.stderr()));
    assert_eq!((status, pid_of(&body)), (StatusCode::OK, old));
    assert!(refused_by_goaway(&rt, a), "A was told GOAWAY");
    let ended = within(&rt, "connection A ends after its streams", a_connection).unwrap();
    assert!(ended.is_ok(), "connection A: {ended:?}");

    // The client's next connection is the new generation's.
    let (c, _) = rt.block_on(h2_handshake(std::net::TcpStream::connect(addr).unwrap()));
    let (status, body) = rt.block_on(h2_get(c, "/")).unwrap();
    assert_eq!((status, pid_of(&body)), (StatusCode::OK, new));
    assert!(
        wait_exit(old, EVENT_TIMEOUT),
        "the old generation exits after its drain"
    );
}

#[test]
fn a_websocket_gets_the_close_frame_the_service_sends_on_drain() {
    let rt = runtime();
    let mut service = start_http();
    let addr = service.addr;
    let old = service.current.pid;
    let stream = rt.block_on(tokio::net::TcpStream::connect(addr)).unwrap();
    let (mut socket, _) = rt
        .block_on(tokio_tungstenite::client_async(
            format!("ws://{addr}/ws"),
            stream,
        ))
        .unwrap();
    let next = |socket: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>| {
        within(&rt, "a message", socket.next())
    };
    rt.block_on(socket.send(Message::text("hello"))).unwrap();
    assert_eq!(next(&mut socket).unwrap().unwrap(), Message::text("hello"));
    // A message the handler is busy with when the drain begins.
    rt.block_on(socket.send(Message::text("sleep 2000")))
        .unwrap();

    restart_until_draining(&mut service);
    assert!(is_alive(old), "the drain waits for the WebSocket");
    let echoed = next(&mut socket)
        .unwrap_or_else(|| panic!("closed before the echo\n{}", service.stderr()))
        .unwrap_or_else(|e| panic!("cut before the echo: {e}\n{}", service.stderr()));
    assert_eq!(echoed, Message::text("sleep 2000"), "the message at hand");
    match next(&mut socket) {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(frame.code, CloseCode::Away);
            assert_eq!(frame.reason.as_str(), "restarting");
        }
        other => panic!("expected the close frame, got {other:?}"),
    }
    // tungstenite answers the close; the server then ends the connection.
    match next(&mut socket) {
        None => {}
        Some(Ok(message)) => panic!("a message after the close frame: {message:?}"),
        Some(Err(e)) => panic!("the closing handshake failed: {e}"),
    }
    assert!(
        wait_exit(old, EVENT_TIMEOUT),
        "the old generation exits once the WebSocket is closed"
    );
}
