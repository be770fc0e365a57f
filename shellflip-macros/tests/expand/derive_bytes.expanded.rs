struct Blobs {
    blob: Vec<u8>,
    #[handover(bytes)]
    boxed: Box<[u8]>,
    count: u64,
}
const _: () = {
    /// The data fields of `Blobs`, borrowed for encoding.
    #[derive(::shellflip::__private::serde::Serialize)]
    #[serde(crate = "::shellflip::__private::serde", rename = "Blobs")]
    struct __ShellflipEncode<'a, T0, T1, T2> {
        #[serde(
            serialize_with = "::shellflip::__private::state::bytes::serialize",
            bound(serialize = "T0: ::core::convert::AsRef<[u8]>")
        )]
        blob: &'a T0,
        #[serde(
            serialize_with = "::shellflip::__private::state::bytes::serialize",
            bound(serialize = "T1: ::core::convert::AsRef<[u8]>")
        )]
        boxed: &'a T1,
        count: &'a T2,
    }
    /// The data fields of `Blobs`, decoded.
    #[derive(::shellflip::__private::serde::Deserialize)]
    #[serde(crate = "::shellflip::__private::serde", rename = "Blobs")]
    struct __ShellflipDecode<T0, T1, T2> {
        #[serde(
            deserialize_with = "::shellflip::__private::state::bytes::deserialize",
            bound(deserialize = "T0: ::core::convert::From<::std::vec::Vec<u8>>")
        )]
        blob: T0,
        #[serde(
            deserialize_with = "::shellflip::__private::state::bytes::deserialize",
            bound(deserialize = "T1: ::core::convert::From<::std::vec::Vec<u8>>")
        )]
        boxed: T1,
        count: T2,
    }
    #[automatically_derived]
    impl ::shellflip::HandoverState for Blobs
    where
        Vec<
            u8,
        >: ::core::convert::AsRef<[u8]> + ::core::convert::From<::std::vec::Vec<u8>>,
        Box<
            [u8],
        >: ::core::convert::AsRef<[u8]> + ::core::convert::From<::std::vec::Vec<u8>>,
        u64: ::shellflip::__private::serde::Serialize
            + ::shellflip::__private::serde::de::DeserializeOwned,
    {
        const TYPE_NAME: &'static str = "Blobs";
        fn encode_state(
            &self,
            state: &mut ::shellflip::StateEncoder<'_>,
        ) -> ::core::result::Result<(), ::shellflip::StateError> {
            state
                .put_data(
                    &__ShellflipEncode {
                        blob: &self.blob,
                        boxed: &self.boxed,
                        count: &self.count,
                    },
                )
        }
        fn decode_state(
            state: &mut ::shellflip::StateDecoder<'_>,
        ) -> ::core::result::Result<Self, ::shellflip::StateError> {
            let data: __ShellflipDecode<Vec<u8>, Box<[u8]>, u64> = state.take_data()?;
            ::core::result::Result::Ok(Self {
                blob: data.blob,
                boxed: data.boxed,
                count: data.count,
            })
        }
    }
};
