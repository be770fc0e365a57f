#[shellflip::restartable(control, ready_timeout("30s"))]
async fn main() {}
