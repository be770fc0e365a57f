#[derive(shellflip::HandoverState)]
#[handover(version = "2")]
struct State {
    #[handover(version = 3)]
    served: u64,
}

#[derive(shellflip::HandoverState)]
#[handover(version = 1, version = 2, skip)]
struct Other {
    served: u64,
}

fn main() {}
