#[shellflip::restartable]
fn main() {}
