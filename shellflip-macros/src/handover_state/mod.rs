//! `#[derive(HandoverState)]`, in three phases:
//!
//! - [`parse`] reads the `#[handover(...)]` attributes of the struct and of
//!   each field into values, refusing a malformed entry (an unknown key, a
//!   key given twice, a value of the wrong kind) on its tokens and going on
//!   with the next one;
//! - [`validate`] checks what the input is (a struct without lifetime
//!   parameters) and the rules between attributes, fields and types (a
//!   descriptor without `fd`, `default` on a skipped field, colliding
//!   aliases, `from` without `version`), and builds the [`State`] only when
//!   no problem was found: every error of the input is reported at once;
//! - [`expand`] writes the `impl ::shellflip::HandoverState` and its two
//!   private serde helper structs.
//!
//! What the generated code does at run time (matching fields by name,
//! aliases, defaults, migrations, descriptors) is the runtime's
//! `StateEncoder` and `StateDecoder`: the expansion only names the fields
//! and states what their types must implement.

mod expand;
mod parse;
mod validate;

use proc_macro2::TokenStream;
use syn::{DeriveInput, LitStr, Member, Type};

/// What happens to a field across a restart.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Serialized with the state (the default).
    Data,
    /// Handed over as a file descriptor (`#[handover(fd)]`).
    Fd,
    /// Not carried; `Default::default()` in the new generation
    /// (`#[handover(skip)]`).
    Skip,
    /// Serialized as one MessagePack byte string (`Vec<u8>` fields, and
    /// `#[handover(bytes)]` on other byte containers).
    Bytes,
}

impl Role {
    fn keyword(self) -> &'static str {
        match self {
            Role::Data => "data",
            Role::Fd => "fd",
            Role::Skip => "skip",
            Role::Bytes => "bytes",
        }
    }

    fn is_serialized(self) -> bool {
        matches!(self, Role::Data | Role::Bytes)
    }
}

/// `#[handover(default)]` or `#[handover(default = "path")]`.
enum FieldDefault {
    /// `Default::default()`.
    Trait,
    /// A function returning the value.
    Path(syn::ExprPath),
}

/// A checked field.
struct Field {
    /// `self.<member>`: a name or an index.
    member: Member,
    /// The name the field goes by in the state and the fds.
    name: String,
    ty: Type,
    role: Role,
    default: Option<FieldDefault>,
    aliases: Vec<LitStr>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Named,
    Tuple,
    Unit,
}

/// A checked `#[derive(HandoverState)]` input.
struct State {
    input: DeriveInput,
    shape: Shape,
    fields: Vec<Field>,
    version: Option<u32>,
    /// `#[handover(from = "Old")]`: the type and the literal's span.
    from: Option<(Type, proc_macro2::Span)>,
}

/// Expands `#[derive(HandoverState)]` on `input`.
pub(crate) fn expand(input: TokenStream) -> syn::Result<TokenStream> {
    let input: DeriveInput = syn::parse2(input)?;
    let state = validate::state(input)?;
    Ok(expand::state(&state))
}
