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

/// The error for a byte that starts no value.
pub(super) fn no_value(byte: u8) -> ReadError {
    malformed(format!(
        "the byte {byte:#04x} starts no value this format writes"
    ))
}

fn unknown_ext(ty: u8) -> ReadError {
    malformed(format!("unknown extension type {ty}"))
}

pub(super) fn shape_entry<'s, 'de>(
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
    let byte = r.byte()?;
    let marker = Marker::from_u8(byte);
    Ok(match marker {
        Marker::FixPos(v) => Head::U8(v),
        Marker::FixNeg(v) => Head::I8(v),
        Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => Head::Map(r.announced(marker)?),
        Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => {
            let len = r.announced(marker)?;
            read_array(r, shapes, len)?
        }
        Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => {
            let len = r.announced(marker)?;
            Head::Str(r.str_of_len(len)?)
        }
        Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => {
            let len = r.announced(marker)?;
            Head::Bin(r.take(len)?)
        }
        Marker::Null => Head::Nil,
        Marker::False => Head::Bool(false),
        Marker::True => Head::Bool(true),
        Marker::F32 => Head::F32(f32::from_be_bytes(r.array()?)),
        Marker::F64 => Head::F64(f64::from_be_bytes(r.array()?)),
        Marker::U8 => Head::U8(r.byte()?),
        Marker::U16 => Head::U16(r.u16()?),
        Marker::U32 => Head::U32(r.u32()?),
        Marker::U64 => Head::U64(u64::from_be_bytes(r.array()?)),
        Marker::I8 => Head::I8(r.byte()? as i8),
        Marker::I16 => Head::I16(i16::from_be_bytes(r.array()?)),
        Marker::I32 => Head::I32(i32::from_be_bytes(r.array()?)),
        Marker::I64 => Head::I64(i64::from_be_bytes(r.array()?)),
        // The extension values: a 128-bit integer, a char, or a reference
        // to a unit variant's shape.
        Marker::FixExt16 => match (r.byte()?, r.array()?) {
            (wire::EXT_U128, bytes) => Head::U128(u128::from_be_bytes(bytes)),
            (wire::EXT_I128, bytes) => Head::I128(i128::from_be_bytes(bytes)),
            (ty, _) => return Err(unknown_ext(ty)),
        },
        Marker::FixExt4 => match (r.byte()?, r.u32()?) {
            (wire::EXT_CHAR, code) => Head::Char(
                char::from_u32(code)
                    .ok_or_else(|| malformed(format!("{code:#x} is not a char")))?,
            ),
            (wire::EXT_SHAPE, id) if shape_entry(shapes, id)?.kind.is_container() => {
                return Err(malformed("a struct or variant reference outside its array"))
            }
            (wire::EXT_SHAPE, id) => Head::Variant { shape: id, len: 0 },
            (ty, _) => return Err(unknown_ext(ty)),
        },
        _ => return Err(no_value(byte)),
    })
}

/// An array of `n` elements: a struct, a container variant or `Some` when
/// it starts with their marker, otherwise a plain sequence.
pub(super) fn read_array<'de>(
    r: &mut Reader<'de>,
    shapes: &[Shape<'de>],
    n: usize,
) -> std::result::Result<Head<'de>, ReadError> {
    if n == 0 {
        return Ok(Head::Seq(0));
    }
    // The first element's marker and type, read ahead.
    let mut peek = *r;
    match (peek.byte().map(Marker::from_u8), peek.byte()) {
        (Ok(Marker::FixExt4), Ok(wire::EXT_SHAPE)) => {
            let shape = peek.u32()?;
            let entry = shape_entry(shapes, shape)?;
            if entry.kind == ShapeKind::UnitVariant {
                // A sequence whose first element is a unit variant.
                return Ok(Head::Seq(n));
            }
            *r = peek;
            // The values after the shape reference.
            let len = n - 1;
            match entry.kind {
                ShapeKind::Struct | ShapeKind::StructVariant if entry.fields.len() != len => {
                    Err(malformed(format!(
                        "{entry} has {} fields in the schema but {len} values",
                        entry.fields.len()
                    )))
                }
                ShapeKind::NewtypeVariant if len != 1 => {
                    Err(malformed(format!("{entry} with {len} values")))
                }
                ShapeKind::Struct => Ok(Head::Struct { shape, len }),
                _ => Ok(Head::Variant { shape, len }),
            }
        }
        (Ok(Marker::FixExt1), Ok(wire::EXT_SOME)) => {
            if n != 2 {
                return Err(malformed(format!("a Some marker in an array of {n}")));
            }
            r.take(3)?;
            Ok(Head::Some)
        }
        _ => Ok(Head::Seq(n)),
    }
}
