//! The encoder: a serde `Serializer` writing MessagePack in which every
//! value carries the marker of its *declared* type, and every struct and
//! enum variant refers to an entry of a schema table built on the way.
//!
//! - Integers always use the fixed-width marker of their Rust type (`u8` is
//!   `0xcc xx` even for 3), floats `0xca`/`0xcb`: the receiver sees what
//!   the sender declared, not the smallest form of a value.
//! - A struct is `[SHAPE(id), v1, v2, ...]`: positional, like an array, with
//!   its field names once in the schema table. The shape of a struct type is
//!   predicted from the last value of the same type (a pointer compare per
//!   field); when a field list differs (`skip_serializing_if`) the
//!   fixed-width reference is patched when the struct ends.
//! - Enum variants are shapes too, so that they are matched by name.
//! - `Some(v)` is `[SOME, v]`, `None` is nil; a newtype struct is its
//!   content; a byte blob is one `bin` (one copy); a `char` is an
//!   extension value of its own (a one-letter string is not a `char`).

use std::collections::HashMap;
use std::fmt;

use serde::ser::{self, Serialize};

use super::wire::{self, Shape, ShapeKind, TooLong};
use super::MAX_STATE_DEPTH;
use crate::fd;

/// An encoding error (turned into [`super::StateError::Encode`]).
#[derive(Debug)]
pub(crate) struct EncodeError(pub String);

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EncodeError {}

impl ser::Error for EncodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        EncodeError(msg.to_string())
    }
}

impl From<TooLong> for EncodeError {
    fn from(e: TooLong) -> Self {
        EncodeError(format!(
            "a value of {} elements or bytes is longer than MessagePack allows (4 GiB)",
            e.0
        ))
    }
}

type Result<T> = std::result::Result<T, EncodeError>;

/// `variant index` of a struct in the prediction cache.
const STRUCT_TAG: u32 = u32::MAX;
const CACHE_SLOTS: usize = 64;

/// One slot of the prediction cache: the last shape used for a type name
/// (by address) and variant index.
/// The name is kept as its address, only ever compared.
#[derive(Clone, Copy)]
struct Slot {
    name: usize,
    tag: u32,
    id: u32,
}

/// The schema table being built and the prediction cache.
pub(crate) struct Schema {
    shapes: Vec<Shape<'static>>,
    ids: HashMap<Shape<'static>, u32>,
    cache: [Slot; CACHE_SLOTS],
    /// Spare field lists, reused when a struct's shape is being built.
    spare: Vec<Vec<&'static str>>,
}

impl Default for Schema {
    fn default() -> Self {
        Schema {
            shapes: Vec::new(),
            ids: HashMap::new(),
            cache: [Slot {
                name: 0,
                tag: 0,
                id: u32::MAX,
            }; CACHE_SLOTS],
            spare: Vec::new(),
        }
    }
}

impl Schema {
    /// The table, for the envelope.
    pub(crate) fn shapes(&self) -> &[Shape<'static>] {
        &self.shapes
    }

    #[inline]
    fn slot(name: &'static str, tag: u32) -> usize {
        let addr = name.as_ptr() as usize;
        ((addr >> 3) ^ (tag as usize).wrapping_mul(31)) % CACHE_SLOTS
    }

    #[inline]
    fn predict(&self, name: &'static str, tag: u32) -> Option<u32> {
        let slot = self.cache[Self::slot(name, tag)];
        (slot.name == name.as_ptr() as usize && slot.tag == tag && slot.id != u32::MAX)
            .then_some(slot.id)
    }

    fn remember(&mut self, name: &'static str, tag: u32, id: u32) {
        self.cache[Self::slot(name, tag)] = Slot {
            name: name.as_ptr() as usize,
            tag,
            id,
        };
    }

    fn intern(&mut self, shape: Shape<'static>) -> Result<u32> {
        if let Some(&id) = self.ids.get(&shape) {
            return Ok(id);
        }
        let id = u32::try_from(self.shapes.len())
            .ok()
            .filter(|&id| id != u32::MAX)
            .ok_or_else(|| EncodeError("more than 4 billion struct shapes".to_owned()))?;
        self.shapes.push(shape.clone());
        self.ids.insert(shape, id);
        Ok(id)
    }

    /// The id of a variant without fields (unit, newtype, tuple).
    fn variant(
        &mut self,
        kind: ShapeKind,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<u32> {
        if let Some(id) = self.predict(name, index) {
            let shape = &self.shapes[id as usize];
            if shape.kind == kind && same(shape.variant, variant) {
                return Ok(id);
            }
        }
        let id = self.intern(Shape {
            kind,
            name,
            variant,
            fields: Vec::new(),
        })?;
        self.remember(name, index, id);
        Ok(id)
    }
}

/// Two field names are the same: usually the very same static string.
#[inline]
fn same(a: &str, b: &str) -> bool {
    (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b
}

/// The smallest step the output grows by.
const MIN_GROWTH: usize = 64 * 1024;

/// The serializer. Appends to `out`, which it grows itself: by doubling,
/// fallibly, never past `limit` bytes, and backed by huge pages once large
/// (fewer page faults: writing the envelope of a large state is mostly
/// faulting fresh memory in).
pub(crate) struct Encoder<'a> {
    pub out: &'a mut Vec<u8>,
    pub schema: &'a mut Schema,
    depth: usize,
    /// The most bytes `out` may hold.
    limit: usize,
}

impl<'a> Encoder<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>, schema: &'a mut Schema, limit: usize) -> Self {
        Encoder {
            out,
            schema,
            depth: 0,
            limit,
        }
    }

    /// Appends `bytes`.
    #[inline]
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.reserve(bytes.len())?;
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    /// Makes room for `additional` bytes.
    #[inline]
    fn reserve(&mut self, additional: usize) -> Result<()> {
        if self.out.capacity() - self.out.len() < additional {
            self.grow(additional)?;
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self, additional: usize) -> Result<()> {
        let len = self.out.len();
        let needed = len
            .checked_add(additional)
            .filter(|&needed| needed <= self.limit)
            .ok_or_else(|| {
                EncodeError(format!(
                    "the encoded state grows past {} bytes, the most a generation accepts (MAX_STATE_BYTES); keep less state, or hand the rest over another way (a file, a database)",
                    self.limit
                ))
            })?;
        let target = needed.max(
            self.out
                .capacity()
                .saturating_mul(2)
                .max(MIN_GROWTH)
                .min(self.limit),
        );
        self.out.try_reserve_exact(target - len).map_err(|e| {
            EncodeError(format!(
                "could not allocate {target} bytes for the encoded state ({e}); the old generation lacks the memory to encode its state"
            ))
        })?;
        fd::advise_huge_pages(self.out);
        Ok(())
    }

    #[inline]
    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_STATE_DEPTH {
            return Err(EncodeError(format!(
                "the state is nested more than {MAX_STATE_DEPTH} levels deep (the depth limit), which the next generation would refuse"
            )));
        }
        Ok(())
    }

    #[inline]
    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// Writes a shape reference; returns where its id is, for patching.
    #[inline]
    fn shape_ref(&mut self, id: u32) -> Result<usize> {
        let [a, b, c, d] = id.to_be_bytes();
        self.put(&[wire::FIXEXT4, wire::EXT_SHAPE, a, b, c, d])?;
        Ok(self.out.len() - 4)
    }

    /// Writes an array header.
    #[inline]
    fn array_len(&mut self, len: usize) -> Result<()> {
        self.reserve(5)?;
        Ok(wire::write_array_len(self.out, len)?)
    }

    /// Starts a struct or struct variant: the array header and a shape
    /// reference predicted from the last value of the same type.
    fn begin_struct<'e>(
        &'e mut self,
        kind: ShapeKind,
        name: &'static str,
        tag: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<StructEncoder<'e, 'a>> {
        self.enter()?;
        self.array_len(len + 1)?;
        let predicted = self.schema.predict(name, tag).filter(|&id| {
            let shape = &self.schema.shapes[id as usize];
            shape.kind == kind && same(shape.variant, variant)
        });
        let id_at = self.shape_ref(predicted.unwrap_or(0))?;
        let building = match predicted {
            Some(_) => None,
            None => Some(self.schema.spare.pop().unwrap_or_default()),
        };
        Ok(StructEncoder {
            enc: self,
            kind,
            name,
            tag,
            variant,
            predicted: predicted.unwrap_or(0),
            building,
            index: 0,
            len,
            id_at,
        })
    }
}

/// A struct (or struct variant) being written.
pub(crate) struct StructEncoder<'e, 'a> {
    enc: &'e mut Encoder<'a>,
    kind: ShapeKind,
    name: &'static str,
    tag: u32,
    variant: &'static str,
    /// The predicted shape, while `building` is `None`.
    predicted: u32,
    /// The field names so far, once the prediction failed.
    building: Option<Vec<&'static str>>,
    index: usize,
    len: usize,
    id_at: usize,
}

impl StructEncoder<'_, '_> {
    #[inline]
    fn field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<()> {
        match &mut self.building {
            Some(fields) => fields.push(key),
            None => {
                let fields = &self.enc.schema.shapes[self.predicted as usize].fields;
                if !fields.get(self.index).is_some_and(|f| same(f, key)) {
                    let mut built = self.enc.schema.spare.pop().unwrap_or_default();
                    built.clear();
                    built.extend_from_slice(&fields[..self.index]);
                    built.push(key);
                    self.building = Some(built);
                }
            }
        }
        self.index += 1;
        value.serialize(&mut *self.enc)
    }

    fn finish(mut self) -> Result<()> {
        if self.index != self.len {
            return Err(EncodeError(format!(
                "`{}` announced {} fields but wrote {}",
                self.name, self.len, self.index
            )));
        }
        if self.building.is_none()
            && self.enc.schema.shapes[self.predicted as usize].fields.len() != self.index
        {
            let fields = &self.enc.schema.shapes[self.predicted as usize].fields;
            self.building = Some(fields[..self.index].to_vec());
        }
        if let Some(mut fields) = self.building.take() {
            let id = self.enc.schema.intern(Shape {
                kind: self.kind,
                name: self.name,
                variant: self.variant,
                fields: fields.clone(),
            })?;
            self.enc.out[self.id_at..self.id_at + 4].copy_from_slice(&id.to_be_bytes());
            self.enc.schema.remember(self.name, self.tag, id);
            fields.clear();
            self.enc.schema.spare.push(fields);
        }
        self.enc.leave();
        Ok(())
    }
}

impl ser::SerializeStruct for StructEncoder<'_, '_> {
    type Ok = ();
    type Error = EncodeError;

    #[inline]
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<()> {
        self.field(key, value)
    }

    fn end(self) -> Result<()> {
        self.finish()
    }
}

impl ser::SerializeStructVariant for StructEncoder<'_, '_> {
    type Ok = ();
    type Error = EncodeError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<()> {
        self.field(key, value)
    }

    fn end(self) -> Result<()> {
        self.finish()
    }
}

/// A sequence, tuple or map being written. With a known length the header
/// is already written and the count is checked at the end; otherwise a
/// 32-bit header is patched.
pub(crate) struct SeqEncoder<'e, 'a> {
    enc: &'e mut Encoder<'a>,
    expected: Option<usize>,
    count: usize,
    header_at: usize,
    /// Elements per entry (1, or 2 for a map's key and value).
    what: &'static str,
}

impl SeqEncoder<'_, '_> {
    #[inline]
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.count += 1;
        value.serialize(&mut *self.enc)
    }

    fn finish(self, entries: usize) -> Result<()> {
        match self.expected {
            Some(expected) if expected != entries => {
                return Err(EncodeError(format!(
                    "a {} announced {expected} elements but wrote {entries}",
                    self.what
                )))
            }
            Some(_) => {}
            None => {
                let len = u32::try_from(entries).map_err(|_| TooLong(entries))?;
                self.enc.out[self.header_at + 1..self.header_at + 5]
                    .copy_from_slice(&len.to_be_bytes());
            }
        }
        self.enc.leave();
        Ok(())
    }
}

impl ser::SerializeSeq for SeqEncoder<'_, '_> {
    type Ok = ();
    type Error = EncodeError;

    #[inline]
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.element(value)
    }

    fn end(self) -> Result<()> {
        let n = self.count;
        self.finish(n)
    }
}

impl ser::SerializeTuple for SeqEncoder<'_, '_> {
    type Ok = ();
    type Error = EncodeError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.element(value)
    }

    fn end(self) -> Result<()> {
        let n = self.count;
        self.finish(n)
    }
}

impl ser::SerializeTupleStruct for SeqEncoder<'_, '_> {
    type Ok = ();
    type Error = EncodeError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.element(value)
    }

    fn end(self) -> Result<()> {
        let n = self.count;
        self.finish(n)
    }
}

impl ser::SerializeTupleVariant for SeqEncoder<'_, '_> {
    type Ok = ();
    type Error = EncodeError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.element(value)
    }

    fn end(self) -> Result<()> {
        // The shape reference counts as the first element.
        let n = self.count;
        self.finish(n)
    }
}

impl ser::SerializeMap for SeqEncoder<'_, '_> {
    type Ok = ();
    type Error = EncodeError;

    #[inline]
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<()> {
        self.element(key)
    }

    #[inline]
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.element(value)
    }

    fn end(self) -> Result<()> {
        if self.count % 2 != 0 {
            return Err(EncodeError("a map key without a value".to_owned()));
        }
        let n = self.count / 2;
        self.finish(n)
    }
}

impl<'e, 'a> Encoder<'a> {
    fn begin_seq(
        &'e mut self,
        len: Option<usize>,
        map: bool,
        what: &'static str,
    ) -> Result<SeqEncoder<'e, 'a>> {
        self.enter()?;
        self.reserve(5)?;
        let header_at = self.out.len();
        match (len, map) {
            (Some(len), false) => wire::write_array_len(self.out, len)?,
            (Some(len), true) => wire::write_map_len(self.out, len)?,
            (None, false) => self.out.extend_from_slice(&[wire::ARRAY32, 0, 0, 0, 0]),
            (None, true) => self.out.extend_from_slice(&[wire::MAP32, 0, 0, 0, 0]),
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

impl Encoder<'_> {
    /// A marker and a big-endian value, in one write.
    #[inline]
    fn scalar<const N: usize>(&mut self, marker: u8, value: [u8; N]) -> Result<()> {
        self.reserve(N + 1)?;
        self.out.push(marker);
        self.out.extend_from_slice(&value);
        Ok(())
    }
}

impl<'e, 'a> ser::Serializer for &'e mut Encoder<'a> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = SeqEncoder<'e, 'a>;
    type SerializeTuple = SeqEncoder<'e, 'a>;
    type SerializeTupleStruct = SeqEncoder<'e, 'a>;
    type SerializeTupleVariant = SeqEncoder<'e, 'a>;
    type SerializeMap = SeqEncoder<'e, 'a>;
    type SerializeStruct = StructEncoder<'e, 'a>;
    type SerializeStructVariant = StructEncoder<'e, 'a>;

    fn is_human_readable(&self) -> bool {
        false
    }

    #[inline]
    fn serialize_bool(self, v: bool) -> Result<()> {
        self.put(&[if v { wire::TRUE } else { wire::FALSE }])
    }

    #[inline]
    fn serialize_i8(self, v: i8) -> Result<()> {
        self.put(&[wire::I8, v as u8])
    }

    #[inline]
    fn serialize_i16(self, v: i16) -> Result<()> {
        self.scalar(wire::I16, v.to_be_bytes())
    }

    #[inline]
    fn serialize_i32(self, v: i32) -> Result<()> {
        self.scalar(wire::I32, v.to_be_bytes())
    }

    #[inline]
    fn serialize_i64(self, v: i64) -> Result<()> {
        self.scalar(wire::I64, v.to_be_bytes())
    }

    fn serialize_i128(self, v: i128) -> Result<()> {
        self.put(&[wire::FIXEXT16, wire::EXT_I128])?;
        self.put(&v.to_be_bytes())
    }

    #[inline]
    fn serialize_u8(self, v: u8) -> Result<()> {
        self.put(&[wire::U8, v])
    }

    #[inline]
    fn serialize_u16(self, v: u16) -> Result<()> {
        self.scalar(wire::U16, v.to_be_bytes())
    }

    #[inline]
    fn serialize_u32(self, v: u32) -> Result<()> {
        self.scalar(wire::U32, v.to_be_bytes())
    }

    #[inline]
    fn serialize_u64(self, v: u64) -> Result<()> {
        self.scalar(wire::U64, v.to_be_bytes())
    }

    fn serialize_u128(self, v: u128) -> Result<()> {
        self.put(&[wire::FIXEXT16, wire::EXT_U128])?;
        self.put(&v.to_be_bytes())
    }

    #[inline]
    fn serialize_f32(self, v: f32) -> Result<()> {
        self.scalar(wire::F32, v.to_be_bytes())
    }

    #[inline]
    fn serialize_f64(self, v: f64) -> Result<()> {
        self.scalar(wire::F64, v.to_be_bytes())
    }

    fn serialize_char(self, v: char) -> Result<()> {
        let [a, b, c, d] = u32::from(v).to_be_bytes();
        self.put(&[wire::FIXEXT4, wire::EXT_CHAR, a, b, c, d])
    }

    #[inline]
    fn serialize_str(self, v: &str) -> Result<()> {
        self.reserve(v.len().saturating_add(5))?;
        Ok(wire::write_str(self.out, v)?)
    }

    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> Result<()> {
        self.reserve(v.len().saturating_add(5))?;
        Ok(wire::write_bin(self.out, v)?)
    }

    #[inline]
    fn serialize_none(self) -> Result<()> {
        self.put(&[wire::NIL])
    }

    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<()> {
        self.enter()?;
        self.put(&[0x92, wire::FIXEXT1, wire::EXT_SOME, 0])?;
        value.serialize(&mut *self)?;
        self.leave();
        Ok(())
    }

    fn serialize_unit(self) -> Result<()> {
        self.put(&[wire::NIL])
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<()> {
        self.put(&[wire::NIL])
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        variant_index: u32,
        variant: &'static str,
    ) -> Result<()> {
        let id = self
            .schema
            .variant(ShapeKind::UnitVariant, name, variant_index, variant)?;
        self.shape_ref(id)?;
        Ok(())
    }

    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<()> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        variant_index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<()> {
        let id = self
            .schema
            .variant(ShapeKind::NewtypeVariant, name, variant_index, variant)?;
        self.enter()?;
        self.put(&[0x92])?;
        self.shape_ref(id)?;
        value.serialize(&mut *self)?;
        self.leave();
        Ok(())
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq> {
        self.begin_seq(len, false, "sequence")
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple> {
        self.begin_seq(Some(len), false, "tuple")
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct> {
        self.begin_seq(Some(len), false, "tuple struct")
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        variant_index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant> {
        let id = self
            .schema
            .variant(ShapeKind::TupleVariant, name, variant_index, variant)?;
        self.enter()?;
        self.array_len(len + 1)?;
        self.shape_ref(id)?;
        Ok(SeqEncoder {
            enc: self,
            expected: Some(len),
            count: 0,
            header_at: 0,
            what: "tuple variant",
        })
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap> {
        self.begin_seq(len, true, "map")
    }

    #[inline]
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<Self::SerializeStruct> {
        self.begin_struct(ShapeKind::Struct, name, STRUCT_TAG, "", len)
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        variant_index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant> {
        self.begin_struct(ShapeKind::StructVariant, name, variant_index, variant, len)
    }
}
