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
        const VERSION: u32 = 2;
        fn encode_state(
            &self,
            state: &mut ::shellflip::StateEncoder<'_>,
        ) -> ::core::result::Result<(), ::shellflip::StateError> {
            state.put_fd("listener", &self.listener)?;
            state.put_fd("log", &self.log)?;
            state
                .put_data(
                    &__ShellflipEncode {
                        served: &self.served,
                        names: &self.names,
                    },
                )
        }
        fn decode_state(
            state: &mut ::shellflip::StateDecoder<'_>,
        ) -> ::core::result::Result<Self, ::shellflip::StateError> {
            let data: __ShellflipDecode<u64, Vec<String>> = state.take_data()?;
            ::core::result::Result::Ok(Self {
                served: data.served,
                names: data.names,
                cache: ::core::default::Default::default(),
                listener: state.take_fd("listener")?,
                log: state.take_fd("log")?,
            })
        }
    }
};
