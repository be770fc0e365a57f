//! The end-to-end tests' harness: the echo harness shared with the demo,
//! plus the path of the CLI binary built for these tests.
#![allow(dead_code)]

#[path = "../../examples/support/echo_harness.rs"]
mod echo_harness;
pub use echo_harness::*;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Output;
use std::sync::{Arc, Barrier};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shellflip::client::ControlClient;
use shellflip::control::{Request, Response, Status};

/// The `shellflip` CLI binary.
pub fn cli_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_shellflip"))
}

/// Runs the CLI against `echo`'s control socket.
pub fn cli(echo: &Echo, command: &str, extra: &[&str]) -> Output {
    echo.cli(&cli_binary(), command, extra)
}

/// Starts the faulty example (the echo protocol, with faults to inject) in
/// a temp dir, with `extra` arguments.
pub fn start_faulty(extra: &[&str], env: &[(&str, &str)]) -> Echo {
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<OsString> = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--control".into(),
        dir.path().join("control.sock").into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    Echo::start_in(dir, &example_binary("faulty"), &args, env)
}

/// Puts a "bad build" at the service's executable path: the faulty binary
/// started with `--fault <fault>`.
pub fn deploy_fault(service: &Echo, fault: &str) {
    let real = service.dir.path().join("faulty.real");
    if !real.exists() {
        std::fs::copy(example_binary("faulty"), &real).unwrap();
    }
    service.replace_with_script(&format!(
        "#!/bin/sh\nexec \"{}\" \"$@\" --fault {fault}\n",
        real.display()
    ));
}

/// Sends `signal` to `pid`.
pub fn kill_pid(pid: u32, signal: Signal) {
    kill(Pid::from_raw(pid as i32), signal).unwrap();
}

/// Deploys a build whose initialisation takes `slow_init_ms`, asks for a
/// restart from another thread, and waits until the new generation has
/// started: the initiator (joined for its response) and the new pid.
pub fn start_slow_restart(
    service: &Echo,
    slow_init_ms: u64,
) -> (
    std::thread::JoinHandle<Result<Response, shellflip::client::ClientError>>,
    u32,
) {
    deploy_fault(service, &format!("slow-init={slow_init_ms}"));
    let control = service.control.clone();
    let initiator = std::thread::spawn(move || ControlClient::restart(&control));
    let child = service.next_init(service.current.pid);
    (initiator, child)
}

/// `shellflip restart` through the CLI, which must succeed.
pub fn cli_restart_ok(service: &Echo) -> Output {
    let out = cli(service, "restart", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `shellflip restart` through the CLI, which must fail (exit 1) with each
/// of `expected` in its stderr; returns that stderr.
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

/// A successful restart through the control socket: (pid, generation).
pub fn restart_ok(service: &Echo) -> (u32, u64) {
    match ControlClient::restart(&service.control).expect("restart request") {
        Response::Restarted(success) => (success.pid, success.generation),
        other => panic!(
            "expected a successful restart, got {other:?}; stderr:\n{}",
            service.stderr()
        ),
    }
}

/// A restart through the control socket that must fail; returns the reason.
pub fn restart_failing(service: &Echo) -> String {
    match ControlClient::restart(&service.control).expect("restart request") {
        Response::RestartFailed { reason, .. } => reason,
        other => panic!("expected a failed restart, got {other:?}"),
    }
}

/// `n` control clients, each first answered by the current generation,
/// ask for a restart at the same moment. The service's next build must be
/// slow to become ready, so that every request lands while the restart
/// runs: exactly one is `Restarted`, the other `n - 1` are told a restart
/// is in progress, the new generation is the second, the first exits, and
/// no second restart follows. Returns the status after all that.
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

/// An echo connection held open after its greeting, e.g. to keep a
/// generation draining.
pub struct Held {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// The greeting line, as read.
    pub greeting: String,
}

/// Connects to `addr` and reads the greeting.
pub fn hold_connection(addr: SocketAddr) -> Held {
    let writer = TcpStream::connect(addr).unwrap();
    writer.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
    let mut reader = BufReader::new(writer.try_clone().unwrap());
    let mut greeting = String::new();
    reader.read_line(&mut greeting).unwrap();
    Held {
        reader,
        writer,
        greeting,
    }
}

impl Held {
    /// Finishes the exchange: sends `line`, reads its echo, closes; returns
    /// the echo.
    pub fn finish(mut self, line: &str) -> String {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
        let mut echoed = String::new();
        self.reader.read_line(&mut echoed).unwrap();
        echoed
    }

    /// Waits until the listener at `addr` refuses connections (a stop has
    /// begun), then [`Held::finish`]es the exchange.
    pub fn finish_after_listener_closes(self, addr: SocketAddr, line: &str) -> String {
        wait_until("the listener to close", EVENT_TIMEOUT, || {
            TcpStream::connect(addr).is_err()
        });
        self.finish(line)
    }
}
