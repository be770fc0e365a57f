#[shellflip::restartable(drain_timeout = "0s", ready_timeout = "30s1m")]
async fn main() {}
