//! `#[derive(HandoverState)]` with every kind of field: data carried
//! across restarts, a skipped field rebuilt with `Default`, and fields
//! handed over as open file descriptors (a file and a UDP socket).
//!
//! ```text
//! cargo run --example stateful -- --listen 127.0.0.1:7002 --control /tmp/sf.sock --audit /tmp/audit.log
//! nc 127.0.0.1 7002    # pid=.. generation=1 visits=1 names=g1 seen=1 beacon=127.0.0.1:40001
//! shellflip restart /tmp/sf.sock
//! nc 127.0.0.1 7002    # pid=.. generation=2 visits=2 names=g1,g2 seen=1 beacon=127.0.0.1:40001
//! ```
//!
//! `examples/stateful_v2.rs` is its "next release" with an incompatible
//! state change, to see it refused; `examples/evolve/` has builds whose
//! state changes are carried (reordered, added, renamed, migrated).
use shellflip::HandoverState;

/// What survives a restart.
#[derive(HandoverState)]
#[handover(version = 1)]
struct State {
    /// Carried: serialized, matched by name in the next generation.
    visits: u64,
    /// Carried: the generations this state went through.
    names: Vec<String>,
    /// Not carried: each generation starts again from `Default`.
    #[handover(skip)]
    seen: u64,
    /// Handed over as an open file: writes keep going to the same file
    /// even if its path is renamed or deleted.
    #[handover(fd)]
    audit: std::fs::File,
    /// Handed over as a socket: the same port in every generation.
    #[handover(fd)]
    beacon: std::net::UdpSocket,
}

impl State {
    fn record_visit(&mut self) -> u64 {
        self.visits += 1;
        self.visits
    }
}

include!("support/stateful_main.rs");
