//! The end-to-end tests' harness: the echo harness shared with the demo,
//! plus the path of the CLI binary built for these tests.
#![allow(dead_code)]

#[path = "../../examples/support/echo_harness.rs"]
mod echo_harness;
pub use echo_harness::*;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Output;

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
