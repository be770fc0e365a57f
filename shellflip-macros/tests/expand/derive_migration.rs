// A migration: version 2 reads version 1 (or older, through the previous
// schema's own migration) as `v1::State` and converts it with `From`.
#[derive(HandoverState)]
#[handover(version = 2, from = "v1::State")]
struct State {
    total: u64,
}
