struct Sockets {
    #[handover(fd)]
    tcp: std::net::TcpListener,
    #[handover(fd)]
    unix: tokio::net::UnixListener,
    #[handover(skip)]
    connections: usize,
}
const _: () = {
    /// The data fields of `Sockets`, borrowed for encoding.
    #[derive(::shellflip::__private::serde::Serialize)]
    #[serde(crate = "::shellflip::__private::serde", rename = "Sockets")]
    struct __ShellflipEncode {}
    /// The data fields of `Sockets`, decoded.
    #[derive(::shellflip::__private::serde::Deserialize)]
    #[serde(crate = "::shellflip::__private::serde", rename = "Sockets")]
    struct __ShellflipDecode {}
    #[automatically_derived]
    impl ::shellflip::HandoverState for Sockets
    where
        std::net::TcpListener: ::shellflip::HandoverFd,
        tokio::net::UnixListener: ::shellflip::HandoverFd,
        usize: ::core::default::Default,
    {
        const TYPE_NAME: &'static str = "Sockets";
        fn encode_state(
            &self,
            state: &mut ::shellflip::StateEncoder<'_>,
        ) -> ::core::result::Result<(), ::shellflip::StateError> {
            state.put_fd("tcp", &self.tcp)?;
            state.put_fd("unix", &self.unix)?;
            state.put_data(&__ShellflipEncode {})
        }
        fn decode_state(
            state: &mut ::shellflip::StateDecoder<'_>,
        ) -> ::core::result::Result<Self, ::shellflip::StateError> {
            let __ShellflipDecode {} = state.take_data()?;
            ::core::result::Result::Ok(Self {
                tcp: state.take_fd("tcp")?,
                unix: state.take_fd("unix")?,
                connections: ::core::default::Default::default(),
            })
        }
    }
};
