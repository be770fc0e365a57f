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

use super::wire::{self, malformed, Marker, ReadError, Reader, Schema, Shape, ShapeKind};
use super::MAX_STATE_DEPTH;

mod access;
mod error;
mod path;
mod value;

use access::*;
pub(crate) use error::*;
use path::*;
use value::*;

// ---------------------------------------------------------------------------
// The decoder state
// ---------------------------------------------------------------------------

/// Whether a received shape can be presented positionally to a target
/// whose field list is at (address, length): that key, and the verdict.
type Verdict = ((usize, usize), bool);

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
        let value = T::deserialize(self.value(&root))?;
        let rest = self.r.remaining();
        if rest != 0 {
            let e = malformed(format!("{rest} bytes follow the state's value"));
            return Err(self.fail(&root, Problem::Read(e)));
        }
        Ok(value)
    }

    fn render(&self, at: &Frame<'_, 'de>) -> String {
        let mut out = match at.parent {
            Some(parent) => self.render(parent),
            None => self.root.to_owned(),
        };
        let _ = match at.seg {
            Seg::Root => Ok(()),
            Seg::Field { name, .. } => write!(out, ".{name}"),
            Seg::Index(i) => write!(out, "[{i}]"),
            Seg::Key(raw) => write!(out, "[{}]", self.render_key(raw)),
            Seg::Variant(v) => write!(out, "::{v}"),
        };
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
        self.locate(at, DeError::new(problem))
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

    /// Runs `visit` one level deeper (refused past [`MAX_STATE_DEPTH`]),
    /// its errors located at `at`.
    #[inline]
    fn nested<T>(
        &mut self,
        at: &Frame<'_, 'de>,
        visit: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        if self.depth >= MAX_STATE_DEPTH {
            return Err(self.fail(at, Problem::TooDeep));
        }
        self.depth += 1;
        let value = visit(self).map_err(|e| self.locate(at, e))?;
        self.depth -= 1;
        Ok(value)
    }

    /// The value at `at`, its head not read yet.
    #[inline]
    fn value<'a, 'p>(&'a mut self, at: &'p Frame<'p, 'de>) -> Value<'a, 'p, 'de> {
        Value {
            d: self,
            at,
            head: None,
        }
    }

    /// Whether `shape` can be presented to `fields` positionally.
    #[inline]
    fn positional(&mut self, id: u32, fields: &'static [&'static str]) -> bool {
        let key = (fields.as_ptr() as usize, fields.len());
        let (seen, positional) = self.verdicts[id as usize];
        if seen == key && key.0 != 0 {
            return positional;
        }
        let positional = self.shapes[id as usize].fields.iter().eq(fields.iter());
        self.verdicts[id as usize] = (key, positional);
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
        let byte = r.byte()?;
        let marker = Marker::from_u8(byte);
        let data = match marker {
            Marker::FixPos(_) | Marker::FixNeg(_) => 0,
            Marker::Null | Marker::False | Marker::True => 0,
            Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => {
                return Ok(2 * r.announced(marker)? as u64)
            }
            Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => {
                return Ok(r.announced(marker)? as u64)
            }
            Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => {
                r.announced(marker)?
            }
            Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => r.announced(marker)?,
            // The type byte, then the data.
            Marker::Ext8 | Marker::Ext16 | Marker::Ext32 => r.announced(marker)?.saturating_add(1),
            Marker::U8 | Marker::I8 => 1,
            Marker::U16 | Marker::I16 => 2,
            Marker::U32 | Marker::I32 | Marker::F32 => 4,
            Marker::U64 | Marker::I64 | Marker::F64 => 8,
            Marker::FixExt1 => 2,
            Marker::FixExt2 => 3,
            Marker::FixExt4 => 5,
            Marker::FixExt8 => 9,
            Marker::FixExt16 => 17,
            Marker::Reserved => return Err(path::no_value(byte)),
        };
        r.take(data)?;
        Ok(0)
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
