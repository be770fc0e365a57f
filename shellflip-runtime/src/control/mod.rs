//! The control socket: `restart`, `status` and `stop` requests over a Unix
//! stream socket.
//!
//! A service configured with a control socket path listens on it for the
//! whole lineage of generations: the listening socket is inherited by each
//! new generation like any other listener, so a client that connects while a
//! restart is running is still answered (by the old generation until it
//! stops accepting, by the new one after).
//!
//! What travels on the socket (requests, answers, their JSON, the frames and
//! their bounds) is the `shellflip-control` crate's `protocol`, shared with
//! its blocking client and the `shellflip` command-line tool, which
//! therefore do not compile the runtime. This module is the server:
//! binding the socket, accepting connections, handing requests to the
//! supervisor; see `shellflip_control::protocol::MAX_CONNECTIONS` for how it
//! shares its connection slots.
//!
//! # Security
//!
//! The socket file is created with mode `0600` (there is no moment where it
//! is more open), and every connection's peer credentials are checked: only
//! the service's own effective uid and root are answered.

pub(crate) mod server;
