//! `trigger_ecdysis SOCKET`: restarts a service built on crates.io
//! `ecdysis` 1.1 through its `upgrade_on_socket` path, as the driver's
//! library trigger does: connects, then waits until ecdysis closes the
//! connection, which it does when the upgrade is over (it sends no
//! outcome). Prints `upgrade socket closed` and exits 0; exits 1 if the
//! socket cannot be reached or stays open for 60 s (2 for bad arguments).
//! The benchmark times it from its spawn until it exits.
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

/// Bound on the wait for ecdysis to close the connection.
const TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(socket), None) = (args.next(), args.next()) else {
        eprintln!("usage: trigger_ecdysis SOCKET");
        return ExitCode::from(2);
    };
    let result = UnixStream::connect(&socket).and_then(|stream| {
        stream.set_read_timeout(Some(TIMEOUT))?;
        // Whatever ecdysis might send is read and dropped; bounded, since
        // it sends nothing.
        let mut rest = Vec::new();
        stream.take(1 << 16).read_to_end(&mut rest)
    });
    match result {
        Ok(_) => {
            println!("upgrade socket closed");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("upgrade failed: {}: {e}", socket.to_string_lossy());
            ExitCode::FAILURE
        }
    }
}
