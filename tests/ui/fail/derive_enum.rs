#[derive(shellflip::HandoverState)]
enum Mode {
    Serving,
    Draining,
}

fn main() {}
