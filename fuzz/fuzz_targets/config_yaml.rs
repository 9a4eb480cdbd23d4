//! Config files (Config::from_yaml). The properties are in switchboard::fuzz::config_yaml.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzz::config_yaml(data));
