//! Fuzz target `safety_number_scan`: see `check_safety_number_scan` in the shared checks file.
#![no_main]

#[path = "../../crates/protocol/tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_safety_number_scan(data));
