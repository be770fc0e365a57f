//! The machine's decisions on the sequences that matter most; the table
//! (`table.rs`) covers every single event, the explorer (`explore.rs`)
//! random sequences of many generations.

use std::time::Duration;

use super::*;

const OLD: u32 = 100;
const NEW: Successor = Successor {
    pid: 200,
    generation: 3,
};

fn machine(pid: u32, generation: u64, has_predecessor: bool, probation: Duration) -> Machine {
    Machine::new(
        Settings {
            pid,
            generation,
            probation,
            ready_timeout: Duration::from_secs(30),
        },
        has_predecessor,
    )
}

/// The old generation (2), serving, its successor (3) on probation.
fn holding_for_successor() -> Machine {
    let mut old = machine(OLD, 2, false, Duration::from_secs(2));
    old.handle(Event::Ready, Duration::ZERO);
    old.handle(control_restart(7), Duration::ZERO);
    let actions = old.handle(Event::RestartSucceeded(NEW), Duration::ZERO);
    assert!(actions.contains(&Action::Pause));
    assert!(actions.contains(&Action::Answer(ReplyTo(7), Ok(NEW))));
    old
}

/// The new generation (3), ready and on probation.
fn on_probation() -> Machine {
    let mut new = machine(NEW.pid, 3, true, Duration::from_secs(2));
    new.handle(Event::Ready, Duration::ZERO);
    assert!(matches!(new.phase(), Phase::OnProbation { .. }));
    new
}

fn control_restart(reply: u64) -> Event {
    Event::RestartAsked(RestartAsk {
        trigger: Trigger::Control,
        reply: Some(ReplyTo(reply)),
        fresh_state: false,
    })
}

fn exits(actions: &[Action]) -> Vec<(Ending, bool)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Exit { ending, last } => Some((*ending, *last)),
            _ => None,
        })
        .collect()
}

fn claim(control: bool, generation: u64) -> Claim {
    Claim {
        control,
        generation,
    }
}

/// `shellflip restart && shellflip stop`, or SIGTERM to the pid file's
/// pid, during the probation: the stop reaches the new generation, which
/// tells the old one; the old one stops too and never takes the service
/// back when the new one exits. The new one exits last.
#[test]
fn a_stop_of_the_new_generation_on_probation_stops_the_old_one_too() {
    let (mut old, mut new) = (holding_for_successor(), on_probation());
    let actions = new.handle(Event::StopAsked { control: true }, Duration::ZERO);
    assert_eq!(
        actions,
        vec![
            Action::TellPredecessorStopping(claim(true, 3)),
            Action::Notify(Notice::Stopping),
            Action::Shutdown(Ending::Stopped),
        ]
    );
    let actions = old.handle(Event::SuccessorStopping(claim(true, 3)), Duration::ZERO);
    assert_eq!(actions, vec![Action::Shutdown(Ending::Stopped)]);
    // The new generation exits first here: no rollback.
    let actions = old.handle(
        Event::SuccessorExited("exited with status 0".into()),
        Duration::ZERO,
    );
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(
        exits(&old.handle(Event::Drained, Duration::ZERO)),
        [(Ending::Stopped, false)]
    );
    // The new generation is the last: it waits for the old one's exit.
    assert_eq!(
        exits(&new.handle(Event::Drained, Duration::ZERO)),
        [(Ending::Stopped, true)]
    );
}

/// A stop that reaches the old generation during the probation (SIGTERM
/// to its pid): the new one is told to stop; its claim is higher (newer),
/// so it exits last and the old one yields.
#[test]
fn a_stop_of_the_old_generation_during_the_probation_stops_the_new_one() {
    let (mut old, mut new) = (holding_for_successor(), on_probation());
    let actions = old.handle(Event::StopAsked { control: false }, Duration::ZERO);
    assert_eq!(
        actions,
        vec![
            Action::TellSuccessorToStop(claim(false, 2)),
            Action::Shutdown(Ending::Stopped)
        ]
    );
    assert!(old.next_deadline().is_none(), "no commit after a stop");
    let actions = new.handle(Event::PredecessorStopping(claim(false, 2)), Duration::ZERO);
    assert_eq!(
        actions,
        vec![
            Action::Notify(Notice::Stopping),
            Action::Shutdown(Ending::Stopped),
            Action::TellPredecessorStopping(claim(false, 3)),
        ]
    );
    // Until the old one hears the claim it would wait for the new one.
    assert!(exits(&old.handle(Event::Drained, Duration::ZERO)).is_empty());
    let actions = old.handle(Event::SuccessorStopping(claim(false, 3)), Duration::ZERO);
    assert_eq!(exits(&actions), [(Ending::Stopped, false)]);
    assert_eq!(
        exits(&new.handle(Event::Drained, Duration::ZERO)),
        [(Ending::Stopped, true)]
    );
}

/// A stop sent to every process at once (systemd's KillMode=control-group,
/// a terminal's Ctrl-C): each side tells the other; the newer claim wins,
/// so exactly one waits for the other.
#[test]
fn both_sides_stopped_at_once_wait_for_each_other_only_once() {
    let (mut old, mut new) = (holding_for_successor(), on_probation());
    old.handle(Event::StopAsked { control: false }, Duration::ZERO);
    new.handle(Event::StopAsked { control: false }, Duration::ZERO);
    assert!(new
        .handle(Event::PredecessorStopping(claim(false, 2)), Duration::ZERO)
        .is_empty());
    old.handle(Event::SuccessorStopping(claim(false, 3)), Duration::ZERO);
    assert_eq!(
        exits(&old.handle(Event::Drained, Duration::ZERO)),
        [(Ending::Stopped, false)]
    );
    assert_eq!(
        exits(&new.handle(Event::Drained, Duration::ZERO)),
        [(Ending::Stopped, true)]
    );
}

/// A `stop` request's client waits on the generation it reached: that one
/// claims to exit last even over a newer generation stopped by a signal.
#[test]
fn a_stop_request_makes_its_generation_exit_last() {
    let (mut old, mut new) = (holding_for_successor(), on_probation());
    new.handle(Event::StopAsked { control: false }, Duration::ZERO);
    old.handle(Event::SuccessorStopping(claim(false, 3)), Duration::ZERO);
    // A stop request reaches the old generation, stopping already.
    let actions = old.handle(Event::StopAsked { control: true }, Duration::ZERO);
    assert_eq!(actions, vec![Action::TellSuccessorToStop(claim(true, 2))]);
    assert!(new
        .handle(Event::PredecessorStopping(claim(true, 2)), Duration::ZERO)
        .is_empty());
    assert_eq!(
        exits(&new.handle(Event::Drained, Duration::ZERO)),
        [(Ending::Stopped, false)]
    );
    assert!(exits(&old.handle(Event::Drained, Duration::ZERO)).is_empty());
    let actions = old.handle(
        Event::SuccessorExited("exited with status 0".into()),
        Duration::ZERO,
    );
    assert_eq!(exits(&actions), [(Ending::Stopped, true)]);
}

/// The new generation dies during its probation (SIGKILL): the old one
/// takes the service back and says so.
#[test]
fn an_exit_during_the_probation_rolls_back() {
    let mut old = holding_for_successor();
    let actions = old.handle(
        Event::SuccessorExited("was killed by signal SIGKILL".into()),
        Duration::from_millis(100),
    );
    assert_eq!(old.phase(), &Phase::Serving);
    assert!(actions.contains(&Action::Resume));
    assert!(actions.contains(&Action::WritePidFile));
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::RecordFailure(why) if why == "the new generation 3 (pid 200) was killed by signal SIGKILL during its probation; rolled back"
    )));
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Notify(Notice::MainPid(OLD, _)))));
}

/// An unhealthy report: the successor is killed, and the service comes
/// back once it exited (never two serving at once).
#[test]
fn an_unhealthy_successor_is_killed_then_rolled_back() {
    let mut old = holding_for_successor();
    let actions = old.handle(Event::SuccessorUnhealthy("warm-up".into()), Duration::ZERO);
    assert_eq!(actions, vec![Action::KillSuccessor]);
    assert!(old.next_deadline().is_none());
    let actions = old.handle(
        Event::SuccessorExited("was killed by signal SIGKILL".into()),
        Duration::ZERO,
    );
    assert!(actions.contains(&Action::Resume));
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::RecordFailure(why) if why.contains("reported itself unhealthy during its probation (warm-up); it was killed")
    )));
}

#[test]
fn the_probation_ends_in_a_commit_at_its_deadline() {
    let mut old = holding_for_successor();
    assert_eq!(old.next_deadline(), Some(Duration::from_secs(2)));
    assert!(old
        .handle(Event::Deadline, Duration::from_millis(1999))
        .is_empty());
    assert_eq!(
        old.handle(Event::Deadline, Duration::from_secs(2)),
        vec![Action::Commit]
    );
    assert_eq!(old.phase(), &Phase::Draining { successor: NEW });
    // A stop reaching a draining generation ends only its own drain.
    assert!(old
        .handle(Event::StopAsked { control: false }, Duration::ZERO)
        .is_empty());
    assert_eq!(
        exits(&old.handle(Event::Drained, Duration::ZERO)),
        [(Ending::HandedOver, false)]
    );
}

#[test]
fn without_probation_the_commit_follows_ready_at_once() {
    let mut old = machine(OLD, 2, false, Duration::ZERO);
    old.handle(Event::Ready, Duration::ZERO);
    old.handle(control_restart(1), Duration::ZERO);
    let actions = old.handle(Event::RestartSucceeded(NEW), Duration::ZERO);
    let answer = actions
        .iter()
        .position(|a| matches!(a, Action::Answer(..)))
        .unwrap();
    let pause = actions.iter().position(|a| *a == Action::Pause).unwrap();
    assert!(pause < answer, "answered before the pause: {actions:?}");
    assert_eq!(actions.last(), Some(&Action::Commit));
}

/// A stop while a restart runs aborts it; the initiator of the restart is
/// answered once its outcome is known, and the generation exits after.
#[test]
fn a_stop_aborts_a_running_restart() {
    let mut old = machine(OLD, 2, false, Duration::from_secs(2));
    old.handle(Event::Ready, Duration::ZERO);
    old.handle(control_restart(1), Duration::ZERO);
    let actions = old.handle(Event::StopAsked { control: true }, Duration::ZERO);
    assert_eq!(actions[0], Action::AbortRestart);
    assert!(exits(&old.handle(Event::Drained, Duration::ZERO)).is_empty());
    let aborted = failure(RestartError::Aborted { pid: NEW.pid });
    let actions = old.handle(Event::RestartFailed(aborted.clone()), Duration::ZERO);
    assert!(actions.contains(&Action::Answer(ReplyTo(1), Err(aborted))));
    assert_eq!(exits(&actions), [(Ending::Stopped, true)]);
}

/// The new generation became ready just as the stop aborted the restart:
/// it is told to stop, the initiator hears the restart did not happen, and
/// this generation exits after the successor.
#[test]
fn a_successor_ready_as_the_stop_arrives_stops_too() {
    let mut old = machine(OLD, 2, false, Duration::from_secs(2));
    old.handle(Event::Ready, Duration::ZERO);
    old.handle(control_restart(1), Duration::ZERO);
    old.handle(Event::StopAsked { control: true }, Duration::ZERO);
    let actions = old.handle(Event::RestartSucceeded(NEW), Duration::ZERO);
    assert!(actions.contains(&Action::TellSuccessorToStop(claim(true, 2))));
    assert!(actions.iter().any(
        |a| matches!(a, Action::Answer(ReplyTo(1), Err(f)) if f.kind == FailureKind::ShuttingDown)
    ));
    assert!(exits(&old.handle(Event::Drained, Duration::ZERO)).is_empty());
    let actions = old.handle(
        Event::SuccessorExited("exited with status 0".into()),
        Duration::ZERO,
    );
    assert_eq!(exits(&actions), [(Ending::Stopped, true)]);
}

/// Restart requests made during this generation's probation wait for the
/// commit: the first then starts a restart, the others are told one is in
/// progress.
#[test]
fn restart_requests_during_the_probation_wait_for_the_commit() {
    let mut new = on_probation();
    assert!(new.handle(control_restart(1), Duration::ZERO).is_empty());
    assert!(new.handle(control_restart(2), Duration::ZERO).is_empty());
    let actions = new.handle(Event::PredecessorCommitted, Duration::ZERO);
    assert!(actions.contains(&Action::BecomeService));
    assert!(actions.contains(&Action::StartRestart { fresh_state: false }));
    assert!(actions.iter().any(
        |a| matches!(a, Action::Refuse(Some(ReplyTo(2)), f) if f.kind == FailureKind::InProgress)
    ));
    assert!(matches!(new.phase(), Phase::Restarting { .. }));
}

/// Waiting requests are refused when the service stops instead.
#[test]
fn restart_requests_waiting_for_the_commit_are_refused_by_a_stop() {
    let mut new = on_probation();
    new.handle(control_restart(1), Duration::ZERO);
    let actions = new.handle(Event::PredecessorStopping(claim(false, 2)), Duration::ZERO);
    assert!(actions.iter().any(
        |a| matches!(a, Action::Refuse(Some(ReplyTo(1)), f) if f.kind == FailureKind::ShuttingDown)
    ));
}

/// The predecessor died during this generation's probation: nobody moves
/// MAINPID here but this generation itself.
#[test]
fn a_predecessor_that_dies_during_the_probation_hands_over() {
    let mut new = on_probation();
    let actions = new.handle(Event::PredecessorGone, Duration::ZERO);
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Notify(Notice::MainPid(200, _)))));
    assert!(actions.contains(&Action::BecomeService));
    assert_eq!(new.phase(), &Phase::Serving);
}

/// `main` returning during the generation's own probation is a failure of
/// the new build: it gives the service back, leaving the control socket
/// and pid file to the predecessor.
#[test]
fn main_returning_during_the_probation_gives_the_service_back() {
    let mut new = on_probation();
    let actions = new.handle(Event::MainReturned, Duration::ZERO);
    assert_eq!(
        actions,
        vec![
            Action::Shutdown(Ending::GaveBack),
            Action::Exit {
                ending: Ending::GaveBack,
                last: false
            }
        ]
    );
}

/// A stop before READY in a new generation is a failed restart, not the
/// service's stop.
#[test]
fn a_stop_before_ready_in_a_new_generation_is_not_the_service_s() {
    let mut new = machine(NEW.pid, 3, true, Duration::from_secs(2));
    let actions = new.handle(Event::StopAsked { control: false }, Duration::ZERO);
    assert_eq!(actions, vec![Action::Shutdown(Ending::Stopped)]);
    assert_eq!(
        exits(&new.handle(Event::Drained, Duration::ZERO)),
        [(Ending::Stopped, false)]
    );
}

/// A refused restart signal is answered to systemd at once (it waits for
/// RELOADING=1 then READY=1 under Type=notify-reload).
#[test]
fn a_refused_restart_signal_still_completes_the_reload() {
    let mut old = machine(OLD, 2, false, Duration::from_secs(2));
    old.handle(Event::Ready, Duration::ZERO);
    old.handle(control_restart(1), Duration::ZERO);
    let actions = old.handle(
        Event::RestartAsked(RestartAsk {
            trigger: Trigger::Signal,
            reply: None,
            fresh_state: false,
        }),
        Duration::ZERO,
    );
    assert!(matches!(
        actions.as_slice(),
        [Action::Notify(Notice::ReloadRefused(status)), Action::Refuse(None, _)] if status.contains("already in progress")
    ));
}
