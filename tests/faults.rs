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
fn ready_then_exit_is_rolled_back_during_the_probation() {
    let service = start_faulty(&[], &[("SHELLFLIP_PROBATION", "2s")]);
    let old = service.current;
    let load = Load::start(service.addr, 8, 1_000_000, Duration::from_secs(60));
    wait_until("load", EVENT_TIMEOUT, || load.count_from(old.pid) > 8);
    deploy_fault(&service, "exit-after-ready");
    // READY reached the old generation: the restart is reported done...
    cli_restart_ok(&service);
    // ...and rolled back when the new generation exits 50 ms later.
    wait_until("the rollback", EVENT_TIMEOUT, || {
        // The old generation answers before the new one takes over, so
        // the rollback shows as the failure being recorded.
        ControlClient::status(&service.control)
            .is_ok_and(|s| s.pid == old.pid && s.failed_restarts == 1)
    });
    let status = ControlClient::status(&service.control).unwrap();
    assert_eq!(status.phase, "serving");
    assert_eq!(status.failed_restarts, 1);
    let last = status.last_restart.expect("the rollback is recorded");
    let error = last.error.unwrap_or_default();
    assert!(
        error.contains("exited with status 7 during its probation; rolled back"),
        "{error}"
    );
    assert!(zombies_of(old.pid).is_empty());
    // What it left behind in its process group (a `sleep 300`) was killed
    // before the rollback (it only waits to be reaped by its new parent).
    let left_behind: u32 = std::fs::read_to_string(service.control.with_extension("left-behind"))
        .unwrap()
        .parse()
        .unwrap();
    if !wait_exit(left_behind, EVENT_TIMEOUT) {
        kill_pid(left_behind, Signal::SIGKILL);
        panic!("the failed generation's own process {left_behind} outlived the rollback");
    }
    let before = load.count_from(old.pid);
    wait_until("the old generation to keep serving", EVENT_TIMEOUT, || {
        load.count_from(old.pid) > before + 8
    });
    load.stop().assert_no_failures(&service.stderr());
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
fn a_restart_during_a_drain_is_served_by_the_new_generation() {
    // The echo example: it logs, so the refusals can be waited for.
    let mut service = Echo::start(&[]);
    let old = service.current;
    let (held, new) = restart_while_holding_a_connection(&mut service);
    // The old generation drains (the held connection is open) and has
    // handed over: a restart signal to it is refused with a log line that
    // names its successor, and nothing is spawned.
    let refusals = |service: &Echo| service.stderr().matches("restart refused").count();
    let before = refusals(&service);
    kill_pid(old.pid, Signal::SIGUSR1);
    wait_until("the old generation to refuse", EVENT_TIMEOUT, || {
        refusals(&service) > before
    });
    assert!(
        service.stderr().contains(&format!(
            "has handed over to generation 2 (pid {})",
            new.pid
        )),
        "{}",
        service.stderr()
    );
    // The new generation is the service: it restarts while the first one
    // still drains.
    cli_restart_ok(&service);
    let third = service.next_ready();
    assert_eq!(third.generation, 3);
    assert!(is_alive(old.pid), "the first generation still drains");
    held.finish("bye");
    assert!(service.wait_first_exit());
    let status = ControlClient::status(&service.control).unwrap();
    assert_eq!((status.pid, status.generation), (third.pid, 3));
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
    // The CLI from a place that user can reach: the build's own directory
    // may not be (a checkout under a 0700 directory, as `mktemp -d` makes).
    let cli_for_nobody = service.dir.path().join("shellflip");
    copy_executable(&cli_binary(), &cli_for_nobody).unwrap();
    std::fs::set_permissions(&cli_for_nobody, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(&cli_for_nobody)
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

// ---------------------------------------------------------------------------
// The CLI against services that do not answer, and across PID namespaces
// (issue 13)
// ---------------------------------------------------------------------------

/// Asserts that `command` gave up after `--timeout 1s` with exit status 1
/// and said what it knew.
fn gives_up_after_1s(command: &str, out: &std::process::Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{command}: {stderr}");
    let expected = format!(
        "{command} failed: connected, but no answer within 1s: the service may be stopped \
         (SIGSTOP) or its first generation not ready yet"
    );
    assert!(stderr.starts_with(&expected), "{command}: {stderr}");
}

/// Issue 13: `status` and `restart` hung for over 60 s against a SIGSTOPped
/// service; every command now gives up after its timeout.
#[test]
fn the_cli_gives_up_on_a_stopped_service() {
    let service = Echo::start(&[]);
    kill_pid(service.current.pid, Signal::SIGSTOP);
    for command in ["status", "restart", "stop"] {
        gives_up_after_1s(command, &cli(&service, command, &["--timeout", "1s"]));
    }
    // Dropping `service` kills it, still stopped, with the requests it
    // never read.
}

/// A process this test started, its stdout lines on a channel; killed (by
/// pid) when dropped.
struct Started {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Started {
    fn spawn(command: &mut std::process::Command) -> Started {
        use std::io::BufRead;
        command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped());
        let mut child = spawn_retrying_busy(command);
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Started { child, lines }
    }

    /// The next stdout line starting with `prefix`.
    fn line(&self, prefix: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(EVENT_TIMEOUT)
                .unwrap_or_else(|_| panic!("no {prefix:?} line"));
            if line.starts_with(prefix) {
                return line;
            }
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        reap_exited_spawners();
    }
}

/// Issue 13: the same against a first generation that never calls
/// `ready()`: its control socket is listening but not answered yet.
#[test]
fn the_cli_gives_up_on_a_first_generation_that_is_never_ready() {
    become_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("control.sock");
    let service = Started::spawn(
        std::process::Command::new(example_binary("faulty"))
            .args(["--listen", "127.0.0.1:0", "--fault", "hang", "--control"])
            .arg(&control),
    );
    service.line("hanging pid=");
    for command in ["status", "restart", "stop"] {
        let out = std::process::Command::new(cli_binary())
            .arg(command)
            .arg(&control)
            .args(["--timeout", "1s"])
            .output()
            .unwrap();
        gives_up_after_1s(command, &out);
    }
}

/// The pid, in this process's PID namespace, of the process that is
/// `inside` in the namespace of `root`'s descendants.
fn outside_pid(inside: u32, root: u32) -> u32 {
    let descends = |mut pid: u32| {
        for _ in 0..64 {
            if pid == root {
                return true;
            }
            match parent_of(pid) {
                Some(parent) if parent != 0 => pid = parent,
                _ => return false,
            }
        }
        false
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let Some(nspids) = status.lines().find_map(|l| l.strip_prefix("NSpid:")) else {
            continue;
        };
        let nspids: Vec<&str> = nspids.split_whitespace().collect();
        if nspids.len() >= 2 && nspids.last() == Some(&inside.to_string().as_str()) && descends(pid)
        {
            found.push(pid);
        }
    }
    assert_eq!(found.len(), 1, "pid {inside} inside: {found:?}");
    found[0]
}

/// Issue 13: `stop` polled the service's pid in the caller's `/proc`; from
/// outside a PID namespace that number is another process (it waited the
/// full timeout for a kernel thread). And the pids shown must be the
/// caller's. The service runs in a new PID namespace (as in a container,
/// under a keeper as its PID 1), the CLI outside.
#[test]
fn the_cli_shows_and_waits_for_pids_across_pid_namespaces() {
    // /proc/self belongs to this process's user.
    let root_user =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
    let unshare_works = root_user
        && std::process::Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "true"])
            .status()
            .is_ok_and(|status| status.success());
    if !unshare_works {
        eprintln!("skipped: needs root and a working `unshare --pid --fork --mount-proc`");
        return;
    }
    become_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("echo");
    copy_executable(&example_binary("echo"), &exe).unwrap();
    let control = dir.path().join("control.sock");
    // PID 1 inside is a keeper (sleep) that outlives the generations; the
    // service is its child.
    let namespace = Started::spawn(
        std::process::Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
            .args(["sh", "-c", r#""$0" "$@" & exec sleep 1000000"#])
            .arg(&exe)
            .args(["--listen", "127.0.0.1:0", "--control"])
            .arg(&control),
    );
    let root = namespace.child.id();
    let ready = |service: &Started| parse_ready(&service.line("ready ")).unwrap();
    let first = ready(&namespace);
    let first_outside = outside_pid(first.pid, root);
    assert_ne!(first.pid, first_outside);
    let run = |command: &str, extra: &[&str]| {
        let out = std::process::Command::new(cli_binary())
            .arg(command)
            .arg(&control)
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{command}: {stderr}");
        stdout
    };

    let status = run("status", &[]);
    let expected = format!(
        "pid:             {first_outside} ({} in the service's PID namespace)\n",
        first.pid
    );
    assert!(status.contains(&expected), "{status}");

    let restarted = run("restart", &[]);
    let second = ready(&namespace);
    assert_eq!(second.generation, 2);
    let second_outside = outside_pid(second.pid, root);
    assert!(
        restarted.starts_with(&format!("restarted: pid={second_outside} generation=2 in ")),
        "{restarted} (pid {} inside, {second_outside} outside)",
        second.pid
    );

    // Before the fix this waited the whole timeout for the process that
    // has the inside pid's number out here.
    let stopped = run("stop", &["--timeout", "20s"]);
    assert_eq!(
        stopped,
        format!("stopped: pid={second_outside}; no process of the service is left\n")
    );
    wait_until("the service to exit", EVENT_TIMEOUT, || {
        !is_alive(second_outside)
    });
}
