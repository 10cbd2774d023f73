//! Fuzz target `bucket_listing`: the S3 listing reader of `tacit audit --log-dir URL` (see
//! `check_bucket_listing` in the client's shared checks file).
#![no_main]

#[path = "../../crates/client/tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_bucket_listing(data));
