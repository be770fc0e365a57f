//! Paths of values, and heads: what a value is, read from its first bytes.

use super::*;

// ---------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------

/// One step of a path.
#[derive(Clone, Copy)]
pub(super) enum Seg<'de> {
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
pub(super) struct Frame<'p, 'de> {
    pub(super) parent: Option<&'p Frame<'p, 'de>>,
    pub(super) seg: Seg<'de>,
}

impl<'p, 'de> Frame<'p, 'de> {
    pub(super) fn child(&'p self, seg: Seg<'de>) -> Frame<'p, 'de> {
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
pub(super) enum Head<'de> {
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

pub(super) fn malformed(what: impl Into<String>) -> ReadError {
    ReadError::Malformed(what.into())
}

pub(super) fn shape<'s, 'de>(
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
pub(super) fn read_head<'de>(
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
        wire::BIN8 | wire::BIN16 | wire::BIN32 | wire::STR8 | wire::STR16 | wire::STR32 => {
            read_sized(r, marker)?
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
        wire::FIXEXT4 | wire::FIXEXT16 => read_ext(r, shapes, marker)?,
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

/// A string or a byte string whose length follows `marker` (8, 16 or 32
/// bits).
fn read_sized<'de>(r: &mut Reader<'de>, marker: u8) -> std::result::Result<Head<'de>, ReadError> {
    let len = match marker {
        wire::BIN8 | wire::STR8 => usize::from(r.byte()?),
        wire::BIN16 | wire::STR16 => usize::from(r.u16()?),
        _ => r.u32()? as usize,
    };
    Ok(match marker {
        wire::BIN8 | wire::BIN16 | wire::BIN32 => Head::Bin(r.take(len)?),
        _ => Head::Str(r.str_of_len(len)?),
    })
}

/// An extension value (`marker`: FIXEXT4 or FIXEXT16): a char, a reference
/// to a unit variant's shape, or a 128-bit integer.
fn read_ext<'de>(
    r: &mut Reader<'de>,
    shapes: &[Shape<'de>],
    marker: u8,
) -> std::result::Result<Head<'de>, ReadError> {
    let ty = r.byte()?;
    if marker == wire::FIXEXT16 {
        let bytes: [u8; 16] = r.array()?;
        return match ty {
            wire::EXT_U128 => Ok(Head::U128(u128::from_be_bytes(bytes))),
            wire::EXT_I128 => Ok(Head::I128(i128::from_be_bytes(bytes))),
            other => Err(malformed(format!("unknown extension type {other}"))),
        };
    }
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
    Ok(Head::Variant { shape: id, len: 0 })
}

/// An array of `len` elements: a struct, a container variant or `Some` when
/// it starts with their marker, otherwise a plain sequence.
pub(super) fn read_array<'de>(
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
