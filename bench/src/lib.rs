//! The pure parts of the side-by-side restart benchmark: statistics, the
//! report (markdown table and JSON), the restart-command section's rows,
//! hop table and goals (`cli`), what every benchmarked service does with a
//! connection, and the handover state of the state benchmark. The echo
//! protocol they speak is the test kit's (`shellflip_testkit::proto`), the
//! pid protocol `service`'s. The driver is `src/main.rs`; the services and
//! restart commands are `src/bin/`.
//!
//! Nothing here starts a process: `cargo test` in `bench/` runs only these
//! units.

pub mod cli;
pub mod report;
pub mod service;
pub mod state;
pub mod stats;
