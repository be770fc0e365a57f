// Signal numbers differ between systems: the name is asked for.
#[shellflip::restartable(restart_signal = "10")]
async fn main() {}
