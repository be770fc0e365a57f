#[shellflip::restartable]
async fn main(port: u16) {}
