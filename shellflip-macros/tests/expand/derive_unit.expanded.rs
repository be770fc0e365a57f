#[derive(Default)]
struct Marker;
const _: () = {
    #[automatically_derived]
    impl ::shellflip::HandoverState for Marker {
        const TYPE_NAME: &'static str = "Marker";
        const FINGERPRINT: u64 = 0x52ce019de912ff8d;
        fn encode_state(
            &self,
            _fds: &mut ::shellflip::StateFds,
        ) -> ::core::result::Result<::std::vec::Vec<u8>, ::shellflip::StateError> {
            ::shellflip::__private::state::encode_data(Self::TYPE_NAME, &())
        }
        fn decode_state(
            payload: &[u8],
            _fds: &mut ::shellflip::StateFds,
        ) -> ::core::result::Result<Self, ::shellflip::StateError> {
            let () = ::shellflip::__private::state::decode_data(
                Self::TYPE_NAME,
                payload,
            )?;
            ::core::result::Result::Ok(Self)
        }
    }
};
