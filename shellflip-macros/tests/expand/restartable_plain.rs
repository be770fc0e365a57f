// The smallest service: no options, no state.
#[restartable]
async fn main() {
    println!("serving");
}
