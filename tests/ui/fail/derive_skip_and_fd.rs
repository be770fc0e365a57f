#[derive(shellflip::HandoverState)]
struct State {
    #[handover(skip, fd)]
    listener: std::net::TcpListener,
    #[handover(fd)]
    #[handover(skip)]
    other: std::net::TcpListener,
    #[handover(skip, skip)]
    cache: Vec<u8>,
}

fn main() {}
