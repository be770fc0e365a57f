#[shellflip::restartable]
async fn main(ctx: shellflip::Context, port: u16) {}
