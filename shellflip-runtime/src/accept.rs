//! Accepting connections: [`Accept`], what a listener must do for
//! [`Context::accept`](crate::Context::accept), and [`AcceptBackoff`], what
//! an accept loop does when `accept()` fails.

use std::time::Duration;

use tokio::time::Instant;

/// A listener [`Context::accept`](crate::Context::accept) can take
/// connections from: Tokio's TCP and Unix listeners, or your own.
pub trait Accept {
    /// What an accepted connection is (stream and peer address).
    type Connection: Send;
    /// Accepts one connection. Must be cancel-safe (dropping the future
    /// loses no connection), as Tokio's listeners are.
    fn accept(&self)
        -> impl std::future::Future<Output = std::io::Result<Self::Connection>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Connection = (tokio::net::TcpStream, std::net::SocketAddr);

    async fn accept(&self) -> std::io::Result<Self::Connection> {
        tokio::net::TcpListener::accept(self).await
    }
}

impl Accept for tokio::net::UnixListener {
    type Connection = (tokio::net::UnixStream, tokio::net::unix::SocketAddr);

    async fn accept(&self) -> std::io::Result<Self::Connection> {
        tokio::net::UnixListener::accept(self).await
    }
}

/// Paces an accept loop through failed `accept()` calls.
///
/// Most accept errors are about the system, not the connection: out of
/// file descriptors (`EMFILE`, `ENFILE`) or memory (`ENOBUFS`, `ENOMEM`).
/// Retrying at once spins a core and, if every failure is logged, writes
/// millions of lines a second. [`failed`](Self::failed) waits before the
/// next attempt — 5 ms after the first failure in a row, doubling up to
/// 500 ms — and logs at most one warning a second (with how many failures
/// it stands for); [`succeeded`](Self::succeeded) starts over.
///
/// ```no_run
/// # async fn serve(listener: tokio::net::TcpListener) {
/// let mut backoff = shellflip_runtime::AcceptBackoff::default();
/// loop {
///     match listener.accept().await {
///         Ok((stream, _)) => {
///             backoff.succeeded();
///             // serve `stream`
///         }
///         Err(e) => backoff.failed(&e).await,
///     }
/// }
/// # }
/// ```
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    /// Failures in a row.
    streak: u32,
    /// When a warning was last logged.
    last_logged: Option<Instant>,
    /// Failures since then.
    unlogged: u64,
}

/// The first pause after a failure...
const FIRST_PAUSE: Duration = Duration::from_millis(5);
/// ...doubled at each failure in a row, up to this.
const LONGEST_PAUSE: Duration = Duration::from_millis(500);
/// At most one warning this often.
const LOG_EVERY: Duration = Duration::from_secs(1);

impl AcceptBackoff {
    /// Records a failed `accept()`: logs it (at most once a second) and
    /// waits before the next attempt.
    pub async fn failed(&mut self, error: &std::io::Error) {
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .last_logged
            .is_none_or(|at| now.duration_since(at) >= LOG_EVERY)
        {
            tracing::warn!(
                %error,
                failures = self.unlogged,
                "accept failed; pausing before the next attempt"
            );
            self.last_logged = Some(now);
            self.unlogged = 0;
        }
        let pause = self.pause();
        self.streak = self.streak.saturating_add(1);
        tokio::time::sleep(pause).await;
    }

    /// Records a successful `accept()`: the next failure waits the
    /// shortest pause again.
    pub fn succeeded(&mut self) {
        self.streak = 0;
    }

    /// The pause before the attempt that follows the current failure.
    fn pause(&self) -> Duration {
        FIRST_PAUSE
            .saturating_mul(1 << self.streak.min(16))
            .min(LONGEST_PAUSE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pauses_double_up_to_the_longest_and_start_over_after_a_success() {
        let error = std::io::Error::from_raw_os_error(24); // EMFILE
        let mut backoff = AcceptBackoff::default();
        let mut pauses = Vec::new();
        for _ in 0..10 {
            let before = Instant::now();
            backoff.failed(&error).await;
            pauses.push(before.elapsed().as_millis());
        }
        assert_eq!(pauses, [5, 10, 20, 40, 80, 160, 320, 500, 500, 500]);
        backoff.succeeded();
        let before = Instant::now();
        backoff.failed(&error).await;
        assert_eq!(before.elapsed().as_millis(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_storm_of_failures_logs_once_a_second() {
        let error = std::io::Error::from_raw_os_error(24);
        let mut backoff = AcceptBackoff::default();
        let mut logged = 0;
        // 3 s of failures at the longest pause: about 6 attempts, 3 lines.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            let before = backoff.last_logged;
            backoff.failed(&error).await;
            if backoff.last_logged != before {
                logged += 1;
            }
        }
        assert!((3..=4).contains(&logged), "{logged} warnings in 3 s");
    }
}
