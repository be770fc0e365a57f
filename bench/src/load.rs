//! The load: concurrent clients doing echo exchanges, and a prober that
//! asks every millisecond who answers. Every loop is bounded in count and
//! in time. One exchange is the test kit's [`Connection`], timed here.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use shellflip_testkit::client::{Connection, Timeouts};

use crate::harness::Clock;

/// Socket timeouts of one exchange.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on the exchanges of one client.
const MAX_EXCHANGES_PER_CLIENT: u64 = 20_000_000;

/// One answered connection.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    /// When the greeting arrived (µs).
    pub greeted: u64,
    /// When the exchange completed (µs).
    pub done: u64,
    pub pid: u32,
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
                            match exchange(addr, &line, clock, false) {
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
                            match exchange(addr, "", clock, true) {
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
