//! Fuzz target `identity_decode`: see `check_identity_decode` in the shared checks file.
#![no_main]

#[path = "../../crates/protocol/tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_identity_decode(data));
