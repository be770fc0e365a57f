//! Stops, and other ways a generation ends before its drain: a stop that
//! reaches the service or either side of a probation ends the whole
//! service, and exactly one generation — the one with the highest
//! [`Claim`] — exits last, after every other.

use super::*;

impl Machine {
    fn claim(&self, control: bool) -> Claim {
        Claim {
            control,
            generation: self.settings.generation,
        }
    }

    pub(super) fn on_stop_asked(&mut self, control: bool, actions: &mut Vec<Action>) {
        let claim = self.claim(control);
        match std::mem::replace(&mut self.phase, Phase::Exited) {
            Phase::Starting {
                predecessor_holds: true,
            } => {
                // Not the service yet: a failed restart, which the
                // predecessor reports (this generation exits before READY).
                self.stop(None, Other::None, None, false, actions);
            }
            Phase::Starting {
                predecessor_holds: false,
            }
            | Phase::Serving => self.stop(None, Other::None, Some(claim), true, actions),
            Phase::OnProbation { deferred } => {
                // The predecessor holds its listeners: it stops too instead
                // of taking the service back.
                refuse_all(deferred, shutting_down, actions);
                actions.push(Action::TellPredecessorStopping(claim));
                self.stop(None, Other::Predecessor, Some(claim), true, actions);
            }
            Phase::Restarting { ask } => {
                actions.push(Action::AbortRestart);
                self.stop(Some(ask), Other::None, Some(claim), true, actions);
            }
            Phase::SuccessorOnProbation { successor, .. }
            | Phase::RollingBack { successor, .. } => {
                // The successor is the main pid already: it stops too.
                actions.push(Action::TellSuccessorToStop(claim));
                let other = Other::Successor(successor);
                self.stop(None, other, Some(claim), false, actions);
            }
            stopping @ Phase::Stopping { .. } => {
                self.phase = stopping;
                // A stop request's client waits on this generation: it
                // claims to exit last, unless it does already.
                let claimed = matches!(
                    self.phase,
                    Phase::Stopping {
                        last: Some(Claim { control: true, .. }),
                        ..
                    }
                );
                if control && !claimed {
                    self.claim_last(claim, actions);
                }
            }
            // Draining: only this generation's drain, which ends by itself;
            // the service goes on.
            phase @ (Phase::Draining { .. } | Phase::GivingBack | Phase::Exited) => {
                self.phase = phase
            }
        }
    }

    /// Begins a stop. `main_pid`: this generation is the main pid, so
    /// systemd hears `STOPPING=1`.
    fn stop(
        &mut self,
        aborting: Option<RestartAsk>,
        other: Other,
        last: Option<Claim>,
        main_pid: bool,
        actions: &mut Vec<Action>,
    ) {
        if main_pid {
            actions.push(Action::Notify(Notice::Stopping));
        }
        actions.push(Action::Shutdown(Ending::Stopped));
        self.phase = Phase::Stopping {
            aborting,
            other,
            last,
            drained: false,
        };
    }

    /// Claims to exit last, and tells the other side (which yields if its
    /// own claim is lower).
    fn claim_last(&mut self, claim: Claim, actions: &mut Vec<Action>) {
        if let Phase::Stopping { other, last, .. } = &mut self.phase {
            *last = Some(claim);
            match other {
                Other::Predecessor => actions.push(Action::TellPredecessorStopping(claim)),
                Other::Successor(_) => actions.push(Action::TellSuccessorToStop(claim)),
                Other::None => {}
            }
        }
    }

    /// The other side of the probation stops, claiming `theirs`.
    pub(super) fn on_other_stopping(
        &mut self,
        theirs: Claim,
        from_successor: bool,
        actions: &mut Vec<Action>,
    ) {
        let mine = self.claim(false);
        match std::mem::replace(&mut self.phase, Phase::Exited) {
            Phase::OnProbation { deferred } if !from_successor => {
                // The stop reached the predecessor: this generation, the
                // main pid, stops too.
                refuse_all(deferred, shutting_down, actions);
                self.stop(None, Other::Predecessor, None, true, actions);
                if mine > theirs {
                    self.claim_last(mine, actions);
                }
            }
            Phase::SuccessorOnProbation { successor, .. }
            | Phase::RollingBack { successor, .. }
                if from_successor =>
            {
                // The stop reached the successor: this generation stops
                // too, never taking the service back.
                self.stop(None, Other::Successor(successor), None, false, actions);
                if mine > theirs {
                    self.claim_last(mine, actions);
                }
            }
            Phase::Stopping {
                aborting,
                other,
                last,
                drained,
            } => {
                // Both sides stop: the lower claim yields.
                let from_other = match other {
                    Other::Successor(_) => from_successor,
                    Other::Predecessor => !from_successor,
                    Other::None => false,
                };
                self.phase = Phase::Stopping {
                    aborting,
                    other,
                    last: last.filter(|mine| !from_other || *mine > theirs),
                    drained,
                };
                self.exit_if_done(actions);
            }
            phase => self.phase = phase,
        }
    }

    /// The restart a stop aborted produced a ready generation after all: it
    /// is told to stop too, and the initiator hears the restart did not
    /// happen.
    pub(super) fn stopping_successor_ready(
        &mut self,
        ask: RestartAsk,
        successor: Successor,
        last: Option<Claim>,
        drained: bool,
        actions: &mut Vec<Action>,
    ) {
        actions.push(Action::WatchSuccessor);
        actions.push(Action::TellSuccessorToStop(
            last.unwrap_or_else(|| self.claim(false)),
        ));
        if let Some(reply) = ask.reply {
            actions.push(Action::Answer(
                reply,
                Err(Failure {
                    kind: FailureKind::ShuttingDown,
                    reason: format!(
                        "the service is stopping: the new generation {} (pid {}) became ready as the stop arrived and stops too",
                        successor.generation, successor.pid
                    ),
                }),
            ));
        }
        self.phase = Phase::Stopping {
            aborting: None,
            other: Other::Successor(successor),
            last,
            drained,
        };
        self.exit_if_done(actions);
    }

    /// The restart a stop aborted failed (its new generation killed).
    pub(super) fn stopping_restart_failed(
        &mut self,
        ask: RestartAsk,
        failure: Failure,
        other: Other,
        last: Option<Claim>,
        drained: bool,
        actions: &mut Vec<Action>,
    ) {
        actions.push(Action::RecordFailure(failure.reason.clone()));
        if last.is_some() {
            // The killed generation may have written it.
            actions.push(Action::WritePidFile);
        }
        if let Some(reply) = ask.reply {
            actions.push(Action::Answer(reply, Err(failure)));
        }
        self.phase = Phase::Stopping {
            aborting: None,
            other,
            last,
            drained,
        };
        self.exit_if_done(actions);
    }

    /// Ends this generation before its predecessor committed: the
    /// predecessor serves on.
    pub(super) fn give_back(&mut self, actions: &mut Vec<Action>) {
        let deferred = match std::mem::replace(&mut self.phase, Phase::Exited) {
            Phase::Starting { .. } => Vec::new(),
            Phase::OnProbation { deferred } => deferred,
            phase => {
                self.phase = phase;
                return;
            }
        };
        refuse_all(deferred, shutting_down, actions);
        actions.push(Action::Shutdown(Ending::GaveBack));
        actions.push(Action::Exit {
            ending: Ending::GaveBack,
            last: false,
        });
        self.phase = Phase::GivingBack;
    }

    pub(super) fn on_main_returned(&mut self, actions: &mut Vec<Action>) {
        match &self.phase {
            // Before READY: the restart fails (the supervisor reports why).
            // During this generation's probation: the new build ended by
            // itself, which is a failure: the predecessor takes the service
            // back.
            Phase::Starting {
                predecessor_holds: true,
            }
            | Phase::OnProbation { .. } => self.give_back(actions),
            // Holding for a successor: hand over at once.
            Phase::SuccessorOnProbation { successor, .. } => {
                let successor = *successor;
                self.commit(successor, actions)
            }
            // The service ended itself: a stop (while rolling back, the
            // unhealthy successor is not to be handed the service).
            Phase::Starting { .. }
            | Phase::Serving
            | Phase::Restarting { .. }
            | Phase::RollingBack { .. } => self.on_stop_asked(false, actions),
            Phase::Draining { .. } | Phase::Stopping { .. } | Phase::GivingBack | Phase::Exited => {
            }
        }
    }

    /// A stopping generation exits once drained, once the restart it
    /// aborted has its outcome, and — when it exits last — once the
    /// successor it stopped has exited.
    pub(super) fn exit_if_done(&mut self, actions: &mut Vec<Action>) {
        if let Phase::Stopping {
            aborting: None,
            other,
            last,
            drained: true,
        } = self.phase
        {
            if last.is_some() && matches!(other, Other::Successor(_)) {
                return;
            }
            actions.push(Action::Exit {
                ending: Ending::Stopped,
                last: last.is_some(),
            });
            self.phase = Phase::Exited;
        }
    }
}
