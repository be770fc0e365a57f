struct State {
    served: u64,
}

#[shellflip::restartable]
async fn main(ctx: shellflip::Context<State>) {}
