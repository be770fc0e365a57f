// Only descriptors and skipped fields: no serde helpers, an empty payload.
#[derive(HandoverState)]
struct Sockets {
    #[handover(fd)]
    tcp: std::net::TcpListener,
    #[handover(fd)]
    unix: tokio::net::UnixListener,
    #[handover(skip)]
    connections: usize,
}
