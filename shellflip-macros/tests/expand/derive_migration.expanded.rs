#[handover(version = 2, from = "v1::State")]
struct State {
    total: u64,
}
const _: () = {
    /// The data fields of `State`, borrowed for encoding.
    #[derive(::shellflip::__private::serde::Serialize)]
    #[serde(crate = "::shellflip::__private::serde", rename = "State")]
    struct __ShellflipEncode<'a, T0> {
        total: &'a T0,
    }
    /// The data fields of `State`, decoded.
    #[derive(::shellflip::__private::serde::Deserialize)]
    #[serde(crate = "::shellflip::__private::serde", rename = "State")]
    struct __ShellflipDecode<T0> {
        total: T0,
    }
    const _: () = {
        #[allow(unused_imports)]
        use ::shellflip::__private::state::NoVersion as _;
        if ::shellflip::__private::state::VersionOf::<v1::State>::VERSION >= 2 {
            ::core::panic!(
                "`from` must name a previous schema: its `version` must be lower than 2, the version of `State`"
            )
        }
    };
    #[automatically_derived]
    impl ::shellflip::HandoverState for State
    where
        u64: ::shellflip::__private::serde::Serialize
            + ::shellflip::__private::serde::de::DeserializeOwned,
        v1::State: ::shellflip::HandoverState,
        State: ::core::convert::From<v1::State>,
    {
        const TYPE_NAME: &'static str = "State";
        const VERSION: u32 = 2;
        const OLDEST_VERSION: u32 = <v1::State as ::shellflip::HandoverState>::OLDEST_VERSION;
        fn decode_version(
            version: u32,
            state: &mut ::shellflip::StateDecoder<'_>,
        ) -> ::core::result::Result<Self, ::shellflip::StateError> {
            state.migrate::<v1::State, Self>(version)
        }
        fn encode_state(
            &self,
            state: &mut ::shellflip::StateEncoder<'_>,
        ) -> ::core::result::Result<(), ::shellflip::StateError> {
            state
                .put_data(
                    &__ShellflipEncode {
                        total: &self.total,
                    },
                )
        }
        fn decode_state(
            state: &mut ::shellflip::StateDecoder<'_>,
        ) -> ::core::result::Result<Self, ::shellflip::StateError> {
            let data: __ShellflipDecode<u64> = state.take_data()?;
            ::core::result::Result::Ok(Self { total: data.total })
        }
    }
};
