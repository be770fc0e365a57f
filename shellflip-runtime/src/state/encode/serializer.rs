//! The `Serializer` impl: each serde data model type as the wire writes it.

use super::*;

/// Fixed-width scalars: the marker of the declared type (and the
/// extension type of a 128-bit integer), then the value big endian, in one
/// write.
macro_rules! fixed {
    ($($method:ident($t:ty) => $marker:ident $(+ $ext:expr)?),*) => {$(
        #[inline]
        fn $method(self, v: $t) -> Result<()> {
            let (head, value) = ([Marker::$marker.to_u8() $(, $ext)?], v.to_be_bytes());
            self.reserve(head.len() + value.len())?;
            self.out.extend_from_slice(&head);
            self.out.extend_from_slice(&value);
            Ok(())
        }
    )*};
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
        let marker = if v { Marker::True } else { Marker::False };
        self.put(&[marker.to_u8()])
    }

    fixed!(
        serialize_i8(i8) => I8,
        serialize_i16(i16) => I16,
        serialize_i32(i32) => I32,
        serialize_i64(i64) => I64,
        serialize_u8(u8) => U8,
        serialize_u16(u16) => U16,
        serialize_u32(u32) => U32,
        serialize_u64(u64) => U64,
        serialize_f32(f32) => F32,
        serialize_f64(f64) => F64,
        serialize_i128(i128) => FixExt16 + wire::EXT_I128,
        serialize_u128(u128) => FixExt16 + wire::EXT_U128
    );

    fn serialize_char(self, v: char) -> Result<()> {
        let [a, b, c, d] = u32::from(v).to_be_bytes();
        self.put(&[Marker::FixExt4.to_u8(), wire::EXT_CHAR, a, b, c, d])
    }

    #[inline]
    fn serialize_str(self, v: &str) -> Result<()> {
        self.reserve(v.len().saturating_add(5))?;
        Ok(wire::write_str(self.out, v)?)
    }

    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> Result<()> {
        self.reserve(v.len().saturating_add(5))?;
        wire::write_len(self.out, mp::write_bin_len, v.len())?;
        self.out.extend_from_slice(v);
        Ok(())
    }

    #[inline]
    fn serialize_none(self) -> Result<()> {
        self.put(&[Marker::Null.to_u8()])
    }

    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<()> {
        self.enter()?;
        self.put(&[
            Marker::FixArray(2).to_u8(),
            Marker::FixExt1.to_u8(),
            wire::EXT_SOME,
            0,
        ])?;
        value.serialize(&mut *self)?;
        self.leave();
        Ok(())
    }

    fn serialize_unit(self) -> Result<()> {
        self.put(&[Marker::Null.to_u8()])
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<()> {
        self.put(&[Marker::Null.to_u8()])
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        variant_index: u32,
        variant: &'static str,
    ) -> Result<()> {
        self.variant_ref(ShapeKind::UnitVariant, name, variant_index, variant)
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
        self.enter()?;
        self.put(&[0x92])?;
        self.variant_ref(ShapeKind::NewtypeVariant, name, variant_index, variant)?;
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
        // The shape reference is the array's first element, not the
        // variant's.
        let mut seq = self.begin_seq(Some(len + 1), false, "tuple variant")?;
        seq.enc
            .variant_ref(ShapeKind::TupleVariant, name, variant_index, variant)?;
        seq.expected = Some(len);
        Ok(seq)
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
