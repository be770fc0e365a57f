//! The procedural macros of [shellflip](https://docs.rs/shellflip):
//! `#[restartable]` and `#[derive(HandoverState)]`.
//!
//! Use them through the `shellflip` crate (`shellflip::restartable`,
//! `shellflip::HandoverState`); the code they generate names
//! `::shellflip::...` and does not work without it.
//!
//! Both macros are thin: they check their input at compile time, with an
//! error on the offending tokens for every problem found (all of them at
//! once), and expand to a few lines that call the runtime. `cargo expand`
//! shows exactly what they wrote.
#![deny(missing_docs)]

mod errors;
mod fingerprint;
mod handover_state;
mod restartable;
#[cfg(test)]
mod snapshots;
mod values;

use proc_macro::TokenStream;

/// Turns `async fn main` into a restartable service.
///
/// The function becomes a plain `fn main() -> ExitCode` that builds a
/// `shellflip::Config` from the options and hands the function to
/// `shellflip::run`, which builds the Tokio runtime, adopts what the
/// previous generation handed over, runs `main`, and takes care of
/// restarts, draining and exit.
///
/// ```ignore
/// use shellflip::{restartable, Context, HandoverState};
///
/// #[derive(HandoverState, Default)]
/// struct State {
///     served: u64,
/// }
///
/// #[restartable(control = "/run/echo.sock", drain_timeout = "10s")]
/// async fn main(ctx: Context<State>) -> Result<(), shellflip::Error> {
///     let listener = ctx.tcp_listener("echo", "127.0.0.1:7000")?;
///     ctx.ready()?;
///     // accept until ctx.shutdown() ...
///     Ok(())
/// }
/// ```
///
/// # The function
///
/// - `async fn main()` for a service that hands over no state, or
///   `async fn main(ctx: shellflip::Context<State>)` (any pattern for the
///   parameter: `ctx`, `mut ctx`, `_`) where `State` implements
///   `HandoverState`.
/// - It returns `()` or `Result<(), E>` with `E: Display`; an `Err` is
///   printed and the process exits with a failure status.
/// - No generics, `self`, `const`, `unsafe`, `extern` or second parameter.
///
/// # Options
///
/// All are optional, written `name = "value"` (`worker_threads = 4` is an
/// integer). Which options there are, what each means, accepts and
/// defaults to, and the `SHELLFLIP_*` environment variable that overrides
/// it when the service starts, is in one table: the [settings
/// table](shellflip_settings#the-settings) of `shellflip::settings` (the
/// README's Configuration section shows the same table, and tests keep
/// both equal to the data the macro itself reads its option names from).
///
/// Values are checked at compile time by the same code that checks the
/// environment at start-up and the CLI's `--timeout`, so they are accepted
/// or refused alike: durations need a unit (`"30s"`, `"500ms"`,
/// `"1m30s"`; a bare `"0"` only turns the ready grace off) and lie between
/// 1ms and 7 days; signals are named, from a short list (`"SIGUSR1"`,
/// `"SIGUSR2"`, `"SIGHUP"`, ...; `SIGTERM`, `SIGCONT` and the like are
/// refused with the reason); `worker_threads` is 1 to 1024. Every problem
/// is reported on its literal, all of them at once.
///
/// # What it expands to
///
/// ```ignore
/// fn main() -> ::std::process::ExitCode {
///     async fn main(ctx: Context<State>) -> Result<(), shellflip::Error> {
///         // the body, as written
///     }
///     ::shellflip::run(
///         ::shellflip::Config::default()
///             .control_socket("/run/echo.sock")
///             .drain_timeout(::std::time::Duration::from_secs(10)),
///         main,
///     )
/// }
/// ```
///
/// The function is kept whole inside the generated `main`, so its return
/// type, `?` and `return` behave as written. A `main` without a parameter
/// is called as `|_: ::shellflip::Context| main()`.
#[proc_macro_attribute]
pub fn restartable(args: TokenStream, item: TokenStream) -> TokenStream {
    restartable::expand_or_errors(args.into(), item.into()).into()
}

/// Lets a struct be handed over to the next generation.
///
/// ```ignore
/// use std::collections::HashMap;
/// use shellflip::HandoverState;
///
/// #[derive(HandoverState)]
/// #[handover(version = 2)]
/// struct State {
///     served: u64,                       // serialized
///     names: Vec<String>,                // serialized
///     #[handover(skip)]
///     cache: HashMap<String, String>,    // rebuilt with Default
///     #[handover(fd)]
///     admin: tokio::net::TcpListener,    // handed over as a descriptor
/// }
/// ```
///
/// # Fields
///
/// - By default a field is serialized (MessagePack): its type needs serde's
///   `Serialize` and `DeserializeOwned` (the service needs serde only for
///   its own field types). A field type that lacks them is reported on the
///   field.
/// - `#[handover(fd)]`: the field is handed over as a file descriptor,
///   under the field's name (its index in a tuple struct), never
///   serialized. Its type implements `shellflip::HandoverFd`: `OwnedFd`,
///   std's and Tokio's `TcpListener`, `TcpStream`, `UdpSocket`,
///   `UnixListener`, `UnixStream`, `UnixDatagram`, `File`, and `Arc` of any
///   of them. Fields are not detected by type: a field of one of these
///   types without `#[handover(fd)]` is an error that says so.
/// - `#[handover(skip)]`: not carried; the new generation gets
///   `Default::default()`.
///
/// # Structs
///
/// Structs with named fields, tuple structs and unit structs. Generic
/// structs work: the impl requires of each field type what its role needs
/// (and `Self: Send + 'static`). Lifetime parameters, enums and unions are
/// refused.
///
/// # Compatibility: `#[handover(version = N)]` and the fingerprint
///
/// `HandoverState::FINGERPRINT` is computed at compile time (FNV-1a, 64
/// bits) from the version (0 when absent), the kind of struct, and the
/// name, role (data or fd) and type — as written — of every field that
/// crosses the restart. Skipped fields do not count, nor does the order of
/// named fields. A new generation that receives a state with another
/// fingerprint or type name refuses it (or starts fresh, with
/// `on_state_mismatch = "fresh"`). Bump the version when the meaning of the
/// data changes without its declaration changing. Generic structs get one
/// fingerprint for all their instantiations.
///
/// # What it expands to
///
/// A `const _: () = { ... };` block with two private serde structs for the
/// data fields (`__ShellflipEncode` of references, `__ShellflipDecode` of
/// owned values, both generic over the field types) and
/// `impl ::shellflip::HandoverState for State`, whose where clause lists
/// what each field type must implement. `TYPE_NAME` is the struct's name.
#[proc_macro_derive(HandoverState, attributes(handover))]
pub fn derive_handover_state(input: TokenStream) -> TokenStream {
    handover_state::expand(input.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
