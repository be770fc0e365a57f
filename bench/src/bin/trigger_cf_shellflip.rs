//! `trigger_cf_shellflip SOCKET`: restarts a service built on crates.io
//! `shellflip` 2.1 the way that crate's own restart command does
//! (`examples/restarter.rs`, `restart`): `RestartConfig::request_restart`
//! on the restart coordination socket, which answers with the new pid once
//! the new process reported startup complete. Prints `restarted pid=<pid>`
//! and exits 0, or prints the error and exits 1 (2 for bad arguments). The
//! benchmark times it from its spawn until it exits. A current-thread
//! runtime: the request needs no more.
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(socket), None) = (args.next(), args.next()) else {
        eprintln!("usage: trigger_cf_shellflip SOCKET");
        return ExitCode::from(2);
    };
    let config = cf_shellflip::RestartConfig {
        enabled: true,
        coordination_socket_path: socket.into(),
        ..Default::default()
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: a tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(config.request_restart()) {
        Ok(pid) => {
            println!("restarted pid={pid}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("restart failed: {e}");
            ExitCode::FAILURE
        }
    }
}
