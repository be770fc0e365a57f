//! Talking to a running [shellflip](https://docs.rs/shellflip-tokio) service:
//! its control protocol, the frames it travels in and (feature `client`) a
//! blocking client.
//!
//! A shellflip service listens on a Unix *control socket* for three
//! requests: `restart` (start the next generation and hand over to it),
//! `status` and `stop`. This crate is everything on the client's side of
//! that socket, and the part of the service's side both share:
//!
//! - [`protocol`]: the requests, the answers, their JSON encoding, the
//!   bounds (frame size, timeouts, connection slots);
//! - [`frame`]: the length-prefixed frames every message travels in (the
//!   service's runtime also uses them on its channel between generations);
//! - `client` (feature `client`): `ControlClient`, a blocking client (std
//!   only), also re-exported by the `shellflip` crate as `shellflip::client`;
//! - the `shellflip` command-line tool (feature `cli`, built on that client):
//!   `cargo install --path shellflip-control` in a checkout.
//!
//! It depends on neither Tokio nor the shellflip runtime: the CLI, or a
//! deploy tool that restarts services, compiles this crate alone. The
//! runtime depends on it (without its features) for the protocol and the
//! frames.
//!
//! # Features
//!
//! | feature | default | what |
//! |---|---|---|
//! | `cli` | on | the `shellflip` binary; implies `client`; adds `clap` |
//! | `client` | on, through `cli` | `shellflip_control::client`; adds `nix`, `libc`, `shellflip-settings` |
//!
//! `cli` is on by default so that installing this package installs the
//! CLI. A program that only needs the client turns the defaults off:
//! `shellflip-control = { version = "0.1", default-features = false, features = ["client"] }`;
//! one that only speaks the protocol takes no feature.
#![cfg_attr(
    feature = "client",
    doc = r#"
```no_run
use shellflip_control::client::ControlClient;
use shellflip_control::protocol::Response;

# fn main() -> Result<(), shellflip_control::client::ClientError> {
match ControlClient::restart("/run/my-service.sock")? {
    Response::Restarted(done) => println!("new pid {}", done.pid),
    Response::RestartFailed { reason, .. } => eprintln!("restart failed: {reason}"),
    other => eprintln!("unexpected answer: {other:?}"),
}
# Ok(())
# }
```
"#
)]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "client")]
pub mod client;
pub mod frame;
pub mod protocol;
