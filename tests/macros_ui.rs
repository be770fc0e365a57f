//! Compile-time behaviour of `#[restartable]` and `#[derive(HandoverState)]`:
//! every misuse gives the error recorded in `tests/ui/fail/*.stderr`, and
//! every supported form compiles (and runs) as in `tests/ui/pass/`.
//!
//! After an intended change of a message, regenerate the `.stderr` files
//! with `TRYBUILD=overwrite cargo test --test macros_ui` and review them.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
