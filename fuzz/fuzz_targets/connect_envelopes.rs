//! Connect streaming request envelopes, gzip included, as the proxy forwards them. The properties
//! are in switchboard::fuzz::connect_envelopes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzz::connect_envelopes(data));
