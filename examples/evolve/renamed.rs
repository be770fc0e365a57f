//! `evolve_base` with `a` renamed to `alpha`: found under its former name,
//! and sent with it, so a rollback to `evolve_base` finds `a` again.
use serde::{Deserialize, Serialize};
use shellflip::HandoverState;

#[derive(HandoverState)]
struct State {
    count: u64,
    #[handover(alias = "a")]
    alpha: u64,
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
            alpha: 1,
            b: 2,
            inner: Inner { x: 3, y: 4 },
        }
    }

    fn served(&mut self) -> &mut u64 {
        &mut self.count
    }

    fn describe(&self) -> String {
        let (alpha, b, x, y) = (self.alpha, self.b, self.inner.x, self.inner.y);
        format!("alpha={alpha} b={b} x={x} y={y}")
    }
}

include!("../support/evolve_main.rs");
