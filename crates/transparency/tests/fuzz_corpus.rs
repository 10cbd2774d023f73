//! Replays the committed corpus of the fuzz target `kt_decode` (`fuzz/corpus/kt_decode/`)
//! through the check the target runs (`tests/fuzz_checks/mod.rs`): account entries, lookup
//! and history proofs. `generate_corpus` (ignored) rewrites the seeds and the fixture root
//! from akd's own in-memory directory:
//! `cargo test -p tacit-transparency --features audit --test fuzz_corpus -- --ignored generate_corpus`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod fuzz_checks;

use std::path::PathBuf;

use fuzz_checks::*;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

#[test]
fn kt_decode() {
    let fixture = std::fs::read(fuzz_dir().join("fixtures/kt_root.bin")).unwrap();
    let dir = fuzz_dir().join("corpus/kt_decode");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 4, "corpus {} is nearly empty", dir.display());
    let mut verified = 0;
    for path in files {
        let data = std::fs::read(&path).unwrap();
        let r = std::panic::catch_unwind(|| check_kt_decode_with(&fixture, &data));
        verified += r.unwrap_or_else(|_| panic!("kt_decode: check failed on {}", path.display()));
    }
    // The seeds include a real lookup and history proof: if none verifies against the
    // fixture root, the corpus and the fixture were not generated together.
    assert!(verified >= 2, "the seed proofs do not verify against fuzz/fixtures/kt_root.bin");
}

#[cfg(feature = "audit")]
#[test]
#[ignore = "rewrites fuzz/corpus/kt_decode and fuzz/fixtures/kt_root.bin"]
fn generate_corpus() {
    use akd::storage::StorageManager;
    use akd::storage::memory::AsyncInMemoryDatabase;
    use akd::{AkdLabel, AkdValue, AzksParallelismConfig, HistoryParams};
    use protobuf::Message as _;
    use tacit_transparency::{AccountEntry, Config, account_label};

    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let dir = akd::Directory::<Config, _, _>::new(
            StorageManager::new_no_cache(AsyncInMemoryDatabase::new()),
            akd::ecvrf::HardCodedAkdVRF,
            AzksParallelismConfig::default(),
        )
        .await
        .unwrap();
        let alice = AkdLabel(account_label(&tacit_protocol::AccountName::new(NAME).unwrap()));
        for (v, others) in [(1u8, 20usize), (2, 5), (3, 5)] {
            let mut updates = vec![(alice.clone(), AkdValue(AccountEntry::List(vec![v; 40]).to_bytes()))];
            updates.extend((0..others).map(|i| {
                (
                    AkdLabel(format!("tacit.account.v1:user{v}x{i}").into_bytes()),
                    AkdValue(AccountEntry::Deleted.to_bytes()),
                )
            }));
            dir.publish(updates).await.unwrap();
        }
        let (lookup, hash) = dir.lookup(alice.clone()).await.unwrap();
        let (history, _) = dir.key_history(&alice, HistoryParams::Complete).await.unwrap();
        let mut fixture = hash.0.to_be_bytes().to_vec();
        fixture.extend_from_slice(&hash.1);
        std::fs::write(fuzz_dir().join("fixtures/kt_root.bin"), &fixture).unwrap();
        let corpus = fuzz_dir().join("corpus/kt_decode");
        let _ = std::fs::remove_dir_all(&corpus);
        std::fs::create_dir_all(&corpus).unwrap();
        let lookup = akd_core::proto::specs::types::LookupProof::from(&lookup).write_to_bytes().unwrap();
        let history = akd_core::proto::specs::types::HistoryProof::from(&history).write_to_bytes().unwrap();
        let seeds: Vec<(&str, Vec<u8>)> = vec![
            ("entry_list", [&[0u8][..], &AccountEntry::List(vec![1, 2, 3]).to_bytes()].concat()),
            ("entry_deleted", [&[0u8][..], &AccountEntry::Deleted.to_bytes()].concat()),
            ("entry_bad", vec![0, 1, 9]),
            ("lookup", [&[1u8][..], &lookup].concat()),
            ("lookup_cut", [&[1u8][..], &lookup[..lookup.len() / 2]].concat()),
            ("history", [&[2u8][..], &history].concat()),
            ("history_cut", [&[2u8][..], &history[..history.len() / 3]].concat()),
            ("empty", vec![]),
        ];
        for (name, bytes) in seeds {
            std::fs::write(corpus.join(name), bytes).unwrap();
        }
    });
}
