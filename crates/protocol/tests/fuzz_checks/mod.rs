//! The properties each fuzz target checks, shared by the fuzz targets in `fuzz/` (which
//! include this file with `#[path]`) and by `tests/fuzz_corpus.rs` (which replays the
//! committed corpora through the same functions under `cargo test`).
//!
//! Every `check_*` function must return normally for every input: a panic, a hang, a huge
//! allocation or a failed assertion here is a bug in the protocol crate. A decode error is
//! a normal outcome.
//!
//! Only the public API of `tacit-protocol` is used, plus `rand_chacha`/`rand_core`, and
//! `hkdf`/`hmac`/`sha2` to MAC link offers independently of the crate.

#![allow(
    dead_code, // each fuzz target uses one check
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::OnceLock;

use rand_core::SeedableRng;
use tacit_protocol::{
    AccountIdentity, AccountName, ArchiveOpener, ArchiveSealer, CHUNK_LEN, DeviceIdentity, DeviceList,
    DevicePrekeys, DevicePublic, KemPrekeyPublic, LinkError, LinkSecret, Message, OneTimePrekeyPublic,
    PendingLink, PrekeyBundle, Provisioning, SafetyNumber, Session, SignedPrekeyPublic, VerifiedOffer,
    sealed_len,
};

/// The account name the device-list target verifies against (the seeds are signed for it).
pub const DEVICE_LIST_ACCOUNT: &str = "carol";

/// Seeds of the deterministic identities behind the safety-number target.
pub const SAFETY_LOCAL_SEED: u64 = 0x5afe_0001;
/// Seed of the remote side's account identity.
pub const SAFETY_REMOTE_SEED: u64 = 0x5afe_0002;

/// The established session pair the `session_decrypt` target attacks, written by the corpus
/// generator (`cargo test -p tacit-protocol --test fuzz_corpus -- --ignored`). It is stored
/// rather than rebuilt because ML-KEM key generation and encapsulation draw on AWS-LC's own
/// DRBG, so a session cannot be rebuilt bit-for-bit from a seeded RNG; every other choice in
/// the generator comes from a seeded `ChaCha20Rng`.
pub const SESSION_ALICE: &[u8] = include_bytes!("../../../../fuzz/fixtures/session_alice.bin");
/// Bob's side of the pair.
pub const SESSION_BOB: &[u8] = include_bytes!("../../../../fuzz/fixtures/session_bob.bin");

/// Plaintext of the fresh message each side decrypts after a failed fuzz decryption.
pub const FRESH_PLAINTEXT: &[u8] = b"fresh message after a rejected input";

/// `message_decode`: decoding never panics and a decoded message re-encodes to the same bytes.
pub fn check_message_decode(data: &[u8]) {
    if let Ok(m) = Message::from_bytes(data) {
        assert_eq!(m.to_bytes(), data, "message round trip");
    }
}

/// `bundle_decode`: decode, exact round trip, and signature verification never panics; the
/// same for the published prekeys on their own (as uploaded to the server).
pub fn check_bundle_decode(data: &[u8]) {
    if let Ok(b) = PrekeyBundle::from_bytes(data) {
        assert_eq!(b.to_bytes(), data, "bundle round trip");
        let _ = b.verify();
    }
    if let Ok(k) = SignedPrekeyPublic::from_bytes(data) {
        assert_eq!(k.to_bytes(), data, "signed prekey round trip");
    }
    if let Ok(k) = KemPrekeyPublic::from_bytes(data) {
        assert_eq!(k.to_bytes(), data, "KEM prekey round trip");
    }
    if let Ok(k) = OneTimePrekeyPublic::from_bytes(data) {
        assert_eq!(k.to_bytes(), data, "one-time prekey round trip");
    }
}

/// `session_state_decode`: decode a stored session, and it re-encodes to the same bytes (a
/// state in the older format 1, still read for existing stores, re-encodes in the current
/// format, and that encoding round-trips).
pub fn check_session_state_decode(data: &[u8]) {
    if let Ok(s) = Session::from_bytes(data) {
        let once = s.to_bytes();
        if data.get(5) == Some(&1) {
            let again = Session::from_bytes(&once).expect("re-decoding an encoding").to_bytes();
            assert_eq!(once.as_slice(), again.as_slice(), "format 1 re-encodes stably");
        } else {
            assert_eq!(once.as_slice(), data, "session state round trip");
        }
    }
}

/// `prekeys_state_decode`: decode stored prekeys; a decoded set re-encodes to a stable
/// encoding (decoding its own encoding gives the same encoding again).
pub fn check_prekeys_state_decode(data: &[u8]) {
    if let Ok(p) = DevicePrekeys::from_bytes(data) {
        let once = p.to_bytes();
        let again = DevicePrekeys::from_bytes(&once).expect("re-decoding an encoding").to_bytes();
        assert_eq!(once.as_slice(), again.as_slice(), "prekey state encoding is stable");
    }
}

/// `identity_decode`: the three identity decoders on the same bytes.
pub fn check_identity_decode(data: &[u8]) {
    if let Ok(d) = DeviceIdentity::from_bytes(data) {
        let back = DeviceIdentity::from_bytes(&d.to_bytes()).expect("device identity re-decodes");
        assert_eq!(back.public(), d.public());
    }
    if let Ok(a) = AccountIdentity::from_bytes(data) {
        let back = AccountIdentity::from_bytes(&a.to_bytes()).expect("account identity re-decodes");
        assert_eq!(back.public(), a.public());
    }
    if let Ok(p) = DevicePublic::from_bytes(data) {
        assert_eq!(p.to_bytes(), data, "device public round trip");
    }
}

fn device_list_account() -> &'static AccountName {
    static NAME: OnceLock<AccountName> = OnceLock::new();
    NAME.get_or_init(|| AccountName::new(DEVICE_LIST_ACCOUNT).unwrap())
}

/// `device_list_decode`: verify with nothing pinned; an accepted list re-encodes exactly and
/// is accepted again against itself as the pinned key and previous list.
pub fn check_device_list_decode(data: &[u8]) {
    let name = device_list_account();
    if let Ok(list) = DeviceList::verify(data, name, None, None) {
        assert_eq!(list.to_bytes(), data, "device list round trip");
        let again = DeviceList::verify(data, name, Some(list.account_key()), Some(&list));
        assert_eq!(again.as_ref(), Ok(&list));
    }
}

/// The fresh message each side of the fixture must still accept after an error.
struct SessionFixture {
    /// From Alice to Bob, encrypted on a copy of Alice's fixture state.
    fresh_to_bob: Message,
    /// From Bob to Alice.
    fresh_to_alice: Message,
}

fn session_fixture() -> &'static SessionFixture {
    static FIXTURE: OnceLock<SessionFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut alice = Session::from_bytes(SESSION_ALICE).expect("fuzz/fixtures/session_alice.bin decodes");
        let mut bob = Session::from_bytes(SESSION_BOB).expect("fuzz/fixtures/session_bob.bin decodes");
        // decrypt_on compares states with the fixture bytes, so they must be canonical.
        assert_eq!(alice.to_bytes().as_slice(), SESSION_ALICE);
        assert_eq!(bob.to_bytes().as_slice(), SESSION_BOB);
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(0xf2e5);
        SessionFixture {
            fresh_to_bob: alice.encrypt(&mut rng, FRESH_PLAINTEXT).unwrap(),
            fresh_to_alice: bob.encrypt(&mut rng, FRESH_PLAINTEXT).unwrap(),
        }
    })
}

/// Decrypts `data` on a fresh copy of the session stored as `state`. On success a replay
/// must fail; on failure the state must be byte-for-byte unchanged and still accept `fresh`.
/// Returns whether `data` decrypted.
fn decrypt_on(state: &[u8], fresh: &Message, data: &[u8]) -> bool {
    // A fresh copy of the fixture for every input (sessions are not `Clone`).
    let mut s = Session::from_bytes(state).expect("the fixture state loads");
    match s.decrypt_bytes(data) {
        Ok(_) => {
            assert!(s.decrypt_bytes(data).is_err(), "a replayed message decrypted twice");
            true
        }
        Err(_) => {
            assert_eq!(s.to_bytes().as_slice(), state, "a rejected message changed the session");
            assert_eq!(s.decrypt(fresh).expect("fresh message after an error"), FRESH_PLAINTEXT);
            false
        }
    }
}

/// `session_decrypt`: `data` as wire bytes on each side of the fixture session. Returns how
/// many sides decrypted it (used by the replay test to check the seeds still match the
/// fixture).
pub fn check_session_decrypt(data: &[u8]) -> usize {
    let f = session_fixture();
    usize::from(decrypt_on(SESSION_BOB, &f.fresh_to_bob, data))
        + usize::from(decrypt_on(SESSION_ALICE, &f.fresh_to_alice, data))
}

/// The two account identities behind the safety-number target.
pub fn safety_accounts() -> [(AccountName, AccountIdentity); 2] {
    [("alice", SAFETY_LOCAL_SEED), ("bob", SAFETY_REMOTE_SEED)].map(|(name, seed)| {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        (AccountName::new(name).unwrap(), AccountIdentity::generate(&mut rng).unwrap())
    })
}

/// Local view and the remote side's view of the same safety number.
fn safety_numbers() -> &'static (SafetyNumber, SafetyNumber) {
    static SN: OnceLock<(SafetyNumber, SafetyNumber)> = OnceLock::new();
    SN.get_or_init(|| {
        let [(an, a), (bn, b)] = safety_accounts();
        (
            SafetyNumber::new(&an, &a.public(), &bn, &b.public()),
            SafetyNumber::new(&bn, &b.public(), &an, &a.public()),
        )
    })
}

/// `safety_number_scan`: comparing any scanned payload never panics and succeeds exactly for
/// the peer's own payload.
pub fn check_safety_number_scan(data: &[u8]) {
    let (local, remote) = safety_numbers();
    let ok = local.compare_scanned(data).is_ok();
    assert_eq!(ok, data == remote.scannable().as_slice(), "scan accepted exactly the peer's payload");
}

/// The link secret behind the link targets' seeds and fixture.
pub const LINK_SECRET: [u8; 16] = *b"fuzz link secret";

/// The new device's pending link the `link_answer_open` target attacks, written by the
/// corpus generator with the link seeds (its ML-KEM key comes from AWS-LC's DRBG).
pub const LINK_PENDING: &[u8] = include_bytes!("../../../../fuzz/fixtures/link_pending.bin");

/// `k_offer` (docs/PROTOCOL.md §10), computed here with the RustCrypto crates directly,
/// independently of the crate's own code.
fn offer_mac(body: &[u8]) -> [u8; 32] {
    use hmac::{KeyInit, Mac};
    let mut k = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(Some(&[0u8; 32]), &LINK_SECRET)
        .expand(b"Tacit v1 link offer", &mut k)
        .unwrap();
    let mut m = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&k).unwrap();
    m.update(body);
    m.finalize().into_bytes().into()
}

/// `link_offer_open`: `VerifiedOffer::open` on the bytes as they are (almost always a bad
/// MAC), then on the bytes with a correct MAC appended, so the parser and the checks behind
/// the MAC are reached too: those must never report `BadMac`, and an accepted offer's
/// accessors work. Returns whether the re-MACed offer was accepted.
pub fn check_link_offer_open(data: &[u8]) -> bool {
    let secret = LinkSecret::from_bytes(LINK_SECRET);
    if let Ok(o) = VerifiedOffer::open(&secret, data) {
        assert!(tacit_protocol::valid_device_label(o.label()));
    }
    let mut offer = data.to_vec();
    offer.extend_from_slice(&offer_mac(data));
    match VerifiedOffer::open(&secret, &offer) {
        Ok(o) => {
            assert_eq!(o.fingerprint().len(), 29);
            o.signed_prekey().verify(o.device()).expect("an accepted offer's prekey verifies");
            true
        }
        Err(e) => {
            assert_ne!(e, LinkError::BadMac, "a correctly MACed offer failed the MAC check");
            false
        }
    }
}

fn link_pending() -> &'static PendingLink {
    static P: OnceLock<PendingLink> = OnceLock::new();
    P.get_or_init(|| PendingLink::from_bytes(LINK_PENDING).expect("fuzz/fixtures/link_pending.bin decodes"))
}

/// `link_answer_open`: `PendingLink::open_answer` on the fixture (returns whether the input
/// opened); `Provisioning::from_bytes` and `PendingLink::from_bytes` on the same bytes, each
/// re-encoding exactly what it decoded.
pub fn check_link_answer_open(data: &[u8]) -> bool {
    if let Ok(p) = Provisioning::from_bytes(data) {
        assert_eq!(p.to_bytes().as_slice(), data, "provisioning round trip");
    }
    if let Ok(p) = PendingLink::from_bytes(data) {
        assert_eq!(p.to_bytes().as_slice(), data, "pending link round trip");
    }
    let opened = link_pending().open_answer(data);
    if let Ok(p) = &opened {
        assert_ne!(p.device_id, p.approver_id);
    }
    opened.is_ok()
}

/// The archive key behind the `archive_open` seeds.
pub const ARCHIVE_KEY: [u8; 32] = *b"fuzz history archive key 32 byte";

/// `archive_open`: the bytes as an archive (cut into sealed chunks, the last one last) never
/// panic the opener, and refusing leaves it unfinished; the bytes as a plaintext seal and
/// open back to themselves, with exactly `sealed_len` bytes.
pub fn check_archive_open(data: &[u8]) {
    let mut o = ArchiveOpener::new(&ARCHIVE_KEY);
    let chunks: Vec<&[u8]> = data.chunks(tacit_protocol::archive::SEALED_CHUNK_LEN).collect();
    for (i, c) in chunks.iter().enumerate() {
        if o.open_chunk(c, i + 1 == chunks.len()).is_err() {
            assert!(!o.is_finished());
            break;
        }
    }
    // Opening a single chunk either way.
    let _ = ArchiveOpener::new(&ARCHIVE_KEY).open_chunk(data, true);
    let _ = ArchiveOpener::new(&ARCHIVE_KEY).open_chunk(data, false);

    let mut s = ArchiveSealer::new(&ARCHIVE_KEY);
    let mut o = ArchiveOpener::new(&ARCHIVE_KEY);
    let mut pieces: Vec<&[u8]> = data.chunks(CHUNK_LEN).collect();
    if pieces.is_empty() {
        pieces.push(&[]);
    }
    let mut total = 0u64;
    let mut back = Vec::with_capacity(data.len());
    for (i, p) in pieces.iter().enumerate() {
        let last = i + 1 == pieces.len();
        let c = s.seal_chunk(p, last).unwrap();
        total += c.len() as u64;
        back.extend_from_slice(&o.open_chunk(&c, last).unwrap());
    }
    assert!(o.is_finished());
    assert_eq!(back, data);
    assert_eq!(sealed_len(data.len() as u64), Some(total));
    assert_eq!(tacit_protocol::archive::plain_len(total), Some(data.len() as u64));
}
