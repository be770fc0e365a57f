//! The bytes of the state format: MessagePack markers, the extension types
//! shellflip adds, the schema table, and a bounds-checked reader.
//!
//! Everything written here is valid MessagePack; the extension types (all
//! fixed-size `fixext` values) carry what MessagePack has no word for:
//!
//! | ext type | size | meaning |
//! |---|---|---|
//! | 1 `SHAPE` | 4 | a big-endian index into the schema table; first element of a struct or enum-variant array, or alone for a unit variant |
//! | 2 `SOME` | 1 | first element of `[SOME, value]`, an `Option` that is `Some` |
//! | 3 `U128` | 16 | a `u128`, big endian |
//! | 4 `I128` | 16 | an `i128`, big endian |
//! | 5 `CHAR` | 4 | a `char`, its code point big endian |

use std::fmt;

use rmp::encode as mp;
/// MessagePack's markers are `rmp`'s; only the extension types below are
/// this format's own.
pub(crate) use rmp::Marker;

/// Extension type: a shape reference (struct or enum variant).
pub(crate) const EXT_SHAPE: u8 = 1;
/// Extension type: `Some`, first element of `[SOME, value]`.
pub(crate) const EXT_SOME: u8 = 2;
/// Extension type: a `u128`.
pub(crate) const EXT_U128: u8 = 3;
/// Extension type: an `i128`.
pub(crate) const EXT_I128: u8 = 4;
/// Extension type: a `char` (a string of one character is not one).
pub(crate) const EXT_CHAR: u8 = 5;

/// What a schema-table entry describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ShapeKind {
    /// A struct with named fields: `[SHAPE, v1, v2, ...]`.
    Struct = 0,
    /// A unit enum variant: `SHAPE` alone.
    UnitVariant = 1,
    /// A newtype enum variant: `[SHAPE, value]`.
    NewtypeVariant = 2,
    /// A tuple enum variant: `[SHAPE, v1, v2, ...]`.
    TupleVariant = 3,
    /// A struct enum variant: `[SHAPE, v1, v2, ...]`, with field names.
    StructVariant = 4,
}

impl ShapeKind {
    /// The kinds, by their byte in the schema table.
    const ALL: [ShapeKind; 5] = [
        ShapeKind::Struct,
        ShapeKind::UnitVariant,
        ShapeKind::NewtypeVariant,
        ShapeKind::TupleVariant,
        ShapeKind::StructVariant,
    ];

    /// True when values of this shape are arrays led by the shape
    /// reference (everything but a unit variant).
    pub(crate) fn is_container(self) -> bool {
        self != ShapeKind::UnitVariant
    }

    /// The word before "variant" (or "struct" alone for a struct).
    pub(crate) fn word(self) -> &'static str {
        match self {
            ShapeKind::Struct | ShapeKind::StructVariant => "struct",
            ShapeKind::UnitVariant => "unit",
            ShapeKind::NewtypeVariant => "newtype",
            ShapeKind::TupleVariant => "tuple",
        }
    }
}

/// One entry of the schema table: a struct's name and field names, or an
/// enum variant.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Shape<'a> {
    pub kind: ShapeKind,
    /// The struct's or enum's name, as serde gives it.
    pub name: &'a str,
    /// The variant's name (empty for a struct).
    pub variant: &'a str,
    /// The field names, in the order the values are written (structs and
    /// struct variants).
    pub fields: Vec<&'a str>,
}

impl fmt::Display for Shape<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, variant) = (self.name, self.variant);
        match self.kind {
            ShapeKind::Struct => write!(f, "struct `{name}`"),
            kind => write!(f, "{} variant `{name}::{variant}`", kind.word()),
        }
    }
}

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

/// A length that MessagePack cannot represent (more than `u32::MAX`).
#[derive(Debug)]
pub(crate) struct TooLong(pub usize);

/// Writes a length header in its smallest form with `write`: `rmp`'s
/// `write_array_len`, `write_map_len`, `write_str_len` or `write_bin_len`.
pub(crate) fn write_len<E>(
    out: &mut Vec<u8>,
    write: fn(&mut Vec<u8>, u32) -> Result<Marker, E>,
    len: usize,
) -> Result<(), TooLong> {
    let len32 = u32::try_from(len).map_err(|_| TooLong(len))?;
    // Writing to a `Vec` does not fail.
    let _ = write(out, len32);
    Ok(())
}

pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) -> Result<(), TooLong> {
    write_len(out, mp::write_str_len, s.len())?;
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Writes the schema table: `[[shape, ...], [rename, ...]]`, each shape
/// `[kind, name, variant, [fields]]`, each rename `[field, [old names]]`
/// (the root struct's fields that have aliases, so that a build that
/// still knows a field by an old name finds it).
pub(crate) fn write_schema(
    out: &mut Vec<u8>,
    shapes: &[Shape<'_>],
    renames: &[(&str, &[&str])],
) -> Result<(), TooLong> {
    out.push(Marker::FixArray(2).to_u8());
    write_len(out, mp::write_array_len, shapes.len())?;
    for shape in shapes {
        out.push(Marker::FixArray(4).to_u8());
        out.extend_from_slice(&[Marker::U8.to_u8(), shape.kind as u8]);
        write_str(out, shape.name)?;
        write_str(out, shape.variant)?;
        write_names(out, &shape.fields)?;
    }
    write_len(out, mp::write_array_len, renames.len())?;
    for (field, aliases) in renames {
        out.push(Marker::FixArray(2).to_u8());
        write_str(out, field)?;
        write_names(out, aliases)?;
    }
    Ok(())
}

/// Writes an array of names (read by [`read_names`]).
fn write_names(out: &mut Vec<u8>, names: &[&str]) -> Result<(), TooLong> {
    write_len(out, mp::write_array_len, names.len())?;
    names.iter().try_for_each(|name| write_str(out, name))
}

/// A parsed schema table.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Schema<'a> {
    pub shapes: Vec<Shape<'a>>,
    /// The root struct's fields with their old names.
    pub renames: Vec<(&'a str, Vec<&'a str>)>,
}

// ---------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------

/// Why bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReadError {
    /// The input ends in the middle of a value.
    #[error("the data ends in the middle of a value")]
    Truncated,
    /// Bytes that this format never writes.
    #[error("{0}")]
    Malformed(String),
}

/// A cursor over a byte slice; every read is bounds-checked.
#[derive(Clone, Copy)]
pub(crate) struct Reader<'de> {
    pub buf: &'de [u8],
    pub pos: usize,
}

impl<'de> Reader<'de> {
    pub(crate) fn new(buf: &'de [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    #[inline]
    pub(crate) fn byte(&mut self) -> Result<u8, ReadError> {
        let b = *self.buf.get(self.pos).ok_or(ReadError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    #[inline]
    pub(crate) fn take(&mut self, n: usize) -> Result<&'de [u8], ReadError> {
        let end = self.pos.checked_add(n).ok_or(ReadError::Truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or(ReadError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    #[inline]
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], ReadError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    #[inline]
    pub(crate) fn u16(&mut self) -> Result<u16, ReadError> {
        self.array().map(u16::from_be_bytes)
    }

    #[inline]
    pub(crate) fn u32(&mut self) -> Result<u32, ReadError> {
        self.array().map(u32::from_be_bytes)
    }

    pub(crate) fn str_of_len(&mut self, len: usize) -> Result<&'de str, ReadError> {
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| malformed("a string is not valid UTF-8"))
    }

    /// The length `marker` announces: in the marker itself (`FixStr`,
    /// `FixArray`, `FixMap`), or in the 8 (`Str8`, `Bin8`, `Ext8`), 16
    /// (`Str16`, `Bin16`, `Ext16`, `Array16`, `Map16`) or 32 bits (the
    /// 32-bit forms) after it.
    pub(crate) fn announced(&mut self, marker: Marker) -> Result<usize, ReadError> {
        Ok(match marker {
            Marker::FixStr(n) | Marker::FixArray(n) | Marker::FixMap(n) => usize::from(n),
            Marker::Str8 | Marker::Bin8 | Marker::Ext8 => usize::from(self.byte()?),
            Marker::Str16 | Marker::Bin16 | Marker::Ext16 | Marker::Array16 | Marker::Map16 => {
                usize::from(self.u16()?)
            }
            _ => self.u32()? as usize,
        })
    }

    /// Reads a string value (any str marker).
    pub(crate) fn str(&mut self) -> Result<&'de str, ReadError> {
        let byte = self.byte()?;
        match Marker::from_u8(byte) {
            m @ (Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32) => {
                let len = self.announced(m)?;
                self.str_of_len(len)
            }
            _ => Err(unexpected(byte, "a string")),
        }
    }

    /// Reads the header of an array of `len` elements; `what` is the error
    /// otherwise.
    fn tuple(&mut self, len: usize, what: &str) -> Result<(), ReadError> {
        if self.array_len()? != len {
            return Err(malformed(what));
        }
        Ok(())
    }

    /// Reads an array header.
    pub(crate) fn array_len(&mut self) -> Result<usize, ReadError> {
        let byte = self.byte()?;
        match Marker::from_u8(byte) {
            m @ (Marker::FixArray(_) | Marker::Array16 | Marker::Array32) => self.announced(m),
            _ => Err(unexpected(byte, "an array")),
        }
    }
}

fn unexpected(marker: u8, what: &str) -> ReadError {
    malformed(format!("expected {what}, found the byte {marker:#04x}"))
}

pub(crate) fn malformed(what: impl Into<String>) -> ReadError {
    ReadError::Malformed(what.into())
}

/// Parses the schema table written by [`write_schema`]; the whole input
/// must be the table.
pub(crate) fn read_schema(bytes: &[u8]) -> Result<Schema<'_>, ReadError> {
    let mut r = Reader::new(bytes);
    r.tuple(2, "the schema table is not [shapes, renames]")?;
    let count = r.array_len()?;
    // Each entry takes at least 5 bytes: never reserve more than the input
    // can hold.
    let mut shapes = Vec::with_capacity(count.min(r.remaining() / 5));
    for _ in 0..count {
        r.tuple(4, "a schema entry is not [kind, name, variant, fields]")?;
        if Marker::from_u8(r.byte()?) != Marker::U8 {
            return Err(malformed("a schema entry's kind is not a u8"));
        }
        let kind_byte = r.byte()?;
        let kind = ShapeKind::ALL.get(usize::from(kind_byte)).copied();
        let kind =
            kind.ok_or_else(|| malformed(format!("unknown schema entry kind {kind_byte}")))?;
        let name = r.str()?;
        let variant = r.str()?;
        let fields = read_names(&mut r)?;
        let is_variant = kind != ShapeKind::Struct;
        let has_fields = matches!(kind, ShapeKind::Struct | ShapeKind::StructVariant);
        if is_variant == variant.is_empty() || (!has_fields && !fields.is_empty()) {
            let entry = shapes.len();
            return Err(malformed(format!("schema entry {entry} is inconsistent")));
        }
        shapes.push(Shape {
            kind,
            name,
            variant,
            fields,
        });
    }
    let count = r.array_len()?;
    let mut renames = Vec::with_capacity(count.min(r.remaining() / 3));
    for _ in 0..count {
        r.tuple(2, "a rename is not [field, aliases]")?;
        let field = r.str()?;
        renames.push((field, read_names(&mut r)?));
    }
    if r.remaining() != 0 {
        let rest = r.remaining();
        return Err(malformed(format!("{rest} bytes follow the schema table")));
    }
    Ok(Schema { shapes, renames })
}

fn read_names<'a>(r: &mut Reader<'a>) -> Result<Vec<&'a str>, ReadError> {
    let count = r.array_len()?;
    let mut names = Vec::with_capacity(count.min(r.remaining()));
    for _ in 0..count {
        names.push(r.str()?);
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_round_trips() {
        let shapes = vec![
            Shape {
                kind: ShapeKind::Struct,
                name: "State",
                variant: "",
                fields: vec!["a", "b"],
            },
            Shape {
                kind: ShapeKind::UnitVariant,
                name: "Kind",
                variant: "Plain",
                fields: vec![],
            },
            Shape {
                kind: ShapeKind::StructVariant,
                name: "Kind",
                variant: "Limited",
                fields: vec!["max"],
            },
        ];
        let renames: &[(&str, &[&str])] = &[("alpha", &["a", "first"])];
        let mut out = Vec::new();
        write_schema(&mut out, &shapes, renames).unwrap();
        let schema = read_schema(&out).unwrap();
        assert_eq!(schema.shapes, shapes);
        assert_eq!(schema.renames, vec![("alpha", vec!["a", "first"])]);
        for len in 0..out.len() {
            assert!(read_schema(&out[..len]).is_err());
        }
        out.push(0);
        assert!(read_schema(&out).is_err());
    }

    #[test]
    fn headers_use_the_smallest_form() {
        let mut out = Vec::new();
        write_len(&mut out, mp::write_array_len, 3).unwrap();
        write_len(&mut out, mp::write_array_len, 16).unwrap();
        write_len(&mut out, mp::write_map_len, 70_000).unwrap();
        write_str(&mut out, "hi").unwrap();
        write_len(&mut out, mp::write_bin_len, 2).unwrap();
        out.extend_from_slice(&[1, 2]);
        assert_eq!(
            out,
            [0x93, 0xdc, 0, 16, 0xdf, 0, 1, 0x11, 0x70, 0xa2, b'h', b'i', 0xc4, 2, 1, 2]
        );
    }
}
