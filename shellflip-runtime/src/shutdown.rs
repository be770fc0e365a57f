//! Signals and the drain: how a generation is asked to restart or stop, and
//! how it waits for its in-flight work before exiting.

use std::io;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignalRequest {
    /// The restart signal arrived.
    Restart,
    /// SIGTERM or SIGINT: stop gracefully.
    Stop(Signal),
}

/// The signal streams of a generation, installed before the service's code
/// runs so that an early signal is never fatal.
pub(crate) struct Signals {
    restart: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers, then unblocks the restart signal in this
    /// thread (see [`block_until_handled`]): one that arrived meanwhile is
    /// delivered now.
    pub(crate) fn install(restart_signal: shellflip_settings::Signal) -> io::Result<Self> {
        let signals = Signals {
            restart: signal(SignalKind::from_raw(restart_signal.number()))?,
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        };
        if let Err(e) = signal_set(restart_signal).thread_unblock() {
            tracing::warn!(error = %e, "could not unblock the restart signal; restarts by signal will not work");
        }
        Ok(signals)
    }

    /// The next signal request.
    pub(crate) async fn next(&mut self) -> SignalRequest {
        tokio::select! {
            Some(()) = self.restart.recv() => SignalRequest::Restart,
            Some(()) = self.terminate.recv() => SignalRequest::Stop(Signal::SIGTERM),
            Some(()) = self.interrupt.recv() => SignalRequest::Stop(Signal::SIGINT),
            else => std::future::pending().await,
        }
    }
}

/// The set holding `signal` alone. (The settings crate only admits signals
/// that exist here; its tests check the numbers against the system's.)
pub(crate) fn signal_set(signal: shellflip_settings::Signal) -> nix::sys::signal::SigSet {
    Signal::try_from(signal.number()).into_iter().collect()
}

/// Blocks `signal` in this thread (and the threads it starts from now on):
/// until its handler exists, it waits instead of killing the process.
pub(crate) fn block_until_handled(signal: shellflip_settings::Signal) {
    if let Err(e) = signal_set(signal).thread_block() {
        tracing::debug!(error = %e, "could not block the restart signal");
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DrainReport {
    /// How long it took.
    pub duration: Duration,
    /// Tasks still running at the deadline (cut by the exit).
    pub tasks_cut: usize,
}

/// Closes `tracker` and waits for its tasks until `deadline`.
pub(crate) async fn drain(
    tracker: &TaskTracker,
    started: Instant,
    deadline: Instant,
) -> DrainReport {
    tracker.close();
    let finished = tokio::time::timeout_at(deadline, tracker.wait())
        .await
        .is_ok();
    DrainReport {
        duration: started.elapsed(),
        tasks_cut: if finished { 0 } else { tracker.len() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_tasks_and_reports_cut_ones() {
        let tracker = TaskTracker::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tracker.spawn(async move {
            let _ = rx.await;
        });
        tracker.spawn(std::future::pending::<()>());
        let start = Instant::now();
        let _ = tx.send(());
        let report = drain(&tracker, start, start + Duration::from_millis(200)).await;
        assert_eq!(report.tasks_cut, 1);

        let tracker = TaskTracker::new();
        tracker.spawn(async {});
        let report = drain(&tracker, start, Instant::now() + Duration::from_secs(30)).await;
        assert_eq!(report.tasks_cut, 0);
    }
}
