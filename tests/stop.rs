//! A stop is a stop (issue 22): a stop that reaches the serving
//! generation or either side of a probation — `shellflip stop`, SIGTERM to
//! its pid, the keeper's forwarded signal — ends the whole service. No
//! generation takes the service back after it, every process of the
//! service (generations and their spawners) exits within the probation,
//! the drain timeout and a margin, its sockets refuse, and `shellflip stop`
//! returns once nothing of the service is left.
//!
//! And what is *not* a stop of the service: SIGTERM to a generation still
//! starting is a failed restart; SIGTERM to a generation that is draining
//! ends only that generation.
//!
//! Every process of a service is found by the marker the harness puts in
//! its environment ([`Census`]), wherever it was re-parented.

mod common;

use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use shellflip::client::ControlClient;
use shellflip::control::{Phase, Response};

/// The probation of these tests: long enough that a request sent right
/// after a restart's answer lands inside it, however busy the machine.
const PROBATION: &str = "2s";
/// The drain timeout of these tests.
const DRAIN: &str = "3s";
/// How long a stopped service may take to be gone: the probation, the
/// drain timeout and a generous margin for a busy machine.
const ENDED_WITHIN: Duration = Duration::from_secs(2 + 3 + 10);

/// The environment of these tests' services, with `more`.
fn env<'a>(more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("SHELLFLIP_PROBATION", PROBATION),
        ("SHELLFLIP_DRAIN_TIMEOUT", DRAIN),
    ];
    env.extend_from_slice(more);
    env
}

/// `shellflip stop` returns only once nothing of the service is left, its
/// spawner included, also for a plain stop of a lone generation under
/// load. Ten rounds: before the fix `stop` returned while the generation
/// was still exiting or its spawner still ran in one stop of three to five.
#[test]
fn a_plain_stop_returns_once_nothing_of_the_service_is_left() {
    for round in 1..=10 {
        let service = Echo::start(&env(&[]));
        let load = Load::start(service.addr, 2, 100_000, Duration::from_secs(60));
        wait_until("load on the service", EVENT_TIMEOUT, || {
            load.count_from(service.current.pid) > 8
        });
        cli_stop_leaves_nothing(&service, &format!("round {round}"));
        load.stop();
    }
}

/// Issue 22, first report: `shellflip restart S && shellflip stop S`. The
/// stop reaches the new generation during its probation; it stops, and the
/// old generation took the service back ("exited with status 0 during its
/// probation; rolled back; this generation serves again") and served on
/// forever, its control socket path removed, while `stop` said "stopped"
/// and exited 0. Three rounds, each on a fresh service.
#[test]
fn cli_stop_right_after_a_cli_restart_ends_the_whole_service() {
    for round in 1..=3 {
        let service = Echo::start(&env(&[]));
        let old = service.current.pid;
        let load = Load::start(service.addr, 2, 100_000, Duration::from_secs(60));
        cli_restart_ok(&service);
        let what = format!("round {round}");
        let watch = watch(&service);
        cli_stop_leaves_nothing(&service, &what);
        watch.stop_expecting_none_from(old, &what, &service.stderr());
        load.stop();
    }
}

/// A client connecting again and again from now on (bounded: once the
/// port refuses, each attempt fails at once): shows which generations
/// still take new connections, e.g. one that took the service back after a
/// stop.
fn watch(service: &Echo) -> Load {
    Load::start(service.addr, 1, 50_000, Duration::from_secs(60))
}

/// The pid the pid file names.
fn pid_file_pid(path: &std::path::Path) -> u32 {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read the pid file {}: {e}", path.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("the pid file holds {text:?}: {e}"))
}

/// Issue 22, second report: SIGTERM to the pid the pid file names (the
/// new generation, on probation) right after a restart: it stopped, and the
/// old generation took the service back and served on, unreachable on the
/// control socket. Now the whole service ends.
#[test]
fn sigterm_to_the_new_generation_during_its_probation_ends_the_whole_service() {
    let files = tempfile::tempdir().unwrap();
    let pid_file = files.path().join("echo.pid");
    let service = Echo::start(&env(&[("SHELLFLIP_PID_FILE", pid_file.to_str().unwrap())]));
    let old = service.current.pid;
    let load = Load::start(service.addr, 2, 100_000, Duration::from_secs(60));
    let (new_pid, _) = restart_ok(&service);
    assert_eq!(pid_file_pid(&pid_file), new_pid);
    let what = "SIGTERM to the new generation during its probation";
    assert!(service.census.signal(new_pid, Signal::SIGTERM));
    let watch = watch(&service);
    service.assert_ended_within(what, ENDED_WITHIN, &[]);
    watch.stop_expecting_none_from(old, what, &service.stderr());
    load.stop();
}

/// The other stop signals of issue 22's specification: SIGTERM to the old
/// generation during the probation (the pid the pid file named before the
/// restart), and SIGINT to either side. Each ends the whole service. (The
/// old side stopped and the new one took over and served on; SIGINT to
/// the new side was the orphan of the second report.)
#[test]
fn a_stop_signal_to_either_side_of_a_probation_ends_the_whole_service() {
    for (side, signal) in [
        ("old", Signal::SIGTERM),
        ("old", Signal::SIGINT),
        ("new", Signal::SIGINT),
    ] {
        let service = Echo::start(&env(&[]));
        let old = service.current.pid;
        let (new, _) = restart_ok(&service);
        let pid = if side == "old" { old } else { new };
        let what = format!("{signal} to the {side} generation (pid {pid}) during the probation");
        assert!(service.census.signal(pid, signal));
        let watch = watch(&service);
        service.assert_ended_within(&what, ENDED_WITHIN, &[]);
        if side == "new" {
            watch.stop_expecting_none_from(old, &what, &service.stderr());
        }
    }
}

/// Issue 22, a fault probe: a restart and a stop racing. The stop is sent
/// while the restart still runs: once as soon as the new generation has
/// started (it takes 5 s to be ready: the stop lands before its READY and
/// the restart is aborted), once as soon as the new generation (ready
/// after 300 ms) printed its ready line (racing the restart's answer: the
/// stop may reach either generation). Either way the whole service ends,
/// and `stop` returns once nothing of it is left. Before the fix the
/// second left the old generation serving on (4 rounds of 4), and the
/// first returned from `stop` while the old generation was still running
/// (2 rounds of 3).
#[test]
fn a_stop_racing_a_restart_ends_the_whole_service() {
    for round in 1..=3 {
        for at_ready_line in [false, true] {
            let what = if at_ready_line {
                format!("round {round}, stop sent at the new generation's ready line")
            } else {
                format!("round {round}, stop sent while the new generation starts")
            };
            let mut service = start_faulty(&[], &env(&[]));
            let slow_init_ms = if at_ready_line { 300 } else { 5_000 };
            let (initiator, child) = start_slow_restart(&service, slow_init_ms);
            if at_ready_line {
                assert_eq!(service.next_ready().pid, child);
            }
            cli_stop_leaves_nothing(&service, &what);
            let answer = initiator.join().unwrap();
            if !at_ready_line {
                assert!(
                    matches!(answer, Ok(Response::RestartFailed { .. })),
                    "{what}: the restart was aborted by the stop, but its answer is {answer:?}"
                );
            }
        }
    }
}

/// Issue 22, a fault probe: a Unix listener's final stop. The Unix + UDP
/// example, stopped right after a restart (within the probation): the old
/// generation took the service back, its Unix socket's path removed by the
/// generation that stopped. Now nothing is left: no process, the Unix
/// socket's path gone or refusing, the UDP socket unanswered.
#[test]
fn a_unix_listener_s_final_stop_right_after_a_restart_leaves_nothing() {
    use std::os::unix::net::UnixStream;
    let dir = tempfile::tempdir().unwrap();
    let unix_path = dir.path().join("unix.sock");
    let args: Vec<std::ffi::OsString> = vec![
        "--unix".into(),
        unix_path.clone().into(),
        "--udp".into(),
        "127.0.0.1:0".into(),
        "--control".into(),
        dir.path().join("control.sock").into(),
    ];
    let service = Echo::start_in(dir, &example_binary("unix_udp"), &args, &env(&[]));
    let udp = service.current.udp.expect("udp address in the ready line");
    UnixStream::connect(&unix_path).expect("the Unix listener answers");
    cli_restart_ok(&service);
    cli_stop_leaves_nothing(&service, "the final stop");
    service.assert_ended("the final stop", &[&unix_path]);
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(udp).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    client.send(b"anyone?").unwrap();
    let mut answer = [0u8; 256];
    if let Ok(n) = client.recv(&mut answer) {
        panic!(
            "the UDP socket still answers after the final stop: {:?}",
            String::from_utf8_lossy(&answer[..n])
        );
    }
}

/// What issue 22 must not change: SIGTERM to a generation still starting
/// (before its READY) is a failed restart, not a stop. The restart is
/// reported failed, the old generation serves on and answers `status`.
#[test]
fn sigterm_to_a_generation_still_starting_is_a_failed_restart() {
    let service = start_faulty(&[], &env(&[]));
    let old = service.current;
    let (initiator, child) = start_slow_restart(&service, 1_500);
    assert!(service.census.signal(child, Signal::SIGTERM));
    match initiator.join().unwrap() {
        Ok(Response::RestartFailed { .. }) => {}
        other => panic!(
            "SIGTERM to the starting generation: expected a failed restart, got {other:?}; \
             stderr:\n{}",
            service.stderr()
        ),
    }
    wait_until("the starting generation to be gone", EVENT_TIMEOUT, || {
        !service.census.owns(child)
    });
    assert_eq!(service.exchange().unwrap().pid, old.pid);
    let status = ControlClient::status(&service.control).unwrap();
    assert_eq!((status.pid, status.phase), (old.pid, Phase::Serving));
    let generations: Vec<u32> = service.census.generations().iter().map(|p| p.pid).collect();
    assert_eq!(generations, vec![old.pid]);
}

/// Waits until `status` lists `pid` as draining.
fn wait_draining(service: &Echo, pid: u32) {
    wait_until("the old generation to drain", EVENT_TIMEOUT, || {
        ControlClient::status(&service.control).is_ok_and(|s| {
            s.generations
                .iter()
                .any(|g| g.pid == pid && g.phase == Phase::Draining)
        })
    });
}

/// What issue 22 must not change: SIGTERM to a generation that is already
/// draining ends only that generation (at once, or when its drain ends:
/// either is fine here); the service goes on.
#[test]
fn sigterm_to_a_draining_generation_ends_only_that_generation() {
    let mut service = Echo::start(&env(&[]));
    let old = service.current;
    let _held = hold_connection(service.addr);
    restart_ok(&service);
    let new = service.next_ready();
    wait_draining(&service, old.pid);
    assert!(service.census.signal(old.pid, Signal::SIGTERM));
    let goes_on = |when: &str| {
        assert_eq!(service.exchange().unwrap().pid, new.pid, "{when}");
        let status = ControlClient::status(&service.control).unwrap();
        assert_eq!(
            (status.pid, status.phase),
            (new.pid, Phase::Serving),
            "{when}"
        );
    };
    goes_on("right after the SIGTERM");
    assert!(
        wait_exit(old.pid, ENDED_WITHIN),
        "the draining generation did not exit; stderr:\n{}",
        service.stderr()
    );
    goes_on("once the draining generation exited");
    let generations: Vec<u32> = service.census.generations().iter().map(|p| p.pid).collect();
    assert_eq!(generations, vec![new.pid]);
    assert_eq!(service.census.wait_no_zombies(EVENT_TIMEOUT), Ok(()));
}

/// SIGKILL of a generation that had taken over (committed), while its
/// predecessor still drains: no generation takes the service back, the
/// predecessor finishes its drain and exits, and nothing of the service is
/// left: no process, no zombie, the port and the control socket refuse.
#[test]
fn sigkill_of_a_committed_generation_leaves_nothing_serving() {
    let mut service = Echo::start(&env(&[]));
    let old = service.current;
    let held = hold_connection(service.addr);
    restart_ok(&service);
    let new = service.next_ready();
    wait_draining(&service, old.pid);
    assert!(service.census.signal(new.pid, Signal::SIGKILL));
    // The predecessor's drain is bounded (3 s); the held connection
    // finishes or is cut, either way it ends.
    drop(held);
    service.assert_ended_within("SIGKILL of the committed generation", ENDED_WITHIN, &[]);
}
