#[derive(shellflip::HandoverState)]
struct State<'a> {
    name: &'a str,
}

fn main() {}
