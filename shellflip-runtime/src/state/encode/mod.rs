//! The encoder: a serde `Serializer` writing MessagePack in which every
//! value carries the marker of its *declared* type, and every struct and
//! enum variant refers to an entry of a schema table built on the way.
//!
//! - Integers always use the fixed-width marker of their Rust type (`u8` is
//!   `0xcc xx` even for 3), floats `0xca`/`0xcb`: the receiver sees what
//!   the sender declared, not the smallest form of a value.
//! - A struct is `[SHAPE(id), v1, v2, ...]`: positional, like an array, with
//!   its field names once in the schema table. Its fixed-width reference is
//!   written when the struct ends, when its field names are known: the
//!   shape of the last value of the same type (a pointer compare per
//!   field), or another when the field list differs
//!   (`skip_serializing_if`).
//! - Enum variants are shapes too, so that they are matched by name.
//! - `Some(v)` is `[SOME, v]`, `None` is nil; a newtype struct is its
//!   content; a byte blob is one `bin` (one copy); a `char` is an
//!   extension value of its own (a one-letter string is not a `char`).

use std::collections::HashMap;
use std::fmt;

use rmp::encode as mp;
use serde::ser::{self, Serialize};

use super::wire::{self, Marker, Shape, ShapeKind, TooLong};
use super::MAX_STATE_DEPTH;
use crate::fd;

mod compound;
mod serializer;

pub(crate) use compound::*;

/// An encoding error (turned into [`super::StateError::Encode`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct EncodeError(pub String);

impl ser::Error for EncodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        EncodeError(msg.to_string())
    }
}

impl From<TooLong> for EncodeError {
    fn from(TooLong(len): TooLong) -> Self {
        EncodeError(format!(
            "a value of {len} elements or bytes is longer than MessagePack allows (4 GiB)"
        ))
    }
}

pub(super) type Result<T> = std::result::Result<T, EncodeError>;

/// `variant index` of a struct in the prediction cache.
pub(super) const STRUCT_TAG: u32 = u32::MAX;
pub(super) const CACHE_SLOTS: usize = 64;

/// One slot of the prediction cache: the last shape used for a type name
/// and variant index, as (the name's address, only ever compared; the
/// variant index; the shape's id, `u32::MAX` in an empty slot).
pub(super) type Slot = (usize, u32, u32);

/// The schema table being built and the prediction cache.
pub(crate) struct Schema {
    pub(super) shapes: Vec<Shape<'static>>,
    pub(super) ids: HashMap<Shape<'static>, u32>,
    pub(super) cache: [Slot; CACHE_SLOTS],
    /// Spare field lists, reused when a struct's shape is being built.
    pub(super) spare: Vec<Vec<&'static str>>,
}

impl Default for Schema {
    fn default() -> Self {
        Schema {
            shapes: Vec::new(),
            ids: HashMap::new(),
            cache: [(0, 0, u32::MAX); CACHE_SLOTS],
            spare: Vec::new(),
        }
    }
}

impl Schema {
    /// The id of `shape`, a value of variant `tag` (or [`STRUCT_TAG`]):
    /// the last one used for the same type and variant when it has the same
    /// kind, variant and fields (a pointer compare each), otherwise the
    /// table's, added if new.
    pub(super) fn id(&mut self, tag: u32, shape: &Shape<'static>) -> Result<u32> {
        // The cache slot of the type (by its name's address) and variant.
        let addr = shape.name.as_ptr() as usize;
        let slot = ((addr >> 3) ^ (tag as usize).wrapping_mul(31)) % CACHE_SLOTS;
        let (slot_name, slot_tag, id) = self.cache[slot];
        if slot_name == addr && slot_tag == tag && id != u32::MAX {
            let last = &self.shapes[id as usize];
            let (a, b) = (&last.fields, &shape.fields);
            let same_fields = a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same(a, b));
            if last.kind == shape.kind && same(last.variant, shape.variant) && same_fields {
                return Ok(id);
            }
        }
        let id = match self.ids.get(shape) {
            Some(&id) => id,
            None => {
                let id = u32::try_from(self.shapes.len())
                    .ok()
                    .filter(|&id| id != u32::MAX)
                    .ok_or_else(|| EncodeError("more than 4 billion struct shapes".to_owned()))?;
                self.shapes.push(shape.clone());
                self.ids.insert(shape.clone(), id);
                id
            }
        };
        self.cache[slot] = (addr, tag, id);
        Ok(id)
    }
}

/// Two field names are the same: usually the very same static string.
#[inline]
pub(super) fn same(a: &str, b: &str) -> bool {
    (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b
}

/// The smallest step the output grows by. Small: a connection handed over
/// encodes its own small state, and 10,000 of them at once must not each
/// hold a large buffer (64 KiB each made 640 MB and doubled the handover's
/// time); doubling from there reaches large sizes in a few steps.
pub(super) const MIN_GROWTH: usize = 256;

/// The serializer. Appends to `out`, which it grows itself: by doubling,
/// fallibly, never past `limit` bytes, and backed by huge pages once large
/// (fewer page faults: writing the envelope of a large state is mostly
/// faulting fresh memory in).
pub(crate) struct Encoder<'a> {
    pub out: &'a mut Vec<u8>,
    pub schema: &'a mut Schema,
    pub(super) depth: usize,
    /// The most bytes `out` may hold.
    pub(super) limit: usize,
    /// Set when the output would have grown past `limit`.
    pub(crate) over_limit: bool,
}

impl<'a> Encoder<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>, schema: &'a mut Schema, limit: usize) -> Self {
        Encoder {
            out,
            schema,
            depth: 0,
            limit,
            over_limit: false,
        }
    }

    /// Appends `bytes`.
    #[inline]
    pub(super) fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.reserve(bytes.len())?;
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    /// Makes room for `additional` bytes.
    #[inline]
    pub(super) fn reserve(&mut self, additional: usize) -> Result<()> {
        if self.out.capacity() - self.out.len() < additional {
            self.grow(additional)?;
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    pub(super) fn grow(&mut self, additional: usize) -> Result<()> {
        let len = self.out.len();
        let limit = self.limit;
        let Some(needed) = len.checked_add(additional).filter(|&n| n <= limit) else {
            self.over_limit = true;
            return Err(EncodeError(format!(
                "the encoded state grows past {limit} bytes, the most a generation accepts (MAX_STATE_BYTES); keep less state, or hand the rest over another way (a file, a database)"
            )));
        };
        let doubled = self.out.capacity().saturating_mul(2).max(MIN_GROWTH);
        let target = needed.max(doubled.min(limit));
        self.out.try_reserve_exact(target - len).map_err(|e| {
            EncodeError(format!(
                "could not allocate {target} bytes for the encoded state ({e}); the old generation lacks the memory to encode its state"
            ))
        })?;
        fd::advise_huge_pages(self.out);
        Ok(())
    }

    #[inline]
    pub(super) fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_STATE_DEPTH {
            return Err(EncodeError(format!(
                "the state is nested more than {MAX_STATE_DEPTH} levels deep (the depth limit), which the next generation would refuse"
            )));
        }
        Ok(())
    }

    #[inline]
    pub(super) fn leave(&mut self) {
        self.depth -= 1;
    }

    /// Writes a shape reference; returns where its id is, for patching.
    #[inline]
    pub(super) fn shape_ref(&mut self, id: u32) -> Result<usize> {
        let [a, b, c, d] = id.to_be_bytes();
        self.put(&[Marker::FixExt4.to_u8(), wire::EXT_SHAPE, a, b, c, d])?;
        Ok(self.out.len() - 4)
    }

    /// Starts a struct or struct variant: the array header and a
    /// placeholder for the shape reference, patched when the fields are
    /// known.
    pub(super) fn begin_struct<'e>(
        &'e mut self,
        kind: ShapeKind,
        name: &'static str,
        tag: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<StructEncoder<'e, 'a>> {
        self.enter()?;
        self.reserve(5)?;
        wire::write_len(self.out, mp::write_array_len, len + 1)?;
        let id_at = self.shape_ref(0)?;
        let mut fields = self.schema.spare.pop().unwrap_or_default();
        fields.clear();
        let shape = Shape {
            kind,
            name,
            variant,
            fields,
        };
        Ok(StructEncoder {
            enc: self,
            shape,
            tag,
            len,
            id_at,
        })
    }

    /// Writes the reference to an enum variant without fields (unit,
    /// newtype, tuple).
    pub(super) fn variant_ref(
        &mut self,
        kind: ShapeKind,
        name: &'static str,
        tag: u32,
        variant: &'static str,
    ) -> Result<()> {
        let fields = Vec::new();
        let id = self.schema.id(
            tag,
            &Shape {
                kind,
                name,
                variant,
                fields,
            },
        )?;
        self.shape_ref(id).map(drop)
    }

    /// Starts a sequence, tuple or map: the header, or a 32-bit one to
    /// patch when the length is not known yet.
    pub(super) fn begin_seq<'e>(
        &'e mut self,
        len: Option<usize>,
        map: bool,
        what: &'static str,
    ) -> Result<SeqEncoder<'e, 'a>> {
        self.enter()?;
        self.reserve(5)?;
        let header_at = self.out.len();
        match len {
            Some(len) if map => wire::write_len(self.out, mp::write_map_len, len)?,
            Some(len) => wire::write_len(self.out, mp::write_array_len, len)?,
            // A 32-bit length, patched at the end.
            None => {
                let marker = if map { Marker::Map32 } else { Marker::Array32 };
                self.out.extend_from_slice(&[marker.to_u8(), 0, 0, 0, 0]);
            }
        }
        Ok(SeqEncoder {
            enc: self,
            expected: len,
            count: 0,
            header_at,
            what,
        })
    }
}
