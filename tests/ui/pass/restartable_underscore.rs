// The context may be bound to `_`, and spelled with its full path.
#[derive(shellflip::HandoverState)]
struct Counters(u64);

#[shellflip::restartable]
async fn main(_: ::shellflip::Context<Counters>) {}
