//! The state handover: envelope parser and a derived state's decoder.
#![no_main]

#[path = "../common/decoders.rs"]
#[allow(dead_code)]
mod decoders;

libfuzzer_sys::fuzz_target!(|data: &[u8]| decoders::state_envelope(data));
