// Every problem of the struct is reported in one compilation.
#[derive(shellflip::HandoverState)]
#[handover(version = "one")]
struct State<'a> {
    #[handover(skip, fd)]
    listener: std::net::TcpListener,
    #[handover(sikp)]
    cache: Vec<u8>,
    socket: std::net::UdpSocket,
    name: &'a str,
}

fn main() {}
