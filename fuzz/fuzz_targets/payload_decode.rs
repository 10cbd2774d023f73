//! Fuzz target `payload_decode`: see `check_payload_decode` in the client's shared checks file.
#![no_main]

#[path = "../../crates/client/tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_payload_decode(data));
