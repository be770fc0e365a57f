//! Never two masters, never a lie: faults found outside the fault matrix.
//! After a restart is reported failed only the old generation serves; a
//! new generation takes over only when its predecessor really handed over
//! or really exited; whatever is asked of a service gets a truthful answer.

mod common;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use shellflip::client::ControlClient;
use shellflip::control::{FailureKind, Phase, Request, Response};

/// Pids of the live processes started from `service`'s private copy of its
/// binary (every generation, and whatever a wrapper script started).
fn processes_of(service: &Echo) -> BTreeSet<u32> {
    let dir = service.dir.path().to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| is_alive(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmd| String::from_utf8_lossy(&cmd).contains(&dir))
                .unwrap_or(false)
        })
        .collect()
}

/// The pids that answer `count` exchanges, one after the other (each must
/// succeed).
fn pids_answering(service: &Echo, count: usize) -> BTreeSet<u32> {
    (0..count)
        .map(|n| {
            exchange(service.addr, &format!("probe {n}"))
                .unwrap_or_else(|e| panic!("exchange {n}: {e}"))
                .pid
        })
        .collect()
}

/// The spawner SIGKILLed while the new generation initialises: the new
/// generation's exit is still watched (it is not its parent's business any
/// more), so the restart is decided on what really happens — here it
/// becomes ready, the restart succeeds, and it alone serves.
#[test]
fn a_spawner_killed_mid_restart_leaves_one_master() {
    let mut service = start_faulty(&[], &[]);
    let old = service.current;
    let spawner = spawner_of(old.pid).expect("the old generation's spawner");
    let (initiator, new_pid) = start_slow_restart(&service, 1_500);
    kill_pid(spawner, Signal::SIGKILL);
    let outcome = initiator.join().unwrap().expect("an answer to the restart");
    match outcome {
        Response::Restarted(done) => assert_eq!(done.pid, new_pid),
        other => panic!("the new generation lives, but the restart says {other:?}"),
    }
    let new = service.next_ready();
    assert_eq!(new.pid, new_pid);
    assert!(service.wait_first_exit(), "the old generation did not exit");
    assert_eq!(pids_answering(&service, 20), BTreeSet::from([new_pid]));
    let status = ControlClient::status(&service.control).unwrap();
    assert_eq!(status.pid, new_pid);
}

/// A deploy wrapper that starts the real binary without `exec`, slower than
/// the ready timeout: the timeout kills the whole process group the new
/// generation started in — the shell and the real binary — so the old
/// generation alone serves, and stays reachable.
#[test]
fn a_wrapper_without_exec_is_killed_whole_at_the_ready_timeout() {
    let service = start_faulty(&[], &[("SHELLFLIP_READY_TIMEOUT", "1s")]);
    let old = service.current;
    let real = service.dir.path().join("faulty.real");
    copy_executable(&example_binary("faulty"), &real).unwrap();
    service.replace_with_script(&format!(
        "#!/bin/sh\n\"{}\" \"$@\" --fault slow-init=3000\necho wrapper done\n",
        real.display()
    ));
    let before = processes_of(&service);
    restart_fails_with(&service, &["not ready within 1s", "killed"]);
    // The shell and the binary it started are both gone: killed with their
    // group (and reaped by this test, their subreaper).
    wait_until("no process of the failed generation", EVENT_TIMEOUT, || {
        processes_of(&service).is_subset(&before)
    });
    // Past the moment it would have been ready, only the old one serves.
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(pids_answering(&service, 20), BTreeSet::from([old.pid]));
    let status = ControlClient::status(&service.control).unwrap();
    assert_eq!((status.pid, status.phase), (old.pid, Phase::Serving));
}

/// The restart signal sent a hundred times to the service's whole process
/// group: no new generation dies of it before its handler exists (each
/// starts in a group of its own with the signal blocked), restarts
/// succeed, and nothing is lost.
#[test]
fn a_storm_of_restart_signals_to_the_group_kills_no_new_generation() {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<std::ffi::OsString> = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--control".into(),
        dir.path().join("control.sock").into(),
    ];
    // A process group of its own, created here: the only group signalled.
    let mut service = Echo::start_prepared(dir, &example_binary("echo"), &args, &[], |cmd, _| {
        std::os::unix::process::CommandExt::process_group(cmd, 0);
    });
    let group = nix::unistd::Pid::from_raw(service.current.pid as i32);
    assert_eq!(nix::unistd::getpgid(Some(group)).unwrap(), group);
    let load = Load::start(service.addr, 4, 1_000_000, Duration::from_secs(60));
    for _ in 0..100 {
        // Bounded: 100 signals, 5 ms apart.
        let _ = nix::sys::signal::killpg(group, Signal::SIGUSR1);
        std::thread::sleep(Duration::from_millis(5));
    }
    // At least one restart happened; let the last one settle.
    let first = service.next_ready();
    assert!(first.generation > 1);
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while Instant::now() < deadline {
        let status = ControlClient::status(&service.control).unwrap();
        if status.phase == Phase::Serving {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let report = load.stop();
    report.assert_no_failures("during the signal storm");
    let stderr = service.stderr();
    assert!(
        !stderr.contains("killed by signal SIGUSR1"),
        "a generation died of the restart signal:\n{stderr}"
    );
    assert!(!stderr.contains("restart failed"), "{stderr}");
}

/// Restart requests sent back to back while handovers happen are each
/// answered truthfully: a restart, or a refusal with a kind that says to
/// try again — never a kind-less "shutting down" from a service that has
/// just restarted.
#[test]
fn racing_restart_requests_get_a_kind() {
    let mut service = Echo::start(&[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut restarts = 0;
    let mut refusals = 0;
    // Bounded: until 5 restarts succeeded, 500 requests, or 60 s.
    for _ in 0..500 {
        if restarts == 5 || Instant::now() > deadline {
            break;
        }
        let mut client = ControlClient::connect(&service.control).unwrap();
        match client.request(&Request::restart()) {
            Ok(Response::Restarted(_)) => {
                restarts += 1;
                service.next_ready();
            }
            Ok(Response::RestartFailed { kind, reason }) => {
                assert!(kind.is_temporary(), "{kind:?}: {reason}");
                refusals += 1;
            }
            other => panic!("a racing restart request got {other:?}"),
        }
    }
    assert_eq!(restarts, 5, "{refusals} refusals");
}

/// While a stop drains, the control socket still answers: `status` says
/// `stopping`, a restart is refused as stopping.
#[test]
fn a_stopping_service_still_answers_status() {
    let service = Echo::start(&[]);
    let pid = service.current.pid;
    let held = hold_connection(service.addr);
    let mut stopper = ControlClient::connect(&service.control).unwrap();
    match stopper.request(&Request::Stop).unwrap() {
        Response::Stopping { .. } => {}
        other => panic!("{other:?}"),
    }
    let status = ControlClient::status(&service.control).expect("status during the drain");
    assert_eq!((status.pid, status.phase), (pid, Phase::Stopping));
    match ControlClient::restart(&service.control).unwrap() {
        Response::RestartFailed { kind, .. } => assert_eq!(kind, FailureKind::ShuttingDown),
        other => panic!("{other:?}"),
    }
    held.finish("bye");
    assert!(wait_exit(pid, EVENT_TIMEOUT));
}

/// An error returned from `main` reaches stderr, with or without a tracing
/// subscriber: here the port is in use, and the faulty example installs no
/// subscriber.
#[test]
fn an_error_from_main_reaches_stderr_without_a_subscriber() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(example_binary("faulty"))
        .arg("--listen")
        .arg(taken.local_addr().unwrap().to_string())
        .arg("--control")
        .arg(dir.path().join("control.sock"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr
            .contains("shellflip: the service's main failed: could not bind the listener `faulty`"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("could not bind").count(),
        1,
        "printed once: {stderr}"
    );
}

/// Issue 22, a fault probe: the spawner SIGKILLed around a restart, then a
/// stop. The spawner dies while the new generation (its child, re-parented
/// here) starts; the restart succeeds; the stop is sent right after its
/// answer, within the probation. The old generation took the service back
/// and served on, an orphan that nothing could stop or query. Now the whole
/// service ends and `stop` returns once nothing of it is left.
#[test]
fn a_spawner_killed_around_a_restart_then_a_stop_leaves_no_orphan() {
    let service = start_faulty(
        &[],
        &[
            ("SHELLFLIP_PROBATION", "2s"),
            ("SHELLFLIP_DRAIN_TIMEOUT", "3s"),
        ],
    );
    let old = service.current;
    let spawner = spawner_of(old.pid).expect("the old generation's spawner");
    let (initiator, new_pid) = start_slow_restart(&service, 500);
    assert!(service.census.signal(spawner, Signal::SIGKILL));
    match initiator.join().unwrap() {
        Ok(Response::Restarted(done)) => assert_eq!(done.pid, new_pid),
        other => panic!("the new generation lives, but the restart says {other:?}"),
    }
    let what = "the stop after the spawner's death";
    // Who takes new connections from the stop on: never the old one.
    let watch = Load::start(service.addr, 1, 50_000, Duration::from_secs(60));
    cli_stop_leaves_nothing(&service, what);
    watch.stop_expecting_none_from(old.pid, what, &service.stderr());
}
