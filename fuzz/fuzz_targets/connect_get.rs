//! The query of a Connect unary GET (src/protocol/connect/get.rs). The properties are in
//! switchboard::fuzz::connect_get.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzz::connect_get(data));
