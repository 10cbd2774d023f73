//! Fuzz target `kt_record`: the server's key transparency record decoder (`decode` in
//! `crates/server/src/kt/records.rs`, included as it is; see `check_kt_record` in the
//! server's shared checks file).
#![no_main]

#[allow(dead_code, unused_imports)]
#[path = "../../crates/server/src/kt/records.rs"]
mod records;

#[allow(dead_code)]
#[path = "../../crates/server/src/mls_frame.rs"]
mod mls_frame;

#[allow(dead_code)]
#[path = "../../crates/server/tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::check_kt_record(data);
});
