//! The control protocol: frame reader and request/response decoders.
#![no_main]

#[path = "../common/decoders.rs"]
#[allow(dead_code)]
mod decoders;

libfuzzer_sys::fuzz_target!(|data: &[u8]| decoders::control_frame(data));
