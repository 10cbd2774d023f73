//! Replays the committed corpus of the fuzz target `payload_decode`
//! (`fuzz/corpus/payload_decode/`) through the check the target runs
//! (`tests/fuzz_checks/mod.rs`), so every input a fuzzer kept stays a regression test under
//! plain `cargo test`. See `fuzz/README.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)] // a test file

mod fuzz_checks;

use std::path::Path;

use fuzz_checks::payload::Payload;
use fuzz_checks::{check_bucket_listing, check_payload_decode};

#[test]
fn payload_decode() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/payload_decode");
    let mut decoded = 0;
    let mut files = 0;
    let mut roots = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        check_payload_decode(&data);
        files += 1;
        decoded += usize::from(Payload::decode(&data).is_ok());
        roots += usize::from(matches!(Payload::decode(&data), Ok(Payload::Text { root: Some(_), .. })));
    }
    // A text carrying the sender's newest key transparency root (kind 7) is among them.
    assert!(roots >= 1, "no seed carries a root");
    // Not vacuous: the seeds hold every kind, valid and not.
    assert!(files >= 10 && decoded >= 6 && decoded < files, "{decoded} of {files} decode");
}

/// The corpus of the fuzz target `bucket_listing` (`fuzz/corpus/bucket_listing/`): a real
/// S3 page, a last page, and junk; the check never fails, and the real pages yield keys.
#[test]
fn bucket_listing() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/bucket_listing");
    let (mut files, mut with_keys) = (0, 0);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        check_bucket_listing(&data);
        files += 1;
        with_keys +=
            usize::from(!fuzz_checks::listing::parse_listing(&String::from_utf8_lossy(&data)).0.is_empty());
    }
    assert!(files >= 4 && with_keys >= 2 && with_keys < files, "{with_keys} of {files} list keys");
}
