#[shellflip::restartable]
async fn main() -> u8 {
    0
}
