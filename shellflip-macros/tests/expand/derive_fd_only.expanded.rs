struct Sockets {
    #[handover(fd)]
    tcp: std::net::TcpListener,
    #[handover(fd)]
    unix: tokio::net::UnixListener,
    #[handover(skip)]
    connections: usize,
}
const _: () = {
    #[automatically_derived]
    impl ::shellflip::HandoverState for Sockets
    where
        std::net::TcpListener: ::shellflip::HandoverFd,
        tokio::net::UnixListener: ::shellflip::HandoverFd,
        usize: ::core::default::Default,
    {
        const TYPE_NAME: &'static str = "Sockets";
        const FINGERPRINT: u64 = 0x051daacca37d75e7;
        fn encode_state(
            &self,
            fds: &mut ::shellflip::StateFds,
        ) -> ::core::result::Result<::std::vec::Vec<u8>, ::shellflip::StateError> {
            fds.put_field("tcp", &self.tcp)?;
            fds.put_field("unix", &self.unix)?;
            ::shellflip::__private::state::encode_data(Self::TYPE_NAME, &())
        }
        fn decode_state(
            payload: &[u8],
            fds: &mut ::shellflip::StateFds,
        ) -> ::core::result::Result<Self, ::shellflip::StateError> {
            let () = ::shellflip::__private::state::decode_data(
                Self::TYPE_NAME,
                payload,
            )?;
            ::core::result::Result::Ok(Self {
                tcp: fds.take_field("tcp")?,
                unix: fds.take_field("unix")?,
                connections: ::core::default::Default::default(),
            })
        }
    }
};
