//! The older generations that still drain, as the newest generation knows
//! them: from the handover (those its predecessor knew of), its
//! predecessor's `Commit`, and the progress reports relayed along the
//! chain of channels. Watched through their pids: an entry goes when its
//! process exits (a task per entry waits for the exit, and the supervisor
//! forgets it then, closing its pidfd; see [`DrainingGenerations::next_exit`]).
//! The newest generation lists them in `status` and ends the oldest drains
//! beyond `max_draining`.

use std::sync::Arc;

use shellflip_control::protocol::{GenerationStatus, Phase};
use tokio::task::JoinSet;

use crate::channel::Draining;
use crate::launch::ExitWatch;

/// One older generation still draining.
struct Entry {
    info: Draining,
    /// Shared with the task that waits for its exit (which ends then).
    watch: Arc<ExitWatch>,
}

/// See the module docs.
pub(crate) struct DrainingGenerations {
    /// Oldest first.
    entries: Vec<Entry>,
    /// The tasks waiting for the entries' exits, each ending with its
    /// entry's generation number.
    exits: JoinSet<u64>,
}

impl DrainingGenerations {
    /// Starts from what the handover said. Inside the runtime.
    pub(crate) fn new(known: Vec<Draining>) -> Self {
        let mut draining = DrainingGenerations {
            entries: Vec::new(),
            exits: JoinSet::new(),
        };
        for info in known {
            draining.update(info);
        }
        draining
    }

    /// Resolves when the process of an entry exits, with its generation
    /// number; then call [`forget_exited`](Self::forget_exited). `None` at
    /// once when no exit is awaited. Cancel-safe (a select branch of the
    /// supervisor's loop).
    pub(crate) async fn next_exit(&mut self) -> Option<u64> {
        self.exits.join_next().await?.ok()
    }

    /// Resolves once every generation listed has exited.
    pub(crate) async fn all_exited(&self) {
        for entry in &self.entries {
            entry.watch.exited().await;
        }
    }

    /// Records (or refreshes) what a draining generation reported.
    pub(crate) fn update(&mut self, info: Draining) {
        self.forget_exited();
        match self
            .entries
            .iter_mut()
            .find(|e| e.info.generation == info.generation)
        {
            Some(entry) => entry.info = info,
            None => {
                let watch = Arc::new(ExitWatch::new(info.pid));
                if !watch.has_exited() {
                    let (generation, waiting) = (info.generation, Arc::clone(&watch));
                    self.exits.spawn(async move {
                        waiting.exited().await;
                        generation
                    });
                    self.entries.push(Entry { info, watch });
                    self.entries.sort_by_key(|e| e.info.generation);
                }
            }
        }
    }

    /// The ones still running, oldest first.
    pub(crate) fn list(&mut self) -> Vec<Draining> {
        self.forget_exited();
        self.entries.iter().map(|e| e.info.clone()).collect()
    }

    /// Ends the drains of the oldest generations until at most `max` drain
    /// (their remaining work is cut: they are killed). Returns those cut.
    pub(crate) fn cut_beyond(&mut self, max: usize) -> Vec<Draining> {
        self.forget_exited();
        let excess = self.entries.len().saturating_sub(max);
        let cut: Vec<Entry> = self.entries.drain(..excess).collect();
        for entry in &cut {
            if let Err(e) = entry.watch.kill() {
                tracing::debug!(pid = entry.info.pid, error = %e, "could not end a drain (exited already?)");
            }
        }
        cut.into_iter().map(|e| e.info).collect()
    }

    /// What `status` shows of them.
    pub(crate) fn statuses(&mut self) -> Vec<GenerationStatus> {
        self.list()
            .into_iter()
            .map(|d| GenerationStatus {
                generation: d.generation,
                pid: d.pid,
                phase: Phase::Draining,
                tasks: d.tasks,
                drain_deadline_unix_ms: Some(d.deadline_unix_ms),
            })
            .collect()
    }

    /// Drops the entries whose process has exited (and with them the
    /// pidfds that watched them).
    pub(crate) fn forget_exited(&mut self) {
        self.entries.retain(|e| !e.watch.has_exited());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper() -> tokio::process::Child {
        tokio::process::Command::new("sleep")
            .arg("600")
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    fn draining(generation: u64, pid: u32, tasks: u64) -> Draining {
        Draining {
            generation,
            pid,
            deadline_unix_ms: 1_000 * generation,
            tasks: Some(tasks),
        }
    }

    #[tokio::test]
    async fn the_oldest_are_cut_beyond_the_cap_and_the_exited_forgotten() {
        let mut one = sleeper();
        let mut two = sleeper();
        let mut three = sleeper();
        let pid = |c: &tokio::process::Child| c.id().unwrap();
        let mut generations = DrainingGenerations::new(vec![draining(2, pid(&two), 1)]);
        generations.update(draining_entry(1, pid(&one)));
        generations.update(draining_entry(3, pid(&three)));
        generations.update(draining(2, pid(&two), 0));
        let numbers: Vec<u64> = generations.list().iter().map(|d| d.generation).collect();
        assert_eq!(numbers, [1, 2, 3]);
        assert_eq!(generations.list()[1].tasks, Some(0));
        let cut = generations.cut_beyond(2);
        assert_eq!(cut.len(), 1);
        assert_eq!(cut[0].generation, 1);
        assert!(one.wait().await.unwrap().code().is_none(), "killed");
        three.kill().await.unwrap();
        let statuses = generations.statuses();
        assert_eq!(statuses.len(), 1);
        assert_eq!(statuses[0].generation, 2);
        two.kill().await.unwrap();
    }

    #[tokio::test]
    async fn an_entry_whose_process_exits_is_forgotten_without_being_asked() {
        let mut one = sleeper();
        let pid = one.id().unwrap();
        let mut generations = DrainingGenerations::new(vec![draining(4, pid, 1)]);
        one.kill().await.unwrap();
        let exited =
            tokio::time::timeout(std::time::Duration::from_secs(60), generations.next_exit())
                .await
                .expect("the exit is noticed");
        assert_eq!(exited, Some(4));
        generations.forget_exited();
        assert!(generations.entries.is_empty(), "its pidfd is closed");
    }

    fn draining_entry(generation: u64, pid: u32) -> Draining {
        draining(generation, pid, 5)
    }
}
