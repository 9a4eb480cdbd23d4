//! gRPC-Web text bodies decoded as they arrive (TextDecoder in src/protocol/grpc_web.rs). The
//! properties are in switchboard::fuzz::grpc_web_text.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzz::grpc_web_text(data));
