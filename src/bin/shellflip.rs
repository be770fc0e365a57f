//! `shellflip`: restart, inspect or stop a running shellflip service through
//! its control socket.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use shellflip::control::{ClientError, ControlClient, LastRestart, Request, Response, Status};

const AFTER_HELP: &str = "\
Exit status:
  0  the request succeeded
  1  the request failed (the reason is printed on stderr)
  2  no service is listening on SOCKET, or the arguments are invalid";

/// Restart, inspect or stop a running shellflip service.
#[derive(Parser, Debug)]
#[command(
    name = "shellflip",
    version,
    long_about = "Restart, inspect or stop a running shellflip service.\n\n\
        Talks to the service through its control socket: the path it was started with \
        (Config::control_socket, or the SHELLFLIP_CONTROL environment variable). Only the \
        user the service runs as, and root, may use the socket.",
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Restart the service without dropping connections, and wait for the outcome.
    #[command(
        long_about = "Restart the service without dropping connections, and wait for the outcome.\n\n\
            The service starts its next generation from its executable path (so a new build \
            placed there is what runs next), hands over its listening sockets and state, and \
            waits for the new generation to be ready. On success this prints the new pid and \
            generation and the time taken; on failure (the new generation crashed, was not ready \
            in time, or another restart is in progress) it prints the reason and the old \
            generation keeps serving.",
        after_help = AFTER_HELP
    )]
    Restart {
        /// The service's control socket.
        #[arg(value_name = "SOCKET")]
        socket: PathBuf,
        /// Give up waiting for the outcome after this long (e.g. 45s, 2m). By default,
        /// wait until the service answers; its ready timeout bounds the restart. A restart
        /// that outlives --timeout may still complete.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
    /// Show the service's pid, generation, phase, uptime and restart history.
    #[command(after_help = AFTER_HELP)]
    Status {
        /// The service's control socket.
        #[arg(value_name = "SOCKET")]
        socket: PathBuf,
        /// Print the status as one JSON object (keys pid, generation, phase, uptime_secs,
        /// restarts, failed_restarts, last_restart).
        #[arg(long)]
        json: bool,
    },
    /// Stop the service gracefully and wait until it has exited.
    #[command(
        long_about = "Stop the service gracefully and wait until it has exited.\n\n\
            The service stops accepting, lets in-flight work finish (bounded by its drain \
            timeout) and exits; this command returns once its process is gone.",
        after_help = AFTER_HELP
    )]
    Stop {
        /// The service's control socket.
        #[arg(value_name = "SOCKET")]
        socket: PathBuf,
        /// Give up waiting for the service to exit after this long (e.g. 30s, 5m); raise it
        /// if the service's drain timeout is longer.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "2m")]
        timeout: Duration,
    },
}

/// Parses a `--timeout` with the rules of every shellflip duration
/// (`shellflip::settings`): a unit is required (`30s`, `500ms`, `2m`,
/// `1h 30m`), from 1ms to 7 days. Only the problem is returned: clap already
/// names the flag and the value.
fn parse_duration(text: &str) -> Result<Duration, String> {
    shellflip::settings::DurationRule::TIMEOUT
        .parse("--timeout", text)
        .map_err(|error| error.problem().to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Restart { socket, timeout } => restart(&socket, timeout),
        Command::Status { socket, json } => status(&socket, json),
        Command::Stop { socket, timeout } => stop(&socket, timeout),
    }
}

/// Prints a client error and returns the exit status for it: 2 when no
/// service is listening, 1 otherwise.
fn fail(command: &str, error: &ClientError) -> ExitCode {
    eprintln!("{command} failed: {error}");
    match error {
        ClientError::NoService { .. } => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}

fn restart(socket: &Path, timeout: Option<Duration>) -> ExitCode {
    let outcome = ControlClient::connect(socket).and_then(|mut client| {
        client.set_timeout(timeout)?;
        client.request(&Request::Restart)
    });
    match outcome {
        Ok(Response::Restarted(done)) => {
            println!(
                "restarted: pid={} generation={} in {}",
                done.pid,
                done.generation,
                format_ms(done.duration_ms)
            );
            ExitCode::SUCCESS
        }
        Ok(Response::RestartFailed { kind, reason }) => {
            if kind == "in_progress" && !reason.contains("in progress") {
                eprintln!("restart failed: a restart is already in progress: {reason}");
            } else {
                eprintln!("restart failed: {reason}");
            }
            ExitCode::FAILURE
        }
        Ok(Response::Error { message }) => {
            eprintln!("restart failed: the service refused the request: {message}");
            ExitCode::FAILURE
        }
        Ok(other) => {
            eprintln!("restart failed: unexpected answer from the service: {other:?}");
            ExitCode::FAILURE
        }
        Err(error @ ClientError::Timeout { .. }) => {
            eprintln!(
                "restart failed: {error}; the restart may still complete: check with \
                 `shellflip status {}`",
                socket.display()
            );
            ExitCode::FAILURE
        }
        Err(error) => fail("restart", &error),
    }
}

fn status(socket: &Path, json: bool) -> ExitCode {
    let status = match ControlClient::status(socket) {
        Ok(status) => status,
        Err(error) => return fail("status", &error),
    };
    if json {
        match serde_json::to_string(&status) {
            Ok(text) => println!("{text}"),
            Err(error) => {
                eprintln!("status failed: could not encode the status as JSON: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", describe_status(&status, now_unix_ms()));
    }
    ExitCode::SUCCESS
}

fn stop(socket: &Path, timeout: Duration) -> ExitCode {
    match ControlClient::stop_and_wait(socket, timeout) {
        Ok(pid) => {
            println!("stopped: pid={pid}");
            ExitCode::SUCCESS
        }
        Err(error) => fail("stop", &error),
    }
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// `3.2ms` below a second, `1.25s` above.
fn format_ms(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

/// Whole seconds, as `1h 2m 3s`.
fn format_secs(secs: f64) -> String {
    // `as` saturates (and maps NaN to 0): fine for display.
    humantime::format_duration(Duration::from_secs(secs.max(0.0) as u64)).to_string()
}

fn describe_last_restart(last: &LastRestart, now_ms: u64) -> String {
    let age_ms = now_ms.saturating_sub(last.at_unix_ms);
    let ago = if age_ms < 1000 {
        "just now".to_string()
    } else {
        format!("{} ago", format_secs(age_ms as f64 / 1000.0))
    };
    let mut parts = Vec::new();
    if let Some(pid) = last.pid {
        parts.push(format!("pid={pid}"));
    }
    if let Some(generation) = last.generation {
        parts.push(format!("generation={generation}"));
    }
    let new_generation = if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(" "))
    };
    if last.ok {
        format!(
            "succeeded {ago} in {}{new_generation}",
            format_ms(last.duration_ms)
        )
    } else {
        let error = last.error.as_deref().unwrap_or("no reason given");
        format!(
            "failed {ago} after {}{new_generation}: {error}",
            format_ms(last.duration_ms)
        )
    }
}

fn describe_status(status: &Status, now_ms: u64) -> String {
    let last = status.last_restart.as_ref().map_or_else(
        || "none".to_string(),
        |last| describe_last_restart(last, now_ms),
    );
    format!(
        "pid:             {}\n\
         generation:      {}\n\
         phase:           {}\n\
         uptime:          {}\n\
         restarts:        {}\n\
         failed restarts: {}\n\
         last restart:    {}\n\
         spawner:         {}\n",
        status.pid,
        status.generation,
        status.phase,
        format_secs(status.uptime_secs),
        status.restarts,
        status.failed_restarts,
        last,
        status.spawner_pid.map_or_else(
            || "the service process itself".to_string(),
            |pid| format!("pid {pid}")
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit_and_are_bounded() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("7").unwrap_err().contains("write \"7s\""));
        assert!(parse_duration("0")
            .unwrap_err()
            .contains("greater than zero"));
        assert!(parse_duration("soon")
            .unwrap_err()
            .contains("expected a duration"));
        assert!(parse_duration("300000000000h")
            .unwrap_err()
            .contains("the maximum is 7d"));
    }

    #[test]
    fn milliseconds_are_readable() {
        assert_eq!(format_ms(3.24), "3.2ms");
        assert_eq!(format_ms(1250.0), "1.25s");
    }

    #[test]
    fn status_lines() {
        let status = Status {
            pid: 10,
            generation: 3,
            phase: "serving".into(),
            uptime_secs: 3723.9,
            restarts: 2,
            failed_restarts: 1,
            last_restart: Some(LastRestart {
                ok: false,
                at_unix_ms: 1_000,
                duration_ms: 30_000.0,
                pid: Some(11),
                generation: Some(4),
                error: Some("not ready within 30s".into()),
            }),
            spawner_pid: Some(12),
        };
        let text = describe_status(&status, 6_000);
        assert!(text.contains("spawner:         pid 12\n"), "{text}");
        assert!(text.contains("pid:             10\n"), "{text}");
        assert!(text.contains("uptime:          1h 2m 3s\n"), "{text}");
        assert!(text.contains("failed restarts: 1\n"), "{text}");
        assert!(
            text.contains("last restart:    failed 5s ago after 30.00s (pid=11 generation=4): not ready within 30s"),
            "{text}"
        );
        let none = describe_status(
            &Status {
                last_restart: None,
                ..status
            },
            0,
        );
        assert!(none.contains("last restart:    none\n"), "{none}");
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
