//! `evolve_base` with `inner.x` changed from `u64` to `i32`: not a lossless
//! widening, so a generation of this build refuses the state of
//! `evolve_base` ("`State.inner.x` is i32 in this build but the previous
//! generation sent u64") and the old generation keeps serving.
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
    x: i32,
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
