#[shellflip::restartable(contrl = "/run/app.sock", listen = "0.0.0.0:80")]
async fn main() {}
