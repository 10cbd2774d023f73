//! Signed device lists (Sesame's per-device identity mode, with the account key as the
//! signer): the account identity key signs a versioned list of the account's devices.
//!
//! A client keeps the last list it accepted for each contact and refuses any list that is
//! not signed by the same account key, names another account, or goes back in version
//! (rollback) or forks it (same version, different content). Adding and revoking devices
//! are new versions of the list; the safety number, computed over the account key alone,
//! stays the same.

use thiserror::Error;

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::ed25519::Signature;
use crate::identity::{AccountIdentity, AccountKey, AccountName, DeviceAddress, DeviceId, DevicePublic};

pub(crate) const LABEL: &[u8] = b"Tacit v1 device list";
pub(crate) const ROTATION_LABEL: &[u8] = b"Tacit v1 account key rotation";
/// Format version of the encoding: 2 adds each device's flags, time added and label.
/// Version 1 (id and identity only) is still read, as lists stored before it.
const FORMAT_VERSION: u8 = 2;
const FORMAT_VERSION_1: u8 = 1;
/// Most devices one account may list.
pub const MAX_DEVICES: usize = 32;
/// Longest device label, in bytes of UTF-8.
pub const MAX_DEVICE_LABEL_BYTES: usize = 64;
/// Flag bit: the device holds the account identity key (it may approve and revoke devices).
const FLAG_APPROVER: u8 = 1;

/// One device in a list.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DeviceEntry {
    /// The device's number.
    pub id: DeviceId,
    /// The device's identity.
    pub identity: DevicePublic,
    /// The device holds the account identity key.
    pub approver: bool,
    /// When the approving device added it (its clock, milliseconds since the Unix epoch;
    /// 0 in lists of format 1).
    pub added_ms: u64,
    /// The name its user gave it (at most [`MAX_DEVICE_LABEL_BYTES`], no control
    /// characters; signed, and visible to the server and to contacts).
    pub label: String,
}

impl DeviceEntry {
    /// An entry with no label, added at time 0, not an approver.
    pub fn new(id: DeviceId, identity: DevicePublic) -> Self {
        Self { id, identity, approver: false, added_ms: 0, label: String::new() }
    }
}

/// Whether `label` may name a device: at most [`MAX_DEVICE_LABEL_BYTES`] bytes and no control
/// characters (a label is printed on contacts' terminals).
pub fn valid_device_label(label: &str) -> bool {
    label.len() <= MAX_DEVICE_LABEL_BYTES && !label.chars().any(char::is_control)
}

/// A device whose identity the caller has verified: made by [`DeviceList::verified_device`]
/// from an account-signed, verified device list, which is what [`crate::Session::initiate`]
/// and [`crate::Session::accept`] require, so a session cannot be set up with a key the
/// server chose.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VerifiedDevice {
    address: DeviceAddress,
    identity: DevicePublic,
}

impl VerifiedDevice {
    /// The device's address.
    pub fn address(&self) -> &DeviceAddress {
        &self.address
    }

    /// The device's identity.
    pub fn identity(&self) -> &DevicePublic {
        &self.identity
    }

    /// Trusts `identity` for `address` without a device list. Only for callers that
    /// verified it some other way (tests, a pinned identity): the name says what it costs.
    pub fn dangerous_assume_verified(address: DeviceAddress, identity: DevicePublic) -> Self {
        Self { address, identity }
    }
}

/// Why a device list was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DeviceListError {
    /// The bytes are not a device list.
    #[error("malformed device list: {0}")]
    Decode(#[from] DecodeError),
    /// The account key's signature does not verify.
    #[error("device list signature does not verify")]
    BadSignature,
    /// The list names a different account than the one asked for.
    #[error("device list is for another account")]
    WrongAccount,
    /// The list is signed by a different account key than the one known for this account.
    #[error("account identity key changed")]
    AccountKeyChanged,
    /// The list is older than one already accepted.
    #[error("device list version {got} is older than accepted version {have}")]
    Rollback {
        /// The version already accepted.
        have: u64,
        /// The version offered.
        got: u64,
    },
    /// Same version as the accepted list but different content: the server equivocates.
    #[error("two different device lists with the same version")]
    Forked,
    /// A device's signing key did not sign its X25519 identity key.
    #[error("a device's identity binding does not verify")]
    BadDeviceBinding,
    /// The same device number appears twice.
    #[error("duplicate device id")]
    DuplicateDevice,
    /// One device identity (its signing key or its X25519 identity key) under two ids.
    #[error("one device identity is listed under two device ids")]
    DuplicateIdentity,
    /// No device, or more than [`MAX_DEVICES`].
    #[error("a device list has 1 to {MAX_DEVICES} devices")]
    BadDeviceCount,
    /// A label too long, not UTF-8 or with control characters, or unknown flag bits.
    #[error("a device entry has a bad label or unknown flags")]
    BadEntry,
    /// No device holds the account key.
    #[error("no device in the list holds the account key")]
    NoApprover,
    /// An account key rotation whose signature by the previous key does not verify.
    #[error("the account key rotation is not signed by the previous account key")]
    BadRotation,
}

/// A verified, signed device list.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DeviceList {
    account: AccountName,
    account_key: AccountKey,
    version: u64,
    devices: Vec<DeviceEntry>,
    signature: Signature,
    format: u8,
}

impl DeviceList {
    /// The signed part in `format` (2, or 1 for lists stored before format 2: no flags, time
    /// or label).
    fn signed_part(
        format: u8,
        account: &AccountName,
        key: &AccountKey,
        version: u64,
        devices: &[DeviceEntry],
    ) -> Vec<u8> {
        let mut w = Vec::with_capacity(64 + devices.len() * (4 + DevicePublic::LEN));
        w.put_u8(format);
        w.put(LABEL);
        account.encode(&mut w);
        w.put(key.as_bytes());
        w.put_u64(version);
        w.put_count(devices.len());
        for d in devices {
            w.put_u32(d.id.get());
            d.identity.encode(&mut w);
            if format != FORMAT_VERSION_1 {
                w.put_u8(if d.approver { FLAG_APPROVER } else { 0 });
                w.put_u64(d.added_ms);
                w.put_u8(u8::try_from(d.label.len()).unwrap_or(u8::MAX));
                w.put(d.label.as_bytes());
            }
        }
        w
    }

    fn check_devices(devices: &[DeviceEntry]) -> Result<(), DeviceListError> {
        if devices.is_empty() || devices.len() > MAX_DEVICES {
            return Err(DeviceListError::BadDeviceCount);
        }
        if devices.iter().any(|d| !valid_device_label(&d.label)) {
            return Err(DeviceListError::BadEntry);
        }
        let mut ids: Vec<u32> = devices.iter().map(|d| d.id.get()).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != devices.len() {
            return Err(DeviceListError::DuplicateDevice);
        }
        // One device standing for two (either key repeated) would let a copy of a device, or
        // a list the server reshuffled, receive twice under two names: refused.
        let distinct = |key: fn(&DeviceEntry) -> [u8; 32]| {
            let mut keys: Vec<[u8; 32]> = devices.iter().map(key).collect();
            keys.sort_unstable();
            keys.dedup();
            keys.len() == devices.len()
        };
        if !distinct(|d| *d.identity.signing_key().as_bytes())
            || !distinct(|d| *d.identity.dh_key().as_bytes())
        {
            return Err(DeviceListError::DuplicateIdentity);
        }
        Ok(())
    }

    /// Signs a new list with the account identity. At least one device must be an approver
    /// (hold the account key), or nobody could change the list again.
    pub fn sign(
        identity: &AccountIdentity,
        account: AccountName,
        version: u64,
        devices: Vec<DeviceEntry>,
    ) -> Result<Self, DeviceListError> {
        Self::check_devices(&devices)?;
        if !devices.iter().any(|d| d.approver) {
            return Err(DeviceListError::NoApprover);
        }
        let account_key = identity.public();
        let signature =
            identity.sign(&Self::signed_part(FORMAT_VERSION, &account, &account_key, version, &devices));
        Ok(Self { account, account_key, version, devices, signature, format: FORMAT_VERSION })
    }

    /// Encodes the list and its signature (in the format it was signed in).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w =
            Self::signed_part(self.format, &self.account, &self.account_key, self.version, &self.devices);
        w.put(self.signature.as_bytes());
        w
    }

    fn rotation_message(list_bytes: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(ROTATION_LABEL.len() + list_bytes.len());
        m.put(ROTATION_LABEL);
        m.put(list_bytes);
        m
    }

    /// The previous account key's signature over an encoded list signed by a new account key:
    /// "Tacit v1 account key rotation" || list bytes. It shows the server (which refuses a
    /// rotation without it) that a holder of the current key made the change; contacts still
    /// treat the new key as an identity change (a revoked device that held the old key could
    /// sign a rotation too).
    pub fn sign_rotation(previous: &AccountIdentity, list_bytes: &[u8]) -> Signature {
        previous.sign(&Self::rotation_message(list_bytes))
    }

    /// Checks [`Self::sign_rotation`]'s signature.
    pub fn verify_rotation(
        previous: &AccountKey,
        list_bytes: &[u8],
        signature: &Signature,
    ) -> Result<(), DeviceListError> {
        previous
            .0
            .verify(&Self::rotation_message(list_bytes), signature)
            .map_err(|_| DeviceListError::BadRotation)
    }

    /// The devices that hold the account key.
    pub fn approvers(&self) -> impl Iterator<Item = &DeviceEntry> + '_ {
        self.devices.iter().filter(|d| d.approver)
    }

    /// One device's entry.
    pub fn entry(&self, id: DeviceId) -> Option<&DeviceEntry> {
        self.devices.iter().find(|d| d.id == id)
    }

    /// Decodes and verifies a list for `account`. `known_key` is the account key already
    /// trusted for it (pinned, verified, or from key transparency); `previous` the last list
    /// accepted. Every device's identity binding is verified too.
    pub fn verify(
        bytes: &[u8],
        account: &AccountName,
        known_key: Option<&AccountKey>,
        previous: Option<&DeviceList>,
    ) -> Result<Self, DeviceListError> {
        let mut r = Reader::new(bytes);
        let format = r.u8()?;
        if format != FORMAT_VERSION && format != FORMAT_VERSION_1 {
            return Err(DecodeError::UnknownVersion(format).into());
        }
        if r.take(LABEL.len())? != LABEL {
            return Err(DecodeError::InvalidValue.into());
        }
        let name = AccountName::decode(&mut r)?;
        let account_key = AccountKey::decode(&mut r)?;
        let version = r.u64()?;
        let n = r.count(MAX_DEVICES)?;
        let mut devices = Vec::with_capacity(n);
        for _ in 0..n {
            let id = DeviceId::decode(&mut r)?;
            let identity = DevicePublic::decode_unverified(&mut r)?;
            if format == FORMAT_VERSION_1 {
                // Format 1 lists were only ever made for an account's first device, which
                // holds the account key.
                devices.push(DeviceEntry { approver: id.get() == 1, ..DeviceEntry::new(id, identity) });
                continue;
            }
            let flags = r.u8()?;
            if flags & !FLAG_APPROVER != 0 {
                return Err(DeviceListError::BadEntry);
            }
            let added_ms = r.u64()?;
            let len = usize::from(r.u8()?);
            if len > MAX_DEVICE_LABEL_BYTES {
                return Err(DeviceListError::BadEntry);
            }
            let label = String::from_utf8(r.take(len)?.to_vec()).map_err(|_| DeviceListError::BadEntry)?;
            devices.push(DeviceEntry { id, identity, approver: flags & FLAG_APPROVER != 0, added_ms, label });
        }
        let signed_len = bytes.len().saturating_sub(r.rest().len());
        let mut sig_reader = Reader::new(bytes.get(signed_len..).unwrap_or_default());
        let signature = Signature::from_bytes(sig_reader.array()?);
        sig_reader.finish()?;
        if name != *account {
            return Err(DeviceListError::WrongAccount);
        }
        if known_key.is_some_and(|k| *k != account_key) {
            return Err(DeviceListError::AccountKeyChanged);
        }
        Self::check_devices(&devices)?;
        // The account's signature first: nothing else is worth checking on a forgery.
        account_key
            .0
            .verify(bytes.get(..signed_len).unwrap_or_default(), &signature)
            .map_err(|_| DeviceListError::BadSignature)?;
        for d in &devices {
            d.identity.verify_binding().map_err(|_| DeviceListError::BadDeviceBinding)?;
        }
        if !devices.iter().any(|d| d.approver) {
            return Err(DeviceListError::NoApprover);
        }
        let list = Self { account: name, account_key, version, devices, signature, format };
        if let Some(prev) = previous {
            if prev.account_key != list.account_key {
                return Err(DeviceListError::AccountKeyChanged);
            }
            if list.version < prev.version {
                return Err(DeviceListError::Rollback { have: prev.version, got: list.version });
            }
            if list.version == prev.version && list.devices != prev.devices {
                return Err(DeviceListError::Forked);
            }
        }
        Ok(list)
    }

    /// The account.
    pub fn account(&self) -> &AccountName {
        &self.account
    }
    /// The account key that signed the list.
    pub fn account_key(&self) -> &AccountKey {
        &self.account_key
    }
    /// The list's version.
    pub fn version(&self) -> u64 {
        self.version
    }
    /// The devices.
    pub fn devices(&self) -> &[DeviceEntry] {
        &self.devices
    }
    /// One device's identity.
    pub fn device(&self, id: DeviceId) -> Option<&DevicePublic> {
        self.devices.iter().find(|d| d.id == id).map(|d| &d.identity)
    }

    /// One device, as the verified identity sessions require.
    pub fn verified_device(&self, id: DeviceId) -> Option<VerifiedDevice> {
        let identity = self.device(id)?.clone();
        Some(VerifiedDevice {
            address: DeviceAddress { account: self.account.clone(), device: id },
            identity,
        })
    }

    /// Every device, as verified identities (for fan-out to all of an account's devices).
    pub fn verified_devices(&self) -> impl Iterator<Item = VerifiedDevice> + '_ {
        self.devices.iter().map(|d| VerifiedDevice {
            address: DeviceAddress { account: self.account.clone(), device: d.id },
            identity: d.identity.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DeviceIdentity;
    use rand_core::SeedableRng;

    #[test]
    fn sign_verify_rollback_fork() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
        let acct = AccountIdentity::generate(&mut rng).unwrap();
        let name = AccountName::new("carol").unwrap();
        let d1 = DeviceEntry {
            approver: true,
            ..DeviceEntry::new(
                DeviceId::new(1).unwrap(),
                DeviceIdentity::generate(&mut rng).unwrap().public().clone(),
            )
        };
        let d2 = DeviceEntry {
            approver: true,
            ..DeviceEntry::new(
                DeviceId::new(2).unwrap(),
                DeviceIdentity::generate(&mut rng).unwrap().public().clone(),
            )
        };
        let v1 = DeviceList::sign(&acct, name.clone(), 1, vec![d1.clone()]).unwrap();
        let l1 = DeviceList::verify(&v1.to_bytes(), &name, Some(&acct.public()), None).unwrap();
        assert_eq!(l1, v1);
        let v2 = DeviceList::sign(&acct, name.clone(), 2, vec![d1.clone(), d2.clone()]).unwrap();
        let l2 = DeviceList::verify(&v2.to_bytes(), &name, None, Some(&l1)).unwrap();
        assert_eq!(
            DeviceList::verify(&v1.to_bytes(), &name, None, Some(&l2)),
            Err(DeviceListError::Rollback { have: 2, got: 1 })
        );
        let fork = DeviceList::sign(&acct, name.clone(), 2, vec![d2.clone()]).unwrap();
        assert_eq!(
            DeviceList::verify(&fork.to_bytes(), &name, None, Some(&l2)),
            Err(DeviceListError::Forked)
        );
        let other = AccountIdentity::generate(&mut rng).unwrap();
        let swapped = DeviceList::sign(&other, name.clone(), 3, vec![d1.clone()]).unwrap();
        assert_eq!(
            DeviceList::verify(&swapped.to_bytes(), &name, Some(&acct.public()), None),
            Err(DeviceListError::AccountKeyChanged)
        );
        assert_eq!(
            DeviceList::verify(&v1.to_bytes(), &AccountName::new("dave").unwrap(), None, None),
            Err(DeviceListError::WrongAccount)
        );
        let mut bytes = v2.to_bytes();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(DeviceList::verify(&bytes, &name, None, None), Err(DeviceListError::BadSignature));
        assert_eq!(
            DeviceList::sign(&acct, name.clone(), 4, vec![d1.clone(), d1.clone()]),
            Err(DeviceListError::DuplicateDevice)
        );
        // The same identity under a second id: one device cannot stand for two.
        let twin = DeviceEntry { id: DeviceId::new(9).unwrap(), approver: false, ..d1.clone() };
        assert_eq!(DeviceList::sign(&acct, name, 4, vec![d1, twin]), Err(DeviceListError::DuplicateIdentity));
    }

    #[test]
    fn format_2_entries_and_refusals() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(10);
        let acct = AccountIdentity::generate(&mut rng).unwrap();
        let name = AccountName::new("carol").unwrap();
        let dev = |rng: &mut rand_chacha::ChaCha20Rng, id: u32| {
            DeviceEntry::new(
                DeviceId::new(id).unwrap(),
                DeviceIdentity::generate(rng).unwrap().public().clone(),
            )
        };
        let d1 = DeviceEntry { approver: true, label: "laptop".into(), added_ms: 5, ..dev(&mut rng, 1) };
        let d2 = DeviceEntry { label: "téléphone".into(), added_ms: 9, ..dev(&mut rng, 2) };
        let list = DeviceList::sign(&acct, name.clone(), 1, vec![d1.clone(), d2.clone()]).unwrap();
        let back = DeviceList::verify(&list.to_bytes(), &name, Some(&acct.public()), None).unwrap();
        assert_eq!(back.devices(), &[d1.clone(), d2.clone()]);
        assert_eq!(back.approvers().map(|d| d.id.get()).collect::<Vec<_>>(), vec![1]);
        assert_eq!(back.entry(DeviceId::new(2).unwrap()).map(|e| e.label.as_str()), Some("téléphone"));

        // Signing refuses what verifying refuses.
        assert_eq!(
            DeviceList::sign(&acct, name.clone(), 2, vec![DeviceEntry { approver: false, ..d1.clone() }]),
            Err(DeviceListError::NoApprover)
        );
        for label in ["a\nb".to_string(), "x".repeat(MAX_DEVICE_LABEL_BYTES + 1), "\u{85}".to_string()] {
            let bad = DeviceEntry { label, ..d2.clone() };
            assert_eq!(
                DeviceList::sign(&acct, name.clone(), 2, vec![d1.clone(), bad]),
                Err(DeviceListError::BadEntry)
            );
        }
        assert!(valid_device_label(&"é".repeat(32)));
        assert!(!valid_device_label(&"é".repeat(33)));

        // Bytes changed under a valid signature are refused as entries before the signature
        // is checked: unknown flags, a label length over the limit, bad UTF-8. The entry of
        // device 2 starts after the header and device 1's entry.
        let bytes = list.to_bytes();
        let e2 = 1 + LABEL.len() + 6 + 32 + 8 + 4 + (4 + DevicePublic::LEN + 1 + 8 + 1 + 6);
        let flags_at = e2 + 4 + DevicePublic::LEN;
        let len_at = flags_at + 1 + 8;
        let mut flags = bytes.clone();
        flags[flags_at] = 0x80;
        assert_eq!(DeviceList::verify(&flags, &name, None, None), Err(DeviceListError::BadEntry));
        let mut long = bytes.clone();
        long[len_at] = 65;
        assert_eq!(DeviceList::verify(&long, &name, None, None), Err(DeviceListError::BadEntry));
        let mut utf8 = bytes.clone();
        utf8[len_at + 2] = 0xff;
        assert_eq!(DeviceList::verify(&utf8, &name, None, None), Err(DeviceListError::BadEntry));
        // Positive control: the approver flag of device 2 set is only a bad signature.
        let mut approver = bytes.clone();
        approver[flags_at] = 1;
        assert_eq!(DeviceList::verify(&approver, &name, None, None), Err(DeviceListError::BadSignature));

        // Rotation: the previous key signs the new list.
        let next = AccountIdentity::generate(&mut rng).unwrap();
        let rotated = DeviceList::sign(&next, name.clone(), 2, vec![d1.clone()]).unwrap().to_bytes();
        let sig = DeviceList::sign_rotation(&acct, &rotated);
        DeviceList::verify_rotation(&acct.public(), &rotated, &sig).unwrap();
        assert_eq!(
            DeviceList::verify_rotation(&next.public(), &rotated, &sig),
            Err(DeviceListError::BadRotation)
        );
        assert_eq!(
            DeviceList::verify_rotation(&acct.public(), &bytes, &sig),
            Err(DeviceListError::BadRotation)
        );
        // A plain list signature is not a rotation signature.
        let plain = acct.sign(&rotated);
        assert_eq!(
            DeviceList::verify_rotation(&acct.public(), &rotated, &plain),
            Err(DeviceListError::BadRotation)
        );
    }
}
