#[shellflip::restartable(restart_signal = "SIGTERM")]
async fn main() {}
