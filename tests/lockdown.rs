//! A service that forbids itself to start programs or processes once ready
//! (the locked_down example: a seccomp filter denying execve, execveat, fork,
//! vfork and process-creating clone) still restarts through the spawner, and
//! does not when it spawns its successor itself (`SHELLFLIP_SPAWNER=inline`).

mod common;

use std::ffi::OsString;
use std::time::Duration;

use common::*;
use shellflip::client::ControlClient;
use shellflip::control::Response;

/// Starts the locked_down example on 127.0.0.1:0 with a control socket in a
/// temp dir, and waits for its first generation to be ready and locked down.
fn start_locked_down(env: &[(&str, &str)]) -> Echo {
    let dir = tempfile::tempdir().expect("temp dir");
    let args: Vec<OsString> = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--control".into(),
        dir.path().join("control.sock").into(),
    ];
    let service = Echo::start_in(dir, &example_binary("locked_down"), &args, env);
    wait_locked_down(&service, service.current.pid);
    service
}

/// Waits for `pid`'s `locked pid=..` and `exec-denied pid=..` lines (its
/// filter is in place and running /bin/true was refused), then checks the
/// kernel's view of it: two seccomp filters and no_new_privs.
fn wait_locked_down(service: &Echo, pid: u32) {
    for what in ["locked", "exec-denied"] {
        let line = format!("{what} pid={pid}");
        wait_until(&line, EVENT_TIMEOUT, || {
            service.stderr().lines().any(|l| l == line) || !is_alive(pid)
        });
        assert!(
            is_alive(pid),
            "{pid} exited before `{line}`; stderr:\n{}",
            service.stderr()
        );
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    for expected in ["Seccomp:\t2", "Seccomp_filters:\t2", "NoNewPrivs:\t1"] {
        assert!(
            status.lines().any(|l| l == expected),
            "{pid}: no `{expected}` in its /proc status:\n{status}"
        );
    }
}

/// The default spawner was forked before the lockdown: three restarts under
/// load succeed, each new generation locks itself down in turn, no client
/// exchange fails, and every old generation exits and is reaped.
#[test]
fn a_locked_down_service_restarts_through_the_spawner() {
    let mut service = start_locked_down(&[]);
    let load = Load::start(service.addr, 4, 100_000, Duration::from_secs(240));
    wait_until("load on the first generation", EVENT_TIMEOUT, || {
        load.count_from(service.current.pid) >= 8
    });
    let mut old = service.current;
    for round in 1..=3 {
        let (pid, generation) = match ControlClient::restart(&service.control)
            .expect("restart request")
        {
            Response::Restarted(success) => (success.pid, success.generation),
            other => panic!(
                "round {round}: the restart of a locked-down service failed: {other:?}\nstderr:\n{}",
                service.stderr()
            ),
        };
        let ready = service.next_ready();
        assert_eq!((ready.pid, ready.generation), (pid, generation));
        assert_ne!(pid, old.pid, "round {round}: same pid after restart");
        assert_eq!(generation, old.generation + 1, "round {round}");
        wait_locked_down(&service, pid);
        assert!(
            wait_exit(old.pid, EVENT_TIMEOUT),
            "round {round}: old generation {} did not exit (or was not reaped)",
            old.pid
        );
        wait_until(
            "clients served by the new generation",
            EVENT_TIMEOUT,
            || load.count_from(pid) >= 4,
        );
        old = ready;
    }
    let report = load.stop();
    report.assert_no_failures(&format!("stderr:\n{}", service.stderr()));
    assert!(
        service.wait_first_exit(),
        "the first generation was not reaped"
    );
    let status = ControlClient::status(&service.control).expect("status");
    assert_eq!((status.pid, status.generation), (old.pid, 4));
    assert_eq!((status.restarts, status.failed_restarts), (3, 0));
    assert_eq!(zombies_of(old.pid), Vec::<u32>::new());
}

/// Spawning inline, the locked-down service cannot start its successor: the
/// restart fails with EPERM, and the service keeps serving, then stops
/// cleanly.
#[test]
fn spawning_inline_a_locked_down_service_cannot_restart_but_keeps_serving() {
    let mut service = start_locked_down(&[("SHELLFLIP_SPAWNER", "inline")]);
    let pid = service.current.pid;
    match ControlClient::restart(&service.control).expect("restart request") {
        Response::RestartFailed { kind, reason } => {
            assert_eq!(kind, "failed", "{reason}");
            assert!(
                reason.contains("Operation not permitted") || reason.contains("EPERM"),
                "the reason does not show the spawn was refused: {reason}"
            );
        }
        other => panic!(
            "expected the restart to fail, got {other:?}\nstderr:\n{}",
            service.stderr()
        ),
    }
    assert_eq!(service.exchange().expect("an exchange").pid, pid);
    let status = ControlClient::status(&service.control).expect("status");
    assert_eq!((status.pid, status.generation), (pid, 1));
    assert_eq!((status.restarts, status.failed_restarts), (0, 1));
    assert!(is_alive(pid));

    let stopped = ControlClient::stop_and_wait(&service.control, EVENT_TIMEOUT).expect("stop");
    assert_eq!(stopped, pid);
    assert_eq!(
        service.wait_first_exit_status(),
        Some(0),
        "stderr:\n{}",
        service.stderr()
    );
}
