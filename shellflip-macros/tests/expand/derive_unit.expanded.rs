#[derive(Default)]
struct Marker;
const _: () = {
    /// The data fields of `Marker`, borrowed for encoding.
    #[derive(::shellflip::__private::serde::Serialize)]
    #[serde(crate = "::shellflip::__private::serde", rename = "Marker")]
    struct __ShellflipEncode {}
    /// The data fields of `Marker`, decoded.
    #[derive(::shellflip::__private::serde::Deserialize)]
    #[serde(crate = "::shellflip::__private::serde", rename = "Marker")]
    struct __ShellflipDecode {}
    #[automatically_derived]
    impl ::shellflip::HandoverState for Marker {
        const TYPE_NAME: &'static str = "Marker";
        fn encode_state(
            &self,
            state: &mut ::shellflip::StateEncoder<'_>,
        ) -> ::core::result::Result<(), ::shellflip::StateError> {
            state.put_data(&__ShellflipEncode {})
        }
        fn decode_state(
            state: &mut ::shellflip::StateDecoder<'_>,
        ) -> ::core::result::Result<Self, ::shellflip::StateError> {
            let __ShellflipDecode {} = state.take_data()?;
            ::core::result::Result::Ok(Self)
        }
    }
};
