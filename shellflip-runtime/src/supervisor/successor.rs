//! The successor from its READY until this generation commits or exits:
//! a task watches its process and reads its reports, and turns them into
//! the machine's `Successor*` events. Its exit is reported after whatever
//! it wrote before exiting (a `Stopping` report must not be read as a crash).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::channel::{self, ChildMessage};
use crate::launch::describe_status;
use crate::machine::Event;
use crate::spawner::{NextProcess, Successor};

/// How long, once the successor exited, the reports it wrote before have
/// to be read (they are in the socket already).
const REPORTS_AFTER_EXIT: Duration = Duration::from_millis(200);

/// The task watching a successor.
pub(super) struct Watcher {
    /// Cancelled to kill the successor (its exit is reported as usual).
    pub(super) kill: CancellationToken,
    release: CancellationToken,
    task: JoinHandle<NextProcess>,
}

impl Watcher {
    /// Watches `process`, reading its reports on `channel`; what happens
    /// goes to `events`.
    pub(super) fn start(
        process: NextProcess,
        channel: Arc<UnixStream>,
        events: mpsc::UnboundedSender<Event>,
    ) -> Watcher {
        let (kill, release) = (CancellationToken::new(), CancellationToken::new());
        // In the span of the restart (see `record`).
        let task = tokio::spawn(
            watch(process, channel, events, kill.clone(), release.clone())
                .instrument(tracing::Span::current()),
        );
        Watcher {
            kill,
            release,
            task,
        }
    }

    /// Ends the watch and gives the process back (to keep until this
    /// process exits); `None` if the task failed.
    pub(super) async fn release(self) -> Option<NextProcess> {
        self.release.cancel();
        self.task.await.ok()
    }
}

async fn watch(
    mut process: NextProcess,
    channel: Arc<UnixStream>,
    events: mpsc::UnboundedSender<Event>,
    kill: CancellationToken,
    release: CancellationToken,
) -> NextProcess {
    // Its reports, passed on to the machine (the ones it has events for)
    // until the channel is closed or broken. One future, kept across the
    // loop's turns: a report is never cut by another branch winning.
    let reports = async {
        while let Ok(Some(report)) = channel::read_child_message(&channel).await {
            let event = match report {
                ChildMessage::Unhealthy { reason } => Event::SuccessorUnhealthy(reason),
                ChildMessage::Stopping { claim } => Event::SuccessorStopping(claim),
                _ => continue,
            };
            let _ = events.send(event);
        }
    };
    tokio::pin!(reports);
    let mut open = true;
    let mut killed = false;
    loop {
        tokio::select! {
            biased;
            () = release.cancelled() => return process,
            status = process.wait() => {
                // What it wrote before it exited comes first.
                if open {
                    let _ = tokio::time::timeout(REPORTS_AFTER_EXIT, &mut reports).await;
                }
                // Nothing of it outlives the rollback: what it left of its
                // group goes too, as when it is killed.
                if !killed {
                    process.end_what_it_left().await;
                }
                let _ = events.send(Event::SuccessorExited(describe_status(status)));
                release.cancelled().await;
                return process;
            }
            () = kill.cancelled(), if !killed => {
                killed = true;
                if let Err(e) = process.start_kill() {
                    tracing::debug!(error = %e, "kill of the new generation failed (already exited?)");
                }
            }
            () = &mut reports, if open => open = false,
        }
    }
}
