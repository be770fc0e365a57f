//! The first build of the evolving service (see
//! `examples/support/evolve_main.rs`): the state every other build in
//! `examples/evolve/` starts from.
use serde::{Deserialize, Serialize};
use shellflip::HandoverState;

#[derive(HandoverState)]
struct State {
    count: u64,
    a: u64,
    b: u64,
    inner: Inner,
}

#[derive(Serialize, Deserialize)]
struct Inner {
    x: u64,
    y: u64,
}

impl State {
    fn initial() -> State {
        State {
            count: 0,
            a: 1,
            b: 2,
            inner: Inner { x: 3, y: 4 },
        }
    }

    fn served(&mut self) -> &mut u64 {
        &mut self.count
    }

    fn describe(&self) -> String {
        let (a, b, x, y) = (self.a, self.b, self.inner.x, self.inner.y);
        format!("a={a} b={b} x={x} y={y}")
    }
}

include!("../support/evolve_main.rs");
