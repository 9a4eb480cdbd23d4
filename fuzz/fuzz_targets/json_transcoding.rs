//! JSON transcoding of request JSON and upstream protobuf replies, with the descriptors of
//! tests/data/types.binpb (every scalar, map, oneof and well-known type). The properties are
//! in switchboard::fuzz::json_transcoding.
#![no_main]

use std::sync::OnceLock;

use switchboard::fuzz::JsonMethods;

static DESCRIPTORS: &[u8] = include_bytes!("../../tests/data/types.binpb");

fn methods() -> &'static JsonMethods {
    static METHODS: OnceLock<JsonMethods> = OnceLock::new();
    METHODS.get_or_init(|| match JsonMethods::from_descriptor_set(DESCRIPTORS) {
        Ok(m) => m,
        Err(e) => panic!("tests/data/types.binpb: {e}"),
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzz::json_transcoding(methods(), data));
