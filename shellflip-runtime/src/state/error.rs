//! Why a state could not be handed over, with what to do about it.

use super::decode::{DeError, Problem};
use super::MAX_STATE_DEPTH;

/// Why state could not be handed over.
///
/// The variants a new build meets when the state it receives does not fit
/// its types (`TypeChanged`, `MissingField`, `UnknownVariant`,
/// `Incompatible`, `Version`, `OldFormat`, `UnsupportedFormat`) are the ones
/// [`StateError::is_mismatch`] reports: readable data, another schema.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The old generation could not serialize its state.
    #[error("could not encode the handover state `{type_name}`: {reason}")]
    Encode {
        /// The state type.
        type_name: &'static str,
        /// What the encoder said.
        reason: String,
    },

    /// The old generation's envelope outgrew the memory a handover may
    /// take: half of what the system or the service's memory cgroup had
    /// available when the snapshot was taken (the envelope is held twice
    /// at the handover's peak: the old generation's copy and the one the
    /// new generation receives). Nothing was sent; the old generation
    /// keeps serving.
    #[error("the handover state `{type_name}` was not sent: its envelope grew past {}, half of the {} available ({origin}), and a handover holds the envelope twice at its peak (the old generation's copy and the new one's); this generation keeps serving; give the service more memory (its cgroup's memory.max, or the machine's) or keep less state", crate::memory::mib(*envelope_at_least), crate::memory::mib(*available))]
    OutOfMemory {
        /// The state type.
        type_name: &'static str,
        /// How far the envelope grew before it was stopped (it is at least
        /// this large).
        envelope_at_least: u64,
        /// The memory available, in bytes.
        available: u64,
        /// Where `available` comes from: `MemAvailable`, or a cgroup's
        /// limit file.
        origin: String,
    },

    /// The bytes are damaged: not what a shellflip encoder writes
    /// (truncated, wrong magic, malformed MessagePack, oversized).
    #[error("could not decode the handover state{}: {reason}; the data is damaged (it is not what shellflip writes)", named(type_name))]
    Corrupt {
        /// This build's state type (empty when not known).
        type_name: String,
        /// What is wrong, and where.
        reason: String,
    },

    /// The state is nested deeper than [`MAX_STATE_DEPTH`].
    #[error("could not decode the handover state `{type_name}`: `{path}` is nested more than {limit} levels deep (the depth limit)")]
    TooDeep {
        /// This build's state type.
        type_name: String,
        /// Where the limit was reached.
        path: String,
        /// The limit.
        limit: usize,
    },

    /// The envelope was written by an older shellflip whose format this
    /// build does not read.
    #[error("the handover state was written by an older shellflip (state format version {found}; this build reads version {expected}) and cannot be carried; restart once with fresh state (the old state is lost), after which restarts carry the state again")]
    OldFormat {
        /// Version found in the envelope.
        found: u16,
        /// Version this build reads.
        expected: u16,
    },

    /// The envelope was written by a newer shellflip.
    #[error("the handover state uses format version {found}, newer than this build reads ({expected}): it was written by a newer shellflip; deploy a build with that shellflip version, or restart once with fresh state")]
    UnsupportedFormat {
        /// Version found in the envelope.
        found: u16,
        /// Version this build reads.
        expected: u16,
    },

    /// A value has another type than this build declares, and no lossless
    /// widening leads from one to the other.
    #[error("the handover state `{type_name}` cannot be carried: `{path}` is {expected} in this build but the previous generation sent {received}; keep the old type, give the field a new name (the old value is then dropped), add a migration (`#[handover(version = N, from = \"OldState\")]`), or restart once with fresh state")]
    TypeChanged {
        /// This build's state type.
        type_name: String,
        /// The value's path, e.g. `State.inner.x`.
        path: String,
        /// What this build declares.
        expected: String,
        /// What was received.
        received: String,
    },

    /// A field of this build was not in the received state and has no
    /// default.
    #[error("the handover state `{type_name}` cannot be carried: `{path}` is not in the state the previous generation sent; give the field a default (`#[handover(default)]`, or `#[serde(default)]` in a nested type), an alias if it was renamed (`#[handover(alias = \"old_name\")]`, `#[serde(alias = ...)]`), a migration, or restart once with fresh state")]
    MissingField {
        /// This build's state type.
        type_name: String,
        /// The missing field's path, e.g. `State.inner.z`.
        path: String,
    },

    /// An enum value holds a variant this build's enum does not have.
    #[error("the handover state `{type_name}` cannot be carried: `{path}` holds the variant `{variant}`, which this build's enum does not have (it has {expected}); keep the variant, accept it with `#[serde(alias = ...)]` or `#[serde(other)]`, add a migration, or restart once with fresh state")]
    UnknownVariant {
        /// This build's state type.
        type_name: String,
        /// The value's path.
        path: String,
        /// The received variant.
        variant: String,
        /// The variants this build has.
        expected: String,
    },

    /// The received value does not fit this build's type for another
    /// reason (a length, a type's own check).
    #[error("the handover state `{type_name}` cannot be carried: `{path}`: {reason}; keep the old type, add a migration, or restart once with fresh state")]
    Incompatible {
        /// This build's state type.
        type_name: String,
        /// The value's path.
        path: String,
        /// What the type said.
        reason: String,
    },

    /// The received schema version cannot be read by this build: newer, or
    /// older without a migration that leads to it.
    #[error("the handover state cannot be carried: the previous generation sent version {received} of `{received_type}`, this build's `{type_name}` reads {}; {}", reads(*.version, *.oldest), version_advice(*.received, *.version))]
    Version {
        /// This build's state type.
        type_name: &'static str,
        /// The type named in the received state.
        received_type: String,
        /// The received schema version.
        received: u32,
        /// This build's schema version.
        version: u32,
        /// The oldest version this build migrates from.
        oldest: u32,
    },

    /// A field's file descriptor was not among those handed over.
    #[error("the handover state expects a file descriptor named `{0}` but the previous generation did not send one; give the field a name it had (`#[handover(alias = \"old_name\")]`) or restart once with fresh state")]
    MissingFd(String),

    /// A file descriptor could not be duplicated or adopted.
    #[error("file descriptor `{name}` of the handover state: {source}")]
    Fd {
        /// The field name.
        name: String,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
}

fn named(type_name: &str) -> String {
    if type_name.is_empty() {
        String::new()
    } else {
        format!(" `{type_name}`")
    }
}

/// The versions a build of schema `version` reads.
fn reads(version: u32, oldest: u32) -> String {
    if oldest < version {
        format!("versions {oldest} to {version} (older ones through its migrations)")
    } else {
        format!("version {version} only")
    }
}

/// What to do about a `received` version a build of schema `version`
/// cannot read.
fn version_advice(received: u32, version: u32) -> &'static str {
    if received > version {
        "a state cannot be migrated back to an older schema: deploy a build that reads it, or restart once with fresh state"
    } else {
        "add a migration from it (keep the old struct in the code and name it in `#[handover(version = N, from = \"OldState\")]`), or restart once with fresh state"
    }
}

impl StateError {
    /// True when the state was readable but written for another schema,
    /// the case that `on_state_mismatch = "fresh"` turns into a fresh
    /// start.
    pub fn is_mismatch(&self) -> bool {
        matches!(
            self,
            StateError::TypeChanged { .. }
                | StateError::MissingField { .. }
                | StateError::UnknownVariant { .. }
                | StateError::Incompatible { .. }
                | StateError::Version { .. }
                | StateError::OldFormat { .. }
                | StateError::UnsupportedFormat { .. }
        )
    }

    /// The decoder's error, for a state of type `type_name`.
    pub(crate) fn from_decode(type_name: &str, error: DeError) -> StateError {
        let type_name = type_name.to_owned();
        let path = error.path().unwrap_or(&type_name).to_owned();
        match error.problem() {
            Problem::Read(e) => StateError::Corrupt {
                type_name,
                reason: format!("{e} (at `{path}`)"),
            },
            Problem::TooDeep => StateError::TooDeep {
                type_name,
                path,
                limit: MAX_STATE_DEPTH,
            },
            Problem::Type { expected, received } => StateError::TypeChanged {
                type_name,
                path,
                expected: expected.clone(),
                received: received.clone(),
            },
            Problem::MissingField(field) => StateError::MissingField {
                type_name,
                path: format!("{path}.{field}"),
            },
            Problem::UnknownVariant { variant, expected } => StateError::UnknownVariant {
                type_name,
                path,
                variant: variant.clone(),
                expected: one_of(expected),
            },
            Problem::Other(reason) => StateError::Incompatible {
                type_name,
                path,
                reason: reason.clone(),
            },
        }
    }
}

fn one_of(names: &[&str]) -> String {
    match names {
        [] => "no variants".to_owned(),
        [only] => format!("`{only}`"),
        [init @ .., last] => {
            let init: Vec<String> = init.iter().map(|n| format!("`{n}`")).collect();
            format!("{} and `{last}`", init.join(", "))
        }
    }
}
