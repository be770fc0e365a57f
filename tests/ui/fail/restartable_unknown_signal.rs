#[shellflip::restartable(restart_signal = "SIGUSR3")]
async fn main() {}
