#[derive(shellflip::HandoverState)]
#[handover(rename = "Other", verison = 2)]
struct State {
    #[handover(defualt)]
    served: u64,
    #[handover(fd = true)]
    listener: std::net::TcpListener,
    #[handover(aliases = "x")]
    peers: Vec<String>,
}

fn main() {}
