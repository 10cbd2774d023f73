//! Tacit's protocol core against vodozemac's Olm, measured in the same run so every figure
//! is a ratio. `scripts/bench` runs this and writes `docs/BENCHMARKS.md`.
//!
//! Groups: `ratchet_100B` (encrypt + decrypt on an existing chain, no storage, no
//! envelope), `ping_pong` (A→B, B→A, A→B, B→A: a DH ratchet step every turn),
//! `session_setup` (bundle decoded and its signatures checked → key agreement → first
//! message → processed by the receiver), and `primitive/*` (the operations the setup is
//! made of, for the "within 1.3x of its primitives" check).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::hint::black_box;

use aws_lc_rs::aead::{AES_256_GCM_SIV, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement::{self, UnparsedPublicKey, X25519};
use aws_lc_rs::kem::{DecapsulationKey, ML_KEM_1024};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, RngCore, SeedableRng};
use tacit_protocol::*;
use vodozemac::olm::{Account, OlmMessage, Session as OlmSession, SessionConfig};

const MSG: [u8; 100] = [0x61; 100];

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

fn setup(rng: &mut ChaCha20Rng) -> Setup {
    let alice = DeviceIdentity::generate(rng).unwrap();
    let bob = DeviceIdentity::generate(rng).unwrap();
    let mut bob_prekeys = DevicePrekeys::new();
    let mut plan = bob_prekeys.plan(UnixTime(0), &PrekeyPolicy::default(), 0, 0);
    plan.new_one_time = 2;
    plan.new_kem_one_time = 2;
    bob_prekeys.execute(rng, &bob, UnixTime(0), &plan).unwrap();
    let bundle_bytes = bob_prekeys.bundle(addr("bob"), &bob).unwrap().to_bytes();
    Setup { alice, bob, bob_prekeys, bundle_bytes }
}

fn tacit_pair() -> Pair {
    let mut rng = ChaCha20Rng::from_rng(OsRng).unwrap();
    let mut s = setup(&mut rng);
    let bundle = PrekeyBundle::from_bytes(&s.bundle_bytes).unwrap();
    let mut a = Session::initiate(
        &mut rng,
        &s.alice,
        addr("alice"),
        &bundle,
        &VerifiedDevice::dangerous_assume_verified(bundle.address.clone(), s.bob.public().clone()),
        UnixTime(0),
    )
    .unwrap();
    let Message::Prekey(m) = a.encrypt(&mut rng, &MSG).unwrap() else { panic!() };
    let (mut b, _) = Session::accept(
        &s.bob,
        addr("bob"),
        &mut s.bob_prekeys,
        &VerifiedDevice::dangerous_assume_verified(addr("alice"), s.alice.public().clone()),
        &m,
    )
    .unwrap();
    let reply = b.encrypt(&mut rng, &MSG).unwrap();
    a.decrypt(&reply).unwrap();
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

criterion_group!(benches, ratchet, ping_pong, session_setup, primitives);
criterion_main!(benches);
