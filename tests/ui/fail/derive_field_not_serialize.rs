struct Connection {
    id: u64,
}

#[derive(shellflip::HandoverState)]
struct State {
    served: u64,
    current: Vec<Connection>,
}

fn main() {}
