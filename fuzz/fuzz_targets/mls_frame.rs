//! Fuzz target `mls_frame`: the relay's reader of an MLS `PrivateMessage` header
//! (`crates/server/src/mls_frame.rs`, included as it is; see `check_mls_frame` in the
//! server's shared checks file), on bytes any group member may post.
#![no_main]

#[allow(dead_code)]
#[path = "../../crates/server/src/mls_frame.rs"]
mod mls_frame;

#[allow(dead_code, unused_imports)]
#[path = "../../crates/server/src/kt/records.rs"]
mod records;

#[allow(dead_code)]
#[path = "../../crates/server/tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::check_mls_frame(data);
});
