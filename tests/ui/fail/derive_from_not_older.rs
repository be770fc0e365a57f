// The previous schema must have a lower version.
#[derive(shellflip::HandoverState)]
#[handover(version = 3)]
struct OldState {
    served: u64,
}

#[derive(shellflip::HandoverState)]
#[handover(version = 2, from = "OldState")]
struct State {
    served: u64,
}

impl From<OldState> for State {
    fn from(old: OldState) -> Self {
        State { served: old.served }
    }
}

fn main() {}
