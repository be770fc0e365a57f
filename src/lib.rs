//! # shellflip
//!
//! Zero-downtime restarts and upgrades for Tokio services: the listening
//! sockets are inherited by the next generation (never re-bound), typed state
//! is handed over, the new generation is supervised until it is ready, and
//! the old one drains and exits — or, if the new one fails, keeps serving.
//!
//! See the README for a tour; the runtime API lives in
//! [`shellflip_runtime`] and is re-exported here.

pub use shellflip_runtime::*;

pub use shellflip_macros::{restartable, HandoverState};

#[doc(hidden)]
pub mod __private {
    //! Paths used by the code the macros generate. Not a public API.
    pub use serde;
    pub use shellflip_runtime::handover;
}
