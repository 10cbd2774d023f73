//! Replays the committed corpus of the fuzz target `kt_record` (`fuzz/corpus/kt_record/`)
//! through the check the target runs (`tests/fuzz_checks/mod.rs`): the server's key
//! transparency record decoder. `generate_corpus` (ignored) rewrites the seeds from the
//! encoder: `cargo test -p tacit-server --test fuzz_corpus -- --ignored generate_corpus`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

// The decoder itself, as the fuzz target includes it (its unit tests run here a second time).
#[allow(dead_code, unused_imports)]
#[path = "../src/kt/records.rs"]
mod records;

mod fuzz_checks;

use std::path::PathBuf;

use fuzz_checks::check_kt_record;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/kt_record")
}

#[test]
fn kt_record() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus()).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 5, "corpus {} is nearly empty", corpus().display());
    let mut decoded = 0;
    for path in files {
        let data = std::fs::read(&path).unwrap();
        let r = std::panic::catch_unwind(|| check_kt_record(&data));
        decoded += usize::from(r.unwrap_or_else(|_| panic!("kt_record: check failed on {}", path.display())));
    }
    // The seeds include records of every form: if none decodes, the check reads nothing.
    assert!(decoded >= 4, "the seed records do not decode");
}

#[test]
#[ignore = "rewrites fuzz/corpus/kt_record"]
fn generate_corpus() {
    use akd::storage::types::DbRecord;
    use akd::tree_node::{TreeNode, TreeNodeType, TreeNodeWithPreviousValue};
    use akd::{Azks, AzksValue, NodeLabel};

    let label = |len: u32| {
        let mut v = [0u8; 32];
        for (i, b) in v.iter_mut().enumerate().take((len as usize).div_ceil(8)) {
            *b = 0x5a ^ i as u8;
        }
        if !len.is_multiple_of(8) {
            v[(len / 8) as usize] &= 0xff << (8 - len % 8);
        }
        NodeLabel { label_val: v, label_len: len }
    };
    let node = |depth: u32, epoch: u64, leaf: bool| TreeNode {
        label: label(depth),
        last_epoch: epoch,
        min_descendant_epoch: epoch / 2,
        parent: label(depth.saturating_sub(1)),
        node_type: if leaf { TreeNodeType::Leaf } else { TreeNodeType::Interior },
        left_child: (!leaf).then(|| label(256)),
        right_child: (!leaf).then(|| label((depth + 3).min(256))),
        hash: AzksValue([epoch as u8; 32]),
    };
    let with_prev = |depth: u32, epoch: u64, leaf: bool, moved: bool| {
        let mut previous = node(depth, epoch - 1, leaf);
        if moved {
            previous.parent = label(depth / 2);
            previous.right_child = None;
        }
        DbRecord::TreeNode(TreeNodeWithPreviousValue {
            label: label(depth),
            latest_node: node(depth, epoch, leaf),
            previous_node: Some(previous),
        })
    };
    let records = [
        with_prev(20, 300, false, false),
        with_prev(20, 300, false, true),
        with_prev(256, 7, true, false),
        DbRecord::TreeNode(TreeNodeWithPreviousValue {
            label: label(0),
            latest_node: TreeNode { node_type: TreeNodeType::Root, ..node(0, 1, false) },
            previous_node: None,
        }),
        with_prev(3, 2, false, false),
    ];
    let dir = corpus();
    std::fs::create_dir_all(&dir).unwrap();
    for (i, r) in records.iter().enumerate() {
        let mut input = vec![0u8];
        input.extend_from_slice(&r.get_full_binary_id());
        input.extend_from_slice(&records::encode(r).unwrap());
        std::fs::write(dir.join(format!("node-{i}")), input).unwrap();
    }
    let mut azks = vec![1u8];
    azks.extend_from_slice(
        &records::encode(&DbRecord::Azks(Azks { latest_epoch: 9, num_nodes: 17 })).unwrap(),
    );
    std::fs::write(dir.join("azks"), azks).unwrap();
    // A cut record and a record under another record's id.
    let mut cut = vec![0u8];
    cut.extend_from_slice(&records[0].get_full_binary_id());
    let bytes = records::encode(&records[0]).unwrap();
    cut.extend_from_slice(&bytes[..bytes.len() / 2]);
    std::fs::write(dir.join("cut"), cut).unwrap();
    let mut moved = vec![0u8];
    moved.extend_from_slice(&records[2].get_full_binary_id());
    moved.extend_from_slice(&bytes);
    std::fs::write(dir.join("other-id"), moved).unwrap();
}
