//! Restarts of an [`Echo`] service through its control socket
//! (`ControlClient`) and through the `shellflip` CLI, with the outcome
//! checked.

use std::process::Output;
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;

use shellflip::client::{ClientError, ControlClient};
use shellflip::control::{Request, Response, Status};

use crate::binaries::cli_binary;
use crate::harness::{deploy_fault, Echo};

/// Runs the `shellflip` CLI with `command`, `echo`'s control socket and
/// `extra`.
///
/// # Panics
///
/// If the CLI is not built or cannot be run.
pub fn cli(echo: &Echo, command: &str, extra: &[&str]) -> Output {
    echo.cli(&cli_binary(), command, extra)
}

/// `shellflip restart` through the CLI, which must succeed.
///
/// # Panics
///
/// If it fails, with its stderr.
pub fn cli_restart_ok(service: &Echo) -> Output {
    let out = cli(service, "restart", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `shellflip stop` through the CLI (bounded by 60 s), which must exit 0
/// and return only once nothing of the service is left: no process of it
/// alive when it returns (generations, spawners: its [`Census`]), its port
/// refusing, its control socket gone or refusing. `what` names the case in
/// a failure.
///
/// [`Census`]: crate::census::Census
///
/// # Panics
///
/// If any of that does not hold, with the service's stderr.
#[track_caller]
pub fn cli_stop_leaves_nothing(service: &Echo, what: &str) -> Output {
    let out = cli(service, "stop", &["--timeout", "60s"]);
    // First: what is left the moment it returned.
    let left = service.census.processes();
    assert!(
        out.status.success(),
        "{what}: `shellflip stop` failed ({}): {}\nstderr of the service:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        service.stderr()
    );
    assert!(
        left.is_empty(),
        "{what}: `shellflip stop` returned ({}) while processes of the service were still \
         running: {}\nstderr of the service:\n{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        crate::census::describe(&left),
        service.stderr()
    );
    service.assert_ended(what, &[]);
    out
}

/// `shellflip restart` through the CLI, which must fail (exit 1) with each
/// of `expected` in its stderr; returns that stderr.
///
/// # Panics
///
/// If it exits otherwise or a needle is missing.
pub fn restart_fails_with(service: &Echo, expected: &[&str]) -> String {
    let out = cli(service, "restart", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    for needle in expected {
        assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    }
    stderr
}

/// `shellflip restart` through the CLI, which must be refused for now
/// (exit 75, "try again": in progress, not ready, handed over) with each of
/// `expected` in its stderr; returns that stderr.
pub fn restart_refused_with(service: &Echo, expected: &[&str]) -> String {
    let out = cli(service, "restart", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(75), "stderr: {stderr}");
    for needle in expected {
        assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    }
    stderr
}

/// A successful restart through the control socket: (pid, generation) of
/// the new generation.
///
/// # Panics
///
/// If the request fails or the restart does not succeed.
pub fn restart_ok(service: &Echo) -> (u32, u64) {
    match ControlClient::restart(&service.control) {
        Ok(Response::Restarted(success)) => (success.pid, success.generation),
        other => panic!(
            "expected a successful restart, got {other:?}; stderr:\n{}",
            service.stderr()
        ),
    }
}

/// A restart through the control socket that must fail; returns the reason.
///
/// # Panics
///
/// If the request fails or the restart succeeds.
pub fn restart_failing(service: &Echo) -> String {
    match ControlClient::restart(&service.control) {
        Ok(Response::RestartFailed { reason, .. }) => reason,
        other => panic!("expected a failed restart, got {other:?}"),
    }
}

/// Deploys a build whose initialisation takes `slow_init_ms`, asks for a
/// restart from another thread, and waits until the new generation has
/// started: the initiator (joined for its response) and the new pid.
///
/// The service must be the faulty example ([`crate::harness::start_faulty`]).
pub fn start_slow_restart(
    service: &Echo,
    slow_init_ms: u64,
) -> (JoinHandle<Result<Response, ClientError>>, u32) {
    deploy_fault(service, &format!("slow-init={slow_init_ms}"));
    let control = service.control.clone();
    let initiator = std::thread::spawn(move || ControlClient::restart(&control));
    let child = service.next_init(service.current.pid);
    (initiator, child)
}

/// `n` control clients, each first answered by the current generation,
/// ask for a restart at the same moment. The service's next build must be
/// slow to become ready, so that every request lands while the restart
/// runs: exactly one is `Restarted`, the other `n - 1` are told a restart
/// is in progress, the new generation is the second, the first exits, and
/// no second restart follows. Returns the status after all that.
///
/// # Panics
///
/// If any of that does not hold.
pub fn simultaneous_restarts(service: &mut Echo, n: usize) -> Status {
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let control = service.control.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut client = ControlClient::connect(&control).unwrap();
                // Proves the connection is accepted by the current generation.
                let status = client.request(&Request::Status).unwrap();
                assert!(matches!(status, Response::Status(_)), "{status:?}");
                barrier.wait();
                client.request(&Request::restart()).unwrap()
            })
        })
        .collect();
    let responses: Vec<Response> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let ok = responses
        .iter()
        .filter(|r| matches!(r, Response::Restarted(_)))
        .count();
    let in_progress = responses
        .iter()
        .filter(|r| matches!(r, Response::RestartFailed { kind, .. } if kind == "in_progress"))
        .count();
    assert_eq!((ok, in_progress), (1, n - 1), "{responses:?}");
    assert_eq!(service.next_ready().generation, 2);
    assert!(service.wait_first_exit());
    let status = ControlClient::status(&service.control).unwrap();
    assert_eq!(status.generation, 2);
    status
}
