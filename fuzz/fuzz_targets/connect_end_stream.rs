//! Upstream trailers rendered as a Connect end-stream message and error body. The properties are in
//! switchboard::fuzz::connect_end_stream.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzz::connect_end_stream(data));
