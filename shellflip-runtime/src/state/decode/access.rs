//! Accessors: serde's views of sequences, maps, struct fields and enum variants.

use super::*;

// ---------------------------------------------------------------------------
// Accessors
// ---------------------------------------------------------------------------

/// The elements of a plain sequence, or the bytes of a `bin` read as a
/// sequence of `u8` values.
pub(super) struct Elements<'a, 'p, 'de> {
    pub(super) d: &'a mut Decoder<'de>,
    pub(super) at: &'p Frame<'p, 'de>,
    pub(super) index: usize,
    pub(super) len: usize,
    /// The bytes, for a `bin`; otherwise the elements follow in the reader.
    pub(super) bin: Option<&'de [u8]>,
}

impl Elements<'_, '_, '_> {
    pub(super) fn finish(&mut self, trailing: Trailing) -> Result<()> {
        let rest = self.len - self.index;
        if rest == 0 {
            return Ok(());
        }
        match trailing {
            Trailing::Refuse => {
                let what = self.bin.map_or("elements", |_| "bytes");
                let (len, index) = (self.len, self.index);
                let taken = format!("received {len} {what}, this build takes only {index}");
                Err(self.d.fail(self.at, Problem::Other(taken)))
            }
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
        let mut value = self.d.value(&child);
        value.head = self.bin.map(|bin| Head::U8(bin[self.index]));
        self.index += 1;
        seed.deserialize(value).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        let rest = self.len - self.index;
        // Elements that follow in the reader take a byte each at least.
        Some(self.bin.map_or(rest.min(self.d.r.remaining()), |_| rest))
    }
}

/// Visits as a sequence the `len` elements that follow, or the bytes of
/// `bin`; `trailing` says what to do with elements the visitor did not
/// take.
pub(super) fn visit_elements<'p, 'de, V: Visitor<'de>>(
    d: &mut Decoder<'de>,
    at: &'p Frame<'p, 'de>,
    len: usize,
    bin: Option<&'de [u8]>,
    trailing: Trailing,
    visitor: V,
) -> Result<V::Value> {
    // A `bin` has as many elements as bytes.
    let len = bin.map_or(len, <[u8]>::len);
    let mut elements = Elements {
        d,
        at,
        index: 0,
        len,
        bin,
    };
    let value = visitor.visit_seq(&mut elements)?;
    elements.finish(trailing)?;
    Ok(value)
}

/// Visits the `len` field values of shape `shape` that follow:
/// positionally when its fields are `target`'s, otherwise as a map by
/// name.
pub(super) fn visit_fields<'p, 'de, V: Visitor<'de>>(
    d: &mut Decoder<'de>,
    at: &'p Frame<'p, 'de>,
    shape: u32,
    len: usize,
    target: Option<&'static [&'static str]>,
    visitor: V,
) -> Result<V::Value> {
    let positional = target.is_some_and(|fields| d.positional(shape, fields));
    let mut fields = Fields {
        d,
        at,
        shape,
        index: 0,
        len,
        target,
    };
    let value = if positional {
        visitor.visit_seq(&mut fields)
    } else {
        visitor.visit_map(&mut fields)
    }?;
    fields.finish()?;
    Ok(value)
}

/// The entries of a map.
pub(super) struct Entries<'a, 'p, 'de> {
    pub(super) d: &'a mut Decoder<'de>,
    pub(super) at: &'p Frame<'p, 'de>,
    pub(super) index: usize,
    pub(super) len: usize,
    /// The encoded bytes of the last key, for the path of its value.
    pub(super) key: &'de [u8],
}

impl<'de> de::MapAccess<'de> for Entries<'_, '_, 'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.index == self.len {
            return Ok(None);
        }
        let start = self.d.r.pos;
        let child = self.at.child(Seg::Index(self.index));
        let key = seed.deserialize(self.d.value(&child))?;
        let buf = self.d.r.buf;
        self.key = &buf[start..self.d.r.pos];
        Ok(Some(key))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value> {
        let child = self.at.child(Seg::Key(self.key));
        self.index += 1;
        seed.deserialize(self.d.value(&child))
    }

    fn size_hint(&self) -> Option<usize> {
        Some((self.len - self.index).min(self.d.r.remaining() / 2))
    }
}

/// The fields of a struct or struct variant: a sequence (positional) or a
/// map keyed by the received names.
pub(super) struct Fields<'a, 'p, 'de> {
    pub(super) d: &'a mut Decoder<'de>,
    pub(super) at: &'p Frame<'p, 'de>,
    pub(super) shape: u32,
    pub(super) index: usize,
    pub(super) len: usize,
    /// The target's field names, when known.
    pub(super) target: Option<&'static [&'static str]>,
}

impl<'de> Fields<'_, '_, 'de> {
    #[inline]
    pub(super) fn name(&self) -> &'de str {
        self.d.shapes[self.shape as usize].fields[self.index]
    }

    /// The path step of the current field.
    #[inline]
    fn seg(&self) -> Seg<'de> {
        let (shape, index, name) = (self.shape, self.index as u32, self.name());
        Seg::Field { shape, index, name }
    }

    #[inline]
    pub(super) fn value<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value> {
        let child = self.at.child(self.seg());
        self.index += 1;
        seed.deserialize(self.d.value(&child))
    }

    /// Drops the fields the visitor did not take.
    pub(super) fn finish(&mut self) -> Result<()> {
        while self.index < self.len {
            let child = self.at.child(self.seg());
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

/// An enum variant: an enum value; or, for `deserialize_any`, a container
/// variant as the one-entry map `{variant: payload}` (serde's externally
/// tagged form), and that payload.
pub(super) struct Variant<'a, 'p, 'de> {
    pub(super) d: &'a mut Decoder<'de>,
    pub(super) at: &'p Frame<'p, 'de>,
    pub(super) shape: u32,
    pub(super) len: usize,
    pub(super) done: bool,
}

impl<'a, 'p, 'de> Variant<'a, 'p, 'de> {
    pub(super) fn new(
        d: &'a mut Decoder<'de>,
        at: &'p Frame<'p, 'de>,
        shape: u32,
        len: usize,
    ) -> Self {
        Variant {
            d,
            at,
            shape,
            len,
            done: false,
        }
    }

    pub(super) fn entry(&self) -> &Shape<'de> {
        &self.d.shapes[self.shape as usize]
    }

    pub(super) fn expect(&self, kind: ShapeKind) -> Result<()> {
        let entry = self.entry();
        if entry.kind == kind {
            return Ok(());
        }
        let (word, name, variant) = (kind.word(), entry.name, entry.variant);
        let expected = format!("a {word} variant `{name}::{variant}`");
        let received = entry.to_string();
        Err(self.d.fail(self.at, Problem::Type { expected, received }))
    }
}

impl<'a, 'p, 'de> de::EnumAccess<'de> for Variant<'a, 'p, 'de> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self)> {
        let name = self.entry().variant;
        let value = seed.deserialize(BorrowedStrDeserializer::<DeError>::new(name))?;
        Ok((value, self))
    }
}

impl<'de> de::VariantAccess<'de> for Variant<'_, '_, 'de> {
    type Error = DeError;

    fn unit_variant(self) -> Result<()> {
        self.expect(ShapeKind::UnitVariant)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        self.expect(ShapeKind::NewtypeVariant)?;
        let child = self.at.child(Seg::Variant(self.entry().variant));
        seed.deserialize(self.d.value(&child))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value> {
        self.expect(ShapeKind::TupleVariant)?;
        let child = self.at.child(Seg::Variant(self.entry().variant));
        let (d, len) = (&mut *self.d, self.len);
        let value = visit_elements(d, &child, len, None, Trailing::Refuse, visitor);
        value.map_err(|e| self.d.locate(&child, e))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.expect(ShapeKind::StructVariant)?;
        let child = self.at.child(Seg::Variant(self.entry().variant));
        let (shape, len) = (self.shape, self.len);
        let value = visit_fields(&mut *self.d, &child, shape, len, Some(fields), visitor);
        value.map_err(|e| self.d.locate(&child, e))
    }
}

impl<'de> de::MapAccess<'de> for Variant<'_, '_, 'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.done {
            return Ok(None);
        }
        let name = self.entry().variant;
        seed.deserialize(BorrowedStrDeserializer::new(name))
            .map(Some)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value> {
        self.done = true;
        let child = self.at.child(Seg::Variant(self.entry().variant));
        let (shape, len) = (self.shape, self.len);
        seed.deserialize(Variant::new(&mut *self.d, &child, shape, len))
    }
}

/// The payload of a container variant, once the map's key was taken.
impl<'de> de::Deserializer<'de> for Variant<'_, '_, 'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let Variant {
            d, at, shape, len, ..
        } = self;
        match d.shapes[shape as usize].kind {
            ShapeKind::NewtypeVariant => d.value(at).deserialize_any(visitor),
            ShapeKind::TupleVariant => visit_elements(d, at, len, None, Trailing::Refuse, visitor),
            _ => visit_fields(d, at, shape, len, None, visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}
