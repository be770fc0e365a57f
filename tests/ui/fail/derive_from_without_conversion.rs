// `from` names the previous schema but nothing converts it.
#[derive(shellflip::HandoverState)]
struct OldState {
    served: u64,
}

#[derive(shellflip::HandoverState)]
#[handover(version = 2, from = "OldState")]
struct State {
    served: u64,
}

fn main() {}
