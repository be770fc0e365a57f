//! The runtime of [shellflip](https://docs.rs/shellflip-tokio): zero-downtime
//! restarts for Tokio services.
//!
//! A service hands its `main` to [`run`] together with a [`Config`]. The
//! runtime builds the Tokio runtime, adopts the listeners and state handed
//! over by the previous generation (if any), runs the service, and answers
//! restart requests (the restart signal, the control socket) by starting the
//! next generation from the same executable path, handing it the very same
//! listening sockets and the encoded state, waiting for it to be ready, and
//! then draining and exiting — or, if the new generation fails, having it
//! killed and carrying on as if nothing happened.
//!
//! The next generation is started by the *spawner*, a small helper process
//! that [`run`] forks at start-up, while the process has a single thread,
//! before the Tokio runtime and the service's code exist. The service
//! process itself never forks or execs after start-up, so it may forbid
//! itself both (a seccomp filter) once ready and still restart.
//! [`SpawnerMode::Inline`] starts the next generation from the service
//! process instead.
//!
//! With the `metrics` feature the runtime records restarts (outcomes,
//! durations, the generation, the state's size, ...) through the `metrics`
//! facade, the counters carried from generation to generation; every log
//! line about one restart is in a `restart` span whose `restart_id` both
//! generations share.
//!
//! Most services use the `#[restartable]` attribute of the `shellflip` crate,
//! which expands to a call of [`run`]; this crate is what it calls.
//!
//! ```no_run
//! use shellflip_runtime::{run, Config, Context};
//! use tokio::io::AsyncWriteExt;
//!
//! fn main() -> std::process::ExitCode {
//!     let config = Config::default().control_socket("/tmp/hello.sock");
//!     run(config, |ctx: Context| async move {
//!         let listener = ctx.tcp_listener("hello", "127.0.0.1:7070")?;
//!         ctx.ready()?;
//!         while let Some((mut stream, _)) = ctx.accept(&listener).await {
//!             let generation = ctx.generation();
//!             ctx.spawn(async move {
//!                 let line = format!("hello from generation {generation}\n");
//!                 let _ = stream.write_all(line.as_bytes()).await;
//!             });
//!         }
//!         Ok::<(), shellflip_runtime::Error>(())
//!     })
//! }
//! ```
#![deny(missing_docs)]
// `unsafe` is allowed in one module only: `fd` (each block with a
// `// SAFETY:` comment).
#![deny(unsafe_code)]
#![forbid(unsafe_op_in_unsafe_fn)]

mod accept;
mod accept_watch;
mod channel;
mod child;
pub mod config;
mod connections;
mod context;
mod control;
mod draining;
mod error;
#[allow(unsafe_code)]
mod fd;
mod frame;
mod generation;
mod keeper;
mod launch;
mod lifecycle;
mod lifecycle_thread;
mod machine;
mod memory;
mod parent;
mod pidfile;
mod profile;
mod registry;
mod shutdown;
mod spawner;
pub mod state;
mod state_cell;
mod supervisor;
mod sync;
mod systemd;
mod telemetry;
mod timing;
mod unix_socket;

pub use accept::{Accept, AcceptBackoff};
pub use config::{
    Config, ConfigError, KeeperMode, RuntimeFlavor, Signal, SpawnerMode, StateMismatch,
};
pub use connections::{
    Connections, HandOverError, HandOverFailed, HandedOver, HandoverStream, StateUndecodable,
    MAX_CONNECTIONS_HANDED_OVER, MAX_CONNECTION_BYTES,
};
pub use context::Context;
pub use error::{Error, RestartError, SocketActivationError};
pub use generation::Admission;
pub use lifecycle::{run, MainResult};
pub use shellflip_settings as settings;
pub use spawner::PROCESS_NAME as SPAWNER_PROCESS_NAME;
pub use state::{HandoverFd, HandoverState, StateDecoder, StateEncoder, StateError, StateFds};
pub use state_cell::StateCell;
pub use tokio_util::sync::CancellationToken;
pub use tokio_util::task::TaskTracker;
pub use unix_socket::UnixSocketError;
