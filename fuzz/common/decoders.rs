//! The decoder calls exercised by the fuzz targets, in one place.
//!
//! Included with `#[path]` by the cargo-fuzz targets in `fuzz/fuzz_targets/`
//! and by the corpus replay test `tests/fuzz_corpus.rs`, so what CI replays
//! is exactly what was fuzzed. Every function here must return normally for
//! *any* input; a panic (including a failed round-trip assertion) is a
//! finding.

use std::collections::HashMap;
use std::io::{self, Cursor, Read};

use serde::{Deserialize, Serialize};
use shellflip::state::{self, HandoverState, StateFds};
use shellflip_control::frame::{self, FrameError};
use shellflip_control::protocol::{self as control, Request, Response, MAX_FRAME_BYTES};

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// The fuzz targets, by name: the name is also the corpus directory
/// `fuzz/corpus/<name>/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("control_frame", control_frame),
    ("state_envelope", state_envelope),
];

// ---------------------------------------------------------------------------
// Control protocol: frames and the JSON requests/responses inside them
// ---------------------------------------------------------------------------

/// Feeds `data` to the control protocol's decoders:
///
/// - the whole input as a request payload and as a response payload
///   (`decode_request`, `decode_response`); whatever decodes must re-encode
///   and decode to an equal value;
/// - the input as a byte stream of frames (`read_frame_blocking`), read
///   until the first error, both in one piece and through a reader that
///   hands out a few bytes at a time and is interrupted now and then; each
///   frame read must be exactly the bytes that `encode_frame` would write for
///   its payload, and its payload goes to both decoders too.
pub fn control_frame(data: &[u8]) {
    decode_payload(data);

    let whole = read_frames(&mut Cursor::new(data), data);
    // The chunk size comes from the first byte, so the fuzzer can vary it.
    let chunk = data.first().map_or(1, |b| usize::from(b % 7) + 1);
    let mut trickle = Trickle {
        inner: Cursor::new(data),
        chunk,
        calls: 0,
    };
    let trickled = read_frames(&mut trickle, data);
    assert_eq!(
        whole, trickled,
        "reading in chunks of {chunk} bytes gave other frames than reading at once"
    );
}

/// Both payload decoders, with their round-trip properties.
fn decode_payload(payload: &[u8]) {
    if let Ok(request) = control::decode_request(payload) {
        let encoded = serde_json::to_vec(&request).expect("a decoded request encodes");
        let again = control::decode_request(&encoded)
            .unwrap_or_else(|e| panic!("re-encoded request {request:?} does not decode: {e}"));
        assert_eq!(request, again, "request changed in a round trip");
    }
    if let Ok(response) = control::decode_response(payload) {
        let encoded = serde_json::to_vec(&response).expect("a decoded response encodes");
        let again = control::decode_response(&encoded)
            .unwrap_or_else(|e| panic!("re-encoded response {response:?} does not decode: {e}"));
        // serde_json parses floats to within an ulp of the closest value
        // unless its `float_roundtrip` feature is on; compare what the
        // service would write for both.
        let reencoded = serde_json::to_vec(&again).expect("encodes");
        let (a, b) = (loose(&response), loose(&again));
        assert_eq!(
            a,
            b,
            "response changed in a round trip: {} vs {}",
            String::from_utf8_lossy(&encoded),
            String::from_utf8_lossy(&reencoded)
        );
    }
}

/// A response with its floats rounded to 12 significant digits, for
/// comparing round trips.
fn loose(response: &Response) -> Response {
    fn round(x: f64) -> f64 {
        if x == 0.0 || !x.is_finite() {
            return x;
        }
        format!("{x:.11e}").parse().unwrap_or(x)
    }
    let mut r = response.clone();
    match &mut r {
        Response::Restarted(success) => success.duration_ms = round(success.duration_ms),
        Response::Status(status) => {
            status.uptime_secs = round(status.uptime_secs);
            if let Some(last) = status.last_restart.as_mut() {
                last.duration_ms = round(last.duration_ms);
            }
        }
        _ => {}
    }
    r
}

/// Reads frames from `reader` until the first error; returns the payloads
/// and the error's kind.
fn read_frames(reader: &mut dyn Read, data: &[u8]) -> (Vec<Vec<u8>>, String) {
    let mut frames = Vec::new();
    let mut offset = 0usize;
    // Each frame consumes at least its 4-byte prefix, so this is bounded by
    // data.len() / 4 + 1 iterations; the cap is a belt and braces.
    for _ in 0..=data.len() / 4 + 1 {
        match frame::read_frame_blocking(reader, MAX_FRAME_BYTES) {
            Ok(payload) => {
                assert!(payload.len() <= MAX_FRAME_BYTES as usize, "oversized frame");
                let frame = frame::encode_frame(&payload, MAX_FRAME_BYTES)
                    .expect("a read frame re-encodes");
                assert_eq!(
                    data.get(offset..offset + frame.len()),
                    Some(&frame[..]),
                    "frame at offset {offset} is not the bytes read"
                );
                offset += frame.len();
                decode_payload(&payload);
                frames.push(payload);
            }
            Err(error) => {
                let kind = match &error {
                    FrameError::Eof => {
                        assert_eq!(offset, data.len(), "EOF reported before the end");
                        "eof"
                    }
                    FrameError::TooLarge { len, max } => {
                        assert!(*len > u64::from(*max), "{error}");
                        "too large"
                    }
                    FrameError::Truncated { .. } => "malformed",
                    FrameError::Io(e) => panic!("I/O error from an in-memory reader: {e}"),
                    _ => "other",
                };
                return (frames, kind.to_owned());
            }
        }
    }
    panic!("read_frame_blocking returned more frames than the input can hold");
}

/// A reader that returns at most `chunk` bytes per call and an
/// `Interrupted` error every third call, as a slow socket may.
struct Trickle<'a> {
    inner: Cursor<&'a [u8]>,
    chunk: usize,
    calls: u32,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.calls % 3 == 0 {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        let n = buf.len().min(self.chunk);
        self.inner.read(&mut buf[..n])
    }
}

// ---------------------------------------------------------------------------
// State handover: envelopes, and the schema-aware decoder of derived types
// ---------------------------------------------------------------------------

/// A representative handed-over state: integers, strings, a `Vec`, a
/// `HashMap`, nested structs, `Option`s, an enum and a skipped field.
#[derive(shellflip::HandoverState, Debug, Clone, PartialEq, Default)]
#[handover(version = 3)]
pub struct FuzzState {
    pub served: u64,
    pub delta: i32,
    pub flags: u8,
    pub name: String,
    pub names: Vec<String>,
    pub blob: Vec<u8>,
    pub sessions: HashMap<String, Session>,
    pub last: Option<Session>,
    pub limits: Option<Vec<i64>>,
    pub enabled: bool,
    #[handover(skip)]
    pub cache: Vec<u64>,
}

/// Nested in [`FuzzState`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Session {
    pub id: u64,
    pub user: String,
    pub hits: u32,
    pub tags: Vec<String>,
    pub parent: Option<u16>,
    pub kind: Kind,
}

/// An enum with unit, newtype and struct variants.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub enum Kind {
    #[default]
    Plain,
    Tagged(String),
    Limited {
        max: u32,
        burst: i16,
    },
}

/// The "next build" of [`FuzzState`]: fields reordered, one removed
/// (`flags`), one added with a default (`region`), one renamed (`served` is
/// now `count`), widened types (`hits: u64`, `delta: i64`) and a nested
/// struct reordered, so that decoding one as the other goes through the
/// by-name path of the decoder at every level.
#[derive(shellflip::HandoverState, Debug, Clone, PartialEq, Default)]
#[handover(version = 3)]
pub struct FuzzStateNext {
    pub sessions: HashMap<String, SessionNext>,
    #[handover(alias = "served")]
    pub count: u64,
    pub enabled: bool,
    pub delta: i64,
    pub name: String,
    #[handover(default)]
    pub region: String,
    pub last: Option<SessionNext>,
    pub names: Vec<String>,
    pub blob: Vec<u8>,
    pub limits: Option<Vec<i64>>,
}

/// [`Session`] of the next build.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct SessionNext {
    pub kind: Kind,
    pub parent: Option<u16>,
    pub hits: u64,
    pub user: String,
    pub id: u64,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Feeds `data` to the state decoders:
///
/// - `parse_envelope`: what parses must describe the input exactly (header,
///   payload and schema table add up to the input);
/// - `decode_envelope` as `FuzzState`, as `FuzzStateNext` and as `()`: a
///   decoded value must encode into an envelope that decodes to an equal
///   value;
/// - the same decoders on an envelope made of a valid header, the input as
///   the payload, and the schema table of a sample `FuzzState`, so that
///   payload mutations reach the decoder with a schema that makes sense.
pub fn state_envelope(data: &[u8]) {
    if let Ok(header) = state::parse_envelope(data) {
        assert_eq!(header.format_version, state::STATE_FORMAT_VERSION);
        assert_eq!(
            20 + header.type_name.len() + header.payload.len() + header.schema.len(),
            data.len(),
            "header, payload and schema do not add up to the input"
        );
        assert!(data.ends_with(header.schema));
    }
    check_envelope::<FuzzState>(data);
    check_envelope::<FuzzStateNext>(data);
    let _ = state::decode_envelope::<()>(data, &mut StateFds::default());

    let wrapped = envelope_with_payload(data);
    check_envelope::<FuzzState>(&wrapped);
    check_envelope::<FuzzStateNext>(&wrapped);
}

fn check_envelope<S: HandoverState + PartialEq + std::fmt::Debug>(data: &[u8]) {
    let mut fds = StateFds::default();
    if let Ok(value) = state::decode_envelope::<S>(data, &mut fds) {
        let encoded = state::encode_envelope(&value, &mut fds)
            .unwrap_or_else(|e| panic!("decoded {value:?} does not encode: {e}"));
        let again = state::decode_envelope::<S>(&encoded, &mut fds)
            .unwrap_or_else(|e| panic!("re-encoded {value:?} does not decode: {e}"));
        assert_eq!(value, again, "state changed in a round trip");
    }
}

/// The schema table of [`sample_state`]'s envelope.
fn sample_schema() -> Vec<u8> {
    let envelope = state::encode_envelope(&sample_state(), &mut StateFds::default())
        .expect("the sample encodes");
    let header = state::parse_envelope(&envelope).expect("the sample parses");
    header.schema.to_vec()
}

/// An envelope for `FuzzState` (version 3) around `payload`, with the
/// schema table of [`sample_state`].
pub fn envelope_with_payload(payload: &[u8]) -> Vec<u8> {
    thread_local! {
        static SCHEMA: Vec<u8> = sample_schema();
    }
    let name = <FuzzState as HandoverState>::TYPE_NAME.as_bytes();
    let mut out = Vec::with_capacity(64 + payload.len());
    out.extend_from_slice(b"SFST");
    out.extend_from_slice(&state::STATE_FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&<FuzzState as HandoverState>::VERSION.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(payload);
    SCHEMA.with(|schema| out.extend_from_slice(schema));
    out
}

// ---------------------------------------------------------------------------
// Seeds
// ---------------------------------------------------------------------------

/// Valid inputs for a target: the seed corpus (named files).
pub fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    match target {
        "control_frame" => control_seeds(),
        "state_envelope" => state_seeds(),
        other => panic!("unknown fuzz target {other}"),
    }
}

fn control_seeds() -> Vec<(String, Vec<u8>)> {
    let mut payloads: Vec<(&str, Vec<u8>)> = Vec::new();
    for (name, request) in [
        ("restart", Request::restart()),
        ("status", Request::Status),
        ("stop", Request::Stop),
    ] {
        payloads.push((name, serde_json::to_vec(&request).unwrap()));
    }
    let last = control::LastRestart {
        ok: false,
        at_unix_ms: 1_700_000_000_123,
        duration_ms: 2001.25,
        pid: Some(4242),
        generation: Some(7),
        error: Some("the new generation exited with status 3: bind: Address in use".into()),
    };
    let responses = [
        (
            "restarted",
            Response::Restarted(control::RestartSuccess {
                pid: 4243,
                generation: 8,
                duration_ms: 3.4,
                state: None,
            }),
        ),
        (
            "restart_failed",
            Response::RestartFailed {
                kind: control::FailureKind::InProgress,
                reason: "a restart is already in progress".into(),
            },
        ),
        (
            "status",
            Response::Status(control::Status {
                pid: 4242,
                generation: 7,
                phase: control::Phase::Serving,
                uptime_secs: 12.5,
                restarts: 6,
                failed_restarts: 1,
                last_restart: Some(last),
                spawner_pid: Some(4243),
                generations: Vec::new(),
                state: None,
            }),
        ),
        ("stopping", Response::Stopping { pid: 4242 }),
        ("error", Response::error("malformed request")),
    ];
    for (name, response) in responses {
        payloads.push((name, serde_json::to_vec(&response).unwrap()));
    }

    let mut seeds = Vec::new();
    for (name, payload) in &payloads {
        seeds.push((
            format!("frame-{name}"),
            frame::encode_frame(payload, MAX_FRAME_BYTES).unwrap(),
        ));
    }
    // Several requests on one connection, as a client may send them.
    let mut pipelined = Vec::new();
    for (_, payload) in &payloads[..3] {
        pipelined.extend(frame::encode_frame(payload, MAX_FRAME_BYTES).unwrap());
    }
    seeds.push(("frames-pipelined".into(), pipelined));
    // Edge cases of the framing itself.
    seeds.push((
        "frame-empty".into(),
        frame::encode_frame(b"", MAX_FRAME_BYTES).unwrap(),
    ));
    seeds.push((
        "frame-announces-4gib".into(),
        [&u32::MAX.to_be_bytes()[..], br#"{"op":"status"}"#].concat(),
    ));
    let mut truncated = frame::encode_frame(&payloads[1].1, MAX_FRAME_BYTES).unwrap();
    truncated.truncate(truncated.len() - 3);
    seeds.push(("frame-truncated".into(), truncated));
    seeds
}

/// A sample value with every field in use.
pub fn sample_state() -> FuzzState {
    let session = |id: u64, kind: Kind| Session {
        id,
        user: format!("user-{id}"),
        hits: 3 * id as u32,
        tags: vec!["beta".into(), "eu-west".into()],
        parent: if id % 2 == 0 { Some(id as u16) } else { None },
        kind,
    };
    FuzzState {
        served: 1_234_567,
        delta: -42,
        flags: 0b1010,
        name: "echo ✓".into(),
        names: vec!["g1".into(), "g2".into(), String::new()],
        blob: vec![0, 1, 2, 0xff],
        sessions: [
            ("a".to_owned(), session(1, Kind::Plain)),
            ("b".to_owned(), session(2, Kind::Tagged("vip".into()))),
            (
                "c".to_owned(),
                session(
                    3,
                    Kind::Limited {
                        max: 100,
                        burst: -1,
                    },
                ),
            ),
        ]
        .into_iter()
        .collect(),
        last: Some(session(4, Kind::Tagged(String::new()))),
        limits: Some(vec![i64::MIN, 0, i64::MAX]),
        enabled: true,
        cache: vec![9, 9, 9],
    }
}

fn state_seeds() -> Vec<(String, Vec<u8>)> {
    let envelope = |state: &FuzzState| {
        state::encode_envelope(state, &mut StateFds::default()).expect("sample encodes")
    };
    let payload = |state: &FuzzState| {
        let bytes = envelope(state);
        state::parse_envelope(&bytes)
            .expect("parses")
            .payload
            .to_vec()
    };
    let sample = sample_state();
    let next = FuzzStateNext {
        sessions: sample
            .sessions
            .iter()
            .map(|(k, s)| {
                let s = SessionNext {
                    kind: s.kind.clone(),
                    parent: s.parent,
                    hits: u64::from(s.hits) << 32,
                    user: s.user.clone(),
                    id: s.id,
                    tags: s.tags.clone(),
                };
                (k.clone(), s)
            })
            .collect(),
        count: 5,
        region: "eu".into(),
        ..FuzzStateNext::default()
    };
    let mut seeds = vec![
        (
            "envelope-default".to_owned(),
            envelope(&FuzzState::default()),
        ),
        ("envelope-sample".to_owned(), envelope(&sample)),
        (
            "envelope-next".to_owned(),
            state::encode_envelope(&next, &mut StateFds::default()).unwrap(),
        ),
        // Raw payloads: reach the payload decoder through the wrapped call.
        ("payload-sample".to_owned(), payload(&sample)),
        ("payload-default".to_owned(), payload(&FuzzState::default())),
        (
            "envelope-unit".to_owned(),
            state::encode_envelope(&(), &mut StateFds::default()).unwrap(),
        ),
    ];
    let mut other_version = envelope(&sample);
    other_version[6..10].copy_from_slice(&9u32.to_be_bytes());
    seeds.push(("envelope-other-version".into(), other_version));
    // What format version 1 looked like: refused as written by an older
    // shellflip.
    let mut old = b"SFST\x00\x01".to_vec();
    old.extend_from_slice(&0x0123_4567_89ab_cdefu64.to_be_bytes());
    old.extend_from_slice(&9u16.to_be_bytes());
    old.extend_from_slice(b"FuzzState");
    old.extend_from_slice(&[0x91, 0xcf, 0, 0, 0, 0, 0, 0, 0, 1]);
    seeds.push(("envelope-format-1".into(), old));
    seeds
}
