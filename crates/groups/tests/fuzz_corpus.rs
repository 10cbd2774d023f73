//! Replays the committed corpus of the fuzz target `group_decode`
//! (`fuzz/corpus/group_decode/`) through the check the target runs
//! (`tests/fuzz_checks/mod.rs`). `generate_corpus` (ignored) rewrites the seeds:
//! `cargo test -p tacit-groups --test fuzz_corpus -- --ignored generate_corpus`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod fuzz_checks;

use std::path::PathBuf;

use fuzz_checks::check_group_decode;
use tacit_groups::{GroupMeta, MemberId};
use tacit_protocol::{AccountName, DeviceId};

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/group_decode")
}

#[test]
fn group_decode() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus()).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 4, "corpus {} is nearly empty", corpus().display());
    let mut accepted = 0;
    for path in files {
        let data = std::fs::read(&path).unwrap();
        let r = std::panic::catch_unwind(|| check_group_decode(&data));
        accepted +=
            usize::from(r.unwrap_or_else(|_| panic!("group_decode: check failed on {}", path.display())));
    }
    // The seeds include a metadata encoding and an identifier: if they are not accepted,
    // the check reads nothing. (The message seeds are of another instance of the fixture's
    // group, whose keys and id come from AWS-LC's generator, so they are refused whole: they
    // seed the fuzzer with valid MLS framing.)
    assert!(accepted >= 2, "the seeds are not accepted ({accepted})");
}

#[test]
#[ignore = "rewrites fuzz/corpus/group_decode"]
fn generate_corpus() {
    let dir = corpus();
    std::fs::create_dir_all(&dir).unwrap();
    let meta = GroupMeta::new("Family", "🏡", vec![AccountName::new("alice").unwrap()]).unwrap();
    let member = MemberId { account: AccountName::new("bob").unwrap(), device: DeviceId::new(3).unwrap() };
    let mut f = fuzz_checks::fixture();
    let text = f.alice.encrypt(b"hello").unwrap();
    let commit = f.alice.commit(&[], &[], None).unwrap();
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("meta", meta.to_bytes()),
        ("member", member.to_identifier()),
        ("application", text),
        ("commit", commit.commit),
        ("empty", Vec::new()),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
