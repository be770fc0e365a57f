// Aliases that would make a received name ambiguous, or mean nothing.
#[derive(shellflip::HandoverState)]
struct State {
    #[handover(alias = "served")]
    served: u64,
    #[handover(alias = "served", alias = "old", alias = "old")]
    count: u64,
    #[handover(alias = "old")]
    hits: u64,
    #[handover(skip, alias = "gone")]
    cache: Vec<u8>,
    #[handover(alias = 3, alias)]
    other: u64,
}

#[derive(shellflip::HandoverState)]
struct Pair(#[handover(alias = "first")] u64, u64);

fn main() {}
