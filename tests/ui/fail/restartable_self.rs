#[shellflip::restartable]
async fn main(&self) {}
