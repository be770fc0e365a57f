#[derive(Debug)]
#[handover(version = 2)]
struct State {
    served: u64,
    names: Vec<String>,
    #[handover(skip)]
    cache: std::collections::HashMap<String, String>,
    #[handover(fd)]
    listener: tokio::net::TcpListener,
    #[handover(fd)]
    log: std::sync::Arc<std::fs::File>,
}
const _: () = {
    /// The data fields of `State`, borrowed for encoding.
    #[derive(::shellflip::__private::serde::Serialize)]
    #[serde(crate = "::shellflip::__private::serde", rename = "State")]
    struct __ShellflipEncode<'a, T0, T1> {
        served: &'a T0,
        names: &'a T1,
    }
    /// The data fields of `State`, decoded.
    #[derive(::shellflip::__private::serde::Deserialize)]
    #[serde(crate = "::shellflip::__private::serde", rename = "State")]
    struct __ShellflipDecode<T0, T1> {
        served: T0,
        names: T1,
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
        std::collections::HashMap<String, String>: ::core::default::Default,
        tokio::net::TcpListener: ::shellflip::HandoverFd,
        std::sync::Arc<std::fs::File>: ::shellflip::HandoverFd,
    {
        const TYPE_NAME: &'static str = "State";
        const FINGERPRINT: u64 = 0xd2162bed2eb10ae9;
        fn encode_state(
            &self,
            fds: &mut ::shellflip::StateFds,
        ) -> ::core::result::Result<::std::vec::Vec<u8>, ::shellflip::StateError> {
            fds.put_field("listener", &self.listener)?;
            fds.put_field("log", &self.log)?;
            ::shellflip::__private::state::encode_data(
                Self::TYPE_NAME,
                &__ShellflipEncode {
                    served: &self.served,
                    names: &self.names,
                },
            )
        }
        fn decode_state(
            payload: &[u8],
            fds: &mut ::shellflip::StateFds,
        ) -> ::core::result::Result<Self, ::shellflip::StateError> {
            let data: __ShellflipDecode<u64, Vec<String>> = ::shellflip::__private::state::decode_data(
                Self::TYPE_NAME,
                payload,
            )?;
            ::core::result::Result::Ok(Self {
                served: data.served,
                names: data.names,
                cache: ::core::default::Default::default(),
                listener: fds.take_field("listener")?,
                log: fds.take_field("log")?,
            })
        }
    }
};
