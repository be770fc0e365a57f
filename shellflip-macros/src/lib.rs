//! The procedural macros of [shellflip](https://docs.rs/shellflip-tokio):
//! `#[restartable]` and `#[derive(HandoverState)]`.
//!
//! Use them through the `shellflip` crate (`shellflip::restartable`,
//! `shellflip::HandoverState`); the code they generate names
//! `::shellflip::...` and does not work without it.
//!
//! Both macros parse their input, validate it at compile time, with an
//! error on the offending tokens for every problem found (all of them at
//! once), and expand to plain code that calls the runtime, where all the
//! behaviour is: a `main` that builds a `Config` and calls `shellflip::run`;
//! an impl that names each field for the runtime's state encoder and
//! decoder. `cargo expand` shows exactly what they wrote.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod errors;
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
///     while let Some((stream, _peer)) = ctx.accept(&listener).await {
///         // serve `stream` (ctx.spawn it: the drain waits for it)
///     }
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
/// `"1m30s"`; a bare `"0"` only turns the probation off) and lie between
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
/// struct State {
///     served: u64,                       // carried
///     #[handover(alias = "names")]
///     peers: Vec<String>,                // carried; was called `names`
///     #[handover(default)]
///     limits: HashMap<String, u32>,      // added: empty when not received
///     #[handover(skip)]
///     cache: HashMap<String, String>,    // not carried: Default
///     #[handover(fd)]
///     admin: tokio::net::TcpListener,    // handed over as a descriptor
/// }
/// ```
///
/// # How values are matched
///
/// By **name, at every level**: the fields of the state and of the serde
/// types nested in it are matched by field name, enum variants by variant
/// name. Reordering fields never changes a value. A field the previous
/// generation sent that this build does not have is dropped (logged at
/// info with its path, e.g. `State.inner.z`); a field of this build that
/// was not sent takes its default, or the new generation refuses the state
/// naming it. A value whose type changed is refused naming its path, what
/// this build expects and what was received, unless the change is a
/// lossless widening (`u32` → `u64`, `u8` → `i16`, `f32` → `f64`, `T` →
/// `Option<T>`, ...). A refused state fails the new generation's start:
/// the old generation keeps serving.
///
/// # Field attributes
///
/// | attribute | meaning |
/// |---|---|
/// | (none) | carried: serialized; the type needs serde's `Serialize` and `DeserializeOwned` |
/// | (none), on `Vec<u8>` | carried as one byte string (one copy), not one integer per byte |
/// | `#[handover(bytes)]` | the same for other byte containers (`Box<[u8]>`, `bytes::Bytes`, ...): needs `AsRef<[u8]>` and `From<Vec<u8>>` |
/// | `#[handover(default)]` | when the previous generation did not send the field (it was added): `Default::default()`; the type needs `Default` |
/// | `#[handover(default = "path::to_fn")]` | the same with `path::to_fn()` |
/// | `#[handover(alias = "old_name")]` | the field's former name (repeatable): a state that has `old_name` fills this field; and the former names are sent along, so that a build that still calls it `old_name` (after a rollback) finds it too |
/// | `#[handover(skip)]` | not carried: the new generation gets `Default::default()` |
/// | `#[handover(fd)]` | handed over as an open descriptor under the field's name, never serialized: std's and Tokio's `TcpListener`, `TcpStream`, `UdpSocket`, `UnixListener`, `UnixStream`, `UnixDatagram`, `File`, `OwnedFd`, and `Arc` of any of them (`shellflip::HandoverFd`); `alias` works for it too (forward only) |
///
/// Fields are not detected by type: a field of a descriptor type without
/// `#[handover(fd)]` is an error that says so. An `Option` field that was
/// not sent is `None` without any attribute (serde's rule). In nested serde
/// types use serde's own `#[serde(default)]` and `#[serde(alias = ...)]`
/// (their aliases work forward only: the sending build cannot know them).
///
/// # Struct attributes: versions and migrations
///
/// ```ignore
/// mod v1 {
///     #[derive(shellflip::HandoverState)]
///     pub struct State { pub a: u64, pub b: u64 }
/// }
///
/// #[derive(shellflip::HandoverState)]
/// #[handover(version = 2, from = "v1::State")]
/// struct State { total: u64 }
///
/// impl From<v1::State> for State {
///     fn from(old: v1::State) -> Self { State { total: old.a + old.b } }
/// }
/// ```
///
/// - `#[handover(version = N)]`: the schema version (1 when absent), sent
///   with the state. Adding, removing and renaming fields needs no new
///   version; a change that names cannot express (a field that changes
///   meaning or type) does.
/// - `#[handover(from = "OldState")]` (with `version`): a state of an older
///   version is decoded as `OldState` — the previous schema kept in the
///   code, renamed or in a module; it derives `HandoverState` itself and
///   has a lower version — and converted with your `From<OldState>`.
///   `OldState` may itself have a `from`, so chains 1 → 2 → 3 work. A newer
///   version, or an older one without a route, is refused naming both
///   versions.
///
/// Misuse is a compile error on the offending tokens, all of them at once:
/// an unknown attribute (with the closest known one), a duplicate, an alias
/// that collides with a field or another alias, `default` on a field whose
/// type has no `Default` or on a skipped or fd field, `from` without
/// `version`, `from` naming a type that is not a `HandoverState`, has no
/// `From` conversion, or is not older.
///
/// # Structs
///
/// Structs with named fields, tuple structs (their fields are matched by
/// index) and unit structs. Generic structs work: the impl requires of each
/// field type what its role needs (and `Self: Send + Sync + 'static`). Lifetime
/// parameters, enums and unions are refused.
///
/// # What it expands to
///
/// A `const _: () = { ... };` block with two private serde structs for the
/// carried fields, named like the state (`__ShellflipEncode` of references,
/// `__ShellflipDecode` of owned values with serde's `default`/`alias`, both
/// generic over the field types), and `impl ::shellflip::HandoverState`,
/// whose where clause lists what each field type must implement:
/// `encode_state` hands the fd fields over by name and writes the data
/// once; `decode_state` reads the data and rebuilds the struct;
/// `TYPE_NAME` is the struct's name, `VERSION` the version;
/// `FIELD_ALIASES` lists the former names; a migration adds
/// `decode_version`, which calls `StateDecoder::migrate::<OldState, Self>`.
#[proc_macro_derive(HandoverState, attributes(handover))]
pub fn derive_handover_state(input: TokenStream) -> TokenStream {
    handover_state::expand(input.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
