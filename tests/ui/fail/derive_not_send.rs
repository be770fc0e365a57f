use std::rc::Rc;

#[derive(shellflip::HandoverState)]
struct State {
    #[handover(skip)]
    shared: Rc<u64>,
}

fn main() {}
