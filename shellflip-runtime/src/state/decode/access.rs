//! Accessors: serde's views of sequences, maps, struct fields and enum variants.

use super::*;

// ---------------------------------------------------------------------------
// Accessors
// ---------------------------------------------------------------------------

/// The elements of a plain sequence.
pub(super) struct Elements<'a, 'p, 'de> {
    pub(super) d: &'a mut Decoder<'de>,
    pub(super) at: &'p Frame<'p, 'de>,
    pub(super) index: usize,
    pub(super) len: usize,
}

impl Elements<'_, '_, '_> {
    pub(super) fn finish(&mut self, trailing: Trailing) -> Result<()> {
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
pub(super) struct BinElements<'a, 'p, 'de> {
    pub(super) d: &'a mut Decoder<'de>,
    pub(super) at: &'p Frame<'p, 'de>,
    pub(super) bytes: &'de [u8],
    pub(super) index: usize,
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

    #[inline]
    pub(super) fn value<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value> {
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
    pub(super) fn finish(&mut self) -> Result<()> {
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
pub(super) struct Enum<'a, 'p, 'de> {
    pub(super) d: &'a mut Decoder<'de>,
    pub(super) at: &'p Frame<'p, 'de>,
    pub(super) shape: u32,
    pub(super) len: usize,
}

impl<'a, 'p, 'de> Enum<'a, 'p, 'de> {
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
        self.expect(ShapeKind::UnitVariant)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        self.expect(ShapeKind::NewtypeVariant)?;
        let child = self.at.child(Seg::Variant(self.entry().variant));
        seed.deserialize(Value {
            d: self.d,
            at: &child,
            head: None,
        })
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value> {
        self.expect(ShapeKind::TupleVariant)?;
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
        self.expect(ShapeKind::StructVariant)?;
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
pub(super) struct VariantAsMap<'a, 'p, 'de> {
    pub(super) d: &'a mut Decoder<'de>,
    pub(super) at: &'p Frame<'p, 'de>,
    pub(super) shape: u32,
    pub(super) len: usize,
    pub(super) done: bool,
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
pub(super) struct Payload<'a, 'p, 'de> {
    pub(super) d: &'a mut Decoder<'de>,
    pub(super) at: &'p Frame<'p, 'de>,
    pub(super) shape: u32,
    pub(super) len: usize,
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
