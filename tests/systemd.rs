//! systemd integration, end to end, without systemd: the test plays the
//! service manager. It owns the `NOTIFY_SOCKET` datagram socket, passes
//! sockets the way socket activation does (fd 3, `LISTEN_FDS`,
//! `LISTEN_FDNAMES`, `LISTEN_PID`), and reads the pid file.
//!
//! Only the echo example's command-line contract is relied on:
//! `--listen ADDR --control PATH`, a listener named `echo`, and a
//! `ready pid=<pid> generation=<g> listen=<addr>` line on stdout at each
//! generation's readiness.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{
    example_binary, kill_pid, restart_failing, restart_ok, wait_exit, wait_until, Echo,
    EVENT_TIMEOUT,
};
use shellflip::client::ControlClient;
use shellflip_testkit::notify::{value, FakeSystemd};

/// Starts the echo example with `--listen <listen> --control
/// <dir>/control.sock` and `env`; `prepare` adjusts the command (or wraps
/// it in one that execs it) before it is spawned.
fn start_echo(
    listen: &str,
    env: &[(&str, &str)],
    prepare: impl FnOnce(&mut Command, &Path),
) -> Echo {
    let dir = tempfile::tempdir().expect("temp dir");
    let args: Vec<OsString> = vec![
        "--listen".into(),
        listen.into(),
        "--control".into(),
        dir.path().join("control.sock").into(),
    ];
    Echo::start_prepared(dir, &example_binary("echo"), &args, env, prepare)
}

/// Stops the service and waits until `pid` (the serving one) is reaped.
fn stop(service: &Echo, pid: u32) {
    let stopped = ControlClient::stop_and_wait(&service.control, EVENT_TIMEOUT).expect("stop");
    assert_eq!(stopped, pid);
    assert!(wait_exit(pid, EVENT_TIMEOUT), "pid {pid} did not exit");
}

/// A good restart, a failing one and a stop produce exactly: READY;
/// RELOADING, MAINPID+READY; RELOADING, READY; STOPPING — with the new
/// generation's pid as MAINPID.
#[test]
fn notify_sequence_across_good_and_failed_restarts_and_stop() {
    let systemd = FakeSystemd::new();
    let notify = systemd.path.to_str().expect("UTF-8 path");
    let env = [
        ("NOTIFY_SOCKET", notify),
        ("SHELLFLIP_READY_TIMEOUT", "10s"),
    ];
    let mut service = start_echo("127.0.0.1:0", &env, |_, _| {});
    let first = service.current;

    let ready = systemd.next_with(&["READY", "STATUS"]);
    assert_eq!(value(&ready, "READY"), "1");
    assert!(
        value(&ready, "STATUS").contains(&format!("pid {}", first.pid)),
        "{ready:?}"
    );

    // A good restart.
    let before = Instant::now();
    let (pid, generation) = restart_ok(&service);
    let second = service.next_ready();
    assert_eq!((second.pid, second.generation), (pid, generation));
    assert_eq!(generation, 2);
    let reloading = systemd.next_with(&["RELOADING", "MONOTONIC_USEC", "STATUS"]);
    assert_eq!(value(&reloading, "RELOADING"), "1");
    let first_reload_usec: u64 = value(&reloading, "MONOTONIC_USEC").parse().unwrap();
    assert!(first_reload_usec > 0);
    let handed_over = systemd.next_with(&["MAINPID", "READY", "STATUS"]);
    assert_eq!(value(&handed_over, "MAINPID"), pid.to_string());
    assert_eq!(value(&handed_over, "READY"), "1");
    assert!(
        wait_exit(first.pid, EVENT_TIMEOUT),
        "the first generation did not exit"
    );

    // A failing restart: the old generation says READY=1 again, no MAINPID.
    service.replace_with_script("#!/bin/sh\necho 'this build is broken' >&2\nexit 3\n");
    let reason = restart_failing(&service);
    assert!(reason.contains("exited with status 3"), "{reason}");
    let elapsed = before.elapsed();
    let reloading = systemd.next_with(&["RELOADING", "MONOTONIC_USEC", "STATUS"]);
    let second_reload_usec: u64 = value(&reloading, "MONOTONIC_USEC").parse().unwrap();
    assert!(
        second_reload_usec > first_reload_usec
            && second_reload_usec - first_reload_usec <= elapsed.as_micros() as u64,
        "MONOTONIC_USEC {first_reload_usec} then {second_reload_usec}, {elapsed:?} apart at most"
    );
    let back = systemd.next_with(&["READY", "STATUS"]);
    assert!(
        value(&back, "STATUS").contains("exited with status 3"),
        "{back:?}"
    );

    // Stop.
    stop(&service, pid);
    let stopping = systemd.next_with(&["STOPPING", "EXTEND_TIMEOUT_USEC", "STATUS"]);
    assert_eq!(value(&stopping, "STOPPING"), "1");
    let extend: u64 = value(&stopping, "EXTEND_TIMEOUT_USEC").parse().unwrap();
    assert!(extend >= 5_000_000, "{extend}");
    systemd.assert_silent();
}

/// The TCP ports `pid` listens on (its fds matched against /proc/net/tcp*).
fn listening_ports(pid: u32) -> BTreeSet<u16> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|target| {
                    let target = target.to_string_lossy().into_owned();
                    Some(
                        target
                            .strip_prefix("socket:[")?
                            .strip_suffix(']')?
                            .to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports = BTreeSet::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address st ... inode
            if fields.len() > 9 && fields[3] == "0A" && inodes.contains(fields[9]) {
                if let Some((_, port)) = fields[1].rsplit_once(':') {
                    ports.insert(u16::from_str_radix(port, 16).unwrap());
                }
            }
        }
    }
    ports
}

/// Socket activation: the echo serves on the socket passed as fd 3 (named
/// `echo`) although its `--listen` says otherwise, never binds its own,
/// closes the passed socket nobody asked for, and keeps serving on the
/// same socket across a restart.
#[test]
fn socket_activation_adopts_fd_3_by_name_and_hands_it_over() {
    let passed = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = passed.local_addr().unwrap();
    let unclaimed = TcpListener::bind("127.0.0.1:0").unwrap();
    // A port the echo is configured with but must not bind: held here, so
    // binding it would fail the start-up.
    let configured = TcpListener::bind("127.0.0.1:0").unwrap();
    let configured_addr = configured.local_addr().unwrap().to_string();

    // Duplicates whose numbers are not 3 or 4, so that dup2 onto 3 and 4
    // cannot clobber them in the child.
    let dup_away = |l: &TcpListener| {
        let mut extra = Vec::new();
        loop {
            let d = l.try_clone().unwrap();
            if d.as_raw_fd() > 4 {
                return d;
            }
            extra.push(d);
        }
    };
    let (fd_a, fd_b) = (dup_away(&passed), dup_away(&unclaimed));
    let (raw_a, raw_b) = (fd_a.as_raw_fd(), fd_b.as_raw_fd());

    let mut service = start_echo(&configured_addr, &[], |cmd, exe| {
        // LISTEN_PID must be the service's own pid, only known after fork:
        // a shell sets it to its own pid, then execs the service.
        let program = std::mem::replace(cmd, Command::new("/bin/sh"));
        let mut wrapped = Command::new("/bin/sh");
        wrapped
            .arg("-c")
            .arg(r#"LISTEN_PID=$$ exec "$0" "$@""#)
            .arg(exe)
            .args(program.get_args())
            .env("LISTEN_FDS", "2")
            .env("LISTEN_FDNAMES", "echo:extra")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in program.get_envs() {
            if let Some(value) = value {
                wrapped.env(key, value);
            }
        }
        // SAFETY: between fork and exec, only dup2 (async-signal-safe) on
        // descriptors the parent keeps open until spawn returns; dup2
        // clears close-on-exec on the new numbers 3 and 4.
        unsafe {
            wrapped.pre_exec(move || {
                for (from, to) in [(raw_a, 3), (raw_b, 4)] {
                    let new = nix::unistd::dup2_raw(BorrowedFd::borrow_raw(from), to)?;
                    std::mem::forget(new);
                }
                Ok(())
            });
        }
        *cmd = wrapped;
    });
    drop((fd_a, fd_b));
    let first = service.current;

    assert_eq!(
        first.listen,
        Some(addr),
        "the echo does not serve on the passed socket"
    );
    assert_eq!(common::exchange(addr, "hello").unwrap().pid, first.pid);
    wait_until(
        "the unclaimed passed socket to be closed",
        EVENT_TIMEOUT,
        || listening_ports(first.pid) == BTreeSet::from([addr.port()]),
    );
    let stderr = service.stderr();
    assert!(
        stderr.contains("adopted the socket systemd passed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("extra"),
        "no warning about the unclaimed socket:\n{stderr}"
    );

    // Across a restart: the same socket, a new pid, nothing bound anew.
    let (pid, _) = restart_ok(&service);
    let second = service.next_ready();
    assert_eq!(second.pid, pid);
    assert_eq!(second.listen, Some(addr));
    assert!(
        wait_exit(first.pid, EVENT_TIMEOUT),
        "the first generation did not exit"
    );
    assert_eq!(common::exchange(addr, "again").unwrap().pid, pid);
    assert_eq!(listening_ports(pid), BTreeSet::from([addr.port()]));
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        !environ
            .split(|b| *b == 0)
            .any(|var| var.starts_with(b"LISTEN_")),
        "LISTEN_* reached the new generation"
    );

    stop(&service, pid);
    drop((passed, unclaimed, configured));
}

/// The pid file names the generation that serves: written at readiness,
/// taken over by the new generation, rewritten by the old one after a
/// failed restart, removed at stop.
#[test]
fn pid_file_follows_the_serving_generation() {
    let pid_dir = tempfile::tempdir().unwrap();
    let pid_path = pid_dir.path().join("echo.pid");
    let read_pid =
        || -> Option<u32> { std::fs::read_to_string(&pid_path).ok()?.trim().parse().ok() };
    let env = [
        ("SHELLFLIP_PID_FILE", pid_path.to_str().expect("UTF-8 path")),
        ("SHELLFLIP_READY_TIMEOUT", "10s"),
    ];
    let mut service = start_echo("127.0.0.1:0", &env, |_, _| {});
    let first = service.current;
    wait_until(
        "the pid file to name the first generation",
        EVENT_TIMEOUT,
        || read_pid() == Some(first.pid),
    );

    // Written by the new generation before the restart is reported done.
    let (pid, _) = restart_ok(&service);
    assert_eq!(read_pid(), Some(pid));
    assert_eq!(service.next_ready().pid, pid);
    assert!(
        wait_exit(first.pid, EVENT_TIMEOUT),
        "the first generation did not exit"
    );
    assert_eq!(
        read_pid(),
        Some(pid),
        "the old generation touched the pid file on its way out"
    );

    // A failed restart: the old generation writes it again.
    std::fs::remove_file(&pid_path).unwrap();
    service.replace_with_script("#!/bin/sh\nexit 3\n");
    let reason = restart_failing(&service);
    assert!(reason.contains("exited with status 3"), "{reason}");
    assert_eq!(read_pid(), Some(pid));

    stop(&service, pid);
    assert!(!pid_path.exists(), "the pid file is left after the stop");
    let leftovers: Vec<_> = std::fs::read_dir(pid_dir.path()).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Starts the echo example with `socket` passed as fd 3 under the name
/// `echo` (socket activation), and returns how it ended and its stderr.
fn start_activated_with(socket: &impl AsRawFd) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let raw = socket.as_raw_fd();
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(r#"LISTEN_PID=$$ exec "$0" "$@""#)
        .arg(example_binary("echo"))
        .args(["--listen", "127.0.0.1:0", "--control"])
        .arg(dir.path().join("control.sock"))
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "echo")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec, only dup2 or fcntl (async-signal-safe)
    // on a descriptor the parent keeps open until spawn returns.
    unsafe {
        command.pre_exec(move || {
            if raw != 3 {
                let new = nix::unistd::dup2_raw(BorrowedFd::borrow_raw(raw), 3)?;
                std::mem::forget(new);
            } else {
                // Already at 3 (the test process had few descriptors open):
                // dup2 would change nothing, so clear its close-on-exec
                // flag, or the service would find 3 closed.
                nix::fcntl::fcntl(
                    BorrowedFd::borrow_raw(raw),
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                )?;
            }
            Ok(())
        });
    }
    let child = command.spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(output) = rx.recv_timeout(EVENT_TIMEOUT) else {
        kill_pid(pid, nix::sys::signal::Signal::SIGKILL);
        panic!("the service started on a socket it cannot accept on");
    };
    let output = output.unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// What `Accept=yes` passes (a connected socket), or a socket bound but
/// never put in listening mode, is refused at start-up with a message that
/// says so: never a service that reports ready and serves nothing.
#[test]
fn socket_activation_refuses_a_socket_that_is_not_listening() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let connected = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (status, stderr) = start_activated_with(&connected);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("socket `echo`"), "{stderr}");
    assert!(stderr.contains("not listening"), "{stderr}");
    assert!(stderr.contains("Accept=no"), "{stderr}");

    let bound = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    bound
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    let (status, stderr) = start_activated_with(&bound);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not listening"), "{stderr}");
}
