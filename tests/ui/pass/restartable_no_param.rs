// The smallest restartable service: no parameter, no state, returns ().
#[shellflip::restartable]
async fn main() {}
