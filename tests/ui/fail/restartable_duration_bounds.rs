// The same bounds as the SHELLFLIP_* environment and the CLI: 1ms to 7d,
// zero only where it means off, and always a unit.
#[shellflip::restartable(
    ready_timeout = "8d",
    drain_timeout = "500us",
    probation = "250",
    worker_threads = 2000,
)]
async fn main() {}
