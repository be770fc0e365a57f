#[shellflip::restartable]
async fn serve() {}

fn main() {}
