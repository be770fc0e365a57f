//! `evolve_base` with a field added at each level, with a default: the
//! state of `evolve_base` is carried with the defaults filled in, and a
//! rollback to `evolve_base` drops the new fields and keeps the rest.
use serde::{Deserialize, Serialize};
use shellflip::HandoverState;

#[derive(HandoverState)]
struct State {
    count: u64,
    a: u64,
    b: u64,
    inner: Inner,
    /// Connections served by builds that have this field.
    #[handover(default = "defaults::extra")]
    extra: u64,
}

#[derive(Serialize, Deserialize)]
struct Inner {
    x: u64,
    y: u64,
    #[serde(default)]
    z: Vec<String>,
}

mod defaults {
    pub fn extra() -> u64 {
        100
    }
}

impl State {
    fn initial() -> State {
        State {
            count: 0,
            a: 1,
            b: 2,
            inner: Inner {
                x: 3,
                y: 4,
                z: Vec::new(),
            },
            extra: defaults::extra(),
        }
    }

    fn served(&mut self) -> &mut u64 {
        self.extra += 1;
        &mut self.count
    }

    fn describe(&self) -> String {
        let (a, b, x, y) = (self.a, self.b, self.inner.x, self.inner.y);
        let (extra, z) = (self.extra, self.inner.z.len());
        format!("a={a} b={b} x={x} y={y} extra={extra} z={z}")
    }
}

include!("../support/evolve_main.rs");
