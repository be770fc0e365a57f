//! The decoder: a serde `Deserializer` over a payload written by
//! [`super::encode`], with the schema table that came with it.
//!
//! - A struct whose received field names are the target's (same names,
//!   same order) is presented positionally (`visit_seq`, the fast path; the
//!   verdict is cached per shape). Otherwise it is presented as a map keyed
//!   by the received names, so that serde's own matching (`alias`,
//!   `default`, unknown fields ignored) works at every level.
//! - A received field the target does not take is skipped and logged once
//!   (at info) with its path.
//! - Scalars are accepted as their declared type or a lossless widening
//!   (`u8` → `u16` → `u32` → `u64` → `u128`, unsigned → wider signed,
//!   `i8` → … → `i128`, `f32` → `f64`, small integers → floats that hold
//!   them exactly, `T` → `Option<T>`); anything else is an error naming the
//!   path, what this build expects and what was received.
//! - Nesting is bounded by [`MAX_STATE_DEPTH`]; no input makes it panic.

use std::collections::HashSet;
use std::fmt::{self, Write as _};

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{self, DeserializeSeed, Visitor};

use super::wire::{self, ReadError, Reader, Schema, Shape, ShapeKind};
use super::MAX_STATE_DEPTH;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// What went wrong, before the path is known.
#[derive(Debug)]
pub(crate) enum Problem {
    /// The bytes are not what the encoder writes.
    Read(ReadError),
    /// Nested deeper than [`MAX_STATE_DEPTH`].
    TooDeep,
    /// A value of another type than this build declares.
    Type { expected: String, received: String },
    /// A field of this build's struct that was not received.
    MissingField(&'static str),
    /// A variant this build's enum does not have.
    UnknownVariant {
        variant: String,
        expected: &'static [&'static str],
    },
    /// Anything else a type refused (lengths, its own checks).
    Other(String),
}

/// A decoding error with the path where it happened.
pub(crate) struct DeError(Box<(Problem, Option<String>)>);

impl DeError {
    fn new(problem: Problem) -> Self {
        DeError(Box::new((problem, None)))
    }

    pub(crate) fn problem(&self) -> &Problem {
        &self.0 .0
    }

    /// The path (`State.inner.x`), when known.
    pub(crate) fn path(&self) -> Option<&str> {
        self.0 .1.as_deref()
    }
}

impl From<ReadError> for DeError {
    fn from(e: ReadError) -> Self {
        DeError::new(Problem::Read(e))
    }
}

impl fmt::Debug for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} at {:?}", self.0 .0, self.0 .1)
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(path) = self.path() {
            write!(f, "`{path}`: ")?;
        }
        match self.problem() {
            Problem::Read(e) => write!(f, "{e}"),
            Problem::TooDeep => write!(
                f,
                "nested more than {MAX_STATE_DEPTH} levels deep (the depth limit)"
            ),
            Problem::Type { expected, received } => {
                write!(f, "this build expects {expected}, received {received}")
            }
            Problem::MissingField(field) => write!(f, "missing field `{field}`"),
            Problem::UnknownVariant { variant, .. } => write!(f, "unknown variant `{variant}`"),
            Problem::Other(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::new(Problem::Other(msg.to_string()))
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::new(Problem::Type {
            expected: exp.to_string(),
            received: unexp.to_string(),
        })
    }

    fn invalid_length(len: usize, exp: &dyn de::Expected) -> Self {
        DeError::new(Problem::Other(format!(
            "received {len} elements, this build expects {exp}"
        )))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(Problem::UnknownVariant {
            variant: variant.to_owned(),
            expected,
        })
    }

    fn missing_field(field: &'static str) -> Self {
        DeError::new(Problem::MissingField(field))
    }
}

type Result<T> = std::result::Result<T, DeError>;

// ---------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------

/// One step of a path.
#[derive(Clone, Copy)]
enum Seg<'de> {
    Root,
    /// A struct field: its shape and index (for logging a dropped field
    /// once) and its name.
    Field {
        shape: u32,
        index: u32,
        name: &'de str,
    },
    /// An element of a sequence or tuple.
    Index(usize),
    /// The value of a map entry, by its key's encoded bytes.
    Key(&'de [u8]),
    /// The payload of an enum variant.
    Variant(&'de str),
}

/// A path as a chain of frames on the stack: no allocation unless it is
/// rendered (for an error or a log line).
struct Frame<'p, 'de> {
    parent: Option<&'p Frame<'p, 'de>>,
    seg: Seg<'de>,
}

impl<'p, 'de> Frame<'p, 'de> {
    fn child(&'p self, seg: Seg<'de>) -> Frame<'p, 'de> {
        Frame {
            parent: Some(self),
            seg,
        }
    }
}

// ---------------------------------------------------------------------------
// Heads: what a value is, read from its first bytes
// ---------------------------------------------------------------------------

/// The start of one value. For containers, the elements follow in the
/// reader.
#[derive(Clone, Copy, Debug)]
enum Head<'de> {
    Nil,
    Bool(bool),
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    U128(u128),
    I8(i8),
    I16(i16),
    I32(i32),
    I64(i64),
    I128(i128),
    F32(f32),
    F64(f64),
    Char(char),
    Str(&'de str),
    Bin(&'de [u8]),
    /// A plain array of `n` elements.
    Seq(usize),
    /// A map of `n` entries.
    Map(usize),
    /// A struct: `len` values follow (as many as the shape's fields).
    Struct {
        shape: u32,
        len: usize,
    },
    /// An enum variant: a unit variant (`len` 0, nothing follows) or a
    /// container variant with `len` values following.
    Variant {
        shape: u32,
        len: usize,
    },
    /// `Some`: the value follows.
    Some,
}

fn malformed(what: impl Into<String>) -> ReadError {
    ReadError::Malformed(what.into())
}

fn shape<'s, 'de>(
    shapes: &'s [Shape<'de>],
    id: u32,
) -> std::result::Result<&'s Shape<'de>, ReadError> {
    shapes.get(id as usize).ok_or_else(|| {
        malformed(format!(
            "a reference to schema entry {id}, but the schema has {}",
            shapes.len()
        ))
    })
}

/// Reads the head of the next value.
fn read_head<'de>(
    r: &mut Reader<'de>,
    shapes: &[Shape<'de>],
) -> std::result::Result<Head<'de>, ReadError> {
    let marker = r.byte()?;
    Ok(match marker {
        0x00..=0x7f => Head::U8(marker),
        0x80..=0x8f => Head::Map(usize::from(marker & 0x0f)),
        0x90..=0x9f => read_array(r, shapes, usize::from(marker & 0x0f))?,
        0xa0..=0xbf => Head::Str(r.str_of_len(usize::from(marker & 0x1f))?),
        wire::NIL => Head::Nil,
        wire::FALSE => Head::Bool(false),
        wire::TRUE => Head::Bool(true),
        wire::BIN8 => {
            let len = usize::from(r.byte()?);
            Head::Bin(r.take(len)?)
        }
        wire::BIN16 => {
            let len = usize::from(r.u16()?);
            Head::Bin(r.take(len)?)
        }
        wire::BIN32 => {
            let len = r.u32()? as usize;
            Head::Bin(r.take(len)?)
        }
        wire::F32 => Head::F32(f32::from_be_bytes(r.array()?)),
        wire::F64 => Head::F64(f64::from_be_bytes(r.array()?)),
        wire::U8 => Head::U8(r.byte()?),
        wire::U16 => Head::U16(r.u16()?),
        wire::U32 => Head::U32(r.u32()?),
        wire::U64 => Head::U64(u64::from_be_bytes(r.array()?)),
        wire::I8 => Head::I8(r.byte()? as i8),
        wire::I16 => Head::I16(i16::from_be_bytes(r.array()?)),
        wire::I32 => Head::I32(i32::from_be_bytes(r.array()?)),
        wire::I64 => Head::I64(i64::from_be_bytes(r.array()?)),
        wire::FIXEXT4 => {
            let ty = r.byte()?;
            let id = r.u32()?;
            if ty == wire::EXT_CHAR {
                return char::from_u32(id)
                    .map(Head::Char)
                    .ok_or_else(|| malformed(format!("{id:#x} is not a char")));
            }
            if ty != wire::EXT_SHAPE {
                return Err(malformed(format!("unknown extension type {ty}")));
            }
            if shape(shapes, id)?.kind.is_container() {
                return Err(malformed("a struct or variant reference outside its array"));
            }
            Head::Variant { shape: id, len: 0 }
        }
        wire::FIXEXT16 => {
            let ty = r.byte()?;
            let bytes: [u8; 16] = r.array()?;
            match ty {
                wire::EXT_U128 => Head::U128(u128::from_be_bytes(bytes)),
                wire::EXT_I128 => Head::I128(i128::from_be_bytes(bytes)),
                other => return Err(malformed(format!("unknown extension type {other}"))),
            }
        }
        wire::STR8 => {
            let len = usize::from(r.byte()?);
            Head::Str(r.str_of_len(len)?)
        }
        wire::STR16 => {
            let len = usize::from(r.u16()?);
            Head::Str(r.str_of_len(len)?)
        }
        wire::STR32 => {
            let len = r.u32()? as usize;
            Head::Str(r.str_of_len(len)?)
        }
        wire::ARRAY16 => {
            let len = usize::from(r.u16()?);
            read_array(r, shapes, len)?
        }
        wire::ARRAY32 => {
            let len = r.u32()? as usize;
            read_array(r, shapes, len)?
        }
        wire::MAP16 => Head::Map(usize::from(r.u16()?)),
        wire::MAP32 => Head::Map(r.u32()? as usize),
        0xe0..=0xff => Head::I8(marker as i8),
        other => {
            return Err(malformed(format!(
                "the byte {other:#04x} starts no value this format writes"
            )))
        }
    })
}

/// An array of `len` elements: a struct, a container variant or `Some` when
/// it starts with their marker, otherwise a plain sequence.
fn read_array<'de>(
    r: &mut Reader<'de>,
    shapes: &[Shape<'de>],
    len: usize,
) -> std::result::Result<Head<'de>, ReadError> {
    if len == 0 {
        return Ok(Head::Seq(0));
    }
    match (r.peek_at(0), r.peek_at(1)) {
        (Some(wire::FIXEXT4), Some(wire::EXT_SHAPE)) => {
            let start = r.pos;
            r.take(2)?;
            let id = r.u32()?;
            let entry = shape(shapes, id)?;
            let values = len - 1;
            match entry.kind {
                // A sequence whose first element is a unit variant.
                ShapeKind::UnitVariant => {
                    r.pos = start;
                    Ok(Head::Seq(len))
                }
                ShapeKind::Struct | ShapeKind::StructVariant if entry.fields.len() != values => {
                    Err(malformed(format!(
                        "{entry} has {} fields in the schema but {values} values",
                        entry.fields.len()
                    )))
                }
                ShapeKind::NewtypeVariant if values != 1 => {
                    Err(malformed(format!("{entry} with {values} values")))
                }
                ShapeKind::Struct => Ok(Head::Struct {
                    shape: id,
                    len: values,
                }),
                _ => Ok(Head::Variant {
                    shape: id,
                    len: values,
                }),
            }
        }
        (Some(wire::FIXEXT1), Some(wire::EXT_SOME)) => {
            if len != 2 {
                return Err(malformed(format!("a Some marker in an array of {len}")));
            }
            r.take(3)?;
            Ok(Head::Some)
        }
        _ => Ok(Head::Seq(len)),
    }
}

// ---------------------------------------------------------------------------
// The decoder state
// ---------------------------------------------------------------------------

/// Whether a received shape can be presented positionally to a target
/// whose field list is at (address, length).
#[derive(Clone, Copy, Default)]
struct Verdict {
    fields: usize,
    len: usize,
    positional: bool,
}

/// At most this many distinct dropped values are listed and logged.
const MAX_DROPPED: usize = 100;

/// The decoder over one payload.
pub(crate) struct Decoder<'de> {
    r: Reader<'de>,
    shapes: Vec<Shape<'de>>,
    /// The root struct's fields with their former names.
    renames: Vec<(&'de str, Vec<&'de str>)>,
    verdicts: Vec<Verdict>,
    depth: usize,
    /// The name the path starts with: this build's root type.
    root: &'de str,
    /// Paths of received values this build did not take.
    pub dropped: Vec<String>,
    dropped_seen: HashSet<(u32, u32)>,
}

impl<'de> Decoder<'de> {
    pub(crate) fn new(payload: &'de [u8], schema: Schema<'de>, root: &'de str) -> Self {
        let Schema { shapes, renames } = schema;
        let verdicts = vec![Verdict::default(); shapes.len()];
        Decoder {
            r: Reader::new(payload),
            shapes,
            renames,
            verdicts,
            depth: 0,
            root,
            dropped: Vec::new(),
            dropped_seen: HashSet::new(),
        }
    }

    /// Decodes one value: the whole payload.
    pub(crate) fn decode<T: de::DeserializeOwned>(&mut self) -> Result<T> {
        let root = Frame {
            parent: None,
            seg: Seg::Root,
        };
        let value = T::deserialize(Value {
            d: self,
            at: &root,
            head: None,
        })?;
        if self.r.remaining() != 0 {
            let mut e = DeError::from(malformed(format!(
                "{} bytes follow the state's value",
                self.r.remaining()
            )));
            e.0 .1 = Some(self.root.to_owned());
            return Err(e);
        }
        Ok(value)
    }

    fn render(&self, at: &Frame<'_, 'de>) -> String {
        let mut segs = Vec::new();
        let mut frame = Some(at);
        while let Some(f) = frame {
            segs.push(f.seg);
            frame = f.parent;
        }
        let mut out = self.root.to_owned();
        for seg in segs.iter().rev() {
            match seg {
                Seg::Root => {}
                Seg::Field { name, .. } => {
                    out.push('.');
                    out.push_str(name);
                }
                Seg::Index(i) => {
                    let _ = write!(out, "[{i}]");
                }
                Seg::Key(raw) => {
                    let _ = write!(out, "[{}]", self.render_key(raw));
                }
                Seg::Variant(v) => {
                    let _ = write!(out, "::{v}");
                }
            }
        }
        out
    }

    fn render_key(&self, raw: &'de [u8]) -> String {
        let mut r = Reader::new(raw);
        match read_head(&mut r, &self.shapes) {
            Ok(Head::Str(s)) => format!("{s:?}"),
            Ok(Head::Bool(b)) => b.to_string(),
            Ok(Head::U8(x)) => x.to_string(),
            Ok(Head::U16(x)) => x.to_string(),
            Ok(Head::U32(x)) => x.to_string(),
            Ok(Head::U64(x)) => x.to_string(),
            Ok(Head::U128(x)) => x.to_string(),
            Ok(Head::I8(x)) => x.to_string(),
            Ok(Head::I16(x)) => x.to_string(),
            Ok(Head::I32(x)) => x.to_string(),
            Ok(Head::I64(x)) => x.to_string(),
            Ok(Head::I128(x)) => x.to_string(),
            Ok(Head::Variant { shape: id, len: 0 }) => {
                let s = &self.shapes[id as usize];
                format!("{}::{}", s.name, s.variant)
            }
            _ => "..".to_owned(),
        }
    }

    /// `e` with the path of `at`, unless it has one already.
    fn locate(&self, at: &Frame<'_, 'de>, mut e: DeError) -> DeError {
        if e.0 .1.is_none() {
            e.0 .1 = Some(self.render(at));
        }
        e
    }

    fn fail(&self, at: &Frame<'_, 'de>, problem: Problem) -> DeError {
        let mut e = DeError::new(problem);
        e.0 .1 = Some(self.render(at));
        e
    }

    fn describe(&self, head: &Head<'de>) -> String {
        match head {
            Head::Nil => "nil (a unit, a unit struct or None)".to_owned(),
            Head::Bool(_) => "a bool".to_owned(),
            Head::U8(_) => "u8".to_owned(),
            Head::U16(_) => "u16".to_owned(),
            Head::U32(_) => "u32".to_owned(),
            Head::U64(_) => "u64".to_owned(),
            Head::U128(_) => "u128".to_owned(),
            Head::I8(_) => "i8".to_owned(),
            Head::I16(_) => "i16".to_owned(),
            Head::I32(_) => "i32".to_owned(),
            Head::I64(_) => "i64".to_owned(),
            Head::I128(_) => "i128".to_owned(),
            Head::F32(_) => "f32".to_owned(),
            Head::F64(_) => "f64".to_owned(),
            Head::Char(_) => "a char".to_owned(),
            Head::Str(_) => "a string".to_owned(),
            Head::Bin(_) => "bytes".to_owned(),
            Head::Seq(n) => format!("a sequence of {n}"),
            Head::Map(n) => format!("a map of {n}"),
            Head::Struct { shape, .. } | Head::Variant { shape, .. } => {
                self.shapes[*shape as usize].to_string()
            }
            Head::Some => "an Option (Some)".to_owned(),
        }
    }

    fn type_error(
        &self,
        at: &Frame<'_, 'de>,
        expected: impl Into<String>,
        head: &Head<'de>,
    ) -> DeError {
        self.fail(
            at,
            Problem::Type {
                expected: expected.into(),
                received: self.describe(head),
            },
        )
    }

    #[inline]
    fn head(&mut self, at: &Frame<'_, 'de>) -> Result<Head<'de>> {
        read_head(&mut self.r, &self.shapes).map_err(|e| self.fail(at, Problem::Read(e)))
    }

    #[inline]
    fn enter(&mut self, at: &Frame<'_, 'de>) -> Result<()> {
        if self.depth >= MAX_STATE_DEPTH {
            return Err(self.fail(at, Problem::TooDeep));
        }
        self.depth += 1;
        Ok(())
    }

    #[inline]
    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// Whether `shape` can be presented to `fields` positionally.
    #[inline]
    fn positional(&mut self, id: u32, fields: &'static [&'static str]) -> bool {
        let key = (fields.as_ptr() as usize, fields.len());
        let verdict = &mut self.verdicts[id as usize];
        if verdict.fields == key.0 && verdict.len == key.1 && key.0 != 0 {
            return verdict.positional;
        }
        let positional = self.shapes[id as usize].fields.iter().eq(fields.iter());
        self.verdicts[id as usize] = Verdict {
            fields: key.0,
            len: key.1,
            positional,
        };
        positional
    }

    /// The name to present for the root's received field `name`: itself,
    /// or, when this build has no such field, the former name the sender
    /// listed for it that this build has (a rollback across a rename).
    fn root_field_name(&self, name: &'de str, target: &[&str]) -> &'de str {
        if target.contains(&name) {
            return name;
        }
        self.renames
            .iter()
            .find(|(field, _)| *field == name)
            .and_then(|(_, aliases)| aliases.iter().find(|a| target.contains(a)))
            .copied()
            .unwrap_or(name)
    }

    /// Records (and logs, once) a received value this build does not take.
    fn dropped(&mut self, at: &Frame<'_, 'de>, what: &str) {
        if let Seg::Field { shape, index, .. } = at.seg {
            if !self.dropped_seen.insert((shape, index)) {
                return;
            }
        }
        if self.dropped.len() >= MAX_DROPPED {
            return;
        }
        let path = self.render(at);
        if self.dropped.contains(&path) {
            return;
        }
        tracing::info!(
            path = %path,
            "handover state: `{path}` was received but this build {what}; it is dropped"
        );
        self.dropped.push(path);
    }

    /// Skips `count` values (and everything inside them), without
    /// recursion, within the depth limit.
    fn skip(&mut self, at: &Frame<'_, 'de>, count: u64) -> Result<()> {
        let mut stack: Vec<u64> = Vec::new();
        let mut pending = count;
        loop {
            while pending == 0 {
                match stack.pop() {
                    Some(outer) => pending = outer,
                    None => return Ok(()),
                }
            }
            pending -= 1;
            let children = self
                .skip_one()
                .map_err(|e| self.fail(at, Problem::Read(e)))?;
            if children > 0 {
                if self.depth + stack.len() + 1 > MAX_STATE_DEPTH {
                    return Err(self.fail(at, Problem::TooDeep));
                }
                stack.push(pending);
                pending = children;
            }
        }
    }

    /// Skips one value's head and scalar content; returns how many values
    /// it contains.
    fn skip_one(&mut self) -> std::result::Result<u64, ReadError> {
        let r = &mut self.r;
        let marker = r.byte()?;
        let skip = |r: &mut Reader<'de>, n: usize| r.take(n).map(|_| 0);
        match marker {
            0x00..=0x7f | 0xe0..=0xff | wire::NIL | wire::FALSE | wire::TRUE => Ok(0),
            0x80..=0x8f => Ok(2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => Ok(u64::from(marker & 0x0f)),
            0xa0..=0xbf => skip(r, usize::from(marker & 0x1f)),
            wire::BIN8 | wire::STR8 => {
                let n = usize::from(r.byte()?);
                skip(r, n)
            }
            wire::BIN16 | wire::STR16 => {
                let n = usize::from(r.u16()?);
                skip(r, n)
            }
            wire::BIN32 | wire::STR32 => {
                let n = r.u32()? as usize;
                skip(r, n)
            }
            wire::EXT8 => {
                let n = usize::from(r.byte()?);
                skip(r, n + 1)
            }
            wire::EXT16 => {
                let n = usize::from(r.u16()?);
                skip(r, n + 1)
            }
            wire::EXT32 => {
                let n = r.u32()? as usize;
                skip(r, n.saturating_add(1))
            }
            wire::U8 | wire::I8 => skip(r, 1),
            wire::U16 | wire::I16 => skip(r, 2),
            wire::U32 | wire::I32 | wire::F32 => skip(r, 4),
            wire::U64 | wire::I64 | wire::F64 => skip(r, 8),
            wire::FIXEXT1 => skip(r, 2),
            wire::FIXEXT2 => skip(r, 3),
            wire::FIXEXT4 => skip(r, 5),
            wire::FIXEXT8 => skip(r, 9),
            wire::FIXEXT16 => skip(r, 17),
            wire::ARRAY16 => Ok(u64::from(r.u16()?)),
            wire::ARRAY32 => Ok(u64::from(r.u32()?)),
            wire::MAP16 => Ok(2 * u64::from(r.u16()?)),
            wire::MAP32 => Ok(2 * u64::from(r.u32()?)),
            other => Err(malformed(format!(
                "the byte {other:#04x} starts no value this format writes"
            ))),
        }
    }

    /// The number of values that follow a head already read.
    fn contained(head: &Head<'de>) -> u64 {
        match *head {
            Head::Seq(n) | Head::Struct { len: n, .. } | Head::Variant { len: n, .. } => n as u64,
            Head::Map(n) => 2 * n as u64,
            Head::Some => 1,
            _ => 0,
        }
    }
}

// ---------------------------------------------------------------------------
// The value deserializer
// ---------------------------------------------------------------------------

/// One value at a path; its head is read on first use (or was read
/// already).
struct Value<'a, 'p, 'de> {
    d: &'a mut Decoder<'de>,
    at: &'p Frame<'p, 'de>,
    head: Option<Head<'de>>,
}

impl<'de> Value<'_, '_, 'de> {
    #[inline]
    fn take_head(&mut self) -> Result<Head<'de>> {
        match self.head.take() {
            Some(head) => Ok(head),
            None => self.d.head(self.at),
        }
    }

    fn mismatch<T>(&self, expected: impl Into<String>, head: &Head<'de>) -> Result<T> {
        Err(self.d.type_error(self.at, expected, head))
    }

    /// Visits a plain sequence of `len` elements; `trailing` says what to
    /// do with elements the visitor did not take.
    fn seq<V: Visitor<'de>>(self, visitor: V, len: usize, trailing: Trailing) -> Result<V::Value> {
        let Value { d, at, .. } = self;
        d.enter(at)?;
        let mut elements = Elements {
            d,
            at,
            index: 0,
            len,
        };
        let value = visitor
            .visit_seq(&mut elements)
            .map_err(|e| elements.d.locate(at, e))?;
        elements.finish(trailing)?;
        elements.d.leave();
        Ok(value)
    }

    fn bytes_as_seq<V: Visitor<'de>>(self, visitor: V, bytes: &'de [u8]) -> Result<V::Value> {
        let Value { d, at, .. } = self;
        let mut elements = BinElements {
            d,
            at,
            bytes,
            index: 0,
        };
        let value = visitor
            .visit_seq(&mut elements)
            .map_err(|e| elements.d.locate(at, e))?;
        if elements.index != bytes.len() {
            return Err(elements.d.fail(
                at,
                Problem::Other(format!(
                    "received {} bytes, this build takes only {}",
                    bytes.len(),
                    elements.index
                )),
            ));
        }
        Ok(value)
    }

    fn map<V: Visitor<'de>>(self, visitor: V, len: usize) -> Result<V::Value> {
        let Value { d, at, .. } = self;
        d.enter(at)?;
        let mut entries = Entries {
            d,
            at,
            index: 0,
            len,
            key: &[],
        };
        let value = visitor
            .visit_map(&mut entries)
            .map_err(|e| entries.d.locate(at, e))?;
        let rest = 2 * (entries.len - entries.index) as u64;
        entries.d.skip(at, rest)?;
        entries.d.leave();
        Ok(value)
    }

    /// Visits a struct (or struct variant) of shape `id`: positionally when
    /// its fields are the target's, otherwise as a map by name.
    fn fields<V: Visitor<'de>>(
        self,
        visitor: V,
        id: u32,
        len: usize,
        target: Option<&'static [&'static str]>,
    ) -> Result<V::Value> {
        let Value { d, at, .. } = self;
        d.enter(at)?;
        let positional = target.is_some_and(|fields| d.positional(id, fields));
        let mut fields = Fields {
            d,
            at,
            shape: id,
            index: 0,
            len,
            target,
        };
        let value = if positional {
            visitor.visit_seq(&mut fields)
        } else {
            visitor.visit_map(&mut fields)
        }
        .map_err(|e| fields.d.locate(at, e))?;
        fields.finish()?;
        fields.d.leave();
        Ok(value)
    }
}

/// What to do with sequence elements the visitor left.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trailing {
    /// An error: a tuple's or a sequence's length is part of its type.
    Refuse,
    /// Dropped and logged: a tuple struct lost trailing fields.
    Drop,
}

macro_rules! scalar {
    ($method:ident, $visit:ident, $t:ty, $expected:literal, [$($ok:ident),*]) => {
        #[inline]
        fn $method<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
            let head = self.take_head()?;
            let result = match head {
                $(Head::$ok(x) => visitor.$visit(x as $t),)*
                other => return self.mismatch($expected, &other),
            };
            result.map_err(|e| self.d.locate(self.at, e))
        }
    };
}

impl<'de> de::Deserializer<'de> for Value<'_, '_, 'de> {
    type Error = DeError;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn deserialize_any<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        let head = self.take_head()?;
        let result = match head {
            Head::Nil => visitor.visit_unit(),
            Head::Bool(b) => visitor.visit_bool(b),
            Head::U8(x) => visitor.visit_u8(x),
            Head::U16(x) => visitor.visit_u16(x),
            Head::U32(x) => visitor.visit_u32(x),
            Head::U64(x) => visitor.visit_u64(x),
            Head::U128(x) => visitor.visit_u128(x),
            Head::I8(x) => visitor.visit_i8(x),
            Head::I16(x) => visitor.visit_i16(x),
            Head::I32(x) => visitor.visit_i32(x),
            Head::I64(x) => visitor.visit_i64(x),
            Head::I128(x) => visitor.visit_i128(x),
            Head::F32(x) => visitor.visit_f32(x),
            Head::F64(x) => visitor.visit_f64(x),
            Head::Char(c) => visitor.visit_char(c),
            Head::Str(s) => visitor.visit_borrowed_str(s),
            Head::Bin(b) => visitor.visit_borrowed_bytes(b),
            Head::Seq(n) => return self.seq(visitor, n, Trailing::Refuse),
            Head::Map(n) => return self.map(visitor, n),
            Head::Struct { shape, len } => return self.fields(visitor, shape, len, None),
            Head::Variant { shape, len } => {
                let entry = &self.d.shapes[shape as usize];
                if entry.kind == ShapeKind::UnitVariant {
                    visitor.visit_borrowed_str(entry.variant)
                } else {
                    let Value { d, at, .. } = self;
                    d.enter(at)?;
                    let value = visitor
                        .visit_map(VariantAsMap {
                            d: &mut *d,
                            at,
                            shape,
                            len,
                            done: false,
                        })
                        .map_err(|e| d.locate(at, e))?;
                    d.leave();
                    return Ok(value);
                }
            }
            Head::Some => return self.some(visitor),
        };
        result.map_err(|e| self.d.locate(self.at, e))
    }

    scalar!(deserialize_bool, visit_bool, bool, "a bool", [Bool]);
    scalar!(deserialize_u8, visit_u8, u8, "u8", [U8]);
    scalar!(deserialize_u16, visit_u16, u16, "u16", [U8, U16]);
    scalar!(deserialize_u32, visit_u32, u32, "u32", [U8, U16, U32]);
    scalar!(deserialize_u64, visit_u64, u64, "u64", [U8, U16, U32, U64]);
    scalar!(
        deserialize_u128,
        visit_u128,
        u128,
        "u128",
        [U8, U16, U32, U64, U128]
    );
    scalar!(deserialize_i8, visit_i8, i8, "i8", [I8]);
    scalar!(deserialize_i16, visit_i16, i16, "i16", [I8, I16, U8]);
    scalar!(
        deserialize_i32,
        visit_i32,
        i32,
        "i32",
        [I8, I16, I32, U8, U16]
    );
    scalar!(
        deserialize_i64,
        visit_i64,
        i64,
        "i64",
        [I8, I16, I32, I64, U8, U16, U32]
    );
    scalar!(
        deserialize_i128,
        visit_i128,
        i128,
        "i128",
        [I8, I16, I32, I64, I128, U8, U16, U32, U64]
    );
    scalar!(
        deserialize_f32,
        visit_f32,
        f32,
        "f32",
        [F32, U8, U16, I8, I16]
    );
    scalar!(
        deserialize_f64,
        visit_f64,
        f64,
        "f64",
        [F64, F32, U8, U16, U32, I8, I16, I32]
    );

    fn deserialize_char<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        match self.take_head()? {
            Head::Char(c) => visitor.visit_char(c).map_err(|e| self.d.locate(self.at, e)),
            other => self.mismatch("a char", &other),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        match self.take_head()? {
            Head::Str(s) => visitor
                .visit_borrowed_str(s)
                .map_err(|e| self.d.locate(self.at, e)),
            // `char` -> `String`.
            Head::Char(c) => visitor.visit_char(c).map_err(|e| self.d.locate(self.at, e)),
            other => self.mismatch("a string", &other),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        match self.take_head()? {
            Head::Bin(b) => visitor
                .visit_borrowed_bytes(b)
                .map_err(|e| self.d.locate(self.at, e)),
            Head::Seq(n) => self.seq(visitor, n, Trailing::Refuse),
            other => self.mismatch("bytes", &other),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        match self.take_head()? {
            Head::Nil => visitor.visit_none().map_err(|e| self.d.locate(self.at, e)),
            Head::Some => self.some(visitor),
            // `T` received where this build has `Option<T>`.
            other => {
                let at = self.at;
                let d = self.d;
                visitor
                    .visit_some(Value {
                        d: &mut *d,
                        at,
                        head: Some(other),
                    })
                    .map_err(|e| d.locate(at, e))
            }
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        match self.take_head()? {
            Head::Nil => visitor.visit_unit().map_err(|e| self.d.locate(self.at, e)),
            other => self.mismatch("a unit", &other),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        match self.take_head()? {
            Head::Nil => visitor.visit_unit().map_err(|e| self.d.locate(self.at, e)),
            other => self.mismatch(format!("unit struct `{name}`"), &other),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        let at = self.at;
        let d = self.d;
        visitor
            .visit_newtype_struct(Value {
                d: &mut *d,
                at,
                head: self.head,
            })
            .map_err(|e| d.locate(at, e))
    }

    fn deserialize_seq<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        match self.take_head()? {
            Head::Seq(n) => self.seq(visitor, n, Trailing::Refuse),
            Head::Bin(b) => self.bytes_as_seq(visitor, b),
            other => self.mismatch("a sequence", &other),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(mut self, len: usize, visitor: V) -> Result<V::Value> {
        match self.take_head()? {
            Head::Seq(n) => self.seq(visitor, n, Trailing::Refuse),
            other => self.mismatch(format!("a tuple of {len}"), &other),
        }
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        match self.take_head()? {
            Head::Seq(n) => self.seq(visitor, n, Trailing::Drop),
            other => self.mismatch(format!("tuple struct `{name}` of {len}"), &other),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        match self.take_head()? {
            Head::Map(n) => self.map(visitor, n),
            Head::Struct { shape, len } => self.fields(visitor, shape, len, None),
            other => self.mismatch("a map", &other),
        }
    }

    #[inline]
    fn deserialize_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.take_head()? {
            Head::Struct { shape, len } => self.fields(visitor, shape, len, Some(fields)),
            // A struct written as a map (`#[serde(flatten)]`, hand-written
            // impls).
            Head::Map(n) => self.map(visitor, n),
            other => self.mismatch(format!("struct `{name}`"), &other),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.take_head()? {
            Head::Variant { shape, len } => {
                let Value { d, at, .. } = self;
                let container = d.shapes[shape as usize].kind.is_container();
                if container {
                    d.enter(at)?;
                }
                let value = visitor
                    .visit_enum(Enum {
                        d: &mut *d,
                        at,
                        shape,
                        len,
                    })
                    .map_err(|e| d.locate(at, e))?;
                if container {
                    d.leave();
                }
                Ok(value)
            }
            other => self.mismatch(format!("enum `{name}`"), &other),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        let result = match self.take_head()? {
            Head::Str(s) => visitor.visit_borrowed_str(s),
            Head::U8(x) => visitor.visit_u64(u64::from(x)),
            Head::U16(x) => visitor.visit_u64(u64::from(x)),
            Head::U32(x) => visitor.visit_u64(u64::from(x)),
            Head::U64(x) => visitor.visit_u64(x),
            other => return self.mismatch("a field or variant name", &other),
        };
        result.map_err(|e| self.d.locate(self.at, e))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        if matches!(self.at.seg, Seg::Field { .. } | Seg::Key(_)) {
            self.d.dropped(self.at, "has no such field");
        }
        let head = self.take_head()?;
        let contained = Decoder::contained(&head);
        if contained > 0 {
            self.d.enter(self.at)?;
            self.d.skip(self.at, contained)?;
            self.d.leave();
        }
        visitor.visit_unit()
    }
}

impl<'de> Value<'_, '_, 'de> {
    /// `Some`: the value follows.
    fn some<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let Value { d, at, .. } = self;
        d.enter(at)?;
        let value = visitor
            .visit_some(Value {
                d: &mut *d,
                at,
                head: None,
            })
            .map_err(|e| d.locate(at, e))?;
        d.leave();
        Ok(value)
    }
}

// ---------------------------------------------------------------------------
// Accessors
// ---------------------------------------------------------------------------

/// The elements of a plain sequence.
struct Elements<'a, 'p, 'de> {
    d: &'a mut Decoder<'de>,
    at: &'p Frame<'p, 'de>,
    index: usize,
    len: usize,
}

impl Elements<'_, '_, '_> {
    fn finish(&mut self, trailing: Trailing) -> Result<()> {
        let rest = self.len - self.index;
        if rest == 0 {
            return Ok(());
        }
        match trailing {
            Trailing::Refuse => Err(self.d.fail(
                self.at,
                Problem::Other(format!(
                    "received {} elements, this build takes only {}",
                    self.len, self.index
                )),
            )),
            Trailing::Drop => {
                for index in self.index..self.len {
                    let child = self.at.child(Seg::Index(index));
                    self.d.dropped(&child, "has no such tuple field");
                }
                self.d.skip(self.at, rest as u64)
            }
        }
    }
}

impl<'de> de::SeqAccess<'de> for Elements<'_, '_, 'de> {
    type Error = DeError;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if self.index == self.len {
            return Ok(None);
        }
        let child = self.at.child(Seg::Index(self.index));
        self.index += 1;
        seed.deserialize(Value {
            d: &mut *self.d,
            at: &child,
            head: None,
        })
        .map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some((self.len - self.index).min(self.d.r.remaining()))
    }
}

/// A `bin` read as a sequence of `u8` values.
struct BinElements<'a, 'p, 'de> {
    d: &'a mut Decoder<'de>,
    at: &'p Frame<'p, 'de>,
    bytes: &'de [u8],
    index: usize,
}

impl<'de> de::SeqAccess<'de> for BinElements<'_, '_, 'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        let Some(&byte) = self.bytes.get(self.index) else {
            return Ok(None);
        };
        let child = self.at.child(Seg::Index(self.index));
        self.index += 1;
        seed.deserialize(Value {
            d: &mut *self.d,
            at: &child,
            head: Some(Head::U8(byte)),
        })
        .map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.bytes.len() - self.index)
    }
}

/// The entries of a map.
struct Entries<'a, 'p, 'de> {
    d: &'a mut Decoder<'de>,
    at: &'p Frame<'p, 'de>,
    index: usize,
    len: usize,
    /// The encoded bytes of the last key, for the path of its value.
    key: &'de [u8],
}

impl<'de> de::MapAccess<'de> for Entries<'_, '_, 'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.index == self.len {
            return Ok(None);
        }
        let start = self.d.r.pos;
        let child = self.at.child(Seg::Index(self.index));
        let key = seed.deserialize(Value {
            d: &mut *self.d,
            at: &child,
            head: None,
        })?;
        let buf = self.d.r.buf;
        self.key = &buf[start..self.d.r.pos];
        Ok(Some(key))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value> {
        let child = self.at.child(Seg::Key(self.key));
        self.index += 1;
        seed.deserialize(Value {
            d: &mut *self.d,
            at: &child,
            head: None,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some((self.len - self.index).min(self.d.r.remaining() / 2))
    }
}

/// The fields of a struct or struct variant: a sequence (positional) or a
/// map keyed by the received names.
struct Fields<'a, 'p, 'de> {
    d: &'a mut Decoder<'de>,
    at: &'p Frame<'p, 'de>,
    shape: u32,
    index: usize,
    len: usize,
    /// The target's field names, when known.
    target: Option<&'static [&'static str]>,
}

impl<'de> Fields<'_, '_, 'de> {
    #[inline]
    fn name(&self) -> &'de str {
        self.d.shapes[self.shape as usize].fields[self.index]
    }

    #[inline]
    fn value<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value> {
        let child = self.at.child(Seg::Field {
            shape: self.shape,
            index: self.index as u32,
            name: self.name(),
        });
        self.index += 1;
        seed.deserialize(Value {
            d: &mut *self.d,
            at: &child,
            head: None,
        })
    }

    /// Drops the fields the visitor did not take.
    fn finish(&mut self) -> Result<()> {
        while self.index < self.len {
            let child = self.at.child(Seg::Field {
                shape: self.shape,
                index: self.index as u32,
                name: self.name(),
            });
            self.d.dropped(&child, "has no such field");
            self.d.skip(&child, 1)?;
            self.index += 1;
        }
        Ok(())
    }
}

impl<'de> de::SeqAccess<'de> for Fields<'_, '_, 'de> {
    type Error = DeError;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if self.index == self.len {
            return Ok(None);
        }
        self.value(seed).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.len - self.index)
    }
}

impl<'de> de::MapAccess<'de> for Fields<'_, '_, 'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.index == self.len {
            return Ok(None);
        }
        let mut name = self.name();
        if let (Seg::Root, Some(target)) = (self.at.seg, self.target) {
            name = self.d.root_field_name(name, target);
        }
        seed.deserialize(BorrowedStrDeserializer::new(name))
            .map(Some)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value> {
        if self.index == self.len {
            return Err(DeError::new(Problem::Other(
                "a value was asked for after the last field".to_owned(),
            )));
        }
        self.value(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.len - self.index)
    }
}

/// An enum value.
struct Enum<'a, 'p, 'de> {
    d: &'a mut Decoder<'de>,
    at: &'p Frame<'p, 'de>,
    shape: u32,
    len: usize,
}

impl<'a, 'p, 'de> Enum<'a, 'p, 'de> {
    fn entry(&self) -> &Shape<'de> {
        &self.d.shapes[self.shape as usize]
    }

    fn expect(&self, kind: ShapeKind, what: &str) -> Result<()> {
        let entry = self.entry();
        if entry.kind == kind {
            return Ok(());
        }
        Err(self.d.fail(
            self.at,
            Problem::Type {
                expected: format!("a {what} variant `{}::{}`", entry.name, entry.variant),
                received: entry.to_string(),
            },
        ))
    }
}

impl<'a, 'p, 'de> de::EnumAccess<'de> for Enum<'a, 'p, 'de> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self)> {
        let name = self.entry().variant;
        let value = seed.deserialize(BorrowedStrDeserializer::<DeError>::new(name))?;
        Ok((value, self))
    }
}

impl<'de> de::VariantAccess<'de> for Enum<'_, '_, 'de> {
    type Error = DeError;

    fn unit_variant(self) -> Result<()> {
        self.expect(ShapeKind::UnitVariant, "unit")
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        self.expect(ShapeKind::NewtypeVariant, "newtype")?;
        let child = self.at.child(Seg::Variant(self.entry().variant));
        seed.deserialize(Value {
            d: self.d,
            at: &child,
            head: None,
        })
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value> {
        self.expect(ShapeKind::TupleVariant, "tuple")?;
        let child = self.at.child(Seg::Variant(self.entry().variant));
        let mut elements = Elements {
            d: self.d,
            at: &child,
            index: 0,
            len: self.len,
        };
        let value = visitor
            .visit_seq(&mut elements)
            .map_err(|e| elements.d.locate(&child, e))?;
        elements.finish(Trailing::Refuse)?;
        Ok(value)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.expect(ShapeKind::StructVariant, "struct")?;
        let child = self.at.child(Seg::Variant(self.entry().variant));
        let positional = self.d.positional(self.shape, fields);
        let mut access = Fields {
            d: self.d,
            at: &child,
            shape: self.shape,
            index: 0,
            len: self.len,
            target: Some(fields),
        };
        let value = if positional {
            visitor.visit_seq(&mut access)
        } else {
            visitor.visit_map(&mut access)
        }
        .map_err(|e| access.d.locate(&child, e))?;
        access.finish()?;
        Ok(value)
    }
}

/// A container variant presented to `deserialize_any` as the one-entry map
/// `{variant: payload}` (serde's externally tagged form).
struct VariantAsMap<'a, 'p, 'de> {
    d: &'a mut Decoder<'de>,
    at: &'p Frame<'p, 'de>,
    shape: u32,
    len: usize,
    done: bool,
}

impl<'de> de::MapAccess<'de> for VariantAsMap<'_, '_, 'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.done {
            return Ok(None);
        }
        let name = self.d.shapes[self.shape as usize].variant;
        seed.deserialize(BorrowedStrDeserializer::new(name))
            .map(Some)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value> {
        self.done = true;
        let variant = self.d.shapes[self.shape as usize].variant;
        let child = self.at.child(Seg::Variant(variant));
        seed.deserialize(Payload {
            d: &mut *self.d,
            at: &child,
            shape: self.shape,
            len: self.len,
        })
    }
}

/// The payload of a container variant, for `deserialize_any`.
struct Payload<'a, 'p, 'de> {
    d: &'a mut Decoder<'de>,
    at: &'p Frame<'p, 'de>,
    shape: u32,
    len: usize,
}

impl<'de> de::Deserializer<'de> for Payload<'_, '_, 'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let value = Value {
            d: self.d,
            at: self.at,
            head: None,
        };
        match value.d.shapes[self.shape as usize].kind {
            ShapeKind::NewtypeVariant => value.deserialize_any(visitor),
            ShapeKind::TupleVariant => {
                let Value { d, at, .. } = value;
                let mut elements = Elements {
                    d,
                    at,
                    index: 0,
                    len: self.len,
                };
                let out = visitor.visit_seq(&mut elements)?;
                elements.finish(Trailing::Refuse)?;
                Ok(out)
            }
            _ => {
                let Value { d, at, .. } = value;
                let mut fields = Fields {
                    d,
                    at,
                    shape: self.shape,
                    index: 0,
                    len: self.len,
                    target: None,
                };
                let out = visitor.visit_map(&mut fields)?;
                fields.finish()?;
                Ok(out)
            }
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_stay_small() {
        assert_eq!(std::mem::size_of::<DeError>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn any_byte_sequence_reads_without_panicking() {
        // Every 3-byte input over a few interesting bytes.
        let interesting = [
            0x00, 0x7f, 0x80, 0x81, 0x90, 0x91, 0x92, 0xa1, 0xc0, 0xc1, 0xc4, 0xd4, 0xd6, 0xd8,
            0xdc, 0xdd, 0xde, 0xdf, 0xff, 0x01, 0x02,
        ];
        for &a in &interesting {
            for &b in &interesting {
                for &c in &interesting {
                    let input = [a, b, c];
                    let mut d = Decoder::new(&input, Schema::default(), "T");
                    let _ = d.decode::<serde::de::IgnoredAny>();
                    let mut d = Decoder::new(&input, Schema::default(), "T");
                    let _ = d.decode::<Option<Vec<(u8, String)>>>();
                }
            }
        }
    }
}
