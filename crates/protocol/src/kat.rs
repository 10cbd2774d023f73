//! Known-answer tests: the Rust implementation against the vectors that the independent
//! Python reference (`vectors/reference.py`, written from `docs/PROTOCOL.md`) generated into
//! `crates/protocol/tests/vectors/`. `scripts/kat-check` proves the committed files are what
//! the reference produces; these tests prove the Rust code produces and accepts exactly them.
//!
//! Private keys are fed through a test RNG that hands out queued 32-byte strings, so every
//! key the Rust code draws is the reference's; each test checks the queue is drained, which
//! pins the order and number of draws too. ML-KEM randomness cannot be fixed in AWS-LC, so
//! Bob's KEM key pair is imported (`KemSecret::from_parts`) and Alice's encapsulation output
//! injected (`Session::initiate_with_kem`).

use std::collections::{HashMap, VecDeque};

use rand_core::{CryptoRng, RngCore};
use serde_json::Value;

use crate::codec::{Reader, Writer};
use crate::crypto::kem::{KemCiphertext, KemPublic, KemSecret};
use crate::crypto::x25519::{X25519Public, X25519Secret};
use crate::crypto::{CryptoError, Secret32};
use crate::prekeys::PrekeyUse;
use crate::ratchet::MessageKey;
use crate::{
    AccountIdentity, AccountKey, AccountName, DeviceAddress, DeviceEntry, DeviceId, DeviceIdentity,
    DeviceList, DeviceListError, DevicePrekeys, DevicePublic, KemPrekeyKind, Message, PrekeyBundle,
    PrekeyError, SafetyNumber, Session, SessionError, VerifiedDevice,
};

const PADDING: &str = include_str!("../tests/vectors/padding.json");
const SAFETY_NUMBER: &str = include_str!("../tests/vectors/safety_number.json");
const DEVICE_LIST: &str = include_str!("../tests/vectors/device_list.json");
const BUNDLE: &str = include_str!("../tests/vectors/bundle.json");
const CONVERSATION: &str = include_str!("../tests/vectors/conversation.json");
const MUST_FAIL: &str = include_str!("../tests/vectors/must_fail.json");

fn load(text: &str) -> Value {
    serde_json::from_str(text).expect("vector file is JSON")
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

fn arr32(v: &Value) -> [u8; 32] {
    bytes(v).try_into().expect("32 bytes")
}

fn num(v: &Value) -> u64 {
    v.as_u64().expect("number")
}

fn text(v: &Value) -> &str {
    v.as_str().expect("string")
}

/// An RNG that returns queued byte strings, each to exactly one `fill_bytes` call of its
/// length; anything else (an unexpected draw) panics.
struct QueueRng(VecDeque<Vec<u8>>);

impl QueueRng {
    fn new<I: IntoIterator<Item = Vec<u8>>>(items: I) -> Self {
        Self(items.into_iter().collect())
    }
    fn assert_drained(&self) {
        assert!(self.0.is_empty(), "{} queued random strings were not drawn", self.0.len());
    }
}

impl RngCore for QueueRng {
    fn next_u32(&mut self) -> u32 {
        panic!("unexpected next_u32 draw")
    }
    fn next_u64(&mut self) -> u64 {
        panic!("unexpected next_u64 draw")
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        let next = self.0.pop_front().expect("unexpected random draw: queue empty");
        assert_eq!(next.len(), dest.len(), "random draw of an unexpected length");
        dest.copy_from_slice(&next);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for QueueRng {}

fn encode_address(a: &DeviceAddress) -> Vec<u8> {
    let mut w = Vec::new();
    a.encode(&mut w);
    w
}

fn decode_address(b: &[u8]) -> DeviceAddress {
    let mut r = Reader::new(b);
    let a = DeviceAddress::decode(&mut r).unwrap();
    r.finish().unwrap();
    a
}

/// A device identity from the vector's seeds (drawn in the order `generate` draws them),
/// checked against the vector's public encoding and address.
fn device(v: &Value) -> (DeviceIdentity, DeviceAddress) {
    let mut rng = QueueRng::new([bytes(&v["signing_seed"]), bytes(&v["identity_secret"])]);
    let id = DeviceIdentity::generate(&mut rng).unwrap();
    rng.assert_drained();
    assert_eq!(id.public().to_bytes(), bytes(&v["device_public"]), "device public");
    let addr = DeviceAddress {
        account: AccountName::new(text(&v["account"])).unwrap(),
        device: DeviceId::new(u32::try_from(num(&v["device_id"])).unwrap()).unwrap(),
    };
    assert_eq!(encode_address(&addr), bytes(&v["address"]), "address encoding");
    (id, addr)
}

fn account(seed: &Value, key: &Value) -> AccountIdentity {
    let mut rng = QueueRng::new([bytes(seed)]);
    let id = AccountIdentity::generate(&mut rng).unwrap();
    rng.assert_drained();
    assert_eq!(id.public().as_bytes().to_vec(), bytes(key), "account key");
    id
}

fn kem_kind(v: &Value) -> KemPrekeyKind {
    match num(v) {
        1 => KemPrekeyKind::OneTime,
        2 => KemPrekeyKind::LastResort,
        k => panic!("kind {k}"),
    }
}

fn x25519_secret(secret: &Value, public: &Value) -> X25519Secret {
    let s = X25519Secret::from_bytes(Secret32(arr32(secret))).unwrap();
    assert_eq!(s.public().as_bytes(), &arr32(public), "X25519 public key");
    s
}

/// Bob's prekeys from bundle.json (his KEM key pair imported from kyber-py's keygen).
fn bob_prekeys(b: &Value, identity: &DeviceIdentity) -> DevicePrekeys {
    let spk = &b["signed_prekey"];
    let kem = &b["kem_prekey"];
    let opk = &b["one_time_prekey"];
    let kem_public = KemPublic::from_bytes(&bytes(&kem["encapsulation_key"])).unwrap();
    let kem_secret = KemSecret::from_parts(&bytes(&kem["decapsulation_key"]), kem_public).unwrap();
    DevicePrekeys::from_secrets(
        identity,
        (u32::try_from(num(&spk["id"])).unwrap(), x25519_secret(&spk["secret"], &spk["public"])),
        (u32::try_from(num(&kem["id"])).unwrap(), kem_kind(&kem["kind"]), kem_secret),
        Some((u32::try_from(num(&opk["id"])).unwrap(), x25519_secret(&opk["secret"], &opk["public"]))),
    )
}

#[test]
fn padding_buckets() {
    let v = load(PADDING);
    for c in v["cases"].as_array().unwrap() {
        let n = usize::try_from(num(&c["plaintext_len"])).unwrap();
        let want = usize::try_from(num(&c["padded_len"])).unwrap();
        assert_eq!(crate::padding::padded_len(n), Ok(want), "bucket of {n}");
        assert_eq!(crate::padding::pad(&vec![0u8; n], 0).unwrap().len(), want);
    }
    for n in v["too_long"].as_array().unwrap() {
        let n = usize::try_from(num(n)).unwrap();
        assert_eq!(crate::padding::padded_len(n), Err(crate::padding::PaddingError::TooLong));
    }
    let sample = &v["sample"];
    let mut padded = crate::padding::pad(&bytes(&sample["plaintext"]), 0).unwrap();
    assert_eq!(padded, bytes(&sample["padded"]));
    crate::padding::unpad(&mut padded).unwrap();
    assert_eq!(padded, bytes(&sample["plaintext"]));
}

#[test]
fn safety_numbers() {
    let v = load(SAFETY_NUMBER);
    let side = |s: &Value| {
        let id = account(&s["account_seed"], &s["account_key"]);
        let name = AccountName::new(text(&s["name"])).unwrap();
        let fp = crate::safety_number::fingerprint(id.public().as_bytes(), name.as_str().as_bytes());
        assert_eq!(fp.to_vec(), bytes(&s["fingerprint"]), "fingerprint of {name}");
        (name, id.public())
    };
    let (alice, alice_key) = side(&v["alice"]);
    let (bob, bob_key) = side(&v["bob"]);
    let at_alice = SafetyNumber::new(&alice, &alice_key, &bob, &bob_key);
    let at_bob = SafetyNumber::new(&bob, &bob_key, &alice, &alice_key);
    for sn in [&at_alice, &at_bob] {
        assert_eq!(sn.digits(), text(&v["safety_number"]));
        assert_eq!(sn.display(), text(&v["display"]));
        assert!(sn.matches_digits(text(&v["display"])));
    }
    assert_eq!(at_alice.scannable().to_vec(), bytes(&v["scannable_alice"]));
    assert_eq!(at_bob.scannable().to_vec(), bytes(&v["scannable_bob"]));
    at_alice.compare_scanned(&bytes(&v["scannable_bob"])).unwrap();
    at_bob.compare_scanned(&bytes(&v["scannable_alice"])).unwrap();
    assert!(at_alice.compare_scanned(&bytes(&v["scannable_alice"])).is_err());
}

fn list_entries(v: &Value) -> Vec<DeviceEntry> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let (id, _) = device(&d["device"]);
            let mut e = DeviceEntry::new(
                DeviceId::new(u32::try_from(num(&d["id"])).unwrap()).unwrap(),
                id.public().clone(),
            );
            if let Some(approver) = d.get("approver") {
                e.approver = approver.as_bool().unwrap();
                e.added_ms = num(&d["added_ms"]);
                e.label = text(&d["label"]).to_owned();
            }
            e
        })
        .collect()
}

#[test]
fn device_list() {
    let v = load(DEVICE_LIST);
    let acct = account(&v["account_seed"], &v["account_key"]);
    let name = AccountName::new(text(&v["account"])).unwrap();
    let entries = list_entries(&v["devices"]);
    let list = DeviceList::sign(&acct, name.clone(), num(&v["version"]), entries.clone()).unwrap();
    assert_eq!(list.to_bytes(), bytes(&v["bytes"]), "signed device list bytes");
    let key = AccountKey::from_bytes(arr32(&v["account_key"])).unwrap();
    let parsed = DeviceList::verify(&bytes(&v["bytes"]), &name, Some(&key), None).unwrap();
    assert_eq!(parsed, list);
    assert_eq!(parsed.devices(), entries.as_slice());
    assert_eq!(parsed.approvers().map(|d| d.id.get()).collect::<Vec<_>>(), vec![2]);

    // Format 1 (stored before format 2) still verifies, re-encodes as it was, and its
    // device 1 is the approver.
    let f1 = &v["format1"];
    let f1_bytes = bytes(&f1["bytes"]);
    let old = DeviceList::verify(&f1_bytes, &name, Some(&key), None).unwrap();
    assert_eq!(old.to_bytes(), f1_bytes, "format 1 re-encodes");
    assert_eq!(old.version(), num(&f1["version"]));
    let want: Vec<u64> = f1["approvers"].as_array().unwrap().iter().map(num).collect();
    assert_eq!(old.approvers().map(|d| u64::from(d.id.get())).collect::<Vec<_>>(), want);
    let old_ids: Vec<DevicePublic> = list_entries(&f1["devices"]).into_iter().map(|e| e.identity).collect();
    assert_eq!(old.devices().iter().map(|d| d.identity.clone()).collect::<Vec<_>>(), old_ids);
    assert!(old.devices().iter().all(|d| d.added_ms == 0 && d.label.is_empty()));

    // Account key rotation.
    let r = &v["rotation"];
    let new_acct = account(&r["new_account_seed"], &r["new_account_key"]);
    let kept: Vec<DeviceEntry> = r["device_indexes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| entries[usize::try_from(num(i)).unwrap()].clone())
        .collect();
    let rotated = DeviceList::sign(&new_acct, name.clone(), num(&r["version"]), kept).unwrap();
    assert_eq!(rotated.to_bytes(), bytes(&r["bytes"]), "rotated list bytes");
    let sig = DeviceList::sign_rotation(&acct, &rotated.to_bytes());
    assert_eq!(sig.as_bytes().to_vec(), bytes(&r["signature"]), "rotation signature");
    DeviceList::verify_rotation(&key, &rotated.to_bytes(), &sig).unwrap();
    // The new list is an identity change for whoever knew the old key.
    assert_eq!(
        DeviceList::verify(&rotated.to_bytes(), &name, None, Some(&parsed)),
        Err(DeviceListError::AccountKeyChanged)
    );
    for c in v["rotation_must_fail"].as_array().unwrap() {
        let prev = AccountKey::from_bytes(arr32(&c["previous_key"])).unwrap();
        let sig = crate::Signature::from_bytes(bytes(&c["signature"]).try_into().unwrap());
        assert_eq!(
            DeviceList::verify_rotation(&prev, &bytes(&c["bytes"]), &sig),
            Err(DeviceListError::BadRotation),
            "{}",
            text(&c["name"])
        );
    }

    for c in v["must_fail"].as_array().unwrap() {
        let who = AccountName::new(text(&c["account"])).unwrap();
        let got = DeviceList::verify(&bytes(&c["bytes"]), &who, Some(&key), None);
        // "bad_binding": an entry's binding signature does not verify (checked after the
        // account signature).
        let ok = matches!(
            (text(&c["expect"]), &got),
            ("bad_signature", Err(DeviceListError::BadSignature))
                | ("wrong_account", Err(DeviceListError::WrongAccount))
                | ("bad_binding", Err(DeviceListError::BadDeviceBinding))
                | ("duplicate_device", Err(DeviceListError::DuplicateDevice))
                | ("duplicate_identity", Err(DeviceListError::DuplicateIdentity))
                | ("bad_device_count", Err(DeviceListError::BadDeviceCount))
                | ("bad_entry", Err(DeviceListError::BadEntry))
                | ("no_approver", Err(DeviceListError::NoApprover))
                | ("decode", Err(DeviceListError::Decode(_)))
        );
        assert!(ok, "{}: expected {}, got {got:?}", text(&c["name"]), text(&c["expect"]));
    }
}

#[test]
fn prekey_bundle() {
    let v = load(BUNDLE);
    let (bob, bob_addr) = device(&v["device"]);
    let prekeys = bob_prekeys(&v, &bob);
    let bundle = prekeys.bundle(bob_addr, &bob).unwrap();
    assert_eq!(bundle.signed_prekey.signature.as_bytes().to_vec(), bytes(&v["signed_prekey"]["signature"]));
    assert_eq!(bundle.kem_prekey.signature.as_bytes().to_vec(), bytes(&v["kem_prekey"]["signature"]));
    assert_eq!(bundle.to_bytes(), bytes(&v["bytes"]), "bundle bytes");
    let parsed = PrekeyBundle::from_bytes(&bytes(&v["bytes"])).unwrap();
    assert_eq!(parsed, bundle);
    parsed.verify().unwrap();

    let alice = load(CONVERSATION);
    let (alice_id, alice_addr) = device(&alice["alice"]);
    for c in v["must_fail"].as_array().unwrap() {
        let name = text(&c["name"]);
        let b = PrekeyBundle::from_bytes(&bytes(&c["bytes"])).unwrap();
        // Nothing may be drawn before the bundle is refused.
        let mut rng = QueueRng::new([]);
        let got = Session::initiate(
            &mut rng,
            &alice_id,
            alice_addr.clone(),
            &b,
            &VerifiedDevice::dangerous_assume_verified(b.address.clone(), bob.public().clone()),
            crate::UnixTime(0),
        );
        let ok = matches!(
            (text(&c["expect"]), &got),
            ("bad_signature", Err(SessionError::Crypto(CryptoError::BadSignature)))
                | ("identity_mismatch", Err(SessionError::IdentityMismatch))
        );
        assert!(ok, "{name}: expected {}, got {:?}", text(&c["expect"]), got.err());
    }
}

/// Bob's side of PQXDH and the KEM: the vector's ciphertext decapsulates (in AWS-LC, with
/// the key pair kyber-py generated) to the vector's secret, and every DH and SK match.
#[test]
fn pqxdh_secrets() {
    let v = load(CONVERSATION);
    let (alice, alice_addr) = device(&v["alice"]);
    let (bob, bob_addr) = device(&v["bob"]);
    let mut prekeys = bob_prekeys(&load(BUNDLE), &bob);
    let bundle = PrekeyBundle::from_bytes(&bytes(&v["bundle"])).unwrap();
    assert_eq!(prekeys.bundle(bob_addr.clone(), &bob).unwrap(), bundle);
    let ct = KemCiphertext::from_bytes(&bytes(&v["kem"]["ciphertext"])).unwrap();
    let ss = Secret32(arr32(&v["kem"]["shared_secret"]));
    let p = &v["pqxdh"];

    // Alice.
    let mut rng = QueueRng::new([bytes(&p["base_key_secret"])]);
    let out = crate::pqxdh::initiate_with(&mut rng, &alice, &bundle, ct.clone(), &ss).unwrap();
    rng.assert_drained();
    assert_eq!(out.base_key.as_bytes().to_vec(), bytes(&p["base_key"]));
    assert_eq!(out.sk.expose().to_vec(), bytes(&p["sk"]), "SK (initiator)");
    let ek = x25519_secret(&p["base_key_secret"], &p["base_key"]);
    let opk = bundle.one_time_prekey.unwrap().key;
    let dhs = [
        alice.dh().diffie_hellman(&bundle.signed_prekey.key).unwrap(),
        ek.diffie_hellman(bundle.identity.dh_key()).unwrap(),
        ek.diffie_hellman(&bundle.signed_prekey.key).unwrap(),
        ek.diffie_hellman(&opk).unwrap(),
    ];
    let want: Vec<Vec<u8>> = p["dh"].as_array().unwrap().iter().map(bytes).collect();
    let got: Vec<Vec<u8>> = dhs.iter().map(|d| d.expose().to_vec()).collect();
    assert_eq!(got, want, "DH1..DH4");
    let fields = crate::pqxdh::InitialFields {
        base_key: &out.base_key,
        signed_prekey_id: bundle.signed_prekey.id,
        one_time_prekey_id: bundle.one_time_prekey.map(|k| k.id),
        kem_prekey_kind: bundle.kem_prekey.kind,
        kem_prekey_id: bundle.kem_prekey.id,
        kem_ciphertext: &ct,
    };
    let ad = crate::pqxdh::associated_data(alice.public(), &alice_addr, bob.public(), &bob_addr, &fields);
    assert_eq!(ad, bytes(&p["ad"]), "AD");

    // Bob.
    let used = PrekeyUse {
        signed_id: bundle.signed_prekey.id,
        one_time_id: Some(bundle.one_time_prekey.unwrap().id),
        kem_id: bundle.kem_prekey.id,
        kem_kind: bundle.kem_prekey.kind,
        sender: *alice.public().dh_key(),
    };
    let secrets = prekeys.lookup(&used).unwrap();
    assert_eq!(secrets.kem.decapsulate(&ct).unwrap().expose(), ss.expose(), "ML-KEM decapsulation");
    let (sk, tag) =
        crate::pqxdh::respond(&bob, &secrets, alice.public().dh_key(), &out.base_key, &ct).unwrap();
    assert_eq!(sk.expose().to_vec(), bytes(&p["sk"]), "SK (responder)");
    assert_eq!(tag, crate::prekeys::ReplayTag::from_dh3(&dhs[2]), "replay tag");
    prekeys.consume(&used, tag);
}

/// Alice and Bob replaying the scripted conversation step by step.
struct Parties {
    v: Value,
    alice_id: DeviceIdentity,
    alice_addr: DeviceAddress,
    bob_id: DeviceIdentity,
    bob_addr: DeviceAddress,
    alice: Session,
    bob: Option<Session>,
    bob_prekeys: DevicePrekeys,
    wires: HashMap<String, Vec<u8>>,
    done: usize,
    /// Round-trip every session and the prekeys through their stored form before each step.
    persist: bool,
}

impl Parties {
    fn new(persist: bool) -> Self {
        let v = load(CONVERSATION);
        let (alice_id, alice_addr) = device(&v["alice"]);
        let (bob_id, bob_addr) = device(&v["bob"]);
        let bob_prekeys = bob_prekeys(&load(BUNDLE), &bob_id);
        let bundle = PrekeyBundle::from_bytes(&bytes(&v["bundle"])).unwrap();
        let ct = KemCiphertext::from_bytes(&bytes(&v["kem"]["ciphertext"])).unwrap();
        let ss = Secret32(arr32(&v["kem"]["shared_secret"]));
        // Session::initiate draws EK first, then the initial ratchet key.
        let mut rng =
            QueueRng::new([bytes(&v["pqxdh"]["base_key_secret"]), bytes(&v["initial_ratchet_secret"])]);
        let alice = Session::initiate_with_kem(
            &mut rng,
            &alice_id,
            alice_addr.clone(),
            &bundle,
            &VerifiedDevice::dangerous_assume_verified(bundle.address.clone(), bob_id.public().clone()),
            ct,
            &ss,
        )
        .unwrap();
        rng.assert_drained();
        assert_eq!(alice.base_key().as_bytes().to_vec(), bytes(&v["pqxdh"]["base_key"]));
        Self {
            v,
            alice_id,
            alice_addr,
            bob_id,
            bob_addr,
            alice,
            bob: None,
            bob_prekeys,
            wires: HashMap::new(),
            done: 0,
            persist,
        }
    }

    fn steps(&self) -> usize {
        self.v["steps"].as_array().unwrap().len()
    }

    fn reload(&mut self) {
        self.alice = Session::from_bytes(&self.alice.to_bytes()).unwrap();
        if let Some(b) = &self.bob {
            self.bob = Some(Session::from_bytes(&b.to_bytes()).unwrap());
        }
        self.bob_prekeys = DevicePrekeys::from_bytes(&self.bob_prekeys.to_bytes()).unwrap();
    }

    /// Runs the script up to (not including) step `until`, checking every byte.
    fn run(&mut self, until: usize) {
        while self.done < until {
            let step = self.v["steps"][self.done].clone();
            if self.persist {
                self.reload();
            }
            let id = text(&step["message"]).to_owned();
            let party = text(&step["party"]);
            let plaintext = bytes(&step["plaintext"]);
            match text(&step["op"]) {
                "send" => {
                    let fresh = step["fresh_ratchet_secret"].as_str().map(|s| hex::decode(s).unwrap());
                    let mut rng = QueueRng::new(fresh);
                    let session = match party {
                        "alice" => &mut self.alice,
                        _ => self.bob.as_mut().expect("Bob has a session"),
                    };
                    let msg = session.encrypt(&mut rng, &plaintext).unwrap();
                    rng.assert_drained();
                    let wire = msg.to_bytes();
                    assert_eq!(hex::encode(&wire), text(&step["wire"]), "wire bytes of {id}");
                    assert_eq!(Message::from_bytes(&wire).unwrap(), msg);
                    check_message_key(&self.v, &step, &msg);
                    self.wires.insert(id, wire);
                }
                "receive" => {
                    let wire = self.wires[&id].clone();
                    let got = self.deliver(party, &wire, None).unwrap_or_else(|e| panic!("{id}: {e:?}"));
                    assert_eq!(got, plaintext, "plaintext of {id}");
                    if party == "alice" {
                        assert!(!self.alice.is_pending(), "Alice stops sending prekey messages");
                    }
                }
                op => panic!("op {op}"),
            }
            self.done += 1;
        }
    }

    fn deliver(
        &mut self,
        party: &str,
        wire: &[u8],
        bob_address: Option<DeviceAddress>,
    ) -> Result<Vec<u8>, SessionError> {
        let msg = Message::from_bytes(wire)?;
        if party == "alice" {
            return self.alice.decrypt(&msg);
        }
        let existing = match &mut self.bob {
            Some(s) => match s.decrypt(&msg) {
                Err(SessionError::OtherSession) => None,
                r => Some(r),
            },
            None => None,
        };
        if let Some(r) = existing {
            return r;
        }
        let Message::Prekey(first) = &msg else { panic!("a ratchet message before any session") };
        let (session, pt) = Session::accept(
            &self.bob_id,
            bob_address.unwrap_or_else(|| self.bob_addr.clone()),
            &mut self.bob_prekeys,
            &VerifiedDevice::dangerous_assume_verified(
                self.alice_addr.clone(),
                self.alice_id.public().clone(),
            ),
            first,
        )?;
        self.bob = Some(session);
        Ok(pt)
    }
}

/// The reference's message key, AES key and nonce open the wire ciphertext under
/// `AD || header` (checks the key schedule independently of the session state).
fn check_message_key(v: &Value, step: &Value, msg: &Message) {
    let inner = match msg {
        Message::Ratchet(m) => m,
        Message::Prekey(p) => &p.message,
    };
    let h = &step["header"];
    assert_eq!(inner.header.ratchet_key, X25519Public::from_bytes(arr32(&h["ratchet_key"])).unwrap());
    assert_eq!(u64::from(inner.header.previous_counter), num(&h["pn"]));
    assert_eq!(u64::from(inner.header.counter), num(&h["n"]));
    assert_eq!(
        text(&step["type"]),
        match msg {
            Message::Ratchet(_) => "ratchet",
            Message::Prekey(_) => "prekey",
        }
    );
    let mut aad = bytes(&v["pqxdh"]["ad"]);
    aad.put(&inner.header.to_bytes());
    let mut buf = inner.ciphertext.clone();
    let mk = MessageKey::new(Secret32(arr32(&step["message_key"])), inner.header.counter);
    mk.open(&aad, &mut buf).unwrap();
    let mut direct = inner.ciphertext.clone();
    let key = Secret32(arr32(&step["aes_key"]));
    let nonce: [u8; 12] = bytes(&step["nonce"]).try_into().unwrap();
    crate::crypto::aead::open(&key, &nonce, &aad, &mut direct).unwrap();
    assert_eq!(buf, direct);
    crate::padding::unpad(&mut buf).unwrap();
    assert_eq!(buf, bytes(&step["plaintext"]));
}

#[test]
fn conversation() {
    let mut p = Parties::new(false);
    let n = p.steps();
    p.run(n);
    let wires = p.v["wire"].as_object().unwrap();
    assert_eq!(wires.len(), p.wires.len());
    for (id, w) in wires {
        assert_eq!(hex::encode(&p.wires[id]), text(w), "{id}");
    }
}

#[test]
fn conversation_through_stored_state() {
    let mut p = Parties::new(true);
    let n = p.steps();
    p.run(n);
}

#[test]
fn must_fail() {
    let v = load(MUST_FAIL);
    let full = {
        let mut p = Parties::new(false);
        let n = p.steps();
        p.run(n);
        p.wires
    };
    for c in v["cases"].as_array().unwrap() {
        let name = text(&c["name"]);
        let expect = text(&c["expect"]);
        let mut p = Parties::new(false);
        p.run(usize::try_from(num(&c["after_steps"])).unwrap());
        let bob_address = c.get("bob_address").map(|a| decode_address(&bytes(a)));
        let got = p.deliver(text(&c["party"]), &bytes(&c["wire"]), bob_address);
        let ok = matches!(
            (expect, &got),
            ("decode", Err(SessionError::Decode(_)))
                | ("auth", Err(SessionError::DecryptionFailed))
                | ("too_big_gap", Err(SessionError::TooBigMessageGap))
                | ("degenerate_dh", Err(SessionError::Crypto(CryptoError::DegenerateSharedSecret)))
                | (
                    "unknown_prekey",
                    Err(SessionError::Prekey(
                        PrekeyError::UnknownSignedPrekey(_)
                            | PrekeyError::UnknownOneTimePrekey(_)
                            | PrekeyError::UnknownKemPrekey(_),
                    )),
                )
                | ("identity_mismatch", Err(SessionError::IdentityMismatch))
                | ("duplicate", Err(SessionError::DuplicateMessage))
                | ("unexpected_ratchet_key", Err(SessionError::UnexpectedRatchetKey))
        );
        assert!(ok, "{name}: expected {expect}, got {got:?}");
        // Nothing changed: the rest of the conversation goes through byte for byte.
        let n = p.steps();
        p.run(n);
        assert_eq!(p.wires, full, "{name}: the conversation diverged after the refusal");
    }
}

const LINK: &str = include_str!("../tests/vectors/link.json");
const ARCHIVE: &str = include_str!("../tests/vectors/archive.json");

/// §10: code, slot id, offer (byte for byte, with the reference's ephemeral keys), the
/// approver's checks, the sealed answer (with the reference's KEM output) and its opening.
#[test]
fn link() {
    use crate::link::{HistoryRef, LinkError, LinkSecret, PendingLink, Provisioning, VerifiedOffer};
    use crate::{KemPrekeyPublic, SignedPrekeyPublic};

    let v = load(LINK);
    let secret = LinkSecret::from_bytes(bytes(&v["secret"]).try_into().unwrap());
    assert_eq!(secret.to_code().as_str(), text(&v["code"]));
    assert_eq!(LinkSecret::from_code(&text(&v["code"]).to_lowercase()).unwrap().slot_id(), secret.slot_id());
    assert_eq!(secret.slot_id().to_vec(), bytes(&v["slot_id"]));

    let (new, _) = device(&v["device"]);
    let spk = SignedPrekeyPublic::from_bytes(&bytes(&v["signed_prekey"])).unwrap();
    let last_resort = KemPrekeyPublic::from_bytes(&bytes(&v["last_resort_prekey"])).unwrap();
    let eph_kem = KemSecret::from_parts(
        &bytes(&v["ephemeral_kem_decapsulation_key"]),
        KemPublic::from_bytes(&bytes(&v["ephemeral_kem_encapsulation_key"])).unwrap(),
    )
    .unwrap();
    let mut rng = QueueRng::new([bytes(&v["ephemeral_secret"])]);
    let label = text(&v["label"]);
    let (pending, offer) =
        PendingLink::new_with_kem(&mut rng, &secret, new.public(), label, &spk, &last_resort, eph_kem)
            .unwrap();
    rng.assert_drained();
    assert_eq!(offer, bytes(&v["offer"]), "offer bytes");

    let verified = VerifiedOffer::open(&secret, &offer).unwrap();
    assert_eq!(verified.fingerprint(), text(&v["fingerprint"]));
    for c in v["offer_must_fail"].as_array().unwrap() {
        let s = LinkSecret::from_bytes(bytes(&c["secret"]).try_into().unwrap());
        let got = VerifiedOffer::open(&s, &bytes(&c["offer"])).err();
        let ok = matches!(
            (text(&c["expect"]), got),
            ("bad_mac", Some(LinkError::BadMac))
                | ("bad_binding", Some(LinkError::BadBinding))
                | ("bad_label", Some(LinkError::BadLabel))
                | ("bad_prekey", Some(LinkError::BadPrekey))
        );
        assert!(ok, "{}: expected {}, got {got:?}", text(&c["name"]), text(&c["expect"]));
    }

    let acct = {
        let mut rng = QueueRng::new([bytes(&v["account_seed"])]);
        let a = AccountIdentity::generate(&mut rng).unwrap();
        rng.assert_drained();
        a
    };
    let h = &v["history"];
    let provisioning = Provisioning {
        account: AccountName::new("erin").unwrap(),
        device_id: DeviceId::new(2).unwrap(),
        approver_id: DeviceId::new(1).unwrap(),
        device_list: bytes(&v["device_list"]),
        account_identity: Some(acct),
        history: Some(HistoryRef {
            blob_id: bytes(&h["blob_id"]).try_into().unwrap(),
            key: zeroize::Zeroizing::new(arr32(&h["key"])),
            size: num(&h["size"]),
            plain_size: num(&h["plain_size"]),
            digest: arr32(&h["digest"]),
        }),
    };
    assert_eq!(
        provisioning.to_bytes().as_slice(),
        bytes(&v["provisioning"]).as_slice(),
        "provisioning bytes"
    );
    let ct = KemCiphertext::from_bytes(&bytes(&v["kem_ciphertext"])).unwrap();
    let ss = Secret32(arr32(&v["kem_shared_secret"]));
    let mut rng = QueueRng::new([bytes(&v["answer_ephemeral_secret"])]);
    let answer = verified.seal_with_kem(&mut rng, &provisioning, ct, &ss).unwrap();
    rng.assert_drained();
    assert_eq!(answer, bytes(&v["answer"]), "answer bytes");

    let got = pending.open_answer(&answer).unwrap();
    assert_eq!(got.to_bytes().as_slice(), bytes(&v["provisioning"]).as_slice());
    let resumed = PendingLink::from_bytes(&pending.to_bytes()).unwrap();
    assert!(resumed.open_answer(&answer).is_ok());
}

/// §11: subkey, nonces and chunking of the history archive.
#[test]
fn archive() {
    use crate::archive::{ArchiveOpener, ArchiveSealer, CHUNK_LEN, sealed_len};

    let v = load(ARCHIVE);
    let key = arr32(&v["key"]);
    for case in ["short", "empty"] {
        let chunks: Vec<Vec<u8>> = v[case]["chunks"].as_array().unwrap().iter().map(bytes).collect();
        let plain = if case == "short" { bytes(&v["short"]["plaintext"]) } else { Vec::new() };
        let mut s = ArchiveSealer::new(&key);
        assert_eq!(s.seal_chunk(&plain, true).unwrap(), chunks[0], "{case}");
        let mut o = ArchiveOpener::new(&key);
        assert_eq!(o.open_chunk(&chunks[0], true).unwrap(), plain);
    }
    let long = &v["long"];
    let n = usize::try_from(num(&long["plaintext_len"])).unwrap();
    assert_eq!(sealed_len(n as u64), Some(num(&long["sealed_len"])));
    let plain: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    let pieces: Vec<&[u8]> = plain.chunks(CHUNK_LEN).collect();
    let want: Vec<Vec<u8>> = long["chunk_sha256"].as_array().unwrap().iter().map(bytes).collect();
    assert_eq!(pieces.len(), want.len());
    let mut s = ArchiveSealer::new(&key);
    let mut o = ArchiveOpener::new(&key);
    for (i, p) in pieces.iter().enumerate() {
        let last = i + 1 == pieces.len();
        let c = s.seal_chunk(p, last).unwrap();
        assert_eq!(crate::crypto::kdf::sha256(&[&c]).to_vec(), want[i], "chunk {i}");
        if last {
            assert_eq!(c, bytes(&long["last_chunk"]));
        }
        assert_eq!(o.open_chunk(&c, last).unwrap(), *p);
    }
    let mut s = ArchiveSealer::new(&key);
    let full = s.seal_chunk(&vec![0u8; CHUNK_LEN], true).unwrap();
    assert_eq!(crate::crypto::kdf::sha256(&[&full]).to_vec(), bytes(&v["one_full_chunk"]["chunk_sha256"]));
}
