//! `evolve_base` with its fields declared in another order, at both levels:
//! every value stays where its name says.
use serde::{Deserialize, Serialize};
use shellflip::HandoverState;

#[derive(HandoverState)]
struct State {
    inner: Inner,
    b: u64,
    count: u64,
    a: u64,
}

#[derive(Serialize, Deserialize)]
struct Inner {
    y: u64,
    x: u64,
}

impl State {
    fn initial() -> State {
        State {
            inner: Inner { y: 4, x: 3 },
            b: 2,
            count: 0,
            a: 1,
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
