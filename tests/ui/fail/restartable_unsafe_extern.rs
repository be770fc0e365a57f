#[shellflip::restartable]
async unsafe extern "C" fn main() {}
