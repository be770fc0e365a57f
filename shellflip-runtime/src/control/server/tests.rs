//! The server against raw clients and a fake supervisor.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::PathBuf;

use shellflip_control::frame::{read_frame_blocking, write_frame_blocking};
use shellflip_control::protocol::{decode_response, RestartSuccess, Status};

use super::*;

const TEST_TIMEOUT: Duration = Duration::from_secs(20);

struct TestServer {
    _dir: tempfile::TempDir,
    path: PathBuf,
    stop_accepting: CancellationToken,
    connections: TaskTracker,
    server: tokio::task::JoinHandle<()>,
    /// Every request the fake supervisor received, in order.
    handled: std::sync::mpsc::Receiver<Request>,
}

/// How the fake supervisor answers restarts.
#[derive(Clone, Copy, PartialEq)]
enum Restarts {
    /// At once, as generation + 1.
    Succeed,
    /// Never (the reply is kept): a restart that takes forever.
    Hang,
}

fn sample_status(generation: u64) -> Status {
    Status {
        pid: 42,
        generation,
        phase: shellflip_control::protocol::Phase::Serving,
        uptime_secs: 1.0,
        restarts: 0,
        failed_restarts: 0,
        last_restart: None,
        spawner_pid: None,
        generations: Vec::new(),
        state: None,
    }
}

/// Binds a control socket in a temp dir, serves it, and answers the
/// commands like a supervisor would (pid 42; stop answers `Stopping` for
/// `stop_pid`).
fn start_server(options: ServerOptions, stop_pid: u32, restarts: Restarts) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.sock");
    let (listener, _file) = bind_control_socket(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::UnixListener::from_std(listener).unwrap();
    let (commands, mut received) = mpsc::channel::<ControlCommand>(16);
    let (handled_tx, handled) = std::sync::mpsc::channel();
    tokio::spawn(async move {
        let mut generation = 1;
        let mut kept = Vec::new();
        while let Some(command) = received.recv().await {
            let _ = handled_tx.send(command.request.clone());
            let response = match command.request {
                Request::Status => Response::Status(sample_status(generation)),
                Request::Restart { .. } if restarts == Restarts::Hang => {
                    kept.push(command.reply);
                    continue;
                }
                Request::Restart { .. } => {
                    generation += 1;
                    Response::Restarted(RestartSuccess {
                        pid: 4243,
                        generation,
                        duration_ms: 1.0,
                        state: None,
                    })
                }
                Request::Stop => Response::Stopping { pid: stop_pid },
            };
            let _ = command.reply.send(response);
        }
    });
    let stop_accepting = CancellationToken::new();
    let connections = TaskTracker::new();
    let server = tokio::spawn(serve(
        listener,
        commands,
        stop_accepting.clone(),
        connections.clone(),
        options,
    ));
    TestServer {
        _dir: dir,
        path,
        stop_accepting,
        connections,
        server,
        handled,
    }
}

/// Runs blocking client code off the runtime, bounded in time.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::time::timeout(TEST_TIMEOUT, tokio::task::spawn_blocking(f))
        .await
        .expect("the client did not finish in time")
        .unwrap()
}

fn raw(path: &Path) -> StdUnixStream {
    let stream = StdUnixStream::connect(path).unwrap();
    stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    stream
}

fn send(stream: &mut StdUnixStream, request: &str) {
    write_frame_blocking(stream, request.as_bytes(), MAX_FRAME_BYTES).unwrap();
}

fn read_response(stream: &mut StdUnixStream) -> Response {
    decode_response(&read_frame_blocking(stream, MAX_FRAME_BYTES).unwrap()).unwrap()
}

/// One request on a new connection.
fn ask(path: &Path, request: &str) -> Response {
    let mut stream = raw(path);
    send(&mut stream, request);
    read_response(&mut stream)
}

fn expect_error(response: Response, needle: &str) {
    match response {
        Response::Error { message } => assert!(message.contains(needle), "{message}"),
        other => panic!("expected an error containing {needle:?}, got {other:?}"),
    }
}

fn assert_closed(stream: &mut StdUnixStream) {
    assert!(matches!(
        read_frame_blocking(stream, MAX_FRAME_BYTES),
        Err(FrameError::Eof)
    ));
}

const STATUS: &str = r#"{"op":"status"}"#;
const RESTART: &str = r#"{"op":"restart"}"#;

#[tokio::test(flavor = "multi_thread")]
async fn requests_are_answered_several_per_connection() {
    let server = start_server(SERVER_OPTIONS, 1, Restarts::Succeed);
    let path = server.path.clone();
    let generations = blocking(move || {
        let mut stream = raw(&path);
        let mut generations = Vec::new();
        for request in [STATUS, RESTART, STATUS] {
            send(&mut stream, request);
            match read_response(&mut stream) {
                Response::Status(status) => generations.push(status.generation),
                Response::Restarted(done) => generations.push(done.generation),
                other => panic!("{other:?}"),
            }
        }
        generations
    })
    .await;
    assert_eq!(generations, vec![1, 2, 2]);
    assert_eq!(
        server.handled.try_iter().collect::<Vec<_>>(),
        vec![Request::Status, Request::restart(), Request::Status]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_an_error_and_the_server_carries_on() {
    let server = start_server(SERVER_OPTIONS, 1, Restarts::Succeed);
    let path = server.path.clone();
    blocking(move || {
        // Garbage JSON in a valid frame.
        let mut stream = raw(&path);
        send(&mut stream, "\x00garbage{");
        expect_error(read_response(&mut stream), "malformed request");
        assert_closed(&mut stream);

        // An unknown op.
        expect_error(ask(&path, r#"{"op":"format_disk"}"#), "unknown variant");

        // An oversized announcement, without its body.
        let mut stream = raw(&path);
        stream.write_all(&u32::MAX.to_be_bytes()).unwrap();
        expect_error(read_response(&mut stream), "larger than the maximum");

        // Just over the limit, body included.
        let mut stream = raw(&path);
        stream
            .write_all(&(MAX_FRAME_BYTES + 1).to_be_bytes())
            .unwrap();
        let _ = stream.write_all(&vec![b' '; MAX_FRAME_BYTES as usize + 1]);
        expect_error(read_response(&mut stream), "larger than the maximum");

        // A half-written frame, then the client goes away.
        let mut stream = raw(&path);
        stream.write_all(&[0, 0, 0, 100, b'{']).unwrap();
        drop(stream);

        // An empty frame is an empty (malformed) request.
        expect_error(ask(&path, ""), "malformed request");

        // The service is fine.
        assert!(matches!(ask(&path, STATUS), Response::Status(_)));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_and_slow_clients_time_out() {
    let options = ServerOptions {
        request_timeout: Duration::from_millis(200),
        ..SERVER_OPTIONS
    };
    let server = start_server(options, 1, Restarts::Succeed);
    let path = server.path.clone();
    blocking(move || {
        let mut silent = raw(&path);
        expect_error(read_response(&mut silent), "timed out");
        assert_closed(&mut silent);

        // Sends part of a frame and stalls.
        let mut slow = raw(&path);
        slow.write_all(&[0, 0, 0, 15, b'{']).unwrap();
        expect_error(read_response(&mut slow), "timed out");

        assert!(matches!(ask(&path, STATUS), Response::Status(_)));
    })
    .await;
}

/// Issue 13: 128 silent same-uid clients locked out restart requests for
/// the whole request timeout. Now the oldest silent one makes room.
#[tokio::test(flavor = "multi_thread")]
async fn silent_clients_cannot_lock_out_a_request() {
    let options = ServerOptions {
        // Far longer than the test: nothing here may rely on it.
        request_timeout: Duration::from_secs(3600),
        ..SERVER_OPTIONS
    };
    let server = start_server(options, 1, Restarts::Succeed);
    let path = server.path.clone();
    blocking(move || {
        let mut silent: Vec<StdUnixStream> = (0..MAX_CONNECTIONS).map(|_| raw(&path)).collect();
        // They take every slot (connections are accepted in order); each
        // request still gets through at once, pushing out the silent
        // connection that has waited longest. The requesting connections
        // stay open, holding their slots.
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut stream = raw(&path);
            send(&mut stream, RESTART);
            assert!(matches!(read_response(&mut stream), Response::Restarted(_)));
            held.push(stream);
        }
        for stream in &mut silent[..3] {
            expect_error(read_response(stream), "waited longest for a request");
            assert_closed(stream);
        }
        // The others are still connected.
        silent[3].set_nonblocking(true).unwrap();
        let error = silent[3].read(&mut [0u8; 1]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_with_a_request_in_service_are_never_pushed_out() {
    let options = ServerOptions {
        max_connections: 2,
        ..SERVER_OPTIONS
    };
    let server = start_server(options, 1, Restarts::Hang);
    let path = server.path.clone();
    blocking(move || {
        // Two restarts that never finish hold both slots...
        let mut first = raw(&path);
        send(&mut first, RESTART);
        let mut second = raw(&path);
        send(&mut second, RESTART);
        for _ in 0..2 {
            server.handled.recv_timeout(TEST_TIMEOUT).unwrap();
        }
        // ...so a third connection is refused, not served at their expense.
        let mut third = raw(&path);
        expect_error(read_response(&mut third), "too many control connections");
        // The two are still waiting for their outcome.
        first.set_nonblocking(true).unwrap();
        let error = first.read(&mut [0u8; 1]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_connection_between_requests_can_be_pushed_out() {
    let options = ServerOptions {
        max_connections: 1,
        request_timeout: Duration::from_secs(3600),
    };
    let server = start_server(options, 1, Restarts::Succeed);
    let path = server.path.clone();
    blocking(move || {
        let mut idle = raw(&path);
        send(&mut idle, STATUS);
        assert!(matches!(read_response(&mut idle), Response::Status(_)));
        assert!(matches!(ask(&path, STATUS), Response::Status(_)));
        expect_error(read_response(&mut idle), "waited longest for a request");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn many_concurrent_clients_are_all_answered() {
    let server = start_server(SERVER_OPTIONS, 1, Restarts::Succeed);
    let mut clients = Vec::new();
    for _ in 0..300 {
        let path = server.path.clone();
        clients.push(tokio::task::spawn_blocking(move || {
            let mut stream = raw(&path);
            // Refused before the answer was written: a closed connection.
            if stream
                .write_all(&encode_frame(STATUS.as_bytes(), MAX_FRAME_BYTES).unwrap())
                .is_err()
            {
                return;
            }
            match read_frame_blocking(&mut stream, MAX_FRAME_BYTES) {
                Ok(payload) => match decode_response(&payload).unwrap() {
                    Response::Status(status) => assert_eq!(status.pid, 42),
                    Response::Error { message } => {
                        assert!(message.contains("control connections"), "{message}")
                    }
                    other => panic!("{other:?}"),
                },
                Err(error) => assert!(error.is_closed(), "{error}"),
            }
        }));
    }
    tokio::time::timeout(TEST_TIMEOUT, async {
        for client in clients {
            client.await.unwrap();
        }
    })
    .await
    .unwrap();
    let path = server.path.clone();
    assert!(matches!(
        blocking(move || ask(&path, STATUS)).await,
        Response::Status(_)
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_carry_the_service_credentials() {
    use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};

    let server = start_server(SERVER_OPTIONS, 1, Restarts::Succeed);
    let path = server.path.clone();
    let pid = blocking(move || {
        let mut stream = raw(&path);
        setsockopt(&stream, sockopt::PassCred, &true).unwrap();
        send(&mut stream, STATUS);
        let mut buf = [0u8; 4];
        let mut space = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        let message = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .unwrap();
        let pid = message.cmsgs().unwrap().find_map(|cmsg| match cmsg {
            ControlMessageOwned::ScmCredentials(credentials) => Some(credentials.pid()),
            _ => None,
        });
        // The rest of the answer is still a frame.
        let len = u32::from_be_bytes(buf) as usize;
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).unwrap();
        assert!(matches!(decode_response(&payload), Ok(Response::Status(_))));
        pid
    })
    .await;
    assert_eq!(pid, Some(std::process::id() as i32));
}

#[tokio::test(flavor = "multi_thread")]
async fn closed_command_channel_means_shutting_down() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.sock");
    let (listener, _file) = bind_control_socket(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::UnixListener::from_std(listener).unwrap();
    let (commands, received) = mpsc::channel::<ControlCommand>(1);
    drop(received);
    tokio::spawn(serve(
        listener,
        commands,
        CancellationToken::new(),
        TaskTracker::new(),
        SERVER_OPTIONS,
    ));
    let response = blocking(move || ask(&path, STATUS)).await;
    expect_error(response, "shutting down");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_stop_accepting_ends_serve() {
    let server = start_server(SERVER_OPTIONS, 1, Restarts::Succeed);
    // An idle connection that already had an answer is let go too.
    let path = server.path.clone();
    let mut idle = blocking(move || {
        let mut stream = raw(&path);
        send(&mut stream, STATUS);
        assert!(matches!(read_response(&mut stream), Response::Status(_)));
        stream
    })
    .await;

    server.stop_accepting.cancel();
    tokio::time::timeout(TEST_TIMEOUT, server.server)
        .await
        .expect("serve did not return after stop_accepting")
        .unwrap();
    server.connections.close();
    tokio::time::timeout(TEST_TIMEOUT, server.connections.wait())
        .await
        .expect("connections did not finish");
    let path = server.path.clone();
    blocking(move || {
        assert_closed(&mut idle);
        // The listener is closed: the file is now a stale socket.
        let error = StdUnixStream::connect(&path).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
    })
    .await;
}

#[test]
fn stop_holds_the_connection_until_the_process_exits() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(async { start_server(SERVER_OPTIONS, 77, Restarts::Succeed) });

    let mut stream = raw(&server.path);
    send(&mut stream, r#"{"op":"stop"}"#);
    assert_eq!(read_response(&mut stream), Response::Stopping { pid: 77 });

    // The drain does not wait for the held connection...
    server.stop_accepting.cancel();
    server.connections.close();
    runtime.block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, server.connections.wait())
            .await
            .expect("the drain waited for the stop connection");
    });
    // ...which is still open.
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let error = stream.read(&mut byte).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
    stream.set_nonblocking(false).unwrap();

    // Not even the runtime's end closes it (a task holding it would, a
    // moment before the process exits): only the exit does.
    drop(runtime);
    stream.set_nonblocking(true).unwrap();
    let error = stream.read(&mut byte).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
}

#[test]
fn peers_other_than_our_user_and_root_are_refused() {
    assert!(peer_allowed(1000, 1000));
    assert!(peer_allowed(0, 1000));
    assert!(peer_allowed(0, 0));
    assert!(!peer_allowed(1001, 1000));
    assert!(!peer_allowed(1000, 0));
}
