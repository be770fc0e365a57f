#[shellflip::restartable(ready_timeout = "30", drain_timeout = "1.5s")]
async fn main() {}
