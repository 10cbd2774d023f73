//! The private prekeys of one device: what an initial message may use, the replay memory,
//! and the stored form.

use std::collections::{BTreeMap, BTreeSet};

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::kem::KemSecret;
use crate::crypto::x25519::{X25519Public, X25519Secret};
use crate::crypto::{CryptoError, Secret32};
use crate::identity::{DeviceAddress, DeviceIdentity};

use super::bundle::PrekeyBundle;
use super::public::{KemPrekeyKind, KemPrekeyPublic, OneTimePrekeyPublic, SignedPrekeyPublic};
use super::replay::{ReplayMemory, ReplayTag};
use super::time::UnixTime;

/// Most one-time keys of one kind a device keeps; making more deletes the oldest.
pub const MAX_ONE_TIME_PREKEYS: usize = 1_000;
/// Most retired signed or last-resort keys kept (older ones are deleted even inside the
/// grace): 16 rotations of 2 days cover the 30-day grace.
pub const MAX_RETIRED_PREKEYS: usize = 16;
/// How far ids jump after a rollback, per generation the restored copy is behind: one
/// [`DevicePrekeys::execute`] makes at most two rotated keys and [`MAX_ONE_TIME_PREKEYS`]
/// one-time keys of each kind, so new keys never reuse an id made after the copy.
const IDS_PER_GENERATION: u64 = 2 + 2 * MAX_ONE_TIME_PREKEYS as u64;

/// A signed prekey with its private half and its dates.
#[derive(Clone)]
pub(super) struct SignedRecord {
    pub(super) public: SignedPrekeyPublic,
    pub(super) secret: X25519Secret,
    pub(super) created: UnixTime,
    pub(super) retired: Option<UnixTime>,
}

/// A KEM prekey with its private half and its dates.
#[derive(Clone)]
pub(super) struct KemRecord {
    pub(super) public: KemPrekeyPublic,
    pub(super) secret: KemSecret,
    pub(super) created: UnixTime,
    pub(super) retired: Option<UnixTime>,
}

/// The private prekeys of one device.
///
/// Not `Clone`: two copies would hand out the same one-time keys. Persist with
/// [`DevicePrekeys::to_bytes`].
#[derive(Default)]
pub struct DevicePrekeys {
    pub(super) next_id: u32,
    pub(super) signed: Vec<SignedRecord>,
    pub(super) last_resort: Vec<KemRecord>,
    pub(super) kem_one_time: BTreeMap<u32, KemRecord>,
    pub(super) one_time: BTreeMap<u32, X25519Secret>,
    /// Initial messages accepted without a one-time key, by the signed prekey they used.
    pub(super) seen_base_keys: BTreeMap<u32, ReplayMemory>,
    pub(super) generation: u64,
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
    /// The sender's X25519 identity key (`IK_A`), whose replay memory share this uses.
    pub(crate) sender: X25519Public,
}

impl PrekeyUse {
    /// Whether the message used a one-time key of either kind (deleted on use, so a replay
    /// fails on its own); otherwise the replay memory must refuse replays.
    fn uses_one_time(&self) -> bool {
        self.one_time_id.is_some() || self.kem_kind == KemPrekeyKind::OneTime
    }
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
    /// An initial message with this base key (or an equivalent encoding of it) was already
    /// accepted.
    #[error("initial message replayed")]
    ReplayedInitialMessage,
    /// This sender already has [`crate::MAX_SEEN_PER_SENDER`] initial messages without a
    /// one-time key remembered for this signed prekey; it may send more once the signed
    /// prekey rotates. Other senders are not affected.
    #[error("too many initial messages without one-time keys from this sender")]
    ReplayMemoryFull,
    /// The stored prekeys are older than the newest copy written (`expected`: the
    /// generation the client recorded where a restored backup cannot roll it back): they
    /// may hold one-time keys already used and an old replay memory. See
    /// [`DevicePrekeys::reset_after_rollback`].
    #[error("prekeys restored from an old copy (generation {stored} < {expected})")]
    RolledBack {
        /// The loaded copy's generation.
        stored: u64,
        /// The generation the client last wrote.
        expected: u64,
    },
    /// A primitive failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The stored prekeys are not a valid encoding.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

impl DevicePrekeys {
    /// An empty set (a fresh device): the first [`Self::plan`] asks for every kind of key.
    pub fn new() -> Self {
        Self { next_id: 1, ..Self::default() }
    }

    pub(super) fn current_signed(&self) -> Option<&SignedRecord> {
        self.signed.iter().rev().find(|r| r.retired.is_none())
    }

    pub(super) fn current_last_resort(&self) -> Option<&KemRecord> {
        self.last_resort.iter().rev().find(|r| r.retired.is_none())
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

    /// Ids of the one-time X25519 and KEM prekeys held, ascending: the whole one-time set an
    /// upload names, so the server drops public keys whose private halves are gone.
    pub fn one_time_ids(&self) -> (Vec<u32>, Vec<u32>) {
        (self.one_time.keys().copied().collect(), self.kem_one_time.keys().copied().collect())
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
        Ok(PrekeySecrets { signed, one_time, kem })
    }

    /// Refuses a replayed initial message that used no one-time key (`tag`: see
    /// [`ReplayTag`]), and a sender over its share of the replay memory. Changes nothing.
    pub(crate) fn check_replay(&self, u: &PrekeyUse, tag: &ReplayTag) -> Result<(), PrekeyError> {
        match self.seen_base_keys.get(&u.signed_id) {
            Some(seen) if !u.uses_one_time() => seen.check(&u.sender, tag),
            _ => Ok(()),
        }
    }

    /// Deletes the one-time keys an authenticated initial message used (PQXDH section 3.4:
    /// "Bob deletes any one-time prekey private key that was used"), or remembers it when
    /// it used none, so a replay is refused.
    pub(crate) fn consume(&mut self, u: &PrekeyUse, tag: ReplayTag) {
        self.generation = self.generation.wrapping_add(1);
        if let Some(id) = u.one_time_id {
            self.one_time.remove(&id);
        }
        if u.kem_kind == KemPrekeyKind::OneTime {
            self.kem_one_time.remove(&u.kem_id);
        }
        if !u.uses_one_time() {
            self.seen_base_keys.entry(u.signed_id).or_default().insert(u.sender, tag);
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
            seen.encode(w);
        }
    }

    /// Reads what [`Self::encode`] wrote; `format` 1 (before wire version 2) held raw base
    /// keys in the replay memory, which are dropped: the messages they guarded are refused
    /// by version now.
    pub(crate) fn decode(r: &mut Reader<'_>, format: u8) -> Result<Self, DecodeError> {
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
        let mut seen_base_keys: BTreeMap<u32, ReplayMemory> = BTreeMap::new();
        for _ in 0..r.count(MAX_RETIRED_PREKEYS + 1)? {
            let spk = r.u32()?;
            let ascending = seen_base_keys.last_key_value().is_none_or(|(&last, _)| spk > last);
            if !ascending || !signed.iter().any(|s: &SignedRecord| s.public.id == spk) {
                return Err(DecodeError::InvalidValue);
            }
            if format == 1 {
                let mut previous: Option<[u8; 32]> = None;
                for _ in 0..r.count(super::MAX_SEEN_BASE_KEYS)? {
                    let k: [u8; 32] = r.array()?;
                    if previous.is_some_and(|p| k <= p) {
                        return Err(DecodeError::InvalidValue);
                    }
                    previous = Some(k);
                }
            } else {
                seen_base_keys.insert(spk, ReplayMemory::decode(r)?);
            }
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

    /// Restores what [`Self::to_bytes`] wrote. Prefer [`Self::from_bytes_at_least`], which
    /// detects a copy restored from an old backup.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let (generation, format) = crate::state::read_header(&mut r, crate::state::StateKind::Prekeys)?;
        let mut p = Self::decode(&mut r, format)?;
        r.finish()?;
        p.generation = generation;
        Ok(p)
    }

    /// Restores the prekeys and refuses them ([`PrekeyError::RolledBack`]) if they are older
    /// than the newest copy written (`expected`: the generation the client recorded, in a
    /// place a restored backup cannot roll back), as [`crate::Session::from_bytes_at_least`]
    /// does for sessions. `u64::MAX` (the record was lost) refuses every copy.
    pub fn from_bytes_at_least(bytes: &[u8], expected: u64) -> Result<Self, PrekeyError> {
        let p = Self::from_bytes(bytes)?;
        if p.generation < expected {
            return Err(PrekeyError::RolledBack { stored: p.generation, expected });
        }
        Ok(p)
    }

    /// Makes a set restored from an old copy safe to use again: deletes every one-time
    /// private key (some may have been used since the copy), every signed and last-resort
    /// key with its replay memory (entries added since the copy are missing), moves the id
    /// counter past every id made since the copy (`expected`: the generation the client
    /// recorded; `u64::MAX` if unknown), and continues above `expected`. The next
    /// [`Self::plan`] then asks for a complete new set, which the server must take in place
    /// of the one-time keys it holds.
    pub fn reset_after_rollback(&mut self, expected: u64) {
        let behind = expected.saturating_sub(self.generation);
        let jump = behind.saturating_mul(IDS_PER_GENERATION).min(u64::from(u32::MAX / 2));
        let jump = u32::try_from(jump).unwrap_or(u32::MAX / 2);
        let next_id = self.next_id.wrapping_add(jump).max(1);
        let generation = if expected == u64::MAX { self.generation } else { expected };
        *self = Self { next_id, generation: generation.wrapping_add(1), ..Self::default() };
    }
}

#[cfg(test)]
impl DevicePrekeys {
    /// How many initial messages the replay memory of signed prekey `spk` holds.
    pub(crate) fn replay_memory_len(&self, spk: u32) -> usize {
        self.seen_base_keys.get(&spk).map_or(0, ReplayMemory::len)
    }

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
    use crate::prekeys::PrekeyPolicy;
    use rand_core::SeedableRng;

    #[test]
    fn replay_memory_asks_for_rotation_survives_storage_and_goes_with_its_key() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
        let id = DeviceIdentity::generate(&mut rng).unwrap();
        let policy = PrekeyPolicy::default();
        let mut p = DevicePrekeys::new();
        let plan = p.plan(UnixTime(0), &policy, 100, 100);
        p.execute(&mut rng, &id, UnixTime(0), &plan).unwrap();
        let spk = p.current_signed().unwrap().public.id;
        let lr = p.current_last_resort().unwrap().public.id;
        let use_of = |sender: u32| {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&sender.to_be_bytes());
            PrekeyUse {
                signed_id: spk,
                one_time_id: None,
                kem_id: lr,
                kem_kind: KemPrekeyKind::LastResort,
                sender: X25519Public::from_bytes(k).unwrap(),
            }
        };
        let tag = |i: u32| {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            ReplayTag::from_dh3(&Secret32(k))
        };
        for i in 0..(super::super::MAX_SEEN_BASE_KEYS / 2) as u32 {
            let u = use_of(i / 32);
            assert!(p.lookup(&u).is_ok());
            assert_eq!(p.check_replay(&u, &tag(i)), Ok(()));
            p.consume(&u, tag(i));
        }
        assert!(p.plan(UnixTime(1), &policy, 100, 100).rotate_signed, "half full: rotate");
        assert_eq!(p.check_replay(&use_of(999_999), &tag(0)), Err(PrekeyError::ReplayedInitialMessage));
        // Rotation gives the new signed prekey an empty memory; the old one keeps its own.
        let plan = p.plan(UnixTime(1), &policy, 100, 100);
        p.execute(&mut rng, &id, UnixTime(1), &plan).unwrap();
        let new_spk = p.current_signed().unwrap().public.id;
        assert_eq!(p.check_replay(&PrekeyUse { signed_id: new_spk, ..use_of(0) }, &tag(0)), Ok(()));
        assert_eq!(p.check_replay(&use_of(0), &tag(7)), Err(PrekeyError::ReplayedInitialMessage));
        // Saved and loaded, the memory survives; deleting the old key drops its memory.
        let mut q = DevicePrekeys::from_bytes(&p.to_bytes()).unwrap();
        assert_eq!(q.check_replay(&use_of(0), &tag(7)), Err(PrekeyError::ReplayedInitialMessage));
        let later = UnixTime(1 + policy.retired_grace_secs);
        let plan = q.plan(later, &policy, 100, 100);
        assert!(plan.delete_signed.contains(&spk));
        q.execute(&mut rng, &id, later, &plan).unwrap();
        assert!(!q.seen_base_keys.contains_key(&spk));
    }

    /// Issue 7 point 5: a copy older than the recorded generation is refused, and resetting
    /// it leaves no one-time key, no old signed prekey or replay memory, and no reused id.
    #[test]
    fn rolled_back_copies_are_refused_and_reset() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(6);
        let id = DeviceIdentity::generate(&mut rng).unwrap();
        let policy = PrekeyPolicy::default();
        let mut p = DevicePrekeys::new();
        let plan = p.plan(UnixTime(0), &policy, 0, 0);
        p.execute(&mut rng, &id, UnixTime(0), &plan).unwrap();
        let backup = p.to_bytes();
        let (old_gen, old_next) = (p.generation(), p.next_id);
        let plan = p.plan(UnixTime(0), &policy, 0, 0);
        p.execute(&mut rng, &id, UnixTime(0), &plan).unwrap();
        let used_up_to = p.next_id;
        let expected = p.generation();
        assert!(DevicePrekeys::from_bytes_at_least(&p.to_bytes(), expected).is_ok());
        assert_eq!(
            DevicePrekeys::from_bytes_at_least(&backup, expected).err(),
            Some(PrekeyError::RolledBack { stored: old_gen, expected })
        );
        let mut restored = DevicePrekeys::from_bytes(&backup).unwrap();
        assert_eq!(restored.next_id, old_next);
        restored.reset_after_rollback(expected);
        assert_eq!(restored.one_time_counts(), (0, 0));
        assert!(restored.signed.is_empty() && restored.last_resort.is_empty());
        assert!(restored.seen_base_keys.is_empty());
        assert!(restored.generation() > expected);
        assert!(restored.next_id >= used_up_to, "no id made after the copy is reused");
        let plan = restored.plan(UnixTime(0), &policy, 0, 0);
        assert!(plan.rotate_signed && plan.rotate_last_resort);
        let up = restored.execute(&mut rng, &id, UnixTime(0), &plan).unwrap();
        assert!(up.one_time.iter().all(|k| k.id >= used_up_to));
        assert!(DevicePrekeys::from_bytes_at_least(&restored.to_bytes(), expected).is_ok());
    }

    /// A set stored in format 1 (its replay memory held raw base keys) still loads; that
    /// memory is dropped, since the version 1 messages it guarded are refused now.
    #[test]
    fn format_1_replay_memory_is_dropped() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(8);
        let id = DeviceIdentity::generate(&mut rng).unwrap();
        let mut p = DevicePrekeys::new();
        let plan = p.plan(UnixTime(0), &PrekeyPolicy::default(), 100, 100);
        p.execute(&mut rng, &id, UnixTime(0), &plan).unwrap();
        let spk = p.current_signed().unwrap().public.id;
        let lr = p.current_last_resort().unwrap().public.id;
        let sender = *id.public().dh_key();
        let u = PrekeyUse {
            signed_id: spk,
            one_time_id: None,
            kem_id: lr,
            kem_kind: KemPrekeyKind::LastResort,
            sender,
        };
        p.consume(&u, ReplayTag::from_dh3(&Secret32([9; 32])));
        let v2 = p.to_bytes();
        // The tail is `u32 1 || u32 spk || u32 1 || tag (32) || sender (32)`; format 1 had
        // `u32 1 || u32 spk || u32 1 || base key (32)`.
        let mut v1 = v2[..v2.len() - 76].to_vec();
        v1[5] = 1;
        for part in [1u32, spk, 1] {
            v1.extend_from_slice(&part.to_be_bytes());
        }
        v1.extend_from_slice(sender.as_bytes());
        let q = DevicePrekeys::from_bytes(&v1).unwrap();
        assert_eq!(q.replay_memory_len(spk), 0);
        assert_eq!(q.generation(), p.generation());
        assert_eq!(q.check_replay(&u, &ReplayTag::from_dh3(&Secret32([9; 32]))), Ok(()));
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
        let q = DevicePrekeys::decode(&mut Reader::new(&w), 2).unwrap();
        let mut w2 = Vec::new();
        q.encode(&mut w2);
        assert_eq!(w, w2);
    }
}
