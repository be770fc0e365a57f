//! The end-to-end tests' harness: the echo harness shared with the demo,
//! plus the path of the CLI binary built for these tests.
#![allow(dead_code)]

#[path = "../../examples/support/echo_harness.rs"]
mod echo_harness;
pub use echo_harness::*;

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
