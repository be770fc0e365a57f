//! Hop-by-hop timestamps of a restart, for profiling (the benchmark's hop
//! table): with `SHELLFLIP_PROFILE=<file>` in the environment, every
//! process of the service appends one line per hop to that file,
//! `<Unix time in µs> <pid> <hop>`, in one `write` on an `O_APPEND` file
//! (so lines of several processes never interleave). Without it, a hop
//! costs one look at a `OnceLock`; with it, an open, a write and a close.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The environment variable naming the profile file.
pub(crate) const ENV_PROFILE: &str = "SHELLFLIP_PROFILE";

/// A step of a restart, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hop {
    /// Old generation: the restart request read (or the signal taken).
    TriggerRead,
    /// Old generation: the new process asked of the spawner.
    SpawnAsked,
    /// The spawner: the request read.
    SpawnRead,
    /// The spawner (or the old generation, inline): `posix_spawn` returned.
    Spawned,
    /// New generation: its `run` entered (the exec is done).
    ExecDone,
    /// New generation: its own spawner forked.
    SpawnerForked,
    /// New generation: the handover's header and descriptors read.
    HandoverRead,
    /// Old generation: the new one asked for the state.
    StateAsked,
    /// Old generation: the snapshot encoded (its envelope built).
    StateEncoded,
    /// Old generation: the state sent.
    StateSent,
    /// New generation: the state received.
    StateReceived,
    /// New generation: the state decoded.
    StateDecoded,
    /// New generation: the Tokio runtime built.
    RuntimeBuilt,
    /// New generation: the inherited descriptors adopted, the control
    /// socket and signals set up (just before `main` runs).
    Adopted,
    /// New generation: READY written.
    ReadyWritten,
    /// Old generation: READY read.
    ReadyRead,
    /// Old generation: accepting paused.
    Paused,
    /// Old generation: the initiator's answer written.
    AnswerWritten,
    /// Old generation: `main` returned and its connections ended.
    Drained,
    /// Old generation: its supervisor finished (the older generations and
    /// the spawner it waits for are gone).
    SupervisorDone,
    /// Old generation: `run` returns (runtime shut down; the process exits).
    Exiting,
}

impl Hop {
    fn name(self) -> &'static str {
        match self {
            Hop::TriggerRead => "trigger_read",
            Hop::SpawnAsked => "spawn_asked",
            Hop::SpawnRead => "spawn_read",
            Hop::Spawned => "spawned",
            Hop::ExecDone => "exec_done",
            Hop::SpawnerForked => "spawner_forked",
            Hop::HandoverRead => "handover_read",
            Hop::StateAsked => "state_asked",
            Hop::StateEncoded => "state_encoded",
            Hop::StateSent => "state_sent",
            Hop::StateReceived => "state_received",
            Hop::StateDecoded => "state_decoded",
            Hop::RuntimeBuilt => "runtime_built",
            Hop::Adopted => "adopted",
            Hop::ReadyWritten => "ready_written",
            Hop::ReadyRead => "ready_read",
            Hop::Paused => "paused",
            Hop::AnswerWritten => "answer_written",
            Hop::Drained => "drained",
            Hop::SupervisorDone => "supervisor_done",
            Hop::Exiting => "exiting",
        }
    }
}

/// The profile file's path, when one is asked for (read once per process).
/// The file is opened at each hop: a forked helper (the spawner) closes
/// every descriptor it inherits.
fn path() -> Option<&'static std::ffi::OsStr> {
    static PATH: OnceLock<Option<std::ffi::OsString>> = OnceLock::new();
    PATH.get_or_init(|| std::env::var_os(ENV_PROFILE).filter(|p| !p.is_empty()))
        .as_deref()
}

/// Records that `hop` happened now (nothing without `SHELLFLIP_PROFILE`).
pub(crate) fn mark(hop: Hop) {
    mark_at(hop, SystemTime::now());
}

/// Records that `hop` happened at `at`.
pub(crate) fn mark_at(hop: Hop, at: SystemTime) {
    let Some(path) = path() else {
        return;
    };
    let Ok(mut file) = OpenOptions::new().create(true).append(true).open(path) else {
        return;
    };
    let micros = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros());
    let line = format!("{micros} {} {}\n", std::process::id(), hop.name());
    // Best effort: a profile must never fail the service.
    let _ = file.write_all(line.as_bytes());
}
