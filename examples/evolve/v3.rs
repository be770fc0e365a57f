//! Version 3 of the evolving service's state: the point became a pair and
//! the counter `served`. It reads version 2 (`evolve_v2`) through its
//! migration, and version 1 (`evolve_base`) through both: 1 -> 2 -> 3.
use shellflip::HandoverState;

/// Version 1, as `evolve_base` declares it.
mod v1 {
    #[derive(shellflip::HandoverState)]
    pub struct State {
        pub count: u64,
        pub a: u64,
        pub b: u64,
        pub inner: super::v2::Inner,
    }
}

/// Version 2, as `evolve_v2` declares it.
mod v2 {
    #[derive(shellflip::HandoverState)]
    #[handover(version = 2, from = "super::v1::State")]
    pub struct State {
        pub count: u64,
        pub total: u64,
        pub inner: Inner,
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    pub struct Inner {
        pub x: u64,
        pub y: u64,
    }

    impl From<super::v1::State> for State {
        fn from(old: super::v1::State) -> State {
            State {
                count: old.count,
                total: old.a + old.b,
                inner: old.inner,
            }
        }
    }
}

#[derive(HandoverState)]
#[handover(version = 3, from = "v2::State")]
struct State {
    served: u64,
    total: u64,
    point: (u64, u64),
}

impl From<v2::State> for State {
    fn from(old: v2::State) -> State {
        State {
            served: old.count,
            total: old.total,
            point: (old.inner.x, old.inner.y),
        }
    }
}

impl State {
    fn initial() -> State {
        State {
            served: 0,
            total: 3,
            point: (3, 4),
        }
    }

    fn served(&mut self) -> &mut u64 {
        &mut self.served
    }

    fn describe(&self) -> String {
        let (total, (x, y)) = (self.total, self.point);
        format!("total={total} point={x},{y}")
    }
}

include!("../support/evolve_main.rs");
