#[shellflip::restartable(flavor = "multi", on_state_mismatch = "ignore", spawner = "fork", worker_threads = 0, pid_file = "")]
async fn main() {}
