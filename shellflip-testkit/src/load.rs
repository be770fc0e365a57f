//! Load: concurrent clients looping on [`exchange`] until stopped, bounded
//! in count and in time, and what they saw; and [`CpuContention`], threads
//! that keep the CPUs busy so that a race shows on a quiet machine as it
//! would on a loaded one.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::client::exchange;
use crate::proto::Greeting;

/// Running clients. Stop them with [`Load::stop`] for their report.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<ClientReport>>,
    /// The greeting of every successful exchange so far, in no particular
    /// order across clients.
    pub seen: Arc<Mutex<Vec<Greeting>>>,
}

/// Threads spinning on the CPUs until dropped, or for at most a given time:
/// the service's threads are then preempted at any point, as on a busy CI
/// machine, which makes an ordering race show in a test on a quiet machine.
#[derive(Debug)]
pub struct CpuContention {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl CpuContention {
    /// Starts `threads` spinning threads, each stopping by itself after
    /// `at_most`.
    pub fn start(threads: usize, at_most: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let until = Instant::now() + at_most;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        CpuContention { stop, threads }
    }
}

impl Drop for CpuContention {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// What the clients of a [`Load`] did.
#[derive(Debug, Default)]
pub struct ClientReport {
    /// Successful exchanges.
    pub ok: u64,
    /// One line per failed exchange: client, exchange number, error.
    pub failures: Vec<String>,
}

impl ClientReport {
    /// Panics, listing the first failures and `context` (a service's
    /// stderr, say), if any exchange failed.
    pub fn assert_no_failures(&self, context: &str) {
        assert!(
            self.failures.is_empty(),
            "{} failed exchanges of {}: {:?}\n{context}",
            self.failures.len(),
            self.ok + self.failures.len() as u64,
            &self.failures[..self.failures.len().min(10)],
        );
    }
}

/// Locks `seen`, even if a client thread panicked while holding it.
fn lock(seen: &Mutex<Vec<Greeting>>) -> MutexGuard<'_, Vec<Greeting>> {
    seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Load {
    /// Starts `clients` threads, each doing at most `max_per_client`
    /// exchanges with `addr`, one after the other, and stopping after
    /// `max_time` at the latest.
    ///
    /// # Panics
    ///
    /// If a thread cannot be spawned.
    pub fn start(
        addr: SocketAddr,
        clients: usize,
        max_per_client: u64,
        max_time: Duration,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|i| {
                let stop = Arc::clone(&stop);
                let seen = Arc::clone(&seen);
                let client = move || {
                    let deadline = Instant::now() + max_time;
                    let mut report = ClientReport::default();
                    for n in 0..max_per_client {
                        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                            break;
                        }
                        match exchange(addr, &format!("client {i} exchange {n}")) {
                            Ok(greeting) => {
                                report.ok += 1;
                                lock(&seen).push(greeting);
                            }
                            Err(e) => report
                                .failures
                                .push(format!("client {i} exchange {n}: {e}")),
                        }
                    }
                    report
                };
                std::thread::Builder::new()
                    .name(format!("client-{i}"))
                    .spawn(client)
                    .unwrap_or_else(|e| panic!("spawn client thread {i}: {e}"))
            })
            .collect();
        Load {
            stop,
            threads,
            seen,
        }
    }

    /// The largest `served` any client has seen so far.
    pub fn max_served(&self) -> u64 {
        lock(&self.seen).iter().map(|g| g.served).max().unwrap_or(0)
    }

    /// The largest `served` seen from `pid`.
    pub fn max_served_by(&self, pid: u32) -> u64 {
        lock(&self.seen)
            .iter()
            .filter(|g| g.pid == pid)
            .map(|g| g.served)
            .max()
            .unwrap_or(0)
    }

    /// The number of exchanges `pid` answered so far.
    pub fn count_from(&self, pid: u32) -> usize {
        lock(&self.seen).iter().filter(|g| g.pid == pid).count()
    }

    /// [`Load::stop`], asserting that `pid` answered none of the
    /// exchanges: a generation that must not serve any more (started after
    /// a stop, a load shows whether any generation takes the service
    /// back).
    ///
    /// # Panics
    ///
    /// If `pid` answered any, naming `what` and adding `context` (a
    /// service's stderr, say).
    #[track_caller]
    pub fn stop_expecting_none_from(self, pid: u32, what: &str, context: &str) -> ClientReport {
        let by_pid = self.count_from(pid);
        let report = self.stop();
        assert_eq!(
            by_pid, 0,
            "{what}: pid {pid} answered {by_pid} new connections, but must not serve any more\n\
             {context}"
        );
        report
    }

    /// Stops the clients (each finishes its current exchange) and adds up
    /// their reports.
    ///
    /// # Panics
    ///
    /// If a client thread panicked.
    pub fn stop(mut self) -> ClientReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = ClientReport::default();
        for t in std::mem::take(&mut self.threads) {
            let r = t
                .join()
                .unwrap_or_else(|_| panic!("a client thread panicked"));
            total.ok += r.ok;
            total.failures.extend(r.failures);
        }
        total
    }
}

/// Clients dropped without [`Load::stop`] (a test that failed midway) stop
/// after their current exchange instead of running on to their bounds.
impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_reported_with_their_context() {
        let report = ClientReport {
            ok: 3,
            failures: vec!["client 0 exchange 1: connect: Connection refused".into()],
        };
        let panic =
            std::panic::catch_unwind(|| report.assert_no_failures("the stderr")).unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(message.starts_with("1 failed exchanges of 4"), "{message}");
        assert!(message.ends_with("\nthe stderr"), "{message}");
        ClientReport::default().assert_no_failures("");
    }

    #[test]
    fn clients_stop_at_their_bound() {
        // Nobody listens: every exchange fails at once, so the bound on the
        // count is what stops each client.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let load = Load::start(addr, 2, 3, Duration::from_secs(30));
        crate::wait::wait_until("the clients to finish", crate::wait::EVENT_TIMEOUT, || {
            load.threads.iter().all(|t| t.is_finished())
        });
        let report = load.stop();
        assert_eq!((report.ok, report.failures.len()), (0, 6));
        assert!(
            report.failures[0].contains("connect"),
            "{:?}",
            report.failures
        );
    }
}
