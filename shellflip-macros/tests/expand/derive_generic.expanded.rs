struct Registry<T: Clone, const N: usize>
where
    T: std::fmt::Debug,
{
    items: Vec<T>,
    slots: [u8; N],
    #[handover(skip)]
    scratch: Option<T>,
}
const _: () = {
    /// The data fields of `Registry`, borrowed for encoding.
    #[derive(::shellflip::__private::serde::Serialize)]
    #[serde(crate = "::shellflip::__private::serde", rename = "Registry")]
    struct __ShellflipEncode<'a, T0, T1> {
        items: &'a T0,
        slots: &'a T1,
    }
    /// The data fields of `Registry`, decoded.
    #[derive(::shellflip::__private::serde::Deserialize)]
    #[serde(crate = "::shellflip::__private::serde", rename = "Registry")]
    struct __ShellflipDecode<T0, T1> {
        items: T0,
        slots: T1,
    }
    #[automatically_derived]
    impl<T: Clone, const N: usize> ::shellflip::HandoverState for Registry<T, N>
    where
        T: std::fmt::Debug,
        Self: ::core::marker::Send + ::core::marker::Sync + 'static,
        Vec<
            T,
        >: ::shellflip::__private::serde::Serialize
            + ::shellflip::__private::serde::de::DeserializeOwned,
        [u8; N]: ::shellflip::__private::serde::Serialize
            + ::shellflip::__private::serde::de::DeserializeOwned,
        Option<T>: ::core::default::Default,
    {
        const TYPE_NAME: &'static str = "Registry";
        fn encode_state(
            &self,
            state: &mut ::shellflip::StateEncoder<'_>,
        ) -> ::core::result::Result<(), ::shellflip::StateError> {
            state
                .put_data(
                    &__ShellflipEncode {
                        items: &self.items,
                        slots: &self.slots,
                    },
                )
        }
        fn decode_state(
            state: &mut ::shellflip::StateDecoder<'_>,
        ) -> ::core::result::Result<Self, ::shellflip::StateError> {
            let data: __ShellflipDecode<Vec<T>, [u8; N]> = state.take_data()?;
            ::core::result::Result::Ok(Self {
                items: data.items,
                slots: data.slots,
                scratch: ::core::default::Default::default(),
            })
        }
    }
};
