//! The load: concurrent clients doing exchanges, and a prober that asks
//! every millisecond who answers. Every loop is bounded in count and in
//! time. An echo exchange is the test kit's [`Connection`], timed here; a
//! pid exchange ([`pid_exchange`]) is a plain socket's.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use shellflip_bench::service::{parse_pid_line, Protocol, MAX_PID_LINE};
use shellflip_testkit::client::{Connection, Timeouts};

use crate::harness::Clock;

/// Socket timeouts of one exchange.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on the exchanges of one client.
const MAX_EXCHANGES_PER_CLIENT: u64 = 20_000_000;

/// One answered connection.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    /// When the greeting arrived (µs); in the pid protocol, the answer.
    pub greeted: u64,
    /// When the exchange completed (µs).
    pub done: u64,
    pub pid: u32,
    /// 0 in the pid protocol (its answer has none).
    pub generation: u64,
    /// From the prober (a greeting only) rather than a client.
    pub probe: bool,
}

/// One failed connection.
#[derive(Debug, Clone)]
pub struct Failure {
    pub at: u64,
    pub kind: &'static str,
}

/// Everything the load saw, sorted by time.
#[derive(Debug, Default)]
pub struct Seen {
    pub answers: Vec<Answer>,
    pub failures: Vec<Failure>,
}

impl Seen {
    /// Client exchanges completed in `[from, to)`.
    pub fn completed_between(&self, from: u64, to: u64) -> u64 {
        self.answers
            .iter()
            .filter(|a| !a.probe && a.done >= from && a.done < to)
            .count() as u64
    }

    /// The first greeting from `pid` at or after `from`.
    pub fn first_answer_from(&self, pid: u32, from: u64) -> Option<u64> {
        let start = self.answers.partition_point(|a| a.greeted < from);
        self.answers[start..]
            .iter()
            .find(|a| a.pid == pid)
            .map(|a| a.greeted)
    }
}

/// Running clients and prober.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Seen>>,
}

impl Load {
    /// `clients` threads looping on [`exchange`] and, if `probe`, one
    /// thread connecting every millisecond; all stop after `max_time`.
    pub fn start(
        addr: SocketAddr,
        clients: usize,
        probe: bool,
        clock: Clock,
        max_time: Duration,
    ) -> Load {
        Load::start_speaking(Protocol::Echo, addr, clients, probe, clock, max_time)
    }

    /// The same in `protocol`: the echo exchange ([`exchange`]; the prober
    /// reads the greeting only) or the pid exchange ([`pid_exchange`]; the
    /// prober does the same as a client).
    pub fn start_speaking(
        protocol: Protocol,
        addr: SocketAddr,
        clients: usize,
        probe: bool,
        clock: Clock,
        max_time: Duration,
    ) -> Load {
        let exchange_once = move |line: &str, probe: bool| match protocol {
            Protocol::Echo => exchange(addr, line, clock, probe),
            Protocol::Pid => pid_exchange(addr, line, clock, probe),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let deadline = clock.now() + max_time.as_micros() as u64;
        let mut threads = Vec::new();
        for i in 0..clients {
            let stop = Arc::clone(&stop);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("client-{i}"))
                    .spawn(move || {
                        let mut seen = Seen::default();
                        let line = format!("client {i} says hello");
                        for _ in 0..MAX_EXCHANGES_PER_CLIENT {
                            if stop.load(Ordering::Relaxed) || clock.now() > deadline {
                                break;
                            }
                            match exchange_once(&line, false) {
                                Ok(a) => seen.answers.push(a),
                                Err(kind) => seen.failures.push(Failure {
                                    at: clock.now(),
                                    kind,
                                }),
                            }
                        }
                        seen
                    })
                    .expect("spawn a client thread"),
            );
        }
        if probe {
            let stop = Arc::clone(&stop);
            threads.push(
                std::thread::Builder::new()
                    .name("prober".into())
                    .spawn(move || {
                        let mut seen = Seen::default();
                        let mut tick = clock.now();
                        let max_probes = max_time.as_millis() as u64 + 1;
                        for _ in 0..max_probes {
                            if stop.load(Ordering::Relaxed) || clock.now() > deadline {
                                break;
                            }
                            match exchange_once("probe", true) {
                                Ok(a) => seen.answers.push(a),
                                Err(kind) => seen.failures.push(Failure {
                                    at: clock.now(),
                                    kind,
                                }),
                            }
                            // The next millisecond tick; ticks missed are
                            // skipped, not caught up.
                            let now = clock.now();
                            tick = (tick + 1000).max(now);
                            std::thread::sleep(Duration::from_micros(tick - now));
                        }
                        seen
                    })
                    .expect("spawn the prober thread"),
            );
        }
        Load { stop, threads }
    }

    /// Stops the load and returns what it saw, sorted by time.
    pub fn stop(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Seen::default();
        for t in self.threads {
            let seen = t.join().expect("load thread");
            all.answers.extend(seen.answers);
            all.failures.extend(seen.failures);
        }
        all.answers.sort_by_key(|a| a.greeted);
        all.failures.sort_by_key(|f| f.at);
        all
    }
}

/// Connects, reads the greeting and, unless `probe`, sends `line` and
/// reads it back; then closes and waits for the server's close, so that
/// the server's task has finished when the exchange counts as done. A
/// failure is its class ([`shellflip_testkit::client::ExchangeError::kind`]).
pub fn exchange(
    addr: SocketAddr,
    line: &str,
    clock: Clock,
    probe: bool,
) -> Result<Answer, &'static str> {
    let timeouts = Timeouts {
        connect: IO_TIMEOUT,
        io: IO_TIMEOUT,
    };
    let mut connection = Connection::connect(addr, timeouts).map_err(|e| e.kind())?;
    let greeting = connection.greeting().map_err(|e| e.kind())?;
    let greeted = clock.now();
    if !probe {
        connection.echo(line).map_err(|e| e.kind())?;
    }
    // The answer was complete; how the close goes does not change it.
    let _ = connection.close();
    Ok(Answer {
        greeted,
        done: clock.now(),
        pid: greeting.pid,
        generation: greeting.generation,
        probe,
    })
}

/// One exchange of the pid protocol: connects, sends `line`, reads the
/// answer until the server closes, and checks it is `pid=<pid>`. A failure
/// is its class: `connect: refused`, `reset before the pid`, `closed before
/// the pid`, `bad pid answer`...
pub fn pid_exchange(
    addr: SocketAddr,
    line: &str,
    clock: Clock,
    probe: bool,
) -> Result<Answer, &'static str> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| match e.kind() {
        ErrorKind::ConnectionRefused => "connect: refused",
        ErrorKind::ConnectionReset => "connect: reset",
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "connect: timeout",
        _ => "connect: other",
    })?;
    let setup = stream
        .set_nodelay(true)
        .and_then(|()| stream.set_read_timeout(Some(IO_TIMEOUT)))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)));
    setup.map_err(|_| "connect: other")?;
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(|e| match e.kind() {
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => "reset before the line was sent",
            ErrorKind::TimedOut | ErrorKind::WouldBlock => "timeout sending the line",
            _ => "error sending the line",
        })?;
    let mut answer = Vec::new();
    (&mut stream)
        .take(MAX_PID_LINE)
        .read_to_end(&mut answer)
        .map_err(|e| match e.kind() {
            ErrorKind::ConnectionReset => "reset before the pid",
            ErrorKind::TimedOut | ErrorKind::WouldBlock => "timeout before the pid",
            _ => "error before the pid",
        })?;
    let answered = clock.now();
    if answer.is_empty() {
        return Err("closed before the pid");
    }
    let pid = std::str::from_utf8(&answer)
        .ok()
        .and_then(parse_pid_line)
        .ok_or("bad pid answer")?;
    Ok(Answer {
        greeted: answered,
        done: answered,
        pid,
        generation: 0,
        probe,
    })
}
