//! Fuzz target `archive_open`: see `check_archive_open` in the shared checks file.
#![no_main]

#[path = "../../crates/protocol/tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_archive_open(data));
