//! Talking to a running [shellflip](https://docs.rs/shellflip) service:
//! its control protocol and the frames it travels in.
//!
//! A shellflip service listens on a Unix *control socket* for three
//! requests: `restart` (start the next generation and hand over to it),
//! `status` and `stop`. This crate is the part of that socket both sides
//! share:
//!
//! - [`protocol`]: the requests, the answers, their JSON encoding, the
//!   bounds (frame size, timeouts, connection slots);
//! - [`frame`]: the length-prefixed frames every message travels in (the
//!   service's runtime also uses them on its channel between generations).
//!
//! It depends on neither Tokio nor the shellflip runtime; the runtime
//! depends on it for the protocol and the frames.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod frame;
pub mod protocol;
