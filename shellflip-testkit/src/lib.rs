//! Test support for shellflip: start a real service from a private copy of
//! its binary, follow its generations, restart it, drive clients against
//! it, and check the processes it leaves behind.
//!
//! Used by the end-to-end tests (`tests/`), the demo (`examples/demo.rs`)
//! and the benchmark (`bench/`); never published. The modules, by role:
//!
//! - [`binaries`]: where cargo put the example binaries and the `shellflip`
//!   CLI (this crate never runs cargo).
//! - [`harness`]: [`Echo`](harness::Echo), one service and all its
//!   generations: started in a temp dir, followed through the `ready` line
//!   each generation prints, reaped when dropped.
//! - [`control`]: restarts through the control socket and through the CLI,
//!   with the outcome checked.
//! - [`proto`]: the lines every test service speaks (the `ready` line, the
//!   greeting).
//! - [`http`]: HTTP load with a real client (hyper's), fresh and
//!   keep-alive connections; raw HTTP/1.1 exchanges; whether a
//!   connection was accepted.
//! - [`ended`]: whether a service is over: no process left, its sockets
//!   refusing.
//! - [`client`]: one echo exchange, step by step or whole, with its
//!   failures classified; a connection held open.
//! - [`load`]: concurrent clients bounded in count and time, and their
//!   report.
//! - [`census`]: every process of one service (generations, spawners,
//!   wrappers), wherever it was re-parented, found by a marker in its
//!   environment.
//! - [`process`]: `/proc` and `waitpid` helpers: parents, children, the
//!   spawner, zombies, liveness, reaping.
//! - [`wait`]: the event timeout and the polling wait.
//! - [`container`]: a service as PID 1 of a PID namespace, bare or under
//!   `tini`/`dumb-init`, seen from the host.
//! - [`machine`]: the real systemd booted in namespaces of its own, to run
//!   services under it.
//!
//! Everything synchronises on events (a line on a pipe, a socket
//! answering, a process reaped) with a bound, never on a fixed sleep; only
//! processes started here are signalled, by pid.
//!
//! ```no_run
//! use shellflip_testkit::prelude::*;
//!
//! let mut echo = Echo::start(&[]);
//! let load = Load::start(echo.addr, 4, 1_000, EVENT_TIMEOUT);
//! let (pid, generation) = restart_ok(&echo);
//! assert_eq!(echo.next_ready().pid, pid);
//! assert_eq!(generation, 2);
//! load.stop().assert_no_failures(&echo.stderr());
//! ```
#![warn(missing_docs)]

pub mod binaries;
pub mod census;
pub mod client;
pub mod container;
pub mod control;
pub mod ended;
pub mod harness;
pub mod http;
pub mod load;
pub mod machine;
pub mod notify;
pub mod process;
pub mod proto;
pub mod wait;

/// What a test file usually needs, for `use shellflip_testkit::prelude::*`.
pub mod prelude {
    pub use crate::binaries::{cli_binary, example_binary};
    pub use crate::census::{Census, ServiceProcess};
    pub use crate::client::{exchange, hold_connection, Held};
    pub use crate::control::{
        cli, cli_restart_ok, cli_stop_leaves_nothing, restart_failing, restart_fails_with,
        restart_ok, restart_refused_with, simultaneous_restarts, start_slow_restart,
    };
    pub use crate::harness::{deploy_fault, start_faulty, Echo};
    pub use crate::http::{
        is_accepted, wait_accepted, wait_stderr, ClientKind, HttpLoad, HttpReport, RawHttp,
        RawResponse,
    };
    pub use crate::load::{ClientReport, CpuContention, Load};
    pub use crate::process::{
        become_subreaper, children_of, copy_executable, is_alive, kill_pid, parent_of,
        reap_exited_spawners, spawn_retrying_busy, spawner_of, wait_exit, zombies_of,
    };
    pub use crate::proto::{parse_greeting, parse_ready, Greeting, Ready};
    pub use crate::wait::{wait_until, EVENT_TIMEOUT};
}
