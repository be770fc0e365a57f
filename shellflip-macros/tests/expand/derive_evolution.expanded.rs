struct State {
    #[handover(alias = "count", alias = "hits")]
    served: u64,
    #[handover(default)]
    peers: Vec<String>,
    #[handover(default = "defaults::port")]
    port: u16,
    #[handover(default)]
    blob: Vec<u8>,
    #[handover(fd, alias = "socket")]
    listener: std::net::TcpListener,
}
const _: () = {
    /// The data fields of `State`, borrowed for encoding.
    #[derive(::shellflip::__private::serde::Serialize)]
    #[serde(crate = "::shellflip::__private::serde", rename = "State")]
    struct __ShellflipEncode<'a, T0, T1, T2, T3> {
        served: &'a T0,
        peers: &'a T1,
        port: &'a T2,
        #[serde(
            serialize_with = "::shellflip::__private::state::bytes::serialize",
            bound(serialize = "T3: ::core::convert::AsRef<[u8]>")
        )]
        blob: &'a T3,
    }
    /// The data fields of `State`, decoded.
    #[derive(::shellflip::__private::serde::Deserialize)]
    #[serde(crate = "::shellflip::__private::serde", rename = "State")]
    struct __ShellflipDecode<T0, T1, T2, T3> {
        #[serde(alias = "count")]
        #[serde(alias = "hits")]
        served: T0,
        #[serde(default = "::shellflip::__private::state::Received::absent")]
        peers: ::shellflip::__private::state::Received<T1>,
        #[serde(default = "::shellflip::__private::state::Received::absent")]
        port: ::shellflip::__private::state::Received<T2>,
        #[serde(
            default = "::shellflip::__private::state::Received::absent",
            deserialize_with = "::shellflip::__private::state::bytes::received",
            bound(deserialize = "T3: ::core::convert::From<::std::vec::Vec<u8>>")
        )]
        blob: ::shellflip::__private::state::Received<T3>,
    }
    #[automatically_derived]
    impl ::shellflip::HandoverState for State
    where
        u64: ::shellflip::__private::serde::Serialize
            + ::shellflip::__private::serde::de::DeserializeOwned,
        Vec<
            String,
        >: ::shellflip::__private::serde::Serialize
            + ::shellflip::__private::serde::de::DeserializeOwned,
        Vec<String>: ::core::default::Default,
        u16: ::shellflip::__private::serde::Serialize
            + ::shellflip::__private::serde::de::DeserializeOwned,
        Vec<
            u8,
        >: ::core::convert::AsRef<[u8]> + ::core::convert::From<::std::vec::Vec<u8>>,
        Vec<u8>: ::core::default::Default,
        std::net::TcpListener: ::shellflip::HandoverFd,
    {
        const TYPE_NAME: &'static str = "State";
        const FIELD_ALIASES: &'static [(&'static str, &'static [&'static str])] = &[
            ("served", &["count", "hits"]),
        ];
        fn encode_state(
            &self,
            state: &mut ::shellflip::StateEncoder<'_>,
        ) -> ::core::result::Result<(), ::shellflip::StateError> {
            state.put_fd("listener", &self.listener)?;
            state
                .put_data(
                    &__ShellflipEncode {
                        served: &self.served,
                        peers: &self.peers,
                        port: &self.port,
                        blob: &self.blob,
                    },
                )
        }
        fn decode_state(
            state: &mut ::shellflip::StateDecoder<'_>,
        ) -> ::core::result::Result<Self, ::shellflip::StateError> {
            let data: __ShellflipDecode<u64, Vec<String>, u16, Vec<u8>> = state
                .take_data()?;
            ::core::result::Result::Ok(Self {
                served: data.served,
                peers: data.peers.or_default(),
                port: data.port.or_else(defaults::port),
                blob: data.blob.or_default(),
                listener: state.take_fd_renamed("listener", &["socket"])?,
            })
        }
    }
};
