//! Account and device identities (after the per-device identity mode of Signal's Sesame
//! specification, section 2.3).
//!
//! An **account identity key** (Ed25519) is the account's root of trust: it signs the
//! account's device list and is what safety numbers are computed over. Every **device** has
//! its own identity: an Ed25519 signing key and an X25519 key that the signing key signs.
//! The X25519 key is the `IK` of PQXDH; the signing key signs the device's prekeys.

use core::fmt;

use rand_core::{CryptoRng, RngCore};
use thiserror::Error;

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::ed25519::{Signature, SigningKey, VerifyingKey};
use crate::crypto::x25519::{X25519Public, X25519Secret};
use crate::crypto::{CryptoError, Secret32};
use crate::state::{StateKind, read_header, write_header};
use zeroize::Zeroizing;

/// Domain separator for a device's signature over its own X25519 identity key.
const DEVICE_BINDING_LABEL: &[u8] = b"Tacit v1 device identity binding";

/// Why an account name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NameError {
    /// Shorter than 3 or longer than 32 characters.
    #[error("account names have 3 to 32 characters")]
    BadLength,
    /// A character outside lowercase ASCII letters, digits, '.', '_' and '-'.
    #[error("account names use only a-z, 0-9, '.', '_' and '-'")]
    BadCharacter,
}

/// An account name: unique per server, 3 to 32 of `a-z 0-9 . _ -`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountName(String);

impl AccountName {
    /// Shortest allowed name.
    pub const MIN_LEN: usize = 3;
    /// Longest allowed name.
    pub const MAX_LEN: usize = 32;

    /// Validates a name.
    pub fn new(name: &str) -> Result<Self, NameError> {
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&name.len()) {
            return Err(NameError::BadLength);
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(NameError::BadCharacter);
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn encode(&self, w: &mut impl Writer) {
        // At most 32 bytes: one length byte.
        w.put_u8(u8::try_from(self.0.len()).unwrap_or(u8::MAX));
        w.put(self.0.as_bytes());
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = usize::from(r.u8()?);
        let bytes = r.take(n)?;
        let s = core::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidValue)?;
        Self::new(s).map_err(|_| DecodeError::InvalidValue)
    }
}

impl fmt::Debug for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A device number within an account (never zero).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct DeviceId(u32);

impl DeviceId {
    /// Wraps a non-zero device number.
    pub fn new(id: u32) -> Option<Self> {
        (id != 0).then_some(Self(id))
    }
    /// The number.
    pub fn get(self) -> u32 {
        self.0
    }
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Self::new(r.u32()?).ok_or(DecodeError::InvalidValue)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a device is reached: its account name and device number.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct DeviceAddress {
    /// The account.
    pub account: AccountName,
    /// The device within it.
    pub device: DeviceId,
}

impl DeviceAddress {
    pub(crate) fn encode(&self, w: &mut impl Writer) {
        self.account.encode(w);
        w.put_u32(self.device.0);
    }
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self { account: AccountName::decode(r)?, device: DeviceId::decode(r)? })
    }
}

/// An account's public identity key (Ed25519).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct AccountKey(pub(crate) VerifyingKey);

impl AccountKey {
    /// Parses and validates the 32-byte encoding.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, CryptoError> {
        VerifyingKey::from_bytes(bytes).map(Self)
    }
    /// The 32-byte encoding.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Self::from_bytes(r.array()?).map_err(|_| DecodeError::InvalidValue)
    }
}

/// An account's private identity key. Held by the account's primary device.
#[derive(Clone)]
pub struct AccountIdentity {
    key: SigningKey,
}

impl AccountIdentity {
    /// Generates a new account identity from the caller's RNG.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Result<Self, CryptoError> {
        Ok(Self { key: SigningKey::generate(rng)? })
    }

    /// The public half.
    pub fn public(&self) -> AccountKey {
        AccountKey(*self.key.public())
    }

    pub(crate) fn sign(&self, message: &[u8]) -> Signature {
        self.key.sign(message)
    }

    pub(crate) fn encode(&self, w: &mut impl Writer) {
        w.put(self.key.seed().expose());
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let seed = Secret32(r.array()?);
        Ok(Self { key: SigningKey::from_seed(seed).map_err(|_| DecodeError::InvalidValue)? })
    }

    /// Serialises the private key (secret: keep it in the encrypted store).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Zeroizing::new(Vec::with_capacity(48));
        write_header(&mut *w, StateKind::AccountIdentity, 0);
        self.encode(&mut *w);
        w
    }

    /// Restores what [`Self::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        read_header(&mut r, StateKind::AccountIdentity)?;
        let id = Self::decode(&mut r)?;
        r.finish()?;
        Ok(id)
    }
}

/// The public identity of one device: its signing key, its X25519 identity key and the
/// signing key's signature over the X25519 key. Holding a value of this type means the
/// binding signature has been verified.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DevicePublic {
    signing: VerifyingKey,
    dh: X25519Public,
    binding: Signature,
}

impl DevicePublic {
    /// Encoded length: signing key, X25519 key, signature.
    pub const LEN: usize = 32 + 32 + 64;

    /// The device's Ed25519 signing key (signs its prekeys).
    pub fn signing_key(&self) -> &VerifyingKey {
        &self.signing
    }
    /// The device's X25519 identity key (PQXDH's `IK`).
    pub fn dh_key(&self) -> &X25519Public {
        &self.dh
    }

    fn binding_message(signing: &VerifyingKey, dh: &X25519Public) -> [u8; 32 + 32 + 32] {
        let mut m = [0u8; 96];
        let (label, rest) = m.split_at_mut(32);
        label.copy_from_slice(DEVICE_BINDING_LABEL);
        let (a, b) = rest.split_at_mut(32);
        a.copy_from_slice(signing.as_bytes());
        b.copy_from_slice(dh.as_bytes());
        m
    }

    /// Appends the 128-byte encoding.
    pub(crate) fn encode(&self, w: &mut impl Writer) {
        w.put(self.signing.as_bytes());
        w.put(self.dh.as_bytes());
        w.put(self.binding.as_bytes());
    }

    /// The 128-byte encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::LEN);
        self.encode(&mut v);
        v
    }

    /// Decodes and verifies the binding signature.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let d = Self::decode_unverified(r)?;
        d.verify_binding().map_err(|_| DecodeError::InvalidValue)?;
        Ok(d)
    }

    /// Checks the signing key's signature over the X25519 identity key.
    pub(crate) fn verify_binding(&self) -> Result<(), CryptoError> {
        self.signing.verify(&Self::binding_message(&self.signing, &self.dh), &self.binding)
    }

    /// Decodes without checking the binding signature. Only for a caller that verifies the
    /// binding before the value leaves it (device lists) or that reads state this device
    /// wrote itself from an identity it had verified (stored sessions): everything handed
    /// out as a `DevicePublic` has a verified binding.
    pub(crate) fn decode_unverified(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let signing = VerifyingKey::from_bytes(r.array()?).map_err(|_| DecodeError::InvalidValue)?;
        let dh = X25519Public::from_bytes(r.array()?).map_err(|_| DecodeError::InvalidValue)?;
        Ok(Self { signing, dh, binding: Signature::from_bytes(r.array()?) })
    }

    /// Parses and verifies a 128-byte encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let d = Self::decode(&mut r)?;
        r.finish()?;
        Ok(d)
    }
}

/// A device's private identity: its signing key and X25519 identity key.
#[derive(Clone)]
pub struct DeviceIdentity {
    signing: SigningKey,
    dh: X25519Secret,
    public: DevicePublic,
}

impl DeviceIdentity {
    /// Generates a device identity from the caller's RNG.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Result<Self, CryptoError> {
        let signing = SigningKey::generate(rng)?;
        let dh = X25519Secret::generate(rng)?;
        Ok(Self::assemble(signing, dh))
    }

    fn assemble(signing: SigningKey, dh: X25519Secret) -> Self {
        let binding = signing.sign(&DevicePublic::binding_message(signing.public(), dh.public()));
        let public = DevicePublic { signing: *signing.public(), dh: *dh.public(), binding };
        Self { signing, dh, public }
    }

    /// The public identity.
    pub fn public(&self) -> &DevicePublic {
        &self.public
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// Signs a server authentication challenge: `message` must be a `tacit-api`
    /// `auth_message`, whose length-prefixed label (`u32 13 || "Tacit v1 auth"`) keeps it
    /// apart from every protocol signature (those start with a bare ASCII label). Anything
    /// else is refused ([`CryptoError::BadSignature`]), so this cannot sign prekeys or bindings.
    pub fn sign_auth_message(&self, message: &[u8]) -> Result<Signature, CryptoError> {
        const AUTH_PREFIX: &[u8] = b"\x00\x00\x00\x0dTacit v1 auth";
        if !message.starts_with(AUTH_PREFIX) {
            return Err(CryptoError::BadSignature);
        }
        Ok(self.signing.sign(message))
    }

    /// The device's Ed25519 signing key in the form MLS libraries take a signature private
    /// key (RFC 8032 seed followed by the public key, 64 bytes), for the device's leaf in
    /// MLS groups (tacit-groups). The leaf's signature key is then the device's own signing
    /// key, which the account-signed device list already names, so a leaf is bound to its
    /// device without a second key or certificate.
    ///
    /// Why sharing the key is safe: MLS signs only `SignWithLabel` content (RFC 9420
    /// §5.1.2), which starts with the length of `"MLS 1.0 " || Label` as a variable-length
    /// integer (one byte from 0x08 to 0x3f: the prefix alone is 8 bytes and every label RFC
    /// 9420 defines keeps the whole under 64), then `"MLS 1.0 "`; every Tacit signature
    /// starts with `"Tacit v"` (byte 0x54) or `u32 13 || "Tacit v1 auth"` (byte 0x00): no
    /// message one of them signs can be a message the other signs. A new Tacit signature
    /// must keep to those two starts (the test `mls_and_tacit_signatures_are_disjoint`).
    pub fn mls_signature_key(&self) -> Zeroizing<Vec<u8>> {
        let mut k = Zeroizing::new(Vec::with_capacity(64));
        k.extend_from_slice(self.signing.seed().expose());
        k.extend_from_slice(self.public.signing.as_bytes());
        k
    }

    pub(crate) fn dh(&self) -> &X25519Secret {
        &self.dh
    }

    pub(crate) fn encode(&self, w: &mut impl Writer) {
        w.put(self.signing.seed().expose());
        w.put(self.dh.secret_bytes().expose());
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let signing = SigningKey::from_seed(Secret32(r.array()?)).map_err(|_| DecodeError::InvalidValue)?;
        let dh = X25519Secret::from_bytes(Secret32(r.array()?)).map_err(|_| DecodeError::InvalidValue)?;
        Ok(Self::assemble(signing, dh))
    }

    /// Serialises the private keys (secret: keep it in the encrypted store).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Zeroizing::new(Vec::with_capacity(80));
        write_header(&mut *w, StateKind::DeviceIdentity, 0);
        self.encode(&mut *w);
        w
    }

    /// Restores what [`Self::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        read_header(&mut r, StateKind::DeviceIdentity)?;
        let id = Self::decode(&mut r)?;
        r.finish()?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    #[test]
    fn names() {
        assert!(AccountName::new("alice").is_ok());
        assert!(AccountName::new("a.b_c-9").is_ok());
        assert_eq!(AccountName::new("al"), Err(NameError::BadLength));
        assert_eq!(AccountName::new(&"a".repeat(33)), Err(NameError::BadLength));
        assert_eq!(AccountName::new("Alice"), Err(NameError::BadCharacter));
        assert_eq!(AccountName::new("al ce"), Err(NameError::BadCharacter));
    }

    #[test]
    fn auth_signatures_only_over_auth_messages() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        let d = DeviceIdentity::generate(&mut rng).unwrap();
        let mut m = 13u32.to_be_bytes().to_vec();
        m.extend_from_slice(b"Tacit v1 auth");
        m.extend_from_slice(b"rest");
        let sig = d.sign_auth_message(&m).unwrap();
        d.public().signing_key().verify(&m, &sig).unwrap();
        assert!(d.sign_auth_message(b"Tacit v1 signed prekey").is_err());
    }

    #[test]
    fn mls_and_tacit_signatures_are_disjoint() {
        // Every label this crate signs under starts with "Tacit v"; MLS content starts
        // with a length byte in 0x08..0x40.
        for label in [
            DEVICE_BINDING_LABEL,
            crate::device_list::LABEL,
            crate::device_list::ROTATION_LABEL,
            crate::prekeys::public::SPK_LABEL,
            crate::prekeys::public::KEM_LABEL,
        ] {
            assert!(label.starts_with(b"Tacit v"), "{label:?}");
        }
        for label in ["LeafNodeTBS", "KeyPackageTBS", "FramedContentTBS", "GroupInfoTBS"] {
            let len = 8 + label.len();
            assert!((0x08..0x40).contains(&len));
        }
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let d = DeviceIdentity::generate(&mut rng).unwrap();
        let k = d.mls_signature_key();
        assert_eq!(&k[..32], d.signing_key().seed().expose());
        assert_eq!(&k[32..], d.public().signing_key().as_bytes());
    }

    #[test]
    fn device_public_round_trip_and_forgery() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let d = DeviceIdentity::generate(&mut rng).unwrap();
        let bytes = d.public().to_bytes();
        assert_eq!(DevicePublic::from_bytes(&bytes).unwrap(), *d.public());
        let other = DeviceIdentity::generate(&mut rng).unwrap();
        let mut forged = bytes.clone();
        forged[32..64].copy_from_slice(other.public().dh_key().as_bytes());
        assert!(DevicePublic::from_bytes(&forged).is_err());
    }
}
