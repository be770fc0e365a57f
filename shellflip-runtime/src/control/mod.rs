//! The control socket: `restart`, `status` and `stop` requests over a Unix
//! stream socket.
//!
//! A service configured with a control socket path listens on it for the
//! whole lineage of generations: the listening socket is inherited by each
//! new generation like any other listener, so a client that connects while a
//! restart is running is still answered (by the old generation until it
//! stops accepting, by the new one after).
//!
//! - [`protocol`]: what travels on the socket (the wire format is drawn
//!   there), public so that any client can speak it;
//! - the server (private): binding the socket, accepting connections,
//!   handing requests to the supervisor; see [`MAX_CONNECTIONS`] for how it
//!   shares its connection slots.
//!
//! The client used by the `shellflip` command-line tool is not part of the
//! runtime (a service does not need it): it is `shellflip::client`, behind
//! the `client` feature of the `shellflip` crate.
//!
//! # Security
//!
//! The socket file is created with mode `0600` (there is no moment where it
//! is more open), and every connection's peer credentials are checked: only
//! the service's own effective uid and root are answered.

pub mod protocol;
pub(crate) mod server;

pub use protocol::{
    decode_request, decode_response, encode_response, DecodeError, FailureKind, GenerationStatus,
    LastRestart, Phase, Request, Response, RestartSuccess, Status, MAX_FRAME_BYTES,
};
pub use server::{MAX_CONNECTIONS, REQUEST_TIMEOUT};
