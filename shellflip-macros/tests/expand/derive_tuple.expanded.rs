struct Pair(u32, #[handover(fd)] std::net::UdpSocket, #[handover(skip)] Vec<u8>, String);
const _: () = {
    /// The data fields of `Pair`, borrowed for encoding.
    #[derive(::shellflip::__private::serde::Serialize)]
    #[serde(crate = "::shellflip::__private::serde", rename = "Pair")]
    struct __ShellflipEncode<'a, T0, T1>(&'a T0, &'a T1);
    /// The data fields of `Pair`, decoded.
    #[derive(::shellflip::__private::serde::Deserialize)]
    #[serde(crate = "::shellflip::__private::serde", rename = "Pair")]
    struct __ShellflipDecode<T0, T1>(T0, T1);
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
        const FINGERPRINT: u64 = 0x11c9ce3357cced94;
        fn encode_state(
            &self,
            fds: &mut ::shellflip::StateFds,
        ) -> ::core::result::Result<::std::vec::Vec<u8>, ::shellflip::StateError> {
            fds.put_field("1", &self.1)?;
            ::shellflip::__private::state::encode_data(
                Self::TYPE_NAME,
                &__ShellflipEncode(&self.0, &self.3),
            )
        }
        fn decode_state(
            payload: &[u8],
            fds: &mut ::shellflip::StateFds,
        ) -> ::core::result::Result<Self, ::shellflip::StateError> {
            let data: __ShellflipDecode<u32, String> = ::shellflip::__private::state::decode_data(
                Self::TYPE_NAME,
                payload,
            )?;
            ::core::result::Result::Ok(
                Self(
                    data.0,
                    fds.take_field("1")?,
                    ::core::default::Default::default(),
                    data.1,
                ),
            )
        }
    }
};
