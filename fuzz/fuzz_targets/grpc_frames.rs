//! gRPC frames read by the scanner and the decoder (src/protocol/grpc/frame.rs). The properties are
//! in switchboard::fuzz::grpc_frames.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzz::grpc_frames(data));
