//! Typed state carried from one generation to the next, and its codec.
//!
//! A type implements [`HandoverState`] (normally through
//! `#[derive(HandoverState)]`); the old generation encodes it and the new
//! generation decodes it before the user's code runs.
//!
//! # Evolution rules
//!
//! Values are matched **by name at every level**: struct fields by field
//! name, enum variants by variant name, nested serde types included, so
//! that reordering fields never changes a value. A field the new build
//! does not have is dropped (and logged at info with its path); a field
//! the old build did not send takes its default (`#[handover(default)]`,
//! `#[serde(default)]`) or is refused. Scalars are accepted as their
//! declared type or a lossless widening (`u8` → `u16` → `u32` → `u64` →
//! `u128`, unsigned → wider signed, `i8` → … → `i128`, `f32` → `f64`, small
//! integers → a float that holds them exactly, `T` → `Option<T>`); anything
//! else is a [`StateError`] naming the path (`State.inner.x`), what this
//! build expects and what was received. A schema version and explicit
//! migrations cover what renaming and defaults cannot (see
//! [`HandoverState::VERSION`] and [`StateDecoder::migrate`]).
//! `docs/state.md` in the repository has the whole story.
//!
//! # Wire format
//!
//! The state travels as an *envelope*: a fixed header, the payload, and
//! the schema table that the payload refers to.
//!
//! ```text
//! offset    size  field
//! 0         4     magic "SFST"
//! 4         2     format version (big endian), currently 2
//! 6         4     schema version of the root type (big endian), HandoverState::VERSION
//! 10        8     payload length P (big endian)
//! 18        2     length N of the root type name (big endian)
//! 20        N     root type name, UTF-8
//! 20+N      P     payload: one MessagePack value
//! 20+N+P    ...   schema table: one MessagePack array, up to the end
//! ```
//!
//! The payload is plain MessagePack in which every scalar carries the
//! marker of its *declared* type (a `u64` is always `0xcf` and 8 bytes), a
//! struct is the array `[SHAPE(id), v1, v2, ...]` of its values in
//! declaration order, an enum variant is `SHAPE(id)` (unit) or
//! `[SHAPE(id), ...]`, `Some(v)` is `[SOME, v]` and `None` is nil. `SHAPE`
//! and `SOME` are MessagePack `fixext` values (types 1 and 2); `u128` and
//! `i128` are `fixext 16` (types 3 and 4). The schema table lists each
//! shape once: `[kind, type name, variant name, [field names]]`.
//!
//! File descriptors held by the state (listeners, streams, files) never go
//! into the payload: they travel beside it, by name, in [`StateFds`].

mod decode;
mod encode;
mod error;
mod fds;
#[cfg(test)]
mod tests;
mod wire;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

pub use error::StateError;
pub use fds::{HandoverFd, StateFds};

/// The version of the envelope layout written by this build.
pub const STATE_FORMAT_VERSION: u16 = 2;
const MAGIC: &[u8; 4] = b"SFST";
/// Bytes of the header before the type name.
const HEADER_FIXED: usize = 4 + 2 + 4 + 8 + 2;
/// The largest envelope a generation accepts (16 GiB).
///
/// A bound on what a damaged or hostile header can make the new generation
/// allocate, well above what a handover can carry in practice: the old
/// generation holds the state and its envelope at once, the new one the
/// envelope and the decoded state, and a gigabyte takes about a second
/// each way. The old generation refuses to send a larger state (the
/// restart fails, naming the size, and it keeps serving); the new one
/// refuses to receive one.
pub const MAX_STATE_BYTES: u64 = 16 << 30;
/// How deeply values may nest (arrays, maps, structs, variants and `Some`
/// inside one another). The limit keeps encoding and decoding within a
/// small thread stack whatever the input; real states stay far below it.
pub const MAX_STATE_DEPTH: usize = 128;

/// State that survives a restart.
///
/// Implemented by `#[derive(HandoverState)]`; implement it by hand only
/// for special needs. A state is `Send + Sync`: the service's tasks share
/// it behind a read-write lock ([`StateCell`](crate::StateCell)), and
/// readers on several threads read it at once. `()` implements it for services that keep no state
/// (it accepts and drops whatever the previous generation sent).
///
/// ```
/// use shellflip_runtime::state::{self, HandoverState, StateDecoder, StateEncoder, StateError, StateFds};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
/// struct Counters { served: u64 }
///
/// impl HandoverState for Counters {
///     const TYPE_NAME: &'static str = "Counters";
///     const VERSION: u32 = 1;
///     fn encode_state(&self, state: &mut StateEncoder<'_>) -> Result<(), StateError> {
///         state.put_data(self)
///     }
///     fn decode_state(state: &mut StateDecoder<'_>) -> Result<Self, StateError> {
///         state.take_data()
///     }
/// }
///
/// let mut fds = StateFds::default();
/// let bytes = state::encode_envelope(&Counters { served: 7 }, &mut fds)?;
/// let back: Counters = state::decode_envelope(&bytes, &mut fds)?;
/// assert_eq!(back, Counters { served: 7 });
/// # Ok::<(), StateError>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be handed over to the next generation",
    label = "`{Self}` does not implement `HandoverState`",
    note = "add `#[derive(shellflip::HandoverState)]` to `{Self}` (or use `Context<()>` for a service without state)"
)]
pub trait HandoverState: Sized + Send + Sync + 'static {
    /// The type's name, shown in error messages and sent in the envelope.
    const TYPE_NAME: &'static str;

    /// The schema version. A received state of the same version is decoded
    /// by name (fields added with a default, removed or renamed with an
    /// alias need no new version); an older one goes through
    /// [`HandoverState::decode_version`], which the derive implements with
    /// the migration named by `#[handover(version = N, from = "Old")]`.
    const VERSION: u32 = 1;

    /// The oldest version this type reads through its migrations
    /// ([`HandoverState::VERSION`] without any).
    const OLDEST_VERSION: u32 = Self::VERSION;

    /// Fields of the root struct with their former names
    /// (`#[handover(alias = "old_name")]`). They are sent with the state, so
    /// that a build that still knows a field by a former name (the build
    /// before a rename, after a rollback) finds it.
    const FIELD_ALIASES: &'static [(&'static str, &'static [&'static str])] = &[];

    /// Writes the data (once, with [`StateEncoder::put_data`]) and the
    /// descriptors (with [`StateEncoder::put_fd`]).
    fn encode_state(&self, state: &mut StateEncoder<'_>) -> Result<(), StateError>;

    /// Rebuilds a value from a state of this type's [`VERSION`].
    ///
    /// [`VERSION`]: HandoverState::VERSION
    fn decode_state(state: &mut StateDecoder<'_>) -> Result<Self, StateError>;

    /// Rebuilds a value from a state of schema version `version`: by
    /// default [`decode_state`] when it is [`VERSION`], otherwise an error
    /// naming both versions. Types with a migration decode older versions
    /// as their previous schema and convert (see
    /// [`StateDecoder::migrate`]).
    ///
    /// [`decode_state`]: HandoverState::decode_state
    /// [`VERSION`]: HandoverState::VERSION
    fn decode_version(version: u32, state: &mut StateDecoder<'_>) -> Result<Self, StateError> {
        if version == Self::VERSION {
            Self::decode_state(state)
        } else {
            Err(state.version_error(version))
        }
    }
}

impl HandoverState for () {
    const TYPE_NAME: &'static str = "()";

    fn encode_state(&self, state: &mut StateEncoder<'_>) -> Result<(), StateError> {
        state.put_data(&())
    }

    fn decode_state(_state: &mut StateDecoder<'_>) -> Result<Self, StateError> {
        Ok(())
    }

    /// A build without state takes any state and drops it.
    fn decode_version(_version: u32, state: &mut StateDecoder<'_>) -> Result<Self, StateError> {
        if state.received_type() != Self::TYPE_NAME {
            tracing::info!(
                "handover state: this build keeps no state; the previous generation's `{}` is dropped",
                state.received_type()
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

/// What [`HandoverState::encode_state`] writes to: the data (once) and the
/// descriptors.
pub struct StateEncoder<'a> {
    out: &'a mut Vec<u8>,
    payload_start: usize,
    /// The most bytes `out` may hold.
    limit: usize,
    /// Set when the memory available, not [`MAX_STATE_BYTES`], sets `limit`.
    memory: Option<crate::memory::Available>,
    schema: encode::Schema,
    fds: &'a mut StateFds,
    type_name: &'static str,
    data_written: bool,
}

impl StateEncoder<'_> {
    /// Encodes `value` as the state's data. Called once per state.
    pub fn put_data<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), StateError> {
        if self.data_written {
            let reason = "the data was written twice; call `put_data` once";
            return Err(encode_error(self.type_name, reason));
        }
        self.data_written = true;
        let mut encoder = encode::Encoder::new(self.out, &mut self.schema, self.limit);
        let result = value.serialize(&mut encoder);
        match (result, encoder.over_limit, &self.memory) {
            (Ok(()), ..) => Ok(()),
            (Err(_), true, Some(memory)) => Err(out_of_memory(self.type_name, self.limit, memory)),
            (Err(e), ..) => Err(encode_error(self.type_name, e.0)),
        }
    }

    /// Hands `value`'s descriptor over under `name` (a duplicate: `value`
    /// keeps working).
    pub fn put_fd<T: HandoverFd>(&mut self, name: &str, value: &T) -> Result<(), StateError> {
        self.fds.put_field(name, value)
    }

    /// The descriptors handed over so far.
    pub fn fds(&mut self) -> &mut StateFds {
        self.fds
    }

    /// Rewrites the payload written so far: only for the fault-injection
    /// example and tests, which hand over damaged data on purpose.
    #[doc(hidden)]
    pub fn __damage_payload(&mut self, damage: impl FnOnce(&mut Vec<u8>)) {
        let mut payload = self.out.split_off(self.payload_start);
        damage(&mut payload);
        self.out.extend_from_slice(&payload);
    }
}

/// What was encoded, for logs and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeInfo {
    /// The root type's name.
    pub type_name: &'static str,
    /// The root type's schema version.
    pub version: u32,
    /// The whole envelope, in bytes.
    pub len: usize,
    /// The payload, in bytes.
    pub payload_len: usize,
    /// The schema table, in bytes.
    pub schema_len: usize,
}

fn out_of_memory(
    type_name: &'static str,
    len: usize,
    memory: &crate::memory::Available,
) -> StateError {
    StateError::OutOfMemory {
        type_name,
        envelope_at_least: len as u64,
        available: memory.bytes,
        origin: memory.source.clone(),
    }
}

fn encode_error(type_name: &'static str, reason: impl Into<String>) -> StateError {
    let reason = reason.into();
    StateError::Encode { type_name, reason }
}

/// Appends the payload and then the schema table of `state` to `out`, for
/// an envelope of at most `max` bytes with its header: the payload stops
/// growing `out` as soon as it passes, and a larger envelope is refused
/// (as out of `memory` when that sets `max`). Returns their lengths.
fn encode_body<S: HandoverState>(
    state: &S,
    fds: &mut StateFds,
    out: &mut Vec<u8>,
    max: u64,
    memory: Option<crate::memory::Available>,
) -> Result<(usize, usize), StateError> {
    let header_len = HEADER_FIXED + S::TYPE_NAME.len();
    let payload_start = out.len();
    // All of memory where `max` does not fit a `usize`.
    let room = usize::try_from(max).unwrap_or(usize::MAX);
    let limit = payload_start.saturating_add(room.saturating_sub(header_len));
    let mut encoder = StateEncoder {
        out: &mut *out,
        payload_start,
        limit,
        memory,
        schema: encode::Schema::default(),
        fds,
        type_name: S::TYPE_NAME,
        data_written: false,
    };
    state.encode_state(&mut encoder)?;
    let (schema, memory) = (encoder.schema, encoder.memory);
    let payload_len = out.len() - payload_start;
    let too_long = |e: wire::TooLong| format!("a schema table entry of {} bytes is too long", e.0);
    wire::write_schema(out, &schema.shapes, S::FIELD_ALIASES)
        .map_err(|e| encode_error(S::TYPE_NAME, too_long(e)))?;
    let schema_len = out.len() - payload_start - payload_len;
    let len = header_len + payload_len + schema_len;
    if len as u64 > max {
        return Err(match &memory {
            Some(memory) => out_of_memory(S::TYPE_NAME, len, memory),
            None => encode_error(S::TYPE_NAME, format!(
                "the encoded state is {len} bytes, more than the {max} bytes a generation accepts (MAX_STATE_BYTES); keep less state, or hand the rest over another way (a file, a database)"
            )),
        });
    }
    Ok((payload_len, schema_len))
}

fn write_header<S: HandoverState>(out: &mut Vec<u8>, payload_len: usize) -> Result<(), StateError> {
    let name = S::TYPE_NAME.as_bytes();
    let name_len = u16::try_from(name.len())
        .map_err(|_| encode_error(S::TYPE_NAME, "the type name is longer than 65535 bytes"))?;
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&STATE_FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&S::VERSION.to_be_bytes());
    out.extend_from_slice(&(payload_len as u64).to_be_bytes());
    out.extend_from_slice(&name_len.to_be_bytes());
    out.extend_from_slice(name);
    Ok(())
}

/// Appends the envelope of `state` to `out` (which may be reused from one
/// encoding to the next: nothing else is allocated for the payload); its
/// descriptors go into `fds`. On error `out` is left as it was.
pub fn encode_envelope_into<S: HandoverState>(
    state: &S,
    fds: &mut StateFds,
    out: &mut Vec<u8>,
) -> Result<EnvelopeInfo, StateError> {
    let start = out.len();
    let result = (|| {
        write_header::<S>(out, 0)?;
        let header_len = out.len() - start;
        let (payload_len, schema_len) = encode_body(state, fds, out, MAX_STATE_BYTES, None)?;
        let len_at = start + HEADER_FIXED - 2 - 8;
        out[len_at..len_at + 8].copy_from_slice(&(payload_len as u64).to_be_bytes());
        Ok(EnvelopeInfo {
            type_name: S::TYPE_NAME,
            version: S::VERSION,
            len: header_len + payload_len + schema_len,
            payload_len,
            schema_len,
        })
    })();
    result.inspect_err(|_| out.truncate(start))
}

/// Encodes `state` into an envelope; its descriptors go into `fds`.
pub fn encode_envelope<S: HandoverState>(
    state: &S,
    fds: &mut StateFds,
) -> Result<Vec<u8>, StateError> {
    let mut out = Vec::new();
    encode_envelope_into(state, fds, &mut out)?;
    Ok(out)
}

/// An envelope in two parts, sent one after the other: the header is
/// built after the payload (it holds its length), and a large payload is
/// never copied behind it.
#[derive(Debug, Default)]
pub(crate) struct EncodedState {
    pub header: Vec<u8>,
    /// The payload and the schema table.
    pub payload: Vec<u8>,
}

impl EncodedState {
    pub(crate) fn len(&self) -> usize {
        self.header.len() + self.payload.len()
    }
}

/// [`encode_envelope`] as a header and a body, refused before anything is
/// sent if larger than [`MAX_STATE_BYTES`], or than half the memory
/// available (see [`StateError::OutOfMemory`]).
pub(crate) fn encode_envelope_parts<S: HandoverState>(
    state: &S,
    fds: &mut StateFds,
) -> Result<EncodedState, StateError> {
    encode_envelope_parts_within(state, fds, MAX_STATE_BYTES, crate::memory::available())
}

/// [`encode_envelope_parts`] within `cap` bytes and half of `memory`: the
/// encoding stops as soon as it passes the lower, without holding more
/// memory than that.
fn encode_envelope_parts_within<S: HandoverState>(
    state: &S,
    fds: &mut StateFds,
    cap: u64,
    memory: Option<crate::memory::Available>,
) -> Result<EncodedState, StateError> {
    let memory = memory.filter(|memory| memory.bytes / 2 < cap);
    let max = memory.as_ref().map_or(cap, |memory| memory.bytes / 2);
    let mut payload = Vec::new();
    let (payload_len, _) = encode_body(state, fds, &mut payload, max, memory)?;
    let mut header = Vec::with_capacity(HEADER_FIXED + S::TYPE_NAME.len());
    write_header::<S>(&mut header, payload_len)?;
    Ok(EncodedState { header, payload })
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/// The parsed header of an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeHeader<'a> {
    /// Layout version ([`STATE_FORMAT_VERSION`]).
    pub format_version: u16,
    /// The root type's schema version.
    pub version: u32,
    /// The root type's name.
    pub type_name: &'a str,
    /// The payload.
    pub payload: &'a [u8],
    /// The schema table.
    pub schema: &'a [u8],
}

fn corrupt(reason: impl Into<String>) -> StateError {
    corrupt_as("", reason)
}

/// [`StateError::Corrupt`], for a state of type `type_name`.
fn corrupt_as(type_name: &str, reason: impl Into<String>) -> StateError {
    let (type_name, reason) = (type_name.to_owned(), reason.into());
    StateError::Corrupt { type_name, reason }
}

/// Parses an envelope's header without interpreting the payload. Never
/// panics, whatever the input.
pub fn parse_envelope(bytes: &[u8]) -> Result<EnvelopeHeader<'_>, StateError> {
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return Err(corrupt(format!(
            "{} bytes is more than the {MAX_STATE_BYTES} bytes a generation accepts",
            bytes.len()
        )));
    }
    let mut r = wire::Reader::new(bytes);
    let short = |_| {
        corrupt(format!(
            "{} bytes is shorter than the {HEADER_FIXED}-byte header",
            bytes.len()
        ))
    };
    if r.take(4).map_err(short)? != MAGIC {
        return Err(corrupt(
            "it does not start with the shellflip state magic \"SFST\"",
        ));
    }
    let format_version = r.u16().map_err(short)?;
    let expected = STATE_FORMAT_VERSION;
    match format_version {
        STATE_FORMAT_VERSION => {}
        1 => return Err(StateError::OldFormat { found: 1, expected }),
        found => return Err(StateError::UnsupportedFormat { found, expected }),
    }
    let version = r.u32().map_err(short)?;
    let payload_len = u64::from_be_bytes(r.array().map_err(short)?);
    let name_len = usize::from(r.u16().map_err(short)?);
    let type_name = r.take(name_len).map_err(|_| {
        corrupt(format!(
            "the type name is announced as {name_len} bytes but only {} remain",
            bytes.len() - HEADER_FIXED
        ))
    })?;
    let type_name =
        std::str::from_utf8(type_name).map_err(|_| corrupt("the type name is not UTF-8"))?;
    let rest = r.remaining();
    let payload = usize::try_from(payload_len)
        .ok()
        .and_then(|len| r.take(len).ok());
    let payload = payload.ok_or_else(|| {
        corrupt(format!(
            "the payload is announced as {payload_len} bytes but only {rest} remain"
        ))
    })?;
    let schema = &bytes[r.pos..];
    Ok(EnvelopeHeader {
        format_version,
        version,
        type_name,
        payload,
        schema,
    })
}

/// What a decoding found besides the value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecodeReport {
    /// The root type named by the previous generation.
    pub received_type: String,
    /// Its schema version.
    pub received_version: u32,
    /// The envelope's size in bytes.
    pub len: usize,
    /// Paths of received values this build does not have (dropped, and
    /// logged at info), at most 100.
    pub dropped: Vec<String>,
}

/// What [`HandoverState::decode_state`] reads from: the data (once) and
/// the descriptors.
pub struct StateDecoder<'a> {
    /// What was received.
    header: EnvelopeHeader<'a>,
    /// The schema table, until the data is taken.
    schema: Option<wire::Schema<'a>>,
    fds: &'a mut StateFds,
    /// The type this build decodes, its version and the oldest version it
    /// migrates from, for error messages.
    type_name: &'static str,
    version: u32,
    oldest: u32,
    dropped: Vec<String>,
}

impl StateDecoder<'_> {
    /// Decodes the state's data as `T`. Called once per state.
    pub fn take_data<T: DeserializeOwned>(&mut self) -> Result<T, StateError> {
        let Some(schema) = self.schema.take() else {
            // An error of the root value: `Incompatible` at the type's name.
            let twice = serde::de::Error::custom("the data was read twice; call `take_data` once");
            return Err(StateError::from_decode(self.type_name, twice));
        };
        let mut decoder = decode::Decoder::new(self.header.payload, schema, self.type_name);
        let result = decoder.decode::<T>();
        self.dropped = std::mem::take(&mut decoder.dropped);
        result.map_err(|e| StateError::from_decode(self.type_name, e))
    }

    /// Takes the descriptor handed over under `name` and adopts it.
    pub fn take_fd<T: HandoverFd>(&mut self, name: &str) -> Result<T, StateError> {
        self.fds.take_field(name)
    }

    /// Takes the descriptor handed over under `name` or, failing that,
    /// under the first of `aliases` that was (a renamed fd field).
    pub fn take_fd_renamed<T: HandoverFd>(
        &mut self,
        name: &str,
        aliases: &[&str],
    ) -> Result<T, StateError> {
        let mut names = std::iter::once(name).chain(aliases.iter().copied());
        let found = names.find(|n| self.fds.contains(n));
        self.fds.take_field(found.unwrap_or(name))
    }

    /// The descriptors handed over.
    pub fn fds(&mut self) -> &mut StateFds {
        self.fds
    }

    /// The root type named by the previous generation.
    pub fn received_type(&self) -> &str {
        self.header.type_name
    }

    /// The schema version the previous generation sent.
    pub fn received_version(&self) -> u32 {
        self.header.version
    }

    /// Decodes a state of schema `version` as `New`: directly when it is
    /// `New::VERSION`, or, when it is older, as `Old` (itself through its
    /// own migrations, so that chains 1 → 2 → 3 work) converted with
    /// `From`. What `#[handover(version = N, from = "Old")]` expands to.
    pub fn migrate<Old, New>(&mut self, version: u32) -> Result<New, StateError>
    where
        Old: HandoverState,
        New: HandoverState + From<Old>,
    {
        if version == New::VERSION {
            return New::decode_state(self);
        }
        if version < New::VERSION && Old::VERSION < New::VERSION {
            let old = Old::decode_version(version, self)?;
            tracing::info!(
                "handover state: migrated version {} (`{}`) to version {} (`{}`)",
                Old::VERSION,
                Old::TYPE_NAME,
                New::VERSION,
                New::TYPE_NAME
            );
            return Ok(New::from(old));
        }
        Err(self.version_error(version))
    }

    /// The error for a received `version` this build cannot read.
    pub fn version_error(&self, version: u32) -> StateError {
        StateError::Version {
            type_name: self.type_name,
            received_type: self.header.type_name.to_owned(),
            received: version,
            version: self.version,
            oldest: self.oldest,
        }
    }
}

/// Decodes an envelope into `S`, taking its descriptors out of `fds`.
/// Never panics, whatever the input.
pub fn decode_envelope<S: HandoverState>(
    bytes: &[u8],
    fds: &mut StateFds,
) -> Result<S, StateError> {
    decode_envelope_with_report(bytes, fds).map(|(state, _)| state)
}

/// [`decode_envelope`], also telling what was received and what was
/// dropped.
pub fn decode_envelope_with_report<S: HandoverState>(
    bytes: &[u8],
    fds: &mut StateFds,
) -> Result<(S, DecodeReport), StateError> {
    let header = parse_envelope(bytes).map_err(|e| match e {
        StateError::Corrupt { reason, .. } => corrupt_as(S::TYPE_NAME, reason),
        other => other,
    })?;
    let schema = wire::read_schema(header.schema)
        .map_err(|e| corrupt_as(S::TYPE_NAME, format!("its schema table is unreadable: {e}")))?;
    let mut decoder = StateDecoder {
        header,
        schema: Some(schema),
        fds,
        type_name: S::TYPE_NAME,
        version: S::VERSION,
        oldest: S::OLDEST_VERSION,
        dropped: Vec::new(),
    };
    let state = S::decode_version(decoder.header.version, &mut decoder)?;
    let report = DecodeReport {
        received_type: decoder.header.type_name.to_owned(),
        received_version: decoder.header.version,
        len: bytes.len(),
        dropped: decoder.dropped,
    };
    Ok((state, report))
}

// ---------------------------------------------------------------------------
// Helpers for the derive
// ---------------------------------------------------------------------------

/// A field with a default: the received value, if it was sent. Decodes
/// exactly as `T` (it is not an `Option`: a nil is not taken for "absent").
/// Used by `#[derive(HandoverState)]` for `#[handover(default)]`.
#[doc(hidden)]
#[derive(Debug)]
pub struct Received<T>(Option<T>);

impl<T> Received<T> {
    /// Not sent.
    pub fn absent() -> Self {
        Received(None)
    }

    /// The value sent, or `T::default()`.
    pub fn or_default(self) -> T
    where
        T: Default,
    {
        self.0.unwrap_or_default()
    }

    /// The value sent, or `default()`.
    pub fn or_else(self, default: impl FnOnce() -> T) -> T {
        self.0.unwrap_or_else(default)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Received<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(|value| Received(Some(value)))
    }
}

/// `VersionOf::<T>::VERSION` is `T::VERSION` for a handover state, and 0
/// (through [`NoVersion`]) for any other type: the derive checks that a
/// `from` type is older than the struct without a second error when the
/// type is not a handover state at all (its where clause reports that).
#[doc(hidden)]
pub struct VersionOf<T>(std::marker::PhantomData<T>);

impl<T: HandoverState> VersionOf<T> {
    /// `T::VERSION`.
    pub const VERSION: u32 = T::VERSION;
}

/// The fallback of [`VersionOf`].
#[doc(hidden)]
pub trait NoVersion {
    /// Any type that is not a handover state.
    const VERSION: u32 = 0;
}

impl<T> NoVersion for VersionOf<T> {}

/// Byte blobs as one MessagePack `bin` (a length and the bytes: one copy
/// each way) rather than a sequence of integers: what
/// `#[derive(HandoverState)]` uses for `Vec<u8>` fields and fields marked
/// `#[handover(bytes)]`. Usable as `#[serde(with = "...")]`.
pub mod bytes {
    use std::fmt;

    use serde::de::{Deserializer, SeqAccess, Visitor};
    use serde::Serializer;

    use super::Received;
    use crate::fd;

    /// Writes `value` as one byte string.
    pub fn serialize<T, S>(value: &T, serializer: S) -> Result<S::Ok, S::Error>
    where
        T: AsRef<[u8]> + ?Sized,
        S: Serializer,
    {
        serializer.serialize_bytes(value.as_ref())
    }

    /// Reads a byte string (or a sequence of `u8`).
    pub fn deserialize<'de, T, D>(deserializer: D) -> Result<T, D::Error>
    where
        T: From<Vec<u8>>,
        D: Deserializer<'de>,
    {
        deserializer.deserialize_byte_buf(BytesVisitor).map(T::from)
    }

    /// [`deserialize`] for a byte field with a default.
    #[doc(hidden)]
    pub fn received<'de, T, D>(deserializer: D) -> Result<Received<T>, D::Error>
    where
        T: From<Vec<u8>>,
        D: Deserializer<'de>,
    {
        deserialize(deserializer).map(|value| Received(Some(value)))
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("bytes")
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            if v.len() < fd::HUGE_PAGE_MIN {
                return Ok(v.to_vec());
            }
            // A large blob: its copy is mostly faulting fresh memory in,
            // which huge pages make about three times faster.
            let mut blob = fd::huge_buffer(v.len()).map_err(|e| {
                E::custom(format!(
                    "could not allocate {} bytes for a byte blob ({e}); the new generation lacks the memory to take the state",
                    v.len()
                ))
            })?;
            blob.extend_from_slice(v);
            Ok(blob)
        }

        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(byte) = seq.next_element::<u8>()? {
                out.push(byte);
            }
            Ok(out)
        }
    }
}
