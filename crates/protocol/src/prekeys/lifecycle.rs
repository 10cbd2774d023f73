//! The lifecycle planner: which prekeys to make, rotate and delete (PQXDH section 4.12-4.13).

use rand_core::{CryptoRng, RngCore};

use crate::crypto::CryptoError;
use crate::crypto::kem::KemSecret;
use crate::crypto::x25519::X25519Secret;
use crate::identity::DeviceIdentity;

use super::policy::PrekeyPolicy;
use super::public::{KemPrekeyKind, KemPrekeyPublic, OneTimePrekeyPublic, SignedPrekeyPublic};
use super::replay::MAX_SEEN_BASE_KEYS;
use super::store::{DevicePrekeys, KemRecord, MAX_ONE_TIME_PREKEYS, MAX_RETIRED_PREKEYS, SignedRecord};
use super::time::UnixTime;

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

impl DevicePrekeys {
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
}

fn trim_retired<T>(v: &mut Vec<T>, retired: impl Fn(&T) -> bool) {
    while v.iter().filter(|r| retired(r)).count() > MAX_RETIRED_PREKEYS {
        if let Some(pos) = v.iter().position(&retired) {
            v.remove(pos);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

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
}
