//! Fuzz target `kt_decode`: key transparency entries and akd lookup and history proofs
//! (see `check_kt_decode_with` in the transparency crate's shared checks file).
#![no_main]

#[path = "../../crates/transparency/tests/fuzz_checks/mod.rs"]
mod checks;

const FIXTURE: &[u8] = include_bytes!("../fixtures/kt_root.bin");

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::check_kt_decode_with(FIXTURE, data);
});
