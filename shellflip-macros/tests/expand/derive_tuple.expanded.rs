struct Pair(u32, #[handover(fd)] std::net::UdpSocket, #[handover(skip)] Vec<u8>, String);
const _: () = {
    /// The data fields of `Pair`, borrowed for encoding.
    #[derive(::shellflip::__private::serde::Serialize)]
    #[serde(crate = "::shellflip::__private::serde", rename = "Pair")]
    struct __ShellflipEncode<'a, T0, T1> {
        #[serde(rename = "0")]
        _0: &'a T0,
        #[serde(rename = "3")]
        _3: &'a T1,
    }
    /// The data fields of `Pair`, decoded.
    #[derive(::shellflip::__private::serde::Deserialize)]
    #[serde(crate = "::shellflip::__private::serde", rename = "Pair")]
    struct __ShellflipDecode<T0, T1> {
        #[serde(rename = "0")]
        _0: T0,
        #[serde(rename = "3")]
        _3: T1,
    }
    #[automatically_derived]
    impl ::shellflip::HandoverState for Pair
    where
        u32: ::shellflip::__private::serde::Serialize
            + ::shellflip::__private::serde::de::DeserializeOwned,
        std::net::UdpSocket: ::shellflip::HandoverFd,
        Vec<u8>: ::core::default::Default,
        String: ::shellflip::__private::serde::Serialize
            + ::shellflip::__private::serde::de::DeserializeOwned,
    {
        const TYPE_NAME: &'static str = "Pair";
        fn encode_state(
            &self,
            state: &mut ::shellflip::StateEncoder<'_>,
        ) -> ::core::result::Result<(), ::shellflip::StateError> {
            state.put_fd("1", &self.1)?;
            state
                .put_data(
                    &__ShellflipEncode {
                        _0: &self.0,
                        _3: &self.3,
                    },
                )
        }
        fn decode_state(
            state: &mut ::shellflip::StateDecoder<'_>,
        ) -> ::core::result::Result<Self, ::shellflip::StateError> {
            let data: __ShellflipDecode<u32, String> = state.take_data()?;
            ::core::result::Result::Ok(
                Self(
                    data._0,
                    state.take_fd("1")?,
                    ::core::default::Default::default(),
                    data._3,
                ),
            )
        }
    }
};
