//! The pure parts of the side-by-side restart benchmark: the line
//! protocol every benchmarked service speaks, statistics, the report
//! (markdown table and JSON), and the handover state of the state
//! benchmark. The driver is `src/main.rs`; the services are `src/bin/`.
//!
//! Nothing here starts a process: `cargo test -p shellflip-bench` runs
//! only these units.

pub mod proto;
pub mod report;
pub mod service;
pub mod state;
pub mod stats;
