//! The demo: restart a real service under load and show that nothing was
//! lost.
//!
//! ```text
//! cargo run --release --example demo
//! ```
//!
//! Starts the echo example (a private copy, on a free loopback port, with
//! its control socket in a temp dir), runs 16 concurrent clients that
//! connect, read the greeting, echo a line and close, restarts the service
//! 5 times through the control socket, and prints one row per restart.
//! Exits non-zero if any connection failed or any old generation lingered.
//! Options: `--restarts N`, `--clients N`.
//!
//! The harness, the clients and the process helpers are the tests' own
//! (`shellflip-testkit`).

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use shellflip::client::ControlClient;
use shellflip::control::Response;
use shellflip_testkit::binaries::{find_example, profile_args};
use shellflip_testkit::harness::Echo;
use shellflip_testkit::load::Load;
use shellflip_testkit::process::wait_exit;
use shellflip_testkit::wait::{wait_until, EVENT_TIMEOUT};

struct Row {
    round: u32,
    old_pid: u32,
    new_pid: u32,
    generation: u64,
    told_ms: f64,
    old_gone_ms: f64,
    served_by_old: usize,
}

fn arg(name: &str, default: u32) -> u32 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The echo example, in the profile of the demo. `cargo run --example demo`
/// builds only the demo, so under cargo (which sets `CARGO`) the demo first
/// has cargo build the echo example too (nothing to do when it is fresh);
/// run directly, it uses the one next to it.
fn echo_binary() -> Result<PathBuf, String> {
    if let Some(cargo) = std::env::var_os("CARGO") {
        let status = Command::new(cargo)
            .arg("build")
            .args(profile_args())
            .args(["--example", "echo", "--manifest-path"])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
            .status()
            .map_err(|e| format!("could not run cargo to build the echo example: {e}"))?;
        if !status.success() {
            return Err(format!("building the echo example failed ({status})"));
        }
    }
    find_example("echo").map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let restarts = arg("--restarts", 5);
    let clients = arg("--clients", 16) as usize;
    let echo_exe = match echo_binary() {
        Ok(path) => path,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    println!("shellflip demo: echo service, {clients} concurrent clients, {restarts} restarts\n");

    let mut echo = Echo::start_with_binary(&echo_exe, &[]);
    println!(
        "started pid={} generation={} on {} (control socket {})",
        echo.current.pid,
        echo.current.generation,
        echo.addr,
        echo.control.display()
    );
    let load = Load::start(echo.addr, clients, 1_000_000, Duration::from_secs(300));
    let mut rows = Vec::new();
    let mut failed_restarts = 0;
    let mut lingering = 0;
    for round in 1..=restarts {
        let old = echo.current;
        // Let the load run on this generation for a moment.
        let settle = load.count_from(old.pid) + 200;
        wait_until("load on the current generation", EVENT_TIMEOUT, || {
            load.count_from(old.pid) >= settle
        });
        let asked = Instant::now();
        let response = ControlClient::restart(&echo.control);
        let told = asked.elapsed();
        match response {
            Ok(Response::Restarted(success)) => {
                let ready = echo.next_ready();
                let gone = wait_exit(old.pid, EVENT_TIMEOUT);
                if !gone {
                    lingering += 1;
                }
                rows.push(Row {
                    round,
                    old_pid: old.pid,
                    new_pid: success.pid,
                    generation: ready.generation,
                    told_ms: told.as_secs_f64() * 1000.0,
                    old_gone_ms: asked.elapsed().as_secs_f64() * 1000.0,
                    served_by_old: load.count_from(old.pid),
                });
            }
            Ok(other) => {
                eprintln!("restart {round} did not succeed: {other:?}");
                failed_restarts += 1;
            }
            Err(e) => {
                eprintln!("restart {round}: {e}");
                failed_restarts += 1;
            }
        }
    }
    let final_pid = echo.current.pid;
    wait_until("load on the last generation", EVENT_TIMEOUT, || {
        load.count_from(final_pid) >= 200
    });
    let report = load.stop();
    let stopped = ControlClient::stop_and_wait(&echo.control, Duration::from_secs(60));
    let final_gone = wait_exit(final_pid, EVENT_TIMEOUT);

    println!();
    println!("| restart | old pid → new pid | generation | initiator told | old generation gone | exchanges served by old |");
    println!("|--------:|-------------------|-----------:|---------------:|--------------------:|------------------------:|");
    for row in &rows {
        println!(
            "| {:>7} | {:>7} → {:<7} | {:>10} | {:>11.1} ms | {:>16.1} ms | {:>23} |",
            row.round,
            row.old_pid,
            row.new_pid,
            row.generation,
            row.told_ms,
            row.old_gone_ms,
            row.served_by_old
        );
    }
    println!();
    println!(
        "connections served: {}   failed: {}   restarts: {} ok, {} failed   old generations still running: {}",
        report.ok,
        report.failures.len(),
        rows.len(),
        failed_restarts,
        lingering
    );
    for failure in report.failures.iter().take(10) {
        println!("  failure: {failure}");
    }
    match stopped {
        Ok(pid) => println!("stopped pid={pid} gracefully"),
        Err(e) => println!("stop failed: {e}"),
    }
    drop(echo);
    if report.failures.is_empty() && failed_restarts == 0 && lingering == 0 && final_gone {
        println!("result: OK — zero failed connections across {restarts} restarts");
        ExitCode::SUCCESS
    } else {
        println!("result: FAILED");
        ExitCode::FAILURE
    }
}
