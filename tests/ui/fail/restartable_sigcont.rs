// SIGCONT is sent on every resume after a stop: refused, with the reason.
#[shellflip::restartable(restart_signal = "SIGCONT")]
async fn main() {}
