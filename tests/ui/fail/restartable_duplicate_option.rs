#[shellflip::restartable(drain_timeout = "10s", control = "/run/a.sock", drain_timeout = "20s")]
async fn main() {}
