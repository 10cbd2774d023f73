//! Fuzz target `wire_frames`: see `check_wire_frames` in tacit-api's shared checks file.
#![no_main]

#[path = "../../crates/api/tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_wire_frames(data));
