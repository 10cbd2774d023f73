//! Replays the committed corpus of the `wire_frames` fuzz target (`fuzz/corpus/wire_frames/`)
//! through the same checks the fuzzer runs, so whatever it found stays a regression test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fuzz_checks;

#[test]
fn wire_frames_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/wire_frames");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        fuzz_checks::check_wire_frames(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n >= 5, "corpus missing from {}", dir.display());
}
