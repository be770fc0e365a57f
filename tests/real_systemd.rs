//! Under the real systemd (252 on Debian 12), booted as PID 1 of new
//! namespaces (`shellflip_testkit::machine`), with the unit files of
//! docs/systemd.md: start, reloads under load, a failing reload, a stop
//! with a held connection, socket activation by name, the new generation
//! killed while the old one drains (systemd restarts the service), the
//! new generation killed during its probation (MainPID back to the old
//! one), and listeners kept in the fd store across a crash.
//!
//! Needs root, `unshare`, `nsenter`, `ip`, systemd and cgroup2 (skipped
//! with a message otherwise; `.ci/run` installs what a fresh Debian
//! machine lacks). The machine has its own loopback: each test moves its
//! thread into the machine's network namespace, and its clients with it.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use shellflip_testkit::machine::{cannot_boot, Machine};

/// The echo service, as docs/systemd.md writes its unit, with `extra`
/// lines added to `[Service]`. It listens on 127.0.0.1:7000 of the
/// machine; its output goes to `echo.log` in the machine's directory.
fn echo_unit(extra: &str) -> String {
    format!(
        "[Unit]
Description=echo (zero-downtime restarts with shellflip)
DefaultDependencies=no

[Service]
Type=notify
NotifyAccess=all
ExecStart=/run/shellflip-test/bin/echo --listen 127.0.0.1:7000 --control /run/echo/control.sock
ExecReload=/run/shellflip-test/bin/shellflip restart /run/echo/control.sock
KillMode=control-group
KillSignal=SIGTERM
Environment=SHELLFLIP_PROBATION=200ms
Environment=SHELLFLIP_DRAIN_TIMEOUT=20s
Environment=RUST_LOG=shellflip_runtime=debug,info
RuntimeDirectory=echo
StandardOutput=append:/run/shellflip-test/echo.log
StandardError=append:/run/shellflip-test/echo.log
TimeoutStartSec=60s
TimeoutStopSec=60s
Restart=on-failure
RestartSec=200ms
{extra}
"
    )
}

const ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 7000);

/// Boots a machine with `units`, the echo example and the CLI installed,
/// and moves this thread into its network; `None` (skipped, with the
/// reason on stderr) where it cannot run.
fn boot(units: &[(&str, &str)]) -> Option<Machine> {
    if let Some(why) = cannot_boot() {
        eprintln!("skipped: cannot boot systemd in namespaces here: {why}");
        return None;
    }
    let machine = Machine::boot(units);
    machine.install(&example_binary("echo"), "echo");
    machine.install(&cli_binary(), "shellflip");
    machine.enter_network();
    Some(machine)
}

/// The service's log and systemd's console, for failure messages.
fn logs(machine: &Machine) -> String {
    format!(
        "echo.log:\n{}\nconsole:\n{}",
        machine.file("echo.log"),
        machine.console()
    )
}

/// Start; three reloads under load (0 failed exchanges, MainPID follows
/// each new generation, which is the one answering); a failing reload
/// (fails, MainPID kept, the reason in StatusText); a stop that lets a
/// held connection finish.
#[test]
fn start_reloads_under_load_a_failing_reload_and_a_stop() {
    let Some(machine) = boot(&[("echo.service", &echo_unit(""))]) else {
        return;
    };
    let addr = SocketAddr::from(ADDR);
    machine.systemctl_ok(&["start", "echo.service"]);
    let first = machine.main_pid("echo.service");
    let greeting = exchange(addr, "hello").unwrap_or_else(|e| panic!("{e}\n{}", logs(&machine)));
    assert_eq!(greeting.pid, first);

    let load = Load::start(addr, 4, 1_000_000, EVENT_TIMEOUT);
    let mut main_pids = vec![first];
    for _ in 0..3 {
        machine.systemctl_ok(&["reload", "echo.service"]);
        let main = machine.main_pid("echo.service");
        assert!(
            !main_pids.contains(&main),
            "MainPID {main} after {main_pids:?}"
        );
        assert_eq!(exchange(addr, "who").unwrap().pid, main);
        main_pids.push(main);
    }
    let report = load.stop();
    report.assert_no_failures(&logs(&machine));
    eprintln!(
        "reloads under load: MainPID {main_pids:?}, {} exchanges, 0 failed",
        report.ok
    );

    // A build that cannot start: the reload fails, generation 4 serves on.
    machine.deploy_script(
        "#!/bin/sh\necho 'this build is broken' >&2\nexit 3\n",
        "echo",
    );
    let out = machine.systemctl(&["reload", "echo.service"]);
    assert!(!out.status.success(), "a failing reload succeeded");
    let serving = *main_pids.last().unwrap_or(&0);
    assert_eq!(machine.main_pid("echo.service"), serving);
    let status = machine.show("echo.service", "StatusText");
    assert!(status.contains("status 3"), "StatusText={status}");
    assert_eq!(exchange(addr, "still").unwrap().pid, serving);
    eprintln!(
        "failing reload: {}; MainPID kept {serving}; StatusText={status}",
        out.status
    );
    machine.deploy(&example_binary("echo"), "echo");

    // A stop: the held connection's exchange finishes after the listener
    // closed; the unit ends cleanly.
    let held = hold_connection(addr);
    machine.systemctl_ok(&["stop", "--no-block", "echo.service"]);
    let echoed = held.finish_after_listener_closes(addr, "bye");
    assert_eq!(echoed, "bye\n", "{}", logs(&machine));
    machine.wait_show("echo.service", "ActiveState", EVENT_TIMEOUT, |s| {
        s == "inactive"
    });
    assert_eq!(machine.show("echo.service", "Result"), "success");
}

/// A socket unit passes the listener under `FileDescriptorName=echo`: the
/// service adopts it by name (its code asks for another address), the first
/// connection starts it, and reloads keep serving on it.
#[test]
fn socket_activation_by_name() {
    let socket = "[Unit]
DefaultDependencies=no

[Socket]
ListenStream=127.0.0.1:7001
FileDescriptorName=echo
Service=echo.service
";
    let unit = echo_unit("")
        .replace("--listen 127.0.0.1:7000", "--listen 127.0.0.1:7999")
        .replace(
            "[Unit]\n",
            "[Unit]\nRequires=echo.socket\nAfter=echo.socket\n",
        );
    let Some(machine) = boot(&[("echo.socket", socket), ("echo.service", &unit)]) else {
        return;
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], 7001));
    machine.systemctl_ok(&["start", "echo.socket"]);
    // The first connection starts the service.
    let greeting = exchange(addr, "hello").unwrap_or_else(|e| panic!("{e}\n{}", logs(&machine)));
    assert_eq!(greeting.pid, machine.main_pid("echo.service"));
    machine.systemctl_ok(&["reload", "echo.service"]);
    let main = machine.main_pid("echo.service");
    assert_ne!(main, greeting.pid);
    assert_eq!(exchange(addr, "again").unwrap().pid, main);
    assert!(
        TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], 7999))).is_err(),
        "the address in the code was bound although systemd passed the socket"
    );
}

/// The new generation SIGKILLed while the old one still drains (a held
/// connection): the new one's spawner is gone, so systemd is its parent,
/// sees it die, and `Restart=on-failure` starts the service again.
#[test]
fn the_new_generation_killed_during_the_old_ones_drain_is_restarted_by_systemd() {
    // The old generation's drain lasts its 3s (a held connection): the
    // kill comes within it, and systemd's stop waits for it.
    let unit = echo_unit("").replace("DRAIN_TIMEOUT=20s", "DRAIN_TIMEOUT=3s");
    let Some(machine) = boot(&[("echo.service", &unit)]) else {
        return;
    };
    let addr = SocketAddr::from(ADDR);
    machine.systemctl_ok(&["start", "echo.service"]);
    let old = machine.main_pid("echo.service");
    let _held = hold_connection(addr); // generation 1 drains until it ends
    machine.systemctl_ok(&["reload", "echo.service"]);
    let new = machine.main_pid("echo.service");
    assert_ne!(new, old);
    // Once the probation is over the old generation releases its spawner:
    // the new generation is re-parented to systemd (PID 1 of the machine).
    let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
    while machine.parent_of(new) != Some(1) {
        assert!(std::time::Instant::now() < deadline, "{}", logs(&machine));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        machine.parent_of(old).is_some(),
        "the old generation should still drain"
    );
    machine.systemctl_ok(&[
        "kill",
        "--kill-whom=main",
        "--signal=SIGKILL",
        "echo.service",
    ]);
    let restarts = machine.wait_show("echo.service", "NRestarts", EVENT_TIMEOUT, |n| n == "1");
    machine.wait_show("echo.service", "ActiveState", EVENT_TIMEOUT, |s| {
        s == "active"
    });
    let third = machine.main_pid("echo.service");
    assert!(third != old && third != new && third != 0);
    assert_eq!(exchange(addr, "back").unwrap().pid, third);
    eprintln!(
        "new generation {new} killed during {old}'s drain: NRestarts={restarts}, MainPID {third}"
    );
}

/// A new generation that dies during its probation (SIGKILLed by systemd
/// itself, as `MainPID` then names it) under load: the old generation takes
/// the service back and tells systemd (`MAINPID=` the old pid, `READY=1`,
/// the reason in `StatusText`). The unit stays active without a restart,
/// and from then on every connection is served by the old generation.
#[test]
fn a_new_generation_killed_during_its_probation_hands_mainpid_back() {
    let unit = echo_unit("").replace("SHELLFLIP_PROBATION=200ms", "SHELLFLIP_PROBATION=60s");
    let Some(machine) = boot(&[("echo.service", &unit)]) else {
        return;
    };
    let addr = SocketAddr::from(ADDR);
    machine.systemctl_ok(&["start", "echo.service"]);
    let old = machine.main_pid("echo.service");
    let load = Load::start(addr, 4, 1_000_000, EVENT_TIMEOUT);
    wait_until("load on the old generation", EVENT_TIMEOUT, || {
        load.count_from(old) > 8
    });
    machine.systemctl_ok(&["reload", "echo.service"]);
    let new = machine.main_pid("echo.service");
    assert_ne!(new, old);
    machine.systemctl_ok(&[
        "kill",
        "--kill-whom=main",
        "--signal=SIGKILL",
        "echo.service",
    ]);
    machine.wait_show("echo.service", "MainPID", EVENT_TIMEOUT, |p| {
        p == old.to_string()
    });
    let status = machine.show("echo.service", "StatusText");
    assert!(
        status.contains("during its probation; rolled back"),
        "StatusText={status}\n{}",
        logs(&machine)
    );
    assert_eq!(machine.show("echo.service", "ActiveState"), "active");
    assert_eq!(machine.show("echo.service", "NRestarts"), "0");
    let during = load.stop();
    // Only the connections the killed process held may have failed.
    let after = Load::start(addr, 4, 50, EVENT_TIMEOUT);
    let seen = after.seen.clone();
    after.stop().assert_no_failures(&logs(&machine));
    assert!(
        seen.lock().unwrap().iter().all(|g| g.pid == old),
        "{:?}",
        seen.lock().unwrap()
    );
    eprintln!(
        "new generation {new} killed during its probation: MainPID back to {old}, StatusText={status}; {} exchanges under load, {} failed (held by the killed process)",
        during.ok,
        during.failures.len()
    );
}

/// With the fd store, a crash (the main process SIGKILLed under load;
/// systemd kills the rest of the unit) refuses no connection: the listener
/// stays in systemd's store, connections queue in its backlog, and the next
/// first generation adopts it. Exchanges in flight at the kill are cut;
/// none is refused. A `systemctl restart` under load fails none at all.
#[test]
fn listeners_in_the_fd_store_survive_a_crash() {
    // As docs/systemd.md recommends: the control socket's file outlives the
    // restarts too, so the stored control socket is adopted, not replaced.
    let unit = echo_unit(
        "FileDescriptorStoreMax=8\nEnvironment=SHELLFLIP_FD_STORE=1\nRuntimeDirectoryPreserve=restart",
    );
    let Some(machine) = boot(&[("echo.service", &unit)]) else {
        return;
    };
    let addr = SocketAddr::from(ADDR);
    machine.systemctl_ok(&["start", "echo.service"]);
    let first = machine.main_pid("echo.service");
    // The listener and the control socket.
    machine.wait_show("echo.service", "NFileDescriptorStore", EVENT_TIMEOUT, |n| {
        n == "2"
    });

    let load = Load::start(addr, 4, 1_000_000, EVENT_TIMEOUT);
    wait_until("exchanges before the crash", EVENT_TIMEOUT, || {
        load.count_from(first) > 20
    });
    machine.systemctl_ok(&[
        "kill",
        "--kill-whom=main",
        "--signal=SIGKILL",
        "echo.service",
    ]);
    machine.wait_show("echo.service", "NRestarts", EVENT_TIMEOUT, |n| n == "1");
    let second = machine.wait_show("echo.service", "MainPID", EVENT_TIMEOUT, |p| {
        !p.is_empty() && p != "0" && p != first.to_string()
    });
    let second: u32 = second.parse().unwrap_or(0);
    wait_until("exchanges after the restart", EVENT_TIMEOUT, || {
        load.count_from(second) > 20
    });
    let report = load.stop();
    let refused: Vec<&String> = report
        .failures
        .iter()
        .filter(|f| f.contains(": connect: "))
        .collect();
    assert!(
        refused.is_empty(),
        "refused: {refused:?}\n{}",
        logs(&machine)
    );
    // Adopted, not bound anew (the stored socket holds the port: a bind
    // would fail), and stored once, not twice; the control socket too.
    assert_eq!(machine.show("echo.service", "NFileDescriptorStore"), "2");
    let log = machine.file("echo.log");
    assert!(!log.contains("has no file any more"), "{log}");
    let status = machine.run(&[
        "/run/shellflip-test/bin/shellflip",
        "status",
        "/run/echo/control.sock",
    ]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    eprintln!(
        "fd store: SIGKILL under load, MainPID {first} -> {second}: {} exchanges, 0 refused, {} cut at the kill",
        report.ok,
        report.failures.len()
    );

    // `systemctl restart` under load: the stop is graceful (in-flight
    // exchanges finish), systemd keeps the store across it, and the next
    // first generation serves what queued meanwhile: not one failure.
    let load = Load::start(addr, 4, 1_000_000, EVENT_TIMEOUT);
    wait_until("exchanges before the restart", EVENT_TIMEOUT, || {
        load.count_from(second) > 20
    });
    machine.systemctl_ok(&["restart", "echo.service"]);
    let third = machine.main_pid("echo.service");
    assert_ne!(third, second);
    wait_until("exchanges after the restart", EVENT_TIMEOUT, || {
        load.count_from(third) > 20
    });
    let report = load.stop();
    report.assert_no_failures(&logs(&machine));
    assert_eq!(machine.show("echo.service", "NFileDescriptorStore"), "2");
    eprintln!(
        "fd store: systemctl restart under load, MainPID {second} -> {third}: {} exchanges, 0 failed",
        report.ok
    );
}

/// `SHELLFLIP_KEEPER=1`, a stop right after a reload, while the new
/// generation is on probation: the new generation (the keeper's main pid)
/// exits before the old one released its spawner, so the spawner reaps it,
/// not the keeper; the spawner reports its status to the keeper, and the
/// unit ends with `Result=success` (it ended `exit-code` in 2 of 6 such
/// stops before the report existed). Eight rounds.
#[test]
fn a_keeper_stopped_during_a_probation_reports_the_real_exit() {
    let unit = echo_unit("Environment=SHELLFLIP_KEEPER=1");
    let Some(machine) = boot(&[("echo.service", &unit)]) else {
        return;
    };
    for round in 1..=8 {
        machine.systemctl_ok(&["start", "echo.service"]);
        machine.systemctl_ok(&["reload", "echo.service"]);
        machine.systemctl_ok(&["stop", "echo.service"]);
        assert_eq!(
            machine.show("echo.service", "Result"),
            "success",
            "round {round}: ExecMainStatus={}; echo.log:\n{}",
            machine.show("echo.service", "ExecMainStatus"),
            machine.file("echo.log")
        );
    }
}

/// `SHELLFLIP_KEEPER=1` under systemd: the keeper is the unit's main
/// process for good and passes the generations' notifications on without
/// `MAINPID=`: the start completes on READY, a reload switches the serving
/// generation while MainPID stays the keeper, and a stop ends cleanly.
#[test]
fn a_keeper_under_systemd_passes_notifications_on() {
    let unit = echo_unit("Environment=SHELLFLIP_KEEPER=1");
    let Some(machine) = boot(&[("echo.service", &unit)]) else {
        return;
    };
    let addr = SocketAddr::from(ADDR);
    machine.systemctl_ok(&["start", "echo.service"]);
    let keeper = machine.main_pid("echo.service");
    let first = exchange(addr, "hello").unwrap().pid;
    assert_ne!(first, keeper, "generation 1 runs as the keeper's child");
    assert_eq!(machine.parent_of(first), Some(keeper));
    machine.systemctl_ok(&["reload", "echo.service"]);
    assert_eq!(machine.main_pid("echo.service"), keeper);
    let second = exchange(addr, "again").unwrap().pid;
    assert_ne!(second, first);
    let status = machine.show("echo.service", "StatusText");
    assert!(status.contains("generation 2"), "StatusText={status}");
    machine.systemctl_ok(&["stop", "echo.service"]);
    assert_eq!(machine.show("echo.service", "Result"), "success");
}
