// `default` where it means nothing, twice, or with a value that is not a
// function's path.
#[derive(shellflip::HandoverState)]
struct State {
    #[handover(skip, default)]
    cache: Vec<u8>,
    #[handover(fd, default)]
    listener: std::net::TcpListener,
    #[handover(default, default = "zero")]
    served: u64,
    #[handover(default = 5)]
    limit: u64,
    #[handover(default = "not a path")]
    port: u16,
}

fn main() {}
