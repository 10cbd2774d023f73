use super::*;
use crate::device_list::DeviceEntry;
use crate::identity::DeviceIdentity;
use crate::prekeys::{DevicePrekeys, PrekeyPolicy, UnixTime};
use proptest::prelude::*;
use rand_core::SeedableRng;

type Rng = rand_chacha::ChaCha20Rng;

/// A new device with its first prekeys (signed and last-resort only).
struct NewDevice {
    identity: DeviceIdentity,
    signed_prekey: SignedPrekeyPublic,
    last_resort: KemPrekeyPublic,
}

fn new_device(rng: &mut Rng) -> NewDevice {
    let identity = DeviceIdentity::generate(rng).unwrap();
    let mut prekeys = DevicePrekeys::new();
    let t0 = UnixTime(1_700_000_000);
    let mut plan = prekeys.plan(t0, &PrekeyPolicy::default(), 0, 0);
    plan.new_one_time = 0;
    plan.new_kem_one_time = 0;
    let upload = prekeys.execute(rng, &identity, t0, &plan).unwrap();
    NewDevice {
        identity,
        signed_prekey: upload.signed_prekey.unwrap(),
        last_resort: upload.last_resort.unwrap(),
    }
}

/// An account with device 1 (approver) that lists `new` as device 2 with `label`.
struct Account {
    identity: AccountIdentity,
    name: AccountName,
    approver: DeviceIdentity,
}

impl Account {
    fn new(rng: &mut Rng) -> Self {
        Self {
            identity: AccountIdentity::generate(rng).unwrap(),
            name: AccountName::new("erin").unwrap(),
            approver: DeviceIdentity::generate(rng).unwrap(),
        }
    }

    fn list(&self, new: &DevicePublic, label: &str, new_is_approver: bool) -> Vec<u8> {
        let d1 = DeviceEntry {
            approver: true,
            label: "laptop".into(),
            ..DeviceEntry::new(DeviceId::new(1).unwrap(), self.approver.public().clone())
        };
        let d2 = DeviceEntry {
            approver: new_is_approver,
            added_ms: 1_700_000_000_000,
            label: label.into(),
            ..DeviceEntry::new(DeviceId::new(2).unwrap(), new.clone())
        };
        DeviceList::sign(&self.identity, self.name.clone(), 2, vec![d1, d2]).unwrap().to_bytes()
    }

    fn provisioning(&self, list: Vec<u8>, with_identity: bool, history: bool) -> Provisioning {
        Provisioning {
            account: self.name.clone(),
            device_id: DeviceId::new(2).unwrap(),
            approver_id: DeviceId::new(1).unwrap(),
            device_list: list,
            account_identity: with_identity.then(|| self.identity.clone()),
            history: history.then(|| HistoryRef {
                blob_id: [9u8; 16],
                key: Zeroizing::new([3u8; 32]),
                size: crate::archive::sealed_len(100_000).unwrap(),
                plain_size: 100_000,
                digest: [4u8; 32],
            }),
        }
    }
}

const LABEL: &str = "phone";

fn setup(seed: u64) -> (Rng, NewDevice, Account, LinkSecret) {
    let mut rng = Rng::seed_from_u64(seed);
    let dev = new_device(&mut rng);
    let acct = Account::new(&mut rng);
    let secret = LinkSecret::generate(&mut rng);
    (rng, dev, acct, secret)
}

fn offer(rng: &mut Rng, dev: &NewDevice, secret: &LinkSecret) -> (PendingLink, Vec<u8>) {
    PendingLink::new(rng, secret, dev.identity.public(), LABEL, &dev.signed_prekey, &dev.last_resort).unwrap()
}

#[test]
fn round_trip() {
    let (mut rng, dev, acct, secret) = setup(1);
    // The code travels through the user.
    let code = secret.to_code();
    assert_eq!(code.len(), LINK_CODE_CHARS + 6);
    let typed = LinkSecret::from_code(&code.to_lowercase().replace('-', " ")).unwrap();
    assert_eq!(typed.slot_id(), secret.slot_id());
    assert_ne!(secret.slot_id(), [0u8; 16]);

    let (pending, offer_bytes) = offer(&mut rng, &dev, &secret);
    assert!(offer_bytes.len() <= MAX_OFFER_LEN);
    let verified = VerifiedOffer::open(&typed, &offer_bytes).unwrap();
    assert_eq!(verified.device(), dev.identity.public());
    assert_eq!(verified.label(), LABEL);
    assert_eq!(verified.signed_prekey(), &dev.signed_prekey);
    assert_eq!(verified.last_resort_prekey(), &dev.last_resort);
    assert_eq!(verified.fingerprint(), device_fingerprint(dev.identity.public()));
    assert_eq!(verified.fingerprint().len(), 29);

    for (approver, history) in [(false, false), (true, true), (false, true)] {
        let list = acct.list(dev.identity.public(), LABEL, approver);
        let prov = acct.provisioning(list.clone(), approver, history);
        let answer = verified.seal_answer(&mut rng, &prov).unwrap();
        assert!(answer.len() <= MAX_ANSWER_LEN);
        // Resumed after a restart: the persisted state opens the same answer.
        let resumed = PendingLink::from_bytes(&pending.to_bytes()).unwrap();
        for p in [&pending, &resumed] {
            let got = p.open_answer(&answer).unwrap();
            assert_eq!(got.account, acct.name);
            assert_eq!(got.device_id.get(), 2);
            assert_eq!(got.approver_id.get(), 1);
            assert_eq!(got.device_list, list);
            assert_eq!(got.account_identity.map(|a| a.public()), approver.then(|| acct.identity.public()));
            let h = got.history;
            assert_eq!(h.is_some(), history);
            if let Some(h) = h {
                assert_eq!(
                    (h.blob_id, *h.key, h.size, h.plain_size, h.digest),
                    ([9u8; 16], [3u8; 32], 100_032, 100_000, [4u8; 32])
                );
            }
        }
    }
    // Persisted state re-encodes identically.
    let again = PendingLink::from_bytes(&pending.to_bytes()).unwrap();
    assert_eq!(again.to_bytes().as_slice(), pending.to_bytes().as_slice());
    assert_eq!(again.slot_id(), secret.slot_id());
}

#[test]
fn wrong_secret() {
    let (mut rng, dev, acct, secret) = setup(2);
    let (pending, offer_bytes) = offer(&mut rng, &dev, &secret);
    let other = LinkSecret::generate(&mut rng);
    assert_eq!(VerifiedOffer::open(&other, &offer_bytes).err(), Some(LinkError::BadMac));
    // Someone who has the offer's ephemeral keys (the server) but not s seals an answer.
    let real = VerifiedOffer::open(&secret, &offer_bytes).unwrap();
    let forged = VerifiedOffer { secret: other, ..real };
    let prov = acct.provisioning(acct.list(dev.identity.public(), LABEL, false), false, false);
    let answer = forged.seal_answer(&mut rng, &prov).unwrap();
    assert_eq!(pending.open_answer(&answer).err(), Some(LinkError::Open));
}

#[test]
fn server_cannot_swap_offer_fields() {
    let (mut rng, dev, _acct, secret) = setup(3);
    let (_, offer_bytes) = offer(&mut rng, &dev, &secret);
    assert!(VerifiedOffer::open(&secret, &offer_bytes).is_ok());
    // The server's own ephemeral keys and identity, spliced in.
    let server_device = new_device(&mut rng);
    let server_secret = LinkSecret::generate(&mut rng);
    let (_, server_offer) = offer(&mut rng, &server_device, &server_secret);
    let eph_at = OFFER_FIXED_LEN - MAC_LEN - 32 - kem::PUBLIC_KEY_LEN + LABEL.len();
    let ranges = [
        (1, 1 + DevicePublic::LEN),                        // device identity
        (eph_at, eph_at + 32),                             // ephemeral X25519 key
        (eph_at + 32, eph_at + 32 + kem::PUBLIC_KEY_LEN),  // ephemeral KEM key
        (1 + DevicePublic::LEN + 1 + LABEL.len(), eph_at), // prekeys
    ];
    for (a, b) in ranges {
        let mut swapped = offer_bytes.clone();
        swapped[a..b].copy_from_slice(&server_offer[a..b]);
        assert_ne!(swapped, offer_bytes);
        assert_eq!(VerifiedOffer::open(&secret, &swapped).err(), Some(LinkError::BadMac), "{a}..{b}");
    }
    // Every single bit matters, the MAC included.
    for i in [0, 5, 140, offer_bytes.len() / 2, offer_bytes.len() - 1] {
        let mut flipped = offer_bytes.clone();
        flipped[i] ^= 0x10;
        assert_eq!(VerifiedOffer::open(&secret, &flipped).err(), Some(LinkError::BadMac), "byte {i}");
    }
    // Truncated or extended offers are refused before the MAC.
    assert!(matches!(VerifiedOffer::open(&secret, &offer_bytes[..100]), Err(LinkError::Decode(_))));
    let mut long = offer_bytes.clone();
    long.extend_from_slice(&[0u8; MAX_DEVICE_LABEL_BYTES + 1]);
    assert!(matches!(VerifiedOffer::open(&secret, &long), Err(LinkError::Decode(_))));
}

#[test]
fn answer_for_another_offer_is_refused() {
    let (mut rng, dev, acct, secret) = setup(4);
    // Two offers under the same secret (the server replays or swaps slots).
    let (first, offer1) = offer(&mut rng, &dev, &secret);
    let (second, _) = offer(&mut rng, &dev, &secret);
    let prov = acct.provisioning(acct.list(dev.identity.public(), LABEL, false), false, false);
    let answer = VerifiedOffer::open(&secret, &offer1).unwrap().seal_answer(&mut rng, &prov).unwrap();
    assert!(first.open_answer(&answer).is_ok());
    assert_eq!(second.open_answer(&answer).err(), Some(LinkError::Open));
    // The approver's ephemeral key or KEM ciphertext replaced, or the sealed part changed.
    for i in [1, 40, ANSWER_HEADER_LEN - 1, ANSWER_HEADER_LEN + 3, answer.len() - 1] {
        let mut bad = answer.clone();
        bad[i] ^= 0x01;
        assert!(first.open_answer(&bad).is_err(), "byte {i}");
    }
    let mut v2 = answer.clone();
    v2[0] = 2;
    assert_eq!(first.open_answer(&v2).err(), Some(LinkError::Decode(DecodeError::UnknownVersion(2))));
}

#[test]
fn provisioning_must_list_this_device() {
    let (mut rng, dev, acct, secret) = setup(5);
    let (pending, offer_bytes) = offer(&mut rng, &dev, &secret);
    let verified = VerifiedOffer::open(&secret, &offer_bytes).unwrap();
    let other = DeviceIdentity::generate(&mut rng).unwrap();
    let cases: Vec<(Provisioning, LinkError)> = vec![
        // Another identity at id 2.
        (acct.provisioning(acct.list(other.public(), LABEL, false), false, false), LinkError::WrongDevice),
        // Another label.
        (
            acct.provisioning(acct.list(dev.identity.public(), "tablet", false), false, false),
            LinkError::WrongDevice,
        ),
        // Listed as an approver but not given the account key, and the reverse.
        (
            acct.provisioning(acct.list(dev.identity.public(), LABEL, true), false, false),
            LinkError::WrongAccountKey,
        ),
        (
            acct.provisioning(acct.list(dev.identity.public(), LABEL, false), true, false),
            LinkError::WrongAccountKey,
        ),
        // A list for another account name.
        (
            Provisioning {
                account: AccountName::new("mallory").unwrap(),
                ..acct.provisioning(acct.list(dev.identity.public(), LABEL, false), false, false)
            },
            LinkError::DeviceList(DeviceListError::WrongAccount),
        ),
        // The assigned id is the approver's, or the approver id is not an approver.
        (
            Provisioning {
                device_id: DeviceId::new(1).unwrap(),
                ..acct.provisioning(acct.list(dev.identity.public(), LABEL, false), false, false)
            },
            LinkError::WrongDevice,
        ),
        (
            Provisioning {
                approver_id: DeviceId::new(3).unwrap(),
                ..acct.provisioning(acct.list(dev.identity.public(), LABEL, false), false, false)
            },
            LinkError::WrongDevice,
        ),
    ];
    let wrong_key = {
        let mut p = acct.provisioning(acct.list(dev.identity.public(), LABEL, true), true, false);
        p.account_identity = Some(AccountIdentity::generate(&mut rng).unwrap());
        p
    };
    for (i, (prov, want)) in cases.into_iter().chain([(wrong_key, LinkError::WrongAccountKey)]).enumerate() {
        // The approver refuses to seal it ...
        assert_eq!(verified.seal_answer(&mut rng, &prov).err(), Some(want), "case {i}");
        // ... and the new device refuses it if a buggy approver sealed it anyway.
        let (ct, ss) = verified.ephemeral_kem.encapsulate().unwrap();
        let answer = verified.seal_with_kem(&mut rng, &prov, ct, &ss).unwrap();
        assert_eq!(pending.open_answer(&answer).err(), Some(want), "case {i}");
    }
}

#[test]
fn offers_must_be_well_formed() {
    let (mut rng, dev, _acct, secret) = setup(6);
    let id = dev.identity.public();
    let bad_label = "a\u{7}b";
    assert_eq!(
        PendingLink::new(&mut rng, &secret, id, bad_label, &dev.signed_prekey, &dev.last_resort).err(),
        Some(LinkError::BadLabel)
    );
    let long = "x".repeat(MAX_DEVICE_LABEL_BYTES + 1);
    assert!(PendingLink::new(&mut rng, &secret, id, &long, &dev.signed_prekey, &dev.last_resort).is_err());
    // Prekeys of another device.
    let other = new_device(&mut rng);
    assert_eq!(
        PendingLink::new(&mut rng, &secret, id, LABEL, &other.signed_prekey, &dev.last_resort).err(),
        Some(LinkError::BadPrekey)
    );
    assert_eq!(
        PendingLink::new(&mut rng, &secret, id, LABEL, &dev.signed_prekey, &other.last_resort).err(),
        Some(LinkError::BadPrekey)
    );
    // A MAC-valid offer (made by someone with s) with a broken binding or a bad label.
    let (_, good) = offer(&mut rng, &dev, &secret);
    let remac = |mut body: Vec<u8>| {
        body.truncate(body.len() - MAC_LEN);
        let mac = secret.offer_key().unwrap().mac(&body);
        body.extend_from_slice(mac.expose());
        body
    };
    let mut forged = good.clone();
    forged[1 + 32..1 + 64].copy_from_slice(other.identity.public().dh_key().as_bytes());
    assert_eq!(VerifiedOffer::open(&secret, &remac(forged)).err(), Some(LinkError::BadBinding));
    let mut ctrl = good.clone();
    ctrl[1 + DevicePublic::LEN + 1] = b'\n';
    assert_eq!(VerifiedOffer::open(&secret, &remac(ctrl)).err(), Some(LinkError::BadLabel));
    let mut kind = good.clone();
    kind[1 + DevicePublic::LEN + 1 + LABEL.len() + SIGNED_PREKEY_LEN] = 1; // one-time KEM key
    assert_eq!(VerifiedOffer::open(&secret, &remac(kind)).err(), Some(LinkError::BadPrekey));
    // Positive control for the re-MAC helper.
    assert!(VerifiedOffer::open(&secret, &remac(good)).is_ok());
}

#[test]
fn codes() {
    let s = LinkSecret::from_bytes([0u8; 16]);
    let code = s.to_code();
    assert_eq!(code.as_str().len(), 34);
    assert!(code.starts_with("0000-0000-0000-0000-0000-00"));
    assert_eq!(code.split('-').count(), 7);
    let s = LinkSecret::from_bytes(*b"\x01\x23\x45\x67\x89\xab\xcd\xef\xfe\xdc\xba\x98\x76\x54\x32\x10");
    let code = s.to_code();
    assert_eq!(LinkSecret::from_code(&code).unwrap().0, s.0);
    // Crockford look-alikes and separators.
    let sloppy: String = code.to_lowercase().replace('0', "o").replace('1', "l").replace('-', "  ");
    assert_eq!(LinkSecret::from_code(&sloppy).unwrap().0, s.0);
    // One character changed: a typo, told apart from a wrong code.
    let mut typo: Vec<char> = code.chars().collect();
    typo[5] = if typo[5] == 'A' { 'B' } else { 'A' };
    assert_eq!(LinkSecret::from_code(&typo.iter().collect::<String>()).err(), Some(LinkError::CodeTypo));
    // Not codes.
    for bad in ["", "0000", &format!("{}0", code.as_str()), &code.replace('2', "U"), "ü"] {
        assert_eq!(LinkSecret::from_code(bad).err(), Some(LinkError::BadCode), "{bad}");
    }
    // Random secrets round-trip.
    let mut rng = Rng::seed_from_u64(7);
    for _ in 0..200 {
        let s = LinkSecret::generate(&mut rng);
        assert_eq!(LinkSecret::from_code(&s.to_code()).unwrap().0, s.0);
    }
}

#[test]
fn provisioning_encoding() {
    let (_, dev, acct, _) = setup(8);
    let prov = acct.provisioning(acct.list(dev.identity.public(), LABEL, true), true, true);
    let bytes = prov.to_bytes();
    let back = Provisioning::from_bytes(&bytes).unwrap();
    assert_eq!(back.to_bytes().as_slice(), bytes.as_slice());
    let mut trailing = bytes.to_vec();
    trailing.push(0);
    assert_eq!(Provisioning::from_bytes(&trailing).err(), Some(DecodeError::TrailingBytes));
    // A list longer than the bound.
    let p = acct.provisioning(vec![0u8; MAX_PROVISIONING_LIST_BYTES + 1], false, false);
    assert_eq!(Provisioning::from_bytes(&p.to_bytes()).err(), Some(DecodeError::TooLong));
}

type Fixtures = (Vec<u8>, Vec<u8>, Vec<u8>, [u8; 16]);

fn fixtures() -> &'static Fixtures {
    static F: std::sync::OnceLock<Fixtures> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let (mut rng, dev, acct, secret) = setup(9);
        let (pending, offer_bytes) = offer(&mut rng, &dev, &secret);
        let prov = acct.provisioning(acct.list(dev.identity.public(), LABEL, true), true, true);
        let answer =
            VerifiedOffer::open(&secret, &offer_bytes).unwrap().seal_answer(&mut rng, &prov).unwrap();
        (offer_bytes, answer, pending.to_bytes().to_vec(), secret.0)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..6000)) {
        let secret = LinkSecret::from_bytes([5u8; 16]);
        let _ = VerifiedOffer::open(&secret, &data);
        let _ = Provisioning::from_bytes(&data);
        let _ = PendingLink::from_bytes(&data);
        let _ = LinkSecret::from_code(&String::from_utf8_lossy(&data));
        let pending = PendingLink::from_bytes(&fixtures().2).unwrap();
        prop_assert!(pending.open_answer(&data).is_err());
    }

    #[test]
    fn mutated_messages_are_refused(at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let (offer_bytes, answer, pending, secret) = fixtures();
        let pending = PendingLink::from_bytes(pending).unwrap();
        let mut a = answer.clone();
        let i = at.index(a.len());
        a[i] ^= 1 << bit;
        prop_assert!(pending.open_answer(&a).is_err());
        let mut o = offer_bytes.clone();
        let i = at.index(o.len());
        o[i] ^= 1 << bit;
        prop_assert_eq!(VerifiedOffer::open(&LinkSecret::from_bytes(*secret), &o).err(), Some(LinkError::BadMac));
    }
}
