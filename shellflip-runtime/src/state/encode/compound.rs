//! The compound serializers: structs (recording their shape) and sequences, tuples and maps.

use super::*;

pub(crate) struct StructEncoder<'e, 'a> {
    pub(super) enc: &'e mut Encoder<'a>,
    /// The shape, its field names as they are written.
    pub(super) shape: Shape<'static>,
    pub(super) tag: u32,
    pub(super) len: usize,
    pub(super) id_at: usize,
}

impl StructEncoder<'_, '_> {
    /// Checks the count, and writes the shape reference now that the field
    /// names are known.
    pub(super) fn finish(self) -> Result<()> {
        let written = self.shape.fields.len();
        if written != self.len {
            return Err(EncodeError(format!(
                "`{}` announced {} fields but wrote {written}",
                self.shape.name, self.len
            )));
        }
        let id = self.enc.schema.id(self.tag, &self.shape)?;
        self.enc.out[self.id_at..self.id_at + 4].copy_from_slice(&id.to_be_bytes());
        self.enc.schema.spare.push(self.shape.fields);
        self.enc.leave();
        Ok(())
    }
}

/// Structs and struct variants: each field recorded, then its value.
macro_rules! fields {
    ($($trait:ident),*) => {$(
        impl ser::$trait for StructEncoder<'_, '_> {
            type Ok = ();
            type Error = EncodeError;

            #[inline]
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<()> {
                self.shape.fields.push(key);
                value.serialize(&mut *self.enc)
            }

            fn end(self) -> Result<()> {
                self.finish()
            }
        }
    )*};
}

fields!(SerializeStruct, SerializeStructVariant);

/// A sequence, tuple or map being written. With a known length the header
/// is already written and the count is checked at the end; otherwise a
/// 32-bit header is patched.
pub(crate) struct SeqEncoder<'e, 'a> {
    pub(super) enc: &'e mut Encoder<'a>,
    pub(super) expected: Option<usize>,
    pub(super) count: usize,
    pub(super) header_at: usize,
    /// What is written, for errors.
    pub(super) what: &'static str,
}

impl SeqEncoder<'_, '_> {
    #[inline]
    pub(super) fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.count += 1;
        value.serialize(&mut *self.enc)
    }

    pub(super) fn finish(self, entries: usize) -> Result<()> {
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

/// Sequences, tuples, tuple structs and tuple variants: one value per
/// element, counted.
macro_rules! elements {
    ($($trait:ident::$method:ident),*) => {$(
        impl ser::$trait for SeqEncoder<'_, '_> {
            type Ok = ();
            type Error = EncodeError;

            #[inline]
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
                self.element(value)
            }

            fn end(self) -> Result<()> {
                let n = self.count;
                self.finish(n)
            }
        }
    )*};
}

elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

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
