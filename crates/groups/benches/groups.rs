//! Tacit's group path (tacit-groups over mls-rs) at the sizes the issue names: adding N
//! devices in one commit, processing it, joining from its Welcome, saving and loading the
//! state, and 100-byte messages through `OpenGroup` (the refusal journal included).
//!
//! `cargo bench -p tacit-groups --bench groups -- [N ...]` (default 1000 10000); prints
//! one markdown row per suite, size and operation. `scripts/bench_groups` puts them in
//! docs/BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)] // a bench

use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tacit_groups::{Directory, GroupDevice, GroupMeta, OpenGroup, Received, StoredGroup, Suite};
use tacit_protocol::{
    AccountIdentity, AccountName, DeviceAddress, DeviceEntry, DeviceId, DeviceIdentity, DeviceList, UnixTime,
};

const NOW: UnixTime = UnixTime(1_790_000_000);
const MESSAGES: usize = 2_000;

struct Member {
    mls: GroupDevice,
    kp: (Vec<u8>, Vec<u8>, Vec<u8>),
}

fn member(i: usize, suite: Suite, directory: &Directory, rng: &mut ChaCha20Rng) -> Member {
    let name = AccountName::new(&format!("user{i}")).unwrap();
    let key = AccountIdentity::generate(rng).unwrap();
    let device = DeviceIdentity::generate(rng).unwrap();
    let id = DeviceId::new(1).unwrap();
    let entry = DeviceEntry { approver: true, ..DeviceEntry::new(id, device.public().clone()) };
    directory.insert(&DeviceList::sign(&key, name.clone(), 1, vec![entry]).unwrap());
    let mls =
        GroupDevice::new(&device, &DeviceAddress { account: name, device: id }, suite, directory.clone());
    let kp = mls.new_key_package(NOW).unwrap();
    Member { mls, kp: (kp.reference, kp.public, kp.secret.to_vec()) }
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{us:.1} µs")
    }
}

fn row(suite: Suite, n: &str, op: &str, value: String) {
    println!("| {suite:?} | {n} | {op} | {value} |");
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn text(r: Received) -> Vec<u8> {
    match r {
        Received::Application { data, .. } => data,
        other => panic!("{other:?}"),
    }
}

fn messages(suite: Suite, n: &str, a: &mut OpenGroup, b: &mut OpenGroup) {
    let payload = [7u8; 100];
    let (mut enc, mut dec) = (Vec::new(), Vec::new());
    let mut size = 0;
    for i in 0..MESSAGES {
        let (from, to) = if i % 2 == 0 { (&mut *a, &mut *b) } else { (&mut *b, &mut *a) };
        let t = Instant::now();
        let m = from.encrypt(&payload).unwrap();
        enc.push(t.elapsed());
        size = m.len();
        let t = Instant::now();
        let got = text(to.process(&m).unwrap());
        dec.push(t.elapsed());
        assert_eq!(got, payload);
        if i % 100 == 99 {
            // As the SDK saves once per received batch.
            a.save().unwrap();
            b.save().unwrap();
        }
    }
    row(suite, n, "100 B message: encrypt (median, both directions)", fmt(median(enc)));
    row(suite, n, "100 B message: decrypt (median, both directions)", fmt(median(dec)));
    row(suite, n, "100 B message on the wire", format!("{size} B"));
}

fn run(suite: Suite, n: usize) {
    let mut rng = ChaCha20Rng::seed_from_u64(n as u64);
    let directory = Directory::new();
    let a = member(0, suite, &directory, &mut rng);
    let b = member(1, suite, &directory, &mut rng);
    let meta = GroupMeta::new("bench", "", vec![]).unwrap();
    let mut ga = a.mls.create(&meta, NOW).unwrap();
    let c = ga.commit(std::slice::from_ref(&b.kp.1), &[], None).unwrap();
    ga.merge_pending().unwrap();
    let mut gb =
        b.mls.join(c.welcome.as_ref().unwrap(), c.tree.as_ref().unwrap(), &b.kp.0, &b.kp.2, NOW).unwrap();
    messages(suite, "2", &mut ga, &mut gb);

    let t = Instant::now();
    let members: Vec<Member> = (2..n + 2).map(|i| member(i, suite, &directory, &mut rng)).collect();
    let setup = t.elapsed();
    let kps: Vec<Vec<u8>> = members.iter().map(|m| m.kp.1.clone()).collect();
    row(
        suite,
        &n.to_string(),
        "setup: a device list and a key package per device (mean)",
        fmt(setup / n as u32),
    );

    let t = Instant::now();
    let c = ga.commit(&kps, &[], None).unwrap();
    let built = t.elapsed();
    let t = Instant::now();
    ga.merge_pending().unwrap();
    let merged = t.elapsed();
    row(
        suite,
        &n.to_string(),
        "**add N in one commit** (build + merge)",
        format!("{} ({} + {})", fmt(built + merged), fmt(built), fmt(merged)),
    );
    row(
        suite,
        &n.to_string(),
        "commit / Welcome / ratchet tree on the wire",
        format!(
            "{} B / {} B / {} B",
            c.commit.len(),
            c.welcome.as_ref().unwrap().len(),
            c.tree.as_ref().unwrap().len()
        ),
    );

    let t = Instant::now();
    gb.process(&c.commit).unwrap();
    let processed = t.elapsed();
    row(suite, &n.to_string(), "**an existing member processes the commit**", fmt(processed));
    let (floor, cores) = verification_floor(2 * n);
    row(
        suite,
        &n.to_string(),
        "floor under processing it: the 2N Ed25519 verifications it needs (each KeyPackage's and each leaf's, RFC 9420 §10.1, §7.3), on every core",
        format!(
            "{} on {cores} cores (processing: {:.2}× the floor)",
            fmt(floor),
            processed.as_secs_f64() / floor.as_secs_f64()
        ),
    );

    let joiner = &members[0];
    let t = Instant::now();
    let mut gj = joiner
        .mls
        .join(c.welcome.as_ref().unwrap(), c.tree.as_ref().unwrap(), &joiner.kp.0, &joiner.kp.2, NOW)
        .unwrap();
    row(suite, &n.to_string(), "**a new member joins from the Welcome**", fmt(t.elapsed()));
    assert_eq!(gj.epoch_authenticator().unwrap(), ga.epoch_authenticator().unwrap());

    let t = Instant::now();
    let stored = gb.save().unwrap();
    let saved = t.elapsed();
    let t = Instant::now();
    let tree = gb.tree().unwrap();
    let exported = t.elapsed();
    let state_len = stored.state.len() + stored.past_epochs.iter().map(|(_, d)| d.len()).sum::<usize>();
    row(
        suite,
        &n.to_string(),
        "save the state (without the tree) / its size",
        format!("{} / {state_len} B", fmt(saved)),
    );
    row(
        suite,
        &n.to_string(),
        "export the ratchet tree / its size",
        format!("{} / {} B", fmt(exported), tree.len()),
    );
    let copy = StoredGroup {
        group_id: stored.group_id.clone(),
        epoch: stored.epoch,
        state: stored.state.clone(),
        past_epochs: stored.past_epochs.clone(),
    };
    let t = Instant::now();
    let mut gb = b.mls.load(&copy, &tree).unwrap();
    row(suite, &n.to_string(), "load a stored group (state + tree)", fmt(t.elapsed()));

    messages(suite, &(n + 2).to_string(), &mut ga, &mut gb);
    let m = ga.encrypt(b"to everyone").unwrap();
    assert_eq!(text(gj.process(&m).unwrap()), b"to everyone");
}

/// Every MLS message is signed by its sender and verified by each receiver (RFC 9420
/// §6.1): those two operations are the floor under encrypting and decrypting.
fn signature_floor() {
    use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
    let pair = Ed25519KeyPair::from_seed_unchecked(&[9u8; 32]).unwrap();
    let message = [1u8; 200];
    let (mut sign, mut verify) = (Vec::new(), Vec::new());
    for _ in 0..MESSAGES {
        let t = Instant::now();
        let sig = pair.sign(&message);
        sign.push(t.elapsed());
        let t = Instant::now();
        UnparsedPublicKey::new(&ED25519, pair.public_key().as_ref()).verify(&message, sig.as_ref()).unwrap();
        verify.push(t.elapsed());
    }
    println!(
        "| - | - | floor: one Ed25519 signature / verification (AWS-LC, median) | {} / {} |",
        fmt(median(sign)),
        fmt(median(verify))
    );
}

/// `count` Ed25519 verifications spread over every core (as mls-rs's rayon spreads a
/// commit's): the least time processing a commit that carries that many signatures takes.
fn verification_floor(count: usize) -> (std::time::Duration, usize) {
    use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
    let pair = Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).unwrap();
    let message = [2u8; 300];
    let sig = pair.sign(&message);
    let public = pair.public_key().as_ref().to_vec();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let t = Instant::now();
    std::thread::scope(|scope| {
        for i in 0..cores {
            let share = count / cores + usize::from(i < count % cores);
            let (public, sig, message) = (&public, sig.as_ref(), &message);
            scope.spawn(move || {
                for _ in 0..share {
                    UnparsedPublicKey::new(&ED25519, public).verify(message, sig).unwrap();
                }
            });
        }
    });
    (t.elapsed(), cores)
}

fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![1_000, 10_000] } else { sizes };
    println!("| suite | members | operation | time, size |");
    println!("|---|---|---|---|");
    signature_floor();
    for n in sizes {
        for suite in [Suite::Classical, Suite::PostQuantum] {
            // GROUPS_BENCH_SUITE=Classical (or PostQuantum) runs one suite, for profiling.
            if std::env::var("GROUPS_BENCH_SUITE").is_ok_and(|s| s != format!("{suite:?}")) {
                continue;
            }
            run(suite, n);
        }
    }
}
