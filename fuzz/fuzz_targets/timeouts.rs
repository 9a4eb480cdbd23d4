//! grpc-timeout and connect-timeout-ms values (src/protocol/grpc/timeout.rs). The properties are in
//! switchboard::fuzz::timeouts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzz::timeouts(data));
