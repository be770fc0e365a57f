#[shellflip::restartable]
struct Service;

fn main() {}
