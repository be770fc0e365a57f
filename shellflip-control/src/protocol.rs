//! The control protocol: what travels on the control socket.
//!
//! # Wire format
//!
//! Every message is one *frame* ([`crate::frame`]): a 4-byte big-endian
//! length followed by that many bytes of JSON. A frame may not be longer
//! than [`MAX_FRAME_BYTES`]; a longer announcement is rejected before
//! anything is allocated or read. A client sends one [`Request`] frame and
//! receives one [`Response`] frame:
//!
//! ```text
//! -> 00 00 00 0f {"op":"status"}
//! <- 00 00 00 .. {"result":"status","pid":4242,"generation":3,"phase":"serving",...}
//! ```
//!
//! A client may send further requests on the same connection, one at a time,
//! each after reading the previous answer. The connection is closed by the
//! service after a malformed, oversized or late request (answered with
//! [`Response::Error`] first), when the client closes its end, and, between
//! requests, when the generation stops accepting (a restart handed over or a
//! stop began): reconnect to reach the generation that is serving now.
//!
//! After [`Response::Stopping`] the service keeps the connection open,
//! without sending anything more, until its process exits — and that
//! process exits after every other process of the service: the client sees
//! end-of-file when the service is gone. That end-of-file is the one sign
//! of the exit that means the same in every PID namespace.
//!
//! Every answer carries the answering process's credentials
//! (`SCM_CREDENTIALS`): a client that sets `SO_PASSCRED` learns that
//! process's pid *as the client sees it*, translated by the kernel from the
//! service's PID namespace (a container) into the client's. The pids inside
//! the JSON are as the service sees them.
//!
//! Unknown keys are ignored in both directions, so fields can be added; a
//! failure kind or phase that this version does not know decodes as
//! `Unknown`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The largest frame, in bytes (not counting its 4-byte length prefix),
/// that either side accepts.
pub const MAX_FRAME_BYTES: u32 = 64 * 1024;

/// How long the service waits for a complete request frame, and for the
/// client to take an answer, before it gives up on a connection.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How many control connections the service serves at once. Beyond this, a
/// new connection pushes out the oldest one that has not sent a complete
/// request; if there is none, it is answered with [`Response::Error`] and
/// closed immediately.
pub const MAX_CONNECTIONS: usize = 128;

/// Longest text (in bytes) of a message field in a response; longer texts
/// (a child's very long error message) are cut so the frame fits.
const MAX_TEXT_BYTES: usize = 8 * 1024;

/// A request sent to the service. On the wire: `{"op":"restart"}`,
/// `{"op":"status"}` or `{"op":"stop"}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Start the next generation from the service's executable path and hand
    /// over to it. Answered with [`Response::Restarted`] or
    /// [`Response::RestartFailed`] once the outcome is known.
    Restart {
        /// Start the next generation with fresh state instead of this
        /// generation's, once. On the wire `"fresh_state":true`; absent
        /// means `false` (and `false` is not written).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        fresh_state: bool,
    },
    /// Ask for the service's state. Answered with [`Response::Status`].
    Status,
    /// Stop the whole service gracefully (stop accepting, drain, exit).
    /// Answered with [`Response::Stopping`]; the connection is then held
    /// open until the process exits, which it does after every other
    /// process of the service.
    Stop,
}

impl Request {
    /// A plain restart: `{"op":"restart"}`.
    pub const fn restart() -> Self {
        Request::Restart { fresh_state: false }
    }
}

/// The service's answer to a [`Request`]. On the wire the variant is the
/// `result` key: `{"result":"restarted","pid":1234,...}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// The restart succeeded: the new generation is ready and serving.
    Restarted(RestartSuccess),
    /// The restart did not happen or failed; the old generation keeps serving.
    RestartFailed {
        /// Why, for programs: whether to try again, or give up.
        kind: FailureKind,
        /// Why, in words: the new generation's own error message, its exit
        /// status or signal, or the ready timeout.
        reason: String,
    },
    /// The service's state.
    Status(Status),
    /// The stop was accepted. The connection stays open until the process
    /// exits, so the client can wait for end-of-file.
    Stopping {
        /// The pid of the process that is stopping (in the service's PID
        /// namespace).
        pid: u32,
    },
    /// The request could not be served: malformed request, oversized frame,
    /// timeout, permission denied, too many connections, or the service is
    /// shutting down.
    Error {
        /// What went wrong, in words.
        message: String,
    },
}

/// Why a restart was refused or failed (`RestartFailed.kind` on the wire).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// `in_progress`: another restart is running; try again once it is
    /// over.
    InProgress,
    /// `not_ready`: this generation cannot restart yet (it is not ready, or
    /// its predecessor is still draining); try again later.
    NotReady,
    /// `handed_over`: this generation has just handed over to its
    /// successor; send the request again (on a new connection) to reach
    /// the new generation.
    HandedOver,
    /// `shutting_down`: the service is stopping; no restart.
    ShuttingDown,
    /// `failed`: the restart was attempted and failed; the reason says why.
    Failed,
    /// A kind this version does not know (sent by a newer service). Never
    /// sent; written as `unknown`.
    #[serde(other)]
    Unknown,
}

impl FailureKind {
    /// The name on the wire: `in_progress`, `not_ready`, `handed_over`,
    /// `shutting_down`, `failed` (or `unknown`).
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureKind::InProgress => "in_progress",
            FailureKind::NotReady => "not_ready",
            FailureKind::HandedOver => "handed_over",
            FailureKind::ShuttingDown => "shutting_down",
            FailureKind::Failed => "failed",
            FailureKind::Unknown => "unknown",
        }
    }

    /// Whether the same request may succeed when sent again, later
    /// (`in_progress`, `not_ready`, `handed_over`). The `shellflip` CLI
    /// exits with 75 (`EX_TEMPFAIL`) for these.
    pub const fn is_temporary(self) -> bool {
        matches!(
            self,
            FailureKind::InProgress | FailureKind::NotReady | FailureKind::HandedOver
        )
    }
}

/// A generation's phase (`Status.phase` on the wire).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Phase {
    /// `starting`: the service's `main` runs and has not called `ready()`.
    Starting,
    /// `serving`: ready, and the current generation.
    Serving,
    /// `restarting`: serving while its successor starts.
    Restarting,
    /// `handing_over`: its successor is ready and on probation; this
    /// generation holds its listeners (without accepting) and takes the
    /// service back if the successor fails.
    HandingOver,
    /// `draining`: handed over; finishing its in-flight work before it
    /// exits.
    Draining,
    /// `stopping`: stopping (a stop request or signal); draining before it
    /// exits.
    Stopping,
    /// A phase this version does not know (sent by a newer service). Never
    /// sent; written as `unknown`.
    #[serde(other)]
    Unknown,
}

impl Phase {
    /// The name on the wire: `starting`, `serving`, `restarting`,
    /// `draining`, `stopping` (or `unknown`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Serving => "serving",
            Phase::Restarting => "restarting",
            Phase::HandingOver => "handing_over",
            Phase::Draining => "draining",
            Phase::Stopping => "stopping",
            Phase::Unknown => "unknown",
        }
    }
}

/// Implements `Display` (the wire name) and comparison with the wire name
/// (`kind == "in_progress"`), for code written when these were strings.
macro_rules! wire_name {
    ($type:ty) => {
        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<str> for $type {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $type {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

wire_name!(FailureKind);
wire_name!(Phase);

/// The outcome of a successful restart.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RestartSuccess {
    /// The new generation's pid (in the service's PID namespace).
    pub pid: u32,
    /// The new generation's number.
    pub generation: u64,
    /// How long the restart took, from the request until the new generation
    /// was ready, in milliseconds.
    pub duration_ms: f64,
    /// What became of the service's state (`None`: it keeps none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateReport>,
}

/// What became of a service's state in a generation: carried from the
/// previous one (perhaps migrated, some fields dropped), or fresh, and why.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct StateReport {
    /// The state type of the generation.
    pub type_name: String,
    /// Its schema version.
    pub version: u32,
    /// The size of the state handed over to it, in bytes (0 if none).
    #[serde(default)]
    pub bytes: u64,
    /// The schema version it was migrated from, when the previous
    /// generation's was older.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrated_from: Option<u32>,
    /// Values of the received state this build has no field for (dropped),
    /// by path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<String>,
    /// Why the state was *not* carried: it started fresh. `None`: carried
    /// (or, in a first generation, there was nothing to carry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_carried: Option<String>,
}

impl std::fmt::Display for StateReport {
    /// `state Counters v2 carried (1.2 MB, migrated from v1, dropped: Counters.old)`
    /// or `state Counters v2 NOT carried: <why>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "state {} v{}", self.type_name, self.version)?;
        if let Some(why) = &self.not_carried {
            return write!(f, " NOT carried, fresh state: {why}");
        }
        write!(f, " carried ({} bytes", self.bytes)?;
        if let Some(from) = self.migrated_from {
            write!(f, ", migrated from v{from}")?;
        }
        if !self.dropped.is_empty() {
            write!(f, ", dropped: {}", self.dropped.join(", "))?;
        }
        f.write_str(")")
    }
}

/// The state of a service, as answered to [`Request::Status`].
///
/// Fields added after the first version carry `#[serde(default)]`, so the
/// answer of an older service still decodes.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Status {
    /// The pid of the generation that answered (in the service's PID
    /// namespace).
    pub pid: u32,
    /// Its generation number (increases by one with each successful
    /// restart).
    pub generation: u64,
    /// What it is doing.
    pub phase: Phase,
    /// How long this generation has been running, in seconds.
    pub uptime_secs: f64,
    /// Successful restarts so far in this service's lineage.
    pub restarts: u64,
    /// Failed restarts so far in this service's lineage.
    pub failed_restarts: u64,
    /// The most recent restart attempt, if any.
    pub last_restart: Option<LastRestart>,
    /// The pid of the spawner process that starts this generation's
    /// successor (`None`: the service process spawns it itself).
    #[serde(default)]
    pub spawner_pid: Option<u32>,
    /// Every live generation of the service as the answering one knows
    /// them, oldest first: those still draining, the one on probation or
    /// handing over, and the answering one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generations: Vec<GenerationStatus>,
    /// The answering generation's state: its type and schema version, and
    /// what it received from the previous generation (`None`: the service
    /// keeps no state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateReport>,
}

/// One live generation of a service, in [`Status::generations`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct GenerationStatus {
    /// Its number.
    pub generation: u64,
    /// Its pid (in the service's PID namespace).
    pub pid: u32,
    /// What it is doing.
    pub phase: Phase,
    /// Its tasks still running (connections, requests), as it last
    /// reported; `None` when not known.
    #[serde(default)]
    pub tasks: Option<u64>,
    /// When its drain ends at the latest (Unix time, ms), for a draining
    /// generation.
    #[serde(default)]
    pub drain_deadline_unix_ms: Option<u64>,
}

/// The most recent restart attempt of a service.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct LastRestart {
    /// Whether it succeeded.
    pub ok: bool,
    /// When it finished, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// How long it took, in milliseconds.
    pub duration_ms: f64,
    /// The new generation's pid, if one was started (in the service's PID
    /// namespace).
    pub pid: Option<u32>,
    /// The new generation's number, if one was started.
    pub generation: Option<u64>,
    /// Why it failed (`None` when it succeeded).
    pub error: Option<String>,
}

impl Response {
    /// A [`Response::Error`] with the given message.
    pub fn error(message: impl Into<String>) -> Self {
        Response::Error {
            message: message.into(),
        }
    }

    /// Cuts overly long texts so that the encoded response always fits in
    /// a frame.
    fn fit(mut self) -> Self {
        match &mut self {
            Response::RestartFailed { reason: text, .. } | Response::Error { message: text } => {
                cut_text(text)
            }
            Response::Status(status) => {
                let last = status.last_restart.as_mut();
                if let Some(error) = last.and_then(|last| last.error.as_mut()) {
                    cut_text(error);
                }
            }
            _ => {}
        }
        self
    }
}

fn cut_text(text: &mut String) {
    if text.len() <= MAX_TEXT_BYTES {
        return;
    }
    let mut end = MAX_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str("... (truncated)");
}

/// A frame payload that is not a valid [`Request`] or [`Response`].
#[derive(Debug, thiserror::Error)]
#[error("malformed {what}{source}{advice}")]
pub struct DecodeError {
    /// "request (" or "response: ", before what serde said.
    what: &'static str,
    source: serde_json::Error,
    /// After what serde said: what a valid message looks like.
    advice: &'static str,
}

/// Decodes a request frame's payload. Never panics, whatever the input;
/// the error says what a valid request looks like.
pub fn decode_request(bytes: &[u8]) -> Result<Request, DecodeError> {
    serde_json::from_slice(bytes).map_err(|source| DecodeError {
        what: "request (",
        source,
        advice: "); a request is a JSON object like {\"op\":\"status\"} with op restart, \
                 status or stop",
    })
}

/// Decodes a response frame's payload. Never panics, whatever the input.
pub fn decode_response(bytes: &[u8]) -> Result<Response, DecodeError> {
    serde_json::from_slice(bytes).map_err(|source| DecodeError {
        what: "response: ",
        source,
        advice: "",
    })
}

/// Encodes a response as a frame payload (JSON), cutting overly long texts
/// so that it always fits in [`MAX_FRAME_BYTES`].
pub fn encode_response(response: Response) -> Vec<u8> {
    match serde_json::to_vec(&response.fit()) {
        Ok(bytes) if bytes.len() <= MAX_FRAME_BYTES as usize => bytes,
        _ => br#"{"result":"error","message":"the service could not encode its answer"}"#.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_last_restart() -> LastRestart {
        LastRestart {
            ok: false,
            at_unix_ms: 1_700_000_000_000,
            duration_ms: 30_000.0,
            pid: Some(43),
            generation: Some(4),
            error: Some("not ready within 30s".into()),
        }
    }

    fn sample_status() -> Status {
        Status {
            pid: 42,
            generation: 3,
            phase: Phase::Serving,
            uptime_secs: 12.5,
            restarts: 2,
            failed_restarts: 1,
            last_restart: Some(sample_last_restart()),
            spawner_pid: Some(44),
            generations: Vec::new(),
            state: None,
        }
    }

    /// Every request, with the exact JSON the CLI has always written for it
    /// (and `fresh_state`, new).
    fn pinned_requests() -> Vec<(Request, &'static str)> {
        vec![
            (Request::restart(), r#"{"op":"restart"}"#),
            (
                Request::Restart { fresh_state: true },
                r#"{"op":"restart","fresh_state":true}"#,
            ),
            (Request::Status, r#"{"op":"status"}"#),
            (Request::Stop, r#"{"op":"stop"}"#),
        ]
    }

    /// Every response, with the exact JSON the service has always written
    /// for it (and `handed_over`, new).
    fn pinned_responses() -> Vec<(Response, &'static str)> {
        let mut responses = vec![
            (
                Response::Restarted(RestartSuccess {
                    pid: 7,
                    generation: 2,
                    duration_ms: 1.5,
                    state: None,
                }),
                r#"{"result":"restarted","pid":7,"generation":2,"duration_ms":1.5}"#,
            ),
            (
                Response::Status(sample_status()),
                r#"{"result":"status","pid":42,"generation":3,"phase":"serving","uptime_secs":12.5,"restarts":2,"failed_restarts":1,"last_restart":{"ok":false,"at_unix_ms":1700000000000,"duration_ms":30000.0,"pid":43,"generation":4,"error":"not ready within 30s"},"spawner_pid":44}"#,
            ),
            (
                Response::Status(Status {
                    last_restart: None,
                    spawner_pid: None,
                    generations: Vec::new(),
                    state: None,
                    ..sample_status()
                }),
                r#"{"result":"status","pid":42,"generation":3,"phase":"serving","uptime_secs":12.5,"restarts":2,"failed_restarts":1,"last_restart":null,"spawner_pid":null}"#,
            ),
            (
                Response::Stopping { pid: 9 },
                r#"{"result":"stopping","pid":9}"#,
            ),
            (
                Response::error("nope"),
                r#"{"result":"error","message":"nope"}"#,
            ),
        ];
        for (kind, json) in [
            (
                FailureKind::InProgress,
                r#"{"result":"restart_failed","kind":"in_progress","reason":"why"}"#,
            ),
            (
                FailureKind::NotReady,
                r#"{"result":"restart_failed","kind":"not_ready","reason":"why"}"#,
            ),
            (
                FailureKind::HandedOver,
                r#"{"result":"restart_failed","kind":"handed_over","reason":"why"}"#,
            ),
            (
                FailureKind::ShuttingDown,
                r#"{"result":"restart_failed","kind":"shutting_down","reason":"why"}"#,
            ),
            (
                FailureKind::Failed,
                r#"{"result":"restart_failed","kind":"failed","reason":"why"}"#,
            ),
        ] {
            let reason = "why".to_owned();
            responses.push((Response::RestartFailed { kind, reason }, json));
        }
        responses
    }

    #[test]
    fn the_wire_json_is_pinned_and_round_trips() {
        for (request, json) in pinned_requests() {
            assert_eq!(serde_json::to_string(&request).unwrap(), json);
            assert_eq!(decode_request(json.as_bytes()).unwrap(), request);
        }
        for (response, json) in pinned_responses() {
            assert_eq!(
                String::from_utf8(encode_response(response.clone())).unwrap(),
                json
            );
            assert_eq!(decode_response(json.as_bytes()).unwrap(), response);
        }
    }

    #[test]
    fn every_phase_has_its_wire_name() {
        for (phase, name) in [
            (Phase::Starting, "starting"),
            (Phase::Serving, "serving"),
            (Phase::Restarting, "restarting"),
            (Phase::Draining, "draining"),
            (Phase::Stopping, "stopping"),
        ] {
            let json = format!("\"{name}\"");
            assert_eq!(serde_json::to_string(&phase).unwrap(), json);
            assert_eq!(serde_json::from_str::<Phase>(&json).unwrap(), phase);
            assert_eq!(phase, name);
        }
    }

    #[test]
    fn kinds_compare_with_their_wire_names() {
        let kind = FailureKind::InProgress;
        assert!(kind == "in_progress");
        assert_eq!(kind.to_string(), "in_progress");
        assert!(kind.is_temporary());
        assert!(FailureKind::NotReady.is_temporary());
        assert!(FailureKind::HandedOver.is_temporary());
        assert!(!FailureKind::Failed.is_temporary());
        assert!(!FailureKind::ShuttingDown.is_temporary());
        assert!(!FailureKind::Unknown.is_temporary());
        assert_eq!(Phase::Draining.to_string(), "draining");
    }

    #[test]
    fn fresh_state_defaults_to_false() {
        assert_eq!(
            decode_request(br#"{"op":"restart","fresh_state":false}"#).unwrap(),
            Request::restart()
        );
        assert!(decode_request(br#"{"op":"restart","fresh_state":"yes"}"#).is_err());
    }

    #[test]
    fn a_newer_service_still_decodes() {
        // Unknown keys, an unknown kind and an unknown phase.
        let failed = br#"{"result":"restart_failed","kind":"cosmic_rays","reason":"r","extra":1}"#;
        assert_eq!(
            decode_response(failed).unwrap(),
            Response::RestartFailed {
                kind: FailureKind::Unknown,
                reason: "r".into()
            }
        );
        let status = br#"{"result":"status","pid":1,"generation":1,"phase":"meditating","uptime_secs":0.5,"restarts":0,"failed_restarts":0,"last_restart":null,"new_field":[1,2]}"#;
        match decode_response(status).unwrap() {
            Response::Status(status) => {
                assert_eq!(status.phase, Phase::Unknown);
                assert_eq!(status.spawner_pid, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn long_texts_are_cut_to_fit_a_frame() {
        let huge = "é".repeat(100_000);
        let bytes = encode_response(Response::RestartFailed {
            kind: FailureKind::Failed,
            reason: huge.clone(),
        });
        assert!(bytes.len() <= MAX_FRAME_BYTES as usize);
        match decode_response(&bytes).unwrap() {
            Response::RestartFailed { reason, .. } => assert!(reason.ends_with("(truncated)")),
            other => panic!("{other:?}"),
        }
        let mut status = sample_status();
        status.last_restart.as_mut().unwrap().error = Some(huge);
        let bytes = encode_response(Response::Status(status));
        assert!(bytes.len() <= MAX_FRAME_BYTES as usize);
    }

    #[test]
    fn decode_request_accepts_the_three_ops() {
        assert_eq!(
            decode_request(br#"{"op":"restart"}"#).unwrap(),
            Request::restart()
        );
        assert_eq!(
            decode_request(br#"{"op":"status"}"#).unwrap(),
            Request::Status
        );
        assert_eq!(
            decode_request(br#" {"op":"stop", "extra": 1} "#).unwrap(),
            Request::Stop
        );
    }

    #[test]
    fn decode_request_rejects_garbage_with_a_helpful_message() {
        for garbage in [
            &b""[..],
            b"not json",
            b"{}",
            b"{\"op\":\"explode\"}",
            b"[1,2,3]",
            b"\xff\xfe",
            b"{\"op\":\"status\"} trailing",
        ] {
            let error = decode_request(garbage).unwrap_err();
            let message = error.to_string();
            assert!(message.contains("malformed request"), "{message}");
            assert!(message.contains("op"), "{message}");
            assert!(std::error::Error::source(&error).is_some());
        }
        let error = decode_response(b"{}").unwrap_err().to_string();
        assert!(error.starts_with("malformed response"), "{error}");
    }

    #[test]
    fn decode_request_never_panics() {
        // Every input of up to two bytes.
        let _ = decode_request(b"");
        for a in 0..=255u8 {
            let _ = decode_request(&[a]);
            for b in 0..=255u8 {
                let _ = decode_request(&[a, b]);
            }
        }
        // Deterministic pseudo-random inputs over JSON-ish bytes.
        let alphabet = b"{}[]\":,\\ op restatusp0123456789-+.eEtrufalsn\x00\xff\xc3\xa9\n";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 48) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let _ = decode_request(&input);
        }
        // Deep nesting and huge numbers.
        let _ = decode_request(&[b'['; 100_000]);
        let _ = decode_request(&[b'{'; 100_000]);
        let _ = decode_request(format!("{{\"op\":{}}}", "9".repeat(10_000)).as_bytes());
        let _ = decode_request(format!("{{\"op\":\"{}\"}}", "\\u0000".repeat(1000)).as_bytes());
    }
}
