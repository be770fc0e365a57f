#[derive(shellflip::HandoverState)]
#[handover(rename = "Other")]
struct State {
    #[handover(default)]
    served: u64,
    #[handover(fd = true)]
    listener: std::net::TcpListener,
}

fn main() {}
