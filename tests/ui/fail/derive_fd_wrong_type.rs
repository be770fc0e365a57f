#[derive(shellflip::HandoverState)]
struct State {
    #[handover(fd)]
    address: String,
}

fn main() {}
