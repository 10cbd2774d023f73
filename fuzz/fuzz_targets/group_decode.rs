//! Fuzz target `group_decode`: tacit-groups' decoders (group metadata, member identifiers)
//! and a group member processing the bytes as an MLS message (see `check_group_decode` in
//! `crates/groups/tests/fuzz_checks/mod.rs`).
#![no_main]

#[path = "../../crates/groups/tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::check_group_decode(data);
});
