//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the same checks the
//! fuzz targets run (`tests/fuzz_checks/mod.rs`), so every input a fuzzer ever kept stays a
//! regression test under plain `cargo test`. See `fuzz/README.md`.
//!
//! `generate_corpus` (ignored) rewrites the seed inputs and the session fixture:
//! `cargo test -p tacit-protocol --test fuzz_corpus -- --ignored generate_corpus`.

#![allow(missing_docs)]
// Test code: clippy.toml allows these inside `#[test]` functions, and the helpers here are
// test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod fuzz_checks;

use std::fs;
use std::path::{Path, PathBuf};

use fuzz_checks::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tacit_protocol::{
    AccountIdentity, AccountName, DeviceAddress, DeviceEntry, DeviceId, DeviceIdentity, DeviceList,
    DevicePrekeys, Message, PrekeyPolicy, SafetyNumber, Session, UnixTime, VerifiedDevice,
};

/// Every fuzz target, in the order of `fuzz/Cargo.toml`.
const TARGETS: [&str; 11] = [
    "message_decode",
    "bundle_decode",
    "session_state_decode",
    "prekeys_state_decode",
    "identity_decode",
    "device_list_decode",
    "session_decrypt",
    "safety_number_scan",
    "link_offer_open",
    "link_answer_open",
    "archive_open",
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn corpus_dir(target: &str) -> PathBuf {
    fuzz_dir().join("corpus").join(target)
}

/// All files of one corpus, sorted by name; fails if there are none.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let data = fs::read(&p).unwrap();
            (p, data)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files
}

fn replay(target: &str, check: impl Fn(&[u8])) {
    for (path, data) in corpus(target) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&data)));
        assert!(result.is_ok(), "{target}: check failed on {}", path.display());
    }
}

#[test]
fn message_decode() {
    replay("message_decode", check_message_decode);
}

#[test]
fn bundle_decode() {
    replay("bundle_decode", check_bundle_decode);
}

#[test]
fn session_state_decode() {
    replay("session_state_decode", check_session_state_decode);
}

#[test]
fn prekeys_state_decode() {
    replay("prekeys_state_decode", check_prekeys_state_decode);
}

#[test]
fn identity_decode() {
    replay("identity_decode", check_identity_decode);
}

#[test]
fn device_list_decode() {
    replay("device_list_decode", check_device_list_decode);
}

#[test]
fn session_decrypt() {
    let mut decrypted = 0;
    for (path, data) in corpus("session_decrypt") {
        let result = std::panic::catch_unwind(|| check_session_decrypt(&data));
        decrypted += result.unwrap_or_else(|_| panic!("session_decrypt: check failed on {}", path.display()));
    }
    // The seeds include undelivered legitimate messages: if none decrypts, the corpus and
    // fuzz/fixtures/ were not generated together.
    assert!(decrypted > 0, "no session_decrypt seed decrypts on the fixture sessions");
}

#[test]
fn safety_number_scan() {
    replay("safety_number_scan", check_safety_number_scan);
}

#[test]
fn link_offer_open() {
    let mut accepted = 0;
    for (path, data) in corpus("link_offer_open") {
        let result = std::panic::catch_unwind(|| check_link_offer_open(&data));
        accepted += usize::from(
            result.unwrap_or_else(|_| panic!("link_offer_open: check failed on {}", path.display())),
        );
    }
    // The seeds include an offer's body: re-MACed by the check, it must be accepted, or the
    // check's MAC (docs/PROTOCOL.md §10) and the crate's disagree.
    assert!(accepted > 0, "no link_offer_open seed is accepted once re-MACed");
}

#[test]
fn link_answer_open() {
    let mut opened = 0;
    for (path, data) in corpus("link_answer_open") {
        let result = std::panic::catch_unwind(|| check_link_answer_open(&data));
        opened += usize::from(
            result.unwrap_or_else(|_| panic!("link_answer_open: check failed on {}", path.display())),
        );
    }
    // The seeds include the answer sealed for the fixture: if none opens, the corpus and
    // fuzz/fixtures/link_pending.bin were not generated together.
    assert!(opened > 0, "no link_answer_open seed opens on the fixture");
}

#[test]
fn archive_open() {
    replay("archive_open", check_archive_open);
}

#[test]
fn every_target_has_a_corpus() {
    for target in TARGETS {
        assert!(!corpus(target).is_empty());
    }
}

// ---------------------------------------------------------------------------------------
// Seed generation.

/// Collects seeds for one target: valid inputs plus a few truncations and a bit flip each.
struct Seeds {
    target: &'static str,
    files: Vec<(String, Vec<u8>)>,
}

impl Seeds {
    fn new(target: &'static str) -> Self {
        Self { target, files: Vec::new() }
    }

    /// Adds `data` as is.
    fn exact(&mut self, name: &str, data: &[u8]) {
        assert!(data.len() < 20_000, "{}/{name} is {} bytes", self.target, data.len());
        self.files.push((format!("seed-{name}"), data.to_vec()));
    }

    /// Adds `data` and mutilated copies of it.
    fn with_variants(&mut self, name: &str, data: &[u8]) {
        self.exact(name, data);
        let n = data.len();
        if n > 1 {
            self.exact(&format!("{name}-minus1"), &data[..n - 1]);
            self.exact(&format!("{name}-half"), &data[..n / 2]);
            let mut flipped = data.to_vec();
            flipped[n / 2] ^= 0x01;
            self.exact(&format!("{name}-flip"), &flipped);
        }
    }

    /// Replaces the target's `seed-*` files (fuzzer-found files are left alone).
    fn write(self) {
        self.write_prefixed("seed-");
    }

    /// Replaces the target's files whose names start with `prefix`.
    fn write_prefixed(self, prefix: &str) {
        let dir = corpus_dir(self.target);
        fs::create_dir_all(&dir).unwrap();
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)) {
                fs::remove_file(path).unwrap();
            }
        }
        for (name, data) in &self.files {
            fs::write(dir.join(name), data).unwrap();
        }
    }
}

fn addr(account: &str, device: u32) -> DeviceAddress {
    DeviceAddress { account: AccountName::new(account).unwrap(), device: DeviceId::new(device).unwrap() }
}

fn prekey_part(m: &Message) -> &tacit_protocol::PrekeyMessage {
    match m {
        Message::Prekey(p) => p,
        Message::Ratchet(_) => panic!("expected a prekey message"),
    }
}

/// Writes the seed corpora of every target and the `session_decrypt` fixture. Everything is
/// derived from seeded `ChaCha20Rng`s except ML-KEM keys and ciphertexts (AWS-LC's DRBG), so
/// rerunning changes the KEM-dependent bytes: commit the corpora and fixtures together.
#[test]
#[ignore = "rewrites fuzz/corpus/*/seed-* and fuzz/fixtures/"]
fn generate_corpus() {
    let mut rng = ChaCha20Rng::seed_from_u64(0x7ac1_7000);
    let policy = PrekeyPolicy::default();
    let t0 = UnixTime(1_700_000_000);

    let mut messages = Seeds::new("message_decode");
    let mut bundles = Seeds::new("bundle_decode");
    let mut sessions = Seeds::new("session_state_decode");
    let mut prekey_states = Seeds::new("prekeys_state_decode");
    let mut identities = Seeds::new("identity_decode");
    let mut lists = Seeds::new("device_list_decode");
    let mut decrypts = Seeds::new("session_decrypt");
    let mut scans = Seeds::new("safety_number_scan");

    // Identities.
    let alice_addr = addr("alice", 1);
    let bob_addr = addr("bob", 1);
    let alice_id = DeviceIdentity::generate(&mut rng).unwrap();
    let bob_id = DeviceIdentity::generate(&mut rng).unwrap();
    let account = AccountIdentity::generate(&mut rng).unwrap();
    identities.with_variants("device-identity", &alice_id.to_bytes());
    identities.with_variants("account-identity", &account.to_bytes());
    identities.with_variants("device-public", &alice_id.public().to_bytes());
    identities.exact("device-public-bob", &bob_id.public().to_bytes());
    let mut forged = alice_id.public().to_bytes();
    forged[32..64].copy_from_slice(bob_id.public().dh_key().as_bytes());
    identities.exact("device-public-forged-binding", &forged);
    identities.exact("empty", &[]);

    // Bob's prekeys: a small set (the defaults make 100 of each kind, far over 20 KB).
    let mut bob_prekeys = DevicePrekeys::new();
    prekey_states.exact("empty-set", &bob_prekeys.to_bytes());
    let mut plan = bob_prekeys.plan(t0, &policy, 0, 0);
    plan.new_one_time = 3;
    plan.new_kem_one_time = 1;
    bob_prekeys.execute(&mut rng, &bob_id, t0, &plan).unwrap();
    prekey_states.with_variants("fresh", &bob_prekeys.to_bytes());
    let bundle = bob_prekeys.bundle(bob_addr.clone(), &bob_id).unwrap();
    bundles.with_variants("one-time", &bundle.to_bytes());
    // The published prekeys on their own (bundle_decode tries every input on these too).
    bundles.exact("signed-prekey", &bundle.signed_prekey.to_bytes());
    bundles.exact("kem-prekey", &bundle.kem_prekey.to_bytes());
    bundles.exact("one-time-prekey", &bundle.one_time_prekey.unwrap().to_bytes());
    let mut forged = bundle.clone();
    forged.signed_prekey.id ^= 1;
    bundles.exact("bad-signed-prekey-signature", &forged.to_bytes());

    // Alice starts a session and sends three initial messages; Bob gets the first and third.
    let mut alice = Session::initiate(
        &mut rng,
        &alice_id,
        alice_addr.clone(),
        &bundle,
        &VerifiedDevice::dangerous_assume_verified(bundle.address.clone(), bob_id.public().clone()),
        UnixTime(0),
    )
    .unwrap();
    sessions.with_variants("alice-pending", &alice.to_bytes());
    let a0 = alice.encrypt(&mut rng, b"hello bob").unwrap();
    let a1 = alice.encrypt(&mut rng, &[7u8; 300]).unwrap();
    let a2 = alice.encrypt(&mut rng, b"third").unwrap();
    messages.with_variants("prekey", &a0.to_bytes());
    let (mut bob, first) = Session::accept(
        &bob_id,
        bob_addr.clone(),
        &mut bob_prekeys,
        &VerifiedDevice::dangerous_assume_verified(alice_addr.clone(), alice_id.public().clone()),
        prekey_part(&a0),
    )
    .unwrap();
    assert_eq!(first, b"hello bob");
    prekey_states.exact("after-accept", &bob_prekeys.to_bytes());
    sessions.with_variants("bob-accepted", &bob.to_bytes());
    bob.decrypt(&a2).unwrap(); // a1's key is now a skipped key

    // Bob answers; Alice gets the first and third reply, then moves to a new ratchet key.
    let b0 = bob.encrypt(&mut rng, b"hi alice").unwrap();
    let b1 = bob.encrypt(&mut rng, &[]).unwrap();
    let b2 = bob.encrypt(&mut rng, &[0x55u8; 1_000]).unwrap();
    messages.with_variants("ratchet", &b0.to_bytes());
    messages.exact("ratchet-1000", &b2.to_bytes());
    alice.decrypt(&b0).unwrap();
    alice.decrypt(&b2).unwrap();
    let a3 = alice.encrypt(&mut rng, b"four").unwrap();
    let a4 = alice.encrypt(&mut rng, b"five").unwrap();
    let a5 = alice.encrypt(&mut rng, b"five and a half").unwrap();
    let a5b = alice.encrypt(&mut rng, b"five and three quarters").unwrap();
    let a5c = alice.encrypt(&mut rng, b"six").unwrap();
    bob.decrypt(&a3).unwrap();
    bob.decrypt(&a5c).unwrap(); // a4, a5 and a5b skipped: three keys on Bob's open chain
    let b3 = bob.encrypt(&mut rng, b"seven").unwrap();
    alice.decrypt(&b3).unwrap();
    let a6 = alice.encrypt(&mut rng, b"eight").unwrap(); // undelivered, new chain for Bob
    assert!(!alice.is_pending());

    // The fixture: both sides now, with skipped keys on closed and open chains.
    let fixtures = fuzz_dir().join("fixtures");
    fs::create_dir_all(&fixtures).unwrap();
    fs::write(fixtures.join("session_alice.bin"), alice.to_bytes().as_slice()).unwrap();
    fs::write(fixtures.join("session_bob.bin"), bob.to_bytes().as_slice()).unwrap();
    sessions.with_variants("alice-established", &alice.to_bytes());
    sessions.with_variants("bob-established", &bob.to_bytes());

    // session_decrypt seeds: undelivered messages (these decrypt on the fixture), replays,
    // messages sent after the fixture, and mutilated copies.
    decrypts.exact("to-bob-skipped-prekey-a1", &a1.to_bytes());
    decrypts.with_variants("to-bob-skipped-a4", &a4.to_bytes());
    decrypts.exact("to-bob-skipped-a5", &a5.to_bytes());
    decrypts.exact("to-bob-skipped-a5b", &a5b.to_bytes());
    decrypts.with_variants("to-bob-new-chain-a6", &a6.to_bytes());
    decrypts.exact("to-alice-skipped-b1", &b1.to_bytes());
    decrypts.exact("replay-a0", &a0.to_bytes());
    decrypts.exact("replay-a3", &a3.to_bytes());
    decrypts.exact("replay-b2", &b2.to_bytes());
    let mut alice_later = Session::from_bytes(&alice.to_bytes()).unwrap();
    let mut bob_later = Session::from_bytes(&bob.to_bytes()).unwrap();
    let a7 = alice_later.encrypt(&mut rng, &[1u8; 2_000]).unwrap();
    decrypts.with_variants("to-bob-a7-ahead", &a7.to_bytes());
    let b4 = bob_later.encrypt(&mut rng, b"nine").unwrap();
    decrypts.with_variants("to-alice-b4", &b4.to_bytes());
    messages.exact("ratchet-2000", &a7.to_bytes());

    // A session with no one-time keys left: last-resort KEM prekey, remembered base key.
    let carol_id = DeviceIdentity::generate(&mut rng).unwrap();
    let carol_addr = addr("carol", 2);
    let mut carol_prekeys = DevicePrekeys::new();
    let mut plan = carol_prekeys.plan(t0, &policy, 0, 0);
    plan.new_one_time = 0;
    plan.new_kem_one_time = 0;
    carol_prekeys.execute(&mut rng, &carol_id, t0, &plan).unwrap();
    let last_resort = carol_prekeys.bundle(carol_addr.clone(), &carol_id).unwrap();
    bundles.with_variants("last-resort", &last_resort.to_bytes());
    let mut alice2 = Session::initiate(
        &mut rng,
        &alice_id,
        alice_addr.clone(),
        &last_resort,
        &VerifiedDevice::dangerous_assume_verified(last_resort.address.clone(), carol_id.public().clone()),
        UnixTime(0),
    )
    .unwrap();
    let c0 = alice2.encrypt(&mut rng, b"to carol").unwrap();
    messages.exact("prekey-last-resort", &c0.to_bytes());
    let (carol, _) = Session::accept(
        &carol_id,
        carol_addr,
        &mut carol_prekeys,
        &VerifiedDevice::dangerous_assume_verified(alice_addr.clone(), alice_id.public().clone()),
        prekey_part(&c0),
    )
    .unwrap();
    sessions.exact("carol-accepted", &carol.to_bytes());
    prekey_states.with_variants("seen-base-key", &carol_prekeys.to_bytes());
    // Two days later: rotation retires the signed and last-resort keys.
    let t2 = UnixTime(t0.0 + 2 * 86_400);
    let plan = carol_prekeys.plan(t2, &policy, 100, 100);
    carol_prekeys.execute(&mut rng, &carol_id, t2, &plan).unwrap();
    prekey_states.exact("rotated", &carol_prekeys.to_bytes());

    // Device lists for "carol".
    let carol_name = AccountName::new(DEVICE_LIST_ACCOUNT).unwrap();
    let entry = |id: u32, d: &DeviceIdentity| DeviceEntry {
        approver: true,
        ..DeviceEntry::new(DeviceId::new(id).unwrap(), d.public().clone())
    };
    let v1 = DeviceList::sign(&account, carol_name.clone(), 1, vec![entry(1, &carol_id)]).unwrap();
    lists.with_variants("one-device", &v1.to_bytes());
    let v2 = DeviceList::sign(
        &account,
        carol_name.clone(),
        2,
        vec![entry(1, &carol_id), entry(2, &bob_id), entry(7, &alice_id)],
    )
    .unwrap();
    lists.with_variants("three-devices", &v2.to_bytes());
    let other =
        DeviceList::sign(&account, AccountName::new("dave").unwrap(), 1, vec![entry(1, &bob_id)]).unwrap();
    lists.exact("other-account", &other.to_bytes());

    // Safety numbers: the peer's payload (matches), our own (mismatch), and damaged ones.
    let [(an, a), (bn, b)] = safety_accounts();
    let local = SafetyNumber::new(&an, &a.public(), &bn, &b.public());
    let remote = SafetyNumber::new(&bn, &b.public(), &an, &a.public());
    scans.with_variants("peer", &remote.scannable());
    scans.exact("own", &local.scannable());
    let mut v2_payload = remote.scannable();
    v2_payload[0] = 2;
    scans.exact("version-2", &v2_payload);
    scans.exact("empty", &[]);

    for seeds in [messages, bundles, sessions, prekey_states, identities, lists, decrypts, scans] {
        seeds.write();
    }
    write_link_corpus();
}

/// Writes only the seeds of the targets added with linking (`link_offer_open`,
/// `link_answer_open`, `archive_open`), the `link_pending.bin` fixture and the format-2
/// device list seeds (`seed-v2-*`), leaving every other corpus as it is:
/// `cargo test -p tacit-protocol --test fuzz_corpus -- --ignored generate_link_corpus`.
#[test]
#[ignore = "rewrites fuzz/corpus/{link_*,archive_open}/seed-*, device_list_decode/seed-v2-* and fuzz/fixtures/link_pending.bin"]
fn generate_link_corpus() {
    write_link_corpus();
}

fn write_link_corpus() {
    use tacit_protocol::{
        ArchiveSealer, HistoryRef, LinkSecret, PendingLink, Provisioning, VerifiedOffer, sealed_len,
    };
    let mut rng = ChaCha20Rng::seed_from_u64(0x114c_0009);
    let t0 = UnixTime(1_700_000_000);
    let mut offers = Seeds::new("link_offer_open");
    let mut answers = Seeds::new("link_answer_open");
    let mut archives = Seeds::new("archive_open");

    // The new device and its first prekeys.
    let new_id = DeviceIdentity::generate(&mut rng).unwrap();
    let mut prekeys = DevicePrekeys::new();
    let mut plan = prekeys.plan(t0, &PrekeyPolicy::default(), 0, 0);
    plan.new_one_time = 0;
    plan.new_kem_one_time = 0;
    let upload = prekeys.execute(&mut rng, &new_id, t0, &plan).unwrap();
    let (spk, last_resort) = (upload.signed_prekey.unwrap(), upload.last_resort.unwrap());
    let secret = LinkSecret::from_bytes(LINK_SECRET);
    let (pending, offer) =
        PendingLink::new(&mut rng, &secret, new_id.public(), "fuzz phone", &spk, &last_resort).unwrap();
    offers.with_variants("offer", &offer);
    // The body without its MAC: the check appends a correct one.
    offers.with_variants("offer-body", &offer[..offer.len() - 32]);
    offers.exact("empty", &[]);

    // The account lists it as device 2 (approver) next to the approver, device 1.
    let account = AccountIdentity::generate(&mut rng).unwrap();
    let approver = DeviceIdentity::generate(&mut rng).unwrap();
    let name = AccountName::new("frank").unwrap();
    let d1 = DeviceEntry {
        approver: true,
        label: "desktop".into(),
        ..DeviceEntry::new(DeviceId::new(1).unwrap(), approver.public().clone())
    };
    let d2 = DeviceEntry {
        approver: true,
        added_ms: 1_700_000_000_000,
        label: "fuzz phone".into(),
        ..DeviceEntry::new(DeviceId::new(2).unwrap(), new_id.public().clone())
    };
    let list = DeviceList::sign(&account, name.clone(), 2, vec![d1.clone(), d2.clone()]).unwrap();
    let provisioning = Provisioning {
        account: name.clone(),
        device_id: DeviceId::new(2).unwrap(),
        approver_id: DeviceId::new(1).unwrap(),
        device_list: list.to_bytes(),
        account_identity: Some(account.clone()),
        history: Some(HistoryRef {
            blob_id: [1u8; 16],
            key: zeroize::Zeroizing::new([2u8; 32]),
            size: sealed_len(70_000).unwrap(),
            plain_size: 70_000,
            digest: [3u8; 32],
        }),
    };
    let answer = VerifiedOffer::open(&secret, &offer).unwrap().seal_answer(&mut rng, &provisioning).unwrap();
    assert!(pending.open_answer(&answer).is_ok());
    answers.with_variants("answer", &answer);
    answers.with_variants("provisioning", &provisioning.to_bytes());
    answers.with_variants("pending", &pending.to_bytes());
    answers.exact("empty", &[]);
    let fixtures = fuzz_dir().join("fixtures");
    fs::create_dir_all(&fixtures).unwrap();
    fs::write(fixtures.join("link_pending.bin"), pending.to_bytes().as_slice()).unwrap();

    // Archives: one short chunk, an empty archive, and a full chunk (under the seed size
    // limit, so the multi-chunk path is exercised by the fuzzer's own inputs).
    for (label, plain) in [("short", b"a short history".to_vec()), ("empty", Vec::new())] {
        let mut s = ArchiveSealer::new(&ARCHIVE_KEY);
        archives.with_variants(label, &s.seal_chunk(&plain, true).unwrap());
    }
    archives.exact("plain-4k", &vec![0x5au8; 4096]);

    // Format 2 device lists for "carol" (the device_list_decode target's account).
    let carol = AccountName::new(DEVICE_LIST_ACCOUNT).unwrap();
    let mut lists = Seeds::new("device_list_decode");
    let v2 = DeviceList::sign(
        &account,
        carol.clone(),
        5,
        vec![d1.clone(), DeviceEntry { label: "téléphone ☎".into(), ..d2.clone() }],
    )
    .unwrap();
    lists.with_variants("v2-two-devices", &v2.to_bytes());

    for seeds in [offers, answers, archives] {
        seeds.write();
    }
    lists.write_prefixed("seed-v2-");
}
