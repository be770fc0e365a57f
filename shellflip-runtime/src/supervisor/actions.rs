//! What the supervisor does for each of the machine's actions, and the
//! exit: the I/O side of the decisions.

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use shellflip_control::protocol::{Response, RestartSuccess};

use crate::channel::{ChildMessage, ParentMessage};
use crate::control::server::{self as control, ControlSocketFile};
use crate::generation::Admission;
use crate::launch;
use crate::machine::{Action, Ending, Failure, Notice, ReplyTo, Successor};
use crate::profile::{self, Hop};
use crate::registry::CONTROL_FD_NAME;
use crate::sync::lock;
use crate::systemd;
use crate::timing;

use super::successor::Watcher;
use super::{Finished, Supervisor};

/// Beyond the drain timeout, how long the last generation of a stopped
/// service waits for the older ones to exit.
const OLDER_EXIT_MARGIN: Duration = Duration::from_secs(5);

/// How long a generation waits for its spawner to exit once released.
const SPAWNER_EXIT: Duration = Duration::from_secs(2);

impl Supervisor {
    /// Carries out one action.
    pub(super) async fn carry_out(&mut self, action: Action) {
        match action {
            Action::Notify(notice) => self.notify(notice),
            Action::Answer(reply, outcome) => self.answer(reply, outcome),
            Action::Refuse(reply, failure) => {
                tracing::info!(reason = %failure.reason, "restart refused");
                if let Some(reply) = reply {
                    self.answer(reply, Err(failure));
                }
            }
            Action::StartRestart { fresh_state } => self.start_restart(fresh_state),
            Action::AbortRestart => {
                if let Some(restart) = &self.restart {
                    restart.abort.cancel();
                }
            }
            Action::ServeReady => self.serve_ready().await,
            Action::BecomeService => self.become_service(),
            Action::Pause => {
                self.generation.admission.send_replace(Admission::Paused);
                self.stop_accepting_control().await;
                profile::mark(Hop::Paused);
            }
            Action::Resume => {
                self.generation.admission.send_replace(Admission::Open);
                self.resume_accepting_control();
            }
            Action::WatchSuccessor => self.watch_successor(),
            Action::KillSuccessor => {
                if let Some(watcher) = &self.watcher {
                    watcher.kill.cancel();
                }
            }
            Action::Commit => self.commit().await,
            Action::TellSuccessorToStop(claim) => {
                if let Some(next) = &self.successor {
                    if let Err(e) = next.link.tell(&ParentMessage::Stop { claim }).await {
                        tracing::debug!(error = %e, pid = next.pid, "could not tell the new generation to stop (gone?)");
                    }
                }
            }
            Action::TellPredecessorStopping(claim) => {
                if let Some(link) = &self.generation.predecessor {
                    if let Err(e) = link.report(&ChildMessage::Stopping { claim }).await {
                        tracing::debug!(error = %e, "could not tell the previous generation that the service stops (gone?)");
                    }
                }
            }
            Action::Shutdown(ending) => {
                let timeout = match ending {
                    Ending::GaveBack => Duration::ZERO,
                    Ending::HandedOver | Ending::Stopped => self.config.drain_timeout,
                };
                // A stop's drain is about no restart.
                let restart = self.record.current.filter(|_| ending != Ending::Stopped);
                self.generation.begin_shutdown(ending, timeout, restart);
            }
            Action::WritePidFile => self.generation.write_pid_file(),
            Action::RecordFailure(reason) => {
                let took = self.restart_elapsed();
                self.lineage.record_failure(took, &reason);
            }
            // This generation owns its state again (a restart that took its
            // snapshot failed or was rolled back).
            Action::ReclaimState => {
                self.generation.state_handed_over.send_replace(false);
            }
            Action::Exit { ending, last } => self.exit = Some((ending, last)),
        }
    }

    fn notify(&self, notice: Notice) {
        let reloading = || {
            let began = NotifyState::MonotonicUsec(i128::from(systemd::monotonic_usec()));
            [NotifyState::Reloading, began]
        };
        let (states, status) = match notice {
            Notice::Ready(status) => (vec![NotifyState::Ready], status),
            Notice::Reloading(status) => (reloading().to_vec(), status),
            Notice::ReloadRefused(status) => {
                self.systemd.send(&reloading(), Some(&status));
                (vec![NotifyState::Ready], status)
            }
            Notice::MainPid(pid, status) => {
                (vec![NotifyState::MainPid(pid), NotifyState::Ready], status)
            }
            Notice::Stopping => {
                let drain = self.config.drain_timeout;
                if self.systemd.is_enabled() {
                    tokio::spawn(systemd::keep_extending_stop_timeout(
                        self.systemd.clone(),
                        tokio::time::Instant::now() + drain,
                    ));
                }
                let extend = systemd::usec(systemd::drain_extension(drain));
                let status = format!(
                    "stopping: draining for up to {}",
                    shellflip_settings::format_duration(drain)
                );
                let stopping = vec![
                    NotifyState::Stopping,
                    NotifyState::ExtendTimeoutUsec(extend),
                ];
                (stopping, status)
            }
        };
        self.systemd.send(&states, Some(&status));
    }

    fn answer(&mut self, reply: ReplyTo, outcome: Result<Successor, Failure>) {
        let Some(sender) = self.replies.remove(&reply) else {
            return;
        };
        let response = match outcome {
            Ok(successor) => {
                let next = self.successor.as_ref().filter(|n| n.pid == successor.pid);
                Response::Restarted(RestartSuccess {
                    pid: successor.pid,
                    generation: successor.generation,
                    duration_ms: timing::ms(self.restart_elapsed()),
                    state: next.and_then(|n| n.state_report.clone()),
                })
            }
            Err(Failure { kind, reason }) => Response::RestartFailed { kind, reason },
        };
        let _ = sender.send(response);
    }

    /// This generation is ready: the READY report is finished, the control
    /// socket is served, what was inherited and not claimed is closed.
    async fn serve_ready(&mut self) {
        let pid = std::process::id();
        let number = self.generation.number;
        tracing::info!(
            generation = number,
            pid,
            startup_ms = timing::ms(self.epoch.elapsed()),
            "ready"
        );
        self.startup.log_phases();
        match &self.generation.state_report {
            Some(report) if report.not_carried.is_some() && number > 1 => {
                tracing::warn!("{report}");
            }
            Some(report) if number > 1 => tracing::info!("{report}"),
            _ => {}
        }
        if let Some(link) = &self.generation.predecessor {
            if let Err(reason) = link
                .finish_ready_report(|| self.generation.write_pid_file())
                .await
            {
                tracing::warn!(error = %reason, "could not tell the previous generation that this one is ready; it is probably gone");
            }
        } else {
            self.generation.write_pid_file();
        }
        if number > 1 {
            self.lineage.record_success(pid);
        }
        for name in self.generation.registry().close_unclaimed() {
            tracing::warn!(
                name,
                "an inherited descriptor was not claimed by this generation; closed it"
            );
        }
        let control = lock(&self.generation.control).take();
        if let Some(open) = control {
            self.serve_control(open.file, open.listener, "");
        }
    }

    /// This generation is the service: it joins the service's process
    /// group, and systemd's fd store holds its sockets.
    fn become_service(&mut self) {
        if self.generation.number > 1 {
            tracing::debug!(
                "the previous generation handed over (or is gone); this one is the service"
            );
            let group = self.lineage.process_group;
            if group != 0 {
                launch::join_process_group(group);
            }
        }
        let registry = self.generation.registry();
        systemd::sync_fd_store(
            &self.systemd,
            self.config.fd_store,
            &registry,
            &mut self.lineage.fd_store,
        );
    }

    fn watch_successor(&mut self) {
        let Some(next) = self.successor.as_mut() else {
            return;
        };
        let Some(process) = next.process.take() else {
            return;
        };
        self.watcher = Some(Watcher::start(
            process,
            Arc::clone(&next.channel),
            self.successor_tx.clone(),
        ));
    }

    /// Hands over for good: the successor may take connections, shutdown
    /// begins, `Commit` says how the drain goes, the older generations'
    /// drains are relayed, the spawner is released (the successor is
    /// re-parented to the service manager, which then sees it die if it
    /// does).
    async fn commit(&mut self) {
        if let Some(watcher) = self.watcher.take() {
            if let (Some(process), Some(next)) = (watcher.release().await, &mut self.successor) {
                next.process = Some(process);
            }
        }
        let Some(next) = &self.successor else {
            return;
        };
        next.link.start();
        *lock(&self.generation.successor) = Some(Arc::clone(&next.link));
        self.generation.begin_shutdown(
            Ending::HandedOver,
            self.config.drain_timeout,
            self.record.current,
        );
        // The handover is complete: the new generation is the service (until
        // then it does not take over: see `child`) and carries the totals on.
        let commit = ParentMessage::Commit {
            drain: self.own_drain(),
            totals: self.record.ledger.exposed(),
        };
        if let Err(e) = next.link.tell(&commit).await {
            tracing::warn!(error = %e, pid = next.pid, "could not tell the new generation that the handover is complete; it takes over when this one exits");
        }
        for older in self.older.list() {
            self.relay(older).await;
        }
        tracing::info!(
            pid = next.pid,
            generation = next.generation,
            "handed over; draining"
        );
        self.spawner.release();
    }

    /// Serves the control socket (`again`: after a rollback).
    fn serve_control(&mut self, file: ControlSocketFile, listener: UnixListener, again: &str) {
        self.lineage.control_socket_file = Some(file.clone());
        let connections = self.generation.control_connections.clone();
        match control::Serving::start(file, listener, self.control_tx.clone(), connections) {
            Ok(serving) => self.control = Some(serving),
            Err(e) => tracing::error!(error = %e, "could not serve the control socket{again}"),
        }
    }

    pub(super) async fn stop_accepting_control(&mut self) {
        if let Some(control) = self.control.as_mut() {
            control.stop().await;
        }
    }

    /// Serves the control socket again after a rollback: from the
    /// registry's copy of the listener, or — if its file was removed
    /// meanwhile — from a new socket bound at the same path, which later
    /// generations then inherit.
    fn resume_accepting_control(&mut self) {
        let Some(file) = self.control.as_ref().map(|c| c.file.clone()) else {
            return;
        };
        if file.is_missing() {
            return self.rebind_control(&file.path);
        }
        let copy = self.generation.registry().duplicate(CONTROL_FD_NAME);
        match copy {
            Some(Ok(fd)) => self.serve_control(file, UnixListener::from(fd), " again"),
            Some(Err(e)) => {
                tracing::error!(error = %e, "could not serve the control socket again");
            }
            None => {}
        }
    }

    /// The control socket's file is gone: binds a new socket at its path,
    /// registers it for later generations and serves it.
    fn rebind_control(&mut self, path: &Path) {
        tracing::warn!(path = %path.display(), "the control socket's file is gone; binding a new one at the same path");
        let (listener, file) = match control::bind_control_socket(path) {
            Ok(bound) => bound,
            Err(e) => {
                tracing::error!(error = %e, "could not bind the control socket again; the service cannot be reached on it");
                return;
            }
        };
        let mut registry = self.generation.registry();
        registry.forget(CONTROL_FD_NAME);
        if let Err(e) = registry.register(CONTROL_FD_NAME, std::os::fd::AsFd::as_fd(&listener)) {
            tracing::warn!(error = %e, "could not register the new control socket for later generations");
        }
        drop(registry);
        self.serve_control(file, listener, " again");
    }

    /// The end: the last generation of a stopped service waits for the
    /// older ones to exit (so that `stop` returns when none is left); every
    /// generation releases its spawner and waits for it to exit.
    pub(super) async fn finish(mut self) -> Finished {
        let (ending, last) = self.exit.unwrap_or((Ending::Stopped, false));
        if last {
            self.wait_for_older().await;
        }
        self.spawner.release_and_wait(SPAWNER_EXIT).await;
        self.stop_accepting_control().await;
        Finished {
            ending,
            control_file: self
                .control
                .as_ref()
                .filter(|_| last)
                .map(|c| c.file.clone()),
            _successor: self.successor.take(),
        }
    }

    /// Waits until the predecessor and the older generations still
    /// draining have exited, up to the latest of their drain deadlines and
    /// this generation's drain timeout, plus a margin.
    async fn wait_for_older(&mut self) {
        let latest = self
            .older
            .list()
            .iter()
            .map(|d| d.deadline_unix_ms.saturating_sub(timing::unix_ms()))
            .max()
            .map(Duration::from_millis)
            .unwrap_or_default();
        let until =
            tokio::time::Instant::now() + self.config.drain_timeout.max(latest) + OLDER_EXIT_MARGIN;
        let predecessor = self
            .generation
            .predecessor
            .as_ref()
            .and_then(|link| link.predecessor.as_ref());
        let all = async {
            if let Some(watch) = predecessor {
                watch.exited().await;
            }
            self.older.all_exited().await;
        };
        if tokio::time::timeout_at(until, all).await.is_err() {
            tracing::warn!("older generations of the service were still running at the end of the stop's wait; exiting anyway");
        }
    }
}
