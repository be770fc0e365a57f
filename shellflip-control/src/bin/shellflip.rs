//! `shellflip`: restart, inspect or stop a running shellflip service through
//! its control socket.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use shellflip_control::client::{
    ClientError, ClientErrorKind, ControlClient, Waiting, STATUS_TIMEOUT,
};
use shellflip_control::protocol::{
    FailureKind, LastRestart, Request, Response, RestartSuccess, Status,
};

/// The request succeeded.
const EXIT_OK: u8 = 0;
/// The request failed, or the service refused it for good.
const EXIT_FAILED: u8 = 1;
/// No service at the socket (clap exits with 2 on bad arguments too).
const EXIT_NO_SERVICE: u8 = 2;
/// `EX_TEMPFAIL` (sysexits.h): the same request may succeed if sent again.
const EXIT_TRY_AGAIN: u8 = 75;

const AFTER_HELP: &str = "\
Exit status:
  0   the request succeeded
  1   the request failed or timed out (the reason is printed on stderr)
  2   no service is listening on SOCKET, or the arguments are invalid
  75  try again: a restart is already in progress, the service is not ready to
      restart yet, or it has just handed over to a new generation (EX_TEMPFAIL)

Every command gives up after --timeout and then says how far it got.
Pids are shown as this process sees them, also when the service runs in another
PID namespace (a container); `status --json` prints the service's own answer.";

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
        /// Give up waiting for the outcome after this long (e.g. 45s, 10m). The default
        /// leaves room for a ready timeout of a few minutes; raise it if the service's ready
        /// timeout (plus its probation, for a restart asked for while the previous one's
        /// probation runs) is longer. A restart that outlives --timeout may still complete.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5m")]
        timeout: Duration,
        /// Start the new generation with fresh state instead of the state the service
        /// keeps (for this restart only): for a deploy whose state cannot be carried (the
        /// type changed without a migration, or the state was written by an older
        /// shellflip). The answer says the state was not carried.
        #[arg(long)]
        fresh_state: bool,
    },
    /// Show the service's pid, generation, phase, uptime and restart history.
    #[command(after_help = AFTER_HELP)]
    Status {
        /// The service's control socket.
        #[arg(value_name = "SOCKET")]
        socket: PathBuf,
        /// Print the service's answer as one JSON object (keys pid, generation, phase,
        /// uptime_secs, restarts, failed_restarts, last_restart, spawner_pid; pids as the
        /// service sees them).
        #[arg(long)]
        json: bool,
        /// Give up waiting for the answer after this long (e.g. 2s, 1m).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
        timeout: Duration,
    },
    /// Stop the service gracefully and wait until it has exited.
    #[command(
        long_about = "Stop the service gracefully and wait until it has exited.\n\n\
            The service stops accepting, lets in-flight work finish (bounded by its drain \
            timeout) and exits — every generation, including one on probation or still \
            draining, and their spawner processes; this command returns once none is left.",
        after_help = AFTER_HELP
    )]
    Stop {
        /// The service's control socket.
        #[arg(value_name = "SOCKET")]
        socket: PathBuf,
        /// Give up waiting for the service to exit after this long (e.g. 30s, 5m); raise it
        /// if the service's drain timeout is longer. A service that does not even answer
        /// the stop request is given at most 10s of it.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "2m")]
        timeout: Duration,
    },
}

/// Parses a `--timeout` with the rules of every shellflip duration
/// (`shellflip_settings`): a unit is required (`30s`, `500ms`, `2m`,
/// `1h 30m`), from 1ms to 7 days. Only the problem is returned: clap already
/// names the flag and the value.
fn parse_duration(text: &str) -> Result<Duration, String> {
    shellflip_settings::DurationRule::TIMEOUT
        .parse("--timeout", text)
        .map_err(|error| error.problem().to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    ExitCode::from(match cli.command {
        Command::Restart {
            socket,
            timeout,
            fresh_state,
        } => restart(&socket, timeout, fresh_state),
        Command::Status {
            socket,
            json,
            timeout,
        } => status(&socket, json, timeout),
        Command::Stop { socket, timeout } => stop(&socket, timeout),
    })
}

/// Prints a client error and returns the exit status for it: 2 when no
/// service is listening, 1 otherwise.
fn fail(command: &str, error: &ClientError) -> u8 {
    eprintln!("{command} failed: {error}");
    match error.kind {
        ClientErrorKind::NoService { .. } => EXIT_NO_SERVICE,
        _ => EXIT_FAILED,
    }
}

/// A pid, as this process sees it when that is known.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pid {
    /// Valid here: translated by the kernel, or the service runs in this
    /// PID namespace (or which namespace it runs in is unknown).
    Here(u32),
    /// As the service sees it, in a PID namespace that is not this one's.
    Foreign(u32),
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pid::Here(pid) => write!(f, "{pid}"),
            Pid::Foreign(pid) => write!(f, "{pid} (in the service's PID namespace)"),
        }
    }
}

/// Whether the answering process runs in another PID namespace: the pid it
/// gives for itself (`own`) is not the one the kernel gives for it here.
fn other_namespace(own: u32, answered_by: Option<u32>) -> bool {
    answered_by.is_some_and(|here| here != own)
}

fn restart(socket: &Path, timeout: Duration, fresh_state: bool) -> u8 {
    let started = Instant::now();
    let outcome = ControlClient::connect(socket).and_then(|mut client| {
        client.set_timeout(Some(timeout));
        let answer = client.request(&Request::Restart { fresh_state })?;
        Ok((answer, client.answered_by()))
    });
    let (outcome, answered_by) = match outcome {
        Ok((answer, answered_by)) => (Ok(answer), answered_by),
        Err(error) => (Err(error), None),
    };
    match outcome {
        Ok(Response::Restarted(done)) => {
            let pid = match answered_by.filter(|&old| same_pid_namespace(old)) {
                // The service's pids are this namespace's: nothing to ask.
                Some(_) => Pid::Here(done.pid),
                None => {
                    let left = timeout.saturating_sub(started.elapsed());
                    new_generation_pid(socket, &done, left.min(STATUS_TIMEOUT))
                }
            };
            println!(
                "restarted: pid={pid} generation={} in {}",
                done.generation,
                format_ms(done.duration_ms)
            );
            match &done.state {
                // Loud: the service carries on without its state.
                Some(state) if state.not_carried.is_some() => eprintln!("warning: {state}"),
                Some(state) => println!("{state}"),
                None => {}
            }
            EXIT_OK
        }
        Ok(Response::RestartFailed { kind, reason }) => {
            if kind == FailureKind::InProgress && !reason.contains("in progress") {
                eprintln!("restart failed: a restart is already in progress: {reason}");
            } else {
                eprintln!("restart failed: {reason}");
            }
            if kind.is_temporary() {
                EXIT_TRY_AGAIN
            } else {
                EXIT_FAILED
            }
        }
        Ok(Response::Error { message }) => {
            eprintln!("restart failed: the service refused the request: {message}");
            EXIT_FAILED
        }
        Ok(other) => {
            eprintln!("restart failed: unexpected answer from the service: {other:?}");
            EXIT_FAILED
        }
        Err(error) if matches!(error.kind, ClientErrorKind::Timeout { .. }) => {
            eprintln!(
                "restart failed: {error}; if the service was restarting, the restart may still \
                 complete (raise --timeout if its ready timeout is longer): check with \
                 `shellflip status {}`",
                socket.display()
            );
            EXIT_FAILED
        }
        Err(error) => fail("restart", &error),
    }
}

/// True when `pid` (as this process sees it) runs in this process's PID
/// namespace, as `/proc` says (false when it cannot tell).
fn same_pid_namespace(pid: u32) -> bool {
    let ours = std::fs::read_link("/proc/self/ns/pid");
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/pid"));
    matches!((ours, theirs), (Ok(ours), Ok(theirs)) if ours == theirs)
}

/// The new generation's pid as this process sees it, from another PID
/// namespace than the service's (or where that cannot be told). The answer to the
/// restart comes from the old generation, so the kernel's translation is
/// that of the old pid; the new generation tells its own when asked for its
/// status. A few tries: the old generation may still take a connection or
/// two while it stops accepting.
fn new_generation_pid(socket: &Path, done: &RestartSuccess, timeout: Duration) -> Pid {
    let deadline = Instant::now() + timeout;
    let mut foreign = false;
    for _ in 0..5 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let Ok(mut client) = ControlClient::connect(socket) else {
            break;
        };
        client.set_timeout(Some(left));
        let Ok(status) = client.status_request() else {
            break;
        };
        let here = client.answered_by();
        if (status.generation, status.pid) == (done.generation, done.pid) {
            return here.map_or(Pid::Here(done.pid), Pid::Here);
        }
        foreign |= other_namespace(status.pid, here);
        if here.is_some() && !foreign {
            // Another generation answered from this very namespace: the
            // service's numbers are valid here.
            return Pid::Here(done.pid);
        }
    }
    if foreign {
        Pid::Foreign(done.pid)
    } else {
        Pid::Here(done.pid)
    }
}

fn status(socket: &Path, json: bool, timeout: Duration) -> u8 {
    let answer = ControlClient::connect(socket).and_then(|mut client| {
        client.set_timeout(Some(timeout));
        let status = client.status_request()?;
        Ok((status, client.answered_by()))
    });
    let (status, answered_by) = match answer {
        Ok(answer) => answer,
        Err(error) => return fail("status", &error),
    };
    if json {
        match serde_json::to_string(&status) {
            Ok(text) => println!("{text}"),
            Err(error) => {
                eprintln!("status failed: could not encode the status as JSON: {error}");
                return EXIT_FAILED;
            }
        }
    } else {
        print!("{}", describe_status(&status, answered_by, now_unix_ms()));
    }
    EXIT_OK
}

fn stop(socket: &Path, timeout: Duration) -> u8 {
    match ControlClient::stop_and_wait(socket, timeout) {
        Ok(pid) => {
            println!("stopped: pid={pid}; no process of the service is left");
            EXIT_OK
        }
        Err(error)
            if matches!(
                error.kind,
                ClientErrorKind::Timeout {
                    waiting: Waiting::Exit { .. },
                    ..
                }
            ) =>
        {
            eprintln!(
                "stop failed: {error} (raise --timeout if the service's drain timeout is longer)"
            );
            EXIT_FAILED
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

/// Whole seconds, as `1h2m3s` (the settings' grammar, which `--timeout`
/// reads back).
fn format_secs(secs: f64) -> String {
    // `as` saturates (and maps NaN to 0): fine for display.
    shellflip_settings::format_duration(Duration::from_secs(secs.max(0.0) as u64)).to_string()
}

fn describe_last_restart(last: &LastRestart, foreign: bool, now_ms: u64) -> String {
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
    if foreign && last.pid.is_some() {
        parts.push("(that pid in the service's PID namespace)".to_string());
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

/// Every field of the status, pids as this process sees them:
/// `answered_by` is the answering process's pid here. When the service runs
/// in another PID namespace, the pids it gives for other processes (its
/// spawner, the last new generation) cannot be translated; they are marked.
fn describe_status(status: &Status, answered_by: Option<u32>, now_ms: u64) -> String {
    let foreign = other_namespace(status.pid, answered_by);
    let pid = match answered_by {
        Some(here) if foreign => format!("{here} ({} in the service's PID namespace)", status.pid),
        _ => status.pid.to_string(),
    };
    let last = status.last_restart.as_ref().map_or_else(
        || "none".to_string(),
        |last| describe_last_restart(last, foreign, now_ms),
    );
    let spawner = match status.spawner_pid {
        None => "the service process itself".to_string(),
        Some(pid) if foreign => format!("pid {pid} in the service's PID namespace"),
        Some(pid) => format!("pid {pid}"),
    };
    let mut text = format!(
        "pid:             {pid}\n\
         generation:      {}\n\
         phase:           {}\n\
         uptime:          {}\n\
         restarts:        {}\n\
         failed restarts: {}\n\
         last restart:    {last}\n\
         spawner:         {spawner}\n",
        status.generation,
        status.phase,
        format_secs(status.uptime_secs),
        status.restarts,
        status.failed_restarts,
    );
    if let Some(state) = &status.state {
        let received = match &state.not_carried {
            None if state.bytes == 0 => "nothing received".to_owned(),
            _ => state.to_string(),
        };
        text.push_str(&format!(
            "state:           {} v{} ({received})\n",
            state.type_name, state.version
        ));
    }
    // The generations still alive, when others than the answering one.
    if status.generations.len() > 1 {
        text.push_str("generations:\n");
        for g in &status.generations {
            let marker = if foreign {
                " (service's namespace)"
            } else {
                ""
            };
            let tasks = g.tasks.map_or_else(|| "?".to_owned(), |t| t.to_string());
            let deadline = g.drain_deadline_unix_ms.map_or_else(String::new, |at| {
                let left = at.saturating_sub(now_ms) as f64 / 1000.0;
                format!(", drain ends in {}", format_secs(left))
            });
            text.push_str(&format!(
                "  {:>4}  pid {}{marker}  {}, {tasks} tasks{deadline}\n",
                g.generation, g.pid, g.phase
            ));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A restart answered from this PID namespace needs no second
    /// connection to name the new pid; one whose namespace cannot be read
    /// falls back to asking.
    #[test]
    fn the_pid_namespace_of_a_process_is_read_from_proc() {
        assert!(same_pid_namespace(std::process::id()));
        assert!(!same_pid_namespace(u32::MAX));
    }

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
            phase: shellflip_control::protocol::Phase::Serving,
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
            generations: Vec::new(),
            state: None,
        };
        let text = describe_status(&status, Some(10), 6_000);
        assert!(text.contains("spawner:         pid 12\n"), "{text}");
        assert!(text.contains("pid:             10\n"), "{text}");
        assert!(text.contains("generation:      3\n"), "{text}");
        assert!(text.contains("phase:           serving\n"), "{text}");
        assert!(text.contains("restarts:        2\n"), "{text}");
        assert!(text.contains("uptime:          1h2m3s\n"), "{text}");
        assert!(text.contains("failed restarts: 1\n"), "{text}");
        assert!(
            text.contains("last restart:    failed 5s ago after 30.00s (pid=11 generation=4): not ready within 30s"),
            "{text}"
        );
        // Which namespace the service runs in is not known: its numbers.
        assert_eq!(describe_status(&status, None, 6_000), text);

        // Seen from outside its PID namespace: its own pid translated, the
        // others marked.
        let outside = describe_status(&status, Some(5010), 6_000);
        assert!(
            outside.contains("pid:             5010 (10 in the service's PID namespace)\n"),
            "{outside}"
        );
        assert!(
            outside.contains("spawner:         pid 12 in the service's PID namespace\n"),
            "{outside}"
        );
        assert!(
            outside.contains("(pid=11 generation=4 (that pid in the service's PID namespace))"),
            "{outside}"
        );

        let none = describe_status(
            &Status {
                last_restart: None,
                ..status
            },
            None,
            0,
        );
        assert!(none.contains("last restart:    none\n"), "{none}");
    }

    #[test]
    fn every_command_has_a_default_timeout() {
        use shellflip_control::client::{RESTART_TIMEOUT, STOP_TIMEOUT};
        let parse = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Command::Restart { timeout, .. }
            | Command::Status { timeout, .. }
            | Command::Stop { timeout, .. } => timeout,
        };
        assert_eq!(parse(&["shellflip", "status", "s"]), STATUS_TIMEOUT);
        assert_eq!(parse(&["shellflip", "restart", "s"]), RESTART_TIMEOUT);
        assert_eq!(parse(&["shellflip", "stop", "s"]), STOP_TIMEOUT);
        assert_eq!(
            parse(&["shellflip", "status", "s", "--timeout", "3s"]),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn pids_from_another_namespace_are_marked() {
        assert!(!other_namespace(10, None));
        assert!(!other_namespace(10, Some(10)));
        assert!(other_namespace(1, Some(4242)));
        assert_eq!(Pid::Here(7).to_string(), "7");
        assert_eq!(
            Pid::Foreign(7).to_string(),
            "7 (in the service's PID namespace)"
        );
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
