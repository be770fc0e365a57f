//! The simulated service's processes and channels: how a generation's
//! actions change the world, what can happen next, and each step.

use std::collections::VecDeque;
use std::time::Duration;

use super::{short, Checked, World, DRAIN, EXIT_MARGIN, READY_TIMEOUT};
use crate::error::RestartError;
use crate::machine::*;

/// What a new generation's build does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Build {
    /// Starts and serves.
    Good,
    /// Reports a failure before READY and exits.
    FailsToStart,
    /// Crashes before READY.
    Crashes,
    /// Never reports.
    Hangs,
    /// Crashes after READY.
    DiesAfterReady,
    /// Reports itself unhealthy after READY.
    Unhealthy,
}

/// From a new generation to its predecessor, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Up {
    Ready,
    Failed,
    Unhealthy,
    Stopping(Claim),
    Exited(&'static str),
}

/// From a predecessor to its successor, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Down {
    Commit,
    Stop(Claim),
    /// The channel closed; `alive`: the predecessor still runs.
    Closed {
        alive: bool,
    },
}

/// A restart in flight, as `parent::restart` would see it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Restart {
    /// The new generation (none: the spawner was gone).
    pub(super) child: Option<usize>,
    pub(super) deadline: Duration,
    pub(super) aborting: bool,
}

/// One generation: its machine and its process.
pub(super) struct Generation {
    pub(super) pid: u32,
    pub(super) number: u64,
    pub(super) machine: Machine,
    pub(super) build: Build,
    pub(super) alive: bool,
    pub(super) ready: bool,
    pub(super) open: bool,
    pub(super) shut_down: bool,
    pub(super) control: bool,
    pub(super) drain_ends: Option<Duration>,
    pub(super) exiting: Option<(bool, Duration)>,
    pub(super) predecessor: Option<usize>,
    pub(super) restart: Option<Restart>,
    /// The successor that reported ready (told, watched).
    pub(super) successor: Option<usize>,
    pub(super) watching: bool,
    pub(super) spawner_alive: bool,
    pub(super) up: VecDeque<Up>,
    pub(super) down: VecDeque<Down>,
}

impl Generation {
    pub(super) fn accepts(&self) -> bool {
        self.alive && self.ready && self.open && !self.shut_down
    }
}

impl World {
    // -- events and actions ------------------------------------------------

    /// Gives generation `g` an event and carries out the machine's actions.
    pub(super) fn handle(&mut self, g: usize, event: Event) -> Checked {
        let before = self.generations[g].machine.phase().clone();
        if matches!(event, Event::StopAsked { .. } | Event::MainReturned) {
            let of_service = matches!(
                before,
                Phase::Serving
                    | Phase::Restarting { .. }
                    | Phase::OnProbation { .. }
                    | Phase::SuccessorOnProbation { .. }
                    | Phase::RollingBack { .. }
                    | Phase::Starting {
                        predecessor_holds: false
                    }
            );
            let main_in_probation = matches!(event, Event::MainReturned)
                && matches!(
                    before,
                    Phase::OnProbation { .. } | Phase::SuccessorOnProbation { .. }
                );
            if of_service && !main_in_probation {
                self.stopped = true;
            }
        }
        let now = self.now;
        let event_name = format!("{event:?}");
        let event_name = event_name
            .split(['(', ' ', '{'])
            .next()
            .unwrap_or("")
            .to_owned();
        self.cells.insert((short(&before), event_name));
        let actions = self.generations[g].machine.handle(event.clone(), now);
        let after = self.generations[g].machine.phase().clone();
        self.trace.push(format!(
            "gen {} (pid {}) {event:?}: {} -> {} {actions:?}",
            self.generations[g].number,
            self.generations[g].pid,
            short(&before),
            short(&after)
        ));
        if self.stopped
            && !self.killed_after_stop
            && after == Phase::Serving
            && before != Phase::Serving
        {
            return Err(self.fail(format!(
                "generation {} became the service after a stop",
                self.generations[g].number
            )));
        }
        for action in actions {
            self.apply(g, action)?;
        }
        self.check_one_acceptor()
    }

    fn apply(&mut self, g: usize, action: Action) -> Checked {
        match action {
            Action::Answer(_, Ok(successor)) => self.check_restarted_answer(g, successor)?,
            Action::StartRestart { .. } => self.start_restart(g),
            Action::AbortRestart => {
                // The restart task kills the new generation at once, unless
                // its READY is already there (then either may come first).
                let ready_sent = self.generations[g].up.contains(&Up::Ready);
                if let Some(restart) = self.generations[g].restart.as_mut() {
                    restart.aborting = true;
                    if let (Some(c), false) = (restart.child, ready_sent) {
                        self.exit(c, "was killed by signal SIGKILL");
                        self.generations[g].up.clear();
                    }
                }
            }
            Action::ServeReady => {
                self.generations[g].control = true;
            }
            Action::Pause => {
                self.generations[g].open = false;
                self.generations[g].control = false;
            }
            Action::Resume => self.resume(g)?,
            Action::WatchSuccessor => self.generations[g].watching = true,
            Action::KillSuccessor => {
                if let Some(s) = self.generations[g].successor {
                    self.exit(s, "was killed by signal SIGKILL");
                }
            }
            Action::Commit => self.commit(g),
            Action::TellSuccessorToStop(claim) => {
                if let Some(s) = self.generations[g].successor {
                    self.generations[s].down.push_back(Down::Stop(claim));
                }
            }
            Action::TellPredecessorStopping(claim) => {
                if let Some(p) = self.generations[g].predecessor {
                    self.generations[p].up.push_back(Up::Stopping(claim));
                }
            }
            Action::Shutdown(ending) => self.shut_down(g, ending),
            Action::WritePidFile => self.pid_file = Some(self.generations[g].pid),
            Action::Exit { last, .. } => {
                let generation = &mut self.generations[g];
                generation.control = false;
                generation.exiting = Some((last, self.now + DRAIN + EXIT_MARGIN));
            }
            Action::Answer(_, Err(_))
            | Action::Refuse(..)
            | Action::Notify(_)
            | Action::BecomeService
            | Action::RecordFailure(_)
            | Action::ReclaimState => {}
        }
        Ok(())
    }

    fn start_restart(&mut self, g: usize) {
        let deadline = self.now + READY_TIMEOUT;
        let child = self.generations[g].spawner_alive.then(|| {
            let build = [
                Build::Good,
                Build::Good,
                Build::Good,
                Build::FailsToStart,
                Build::Crashes,
                Build::Hangs,
                Build::DiesAfterReady,
                Build::Unhealthy,
            ][self.rng.below(8)];
            self.spawn(Some(g), build)
        });
        self.generations[g].restart = Some(Restart {
            child,
            deadline,
            aborting: false,
        });
    }

    fn resume(&mut self, g: usize) -> Checked {
        if self.stopped && !self.killed_after_stop {
            return Err(self.fail(format!(
                "generation {} took the service back after a stop",
                self.generations[g].number
            )));
        }
        let generation = &mut self.generations[g];
        generation.open = true;
        generation.control = true;
        generation.watching = false;
        if let Some(s) = generation.successor.take() {
            // The successor is dropped: its channel closes.
            let alive = self.generations[g].alive;
            self.generations[s].down.push_back(Down::Closed { alive });
        }
        Ok(())
    }

    fn commit(&mut self, g: usize) {
        self.generations[g].watching = false;
        if let Some(s) = self.generations[g].successor {
            self.generations[s].down.push_back(Down::Commit);
        }
        self.shut_down(g, Ending::HandedOver);
    }

    fn shut_down(&mut self, g: usize, ending: Ending) {
        let drain = match ending {
            Ending::GaveBack => Duration::ZERO,
            Ending::HandedOver | Ending::Stopped => self.rng.millis(DRAIN.as_millis() as u64),
        };
        let generation = &mut self.generations[g];
        if !generation.shut_down {
            generation.shut_down = true;
            generation.drain_ends = Some(self.now + drain);
        }
    }

    /// The process of `g` ends: its successor's channel closes (the
    /// predecessor is gone), its predecessor sees it exit.
    pub(super) fn exit(&mut self, g: usize, status: &'static str) {
        if !self.generations[g].alive {
            return;
        }
        self.trace
            .push(format!("pid {} {status}", self.generations[g].pid));
        let generation = &mut self.generations[g];
        generation.alive = false;
        generation.control = false;
        if let Some(p) = generation.predecessor {
            self.generations[p].up.push_back(Up::Exited(status));
        }
        for s in 0..self.generations.len() {
            if self.generations[s].predecessor == Some(g) {
                self.generations[s]
                    .down
                    .push_back(Down::Closed { alive: false });
            }
        }
    }

    // -- what can happen -----------------------------------------------------

    /// Every step that can happen now, as (generation, step).
    pub(super) fn steps(&self) -> Vec<(usize, Step)> {
        let mut steps = Vec::new();
        for (g, generation) in self.generations.iter().enumerate() {
            if !generation.alive {
                continue;
            }
            if let Some(restart) = generation.restart {
                let reported = !generation.up.is_empty();
                if reported {
                    steps.push((g, Step::TakeReport));
                }
                if restart.child.is_none() || (restart.aborting && !reported) {
                    steps.push((g, Step::EndRestart));
                }
                if restart.aborting && reported {
                    steps.push((g, Step::EndRestart));
                }
                if self.now >= restart.deadline && !reported {
                    steps.push((g, Step::EndRestart));
                }
            } else if !generation.up.is_empty() {
                steps.push((g, Step::TakeReport));
            }
            if !generation.down.is_empty() {
                steps.push((g, Step::TakeNews));
            }
            if let Phase::Starting { .. } = generation.machine.phase() {
                if !generation.ready && !generation.shut_down && generation.build != Build::Hangs {
                    steps.push((g, Step::Start));
                }
            }
            if let Phase::OnProbation { .. } = generation.machine.phase() {
                if matches!(generation.build, Build::DiesAfterReady | Build::Unhealthy) {
                    steps.push((g, Step::Misbehave));
                }
            }
            if generation
                .machine
                .next_deadline()
                .is_some_and(|at| at <= self.now)
            {
                steps.push((g, Step::Deadline));
            }
            if generation.drain_ends.is_some_and(|at| at <= self.now) {
                steps.push((g, Step::Drained));
            }
            if let Some((last, bound)) = generation.exiting {
                let older_alive = self
                    .generations
                    .iter()
                    .any(|o| o.alive && o.number < generation.number);
                if !last || !older_alive || self.now >= bound {
                    steps.push((g, Step::Exit));
                }
            }
        }
        steps
    }

    /// The next time something is due.
    pub(super) fn next_due(&self) -> Option<Duration> {
        self.generations
            .iter()
            .filter(|g| g.alive)
            .flat_map(|g| {
                [
                    g.machine.next_deadline(),
                    g.restart.map(|r| r.deadline),
                    g.drain_ends,
                    g.exiting.map(|(_, bound)| bound),
                ]
            })
            .flatten()
            .filter(|&at| at > self.now)
            .min()
    }

    pub(super) fn take(&mut self, g: usize, step: Step) -> Checked {
        match step {
            Step::TakeReport => self.take_report(g),
            Step::EndRestart => self.end_restart(g),
            Step::TakeNews => {
                let news = self.generations[g].down.pop_front();
                let event = match news {
                    Some(Down::Commit) => Event::PredecessorCommitted,
                    Some(Down::Stop(claim)) => Event::PredecessorStopping(claim),
                    Some(Down::Closed { alive: false }) => Event::PredecessorGone,
                    Some(Down::Closed { alive: true }) => Event::PredecessorGaveUp,
                    None => return Ok(()),
                };
                self.handle(g, event)
            }
            Step::Start => self.start(g),
            Step::Misbehave => match self.generations[g].build {
                Build::DiesAfterReady => {
                    self.exit(g, "exited with status 101");
                    Ok(())
                }
                _ => {
                    self.generations[g].build = Build::Good;
                    if let Some(p) = self.generations[g].predecessor {
                        self.generations[p].up.push_back(Up::Unhealthy);
                    }
                    Ok(())
                }
            },
            Step::Deadline => self.handle(g, Event::Deadline),
            Step::Drained => {
                self.generations[g].drain_ends = None;
                self.handle(g, Event::Drained)
            }
            Step::Exit => {
                if let Some((true, _)) = self.generations[g].exiting {
                    self.lasts += 1;
                    if self.lasts > 1 {
                        return Err(
                            self.fail("two generations exit as the last of the service".into())
                        );
                    }
                }
                if self.pid_file == Some(self.generations[g].pid) {
                    self.pid_file = None;
                }
                self.exit(g, "exited with status 0");
                Ok(())
            }
        }
    }

    /// A new generation's build runs: READY, a failure or a crash.
    fn start(&mut self, g: usize) -> Checked {
        let predecessor = self.generations[g].predecessor;
        match self.generations[g].build {
            Build::FailsToStart => {
                if let Some(p) = predecessor {
                    self.generations[p].up.push_back(Up::Failed);
                }
                self.exit(g, "exited with status 1");
                Ok(())
            }
            Build::Crashes => {
                self.exit(g, "was killed by signal SIGSEGV");
                Ok(())
            }
            _ => {
                // ready(): the pid file, then READY, then the machine.
                self.generations[g].ready = true;
                self.pid_file = Some(self.generations[g].pid);
                if let Some(p) = predecessor {
                    self.generations[p].up.push_back(Up::Ready);
                }
                self.handle(g, Event::Ready)
            }
        }
    }

    /// Generation `g` reads its successor's next report: the restart's
    /// outcome while it runs, then what the probation watches.
    fn take_report(&mut self, g: usize) -> Checked {
        let Some(report) = self.generations[g].up.pop_front() else {
            return Ok(());
        };
        if report == Up::Ready
            && self.generations[g]
                .restart
                .is_some_and(|r| r.child.is_some_and(|c| !self.generations[c].alive))
        {
            self.cells
                .insert(("Restarting".into(), "READY of a dead generation".into()));
        }
        let Some(restart) = self.generations[g].restart else {
            if !self.generations[g].watching {
                return Ok(());
            }
            let event = match report {
                Up::Unhealthy => Event::SuccessorUnhealthy("unhealthy".into()),
                Up::Stopping(claim) => Event::SuccessorStopping(claim),
                Up::Exited(status) => {
                    self.generations[g].watching = false;
                    Event::SuccessorExited(status.into())
                }
                Up::Ready | Up::Failed => return Ok(()),
            };
            return self.handle(g, event);
        };
        let child = restart.child;
        self.generations[g].restart = None;
        let event = match report {
            // The supervisor checks that a ready successor is still alive.
            Up::Ready if child.is_some_and(|c| self.generations[c].alive) => {
                let s = child.expect("a report comes from a child");
                self.generations[g].successor = Some(s);
                Event::RestartSucceeded(Successor {
                    pid: self.generations[s].pid,
                    generation: self.generations[s].number,
                })
            }
            Up::Ready | Up::Failed | Up::Exited(_) | Up::Unhealthy | Up::Stopping(_) => {
                if let Some(c) = child {
                    self.exit(c, "was killed by signal SIGKILL");
                }
                self.generations[g].up.clear();
                Event::RestartFailed(failure(RestartError::ChildFailed {
                    pid: 0,
                    reason: format!("{report:?}"),
                }))
            }
        };
        self.handle(g, event)
    }

    /// The restart ends without a report: aborted, timed out, or never
    /// spawned; the new generation is killed and reaped.
    fn end_restart(&mut self, g: usize) -> Checked {
        let Some(restart) = self.generations[g].restart.take() else {
            return Ok(());
        };
        if let Some(c) = restart.child {
            self.exit(c, "was killed by signal SIGKILL");
        }
        self.generations[g].up.clear();
        let error = match restart.child {
            None => RestartError::SpawnerGone {
                pid: 0,
                reason: "killed".into(),
            },
            Some(_) if restart.aborting => RestartError::Aborted { pid: 0 },
            Some(_) => RestartError::ReadyTimeout {
                pid: 0,
                timeout: READY_TIMEOUT,
            },
        };
        self.handle(g, Event::RestartFailed(failure(error)))
    }
}

/// What can happen inside, in one generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Read the successor's next report.
    TakeReport,
    /// The restart ends without a report (abort, timeout, no spawner).
    EndRestart,
    /// Read the predecessor's next message.
    TakeNews,
    /// The build starts: READY, a failure or a crash.
    Start,
    /// The build dies or reports itself unhealthy after READY.
    Misbehave,
    /// The probation's deadline.
    Deadline,
    /// The drain ends.
    Drained,
    /// The process exits (the last waits for the older ones).
    Exit,
}
