//! The client against fake services (threads of this test process).

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::thread;

use crate::frame::{encode_frame, read_frame_blocking};
use crate::protocol::{decode_request, encode_response, FailureKind, Phase};

use super::*;

const TEST_TIMEOUT: Duration = Duration::from_secs(20);
const SHORT: Duration = Duration::from_millis(200);

/// A socket in a temp dir served by `serve`, which gets the first
/// connection.
fn fake_service(
    serve: impl FnOnce(UnixStream) + Send + 'static,
) -> (tempfile::TempDir, PathBuf, thread::JoinHandle<()>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("svc.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
        serve(stream);
    });
    (dir, path, server)
}

fn read_request(stream: &mut UnixStream) -> Request {
    let payload = read_frame_blocking(stream, MAX_FRAME_BYTES).unwrap();
    decode_request(&payload).unwrap()
}

fn answer(stream: &mut UnixStream, response: Response) {
    let frame = encode_frame(&encode_response(response), MAX_FRAME_BYTES).unwrap();
    stream.write_all(&frame).unwrap();
}

/// Waits until the client has gone (its end-of-file).
fn until_client_leaves(stream: &mut UnixStream) {
    let _ = stream.read(&mut [0u8; 1]);
}

#[test]
fn no_service_is_reported_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing.sock");
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let file = dir.path().join("file.sock");
    fs::write(&file, "").unwrap();
    for (path, why) in [
        (&missing, "no such file"),
        (&stale, "connection refused"),
        (&file, "not a socket"),
    ] {
        let error = ControlClient::connect(path).unwrap_err();
        assert!(
            matches!(error.kind, ClientErrorKind::NoService { .. }),
            "{error:?}"
        );
        assert_eq!(&error.path, path);
        let message = error.to_string();
        assert!(
            message.starts_with("no service is listening on"),
            "{message}"
        );
        assert!(message.contains(why), "{message}");
        assert!(message.contains("is it running"), "{message}");
    }
}

#[test]
fn answers_come_with_the_answering_process() {
    let (_dir, path, server) = fake_service(|mut stream| {
        assert_eq!(read_request(&mut stream), Request::Status);
        answer(
            &mut stream,
            Response::Status(Status {
                pid: 1,
                generation: 4,
                phase: Phase::Serving,
                uptime_secs: 1.0,
                restarts: 3,
                failed_restarts: 0,
                last_restart: None,
                spawner_pid: None,
                generations: Vec::new(),
                state: None,
            }),
        );
        until_client_leaves(&mut stream);
    });
    let mut client = ControlClient::connect(&path).unwrap();
    assert_eq!(client.answered_by(), None);
    client.set_timeout(Some(TEST_TIMEOUT));
    let status = client.status_request().unwrap();
    // The "service" says pid 1 (its own view); the kernel says who it is
    // from here: this test process.
    assert_eq!(status.pid, 1);
    if cfg!(target_os = "linux") {
        assert_eq!(client.answered_by(), Some(std::process::id()));
    }
    drop(client);
    server.join().unwrap();
}

#[test]
fn a_silent_service_times_out_saying_what_is_known() {
    let (_dir, path, server) = fake_service(|mut stream| {
        read_request(&mut stream);
        until_client_leaves(&mut stream);
    });
    let mut client = ControlClient::connect(&path).unwrap();
    client.set_timeout(Some(SHORT));
    let error = client.status_request().unwrap_err();
    assert!(
        matches!(
            error.kind,
            ClientErrorKind::Timeout {
                waiting: Waiting::Answer,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "connected, but no answer within 200ms: the service may be stopped (SIGSTOP) or its \
         first generation not ready yet"
    );
    drop(client);
    server.join().unwrap();
}

#[test]
fn a_service_that_never_accepts_times_out_too() {
    // A listening socket nobody accepts from: what a first generation that
    // has not called ready() looks like.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("svc.sock");
    let _listener = UnixListener::bind(&path).unwrap();
    let mut client = ControlClient::connect(&path).unwrap();
    client.set_timeout(Some(SHORT));
    let error = client.request(&Request::restart()).unwrap_err();
    assert!(
        matches!(error.kind, ClientErrorKind::Timeout { after, .. } if after == SHORT),
        "{error:?}"
    );
}

#[test]
fn a_refusal_written_before_the_close_is_the_answer() {
    let (_dir, path, server) = fake_service(|mut stream| {
        answer(&mut stream, Response::error("too many control connections"));
    });
    let mut client = ControlClient::connect(&path).unwrap();
    // Answered and closed before the request is even sent.
    server.join().unwrap();
    client.set_timeout(Some(TEST_TIMEOUT));
    match client.request(&Request::Status) {
        Ok(Response::Error { message }) => assert!(message.contains("too many"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn broken_answers_are_errors_with_their_cause() {
    // Cut in the middle, too large, not JSON of a response.
    let cases: [(&[u8], &str); 3] = [
        (
            &[0, 0, 0, 50, b'{'],
            "closed the connection while reading the answer",
        ),
        (&[0xff, 0xff, 0xff, 0xff], "larger than the maximum"),
        (&[0, 0, 0, 2, b'{', b'}'], "not understood"),
    ];
    for (bytes, needle) in cases {
        let (_dir, path, server) = fake_service(move |mut stream| {
            read_request(&mut stream);
            stream.write_all(bytes).unwrap();
        });
        let mut client = ControlClient::connect(&path).unwrap();
        client.set_timeout(Some(TEST_TIMEOUT));
        let error = client.request(&Request::Status).unwrap_err();
        server.join().unwrap();
        assert!(error.to_string().contains(needle), "{needle}: {error}");
    }
}

#[test]
fn a_refused_restart_keeps_its_kind() {
    let (_dir, path, server) = fake_service(|mut stream| {
        assert_eq!(read_request(&mut stream), Request::restart());
        answer(
            &mut stream,
            Response::RestartFailed {
                kind: FailureKind::HandedOver,
                reason: "handed over".into(),
            },
        );
    });
    let mut client = ControlClient::connect(&path).unwrap();
    client.set_timeout(Some(TEST_TIMEOUT));
    match client.request(&Request::restart()).unwrap() {
        Response::RestartFailed { kind, .. } => assert!(kind.is_temporary()),
        other => panic!("{other:?}"),
    }
    server.join().unwrap();
}

#[test]
fn stop_and_wait_returns_at_the_end_of_the_connection() {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (_dir, path, server) = fake_service(move |mut stream| {
        assert_eq!(read_request(&mut stream), Request::Stop);
        // Its own pid in its own namespace: not a number to look up here.
        answer(&mut stream, Response::Stopping { pid: 2 });
        // "Drains", then "exits": the connection closes.
        released.recv().unwrap();
    });
    let client = thread::spawn(move || ControlClient::stop_and_wait(&path, TEST_TIMEOUT));
    release.send(()).unwrap();
    server.join().unwrap();
    let stopped = client.join().unwrap().unwrap();
    if cfg!(target_os = "linux") {
        assert_eq!(stopped, std::process::id());
    }
}

#[test]
fn stop_and_wait_times_out_while_the_service_lives() {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (_dir, path, server) = fake_service(move |mut stream| {
        read_request(&mut stream);
        answer(&mut stream, Response::Stopping { pid: 2 });
        released.recv().unwrap();
    });
    let error = ControlClient::stop_and_wait(&path, SHORT).unwrap_err();
    release.send(()).unwrap();
    server.join().unwrap();
    assert!(
        matches!(
            error.kind,
            ClientErrorKind::Timeout {
                waiting: Waiting::Exit { .. },
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("accepted the stop"), "{message}");
    assert!(message.contains("within 200ms"), "{message}");
}

#[test]
fn stop_and_wait_does_not_wait_long_for_the_answer() {
    let (_dir, path, server) = fake_service(|mut stream| {
        read_request(&mut stream);
        until_client_leaves(&mut stream);
    });
    let error = ControlClient::stop_and_wait(&path, SHORT).unwrap_err();
    assert!(
        matches!(
            error.kind,
            ClientErrorKind::Timeout {
                waiting: Waiting::Answer,
                ..
            }
        ),
        "{error:?}"
    );
    server.join().unwrap();
}

#[test]
fn every_error_names_its_socket_and_keeps_its_cause() {
    use std::error::Error as _;

    let path = PathBuf::from("/run/app.sock");
    let io = || io::Error::from_raw_os_error(libc::ENOENT);
    let truncated = FrameError::Truncated {
        part: crate::frame::FramePart::Payload,
        got: 1,
        expected: 50,
    };
    let kinds = [
        ClientErrorKind::NoService { source: io() },
        ClientErrorKind::PermissionDenied { source: io() },
        ClientErrorKind::Io {
            context: "could not read the answer",
            source: io(),
        },
        ClientErrorKind::Closed {
            doing: "reading the answer",
            source: Some(truncated),
        },
        ClientErrorKind::Frame {
            source: FrameError::TooLarge {
                len: 1 << 20,
                max: 1,
            },
        },
        ClientErrorKind::NotUnderstood {
            source: decode_request(b"{}").map(|_| ()).unwrap_err(),
        },
        ClientErrorKind::Unexpected {
            answer: Box::new(Response::Stopping { pid: 1 }),
        },
        ClientErrorKind::Refused {
            message: "too many control connections".into(),
        },
    ];
    for kind in kinds {
        let has_cause = kind.source().is_some();
        let short = kind.to_string();
        let error = ClientError {
            path: path.clone(),
            kind,
        };
        let message = error.to_string();
        assert!(message.contains("/run/app.sock"), "{message}");
        // The kind is the error's source, its own cause the kind's.
        let source = error.source().map(ToString::to_string);
        assert_eq!(source.as_deref(), Some(short.as_str()), "{message}");
        assert_eq!(
            error.source().and_then(|kind| kind.source()).is_some(),
            has_cause,
            "{message}"
        );
    }
    // A timeout is said right after the command that named the socket.
    let timeout = ClientError {
        path,
        kind: ClientErrorKind::Timeout {
            waiting: Waiting::Send,
            after: SHORT,
        },
    };
    assert!(
        timeout
            .to_string()
            .starts_with("connected, but the service did not take the request within 200ms"),
        "{timeout}"
    );
}
