//! The pure parts of the side-by-side restart benchmark: statistics, the
//! report (markdown table and JSON), what every benchmarked service does
//! with a connection, and the handover state of the state benchmark. The
//! protocol they speak is the test kit's (`shellflip_testkit::proto`). The
//! driver is `src/main.rs`; the services are `src/bin/`.
//!
//! Nothing here starts a process: `cargo test` in `bench/` runs only these
//! units.

pub mod report;
pub mod service;
pub mod state;
pub mod stats;
