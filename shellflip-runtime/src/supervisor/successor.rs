//! The successor from its READY until this generation commits or exits:
//! a task watches its process and reads its reports, and turns them into
//! the machine's `Successor*` events. Its exit is reported after whatever
//! it wrote before exiting (a `Stopping` report must not be read as a crash).

use std::future::Future;
use std::io;
use std::pin::Pin;
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
    kill: CancellationToken,
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

    /// Kills the successor (its exit is reported as usual).
    pub(super) fn kill(&self) {
        self.kill.cancel();
    }

    /// Ends the watch and gives the process back (to keep until this
    /// process exits); `None` if the task failed.
    pub(super) async fn release(self) -> Option<NextProcess> {
        self.release.cancel();
        self.task.await.ok()
    }
}

type Report = Pin<Box<dyn Future<Output = io::Result<Option<ChildMessage>>> + Send>>;

fn next_report(channel: &Arc<UnixStream>) -> Report {
    let channel = Arc::clone(channel);
    Box::pin(async move { channel::read_child_message(&channel).await })
}

/// Passes a report the successor wrote on to the machine (the ones it
/// has events for) and starts reading the next; false once the channel is
/// closed or broken.
fn pass_on(
    read: io::Result<Option<ChildMessage>>,
    events: &mpsc::UnboundedSender<Event>,
    report: &mut Report,
    channel: &Arc<UnixStream>,
) -> bool {
    let event = match read {
        Ok(Some(ChildMessage::Unhealthy { reason })) => Some(Event::SuccessorUnhealthy(reason)),
        Ok(Some(ChildMessage::Stopping { claim })) => Some(Event::SuccessorStopping(claim)),
        Ok(Some(_)) => None,
        Ok(None) | Err(_) => return false,
    };
    if let Some(event) = event {
        let _ = events.send(event);
    }
    *report = next_report(channel);
    true
}

async fn watch(
    mut process: NextProcess,
    channel: Arc<UnixStream>,
    events: mpsc::UnboundedSender<Event>,
    kill: CancellationToken,
    release: CancellationToken,
) -> NextProcess {
    // One read at a time, kept across the loop's turns: a report is never
    // cut by another branch winning.
    let mut report = next_report(&channel);
    let mut open = true;
    let mut killed = false;
    loop {
        tokio::select! {
            biased;
            () = release.cancelled() => return process,
            status = process.wait() => {
                // What it wrote before it exited comes first.
                while open {
                    open = match tokio::time::timeout(REPORTS_AFTER_EXIT, &mut report).await {
                        Ok(read) => pass_on(read, &events, &mut report, &channel),
                        Err(_) => false,
                    };
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
            read = &mut report, if open => open = pass_on(read, &events, &mut report, &channel),
        }
    }
}
