//! Fuzz target `session_state_decode`: see `check_session_state_decode` in the shared checks file.
#![no_main]

#[path = "../../crates/protocol/tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_session_state_decode(data));
