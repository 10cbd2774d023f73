//! Fuzz target `link_offer_open`: see `check_link_offer_open` in the shared checks file.
#![no_main]

#[path = "../../crates/protocol/tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::check_link_offer_open(data);
});
