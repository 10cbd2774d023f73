//! Tacit's protocol core against vodozemac's Olm, measured in the same run so every figure
//! is a ratio. `scripts/bench` runs this and writes `docs/BENCHMARKS.md`.
//!
//! Groups: `ratchet_100B` (encrypt + decrypt on an existing chain, no storage, no
//! envelope), `ping_pong` (A→B, B→A, A→B, B→A: a DH ratchet step every turn),
//! `session_setup` (bundle decoded and its signatures checked → key agreement → first
//! message → processed by the receiver), and `primitive/*` (the operations the setup is
//! made of, for the "within 1.3x of its primitives" check), and `fanout` (issue 9: what a
//! client does per recipient device when it sends one message to N devices: encrypt,
//! encode the wire message, serialise the advanced session for the store; `fanout/single`
//! is the single-device baseline, `fanout/devices/N` the whole fan-out to N devices).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::hint::black_box;

use aws_lc_rs::aead::{AES_256_GCM_SIV, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement::{self, UnparsedPublicKey, X25519};
use aws_lc_rs::kem::{DecapsulationKey, ML_KEM_1024};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, RngCore, SeedableRng};
use tacit_protocol::*;
use vodozemac::olm::{Account, OlmMessage, Session as OlmSession, SessionConfig};

const MSG: [u8; 100] = [0x61; 100];
/// A realistic 100-byte text for the fan-out measurements.
const TEXT: &[u8; 100] =
    b"Running late, the train stopped at Lyon for twenty minutes. Start without me, I'll bring the slides.";
/// Recipient device counts of the fan-out measurement.
const FANOUT: [usize; 3] = [1, 10, 100];

struct Pair {
    a: Session,
    b: Session,
    rng: ChaCha20Rng,
}

fn addr(name: &str) -> DeviceAddress {
    DeviceAddress { account: AccountName::new(name).unwrap(), device: DeviceId::new(1).unwrap() }
}

struct Setup {
    alice: DeviceIdentity,
    bob: DeviceIdentity,
    bob_prekeys: DevicePrekeys,
    bundle_bytes: Vec<u8>,
}

/// A device at `address` with its identity, prekeys and published bundle.
fn responder(rng: &mut ChaCha20Rng, address: DeviceAddress) -> (DeviceIdentity, DevicePrekeys, Vec<u8>) {
    let id = DeviceIdentity::generate(rng).unwrap();
    let mut prekeys = DevicePrekeys::new();
    let mut plan = prekeys.plan(UnixTime(0), &PrekeyPolicy::default(), 0, 0);
    plan.new_one_time = 2;
    plan.new_kem_one_time = 2;
    prekeys.execute(rng, &id, UnixTime(0), &plan).unwrap();
    let bundle_bytes = prekeys.bundle(address, &id).unwrap().to_bytes();
    (id, prekeys, bundle_bytes)
}

fn setup(rng: &mut ChaCha20Rng) -> Setup {
    let alice = DeviceIdentity::generate(rng).unwrap();
    let (bob, bob_prekeys, bundle_bytes) = responder(rng, addr("bob"));
    Setup { alice, bob, bob_prekeys, bundle_bytes }
}

/// PQXDH from `alice` to the device `to` (its bundle), the first message, and an answer
/// processed by `alice`: both sides past the pending state.
fn establish(
    rng: &mut ChaCha20Rng,
    alice: &DeviceIdentity,
    from: DeviceAddress,
    to: DeviceAddress,
) -> (Session, Session) {
    let (bob, mut bob_prekeys, bundle_bytes) = responder(rng, to.clone());
    let bundle = PrekeyBundle::from_bytes(&bundle_bytes).unwrap();
    let mut a = Session::initiate(
        rng,
        alice,
        from.clone(),
        &bundle,
        &VerifiedDevice::dangerous_assume_verified(bundle.address.clone(), bob.public().clone()),
        UnixTime(0),
    )
    .unwrap();
    let Message::Prekey(m) = a.encrypt(rng, &MSG).unwrap() else { panic!() };
    let (mut b, _) = Session::accept(
        &bob,
        to,
        &mut bob_prekeys,
        &VerifiedDevice::dangerous_assume_verified(from, alice.public().clone()),
        &m,
    )
    .unwrap();
    let reply = b.encrypt(rng, &MSG).unwrap();
    a.decrypt(&reply).unwrap();
    (a, b)
}

fn tacit_pair() -> Pair {
    let mut rng = ChaCha20Rng::from_rng(OsRng).unwrap();
    let alice = DeviceIdentity::generate(&mut rng).unwrap();
    let (a, b) = establish(&mut rng, &alice, addr("alice"), addr("bob"));
    Pair { a, b, rng }
}

fn olm_pair() -> (OlmSession, OlmSession) {
    let alice = Account::new();
    let mut bob = Account::new();
    bob.generate_one_time_keys(1);
    let otk = *bob.one_time_keys().values().next().unwrap();
    bob.mark_keys_as_published();
    let mut a = alice.create_outbound_session(SessionConfig::version_1(), bob.curve25519_key(), otk).unwrap();
    let OlmMessage::PreKey(m) = a.encrypt(MSG).unwrap() else { panic!() };
    let mut b =
        bob.create_inbound_session(SessionConfig::version_1(), alice.curve25519_key(), &m).unwrap().session;
    let reply = b.encrypt(MSG).unwrap();
    a.decrypt(&reply).unwrap();
    (a, b)
}

fn ratchet(c: &mut Criterion) {
    let mut g = c.benchmark_group("ratchet_100B");
    let mut p = tacit_pair();
    g.bench_function("tacit", |bch| {
        bch.iter(|| {
            let m = p.a.encrypt(&mut p.rng, black_box(&MSG)).unwrap();
            black_box(p.b.decrypt(&m).unwrap());
        })
    });
    let (mut a, mut b) = olm_pair();
    g.bench_function("vodozemac", |bch| {
        bch.iter(|| {
            let m = a.encrypt(black_box(MSG)).unwrap();
            black_box(b.decrypt(&m).unwrap());
        })
    });
    g.finish();
}

fn ping_pong(c: &mut Criterion) {
    let mut g = c.benchmark_group("ping_pong");
    let mut p = tacit_pair();
    g.bench_function("tacit", |bch| {
        bch.iter(|| {
            for _ in 0..2 {
                let m = p.a.encrypt(&mut p.rng, &MSG).unwrap();
                p.b.decrypt(&m).unwrap();
                let m = p.b.encrypt(&mut p.rng, &MSG).unwrap();
                p.a.decrypt(&m).unwrap();
            }
        })
    });
    let (mut a, mut b) = olm_pair();
    g.bench_function("vodozemac", |bch| {
        bch.iter(|| {
            for _ in 0..2 {
                let m = a.encrypt(MSG).unwrap();
                b.decrypt(&m).unwrap();
                let m = b.encrypt(MSG).unwrap();
                a.decrypt(&m).unwrap();
            }
        })
    });
    g.finish();
}

fn session_setup(c: &mut Criterion) {
    let mut g = c.benchmark_group("session_setup");
    let mut rng = ChaCha20Rng::from_rng(OsRng).unwrap();
    let s = setup(&mut rng);
    g.bench_function("tacit", |bch| {
        bch.iter_batched(
            || DevicePrekeys::from_bytes(&s.bob_prekeys.to_bytes()).unwrap(),
            |mut prekeys| {
                let bundle = PrekeyBundle::from_bytes(&s.bundle_bytes).unwrap();
                let mut a = Session::initiate(
                    &mut rng,
                    &s.alice,
                    addr("alice"),
                    &bundle,
                    &VerifiedDevice::dangerous_assume_verified(
                        bundle.address.clone(),
                        s.bob.public().clone(),
                    ),
                    UnixTime(0),
                )
                .unwrap();
                let wire = a.encrypt(&mut rng, &MSG).unwrap().to_bytes();
                let Message::Prekey(m) = Message::from_bytes(&wire).unwrap() else { panic!() };
                let out = Session::accept(
                    &s.bob,
                    addr("bob"),
                    &mut prekeys,
                    &VerifiedDevice::dangerous_assume_verified(addr("alice"), s.alice.public().clone()),
                    &m,
                )
                .unwrap();
                black_box(out);
            },
            BatchSize::SmallInput,
        )
    });
    let alice = Account::new();
    g.bench_function("vodozemac", |bch| {
        bch.iter_batched(
            || {
                let mut bob = Account::new();
                bob.generate_one_time_keys(1);
                let otk = *bob.one_time_keys().values().next().unwrap();
                bob.mark_keys_as_published();
                (bob, otk)
            },
            |(mut bob, otk)| {
                let mut a = alice
                    .create_outbound_session(SessionConfig::version_1(), bob.curve25519_key(), otk)
                    .unwrap();
                let OlmMessage::PreKey(m) = a.encrypt(MSG).unwrap() else { panic!() };
                black_box(
                    bob.create_inbound_session(SessionConfig::version_1(), alice.curve25519_key(), &m)
                        .unwrap(),
                );
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn primitives(c: &mut Criterion) {
    let mut g = c.benchmark_group("primitive");
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    g.bench_function("x25519_keygen", |b| {
        b.iter(|| {
            let k = agreement::PrivateKey::from_private_key(&X25519, black_box(&seed)).unwrap();
            black_box(k.compute_public_key().unwrap());
        })
    });
    let k = agreement::PrivateKey::from_private_key(&X25519, &seed).unwrap();
    let peer = agreement::PrivateKey::generate(&X25519).unwrap().compute_public_key().unwrap();
    g.bench_function("x25519_dh", |b| {
        b.iter(|| {
            agreement::agree(&k, UnparsedPublicKey::new(&X25519, peer.as_ref()), (), |s| Ok(black_box(s[0])))
                .unwrap();
        })
    });
    let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
    let vk = sk.verifying_key();
    let msg = [7u8; 1600];
    let sig = ed25519_dalek::Signer::sign(&sk, &msg);
    g.bench_function("ed25519_verify_strict_1600B", |b| {
        b.iter(|| vk.verify_strict(black_box(&msg), &sig).unwrap())
    });
    let sig32 = ed25519_dalek::Signer::sign(&sk, &msg[..32]);
    g.bench_function("ed25519_verify_strict_32B", |b| {
        b.iter(|| vk.verify_strict(black_box(&msg[..32]), &sig32).unwrap())
    });
    let awsvk = aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, vk.to_bytes());
    g.bench_function("ed25519_verify_awslc_1600B", |b| {
        b.iter(|| awsvk.verify(black_box(&msg), &sig.to_bytes()).unwrap())
    });
    g.bench_function("ed25519_verify_awslc_32B", |b| {
        b.iter(|| awsvk.verify(black_box(&msg[..32]), &sig32.to_bytes()).unwrap())
    });
    g.bench_function("hmac_sha256_32B_x2", |b| {
        use hmac::{KeyInit, Mac};
        b.iter(|| {
            let k = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(black_box(&seed)).unwrap();
            let mut m1 = k.clone();
            m1.update(&[1]);
            let mut m2 = k;
            m2.update(&[2]);
            black_box((m1.finalize(), m2.finalize()));
        })
    });
    g.bench_function("hkdf_sha256_44B", |b| {
        b.iter(|| {
            let mut okm = [0u8; 44];
            hkdf::Hkdf::<sha2::Sha256>::new(Some(&[0u8; 32]), black_box(&seed))
                .expand(b"info", &mut okm)
                .unwrap();
            black_box(okm);
        })
    });
    let dk = DecapsulationKey::generate(&ML_KEM_1024).unwrap();
    let ek = dk.encapsulation_key().unwrap();
    g.bench_function("mlkem1024_encaps", |b| b.iter(|| black_box(ek.encapsulate().unwrap())));
    let (ct, _) = ek.encapsulate().unwrap();
    g.bench_function("mlkem1024_decaps", |b| {
        b.iter(|| black_box(dk.decapsulate(ct.as_ref().into()).unwrap()))
    });
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM_SIV, &seed).unwrap());
    g.bench_function("aes256gcmsiv_seal_open_256B", |b| {
        b.iter(|| {
            let mut buf = vec![0u8; 256];
            let n = [0u8; 12];
            key.seal_in_place_append_tag(Nonce::assume_unique_for_key(n), Aad::from(&[0u8; 64]), &mut buf)
                .unwrap();
            black_box(
                key.open_in_place(Nonce::assume_unique_for_key(n), Aad::from(&[0u8; 64]), &mut buf)
                    .unwrap()
                    .len(),
            );
        })
    });
    g.finish();
}

/// Recipient device `i` of a fan-out: a device of another account every 32 devices (an
/// account has at most `MAX_DEVICES`), so the N sessions are with N distinct devices.
fn recipient(i: usize) -> DeviceAddress {
    DeviceAddress {
        account: AccountName::new(&format!("peer{}", i / MAX_DEVICES)).unwrap(),
        device: DeviceId::new(u32::try_from(i % MAX_DEVICES + 1).unwrap()).unwrap(),
    }
}

/// `alice`'s session with recipient `i` in the steady sending state: established (PQXDH,
/// first message, answer) and one message sent since, so the DH ratchet step that the first
/// send after an answer makes is behind it and every further send is a chain step.
fn sending_session(rng: &mut ChaCha20Rng, alice: &DeviceIdentity, i: usize) -> Session {
    let (mut a, _) = establish(rng, alice, addr("alice"), recipient(i));
    a.encrypt(rng, TEXT).unwrap();
    a
}

/// What the client does for one recipient device: encrypt, encode the envelope content,
/// serialise the advanced session (what it stores for the device).
fn send_to(rng: &mut ChaCha20Rng, s: &mut Session) -> (Vec<u8>, zeroize::Zeroizing<Vec<u8>>) {
    let wire = s.encrypt(rng, black_box(TEXT)).unwrap().to_bytes();
    (wire, s.to_bytes())
}

/// Issue 9: one message to N devices over established sessions, against one encrypt on one
/// session. Sending only steps each sending chain: no state grows across iterations (checked
/// below: the stored session keeps its size after many sends).
fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    let mut rng = ChaCha20Rng::from_rng(OsRng).unwrap();
    let alice = DeviceIdentity::generate(&mut rng).unwrap();

    let mut probe = sending_session(&mut rng, &alice, 0);
    let size = probe.to_bytes().len();
    for _ in 0..10_000 {
        send_to(&mut rng, &mut probe);
    }
    assert_eq!(probe.to_bytes().len(), size, "a send grew the session state");

    let mut single = sending_session(&mut rng, &alice, 0);
    g.throughput(Throughput::Elements(1));
    g.bench_function("single", |b| b.iter(|| black_box(send_to(&mut rng, &mut single))));
    for n in FANOUT {
        let mut sessions: Vec<Session> = (0..n).map(|i| sending_session(&mut rng, &alice, i)).collect();
        let mut seen: Vec<[u8; 32]> = sessions.iter().map(|s| *s.base_key().as_bytes()).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), n, "the fan-out sessions are not distinct");
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("devices", n), |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(n);
                for s in &mut sessions {
                    out.push(send_to(&mut rng, s));
                }
                black_box(out)
            })
        });
    }
    g.finish();
}

/// Issue 9, for comparison with `fanout`: the client checks the recipient's device list on
/// every send (`DeviceList::verify` of the fetched list against the stored one: the account
/// signature, then each device's binding signature), so each device also costs a binding
/// check there. `devices/N`: a list of N devices.
fn device_list_verify(c: &mut Criterion) {
    let mut g = c.benchmark_group("device_list_verify");
    let mut rng = ChaCha20Rng::from_rng(OsRng).unwrap();
    let account = AccountIdentity::generate(&mut rng).unwrap();
    let name = AccountName::new("peer0").unwrap();
    for n in [1, MAX_DEVICES] {
        let devices: Vec<DeviceEntry> = (0..n)
            .map(|i| DeviceEntry {
                approver: i == 0,
                ..DeviceEntry::new(
                    recipient(i).device,
                    DeviceIdentity::generate(&mut rng).unwrap().public().clone(),
                )
            })
            .collect();
        let previous = DeviceList::sign(&account, name.clone(), 1, devices.clone()).unwrap();
        let bytes = DeviceList::sign(&account, name.clone(), 2, devices).unwrap().to_bytes();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("devices", n), |b| {
            b.iter(|| {
                black_box(
                    DeviceList::verify(black_box(&bytes), &name, Some(&account.public()), Some(&previous))
                        .unwrap(),
                )
            })
        });
    }
    g.finish();
}

/// Issue 9, for comparison with `fanout`: the client loads each recipient device's session
/// from its store before encrypting (`Session::from_bytes`, which parses the remote
/// device's Ed25519 key: a point decompression).
fn session_load(c: &mut Criterion) {
    let mut g = c.benchmark_group("session_load");
    let mut rng = ChaCha20Rng::from_rng(OsRng).unwrap();
    let alice = DeviceIdentity::generate(&mut rng).unwrap();
    let stored = sending_session(&mut rng, &alice, 0).to_bytes();
    g.bench_function("from_bytes", |b| {
        b.iter(|| black_box(Session::from_bytes(black_box(&stored)).unwrap()))
    });
    g.finish();
}

criterion_group!(
    benches,
    ratchet,
    ping_pong,
    session_setup,
    primitives,
    fanout,
    device_list_verify,
    session_load
);
criterion_main!(benches);
