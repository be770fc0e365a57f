//! Error paths of the `shellflip` command-line tool: no service at the
//! socket (exit 2), invalid arguments (exit 2), and a service that refuses
//! or answers nonsense (exit 1). The success paths are exercised by the
//! end-to-end tests against real services.

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Output};
use std::thread;
use std::time::Duration;

use shellflip_control::frame::{read_frame_blocking, write_frame_blocking};
use shellflip_control::protocol::{
    decode_request, FailureKind, Request, Response, MAX_FRAME_BYTES,
};

const BIN: &str = env!("CARGO_BIN_EXE_shellflip");

fn shellflip(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("could not run the shellflip binary")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Serves one connection on `path`: reads one request, checks it is
/// `expected`, and answers with `answer` (raw JSON payload).
fn answer_once(path: &Path, expected: Request, answer: Vec<u8>) -> thread::JoinHandle<()> {
    let listener = UnixListener::bind(path).unwrap();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let request =
            decode_request(&read_frame_blocking(&mut stream, MAX_FRAME_BYTES).unwrap()).unwrap();
        assert_eq!(request, expected);
        write_frame_blocking(&mut stream, &answer, MAX_FRAME_BYTES).unwrap();
    })
}

fn json(response: &Response) -> Vec<u8> {
    serde_json::to_vec(response).unwrap()
}

#[test]
fn no_service_exits_2_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nothing.sock");
    let socket = socket.to_str().unwrap();
    for (args, command) in [
        (vec!["restart", socket], "restart"),
        (vec!["restart", socket, "--timeout", "5s"], "restart"),
        (vec!["status", socket], "status"),
        (vec!["status", socket, "--json"], "status"),
        (vec!["stop", socket], "stop"),
    ] {
        let output = shellflip(&args);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {message}");
        assert!(
            message.starts_with(&format!(
                "{command} failed: no service is listening on {socket}"
            )),
            "{message}"
        );
        assert!(message.contains("is it running"), "{message}");
        assert!(stdout(&output).is_empty());
    }
}

#[test]
fn stale_socket_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("stale.sock");
    drop(UnixListener::bind(&socket).unwrap());
    let output = shellflip(&["status", socket.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("connection refused"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn help_explains_the_commands() {
    let output = shellflip(&["--help"]);
    assert!(output.status.success());
    let text = stdout(&output);
    for needle in ["restart", "status", "stop", "control socket", "Exit status"] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }

    let output = shellflip(&["restart", "--help"]);
    assert!(output.status.success());
    let text = stdout(&output);
    for needle in ["SOCKET", "--timeout", "ready timeout", "keeps serving"] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }

    let output = shellflip(&["status", "--help"]);
    assert!(stdout(&output).contains("--json"));
    let output = shellflip(&["stop", "--help"]);
    assert!(stdout(&output).contains("drain"));
}

#[test]
fn bad_arguments_exit_2_with_usage() {
    for (args, needle) in [
        (&[][..], "Usage"),
        (&["frobnicate"][..], "unrecognized subcommand"),
        (&["restart"][..], "SOCKET"),
        (
            &["restart", "/x.sock", "--timeout", "banana"][..],
            "expected a duration",
        ),
        (
            &["restart", "/x.sock", "--timeout", "0"][..],
            "greater than zero",
        ),
        (&["stop", "/x.sock", "--timeout"][..], "DURATION"),
        (&["status", "/x.sock", "--bogus"][..], "--bogus"),
        (&["status", "/a.sock", "/b.sock"][..], "unexpected argument"),
    ] {
        let output = shellflip(args);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {message}");
        assert!(
            message.contains(needle),
            "{args:?}: {needle:?} missing from {message}"
        );
    }
}

#[test]
fn restart_in_progress_exits_75_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("svc.sock");
    let server = answer_once(
        &socket,
        Request::restart(),
        json(&Response::RestartFailed {
            kind: FailureKind::InProgress,
            reason: "a restart is already in progress; wait for its outcome and try again".into(),
        }),
    );
    let output = shellflip(&["restart", socket.to_str().unwrap()]);
    server.join().unwrap();
    // Was 1; "try again" has its own exit status now.
    assert_eq!(output.status.code(), Some(75));
    let message = stderr(&output);
    assert!(message.starts_with("restart failed: "), "{message}");
    assert!(message.contains("in progress"), "{message}");
    assert!(stdout(&output).is_empty());
}

#[test]
fn failed_restart_exits_1_naming_the_child_failure() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("svc.sock");
    let reason = "the new generation (pid 99) exited with status 3 before it was ready";
    let server = answer_once(
        &socket,
        Request::restart(),
        json(&Response::RestartFailed {
            kind: FailureKind::Failed,
            reason: reason.into(),
        }),
    );
    let output = shellflip(&["restart", socket.to_str().unwrap()]);
    server.join().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output).trim_end(),
        format!("restart failed: {reason}")
    );
}

#[test]
fn service_errors_and_nonsense_exit_1() {
    let dir = tempfile::tempdir().unwrap();

    let socket = dir.path().join("refusing.sock");
    let server = answer_once(
        &socket,
        Request::Status,
        json(&Response::error("permission denied: uid 0 only")),
    );
    let output = shellflip(&["status", socket.to_str().unwrap()]);
    server.join().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("permission denied"),
        "{}",
        stderr(&output)
    );

    let socket = dir.path().join("nonsense.sock");
    let server = answer_once(&socket, Request::Stop, b"{\"what\":1}".to_vec());
    let output = shellflip(&["stop", socket.to_str().unwrap(), "--timeout", "10s"]);
    server.join().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("not understood"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn restart_timeout_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("slow.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    // Accepts and reads the request, then never answers (until the client
    // has gone: the read below sees its end-of-file).
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        read_frame_blocking(&mut stream, MAX_FRAME_BYTES).unwrap();
        assert!(read_frame_blocking(&mut stream, MAX_FRAME_BYTES).is_err());
    });
    let output = shellflip(&["restart", socket.to_str().unwrap(), "--timeout", "200ms"]);
    server.join().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    // Was "timed out after 200ms"; the message now says how far it got.
    assert!(
        message.contains("connected, but no answer within 200ms"),
        "{message}"
    );
    assert!(message.contains("shellflip status"), "{message}");
}

/// Issue 13: "try again" (in progress, not ready, just handed over) has its
/// own exit status, 75 (EX_TEMPFAIL); a restart that failed or a service
/// that is stopping is 1.
#[test]
fn restart_refusals_exit_75_when_trying_again_can_help() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, code) in [
        (FailureKind::InProgress, 75),
        (FailureKind::NotReady, 75),
        (FailureKind::HandedOver, 75),
        (FailureKind::ShuttingDown, 1),
        (FailureKind::Failed, 1),
    ] {
        let socket = dir.path().join(format!("{kind}.sock"));
        let reason = format!("refused: {kind}");
        let server = answer_once(
            &socket,
            Request::restart(),
            json(&Response::RestartFailed {
                kind,
                reason: reason.clone(),
            }),
        );
        let output = shellflip(&["restart", socket.to_str().unwrap()]);
        server.join().unwrap();
        assert_eq!(output.status.code(), Some(code), "{kind}");
        assert!(stderr(&output).contains(&reason), "{}", stderr(&output));
    }
    let output = shellflip(&["--help"]);
    let help = stdout(&output);
    assert!(help.contains("75  try again"), "{help}");
}

/// Issue 13: `status` had no timeout at all.
#[test]
fn status_gives_up_after_its_timeout_saying_what_is_known() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("never.sock");
    // Listening, never accepting: the socket of a first generation that
    // has not called ready(), as the client sees it.
    let _listener = UnixListener::bind(&socket).unwrap();
    let output = shellflip(&["status", socket.to_str().unwrap(), "--timeout", "300ms"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output).trim_end(),
        "status failed: connected, but no answer within 300ms: the service may be stopped \
         (SIGSTOP) or its first generation not ready yet"
    );
}

#[test]
fn status_shows_every_field_and_json_is_the_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let answer = br#"{"result":"status","pid":4242,"generation":3,"phase":"draining","uptime_secs":61.5,"restarts":2,"failed_restarts":1,"last_restart":{"ok":true,"at_unix_ms":1000,"duration_ms":12.5,"pid":4242,"generation":3,"error":null},"spawner_pid":4243}"#;

    let socket = dir.path().join("human.sock");
    let server = answer_once(&socket, Request::Status, answer.to_vec());
    let output = shellflip(&["status", socket.to_str().unwrap()]);
    server.join().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    for line in [
        // The answering "service" is this test process: the kernel's pid
        // for it differs from the one it claims.
        "generation:      3\n",
        "phase:           draining\n",
        "uptime:          1m1s\n",
        "restarts:        2\n",
        "failed restarts: 1\n",
        "in 12.5ms (pid=4242 generation=3",
        "spawner:         pid 4243",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    assert!(
        text.contains(&format!(
            "pid:             {} (4242 in the service's PID namespace)",
            std::process::id()
        )),
        "{text}"
    );

    let socket = dir.path().join("json.sock");
    let server = answer_once(&socket, Request::Status, answer.to_vec());
    let output = shellflip(&["status", socket.to_str().unwrap(), "--json"]);
    server.join().unwrap();
    let printed: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    let mut expected: serde_json::Value = serde_json::from_slice(answer).unwrap();
    expected.as_object_mut().unwrap().remove("result");
    assert_eq!(printed, expected);
}
