//! End-to-end restarts of the echo example: real processes, real sockets.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use shellflip::client::ControlClient;

/// Ten restarts while 16 clients connect, exchange and close in a loop:
/// nothing refused or cut, pid and generation change each time, the count
/// carried in the state never goes back, every old generation exits.
#[test]
fn ten_restarts_under_load_lose_nothing() {
    let mut echo = Echo::start(&[]);
    let load = Load::start(echo.addr, 16, 100_000, Duration::from_secs(240));
    wait_until("load on the first generation", EVENT_TIMEOUT, || {
        load.count_from(echo.current.pid) >= 32
    });
    let mut old = echo.current;
    for round in 1..=10 {
        // The last count the generation being restarted showed before the
        // restart was asked for. (It keeps serving, and counting on its own
        // copy, until its successor is ready; both copies start from the
        // value handed over.)
        let served_before = load.max_served_by(old.pid);
        let (pid, generation) = restart_ok(&echo);
        let ready = echo.next_ready();
        assert_eq!((ready.pid, ready.generation), (pid, generation));
        assert_ne!(pid, old.pid, "round {round}: same pid after restart");
        assert_eq!(generation, old.generation + 1, "round {round}");
        assert!(
            wait_exit(old.pid, EVENT_TIMEOUT),
            "round {round}: old generation {} did not exit",
            old.pid
        );
        wait_until(
            "clients served by the new generation",
            EVENT_TIMEOUT,
            || load.count_from(pid) >= 16,
        );
        let first_new = load
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.pid == pid)
            .map(|g| g.served)
            .min()
            .unwrap();
        if first_new <= served_before {
            let seen = load.seen.lock().unwrap();
            let mut by_pid: std::collections::BTreeMap<u32, (u64, u64, u64, usize)> =
                Default::default();
            for g in seen.iter() {
                let e = by_pid
                    .entry(g.pid)
                    .or_insert((g.generation, u64::MAX, 0, 0));
                e.1 = e.1.min(g.served);
                e.2 = e.2.max(g.served);
                e.3 += 1;
            }
            panic!(
                "round {round}: the new generation started counting at {first_new}, below {served_before} seen before the restart; per pid (generation, min, max, count): {by_pid:?}\nstderr:\n{}",
                echo.stderr()
            );
        }
        old = ready;
    }
    let report = load.stop();
    report.assert_no_failures(&format!("stderr:\n{}", echo.stderr()));
    assert!(report.ok > 160, "only {} exchanges", report.ok);
    assert!(echo.wait_first_exit());
}

/// A broken build at the executable path: the restart fails with the real
/// reason, and the old generation keeps serving; then a good build works.
#[test]
fn broken_builds_are_rolled_back_and_a_good_one_goes_through() {
    let binary = example_binary("echo");
    let echo = Echo::start(&[("SHELLFLIP_READY_TIMEOUT", "2s")]);
    let original = echo.current;

    echo.replace_with_script("#!/bin/sh\necho 'this build is broken' >&2\nexit 3\n");
    restart_fails_with(&echo, &["exited with status 3"]);
    assert_eq!(echo.exchange().unwrap().pid, original.pid);

    echo.replace_with_script("#!/bin/sh\nexec sleep 600\n");
    restart_fails_with(&echo, &["not ready within 2s", "killed"]);
    assert_eq!(echo.exchange().unwrap().pid, original.pid);

    let status = ControlClient::status(&echo.control).unwrap();
    assert_eq!(status.failed_restarts, 2);
    assert_eq!(status.pid, original.pid);

    let mut echo = echo;
    echo.replace_with_binary(&binary);
    let out = cli_restart_ok(&echo);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ready = echo.next_ready();
    assert!(stdout.contains(&format!("pid={}", ready.pid)), "{stdout}");
    assert!(stdout.contains("generation=2"), "{stdout}");
    assert!(echo.wait_first_exit());
    assert_eq!(echo.exchange().unwrap().pid, ready.pid);
}

/// A build that panics in its own initialisation reports the panic message.
#[test]
fn the_child_failure_message_reaches_the_initiator() {
    let echo = Echo::start(&[("SHELLFLIP_READY_TIMEOUT", "20s")]);
    // A new generation that cannot bind (its --listen is changed by the
    // environment of the script) fails with its own message.
    let exe = echo.exe.display().to_string();
    let real = echo.dir.path().join("echo.real");
    copy_executable(&echo.exe, &real).unwrap();
    echo.replace_with_script(&format!(
        "#!/bin/sh\nexec {} --listen 256.0.0.1:1 --control {}\n",
        real.display(),
        echo.control.display()
    ));
    let _ = exe;
    restart_fails_with(&echo, &["failed to start", "256.0.0.1"]);
    assert_eq!(echo.exchange().unwrap().pid, echo.current.pid);
}

/// 20 restart requests at once: exactly one restart, the others are told a
/// restart is in progress.
#[test]
fn twenty_simultaneous_restarts_make_exactly_one() {
    // The echo protocol, with a new generation that takes a second to be
    // ready: every request lands while the restart runs.
    let mut echo = start_faulty(&[], &[]);
    deploy_fault(&echo, "slow-init=1000");
    let status = simultaneous_restarts(&mut echo, 20);
    // No second restart happened.
    assert_eq!(status.restarts, 1);
}

/// Garbage, oversized and truncated frames get errors; the service is fine.
#[test]
fn malformed_control_input_is_answered_not_fatal() {
    let echo = Echo::start(&[]);
    let read_response = |stream: &mut UnixStream| -> String {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        stream.read_exact(&mut body).unwrap();
        String::from_utf8_lossy(&body).into_owned()
    };
    // Garbage JSON in a well-formed frame.
    let mut s = UnixStream::connect(&echo.control).unwrap();
    s.write_all(&5u32.to_be_bytes()).unwrap();
    s.write_all(b"\x00\xffxx").unwrap();
    s.write_all(b"}").unwrap();
    let reply = read_response(&mut s);
    assert!(reply.contains("error"), "{reply}");
    // A frame announcing 4 GiB.
    let mut s = UnixStream::connect(&echo.control).unwrap();
    s.write_all(&u32::MAX.to_be_bytes()).unwrap();
    let reply = read_response(&mut s);
    assert!(reply.contains("error"), "{reply}");
    // An unknown operation.
    let mut s = UnixStream::connect(&echo.control).unwrap();
    let body = br#"{"op":"explode"}"#;
    s.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
    s.write_all(body).unwrap();
    let reply = read_response(&mut s);
    assert!(reply.contains("error"), "{reply}");
    // A truncated frame, then the client goes away.
    let mut s = UnixStream::connect(&echo.control).unwrap();
    s.write_all(&100u32.to_be_bytes()).unwrap();
    s.write_all(b"{\"op\"").unwrap();
    drop(s);
    // Still serving, still answering.
    let status = ControlClient::status(&echo.control).unwrap();
    assert_eq!(status.pid, echo.current.pid);
    assert_eq!(echo.exchange().unwrap().pid, echo.current.pid);
}

/// A graceful stop lets an open connection finish its exchange.
#[test]
fn graceful_stop_finishes_open_connections() {
    let mut echo = Echo::start(&[]);
    let held = hold_connection(echo.addr);
    assert!(
        parse_greeting(&held.greeting).is_some(),
        "{}",
        held.greeting
    );

    let control = echo.control.clone();
    let stopper = std::thread::spawn(move || {
        std::process::Command::new(cli_binary())
            .arg("stop")
            .arg(&control)
            .output()
            .unwrap()
    });
    // The listener closes as soon as the stop begins.
    assert_eq!(
        held.finish_after_listener_closes(echo.addr, "still here"),
        "still here\n"
    );
    let out = stopper.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("pid={}", echo.current.pid)));
    assert!(echo.wait_first_exit());
    assert!(
        !echo.control.exists(),
        "the control socket file is removed at stop"
    );
}

/// Sends `signal` to the first generation: the second must become ready
/// and the first exit.
fn restart_by_signal(echo: &mut Echo, signal: Signal) -> Ready {
    kill_pid(echo.current.pid, signal);
    let ready = echo.next_ready();
    assert_eq!(ready.generation, 2);
    assert!(echo.wait_first_exit());
    ready
}

/// SIGUSR1 restarts too; status reports the new generation.
#[test]
fn restart_signal_restarts() {
    let mut echo = Echo::start(&[]);
    let ready = restart_by_signal(&mut echo, Signal::SIGUSR1);
    let out = cli(&echo, "status", &["--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["pid"], ready.pid);
    assert_eq!(json["generation"], 2);
}

/// SHELLFLIP_RESTART_SIGNAL changes the restart signal at start-up.
#[test]
fn restart_signal_can_be_overridden_by_the_environment() {
    let mut echo = Echo::start(&[("SHELLFLIP_RESTART_SIGNAL", "SIGUSR2")]);
    restart_by_signal(&mut echo, Signal::SIGUSR2);
}

/// A malformed override stops the service at start-up with a message
/// naming the variable.
#[test]
fn a_malformed_override_is_a_clear_start_up_error() {
    let binary = example_binary("echo");
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(binary)
        .args(["--listen", "127.0.0.1:0", "--control"])
        .arg(dir.path().join("control.sock"))
        .env("SHELLFLIP_DRAIN_TIMEOUT", "forever")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SHELLFLIP_DRAIN_TIMEOUT"), "{stderr}");
    assert!(stderr.contains("\"forever\""), "{stderr}");
}

/// Durations that used to be accepted and then panic later ("overflow when
/// adding duration to instant", issue 13) are refused at start-up: exit
/// status 1, a message naming the variable, the value and the bound, and
/// nothing bound or left running.
#[test]
fn huge_durations_are_refused_at_start_up() {
    for (name, value, needle) in [
        (
            "SHELLFLIP_READY_TIMEOUT",
            "300000000000y",
            "unknown unit `y`; a duration is at most 7d",
        ),
        (
            "SHELLFLIP_DRAIN_TIMEOUT",
            "300000000000y",
            "unknown unit `y`; a duration is at most 7d",
        ),
        (
            "SHELLFLIP_READY_TIMEOUT",
            "300000000000h",
            "too long: the maximum is 7d",
        ),
        (
            "SHELLFLIP_DRAIN_TIMEOUT",
            "300000000000h",
            "too long: the maximum is 7d",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let control = dir.path().join("control.sock");
        let mut child = std::process::Command::new(example_binary("echo"))
            .args(["--listen", "127.0.0.1:0", "--control"])
            .arg(&control)
            .env(name, value)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Stderr reaches EOF when the service exits (nothing else holds it:
        // the spawner is only forked after the settings are read).
        let mut stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
            let _ = tx.send(text);
        });
        let Ok(stderr) = rx.recv_timeout(EVENT_TIMEOUT) else {
            kill_pid(child.id(), Signal::SIGKILL);
            let _ = child.wait();
            panic!("{name}={value} was accepted: the service kept running");
        };
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(1), "{name}={value}: {stderr}");
        let expected = format!("shellflip: invalid value \"{value}\" for {name}: {needle}");
        assert!(
            stderr.contains(&expected),
            "{expected:?} missing from:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            !control.exists(),
            "nothing is bound before the settings are read"
        );
    }
}

/// SIGTERM stops gracefully: the listener closes, an open connection
/// finishes its exchange, the process exits 0 and removes its socket file.
#[test]
fn sigterm_drains_and_exits_cleanly() {
    let mut echo = Echo::start(&[]);
    let held = hold_connection(echo.addr);
    kill_pid(echo.current.pid, Signal::SIGTERM);
    assert_eq!(
        held.finish_after_listener_closes(echo.addr, "last words"),
        "last words\n"
    );
    assert_eq!(echo.wait_first_exit_status(), Some(0));
    assert!(!echo.control.exists());
}
