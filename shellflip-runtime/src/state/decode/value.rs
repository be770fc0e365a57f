//! The value deserializer: one value of the payload, presented to serde.

use super::*;

// ---------------------------------------------------------------------------
// The value deserializer
// ---------------------------------------------------------------------------

/// One value at a path; its head is read on first use (or was read
/// already).
pub(super) struct Value<'a, 'p, 'de> {
    pub(super) d: &'a mut Decoder<'de>,
    pub(super) at: &'p Frame<'p, 'de>,
    pub(super) head: Option<Head<'de>>,
}

impl<'p, 'de> Value<'_, 'p, 'de> {
    #[inline]
    pub(super) fn take_head(&mut self) -> Result<Head<'de>> {
        match self.head.take() {
            Some(head) => Ok(head),
            None => read_head(&mut self.d.r, &self.d.shapes)
                .map_err(|e| self.d.fail(self.at, Problem::Read(e))),
        }
    }

    pub(super) fn mismatch<T>(&self, expected: impl Into<String>, head: &Head<'de>) -> Result<T> {
        let (expected, received) = (expected.into(), self.d.describe(head));
        Err(self.d.fail(self.at, Problem::Type { expected, received }))
    }

    /// `result` (a visitor's) with the path of this value.
    #[inline]
    fn located<T>(&self, result: Result<T>) -> Result<T> {
        result.map_err(|e| self.d.locate(self.at, e))
    }

    /// This value again with `head`, for a visitor that takes it whole.
    fn again(&mut self, head: Option<Head<'de>>) -> Value<'_, 'p, 'de> {
        let mut value = self.d.value(self.at);
        value.head = head;
        value
    }

    /// Visits a plain sequence of `len` elements; `trailing` says what to
    /// do with elements the visitor did not take.
    pub(super) fn seq<V: Visitor<'de>>(
        self,
        visitor: V,
        len: usize,
        trailing: Trailing,
    ) -> Result<V::Value> {
        let at = self.at;
        self.d
            .nested(at, |d| visit_elements(d, at, len, None, trailing, visitor))
    }

    pub(super) fn map<V: Visitor<'de>>(self, visitor: V, len: usize) -> Result<V::Value> {
        let at = self.at;
        self.d.nested(at, |d| {
            let mut entries = Entries {
                d,
                at,
                index: 0,
                len,
                key: &[],
            };
            let value = visitor.visit_map(&mut entries)?;
            let rest = 2 * (entries.len - entries.index) as u64;
            entries.d.skip(at, rest)?;
            Ok(value)
        })
    }

    /// Visits a struct (or struct variant) of shape `id`: positionally when
    /// its fields are the target's, otherwise as a map by name.
    pub(super) fn fields<V: Visitor<'de>>(
        self,
        visitor: V,
        id: u32,
        len: usize,
        target: Option<&'static [&'static str]>,
    ) -> Result<V::Value> {
        let at = self.at;
        self.d
            .nested(at, |d| visit_fields(d, at, id, len, target, visitor))
    }

    /// `Some`: the value follows.
    pub(super) fn some<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let at = self.at;
        self.d.nested(at, |d| visitor.visit_some(d.value(at)))
    }
}

/// What to do with sequence elements the visitor left.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Trailing {
    /// An error: a tuple's or a sequence's length is part of its type.
    Refuse,
    /// Dropped and logged: a tuple struct lost trailing fields.
    Drop,
}

/// Scalars: the heads each type takes (its own, and those that widen to it
/// losslessly), and what the error says it expects.
macro_rules! scalar {
    ($($method:ident($t:ty) => $visit:ident, $expected:literal, [$($ok:ident),*];)*) => {$(
        #[inline]
        fn $method<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
            let head = self.take_head()?;
            let result = match head {
                $(Head::$ok(x) => visitor.$visit(x as $t),)*
                other => return self.mismatch($expected, &other),
            };
            self.located(result)
        }
    )*};
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
                    let at = self.at;
                    let visit = |d: &mut _| visitor.visit_map(Variant::new(d, at, shape, len));
                    return self.d.nested(at, visit);
                }
            }
            Head::Some => return self.some(visitor),
        };
        self.located(result)
    }

    scalar! {
        deserialize_bool(bool) => visit_bool, "a bool", [Bool];
        deserialize_u8(u8) => visit_u8, "u8", [U8];
        deserialize_u16(u16) => visit_u16, "u16", [U8, U16];
        deserialize_u32(u32) => visit_u32, "u32", [U8, U16, U32];
        deserialize_u64(u64) => visit_u64, "u64", [U8, U16, U32, U64];
        deserialize_u128(u128) => visit_u128, "u128", [U8, U16, U32, U64, U128];
        deserialize_i8(i8) => visit_i8, "i8", [I8];
        deserialize_i16(i16) => visit_i16, "i16", [I8, I16, U8];
        deserialize_i32(i32) => visit_i32, "i32", [I8, I16, I32, U8, U16];
        deserialize_i64(i64) => visit_i64, "i64", [I8, I16, I32, I64, U8, U16, U32];
        deserialize_i128(i128) => visit_i128, "i128",
            [I8, I16, I32, I64, I128, U8, U16, U32, U64];
        deserialize_f32(f32) => visit_f32, "f32", [F32, U8, U16, I8, I16];
        deserialize_f64(f64) => visit_f64, "f64", [F64, F32, U8, U16, U32, I8, I16, I32];
    }

    fn deserialize_char<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        match self.take_head()? {
            Head::Char(c) => self.located(visitor.visit_char(c)),
            other => self.mismatch("a char", &other),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        match self.take_head()? {
            Head::Str(s) => self.located(visitor.visit_borrowed_str(s)),
            // `char` -> `String`.
            Head::Char(c) => self.located(visitor.visit_char(c)),
            other => self.mismatch("a string", &other),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        match self.take_head()? {
            Head::Bin(b) => self.located(visitor.visit_borrowed_bytes(b)),
            Head::Seq(n) => self.seq(visitor, n, Trailing::Refuse),
            other => self.mismatch("bytes", &other),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        match self.take_head()? {
            Head::Nil => self.located(visitor.visit_none()),
            Head::Some => self.some(visitor),
            // `T` received where this build has `Option<T>`.
            other => {
                let result = visitor.visit_some(self.again(Some(other)));
                self.located(result)
            }
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        match self.take_head()? {
            Head::Nil => self.located(visitor.visit_unit()),
            other => self.mismatch("a unit", &other),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        match self.take_head()? {
            Head::Nil => self.located(visitor.visit_unit()),
            other => self.mismatch(format!("unit struct `{name}`"), &other),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        mut self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        let head = self.head.take();
        let result = visitor.visit_newtype_struct(self.again(head));
        self.located(result)
    }

    fn deserialize_seq<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        match self.take_head()? {
            Head::Seq(n) => self.seq(visitor, n, Trailing::Refuse),
            // The bytes of a `bin` as a sequence of `u8` values.
            Head::Bin(bin) => {
                let (d, len) = (&mut *self.d, bin.len());
                let result = visit_elements(d, self.at, len, Some(bin), Trailing::Refuse, visitor);
                self.located(result)
            }
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
                let at = self.at;
                let visit =
                    |d: &mut Decoder<'de>| visitor.visit_enum(Variant::new(d, at, shape, len));
                if self.d.shapes[shape as usize].kind.is_container() {
                    self.d.nested(at, visit)
                } else {
                    let result = visit(&mut *self.d);
                    self.located(result)
                }
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
        self.located(result)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        if matches!(self.at.seg, Seg::Field { .. } | Seg::Key(_)) {
            self.d.dropped(self.at, "has no such field");
        }
        // The values inside it.
        let contained = match self.take_head()? {
            Head::Seq(n) | Head::Struct { len: n, .. } | Head::Variant { len: n, .. } => n as u64,
            Head::Map(n) => 2 * n as u64,
            Head::Some => 1,
            _ => 0,
        };
        if contained > 0 {
            let at = self.at;
            self.d.nested(at, |d| d.skip(at, contained))?;
        }
        visitor.visit_unit()
    }
}
