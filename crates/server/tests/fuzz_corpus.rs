//! Replays the committed corpus of the fuzz target `kt_record` (`fuzz/corpus/kt_record/`)
//! through the check the target runs (`tests/fuzz_checks/mod.rs`): the server's key
//! transparency record decoder. `generate_corpus` (ignored) rewrites the seeds from the
//! encoder: `cargo test -p tacit-server --test fuzz_corpus -- --ignored generate_corpus`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

// The decoder itself, as the fuzz target includes it (its unit tests run here a second time).
#[allow(dead_code, unused_imports)]
#[path = "../src/kt/records.rs"]
mod records;

#[allow(dead_code)]
#[path = "../src/mls_frame.rs"]
mod mls_frame;

mod fuzz_checks;

use std::path::PathBuf;

use fuzz_checks::{check_kt_record, check_mls_frame};

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

fn mls_corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/mls_frame")
}

/// The corpus of `mls_frame`: real mls-rs messages (application, proposal, commit) and
/// broken ones; the real ones must parse, so the check is not vacuous.
#[test]
fn mls_frame() {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(mls_corpus()).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 5, "corpus {} is nearly empty", mls_corpus().display());
    let mut parsed = 0;
    for path in files {
        let data = std::fs::read(&path).unwrap();
        let r = std::panic::catch_unwind(|| check_mls_frame(&data));
        parsed += usize::from(r.unwrap_or_else(|_| panic!("mls_frame: check failed on {}", path.display())));
    }
    assert!(parsed >= 3, "the real messages do not parse");
}

#[test]
#[ignore = "rewrites fuzz/corpus/mls_frame"]
fn generate_mls_corpus() {
    use rand_core::OsRng;
    use tacit_groups::{Directory, GroupDevice, GroupMeta, Suite};
    use tacit_protocol::{
        AccountIdentity, AccountName, DeviceAddress, DeviceEntry, DeviceId, DeviceIdentity, DeviceList,
        UnixTime,
    };

    let account = AccountIdentity::generate(&mut OsRng).unwrap();
    let device = DeviceIdentity::generate(&mut OsRng).unwrap();
    let name = AccountName::new("alice").unwrap();
    let id = DeviceId::new(1).unwrap();
    let list = DeviceList::sign(
        &account,
        name.clone(),
        1,
        vec![DeviceEntry { approver: true, ..DeviceEntry::new(id, device.public().clone()) }],
    )
    .unwrap();
    let directory = Directory::new();
    directory.insert(&list);
    let mls =
        GroupDevice::new(&device, &DeviceAddress { account: name, device: id }, Suite::Classical, directory);
    let now = UnixTime(1_790_000_000);
    let mut group = mls.create(&GroupMeta::new("corpus", "", vec![]).unwrap(), now).unwrap();
    let application = group.encrypt(b"hello").unwrap();
    let commit = group.commit(&[], &[], None).unwrap().commit;
    let dir = mls_corpus();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("application"), &application).unwrap();
    std::fs::write(dir.join("commit"), &commit).unwrap();
    std::fs::write(dir.join("cut"), &commit[..commit.len() / 2]).unwrap();
    let mut public = application.clone();
    public[3] = 1;
    std::fs::write(dir.join("public-message"), public).unwrap();
    // The group id's one-byte length as a two-byte one (not the shortest: refused).
    let mut long = application[..4].to_vec();
    long.extend_from_slice(&[0x40, application[4]]);
    long.extend_from_slice(&application[5..]);
    std::fs::write(dir.join("long-length"), long).unwrap();
    let mut unknown = commit;
    let at = 5 + usize::from(unknown[4]) + 8;
    unknown[at] = 9;
    std::fs::write(dir.join("unknown-content-type"), unknown).unwrap();
    std::fs::write(dir.join("trailing"), [application.as_slice(), &[0; 3]].concat()).unwrap();
}
