//! The spawner: the helper process each generation forks at start-up, before
//! the service's own code runs, and which starts the next generation.

mod common;

use std::os::unix::process::CommandExt;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shellflip::client::ControlClient;

/// The bit of signal number `signal` in a /proc signal mask.
const fn bit(signal: u32) -> u64 {
    1 << (signal - 1)
}

/// HUP, INT, USR1, USR2 and TERM, as bits of a /proc signal mask.
const GROUP_SIGNALS: u64 = bit(1) | bit(2) | bit(10) | bit(12) | bit(15);

/// The blocked and ignored signal masks of `pid`'s main thread.
fn signal_masks(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mask = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap()
    };
    (mask("SigBlk:"), mask("SigIgn:"))
}

/// The `socket:[inode]` links among the descriptors of `pid`.
fn socket_inodes_of(pid: u32) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let link = std::fs::read_link(e.ok()?.path()).ok()?;
            let link = link.to_str()?;
            link.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// The inode of the TCP socket listening on 127.0.0.1:`port`.
fn listening_inode(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            (fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A"))
                .then(|| fields.get(9)?.parse().ok())
                .flatten()
        })
        .unwrap_or_else(|| panic!("no listening socket on 127.0.0.1:{port}"))
}

/// Every generation has its own spawner, forked at start-up: a child named
/// `shellflip-spawn` that holds none of the service's sockets, reported by
/// `status`, parent of the next generation, gone with its generation.
#[test]
fn each_generation_has_a_spawner_which_starts_the_next_one() {
    let mut service = start_faulty(&[], &[]);
    let old = service.current;
    let spawner = spawner_of(old.pid).expect("a shellflip-spawn child of the service");
    let status = ControlClient::status(&service.control).unwrap();
    assert_eq!(status.spawner_pid, Some(spawner));

    let listener = listening_inode(service.addr.port());
    assert!(
        socket_inodes_of(old.pid).contains(&listener),
        "the service holds its listener"
    );
    assert!(
        !socket_inodes_of(spawner).contains(&listener),
        "the spawner must not hold the listener"
    );

    // A build that takes a while to start: while it does, it is the
    // spawner's child, not the service's.
    let (initiator, child) = start_slow_restart(&service, 500);
    assert_eq!(
        parent_of(child),
        Some(spawner),
        "parent of the new generation"
    );
    initiator.join().unwrap().expect("the restart succeeds");
    let new = service.next_ready();
    assert_eq!(new.pid, child);
    // What the spawner does to survive signals sent to the whole group must
    // not reach the generation it starts: nothing blocked, none ignored.
    let (blocked, ignored) = signal_masks(new.pid);
    assert_eq!(blocked, 0, "signals blocked in the new generation");
    assert_eq!(
        ignored & GROUP_SIGNALS,
        0,
        "signals ignored in the new generation"
    );

    assert!(
        wait_exit(old.pid, EVENT_TIMEOUT),
        "the old generation exits"
    );
    assert!(wait_exit(spawner, EVENT_TIMEOUT), "its spawner follows it");
    let next_spawner = spawner_of(new.pid).expect("the new generation's spawner");
    assert_ne!(next_spawner, spawner);
    let status = ControlClient::status(&service.control).unwrap();
    assert_eq!(status.spawner_pid, Some(next_spawner));
    assert!(zombies_of(new.pid).is_empty());
}

/// `SHELLFLIP_SPAWNER=inline`: no spawner; the service spawns the next
/// generation itself, which then is its child.
#[test]
fn inline_spawning_restarts_without_a_spawner() {
    let mut service = start_faulty(&[], &[("SHELLFLIP_SPAWNER", "inline")]);
    let old = service.current;
    assert_eq!(spawner_of(old.pid), None);
    let status = ControlClient::status(&service.control).unwrap();
    assert_eq!(status.spawner_pid, None);

    let (initiator, child) = start_slow_restart(&service, 300);
    assert_eq!(
        parent_of(child),
        Some(old.pid),
        "parent of the new generation"
    );
    initiator.join().unwrap().expect("the restart succeeds");
    let new = service.next_ready();
    assert!(wait_exit(old.pid, EVENT_TIMEOUT));
    assert_eq!(spawner_of(new.pid), None);
    assert_eq!(service.exchange().unwrap().pid, new.pid);
}

/// A spawner killed behind the service's back: the service reaps it, keeps
/// serving, and every restart fails at once saying why and what to do.
#[test]
fn a_killed_spawner_is_reaped_and_restarts_fail_clearly() {
    let service = start_faulty(&[], &[]);
    let spawner = spawner_of(service.current.pid).expect("spawner");
    kill_pid(spawner, Signal::SIGKILL);
    wait_until("the service to reap its spawner", EVENT_TIMEOUT, || {
        !std::path::Path::new(&format!("/proc/{spawner}")).exists()
    });
    for _ in 0..2 {
        restart_fails_with(
            &service,
            &[
                &format!("the spawner process (pid {spawner})"),
                "is gone (it was killed by signal SIGKILL)",
                "SHELLFLIP_SPAWNER=inline",
            ],
        );
    }
    assert_eq!(service.exchange().unwrap().pid, service.current.pid);
    let status = ControlClient::status(&service.control).unwrap();
    assert_eq!(status.phase, "serving");
    assert_eq!(status.failed_restarts, 2);
    assert_eq!(
        status.spawner_pid, None,
        "a dead spawner's pid is not shown"
    );
    assert!(zombies_of(service.current.pid).is_empty());
}

/// The restart signal sent to the whole process group (a terminal, a
/// careless `kill -USR1 -PGID`) reaches the spawner too: it survives it and
/// still starts the next generation. So does the SIGTERM of a stop.
#[test]
fn signals_sent_to_the_process_group_spare_the_spawner() {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<std::ffi::OsString> = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--control".into(),
        dir.path().join("control.sock").into(),
    ];
    // A process group of its own, created here: the only group signalled.
    let mut service = Echo::start_prepared(dir, &example_binary("echo"), &args, &[], |cmd, _| {
        cmd.process_group(0);
    });
    let old = service.current;
    let spawner = spawner_of(old.pid).expect("spawner");
    kill(Pid::from_raw(-(old.pid as i32)), Signal::SIGUSR1).unwrap();
    let new = service.next_ready();
    assert_eq!(new.generation, old.generation + 1);
    assert!(wait_exit(old.pid, EVENT_TIMEOUT));
    assert!(wait_exit(spawner, EVENT_TIMEOUT));
    assert_eq!(service.exchange().unwrap().pid, new.pid);

    // A stop by SIGTERM to the whole group (what systemd's
    // KillMode=control-group does), while a connection keeps the service
    // draining: the spawner stays with its generation until it exits.
    let spawner = spawner_of(new.pid).expect("spawner");
    let held = hold_connection(service.addr);
    kill(Pid::from_raw(-(old.pid as i32)), Signal::SIGTERM).unwrap();
    wait_until("the listener to close", EVENT_TIMEOUT, || {
        std::net::TcpStream::connect(service.addr).is_err()
    });
    assert!(is_alive(spawner), "the spawner died of the group's SIGTERM");
    assert_eq!(held.finish("bye"), "bye\n");
    assert!(wait_exit(new.pid, EVENT_TIMEOUT));
    assert!(wait_exit(spawner, EVENT_TIMEOUT));
    assert!(
        !service.stderr().contains("the spawner is gone"),
        "{}",
        service.stderr()
    );
}
