//! The fault matrix: restarts that fail in every way we could think of, on
//! real processes. After each, the old generation must keep answering with
//! no failed connection, the initiator must get the true reason, and no
//! zombie may remain.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use shellflip::client::ControlClient;
use shellflip::control::Response;

/// Opens a connection to the current generation, then restarts: the old
/// generation drains, kept from exiting by that connection until it is
/// finished or dropped. The connection and the new generation.
fn restart_while_holding_a_connection(service: &mut Echo) -> (Held, Ready) {
    let held = hold_connection(service.addr);
    cli_restart_ok(service);
    (held, service.next_ready())
}

#[test]
fn every_failing_new_generation_is_rolled_back_under_load() {
    let mut service = start_faulty(&[], &[("SHELLFLIP_READY_TIMEOUT", "2s")]);
    let old = service.current;
    let load = Load::start(service.addr, 8, 1_000_000, Duration::from_secs(120));
    let cases: &[(&str, &[&str])] = &[
        (
            "panic-init",
            &["failed to start", "injected panic during initialisation"],
        ),
        ("abort-init", &["was killed by signal SIGABRT"]),
        ("hang", &["not ready within 2s", "killed"]),
    ];
    for (fault, reason) in cases {
        deploy_fault(&service, fault);
        let before = load.count_from(old.pid);
        restart_fails_with(&service, reason);
        assert!(zombies_of(old.pid).is_empty(), "{fault}: a zombie remains");
        wait_until("the old generation to keep serving", EVENT_TIMEOUT, || {
            load.count_from(old.pid) > before + 8
        });
        let status = ControlClient::status(&service.control).unwrap();
        assert_eq!(status.pid, old.pid, "{fault}");
        assert_eq!(status.phase, "serving", "{fault}");
    }
    // A good build goes through afterwards.
    service.replace_with_binary(&example_binary("faulty"));
    cli_restart_ok(&service);
    let new = service.next_ready();
    assert!(wait_exit(old.pid, EVENT_TIMEOUT));
    wait_until("the new generation to serve", EVENT_TIMEOUT, || {
        load.count_from(new.pid) > 8
    });
    load.stop().assert_no_failures(&service.stderr());
    let status = ControlClient::status(&service.control).unwrap();
    assert_eq!(status.failed_restarts, 3);
}

#[test]
fn ready_then_exit_is_rolled_back_within_the_ready_grace() {
    let service = start_faulty(&[], &[("SHELLFLIP_READY_GRACE", "1s")]);
    let old = service.current;
    let load = Load::start(service.addr, 8, 1_000_000, Duration::from_secs(60));
    wait_until("load", EVENT_TIMEOUT, || load.count_from(old.pid) > 8);
    deploy_fault(&service, "exit-after-ready");
    restart_fails_with(
        &service,
        &["reported ready, then exited with status 7 within the ready grace of 1s"],
    );
    assert!(zombies_of(old.pid).is_empty());
    let before = load.count_from(old.pid);
    wait_until("the old generation to keep serving", EVENT_TIMEOUT, || {
        load.count_from(old.pid) > before + 8
    });
    load.stop().assert_no_failures(&service.stderr());
    assert_eq!(
        ControlClient::status(&service.control).unwrap().phase,
        "serving"
    );
}

#[test]
fn garbage_and_truncated_state_are_refused_by_the_new_generation() {
    for (fault, reason) in [
        (
            "garbage-state",
            "could not decode the handover state `Served`",
        ),
        (
            "truncated-state",
            "could not decode the handover state `Served`",
        ),
    ] {
        let service = start_faulty(&["--fault", fault], &[]);
        restart_fails_with(&service, &["failed to start", reason]);
        assert!(zombies_of(service.current.pid).is_empty());
        assert_eq!(service.exchange().unwrap().pid, service.current.pid);
    }
}

#[test]
fn old_generation_killed_before_the_child_is_ready_lets_the_child_take_over() {
    let mut service = start_faulty(&[], &[]);
    let old = service.current;
    let (initiator, child) = start_slow_restart(&service, 1500);
    kill_pid(old.pid, Signal::SIGKILL);
    assert!(service.wait_first_exit());
    // The initiator learns that its service went away.
    assert!(!matches!(
        initiator.join().unwrap(),
        Ok(Response::Restarted(_))
    ));
    let ready = service.next_ready();
    assert_eq!(ready.pid, child);
    assert_eq!(ready.generation, 2);
    assert_eq!(service.exchange().unwrap().pid, child);
    let status = ControlClient::status(&service.control).unwrap();
    assert_eq!(status.pid, child);
}

#[test]
fn old_generation_killed_while_draining_leaves_the_new_one_serving() {
    let mut service = start_faulty(&[], &[]);
    let old = service.current;
    let (_held, new) = restart_while_holding_a_connection(&mut service);
    kill_pid(old.pid, Signal::SIGKILL);
    assert!(service.wait_first_exit());
    assert_eq!(service.exchange().unwrap().pid, new.pid);
    // A new restart works once the old one is gone.
    cli_restart_ok(&service);
    let third = service.next_ready();
    assert!(wait_exit(new.pid, EVENT_TIMEOUT));
    assert_eq!(service.exchange().unwrap().pid, third.pid);
}

#[test]
fn sigterm_during_a_restart_aborts_it_and_stops() {
    let mut service = start_faulty(&[], &[]);
    let old = service.current;
    let (initiator, child) = start_slow_restart(&service, 20000);
    kill_pid(old.pid, Signal::SIGTERM);
    match initiator.join().unwrap() {
        Ok(Response::RestartFailed { kind, reason }) => {
            assert_eq!(kind, "shutting_down");
            assert!(reason.contains("aborted"), "{reason}");
        }
        other => panic!("expected an aborted restart, got {other:?}"),
    }
    assert_eq!(service.wait_first_exit_status(), Some(0));
    assert!(!is_alive(child), "the aborted new generation was killed");
    assert!(wait_exit(child, EVENT_TIMEOUT));
}

#[test]
fn a_restart_during_a_drain_is_refused_until_the_old_generation_exits() {
    // The echo example: it logs, so the refusals can be waited for.
    let mut service = Echo::start(&[]);
    let old = service.current;
    let (held, new) = restart_while_holding_a_connection(&mut service);
    // The old generation drains (the held connection is open): a restart
    // request, by the control socket or by signal to either process, is
    // refused, and nothing is spawned.
    restart_fails_with(&service, &["in progress"]);
    let refusals = |service: &Echo| service.stderr().matches("restart refused").count();
    let before = refusals(&service);
    kill_pid(new.pid, Signal::SIGUSR1);
    // Signals are asynchronous: wait until the new generation has handled
    // (and refused) its one before the old generation may exit.
    wait_until("the new generation to refuse", EVENT_TIMEOUT, || {
        refusals(&service) > before
    });
    kill_pid(old.pid, Signal::SIGUSR1);
    // Finish the held exchange: the old generation exits.
    held.finish("bye");
    assert!(service.wait_first_exit());
    let status = ControlClient::status(&service.control).unwrap();
    assert_eq!((status.pid, status.generation), (new.pid, 2));
    cli_restart_ok(&service);
    assert_eq!(service.next_ready().generation, 3);
}

#[test]
fn a_hundred_simultaneous_restart_requests_make_one_restart() {
    let mut service = start_faulty(&[], &[]);
    // The new generation takes a second to be ready: every request lands
    // while the restart runs.
    deploy_fault(&service, "slow-init=1000");
    simultaneous_restarts(&mut service, 100);
}

#[test]
fn a_missing_or_non_executable_binary_is_reported() {
    let service = start_faulty(&[], &[]);
    std::fs::set_permissions(&service.exe, std::fs::Permissions::from_mode(0o644)).unwrap();
    restart_fails_with(
        &service,
        &["could not start the new generation", "ermission denied"],
    );
    std::fs::remove_file(&service.exe).unwrap();
    restart_fails_with(
        &service,
        &["could not start the new generation", "No such file"],
    );
    assert_eq!(service.exchange().unwrap().pid, service.current.pid);
    assert!(zombies_of(service.current.pid).is_empty());
}

#[test]
fn control_socket_abuse_is_answered_or_refused() {
    let service = start_faulty(&[], &[]);
    // A client that connects and says nothing is timed out, and does not
    // hold anyone else up meanwhile.
    let mut silent = UnixStream::connect(&service.control).unwrap();
    assert_eq!(
        ControlClient::status(&service.control).unwrap().pid,
        service.current.pid
    );
    silent.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
    let mut reply = Vec::new();
    silent.read_to_end(&mut reply).unwrap();
    assert!(
        String::from_utf8_lossy(&reply).contains("timed out"),
        "{reply:?}"
    );

    // A thousand connections at once: each is answered, or told there are
    // too many; the service is fine afterwards.
    let mut conns: Vec<UnixStream> = (0..1000)
        .map(|_| UnixStream::connect(&service.control).unwrap())
        .collect();
    let request = br#"{"op":"status"}"#;
    for conn in &mut conns {
        let _ = conn.write_all(&(request.len() as u32).to_be_bytes());
        let _ = conn.write_all(request);
    }
    let (mut answered, mut refused) = (0, 0);
    for mut conn in conns {
        conn.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
        let mut len = [0u8; 4];
        if conn.read_exact(&mut len).is_err() {
            refused += 1;
            continue;
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        conn.read_exact(&mut body).unwrap();
        let text = String::from_utf8_lossy(&body);
        if text.contains("\"pid\"") {
            answered += 1;
        } else {
            assert!(text.contains("too many"), "{text}");
            refused += 1;
        }
    }
    assert_eq!(answered + refused, 1000);
    assert!(answered > 0);
    assert_eq!(
        ControlClient::status(&service.control).unwrap().pid,
        service.current.pid
    );

    // Another user is refused by the peer check even if the socket file's
    // mode were opened up by mistake.
    std::fs::set_permissions(service.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&service.control, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = std::process::Command::new(cli_binary())
        .arg("status")
        .arg(&service.control)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("only answers uid 0"),
        "refused by the peer check: {stderr}"
    );
    assert_eq!(service.exchange().unwrap().pid, service.current.pid);
}
