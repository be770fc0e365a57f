//! The "next release" of `examples/stateful.rs` with an incompatible state
//! change: `visits` became a `u32`. Small numbers would fit, but the state
//! records the type each value was declared with, and `u64` -> `u32` is not
//! a lossless widening: a generation of this build refuses the state of
//! `stateful` ("`State.visits` is u32 in this build but the previous
//! generation sent u64") and the old generation keeps serving — unless the
//! service runs with `on_state_mismatch = "fresh"` (or
//! `SHELLFLIP_ON_STATE_MISMATCH=fresh`), in which case it starts anew.
use shellflip::HandoverState;

#[derive(HandoverState)]
#[handover(version = 1)]
struct State {
    visits: u32,
    names: Vec<String>,
    #[handover(skip)]
    seen: u64,
    #[handover(fd)]
    audit: std::fs::File,
    #[handover(fd)]
    beacon: std::net::UdpSocket,
}

impl State {
    fn record_visit(&mut self) -> u64 {
        self.visits += 1;
        u64::from(self.visits)
    }
}

include!("support/stateful_main.rs");
