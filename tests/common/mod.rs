//! The end-to-end tests' helpers: the shellflip test kit
//! (`shellflip-testkit/`), whose prelude every test file takes with
//! `use common::*;`.

pub use shellflip_testkit::prelude::*;
