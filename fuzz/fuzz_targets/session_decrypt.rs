//! Fuzz target `session_decrypt`: see `check_session_decrypt` in the shared checks file.
#![no_main]

#[path = "../../crates/protocol/tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::check_session_decrypt(data);
});
