// `from` names a type that is not a handover state.
#[derive(serde::Serialize, serde::Deserialize)]
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
