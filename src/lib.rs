//! # shellflip
//!
//! Zero-downtime restarts and upgrades for Tokio services: the listening
//! sockets are inherited by the next generation (never re-bound), typed state
//! is handed over (matched by field name, so it may change from build to
//! build), the new generation is supervised until it is ready and through a
//! short probation, and the old one drains — or hands its live connections
//! over — and exits; if the new one fails, the old one keeps serving.
//!
//! ## Quick start
//!
//! ```toml
//! [dependencies]
//! shellflip-tokio = "0.1"
//! tokio = { version = "1", features = ["net", "io-util", "macros"] }
//! ```
//!
//! The package is `shellflip-tokio` and its library `shellflip` (the name
//! `shellflip` in the public registry is another crate). Keep that key: the
//! macros' expansions name `::shellflip`. Until a release exists, depend on
//! a checkout: `shellflip-tokio = { version = "0.1", path = "../shellflip" }`.
//!
//! ```no_run
//! use shellflip::{restartable, Context, HandoverState};
//! use tokio::io::AsyncWriteExt;
//!
//! /// Kept across restarts.
//! #[derive(HandoverState, Default)]
//! struct State {
//!     served: u64,
//! }
//!
//! #[restartable(control = "/tmp/hello.sock", drain_timeout = "10s")]
//! async fn main(ctx: Context<State>) -> Result<(), shellflip::Error> {
//!     let listener = ctx.tcp_listener("hello", "127.0.0.1:7070")?;
//!     let state = ctx.state();
//!     ctx.ready()?;
//!     // Until a successor takes over, or a stop.
//!     while let Some((mut stream, _)) = ctx.accept(&listener).await {
//!         let served = state.update(|s| { s.served += 1; s.served });
//!         let generation = ctx.generation();
//!         ctx.spawn(async move {
//!             let line = format!("hello #{served} from generation {generation}\n");
//!             let _ = stream.write_all(line.as_bytes()).await;
//!         });
//!     }
//!     Ok(()) // the spawned tasks drain
//! }
//! ```
//!
//! Run it, then `shellflip restart /tmp/hello.sock` (or `kill -USR1 <pid>`):
//! the next generation starts from the same executable path, takes over the
//! listener and `served`, and the old one exits once its connections are
//! done. Build a new binary to that path first and the restart is an
//! upgrade.
//!
//! The next generation is started by the *spawner*, a small helper process
//! that [`run`] forks at start-up, before the Tokio runtime and any of your
//! code exist; the service process itself never forks or execs after
//! start-up, so it may forbid itself both (seccomp) once ready and still
//! restart. [`SpawnerMode`] describes it and its alternative.
//!
//! ## `#[restartable(...)]` options
//!
//! All optional; every one can also be set in [`Config`], and most can be
//! overridden when the service starts by a `SHELLFLIP_*` variable. The
//! options, their defaults, accepted values and variables are in one table,
//! the [settings table](settings#the-settings) (also in the README's
//! Configuration section). Attribute, environment and the CLI's `--timeout`
//! follow the same rules: durations need a unit (`"30s"`, `"1m30s"`) and lie
//! between 1ms and 7 days; the restart signal is one of [`Signal::ALL`].
//!
//! With `spawner = "inline"` the service process starts the next generation
//! itself instead of its spawner (in code: [`Config::spawner`]).
//!
//! A path chosen at run time (say from a `--control` flag) is opened from
//! `main` with [`Context::control_socket`].
//!
//! ## `#[derive(HandoverState)]`
//!
//! | attribute | where | meaning |
//! |---|---|---|
//! | (none) | field | carried: serialized; the type needs `Serialize` + `DeserializeOwned` |
//! | (none), on a `Vec<u8>` | field | carried as one byte string (not one integer per byte): fast for large blobs |
//! | `#[handover(bytes)]` | field | the same for other byte containers (`Box<[u8]>`, `bytes::Bytes`, …): needs `AsRef<[u8]>` + `From<Vec<u8>>` |
//! | `#[handover(default)]` | field | added field: `Default::default()` when the previous generation did not send it |
//! | `#[handover(default = "path::to_fn")]` | field | the same with `path::to_fn()` |
//! | `#[handover(alias = "old_name")]` | field | renamed field: found under its former name (repeatable); the former names are sent along, so a rollback finds it too |
//! | `#[handover(skip)]` | field | not carried; the new generation gets `Default::default()` |
//! | `#[handover(fd)]` | field | handed over as an open descriptor, never serialized: std or tokio `TcpListener`, `UnixListener`, `UdpSocket`, `TcpStream`, `UnixStream`, `File`, `OwnedFd`, or an `Arc` of one |
//! | `#[handover(version = N)]` | struct | the schema version (1 when absent) |
//! | `#[handover(from = "OldState")]` | struct | with `version`: an older state is decoded as `OldState` (the previous schema, kept in the code) and converted with your `From<OldState>`; chains work |
//!
//! Values are matched **by name at every level** (fields of nested serde
//! types and enum variants included), so reordering fields never changes a
//! value; a field the new build does not have is dropped and logged; a
//! field it has but did not receive takes its default or is refused;
//! lossless widenings (`u32` → `u64`, `f32` → `f64`, `T` → `Option<T>`, …)
//! are accepted and every other type change is refused with a message
//! naming the field's path (`State.inner.x`), what this build expects and
//! what was received. The new generation then fails its start and the old
//! one keeps serving; with `on_state_mismatch = "fresh"` it starts with
//! fresh state instead. Your own types nested in a carried field need
//! serde's derives (add `serde` to your dependencies for that). The rules,
//! the wire format and what each refusal says are in `docs/state.md`.
//!
//! ## What the macros write
//!
//! `#[restartable]` keeps your function as it is, nested in a plain `main`
//! that builds the config and calls [`run`]:
//!
//! ```text
//! fn main() -> ::std::process::ExitCode {
//!     async fn main(ctx: Context<State>) -> Result<(), shellflip::Error> { /* your body */ }
//!     ::shellflip::run(::shellflip::Config::default().control_socket("/tmp/hello.sock"), main)
//! }
//! ```
//!
//! `#[derive(HandoverState)]` writes an `impl HandoverState` whose
//! `encode_state`/`decode_state` hand the fd fields over by name and the
//! data fields through two small serde helper structs (with serde's
//! `default` and `alias` where you asked for them), and, for a migration,
//! a `decode_version` that goes through the previous schema. To see exactly what was generated for your code,
//! install `cargo-expand` and run `cargo expand --bin your-service` (or
//! `cargo expand --example echo` in this repository); the expansions of
//! representative inputs are also checked in under
//! `shellflip-macros/tests/expand/`.
//!
//! ## HTTP services
//!
//! With the `axum` feature (or `hyper`, for any hyper or tower service),
//! `shellflip::http::serve(&ctx, listener, router).await` serves HTTP/1.1
//! and HTTP/2 on a restartable listener and loses no request across a
//! restart: connections already accepted are served, keep-alive clients are
//! told `Connection: close` during the drain, HTTP/2 clients a GOAWAY, and
//! WebSockets are drained (see the `http` module). Both features are off by
//! default; without them nothing of hyper or axum is compiled.
//!
//! ## Metrics
//!
//! With the `metrics` feature (off by default; without it no `metrics`
//! crate is compiled) the runtime records restarts through the `metrics`
//! facade — `shellflip_restarts_total{outcome}`, the restart durations, the
//! generation, the generations draining, the state's size, the connections
//! handed over, the probation rollbacks — to the recorder the service
//! installs before `ready()` (say `metrics-exporter-prometheus`; see
//! `examples/http.rs`). The counters go on across generations: each
//! generation exposes its predecessors' totals and its own, never less than
//! was exposed before. The README's Metrics section lists them, with PromQL.
//!
//! ## Talking to a running service
//!
//! The `shellflip` command-line tool restarts, inspects and stops a service
//! through its control socket; it is the `shellflip-control` package
//! (`cargo install --path shellflip-control` in a checkout), which compiles
//! neither Tokio nor the runtime. Its blocking client is `shellflip::client`
//! (feature `client`, off by default: a service compiles no client); the
//! protocol is [`control`].
//!
//! ## Without the macros
//!
//! [`run`] takes a [`Config`] and any `FnOnce(Context<S>) -> impl Future`;
//! the macros only write that call for you.
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     let config = shellflip::Config::default().control_socket("/tmp/plain.sock");
//!     shellflip::run(config, |ctx: shellflip::Context| async move {
//!         let _listener = ctx.tcp_listener("plain", "127.0.0.1:7071")?;
//!         ctx.ready()?;
//!         ctx.shutdown().await;
//!         Ok::<(), shellflip::Error>(())
//!     })
//! }
//! ```
#![forbid(unsafe_code)]

pub use shellflip_runtime::*;

pub use shellflip_macros::{restartable, HandoverState};

/// The control protocol: the requests a service's control socket takes
/// (`restart`, `status`, `stop`), its answers, their JSON encoding and
/// bounds. It is the `shellflip-control` crate's `protocol`, re-exported.
#[doc(inline)]
pub use shellflip_control::protocol as control;

/// A blocking client of a service's control socket (std only): what the
/// `shellflip` command-line tool uses. It is the `shellflip-control`
/// crate's `client`, re-exported.
#[cfg(feature = "client")]
#[doc(inline)]
pub use shellflip_control::client;

#[cfg(feature = "hyper")]
pub mod http;

#[doc(hidden)]
pub mod __private {
    //! Paths used by the code the macros generate. Not a public API.
    pub use serde;
    pub use shellflip_runtime::state;
}
