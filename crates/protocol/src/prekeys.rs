//! Prekeys and their lifecycle (PQXDH revision 3, sections 3.2 and 4.12-4.13).
//!
//! A device publishes: one **signed X25519 prekey** (`SPK`), a set of **one-time X25519
//! prekeys** (`OPK`), a set of **one-time ML-KEM-1024 prekeys** and one **last-resort
//! ML-KEM-1024 prekey** (`PQSPK`), every KEM key and the SPK signed by the device's Ed25519
//! key. Which keys to make, rotate or delete is decided by the pure [`DevicePrekeys::plan`],
//! so forward secrecy depends on a schedule rather than on luck.

use std::collections::{BTreeMap, BTreeSet};

use rand_core::{CryptoRng, RngCore};

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::ed25519::Signature;
use crate::crypto::kem::{KemPublic, KemSecret};
use crate::crypto::x25519::{X25519Public, X25519Secret};
use crate::crypto::{CryptoError, Secret32};
use crate::identity::{DeviceAddress, DeviceIdentity, DevicePublic};

const SPK_LABEL: &[u8] = b"Tacit v1 signed prekey";
const KEM_LABEL: &[u8] = b"Tacit v1 kem prekey";

/// Seconds since the Unix epoch, supplied by the caller (the core reads no clock).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct UnixTime(pub u64);

impl UnixTime {
    fn plus(self, secs: u64) -> Self {
        Self(self.0.saturating_add(secs))
    }
}

/// The rotation and retention schedule. The defaults follow Signal's clients: a new signed
/// prekey (and last-resort KEM key) every 2 days, a retired one kept 30 days for messages
/// still in flight and then deleted.
#[derive(Clone, Copy, Debug)]
pub struct PrekeyPolicy {
    /// How long a signed prekey or last-resort KEM key is the current one.
    pub rotation_period_secs: u64,
    /// How long a retired key is kept before its private half is deleted.
    pub retired_grace_secs: u64,
    /// How many one-time keys of each kind the server should hold after a refill.
    pub one_time_target: u32,
    /// Refill when the server reports fewer than this many.
    pub one_time_low_water: u32,
}

impl Default for PrekeyPolicy {
    fn default() -> Self {
        Self {
            rotation_period_secs: 2 * 86_400,
            retired_grace_secs: 30 * 86_400,
            one_time_target: 100,
            one_time_low_water: 20,
        }
    }
}

/// Most one-time keys of one kind a device keeps; making more deletes the oldest.
pub const MAX_ONE_TIME_PREKEYS: usize = 1_000;
/// Most retired signed or last-resort keys kept (older ones are deleted even inside the
/// grace): 16 rotations of 2 days cover the 30-day grace.
pub const MAX_RETIRED_PREKEYS: usize = 16;
/// Most base keys remembered **per signed prekey** to refuse replays of initial messages
/// that consumed no one-time key. When the memory of the current signed prekey is full,
/// such messages are refused (never forgotten, which would let a flood re-open replays)
/// and [`DevicePrekeys::plan`] asks for a new signed prekey, whose memory starts empty.
pub const MAX_SEEN_BASE_KEYS: usize = 10_000;

/// Which kind of KEM prekey a bundle carries.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
pub enum KemPrekeyKind {
    /// Handed out once, deleted after use.
    OneTime,
    /// Used when the one-time ones run out; rotated on the schedule.
    LastResort,
}

impl KemPrekeyKind {
    fn tag(self) -> u8 {
        match self {
            Self::OneTime => 1,
            Self::LastResort => 2,
        }
    }
    fn from_tag(t: u8) -> Result<Self, DecodeError> {
        match t {
            1 => Ok(Self::OneTime),
            2 => Ok(Self::LastResort),
            t => Err(DecodeError::UnknownTag(t)),
        }
    }
}

/// A signed X25519 prekey, as published.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SignedPrekeyPublic {
    /// Its identifier, unique within the device.
    pub id: u32,
    /// The public key.
    pub key: X25519Public,
    /// The device's signature over label, id and key.
    pub signature: Signature,
}

impl SignedPrekeyPublic {
    /// Encodes the key as published (see `docs/PROTOCOL.md` section 4).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Vec::new();
        self.encode(&mut w);
        w
    }

    /// Decodes a published key (signatures are checked by `verify`, not here).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let k = Self::decode(&mut r)?;
        r.finish()?;
        Ok(k)
    }

    fn signed_message(id: u32, key: &X25519Public) -> Vec<u8> {
        let mut m = Vec::with_capacity(SPK_LABEL.len() + 36);
        m.put(SPK_LABEL);
        m.put_u32(id);
        m.put(key.as_bytes());
        m
    }
    /// Checks the device's signature (PQXDH section 3.3: "Alice verifies the prekey signatures").
    pub fn verify(&self, device: &DevicePublic) -> Result<(), CryptoError> {
        device.signing_key().verify(&Self::signed_message(self.id, &self.key), &self.signature)
    }
    pub(crate) fn encode(&self, w: &mut impl Writer) {
        w.put_u32(self.id);
        w.put(self.key.as_bytes());
        w.put(self.signature.as_bytes());
    }
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            id: r.u32()?,
            key: X25519Public::from_bytes(r.array()?).map_err(|_| DecodeError::InvalidValue)?,
            signature: Signature::from_bytes(r.array()?),
        })
    }
}

/// A signed ML-KEM-1024 prekey, as published.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct KemPrekeyPublic {
    /// Its identifier, unique within the device.
    pub id: u32,
    /// One-time or last-resort.
    pub kind: KemPrekeyKind,
    /// The encapsulation key.
    pub key: KemPublic,
    /// The device's signature over label, kind, id and key.
    pub signature: Signature,
}

impl KemPrekeyPublic {
    /// Encodes the key as published (see `docs/PROTOCOL.md` section 4).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Vec::new();
        self.encode(&mut w);
        w
    }

    /// Decodes a published key (signatures are checked by `verify`, not here).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let k = Self::decode(&mut r)?;
        r.finish()?;
        Ok(k)
    }

    fn signed_message(id: u32, kind: KemPrekeyKind, key: &KemPublic) -> Vec<u8> {
        let mut m = Vec::with_capacity(KEM_LABEL.len() + 5 + key.as_bytes().len());
        m.put(KEM_LABEL);
        m.put_u8(kind.tag());
        m.put_u32(id);
        m.put(key.as_bytes());
        m
    }
    /// Checks the device's signature.
    pub fn verify(&self, device: &DevicePublic) -> Result<(), CryptoError> {
        device.signing_key().verify(&Self::signed_message(self.id, self.kind, &self.key), &self.signature)
    }
    pub(crate) fn encode(&self, w: &mut impl Writer) {
        w.put_u8(self.kind.tag());
        w.put_u32(self.id);
        w.put(self.key.as_bytes());
        w.put(self.signature.as_bytes());
    }
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let kind = KemPrekeyKind::from_tag(r.u8()?)?;
        let id = r.u32()?;
        let key = KemPublic::from_bytes(r.take(crate::crypto::kem::PUBLIC_KEY_LEN)?)
            .map_err(|_| DecodeError::InvalidValue)?;
        Ok(Self { id, kind, key, signature: Signature::from_bytes(r.array()?) })
    }
}

/// A one-time X25519 prekey, as published (unsigned, as in PQXDH).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct OneTimePrekeyPublic {
    /// Its identifier, unique within the device.
    pub id: u32,
    /// The public key.
    pub key: X25519Public,
}

impl OneTimePrekeyPublic {
    /// Encodes the key as published (see `docs/PROTOCOL.md` section 4).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Vec::new();
        self.encode(&mut w);
        w
    }

    /// Decodes a published key (signatures are checked by `verify`, not here).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let k = Self::decode(&mut r)?;
        r.finish()?;
        Ok(k)
    }

    pub(crate) fn encode(&self, w: &mut impl Writer) {
        w.put_u32(self.id);
        w.put(self.key.as_bytes());
    }
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            id: r.u32()?,
            key: X25519Public::from_bytes(r.array()?).map_err(|_| DecodeError::InvalidValue)?,
        })
    }
}

/// Format version of a [`PrekeyBundle`] encoding.
const BUNDLE_VERSION: u8 = 1;

/// Everything Alice needs to start a session with one of Bob's devices (PQXDH section 3.2).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PrekeyBundle {
    /// The device the bundle belongs to.
    pub address: DeviceAddress,
    /// The device's identity.
    pub identity: DevicePublic,
    /// Its current signed prekey.
    pub signed_prekey: SignedPrekeyPublic,
    /// A one-time KEM prekey, or the last-resort one when none is left.
    pub kem_prekey: KemPrekeyPublic,
    /// A one-time X25519 prekey, if any is left.
    pub one_time_prekey: Option<OneTimePrekeyPublic>,
}

impl PrekeyBundle {
    /// Encodes the bundle.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(2_000);
        w.put_u8(BUNDLE_VERSION);
        self.address.encode(&mut w);
        self.identity.encode(&mut w);
        self.signed_prekey.encode(&mut w);
        self.kem_prekey.encode(&mut w);
        match &self.one_time_prekey {
            Some(k) => {
                w.put_bool(true);
                k.encode(&mut w);
            }
            None => w.put_bool(false),
        }
        w
    }

    /// Decodes a bundle. Nothing in it is trusted yet: [`crate::Session::initiate`] checks
    /// the identity against the device list and verifies the prekey signatures.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = r.u8()?;
        if v != BUNDLE_VERSION {
            return Err(DecodeError::UnknownVersion(v));
        }
        let address = DeviceAddress::decode(&mut r)?;
        let identity = DevicePublic::decode_unverified(&mut r)?;
        let signed_prekey = SignedPrekeyPublic::decode(&mut r)?;
        let kem_prekey = KemPrekeyPublic::decode(&mut r)?;
        let one_time_prekey = if r.bool()? { Some(OneTimePrekeyPublic::decode(&mut r)?) } else { None };
        r.finish()?;
        Ok(Self { address, identity, signed_prekey, kem_prekey, one_time_prekey })
    }

    /// Verifies the prekey signatures against the bundle's identity.
    pub fn verify(&self) -> Result<(), CryptoError> {
        self.signed_prekey.verify(&self.identity)?;
        self.kem_prekey.verify(&self.identity)
    }
}

#[derive(Clone)]
struct SignedRecord {
    public: SignedPrekeyPublic,
    secret: X25519Secret,
    created: UnixTime,
    retired: Option<UnixTime>,
}

#[derive(Clone)]
struct KemRecord {
    public: KemPrekeyPublic,
    secret: KemSecret,
    created: UnixTime,
    retired: Option<UnixTime>,
}

/// What [`DevicePrekeys::plan`] decided should happen now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrekeyPlan {
    /// Make a new signed prekey (none yet, or the current one is older than the period).
    pub rotate_signed: bool,
    /// Make a new last-resort KEM prekey.
    pub rotate_last_resort: bool,
    /// How many one-time X25519 prekeys to make and upload.
    pub new_one_time: u32,
    /// How many one-time KEM prekeys to make and upload.
    pub new_kem_one_time: u32,
    /// Retired signed prekeys whose grace has ended: their private keys are deleted.
    pub delete_signed: Vec<u32>,
    /// Retired last-resort KEM prekeys whose grace has ended.
    pub delete_last_resort: Vec<u32>,
}

impl PrekeyPlan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Public keys to upload after executing a plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrekeyUpload {
    /// A new signed prekey, if one was made.
    pub signed_prekey: Option<SignedPrekeyPublic>,
    /// A new last-resort KEM prekey, if one was made.
    pub last_resort: Option<KemPrekeyPublic>,
    /// New one-time X25519 prekeys.
    pub one_time: Vec<OneTimePrekeyPublic>,
    /// New one-time KEM prekeys.
    pub kem_one_time: Vec<KemPrekeyPublic>,
}

/// The private prekeys of one device.
///
/// Not `Clone`: two copies would hand out the same one-time keys. Persist with
/// [`DevicePrekeys::to_bytes`].
#[derive(Default)]
pub struct DevicePrekeys {
    next_id: u32,
    signed: Vec<SignedRecord>,
    last_resort: Vec<KemRecord>,
    kem_one_time: BTreeMap<u32, KemRecord>,
    one_time: BTreeMap<u32, X25519Secret>,
    /// Base keys of accepted initial messages that used no one-time key, by signed prekey.
    seen_base_keys: BTreeMap<u32, BTreeSet<X25519Public>>,
    generation: u64,
}

/// The private keys an initial message names, looked up without changing anything.
pub(crate) struct PrekeySecrets<'a> {
    pub(crate) signed: &'a X25519Secret,
    pub(crate) one_time: Option<&'a X25519Secret>,
    pub(crate) kem: &'a KemSecret,
}

/// Which keys an accepted initial message used, to delete once it has authenticated.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PrekeyUse {
    pub(crate) signed_id: u32,
    pub(crate) one_time_id: Option<u32>,
    pub(crate) kem_id: u32,
    pub(crate) kem_kind: KemPrekeyKind,
    pub(crate) base_key: X25519Public,
}

/// Why a prekey lookup failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PrekeyError {
    /// The message names a signed prekey this device does not have (never made, or deleted).
    #[error("unknown signed prekey {0}")]
    UnknownSignedPrekey(u32),
    /// The message names a one-time prekey that does not exist or was already used.
    #[error("unknown or used one-time prekey {0}")]
    UnknownOneTimePrekey(u32),
    /// The message names a KEM prekey that does not exist or was already used.
    #[error("unknown or used KEM prekey {0}")]
    UnknownKemPrekey(u32),
    /// An initial message with this base key was already accepted.
    #[error("initial message replayed")]
    ReplayedInitialMessage,
    /// The replay memory of this signed prekey is full: the device must rotate its signed
    /// prekey ([`DevicePrekeys::plan`] asks for it) before it accepts more initial messages
    /// that use no one-time key.
    #[error("too many initial messages without one-time keys; rotate the signed prekey")]
    ReplayMemoryFull,
    /// A primitive failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl DevicePrekeys {
    /// An empty set (a fresh device): the first [`Self::plan`] asks for every kind of key.
    pub fn new() -> Self {
        Self { next_id: 1, ..Self::default() }
    }

    fn current_signed(&self) -> Option<&SignedRecord> {
        self.signed.iter().rev().find(|r| r.retired.is_none())
    }

    fn current_last_resort(&self) -> Option<&KemRecord> {
        self.last_resort.iter().rev().find(|r| r.retired.is_none())
    }

    /// Decides what to make and delete at `now`, given how many one-time keys of each kind
    /// the server reports it still holds. Pure: it changes nothing.
    pub fn plan(
        &self,
        now: UnixTime,
        policy: &PrekeyPolicy,
        server_one_time: u32,
        server_kem_one_time: u32,
    ) -> PrekeyPlan {
        let due = |created: UnixTime| now >= created.plus(policy.rotation_period_secs);
        let expired =
            |retired: Option<UnixTime>| retired.is_some_and(|t| now >= t.plus(policy.retired_grace_secs));
        let refill = |have: u32| {
            if have < policy.one_time_low_water { policy.one_time_target.saturating_sub(have) } else { 0 }
        };
        let memory_filling =
            |id: u32| self.seen_base_keys.get(&id).is_some_and(|seen| seen.len() >= MAX_SEEN_BASE_KEYS / 2);
        PrekeyPlan {
            rotate_signed: self
                .current_signed()
                .is_none_or(|r| due(r.created) || memory_filling(r.public.id)),
            rotate_last_resort: self.current_last_resort().is_none_or(|r| due(r.created)),
            new_one_time: refill(server_one_time),
            new_kem_one_time: refill(server_kem_one_time),
            delete_signed: self.signed.iter().filter(|r| expired(r.retired)).map(|r| r.public.id).collect(),
            delete_last_resort: self
                .last_resort
                .iter()
                .filter(|r| expired(r.retired))
                .map(|r| r.public.id)
                .collect(),
        }
    }

    fn fresh_id(&mut self) -> u32 {
        let id = self.next_id.max(1);
        self.next_id = id.wrapping_add(1).max(1);
        id
    }

    /// Carries out a plan: makes the new keys (retiring the keys they replace at `now`),
    /// deletes expired private keys, and returns the public keys to upload.
    pub fn execute<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        identity: &DeviceIdentity,
        now: UnixTime,
        plan: &PrekeyPlan,
    ) -> Result<PrekeyUpload, CryptoError> {
        // Work on a copy and replace `self` only when every step succeeded.
        let mut next = self.snapshot();
        let upload = next.execute_in_place(rng, identity, now, plan)?;
        next.generation = self.generation.wrapping_add(1);
        *self = next;
        Ok(upload)
    }

    fn snapshot(&self) -> Self {
        Self {
            next_id: self.next_id,
            signed: self.signed.clone(),
            last_resort: self.last_resort.clone(),
            kem_one_time: self.kem_one_time.clone(),
            one_time: self.one_time.clone(),
            seen_base_keys: self.seen_base_keys.clone(),
            generation: self.generation,
        }
    }

    fn execute_in_place<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        identity: &DeviceIdentity,
        now: UnixTime,
        plan: &PrekeyPlan,
    ) -> Result<PrekeyUpload, CryptoError> {
        let mut upload = PrekeyUpload::default();
        self.signed.retain(|r| !plan.delete_signed.contains(&r.public.id));
        self.last_resort.retain(|r| !plan.delete_last_resort.contains(&r.public.id));
        if plan.rotate_signed {
            let secret = X25519Secret::generate(rng)?;
            let id = self.fresh_id();
            let key = *secret.public();
            let signature = identity.signing_key().sign(&SignedPrekeyPublic::signed_message(id, &key));
            let public = SignedPrekeyPublic { id, key, signature };
            for r in self.signed.iter_mut().filter(|r| r.retired.is_none()) {
                r.retired = Some(now);
            }
            self.signed.push(SignedRecord { public: public.clone(), secret, created: now, retired: None });
            upload.signed_prekey = Some(public);
        }
        if plan.rotate_last_resort {
            let record = self.make_kem(identity, KemPrekeyKind::LastResort, now)?;
            for r in self.last_resort.iter_mut().filter(|r| r.retired.is_none()) {
                r.retired = Some(now);
            }
            upload.last_resort = Some(record.public.clone());
            self.last_resort.push(record);
        }
        trim_retired(&mut self.signed, |r| r.retired.is_some());
        trim_retired(&mut self.last_resort, |r| r.retired.is_some());
        // A signed prekey's replay memory goes with it.
        let signed = &self.signed;
        self.seen_base_keys.retain(|spk, _| signed.iter().any(|r| r.public.id == *spk));
        for _ in 0..plan.new_one_time.min(MAX_ONE_TIME_PREKEYS as u32) {
            let secret = X25519Secret::generate(rng)?;
            let id = self.fresh_id();
            upload.one_time.push(OneTimePrekeyPublic { id, key: *secret.public() });
            self.one_time.insert(id, secret);
        }
        for _ in 0..plan.new_kem_one_time.min(MAX_ONE_TIME_PREKEYS as u32) {
            let record = self.make_kem(identity, KemPrekeyKind::OneTime, now)?;
            upload.kem_one_time.push(record.public.clone());
            self.kem_one_time.insert(record.public.id, record);
        }
        while self.one_time.len() > MAX_ONE_TIME_PREKEYS {
            self.one_time.pop_first();
        }
        while self.kem_one_time.len() > MAX_ONE_TIME_PREKEYS {
            self.kem_one_time.pop_first();
        }
        Ok(upload)
    }

    fn make_kem(
        &mut self,
        identity: &DeviceIdentity,
        kind: KemPrekeyKind,
        now: UnixTime,
    ) -> Result<KemRecord, CryptoError> {
        let secret = KemSecret::generate()?;
        let id = self.fresh_id();
        let key = secret.public().clone();
        let signature = identity.signing_key().sign(&KemPrekeyPublic::signed_message(id, kind, &key));
        Ok(KemRecord {
            public: KemPrekeyPublic { id, kind, key, signature },
            secret,
            created: now,
            retired: None,
        })
    }

    /// The bundle this device would publish now, taking the lowest-numbered one-time keys
    /// (a server hands each one out once; this is for tests and single-process setups).
    pub fn bundle(&self, address: DeviceAddress, identity: &DeviceIdentity) -> Option<PrekeyBundle> {
        let signed_prekey = self.current_signed()?.public.clone();
        let kem_prekey = match self.kem_one_time.values().next() {
            Some(r) => r.public.clone(),
            None => self.current_last_resort()?.public.clone(),
        };
        let one_time_prekey =
            self.one_time.iter().next().map(|(id, s)| OneTimePrekeyPublic { id: *id, key: *s.public() });
        Some(PrekeyBundle {
            address,
            identity: identity.public().clone(),
            signed_prekey,
            kem_prekey,
            one_time_prekey,
        })
    }

    /// Number of one-time X25519 and KEM prekeys held.
    pub fn one_time_counts(&self) -> (usize, usize) {
        (self.one_time.len(), self.kem_one_time.len())
    }

    /// Looks up the private keys a message names, changing nothing.
    pub(crate) fn lookup(&self, u: &PrekeyUse) -> Result<PrekeySecrets<'_>, PrekeyError> {
        let signed = &self
            .signed
            .iter()
            .find(|r| r.public.id == u.signed_id)
            .ok_or(PrekeyError::UnknownSignedPrekey(u.signed_id))?
            .secret;
        let one_time = match u.one_time_id {
            Some(id) => Some(self.one_time.get(&id).ok_or(PrekeyError::UnknownOneTimePrekey(id))?),
            None => None,
        };
        let kem = match u.kem_kind {
            KemPrekeyKind::OneTime => self.kem_one_time.get(&u.kem_id).map(|r| &r.secret),
            KemPrekeyKind::LastResort => {
                self.last_resort.iter().find(|r| r.public.id == u.kem_id).map(|r| &r.secret)
            }
        }
        .ok_or(PrekeyError::UnknownKemPrekey(u.kem_id))?;
        let consumes_one_time = u.one_time_id.is_some() || u.kem_kind == KemPrekeyKind::OneTime;
        if !consumes_one_time && let Some(seen) = self.seen_base_keys.get(&u.signed_id) {
            if seen.contains(&u.base_key) {
                return Err(PrekeyError::ReplayedInitialMessage);
            }
            if seen.len() >= MAX_SEEN_BASE_KEYS {
                return Err(PrekeyError::ReplayMemoryFull);
            }
        }
        Ok(PrekeySecrets { signed, one_time, kem })
    }

    /// Deletes the one-time keys an authenticated initial message used (PQXDH section 3.4:
    /// "Bob deletes any one-time prekey private key that was used"), or remembers its base
    /// key when it used none, so a replay is refused.
    pub(crate) fn consume(&mut self, u: &PrekeyUse) {
        self.generation = self.generation.wrapping_add(1);
        if let Some(id) = u.one_time_id {
            self.one_time.remove(&id);
        }
        if u.kem_kind == KemPrekeyKind::OneTime {
            self.kem_one_time.remove(&u.kem_id);
        }
        if u.one_time_id.is_none() && u.kem_kind == KemPrekeyKind::LastResort {
            // `lookup` refused this message if the memory was full.
            self.seen_base_keys.entry(u.signed_id).or_default().insert(u.base_key);
        }
    }

    /// Encodes every private prekey (for the device's encrypted store).
    pub(crate) fn encode(&self, w: &mut impl Writer) {
        w.put_u32(self.next_id);
        w.put_count(self.signed.len());
        for r in &self.signed {
            r.public.encode(w);
            w.put(r.secret.secret_bytes().expose());
            put_times(w, r.created, r.retired);
        }
        w.put_count(self.last_resort.len());
        for r in &self.last_resort {
            encode_kem(w, r);
        }
        w.put_count(self.kem_one_time.len());
        for r in self.kem_one_time.values() {
            encode_kem(w, r);
        }
        w.put_count(self.one_time.len());
        for (id, s) in &self.one_time {
            w.put_u32(*id);
            w.put(s.secret_bytes().expose());
        }
        w.put_count(self.seen_base_keys.len());
        for (spk, seen) in &self.seen_base_keys {
            w.put_u32(*spk);
            w.put_count(seen.len());
            for k in seen {
                w.put(k.as_bytes());
            }
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let bad = |_| DecodeError::InvalidValue;
        let next_id = r.u32()?;
        let mut signed = Vec::new();
        for _ in 0..r.count(MAX_RETIRED_PREKEYS + 1)? {
            let public = SignedPrekeyPublic::decode(r)?;
            let secret = X25519Secret::from_bytes(Secret32(r.array()?)).map_err(bad)?;
            if *secret.public() != public.key {
                return Err(DecodeError::InvalidValue);
            }
            let (created, retired) = get_times(r)?;
            signed.push(SignedRecord { public, secret, created, retired });
        }
        let mut last_resort = Vec::new();
        for _ in 0..r.count(MAX_RETIRED_PREKEYS + 1)? {
            last_resort.push(decode_kem(r)?);
        }
        let mut kem_one_time = BTreeMap::new();
        for _ in 0..r.count(MAX_ONE_TIME_PREKEYS)? {
            let rec = decode_kem(r)?;
            if kem_one_time.last_key_value().is_some_and(|(&last, _)| rec.public.id <= last) {
                return Err(DecodeError::InvalidValue);
            }
            kem_one_time.insert(rec.public.id, rec);
        }
        let mut one_time = BTreeMap::new();
        for _ in 0..r.count(MAX_ONE_TIME_PREKEYS)? {
            let id = r.u32()?;
            if one_time.last_key_value().is_some_and(|(&last, _)| id <= last) {
                return Err(DecodeError::InvalidValue);
            }
            one_time.insert(id, X25519Secret::from_bytes(Secret32(r.array()?)).map_err(bad)?);
        }
        let mut seen_base_keys: BTreeMap<u32, BTreeSet<X25519Public>> = BTreeMap::new();
        for _ in 0..r.count(MAX_RETIRED_PREKEYS + 1)? {
            let spk = r.u32()?;
            let ascending = seen_base_keys.last_key_value().is_none_or(|(&last, _)| spk > last);
            if !ascending || !signed.iter().any(|s: &SignedRecord| s.public.id == spk) {
                return Err(DecodeError::InvalidValue);
            }
            let mut seen = BTreeSet::new();
            for _ in 0..r.count(MAX_SEEN_BASE_KEYS)? {
                let k = X25519Public::from_bytes(r.array()?).map_err(bad)?;
                if seen.last().is_some_and(|last| k <= *last) {
                    return Err(DecodeError::InvalidValue);
                }
                seen.insert(k);
            }
            seen_base_keys.insert(spk, seen);
        }
        let p = Self { next_id, signed, last_resort, kem_one_time, one_time, seen_base_keys, generation: 0 };
        p.check_invariants()?;
        Ok(p)
    }

    /// What every stored set satisfies: ids unique across all kinds and below `next_id`,
    /// each KEM record in the list of its kind, at most one current signed and last-resort
    /// key, and one-time maps keyed by their records' ids.
    fn check_invariants(&self) -> Result<(), DecodeError> {
        let mut ids = BTreeSet::new();
        let all = self
            .signed
            .iter()
            .map(|r| r.public.id)
            .chain(self.last_resort.iter().map(|r| r.public.id))
            .chain(self.kem_one_time.keys().copied())
            .chain(self.one_time.keys().copied());
        for id in all {
            if id == 0 || id >= self.next_id || !ids.insert(id) {
                return Err(DecodeError::InvalidValue);
            }
        }
        let kinds_ok = self.last_resort.iter().all(|r| r.public.kind == KemPrekeyKind::LastResort)
            && self
                .kem_one_time
                .iter()
                .all(|(id, r)| r.public.kind == KemPrekeyKind::OneTime && *id == r.public.id);
        let current_signed = self.signed.iter().filter(|r| r.retired.is_none()).count();
        let current_last_resort = self.last_resort.iter().filter(|r| r.retired.is_none()).count();
        if !kinds_ok || current_signed > 1 || current_last_resort > 1 {
            return Err(DecodeError::InvalidValue);
        }
        Ok(())
    }

    /// Grows with every change (a restored older copy would hand out used one-time keys
    /// again; see [`crate::state`]).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Serialises every private prekey (secret: keep it in the encrypted store).
    pub fn to_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        crate::codec::encode_exact(|w| {
            crate::state::write_header(w, crate::state::StateKind::Prekeys, self.generation);
            self.encode(w);
        })
    }

    /// Restores what [`Self::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let generation = crate::state::read_header(&mut r, crate::state::StateKind::Prekeys)?;
        let mut p = Self::decode(&mut r)?;
        r.finish()?;
        p.generation = generation;
        Ok(p)
    }
}

#[cfg(test)]
impl DevicePrekeys {
    /// Known-answer tests: a set holding exactly the given keys (ML-KEM key generation cannot
    /// be derandomised through AWS-LC), signed by `identity` as [`Self::execute`] signs.
    pub(crate) fn from_secrets(
        identity: &DeviceIdentity,
        signed: (u32, X25519Secret),
        kem: (u32, KemPrekeyKind, KemSecret),
        one_time: Option<(u32, X25519Secret)>,
    ) -> Self {
        let (spk_id, spk) = signed;
        let key = *spk.public();
        let signature = identity.signing_key().sign(&SignedPrekeyPublic::signed_message(spk_id, &key));
        let mut p = Self::new();
        p.signed.push(SignedRecord {
            public: SignedPrekeyPublic { id: spk_id, key, signature },
            secret: spk,
            created: UnixTime(0),
            retired: None,
        });
        let (kem_id, kind, secret) = kem;
        let kem_key = secret.public().clone();
        let signature = identity.signing_key().sign(&KemPrekeyPublic::signed_message(kem_id, kind, &kem_key));
        let record = KemRecord {
            public: KemPrekeyPublic { id: kem_id, kind, key: kem_key, signature },
            secret,
            created: UnixTime(0),
            retired: None,
        };
        match kind {
            KemPrekeyKind::OneTime => {
                p.kem_one_time.insert(kem_id, record);
            }
            KemPrekeyKind::LastResort => p.last_resort.push(record),
        }
        let mut max_id = spk_id.max(kem_id);
        if let Some((id, secret)) = one_time {
            max_id = max_id.max(id);
            p.one_time.insert(id, secret);
        }
        p.next_id = max_id.wrapping_add(1).max(1);
        p
    }
}

fn trim_retired<T>(v: &mut Vec<T>, retired: impl Fn(&T) -> bool) {
    while v.iter().filter(|r| retired(r)).count() > MAX_RETIRED_PREKEYS {
        if let Some(pos) = v.iter().position(&retired) {
            v.remove(pos);
        }
    }
}

fn put_times(w: &mut impl Writer, created: UnixTime, retired: Option<UnixTime>) {
    w.put_u64(created.0);
    match retired {
        Some(t) => {
            w.put_bool(true);
            w.put_u64(t.0);
        }
        None => w.put_bool(false),
    }
}

fn get_times(r: &mut Reader<'_>) -> Result<(UnixTime, Option<UnixTime>), DecodeError> {
    let created = UnixTime(r.u64()?);
    let retired = if r.bool()? { Some(UnixTime(r.u64()?)) } else { None };
    Ok((created, retired))
}

fn encode_kem(w: &mut impl Writer, r: &KemRecord) {
    r.public.encode(w);
    w.put(r.secret.secret_bytes());
    put_times(w, r.created, r.retired);
}

fn decode_kem(r: &mut Reader<'_>) -> Result<KemRecord, DecodeError> {
    let public = KemPrekeyPublic::decode(r)?;
    let secret = KemSecret::from_parts(r.take(crate::crypto::kem::SECRET_KEY_LEN)?, public.key.clone())
        .map_err(|_| DecodeError::InvalidValue)?;
    let (created, retired) = get_times(r)?;
    Ok(KemRecord { public, secret, created, retired })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{AccountName, DeviceId};
    use rand_core::SeedableRng;

    fn addr() -> DeviceAddress {
        DeviceAddress { account: AccountName::new("bob").unwrap(), device: DeviceId::new(1).unwrap() }
    }

    #[test]
    fn lifecycle_schedule() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        let id = DeviceIdentity::generate(&mut rng).unwrap();
        let policy = PrekeyPolicy::default();
        let mut p = DevicePrekeys::new();
        let t0 = UnixTime(1_000_000);
        let plan = p.plan(t0, &policy, 0, 0);
        assert!(plan.rotate_signed && plan.rotate_last_resort);
        assert_eq!((plan.new_one_time, plan.new_kem_one_time), (100, 100));
        let up = p.execute(&mut rng, &id, t0, &plan).unwrap();
        assert_eq!(up.one_time.len(), 100);
        assert!(p.plan(t0, &policy, 100, 100).is_empty());
        // A day later nothing; two days later rotation.
        assert!(p.plan(t0.plus(86_400), &policy, 50, 50).is_empty());
        let t2 = t0.plus(2 * 86_400);
        let plan = p.plan(t2, &policy, 19, 100);
        assert!(plan.rotate_signed && plan.rotate_last_resort);
        assert_eq!(plan.new_one_time, 81);
        let old_spk = p.current_signed().unwrap().public.id;
        p.execute(&mut rng, &id, t2, &plan).unwrap();
        // The retired key is kept through its grace, then the plan deletes it.
        let before = p.plan(t2.plus(30 * 86_400 - 1), &policy, 100, 100);
        assert!(!before.delete_signed.contains(&old_spk));
        let after = p.plan(t2.plus(30 * 86_400), &policy, 100, 100);
        assert!(after.delete_signed.contains(&old_spk));
        p.execute(&mut rng, &id, t2.plus(30 * 86_400), &after).unwrap();
        assert!(p.signed.iter().all(|r| r.public.id != old_spk));
    }

    #[test]
    fn replay_memory_refuses_when_full_and_asks_for_rotation() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
        let id = DeviceIdentity::generate(&mut rng).unwrap();
        let policy = PrekeyPolicy::default();
        let mut p = DevicePrekeys::new();
        let plan = p.plan(UnixTime(0), &policy, 100, 100);
        p.execute(&mut rng, &id, UnixTime(0), &plan).unwrap();
        let spk = p.current_signed().unwrap().public.id;
        let lr = p.current_last_resort().unwrap().public.id;
        let use_of = |i: u32| {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            PrekeyUse {
                signed_id: spk,
                one_time_id: None,
                kem_id: lr,
                kem_kind: KemPrekeyKind::LastResort,
                base_key: X25519Public::from_bytes(k).unwrap(),
            }
        };
        for i in 0..MAX_SEEN_BASE_KEYS as u32 {
            assert!(p.lookup(&use_of(i)).is_ok());
            p.consume(&use_of(i));
            if i as usize + 1 == MAX_SEEN_BASE_KEYS / 2 {
                assert!(p.plan(UnixTime(1), &policy, 100, 100).rotate_signed, "half full: rotate");
            }
        }
        assert!(matches!(p.lookup(&use_of(0)), Err(PrekeyError::ReplayedInitialMessage)));
        let fresh = use_of(u32::MAX);
        assert!(matches!(p.lookup(&fresh), Err(PrekeyError::ReplayMemoryFull)));
        // Rotation gives the new signed prekey an empty memory; the old one keeps its own.
        let plan = p.plan(UnixTime(1), &policy, 100, 100);
        p.execute(&mut rng, &id, UnixTime(1), &plan).unwrap();
        let new_spk = p.current_signed().unwrap().public.id;
        assert!(p.lookup(&PrekeyUse { signed_id: new_spk, ..fresh }).is_ok());
        assert!(matches!(p.lookup(&use_of(7)), Err(PrekeyError::ReplayedInitialMessage)));
        // Saved and loaded, the memory survives; deleting the old key drops its memory.
        let mut q = DevicePrekeys::from_bytes(&p.to_bytes()).unwrap();
        assert!(matches!(q.lookup(&use_of(7)), Err(PrekeyError::ReplayedInitialMessage)));
        let later = UnixTime(1 + policy.retired_grace_secs);
        let plan = q.plan(later, &policy, 100, 100);
        assert!(plan.delete_signed.contains(&spk));
        q.execute(&mut rng, &id, later, &plan).unwrap();
        assert!(!q.seen_base_keys.contains_key(&spk));
    }

    #[test]
    fn bundle_round_trip_and_signature_checks() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let id = DeviceIdentity::generate(&mut rng).unwrap();
        let mut p = DevicePrekeys::new();
        let plan = p.plan(UnixTime(0), &PrekeyPolicy::default(), 0, 0);
        p.execute(&mut rng, &id, UnixTime(0), &plan).unwrap();
        let b = p.bundle(addr(), &id).unwrap();
        let bytes = b.to_bytes();
        assert_eq!(PrekeyBundle::from_bytes(&bytes).unwrap(), b);
        // Swap in a signed prekey signed by nobody: refused.
        let mut forged = b.clone();
        forged.signed_prekey.key = *X25519Secret::generate(&mut rng).unwrap().public();
        assert!(PrekeyBundle::from_bytes(&forged.to_bytes()).unwrap().verify().is_err());
        let mut forged = b;
        forged.kem_prekey.kind = KemPrekeyKind::LastResort;
        assert!(PrekeyBundle::from_bytes(&forged.to_bytes()).unwrap().verify().is_err());
    }

    #[test]
    fn store_round_trip() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(4);
        let id = DeviceIdentity::generate(&mut rng).unwrap();
        let mut p = DevicePrekeys::new();
        let mut plan = p.plan(UnixTime(0), &PrekeyPolicy::default(), 0, 0);
        plan.new_kem_one_time = 3;
        p.execute(&mut rng, &id, UnixTime(0), &plan).unwrap();
        let mut w = Vec::new();
        p.encode(&mut w);
        let q = DevicePrekeys::decode(&mut Reader::new(&w)).unwrap();
        let mut w2 = Vec::new();
        q.encode(&mut w2);
        assert_eq!(w, w2);
    }
}
