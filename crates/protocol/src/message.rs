//! Tacit's versioned wire format for 1:1 messages (documented field by field in
//! `docs/PROTOCOL.md`).
//!
//! Every message starts with a version byte and a type byte. Version 2 is PQXDH plus the
//! classical Double Ratchet with the initial message's PQXDH fields bound into the
//! associated data (version 1, without that binding, is refused); a later post-quantum
//! ratchet gets a new version.

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::aead::TAG_LEN;
use crate::crypto::kem::{CIPHERTEXT_LEN, KemCiphertext};
use crate::crypto::x25519::X25519Public;
use crate::padding::{MAX_PADDED_LEN, MIN_PADDED_LEN};
use crate::prekeys::KemPrekeyKind;

/// The wire format version this build writes and reads.
pub const PROTOCOL_VERSION: u8 = 2;
const TYPE_RATCHET: u8 = 1;
const TYPE_PREKEY: u8 = 2;

/// Encoded length of a ratchet header: version, type, ratchet key, `PN`, `N`.
pub const HEADER_LEN: usize = 1 + 1 + 32 + 4 + 4;
/// Smallest ciphertext: the smallest padding bucket plus the tag.
pub const MIN_CIPHERTEXT_LEN: usize = MIN_PADDED_LEN + TAG_LEN;
/// Largest ciphertext: the largest padding bucket plus the tag.
pub const MAX_CIPHERTEXT_LEN: usize = MAX_PADDED_LEN + TAG_LEN;

/// A Double Ratchet header (specification section 3.2: `HEADER(dh_pair, pn, n)`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RatchetHeader {
    /// The sender's current ratchet public key.
    pub ratchet_key: X25519Public,
    /// Number of messages in the sender's previous sending chain (`PN`).
    pub previous_counter: u32,
    /// This message's number in the current sending chain (`N`).
    pub counter: u32,
}

impl RatchetHeader {
    /// The encoded header; it is the associated data's suffix (`CONCAT(AD, header)`).
    pub(crate) fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let mut w = Vec::with_capacity(HEADER_LEN);
        w.put_u8(PROTOCOL_VERSION);
        w.put_u8(TYPE_RATCHET);
        w.put(self.ratchet_key.as_bytes());
        w.put_u32(self.previous_counter);
        w.put_u32(self.counter);
        out.copy_from_slice(&w);
        out
    }
}

/// An ordinary ratchet message: header then AES-256-GCM-SIV ciphertext of the padded plaintext.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RatchetMessage {
    /// The header.
    pub header: RatchetHeader,
    /// Ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

impl RatchetMessage {
    pub(crate) fn encode(&self, w: &mut impl Writer) {
        w.put(&self.header.to_bytes());
        w.put(&self.ciphertext);
    }

    /// Encodes the message.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(HEADER_LEN + self.ciphertext.len());
        self.encode(&mut w);
        w
    }

    /// Decodes the part after the version and type bytes; consumes the rest of the input.
    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let ratchet_key = X25519Public::from_bytes(r.array()?).map_err(|_| DecodeError::InvalidValue)?;
        let previous_counter = r.u32()?;
        let counter = r.u32()?;
        let ciphertext = r.rest();
        if ciphertext.len() < MIN_CIPHERTEXT_LEN {
            return Err(DecodeError::Truncated);
        }
        if ciphertext.len() > MAX_CIPHERTEXT_LEN {
            return Err(DecodeError::TooLong);
        }
        Ok(Self {
            header: RatchetHeader { ratchet_key, previous_counter, counter },
            ciphertext: ciphertext.to_vec(),
        })
    }
}

/// The initial message of a session (PQXDH revision 3, section 3.3): the keys Bob needs to
/// compute the shared secret, then the first ratchet message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PrekeyMessage {
    /// Alice's X25519 device identity key (`IK_A`).
    pub identity_key: X25519Public,
    /// Alice's ephemeral key (`EK_A`).
    pub base_key: X25519Public,
    /// Which signed prekey of Bob's was used.
    pub signed_prekey_id: u32,
    /// Which one-time prekey of Bob's was used, if any.
    pub one_time_prekey_id: Option<u32>,
    /// Which kind of KEM prekey was used.
    pub kem_prekey_kind: KemPrekeyKind,
    /// Which KEM prekey was used.
    pub kem_prekey_id: u32,
    /// The ML-KEM-1024 ciphertext (`CT`).
    pub kem_ciphertext: KemCiphertext,
    /// The first ratchet message.
    pub message: RatchetMessage,
}

impl PrekeyMessage {
    /// Encodes the message.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(80 + CIPHERTEXT_LEN + HEADER_LEN + self.message.ciphertext.len());
        w.put_u8(PROTOCOL_VERSION);
        w.put_u8(TYPE_PREKEY);
        w.put(self.identity_key.as_bytes());
        w.put(self.base_key.as_bytes());
        w.put_u32(self.signed_prekey_id);
        match self.one_time_prekey_id {
            Some(id) => {
                w.put_bool(true);
                w.put_u32(id);
            }
            None => w.put_bool(false),
        }
        w.put_u8(match self.kem_prekey_kind {
            KemPrekeyKind::OneTime => 1,
            KemPrekeyKind::LastResort => 2,
        });
        w.put_u32(self.kem_prekey_id);
        w.put(self.kem_ciphertext.as_bytes());
        self.message.encode(&mut w);
        w
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let key =
            |r: &mut Reader<'_>| X25519Public::from_bytes(r.array()?).map_err(|_| DecodeError::InvalidValue);
        let identity_key = key(r)?;
        let base_key = key(r)?;
        let signed_prekey_id = r.u32()?;
        let one_time_prekey_id = if r.bool()? { Some(r.u32()?) } else { None };
        let kem_prekey_kind = match r.u8()? {
            1 => KemPrekeyKind::OneTime,
            2 => KemPrekeyKind::LastResort,
            t => return Err(DecodeError::UnknownTag(t)),
        };
        let kem_prekey_id = r.u32()?;
        let kem_ciphertext =
            KemCiphertext::from_bytes(r.take(CIPHERTEXT_LEN)?).map_err(|_| DecodeError::InvalidValue)?;
        let v = r.u8()?;
        if v != PROTOCOL_VERSION {
            return Err(DecodeError::UnknownVersion(v));
        }
        let t = r.u8()?;
        if t != TYPE_RATCHET {
            return Err(DecodeError::UnknownTag(t));
        }
        let message = RatchetMessage::decode_body(r)?;
        Ok(Self {
            identity_key,
            base_key,
            signed_prekey_id,
            one_time_prekey_id,
            kem_prekey_kind,
            kem_prekey_id,
            kem_ciphertext,
            message,
        })
    }
}

/// Any 1:1 message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Message {
    /// A message on an established session.
    Ratchet(RatchetMessage),
    /// A message that also sets a session up.
    Prekey(PrekeyMessage),
}

impl Message {
    /// Decodes a message, refusing unknown versions and types, non-canonical keys and
    /// ciphertexts outside the padding buckets' range.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = r.u8()?;
        if v != PROTOCOL_VERSION {
            return Err(DecodeError::UnknownVersion(v));
        }
        let m = match r.u8()? {
            TYPE_RATCHET => Self::Ratchet(RatchetMessage::decode_body(&mut r)?),
            TYPE_PREKEY => Self::Prekey(PrekeyMessage::decode_body(&mut r)?),
            t => return Err(DecodeError::UnknownTag(t)),
        };
        r.finish()?;
        Ok(m)
    }

    /// Encodes the message.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::Ratchet(m) => m.to_bytes(),
            Self::Prekey(m) => m.to_bytes(),
        }
    }
}
