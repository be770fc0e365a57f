//! Version 2 of the evolving service's state: `a` and `b` became their
//! sum. The state of `evolve_base` (version 1, kept below as `v1::State`)
//! is migrated with `From`.
use serde::{Deserialize, Serialize};
use shellflip::HandoverState;

/// The previous schema, as `evolve_base` declares it.
mod v1 {
    #[derive(shellflip::HandoverState)]
    pub struct State {
        pub count: u64,
        pub a: u64,
        pub b: u64,
        pub inner: super::Inner,
    }
}

#[derive(HandoverState)]
#[handover(version = 2, from = "v1::State")]
struct State {
    count: u64,
    total: u64,
    inner: Inner,
}

impl From<v1::State> for State {
    fn from(old: v1::State) -> State {
        State {
            count: old.count,
            total: old.a + old.b,
            inner: old.inner,
        }
    }
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
            total: 3,
            inner: Inner { x: 3, y: 4 },
        }
    }

    fn served(&mut self) -> &mut u64 {
        &mut self.count
    }

    fn describe(&self) -> String {
        let (total, x, y) = (self.total, self.inner.x, self.inner.y);
        format!("total={total} x={x} y={y}")
    }
}

include!("../support/evolve_main.rs");
