//! Prekeys as published: signed X25519, signed ML-KEM-1024 and one-time X25519 (PQXDH
//! section 3.2), with their encodings and signature checks.

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::CryptoError;
use crate::crypto::ed25519::Signature;
use crate::crypto::kem::KemPublic;
use crate::crypto::x25519::X25519Public;
use crate::identity::DevicePublic;

pub(crate) const SPK_LABEL: &[u8] = b"Tacit v1 signed prekey";
pub(crate) const KEM_LABEL: &[u8] = b"Tacit v1 kem prekey";

/// Which kind of KEM prekey a bundle carries.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
pub enum KemPrekeyKind {
    /// Handed out once, deleted after use.
    OneTime,
    /// Used when the one-time ones run out; rotated on the schedule.
    LastResort,
}

impl KemPrekeyKind {
    pub(crate) fn tag(self) -> u8 {
        match self {
            Self::OneTime => 1,
            Self::LastResort => 2,
        }
    }
    pub(super) fn from_tag(t: u8) -> Result<Self, DecodeError> {
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

    pub(super) fn signed_message(id: u32, key: &X25519Public) -> Vec<u8> {
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

    pub(super) fn signed_message(id: u32, kind: KemPrekeyKind, key: &KemPublic) -> Vec<u8> {
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
