//! Whole-session tests: any order, any loss, any duplication; key and nonce uniqueness;
//! forward secrecy and post-compromise security; bounds; tampering with every bit.

use std::collections::{HashSet, VecDeque};

use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::crypto::aead::SEALED;
use crate::*;

fn addr(name: &str) -> DeviceAddress {
    DeviceAddress { account: AccountName::new(name).unwrap(), device: DeviceId::new(1).unwrap() }
}

struct World {
    rng: ChaCha20Rng,
    alice: DeviceIdentity,
    bob: DeviceIdentity,
    bob_prekeys: DevicePrekeys,
    bundle: PrekeyBundle,
}

fn world(seed: u64) -> World {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let alice = DeviceIdentity::generate(&mut rng).unwrap();
    let bob = DeviceIdentity::generate(&mut rng).unwrap();
    let mut bob_prekeys = DevicePrekeys::new();
    let mut plan = bob_prekeys.plan(UnixTime(0), &PrekeyPolicy::default(), 0, 0);
    plan.new_one_time = 3;
    plan.new_kem_one_time = 3;
    bob_prekeys.execute(&mut rng, &bob, UnixTime(0), &plan).unwrap();
    let bundle = bob_prekeys.bundle(addr("bob"), &bob).unwrap();
    World { rng, alice, bob, bob_prekeys, bundle }
}

/// An established pair: Alice initiated, Bob accepted, Bob replied, Alice read it.
fn pair(seed: u64) -> (World, Session, Session) {
    let mut w = world(seed);
    let mut a = Session::initiate(
        &mut w.rng,
        &w.alice,
        addr("alice"),
        &w.bundle,
        &VerifiedDevice::dangerous_assume_verified(w.bundle.address.clone(), w.bob.public().clone()),
        UnixTime(0),
    )
    .unwrap();
    let Message::Prekey(m) = a.encrypt(&mut w.rng, b"hello").unwrap() else { panic!("not a prekey message") };
    let (mut b, pt) = Session::accept(
        &w.bob,
        addr("bob"),
        &mut w.bob_prekeys,
        &VerifiedDevice::dangerous_assume_verified(addr("alice"), w.alice.public().clone()),
        &m,
    )
    .unwrap();
    assert_eq!(pt, b"hello");
    let r = b.encrypt(&mut w.rng, b"hi").unwrap();
    assert_eq!(a.decrypt(&r).unwrap(), b"hi");
    assert!(!a.is_pending());
    (w, a, b)
}

fn ratchet_key(m: &Message) -> X25519Public {
    match m {
        Message::Ratchet(r) => r.header.ratchet_key,
        Message::Prekey(p) => p.message.header.ratchet_key,
    }
}

#[derive(Clone, Debug)]
enum Action {
    /// Send from Alice (true) or Bob (false).
    Send(bool),
    /// Deliver an in-flight message to Alice or Bob; `keep` leaves a copy in flight
    /// (duplication); the index picks which one (reordering).
    Deliver { to_alice: bool, index: usize, keep: bool },
    /// Lose an in-flight message.
    Drop { to_alice: bool, index: usize },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => any::<bool>().prop_map(Action::Send),
        4 => (any::<bool>(), any::<usize>(), prop::bool::weighted(0.15))
            .prop_map(|(to_alice, index, keep)| Action::Deliver { to_alice, index, keep }),
        1 => (any::<bool>(), any::<usize>()).prop_map(|(to_alice, index)| Action::Drop { to_alice, index }),
    ]
}

/// One direction's view: messages in flight, which were delivered, and the receiver's
/// receiving chains as the specification predicts them.
#[derive(Default)]
struct Lane {
    in_flight: Vec<(u64, Message)>,
    delivered: HashSet<u64>,
    /// The receiver's window of receiving chains (at most `MAX_RECEIVING_CHAINS`).
    window: VecDeque<X25519Public>,
    /// Every chain the receiver ever started.
    ever: HashSet<X25519Public>,
}

impl Lane {
    /// The prediction for delivering message `id` on chain `key`. A first delivery decrypts
    /// iff its chain is in the window, or is new: a chain the receiver never saw is always
    /// the sender's newest, because a sender starts a chain only after receiving a ratchet
    /// key that the receiver made after seeing the sender's previous chain. Repeats never
    /// decrypt.
    fn predicts_success(&self, id: u64, key: &X25519Public) -> bool {
        !self.delivered.contains(&id) && (self.window.contains(key) || !self.ever.contains(key))
    }

    fn record_success(&mut self, id: u64, key: X25519Public) {
        self.delivered.insert(id);
        if self.ever.insert(key) {
            self.window.push_back(key);
            while self.window.len() > MAX_RECEIVING_CHAINS {
                self.window.pop_front();
            }
        }
    }
}

fn pick(lane: &mut Lane, index: usize, keep: bool) -> Option<(u64, Message)> {
    if lane.in_flight.is_empty() {
        return None;
    }
    let i = index % lane.in_flight.len();
    Some(if keep { lane.in_flight[i].clone() } else { lane.in_flight.remove(i) })
}

/// Runs a random conversation and checks every delivery against the prediction, that a
/// failed delivery changes no stored byte, and that no AEAD (key, nonce) pair repeats.
/// Returns how many messages decrypted and how many deliveries were refused.
fn run_conversation(seed: u64, actions: &[Action]) -> Result<(usize, usize), TestCaseError> {
    SEALED.with(|s| s.borrow_mut().clear());
    let mut w = world(seed);
    let mut a = Session::initiate(
        &mut w.rng,
        &w.alice,
        addr("alice"),
        &w.bundle,
        &VerifiedDevice::dangerous_assume_verified(w.bundle.address.clone(), w.bob.public().clone()),
        UnixTime(0),
    )
    .unwrap();
    let mut b: Option<Session> = None;
    let (mut to_bob, mut to_alice) = (Lane::default(), Lane::default());
    let (mut next_id, mut ok, mut refused) = (0u64, 0usize, 0usize);
    for act in actions {
        match act {
            Action::Send(true) => {
                let m = a.encrypt(&mut w.rng, &next_id.to_be_bytes()).unwrap();
                to_bob.in_flight.push((next_id, m));
                next_id += 1;
            }
            Action::Send(false) => {
                let Some(bs) = b.as_mut() else { continue };
                let m = bs.encrypt(&mut w.rng, &next_id.to_be_bytes()).unwrap();
                to_alice.in_flight.push((next_id, m));
                next_id += 1;
            }
            Action::Drop { to_alice: ta, index } => {
                let _ = pick(if *ta { &mut to_alice } else { &mut to_bob }, *index, false);
            }
            Action::Deliver { to_alice: ta, index, keep } => {
                let lane = if *ta { &mut to_alice } else { &mut to_bob };
                let Some((id, m)) = pick(lane, *index, *keep) else { continue };
                let key = ratchet_key(&m);
                let expect = lane.predicts_success(id, &key);
                let result = match (if *ta { Some(&mut a) } else { b.as_mut() }, &m) {
                    (Some(s), m) => {
                        let before = s.to_bytes();
                        let r = s.decrypt(m);
                        if r.is_err() {
                            prop_assert_eq!(&*before, &*s.to_bytes(), "session changed on error");
                        }
                        r
                    }
                    (None, Message::Prekey(p)) => {
                        let before = w.bob_prekeys.to_bytes();
                        let r = Session::accept(
                            &w.bob,
                            addr("bob"),
                            &mut w.bob_prekeys,
                            &VerifiedDevice::dangerous_assume_verified(
                                addr("alice"),
                                w.alice.public().clone(),
                            ),
                            p,
                        );
                        match r {
                            Ok((s, pt)) => {
                                b = Some(s);
                                Ok(pt)
                            }
                            Err(e) => {
                                prop_assert_eq!(&*before, &*w.bob_prekeys.to_bytes());
                                Err(e)
                            }
                        }
                    }
                    (None, Message::Ratchet(_)) => {
                        return Err(TestCaseError::fail("Alice sent a ratchet message before Bob answered"));
                    }
                };
                let lane = if *ta { &mut to_alice } else { &mut to_bob };
                match result {
                    Ok(pt) => {
                        prop_assert!(expect, "message {} decrypted but should not have", id);
                        prop_assert_eq!(pt, id.to_be_bytes().to_vec());
                        lane.record_success(id, key);
                        ok += 1;
                    }
                    Err(e) => {
                        prop_assert!(!expect, "message {} was refused: {:?}", id, e);
                        refused += 1;
                    }
                }
            }
        }
    }
    let sealed = SEALED.with(|s| s.borrow().clone());
    let unique: HashSet<_> = sealed.iter().collect();
    prop_assert_eq!(unique.len(), sealed.len(), "an AEAD key and nonce pair was used twice");
    Ok((ok, refused))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_order_any_loss_any_duplication(seed in any::<u64>(), actions in prop::collection::vec(action(), 1..400)) {
        run_conversation(seed, &actions)?;
    }
}

/// The property above is not vacuous: long random runs decrypt many messages, refuse
/// duplicates, and exercise ratchet steps in both directions.
#[test]
fn conversation_exercises_every_path() {
    use rand_core::RngCore;
    let mut r = ChaCha20Rng::seed_from_u64(77);
    let actions: Vec<Action> = (0..3_000)
        .map(|_| match r.next_u32() % 8 {
            0..=2 => Action::Send(r.next_u32() % 2 == 0),
            3..=6 => Action::Deliver {
                to_alice: r.next_u32() % 2 == 0,
                index: r.next_u32() as usize,
                keep: r.next_u32() % 6 == 0,
            },
            _ => Action::Drop { to_alice: r.next_u32() % 2 == 0, index: r.next_u32() as usize },
        })
        .collect();
    let (ok, refused) = run_conversation(5, &actions).unwrap();
    assert!(ok > 500, "only {ok} messages decrypted");
    assert!(refused > 20, "only {refused} deliveries refused");
}

#[test]
fn chain_window_evicts_the_oldest_chain() {
    let (mut w, mut a, mut b) = pair(11);
    // A message on Alice's current chain, held back.
    let held = a.encrypt(&mut w.rng, b"held").unwrap();
    let held_second = a.encrypt(&mut w.rng, b"held too").unwrap();
    // Each round trip makes Bob start a receiving chain; the held chain is the first.
    for i in 0..=MAX_RECEIVING_CHAINS {
        if i == MAX_RECEIVING_CHAINS {
            // Still within the window of MAX_RECEIVING_CHAINS chains.
            assert_eq!(b.snapshot().decrypt(&held).unwrap(), b"held");
        }
        let m = a.encrypt(&mut w.rng, &[i as u8]).unwrap();
        if i == 0 {
            // Deliver the second held message first: it is on the same chain.
            assert_eq!(b.decrypt(&held_second).unwrap(), b"held too");
        }
        b.decrypt(&m).unwrap();
        let r = b.encrypt(&mut w.rng, b"r").unwrap();
        a.decrypt(&r).unwrap();
    }
    // Alice's chain of `held` is now the sixth-newest at Bob: evicted with its keys. Its
    // ratchet key is unknown again, so the message is treated as a new chain and fails to
    // authenticate, like a forgery, leaving the state as it was.
    let before = b.to_bytes();
    assert_eq!(b.decrypt(&held), Err(SessionError::DecryptionFailed));
    assert_eq!(*before, *b.to_bytes());
}

#[test]
fn skipped_keys_are_bounded_oldest_evicted_first() {
    let (mut w, mut a, mut b) = pair(12);
    let total = MAX_SKIPPED_PER_CHAIN + 5;
    let msgs: Vec<Message> =
        (0..=total).map(|i| a.encrypt(&mut w.rng, &(i as u32).to_be_bytes()).unwrap()).collect();
    b.decrypt(&msgs[total]).unwrap();
    for (i, m) in msgs.iter().enumerate().take(5) {
        assert_eq!(b.decrypt(m), Err(SessionError::DuplicateMessage), "message {i} should be evicted");
    }
    assert_eq!(b.decrypt(&msgs[5]).unwrap(), 5u32.to_be_bytes());
    assert_eq!(b.decrypt(&msgs[total - 1]).unwrap(), ((total - 1) as u32).to_be_bytes());
    // A new chain closes this one at PN, still within the bound.
    let r = b.encrypt(&mut w.rng, b"r").unwrap();
    a.decrypt(&r).unwrap();
    let m = a.encrypt(&mut w.rng, b"next chain").unwrap();
    assert_eq!(b.decrypt(&m).unwrap(), b"next chain");
    assert_eq!(b.decrypt(&msgs[6]).unwrap(), 6u32.to_be_bytes());
}

#[test]
fn forward_jump_is_bounded() {
    let (mut w, mut a, mut b) = pair(13);
    let gap = MAX_MESSAGE_GAP as usize;
    let mut last_ok = None;
    let mut too_far = None;
    for i in 0..=gap + 1 {
        let m = a.encrypt(&mut w.rng, b"x").unwrap();
        if i == gap {
            last_ok = Some(m);
        } else if i == gap + 1 {
            too_far = Some(m);
        }
    }
    let mut b2 = b.snapshot();
    // N - next = MAX_MESSAGE_GAP + 1: refused, nothing changed.
    let before = b2.to_bytes();
    assert_eq!(b2.decrypt(too_far.as_ref().unwrap()), Err(SessionError::TooBigMessageGap));
    assert_eq!(&*before, &*b2.to_bytes());
    // Exactly MAX_MESSAGE_GAP ahead: accepted.
    assert_eq!(b.decrypt(last_ok.as_ref().unwrap()).unwrap(), b"x");
}

#[test]
fn forward_secrecy_a_captured_state_cannot_read_earlier_messages() {
    let (mut w, mut a, mut b) = pair(14);
    let m1 = a.encrypt(&mut w.rng, b"one").unwrap();
    let m2 = a.encrypt(&mut w.rng, b"two (delayed)").unwrap();
    let m3 = a.encrypt(&mut w.rng, b"three").unwrap();
    b.decrypt(&m1).unwrap();
    b.decrypt(&m3).unwrap();
    // The attacker captures Bob's whole state now.
    let captured = Session::from_bytes(&b.to_bytes()).unwrap();
    // Messages already read cannot be read again from the captured state...
    for m in [&m1, &m3] {
        assert_eq!(captured.snapshot().decrypt(m), Err(SessionError::DuplicateMessage));
    }
    // ...except the delayed one whose skipped key the state still legitimately holds.
    assert_eq!(captured.snapshot().decrypt(&m2).unwrap(), b"two (delayed)");
    // Once Bob reads it, the key is gone from later captures too.
    b.decrypt(&m2).unwrap();
    let later = Session::from_bytes(&b.to_bytes()).unwrap();
    assert_eq!(later.snapshot().decrypt(&m2), Err(SessionError::DuplicateMessage));
    // Earlier chains: after a round trip, messages of the old chain are out of reach.
    let r = b.encrypt(&mut w.rng, b"r").unwrap();
    a.decrypt(&r).unwrap();
    let n = a.encrypt(&mut w.rng, b"new chain").unwrap();
    b.decrypt(&n).unwrap();
    let captured = Session::from_bytes(&b.to_bytes()).unwrap();
    assert!(captured.snapshot().decrypt(&m1).is_err());
    assert!(captured.snapshot().decrypt(&n).is_err());
}

#[test]
fn post_compromise_security_heals_after_one_round_trip() {
    let (mut w, mut a, mut b) = pair(15);
    // The attacker captures Bob's state (all of it) and keeps a copy.
    let mut attacker = Session::from_bytes(&b.to_bytes()).unwrap();
    // Before healing the attacker reads what Alice sends on her current chain.
    let m = a.encrypt(&mut w.rng, b"still exposed").unwrap();
    assert_eq!(attacker.decrypt(&m).unwrap(), b"still exposed");
    b.decrypt(&m).unwrap();
    // One round trip with fresh randomness the attacker never sees...
    let r = b.encrypt(&mut w.rng, b"fresh ratchet key").unwrap();
    a.decrypt(&r).unwrap();
    // ...and Alice's next messages are out of the attacker's reach.
    for text in [b"healed 1".as_slice(), b"healed 2"] {
        let m = a.encrypt(&mut w.rng, text).unwrap();
        assert!(attacker.decrypt(&m).is_err());
        assert_eq!(b.decrypt(&m).unwrap(), text);
    }
    // Bob's messages after the round trip too: the attacker cannot pose as Alice's peer.
    let mut attacker_a = Session::from_bytes(&a.to_bytes()).unwrap();
    let r2 = b.encrypt(&mut w.rng, b"to alice").unwrap();
    assert_eq!(attacker_a.decrypt(&r2).unwrap(), b"to alice"); // a copy of Alice now: exposed
    a.decrypt(&r2).unwrap();
    let m = a.encrypt(&mut w.rng, b"after").unwrap();
    b.decrypt(&m).unwrap();
    let r3 = b.encrypt(&mut w.rng, b"healed for alice").unwrap();
    assert!(attacker_a.decrypt(&r3).is_err());
    assert_eq!(a.decrypt(&r3).unwrap(), b"healed for alice");
}

/// Every single-bit flip, every truncation and an extension of `wire` must give a typed
/// error from `deliver` and leave the receiver's stored state exactly as it was.
fn assert_tamper_proof(wire: &[u8], mut deliver: impl FnMut(&[u8]) -> (Result<Vec<u8>, SessionError>, bool)) {
    let mut variants: Vec<Vec<u8>> = Vec::new();
    for bit in 0..wire.len() * 8 {
        let mut v = wire.to_vec();
        v[bit / 8] ^= 1 << (bit % 8);
        variants.push(v);
    }
    for len in 0..wire.len() {
        variants.push(wire[..len].to_vec());
    }
    let mut extended = wire.to_vec();
    extended.push(0);
    variants.push(extended);
    for (i, v) in variants.iter().enumerate() {
        let (result, unchanged) = deliver(v);
        assert!(result.is_err(), "tampered variant {i} was accepted");
        assert!(unchanged, "tampered variant {i} changed the stored state");
    }
}

#[test]
fn tampered_ratchet_messages_are_refused_and_change_nothing() {
    let (mut w, mut a, mut b) = pair(16);
    let wire = a.encrypt(&mut w.rng, b"tamper with me").unwrap().to_bytes();
    let before = b.to_bytes();
    assert_tamper_proof(&wire, |v| {
        let r = b.decrypt_bytes(v);
        (r, *b.to_bytes() == *before)
    });
    // The conversation goes on.
    assert_eq!(b.decrypt_bytes(&wire).unwrap(), b"tamper with me");
    let r = b.encrypt(&mut w.rng, b"ok").unwrap();
    assert_eq!(a.decrypt(&r).unwrap(), b"ok");
}

#[test]
fn tampered_prekey_messages_are_refused_and_change_nothing() {
    let mut w = world(17);
    let mut a = Session::initiate(
        &mut w.rng,
        &w.alice,
        addr("alice"),
        &w.bundle,
        &VerifiedDevice::dangerous_assume_verified(w.bundle.address.clone(), w.bob.public().clone()),
        UnixTime(0),
    )
    .unwrap();
    let wire = a.encrypt(&mut w.rng, b"first").unwrap().to_bytes();
    let before = w.bob_prekeys.to_bytes();
    let (bob, prekeys, alice) = (&w.bob, &mut w.bob_prekeys, w.alice.public().clone());
    assert_tamper_proof(&wire, |v| {
        let r = match Message::from_bytes(v) {
            Ok(Message::Prekey(p)) => Session::accept(
                bob,
                addr("bob"),
                prekeys,
                &VerifiedDevice::dangerous_assume_verified(addr("alice"), alice.clone()),
                &p,
            )
            .map(|(_, pt)| pt),
            Ok(Message::Ratchet(_)) => Err(SessionError::Internal),
            Err(e) => Err(e.into()),
        };
        (r, *prekeys.to_bytes() == *before)
    });
    let Message::Prekey(p) = Message::from_bytes(&wire).unwrap() else { panic!() };
    let (mut b, pt) = Session::accept(
        bob,
        addr("bob"),
        prekeys,
        &VerifiedDevice::dangerous_assume_verified(addr("alice"), alice.clone()),
        &p,
    )
    .unwrap();
    assert_eq!(pt, b"first");
    // The one-time keys are gone now: a replay of the same initial message is refused.
    assert!(
        Session::accept(
            bob,
            addr("bob"),
            prekeys,
            &VerifiedDevice::dangerous_assume_verified(addr("alice"), alice.clone()),
            &p
        )
        .is_err()
    );
    let r = b.encrypt(&mut w.rng, b"reply").unwrap();
    assert_eq!(a.decrypt(&r).unwrap(), b"reply");
}

/// Where a tampered bundle was refused.
#[derive(Default, Debug)]
struct BundleFlips {
    /// By `PrekeyBundle::from_bytes`.
    decode: usize,
    /// By `Session::initiate` (identity or prekey signatures).
    initiate: usize,
    /// Reached the session code at Bob (`Session::accept`) and were refused there.
    accept: usize,
    /// Accepted by Bob: a session with keys other than the ones Bob published.
    accepted: usize,
}

/// Delivers `wire` as a bundle to Alice and her first message to a copy of Bob's prekeys;
/// where it stopped.
fn deliver_bundle(w: &mut World, wire: &[u8], flips: &mut BundleFlips) {
    let Ok(bundle) = PrekeyBundle::from_bytes(wire) else {
        flips.decode += 1;
        return;
    };
    let Ok(mut a) = Session::initiate(
        &mut w.rng,
        &w.alice,
        addr("alice"),
        &bundle,
        &VerifiedDevice::dangerous_assume_verified(bundle.address.clone(), w.bob.public().clone()),
        UnixTime(0),
    ) else {
        flips.initiate += 1;
        return;
    };
    let Message::Prekey(p) = a.encrypt(&mut w.rng, b"x").unwrap() else { panic!("not a prekey message") };
    let mut prekeys = DevicePrekeys::from_bytes(&w.bob_prekeys.to_bytes()).unwrap();
    let accepted = Session::accept(
        &w.bob,
        addr("bob"),
        &mut prekeys,
        &VerifiedDevice::dangerous_assume_verified(addr("alice"), w.alice.public().clone()),
        &p,
    );
    if accepted.is_ok() { flips.accepted += 1 } else { flips.accept += 1 }
}

#[test]
fn tampered_bundles_never_yield_a_working_session() {
    let mut w = world(18);
    let wire = w.bundle.to_bytes();
    let before = w.bob_prekeys.to_bytes();
    // Positive control: the untouched bundle goes all the way through the same path.
    let mut control = BundleFlips::default();
    deliver_bundle(&mut w, &wire, &mut control);
    assert_eq!(control.accepted, 1, "the untouched bundle must give a session: {control:?}");

    let mut flips = BundleFlips::default();
    for bit in 0..wire.len() * 8 {
        let mut v = wire.clone();
        v[bit / 8] ^= 1 << (bit % 8);
        deliver_bundle(&mut w, &v, &mut flips);
    }
    // No flip gives a session with keys other than Bob's.
    assert_eq!(flips.accepted, 0, "{flips:?}");
    assert_eq!(flips.decode + flips.initiate + flips.accept, wire.len() * 8, "{flips:?}");
    // The one-time prekey is outside every signature: each flip of its key's bits reaches
    // the session code and must be refused there, so the last check above is not vacuous.
    let one_time = *w.bundle.one_time_prekey.as_ref().expect("a one-time prekey").key.as_bytes();
    assert!(flips.accept >= 8 * one_time.len(), "too few flips reached the session code: {flips:?}");
    // The signed prekey's key is covered by its signature: no flip of it gets past initiate.
    println!("bundle flips: {flips:?}");
    let signed = *w.bundle.signed_prekey.key.as_bytes();
    let at = wire.windows(signed.len()).position(|x| x == signed).expect("signed prekey in the bundle");
    let mut signed_flips = BundleFlips::default();
    for bit in at * 8..(at + signed.len()) * 8 {
        let mut v = wire.clone();
        v[bit / 8] ^= 1 << (bit % 8);
        deliver_bundle(&mut w, &v, &mut signed_flips);
    }
    // (A flip of the top bit is refused earlier still, by decoding: a non-canonical key.)
    assert_eq!(signed_flips.accept + signed_flips.accepted, 0, "{signed_flips:?}");
    assert_eq!(signed_flips.decode + signed_flips.initiate, 8 * signed.len(), "{signed_flips:?}");
    assert!(signed_flips.initiate >= 8 * (signed.len() - 1), "{signed_flips:?}");
    assert_eq!(*before, *w.bob_prekeys.to_bytes());
}

#[test]
fn identity_mismatch_is_refused() {
    let mut w = world(19);
    let stranger = DeviceIdentity::generate(&mut w.rng).unwrap();
    assert_eq!(
        Session::initiate(
            &mut w.rng,
            &w.alice,
            addr("alice"),
            &w.bundle,
            &VerifiedDevice::dangerous_assume_verified(w.bundle.address.clone(), stranger.public().clone()),
            UnixTime(0)
        )
        .err(),
        Some(SessionError::IdentityMismatch)
    );
    // A bundle for another device of Bob's (or relabelled by the server) is refused.
    let elsewhere =
        DeviceAddress { account: AccountName::new("bob").unwrap(), device: DeviceId::new(2).unwrap() };
    assert_eq!(
        Session::initiate(
            &mut w.rng,
            &w.alice,
            addr("alice"),
            &w.bundle,
            &VerifiedDevice::dangerous_assume_verified(elsewhere, w.bob.public().clone()),
            UnixTime(0)
        )
        .err(),
        Some(SessionError::IdentityMismatch)
    );
    let mut a = Session::initiate(
        &mut w.rng,
        &w.alice,
        addr("alice"),
        &w.bundle,
        &VerifiedDevice::dangerous_assume_verified(w.bundle.address.clone(), w.bob.public().clone()),
        UnixTime(0),
    )
    .unwrap();
    let Message::Prekey(p) = a.encrypt(&mut w.rng, b"x").unwrap() else { panic!() };
    // Bob's client expected another device identity for "alice".
    assert_eq!(
        Session::accept(
            &w.bob,
            addr("bob"),
            &mut w.bob_prekeys,
            &VerifiedDevice::dangerous_assume_verified(addr("alice"), stranger.public().clone()),
            &p
        )
        .err(),
        Some(SessionError::IdentityMismatch)
    );
    // The server lies about the sender's address: the associated data differs.
    let mallory =
        DeviceAddress { account: AccountName::new("mallory").unwrap(), device: DeviceId::new(1).unwrap() };
    assert_eq!(
        Session::accept(
            &w.bob,
            addr("bob"),
            &mut w.bob_prekeys,
            &VerifiedDevice::dangerous_assume_verified(mallory, w.alice.public().clone()),
            &p
        )
        .err(),
        Some(SessionError::DecryptionFailed)
    );
}

#[test]
fn last_resort_initial_messages_cannot_be_replayed() {
    let mut rng = ChaCha20Rng::seed_from_u64(20);
    let alice = DeviceIdentity::generate(&mut rng).unwrap();
    let bob = DeviceIdentity::generate(&mut rng).unwrap();
    let mut prekeys = DevicePrekeys::new();
    let mut plan = prekeys.plan(UnixTime(0), &PrekeyPolicy::default(), 0, 0);
    plan.new_one_time = 0;
    plan.new_kem_one_time = 0;
    prekeys.execute(&mut rng, &bob, UnixTime(0), &plan).unwrap();
    let bundle = prekeys.bundle(addr("bob"), &bob).unwrap();
    assert!(bundle.one_time_prekey.is_none());
    assert_eq!(bundle.kem_prekey.kind, KemPrekeyKind::LastResort);
    let mut a = Session::initiate(
        &mut rng,
        &alice,
        addr("alice"),
        &bundle,
        &VerifiedDevice::dangerous_assume_verified(bundle.address.clone(), bob.public().clone()),
        UnixTime(0),
    )
    .unwrap();
    let Message::Prekey(p) = a.encrypt(&mut rng, b"x").unwrap() else { panic!() };
    Session::accept(
        &bob,
        addr("bob"),
        &mut prekeys,
        &VerifiedDevice::dangerous_assume_verified(addr("alice"), alice.public().clone()),
        &p,
    )
    .unwrap();
    assert_eq!(
        Session::accept(
            &bob,
            addr("bob"),
            &mut prekeys,
            &VerifiedDevice::dangerous_assume_verified(addr("alice"), alice.public().clone()),
            &p
        )
        .err(),
        Some(SessionError::Prekey(PrekeyError::ReplayedInitialMessage))
    );
    // The prekey set survives a save and load with its memory of base keys.
    let mut reloaded = DevicePrekeys::from_bytes(&prekeys.to_bytes()).unwrap();
    assert!(
        Session::accept(
            &bob,
            addr("bob"),
            &mut reloaded,
            &VerifiedDevice::dangerous_assume_verified(addr("alice"), alice.public().clone()),
            &p
        )
        .is_err()
    );
}

#[test]
fn state_round_trips_and_generation_grows() {
    let (mut w, mut a, mut b) = pair(21);
    let g0 = a.generation();
    let m = a.encrypt(&mut w.rng, b"x").unwrap();
    assert!(a.generation() > g0);
    let restored = Session::from_bytes(&a.to_bytes()).unwrap();
    assert_eq!(*restored.to_bytes(), *a.to_bytes());
    assert_eq!(restored.generation(), a.generation());
    b.decrypt(&m).unwrap();
    let mut b2 = Session::from_bytes(&b.to_bytes()).unwrap();
    let r = b2.encrypt(&mut w.rng, b"from restored").unwrap();
    assert_eq!(a.decrypt(&r).unwrap(), b"from restored");
    let id = DeviceIdentity::from_bytes(&w.alice.to_bytes()).unwrap();
    assert_eq!(id.public(), w.alice.public());
    let acct = AccountIdentity::generate(&mut w.rng).unwrap();
    assert_eq!(AccountIdentity::from_bytes(&acct.to_bytes()).unwrap().public(), acct.public());
    // Kinds are not interchangeable.
    assert!(Session::from_bytes(&w.alice.to_bytes()).is_err());
}

#[test]
fn restored_old_copies_are_detected() {
    let (mut w, mut a, _b) = pair(22);
    let old = a.to_bytes();
    a.encrypt(&mut w.rng, b"x").unwrap();
    let newest = a.generation();
    assert!(Session::from_bytes_at_least(&a.to_bytes(), newest).is_ok());
    assert_eq!(
        Session::from_bytes_at_least(&old, newest).err(),
        Some(SessionError::RolledBack { stored: newest - 1, expected: newest })
    );
}

/// A bundle with only the last-resort KEM key and no one-time prekey (the server ran out),
/// so initial messages rely on the replay memory.
fn last_resort_world(seed: u64) -> World {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let alice = DeviceIdentity::generate(&mut rng).unwrap();
    let bob = DeviceIdentity::generate(&mut rng).unwrap();
    let mut bob_prekeys = DevicePrekeys::new();
    let mut plan = bob_prekeys.plan(UnixTime(0), &PrekeyPolicy::default(), 0, 0);
    plan.new_one_time = 0;
    plan.new_kem_one_time = 0;
    bob_prekeys.execute(&mut rng, &bob, UnixTime(0), &plan).unwrap();
    let bundle = bob_prekeys.bundle(addr("bob"), &bob).unwrap();
    assert!(bundle.one_time_prekey.is_none());
    World { rng, alice, bob, bob_prekeys, bundle }
}

fn first_message(w: &mut World, sender: &DeviceIdentity) -> PrekeyMessage {
    let remote = VerifiedDevice::dangerous_assume_verified(w.bundle.address.clone(), w.bob.public().clone());
    let mut a =
        Session::initiate(&mut w.rng, sender, addr("alice"), &w.bundle, &remote, UnixTime(0)).unwrap();
    let Message::Prekey(p) = a.encrypt(&mut w.rng, b"first").unwrap() else { panic!("not a prekey message") };
    p
}

fn bob_accepts(w: &mut World, sender: &DeviceIdentity, p: &PrekeyMessage) -> Result<Vec<u8>, SessionError> {
    let from = VerifiedDevice::dangerous_assume_verified(addr("alice"), sender.public().clone());
    Session::accept(&w.bob, addr("bob"), &mut w.bob_prekeys, &from, p).map(|(_, pt)| pt)
}

/// The base key plus each of the 8 points of order dividing 8 (the first is the base key
/// itself): X25519 clears the cofactor, so all give the same DH outputs.
fn equivalent_base_keys(base: &X25519Public) -> Vec<X25519Public> {
    let point = curve25519_dalek::montgomery::MontgomeryPoint(*base.as_bytes()).to_edwards(0).unwrap();
    curve25519_dalek::constants::EIGHT_TORSION
        .iter()
        .map(|t| X25519Public::from_bytes((point + t).to_montgomery().to_bytes()).unwrap())
        .collect()
}

/// Issue 7 point 7: an initial message whose base key was swapped for an equivalent one
/// (same DH outputs, other bytes) is never a new session, before or after the genuine one
/// was accepted, with and without one-time keys.
#[test]
fn equivalent_base_keys_never_make_a_second_session() {
    for (seed, one_time) in [(40, true), (41, false)] {
        let mut w = if one_time { world(seed) } else { last_resort_world(seed) };
        let alice = w.alice.clone();
        let p = first_message(&mut w, &alice);
        let keys = equivalent_base_keys(&p.base_key);
        assert_eq!(keys.len(), 8);
        assert_eq!(keys[0], p.base_key);
        assert_eq!(keys.iter().collect::<HashSet<_>>().len(), 8, "8 distinct encodings");
        let before = w.bob_prekeys.to_bytes();
        // The 8 small-order points themselves as base keys: every DH with them is zero.
        for t in curve25519_dalek::constants::EIGHT_TORSION {
            let k = X25519Public::from_bytes(t.to_montgomery().to_bytes()).unwrap();
            let forged = PrekeyMessage { base_key: k, ..p.clone() };
            assert_eq!(
                bob_accepts(&mut w, &alice, &forged),
                Err(SessionError::Crypto(CryptoError::DegenerateSharedSecret))
            );
        }
        // Before the genuine message: the AD binds the base key's bytes.
        for k in &keys[1..] {
            let forged = PrekeyMessage { base_key: *k, ..p.clone() };
            assert_eq!(bob_accepts(&mut w, &alice, &forged), Err(SessionError::DecryptionFailed));
            assert_eq!(*before, *w.bob_prekeys.to_bytes());
        }
        assert_eq!(bob_accepts(&mut w, &alice, &p).unwrap(), b"first");
        // After it: the one-time keys are gone, or the replay memory knows the tag.
        let after = w.bob_prekeys.to_bytes();
        for k in &keys {
            let replay = PrekeyMessage { base_key: *k, ..p.clone() };
            let expected = if one_time {
                SessionError::Prekey(PrekeyError::UnknownOneTimePrekey(p.one_time_prekey_id.unwrap()))
            } else {
                SessionError::Prekey(PrekeyError::ReplayedInitialMessage)
            };
            assert_eq!(bob_accepts(&mut w, &alice, &replay), Err(expected));
            assert_eq!(*after, *w.bob_prekeys.to_bytes());
        }
    }
}

/// Issue 7 point 4: attackers fill the last-resort prekey's replay memory (each up to its
/// own bound, then refused), and a genuine first message from someone else still arrives.
#[test]
fn a_replay_memory_flood_cannot_shut_out_a_genuine_first_message() {
    let mut w = last_resort_world(42);
    // One attacker through real initial messages: refused past its own bound.
    let mallory = DeviceIdentity::generate(&mut w.rng).unwrap();
    for _ in 0..MAX_SEEN_PER_SENDER {
        let p = first_message(&mut w, &mallory);
        bob_accepts(&mut w, &mallory, &p).unwrap();
    }
    let p = first_message(&mut w, &mallory);
    assert_eq!(bob_accepts(&mut w, &mallory, &p), Err(SessionError::Prekey(PrekeyError::ReplayMemoryFull)));
    // Many more accounts fill the whole memory (as `Session::accept` records them once
    // authenticated; ML-KEM makes 10,000 real messages slow in a unit test).
    let spk = w.bundle.signed_prekey.id;
    let kem = w.bundle.kem_prekey.id;
    let mut n = 0u32;
    while w.bob_prekeys.replay_memory_len(spk) < MAX_SEEN_BASE_KEYS + 100 && n < 20_000 {
        let mut sender = [0u8; 32];
        sender[..4].copy_from_slice(&(1 + n / MAX_SEEN_PER_SENDER as u32).to_be_bytes());
        let mut dh3 = [0u8; 32];
        dh3[..4].copy_from_slice(&n.to_be_bytes());
        let used = crate::prekeys::PrekeyUse {
            signed_id: spk,
            one_time_id: None,
            kem_id: kem,
            kem_kind: KemPrekeyKind::LastResort,
            sender: X25519Public::from_bytes(sender).unwrap(),
        };
        let tag = crate::prekeys::ReplayTag::from_dh3(&crate::crypto::Secret32(dh3));
        w.bob_prekeys.check_replay(&used, &tag).unwrap();
        w.bob_prekeys.consume(&used, tag);
        n += 1;
    }
    assert_eq!(w.bob_prekeys.replay_memory_len(spk), MAX_SEEN_BASE_KEYS, "full, and bounded");
    // The memory is full; the genuine first message is delivered, and remembered.
    let alice = w.alice.clone();
    let p = first_message(&mut w, &alice);
    assert_eq!(bob_accepts(&mut w, &alice, &p).unwrap(), b"first");
    assert_eq!(
        bob_accepts(&mut w, &alice, &p),
        Err(SessionError::Prekey(PrekeyError::ReplayedInitialMessage))
    );
}

/// Issue 7 point 9: a session the peer never answered expires after 30 days (kept through
/// its stored form); an answered one never does.
#[test]
fn pending_sessions_expire_after_thirty_days() {
    let mut w = world(43);
    let start = UnixTime(1_000_000);
    let remote = VerifiedDevice::dangerous_assume_verified(w.bundle.address.clone(), w.bob.public().clone());
    let mut a = Session::initiate(&mut w.rng, &w.alice, addr("alice"), &w.bundle, &remote, start).unwrap();
    let Message::Prekey(p) = a.encrypt(&mut w.rng, b"x").unwrap() else { panic!() };
    let a = Session::from_bytes(&a.to_bytes()).unwrap();
    assert!(!a.pending_expired(UnixTime(start.0 + MAX_PENDING_AGE_SECS - 1)));
    assert!(a.pending_expired(UnixTime(start.0 + MAX_PENDING_AGE_SECS)));
    let mut a = a;
    let alice = w.alice.clone();
    let (mut b, _) = Session::accept(
        &w.bob,
        addr("bob"),
        &mut w.bob_prekeys,
        &VerifiedDevice::dangerous_assume_verified(addr("alice"), alice.public().clone()),
        &p,
    )
    .unwrap();
    assert!(!b.pending_expired(UnixTime(u64::MAX)), "the responder is never pending");
    a.decrypt(&b.encrypt(&mut w.rng, b"y").unwrap()).unwrap();
    assert!(!a.pending_expired(UnixTime(u64::MAX)));
}

/// A pending session stored in format 1 (before it recorded when it was made) still loads,
/// counts as made at time 0 (so it has expired), and is written back in the current format.
#[test]
fn format_1_pending_sessions_load_as_expired() {
    let mut w = world(44);
    let remote = VerifiedDevice::dangerous_assume_verified(w.bundle.address.clone(), w.bob.public().clone());
    let a = Session::initiate(&mut w.rng, &w.alice, addr("alice"), &w.bundle, &remote, UnixTime(7)).unwrap();
    let v2 = a.to_bytes();
    // header (14) || "alice"/1 (10) || "bob"/1 (8) || DevicePublic (128) || base key (32) || pending
    let since_at = 14 + 10 + 8 + 128 + 32 + 1;
    assert_eq!(v2[5], 2);
    assert_eq!(v2[since_at..since_at + 8], 7u64.to_be_bytes());
    let mut v1 = v2.to_vec();
    v1[5] = 1;
    v1.drain(since_at..since_at + 8);
    let old = Session::from_bytes(&v1).unwrap();
    assert!(old.is_pending());
    assert!(old.pending_expired(UnixTime(MAX_PENDING_AGE_SECS)));
    assert!(!a.pending_expired(UnixTime(MAX_PENDING_AGE_SECS)));
    let mut again = old.to_bytes().to_vec();
    again[since_at..since_at + 8].copy_from_slice(&7u64.to_be_bytes());
    assert_eq!(again, v2.to_vec(), "written back in format 2");
}
