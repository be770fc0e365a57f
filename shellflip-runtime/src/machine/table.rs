//! The table of `docs/lifecycle.md`, generated from the machine: every
//! event in every phase, with the phase that follows and the actions. The
//! test fails when the document and the code disagree;
//! `SHELLFLIP_BLESS=1 cargo test -p shellflip-runtime lifecycle_table`
//! rewrites the table.

use std::time::Duration;

use super::*;

const BEGIN: &str = "<!-- lifecycle-table:begin (generated: see machine/table.rs) -->";
const END: &str = "<!-- lifecycle-table:end -->";

const PID: u32 = 100;
const SUCCESSOR: Successor = Successor {
    pid: 200,
    generation: 3,
};

fn settings(generation: u64) -> Settings {
    Settings {
        pid: PID,
        generation,
        probation: Duration::from_secs(2),
        ready_timeout: Duration::from_secs(30),
    }
}

/// A machine driven from its start through `events`.
fn after(generation: u64, has_predecessor: bool, events: &[Event]) -> Machine {
    let mut machine = Machine::new(settings(generation), has_predecessor);
    for event in events {
        machine.handle(event.clone(), Duration::ZERO);
    }
    machine
}

fn stop(control: bool) -> Event {
    Event::StopAsked { control }
}

fn claim(control: bool, generation: u64) -> Claim {
    Claim {
        control,
        generation,
    }
}

fn control_restart(reply: u64) -> Event {
    Event::RestartAsked(RestartAsk {
        trigger: Trigger::Control,
        reply: Some(ReplyTo(reply)),
        fresh_state: false,
    })
}

/// Each phase (and the variants of a phase whose data changes outcomes),
/// as a machine in it.
pub(super) fn phases() -> Vec<(&'static str, Machine)> {
    use Event::*;
    let serving = [Ready];
    let restarting = [Ready, control_restart(1)];
    let holding = [Ready, control_restart(1), RestartSucceeded(SUCCESSOR)];
    vec![
        ("Starting (first generation)", after(1, false, &[])),
        (
            "Starting (a predecessor waits for its READY)",
            after(2, true, &[]),
        ),
        (
            "Starting (new; the predecessor died)",
            after(2, true, &[PredecessorGone]),
        ),
        (
            "OnProbation (ready; the predecessor holds)",
            after(2, true, &[Ready]),
        ),
        (
            "OnProbation, a restart request deferred",
            after(2, true, &[Ready, control_restart(1)]),
        ),
        ("Serving", after(2, false, &serving)),
        ("Restarting", after(2, false, &restarting)),
        ("SuccessorOnProbation", after(2, false, &holding)),
        (
            "RollingBack",
            after(
                2,
                false,
                &[&holding[..], &[SuccessorUnhealthy("x".into())]].concat(),
            ),
        ),
        (
            "Draining",
            after(2, false, &[&holding[..], &[MainReturned]].concat()),
        ),
        (
            "Stopping (the service)",
            after(2, false, &[Ready, stop(false)]),
        ),
        (
            "Stopping (aborting a restart)",
            after(2, false, &[&restarting[..], &[stop(true)]].concat()),
        ),
        (
            "Stopping (its successor told to stop)",
            after(2, false, &[&holding[..], &[stop(false)]].concat()),
        ),
        (
            "Stopping (the successor stopped)",
            after(
                2,
                false,
                &[&holding[..], &[SuccessorStopping(claim(false, 3))]].concat(),
            ),
        ),
        (
            "Stopping (on probation; the predecessor told it to stop)",
            after(2, true, &[Ready, PredecessorStopping(claim(false, 1))]),
        ),
        ("GivingBack", after(2, true, &[Ready, PredecessorGaveUp])),
    ]
}

/// Every kind of event, with the data the table shows.
pub(super) fn events() -> Vec<(&'static str, Event)> {
    use Event::*;
    vec![
        ("ready()", Ready),
        ("restart request", control_restart(2)),
        (
            "restart signal",
            RestartAsked(RestartAsk {
                trigger: Trigger::Signal,
                reply: None,
                fresh_state: false,
            }),
        ),
        ("stop request", stop(true)),
        ("stop signal (SIGTERM, SIGINT)", stop(false)),
        ("successor READY", RestartSucceeded(SUCCESSOR)),
        (
            "restart failed",
            RestartFailed(Failure {
                kind: FailureKind::Failed,
                reason: "why".into(),
            }),
        ),
        (
            "successor exited",
            SuccessorExited("exited with status 1".into()),
        ),
        ("successor unhealthy", SuccessorUnhealthy("why".into())),
        (
            "successor stopping (claim: signal)",
            SuccessorStopping(claim(false, 3)),
        ),
        ("deadline (probation's end, ready timeout)", Deadline),
        ("predecessor committed", PredecessorCommitted),
        (
            "predecessor stopping (claim: signal)",
            PredecessorStopping(claim(false, 1)),
        ),
        (
            "predecessor stopping (claim: request)",
            PredecessorStopping(claim(true, 1)),
        ),
        ("predecessor died", PredecessorGone),
        ("predecessor gave up", PredecessorGaveUp),
        ("main returned", MainReturned),
        ("drained", Drained),
    ]
}

/// A phase's name, without its data.
fn name(phase: &Phase) -> String {
    match phase {
        Phase::Starting {
            predecessor_holds: true,
        } => "Starting (predecessor waits)",
        Phase::Starting { .. } => "Starting (no predecessor)",
        Phase::OnProbation { deferred } if !deferred.is_empty() => {
            return format!("OnProbation ({} deferred)", deferred.len())
        }
        Phase::OnProbation { .. } => "OnProbation",
        Phase::Serving => "Serving",
        Phase::Restarting { .. } => "Restarting",
        Phase::SuccessorOnProbation { .. } => "SuccessorOnProbation",
        Phase::RollingBack { .. } => "RollingBack",
        Phase::Draining { .. } => "Draining",
        Phase::Stopping {
            aborting,
            other,
            last,
            drained,
        } => {
            let waits: Vec<&str> = [
                (aborting.is_some(), "the restart's outcome"),
                (
                    last.is_some() && matches!(other, Other::Successor(_)),
                    "the successor's exit",
                ),
                (!drained, "the drain"),
            ]
            .iter()
            .filter_map(|(waits, what)| waits.then_some(*what))
            .collect();
            let last = match last {
                Some(claim) => format!(
                    "last: {}; ",
                    spell_claim(claim).trim_start_matches("claims last: ")
                ),
                None => String::new(),
            };
            return format!("Stopping ({last}waits for {})", waits.join(", "));
        }
        Phase::GivingBack => "GivingBack",
        Phase::Exited => "Exited",
    }
    .to_owned()
}

/// An action, as the table spells it.
fn spell(action: &Action) -> String {
    match action {
        Action::Notify(Notice::Ready(_)) => "READY=1".into(),
        Action::Notify(Notice::Reloading(_)) => "RELOADING=1".into(),
        Action::Notify(Notice::ReloadRefused(_)) => "RELOADING=1+READY=1 (refused)".into(),
        Action::Notify(Notice::MainPid(pid, _)) if *pid == PID => "MAINPID=self".into(),
        Action::Notify(Notice::MainPid(..)) => "MAINPID=successor".into(),
        Action::Notify(Notice::Stopping) => "STOPPING=1".into(),
        Action::Answer(_, Ok(_)) => "answer restarted".into(),
        Action::Answer(_, Err(failure)) => format!("answer {}", failure.kind.as_str()),
        Action::Refuse(_, failure) => format!("refuse ({})", failure.kind.as_str()),
        Action::StartRestart { .. } => "start restart".into(),
        Action::AbortRestart => "abort restart".into(),
        Action::ServeReady => "serve control".into(),
        Action::BecomeService => "become the service".into(),
        Action::Pause => "pause".into(),
        Action::Resume => "resume".into(),
        Action::WatchSuccessor => "watch successor".into(),
        Action::KillSuccessor => "kill successor".into(),
        Action::Commit => "commit (shutdown: handed over)".into(),
        Action::TellSuccessorToStop(claim) => {
            format!("tell successor: stop ({})", spell_claim(claim))
        }
        Action::TellPredecessorStopping(claim) => {
            format!("tell predecessor: stopping ({})", spell_claim(claim))
        }
        Action::Shutdown(ending) => format!("shutdown ({})", spell_ending(*ending)),
        Action::WritePidFile => "pid file".into(),
        Action::RecordFailure(_) => "record failure".into(),
        Action::ReclaimState => "reclaim state".into(),
        Action::Exit { ending, last } => format!(
            "exit ({}{})",
            spell_ending(*ending),
            if *last { ", last" } else { "" }
        ),
    }
}

fn spell_claim(claim: &Claim) -> &'static str {
    if claim.control {
        "claims last: request"
    } else {
        "claims last: signal"
    }
}

fn spell_ending(ending: Ending) -> &'static str {
    match ending {
        Ending::HandedOver => "handed over",
        Ending::Stopped => "stopped",
        Ending::GaveBack => "gave back",
    }
}

/// The table, as markdown.
pub(super) fn render() -> String {
    let mut out = String::new();
    for (phase, machine) in phases() {
        out.push_str(&format!(
            "\n### {phase}\n\n| event | then | actions |\n|---|---|---|\n"
        ));
        for (label, event) in events() {
            let mut next = machine.clone();
            let actions = next.handle(event, Duration::from_secs(60));
            let then = if next.phase == machine.phase && actions.is_empty() {
                "ignored".to_owned()
            } else if next.phase == machine.phase {
                "stays".to_owned()
            } else {
                format!("→ {}", name(&next.phase))
            };
            let actions: Vec<String> = actions.iter().map(spell).collect();
            out.push_str(&format!("| {label} | {then} | {} |\n", actions.join("; ")));
        }
    }
    out
}

#[test]
fn lifecycle_table_matches_docs() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/lifecycle.md");
    let doc = std::fs::read_to_string(&path).expect("docs/lifecycle.md");
    let (Some(begin), Some(end)) = (doc.find(BEGIN), doc.find(END)) else {
        panic!("docs/lifecycle.md has no `{BEGIN}` … `{END}` block");
    };
    let table = render();
    let current = &doc[begin + BEGIN.len()..end];
    if std::env::var_os("SHELLFLIP_BLESS").is_some() {
        let updated = format!("{}{BEGIN}{table}{}", &doc[..begin], &doc[end..]);
        std::fs::write(&path, updated).expect("write docs/lifecycle.md");
        return;
    }
    assert!(
        current == table,
        "docs/lifecycle.md's table differs from what the machine does; read the difference, \
         then run `SHELLFLIP_BLESS=1 cargo test -p shellflip-runtime lifecycle_table` to \
         rewrite it:\n{table}"
    );
}
