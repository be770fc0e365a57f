#[shellflip::restartable]
async fn main<S: shellflip::HandoverState>(ctx: shellflip::Context<S>) {}
