// Fields added with a default (the type's or a function's), a renamed
// field and a renamed descriptor: the helper gets serde's `default` and
// `alias`, the impl lists the former names it sends.
#[derive(HandoverState)]
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
