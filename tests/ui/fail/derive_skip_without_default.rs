struct Pool {
    size: usize,
}

#[derive(shellflip::HandoverState)]
struct State {
    #[handover(skip)]
    pool: Pool,
}

fn main() {}
