//! Linking a new device to an account (`docs/PROTOCOL.md` §10, "Linking a device").
//!
//! The new device draws a 128-bit link secret `s` and shows it as a code; the user types the
//! code on a device that holds the account key (the approver). The server only ever sees
//! the slot id (a one-way function of `s`), the offer and the answer:
//!
//! 1. The new device publishes an **offer** under the slot id: its `DevicePublic`, label,
//!    first signed prekey and last-resort KEM prekey, and fresh ephemeral X25519 and
//!    ML-KEM-1024 keys, all under an HMAC keyed from `s` ([`PendingLink::new`]).
//! 2. The approver fetches it, checks the MAC (so nothing in it is the server's), then the
//!    identity binding and prekey signatures ([`VerifiedOffer::open`]), publishes the new
//!    device list, and seals the **provisioning** message (account, assigned device id, the
//!    signed list, optionally the account identity and a history archive reference) to the
//!    offer's ephemeral keys *and* `s` ([`VerifiedOffer::seal_answer`]).
//! 3. The new device opens the answer and checks that the signed list names it, with its
//!    identity and label, at the assigned id ([`PendingLink::open_answer`]).
//!
//! Sans-IO: the caller's RNG draws the X25519 keys (ML-KEM draws from AWS-LC's DRBG, as
//! everywhere in this crate); expiry and single use are enforced by the caller and the
//! server (slot TTL, one answer per slot, the new device deletes its [`PendingLink`]).

use rand_core::{CryptoRng, RngCore};
use subtle::ConstantTimeEq;
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::codec::{DecodeError, Reader, Writer, encode_exact};
use crate::crypto::aead::{self, NONCE_LEN, TAG_LEN};
use crate::crypto::kdf::{HmacKey, hkdf_sha256, sha256};
use crate::crypto::kem::{self, KemCiphertext, KemPublic, KemSecret};
use crate::crypto::x25519::{X25519Public, X25519Secret};
use crate::crypto::{CryptoError, Secret32};
use crate::device_list::{DeviceList, DeviceListError, MAX_DEVICE_LABEL_BYTES, valid_device_label};
use crate::identity::{AccountIdentity, AccountName, DeviceId, DevicePublic};
use crate::prekeys::{KemPrekeyKind, KemPrekeyPublic, SignedPrekeyPublic};
use crate::state::{StateKind, read_header, write_header};

/// Length of the link secret `s`.
pub const LINK_SECRET_LEN: usize = 16;
/// Characters of a link code, without separators (128 bits of `s` and a 12-bit check).
pub const LINK_CODE_CHARS: usize = 28;
const CODE_GROUP: usize = 4;

const SLOT_INFO: &[u8] = b"Tacit v1 link slot";
const OFFER_INFO: &[u8] = b"Tacit v1 link offer";
const ANSWER_INFO: &[u8] = b"Tacit v1 link answer";
const CODE_CHECK_LABEL: &[u8] = b"Tacit v1 link code";
const ZERO_SALT: [u8; 32] = [0u8; 32];

const OFFER_FORMAT: u8 = 1;
const ANSWER_FORMAT: u8 = 1;
const PROVISIONING_FORMAT: u8 = 1;

const MAC_LEN: usize = 32;
const SIGNED_PREKEY_LEN: usize = 4 + 32 + 64;
const KEM_PREKEY_LEN: usize = 1 + 4 + kem::PUBLIC_KEY_LEN + 64;
/// An offer without its label.
const OFFER_FIXED_LEN: usize =
    1 + DevicePublic::LEN + 1 + SIGNED_PREKEY_LEN + KEM_PREKEY_LEN + 32 + kem::PUBLIC_KEY_LEN + MAC_LEN;
/// Longest offer (with the longest label).
pub const MAX_OFFER_LEN: usize = OFFER_FIXED_LEN + MAX_DEVICE_LABEL_BYTES;
/// Longest signed device list a provisioning message carries (32 devices of format 2 with
/// 64-byte labels take 6,754 bytes).
pub const MAX_PROVISIONING_LIST_BYTES: usize = 8192;
const ANSWER_HEADER_LEN: usize = 1 + 32 + kem::CIPHERTEXT_LEN;
const HISTORY_REF_LEN: usize = 16 + 32 + 8 + 8 + 32;
/// Longest provisioning plaintext.
const MAX_PROVISIONING_LEN: usize =
    1 + 1 + AccountName::MAX_LEN + 4 + 4 + 4 + MAX_PROVISIONING_LIST_BYTES + 1 + 32 + 1 + HISTORY_REF_LEN;
/// Longest answer.
pub const MAX_ANSWER_LEN: usize = ANSWER_HEADER_LEN + MAX_PROVISIONING_LEN + TAG_LEN;

/// Crockford's base 32 (no I, L, O, U).
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Why linking failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The text is not a link code (wrong length or characters).
    #[error("not a link code")]
    BadCode,
    /// The code's check characters do not match: a typo.
    #[error("the link code has a typo")]
    CodeTypo,
    /// Bytes that are not an offer, answer or provisioning message.
    #[error("malformed link message: {0}")]
    Decode(#[from] DecodeError),
    /// The offer's MAC does not verify: another code, or the offer is not the new device's.
    #[error("the link offer does not match the code")]
    BadMac,
    /// The device identity's binding signature does not verify.
    #[error("the device identity binding does not verify")]
    BadBinding,
    /// A prekey is not signed by the device, or the KEM prekey is not a last-resort key.
    #[error("a prekey of the new device does not verify")]
    BadPrekey,
    /// A device label too long or with control characters.
    #[error("bad device label")]
    BadLabel,
    /// The answer does not decrypt: another code, or not sealed for this offer.
    #[error("the link answer does not decrypt")]
    Open,
    /// The provisioning's device list does not list this device (identity and label) at the
    /// assigned id, or the approving device is not an approver in it.
    #[error("the provisioning does not list this device")]
    WrongDevice,
    /// The account identity sent is not the list's account key, or the device's approver
    /// flag in the list disagrees with whether it was sent.
    #[error("the provisioning's account identity does not match its device list")]
    WrongAccountKey,
    /// The provisioning's device list does not verify.
    #[error("the provisioning's device list: {0}")]
    DeviceList(#[from] DeviceListError),
    /// A primitive failed.
    #[error("cryptographic failure: {0}")]
    Crypto(#[from] CryptoError),
}

/// The link secret `s` (16 random bytes). Zeroized on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct LinkSecret([u8; LINK_SECRET_LEN]);

impl LinkSecret {
    /// Draws a new secret from the caller's RNG.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut s = Self([0u8; LINK_SECRET_LEN]);
        rng.fill_bytes(&mut s.0);
        s
    }

    /// Wraps 16 bytes (for tests and known-answer vectors; use [`Self::generate`]).
    pub fn from_bytes(bytes: [u8; LINK_SECRET_LEN]) -> Self {
        Self(bytes)
    }

    /// The 12-bit check of the code: the first 12 bits of `SHA256("Tacit v1 link code" || s)`.
    fn check(&self) -> [u8; 2] {
        let h = sha256(&[CODE_CHECK_LABEL, &self.0]);
        [h[0], h[1] & 0xf0]
    }

    /// The code to show: `s` and the 12-bit check in Crockford base 32 (28 characters), in
    /// 7 groups of 4 separated by `-`.
    pub fn to_code(&self) -> Zeroizing<String> {
        let mut bits = Zeroizing::new([0u8; LINK_SECRET_LEN + 2]);
        let (head, tail) = bits.split_at_mut(LINK_SECRET_LEN);
        head.copy_from_slice(&self.0);
        tail.copy_from_slice(&self.check());
        let mut out = Zeroizing::new(String::with_capacity(LINK_CODE_CHARS + LINK_CODE_CHARS / CODE_GROUP));
        let mut acc: u32 = 0;
        let mut n: u32 = 0;
        let mut emitted = 0usize;
        for &b in bits.iter() {
            acc = (acc << 8) | u32::from(b);
            n += 8;
            while n >= 5 && emitted < LINK_CODE_CHARS {
                n -= 5;
                let v = (acc >> n) & 0x1f;
                acc &= (1 << n) - 1;
                if emitted > 0 && emitted.is_multiple_of(CODE_GROUP) {
                    out.push('-');
                }
                out.push(char::from(ALPHABET.get(v as usize).copied().unwrap_or(b'0')));
                emitted += 1;
            }
        }
        acc.zeroize();
        out
    }

    /// Reads a code as [`Self::to_code`] writes it, ignoring case, spaces and dashes, and
    /// reading `O` as `0` and `I`, `L` as `1` (Crockford). [`LinkError::CodeTypo`] if the
    /// check does not match, [`LinkError::BadCode`] if it is not a code at all.
    pub fn from_code(code: &str) -> Result<Self, LinkError> {
        let mut values = Zeroizing::new([0u8; LINK_CODE_CHARS]);
        let mut count = 0usize;
        for c in code.chars() {
            if c == '-' || c.is_whitespace() {
                continue;
            }
            let v = match c.to_ascii_uppercase() {
                'O' => 0,
                'I' | 'L' => 1,
                c => ALPHABET.iter().position(|&a| char::from(a) == c).ok_or(LinkError::BadCode)?,
            };
            let slot = values.get_mut(count).ok_or(LinkError::BadCode)?;
            *slot = u8::try_from(v).map_err(|_| LinkError::BadCode)?;
            count += 1;
        }
        if count != LINK_CODE_CHARS {
            return Err(LinkError::BadCode);
        }
        // 28 × 5 = 140 bits: 128 of s, 12 of check.
        let mut bytes = Zeroizing::new([0u8; LINK_SECRET_LEN + 2]);
        let mut acc: u32 = 0;
        let mut n: u32 = 0;
        let mut at = 0usize;
        for &v in values.iter() {
            acc = (acc << 5) | u32::from(v);
            n += 5;
            if n >= 8 {
                n -= 8;
                if let Some(b) = bytes.get_mut(at) {
                    *b = ((acc >> n) & 0xff) as u8;
                }
                acc &= (1 << n) - 1;
                at += 1;
            }
        }
        // The last 4 bits are the check's low half.
        if let Some(b) = bytes.get_mut(at) {
            *b = ((acc << (8 - n)) & 0xff) as u8;
        }
        acc.zeroize();
        let mut s = Self([0u8; LINK_SECRET_LEN]);
        s.0.copy_from_slice(bytes.get(..LINK_SECRET_LEN).ok_or(LinkError::BadCode)?);
        let check = bytes.get(LINK_SECRET_LEN..).ok_or(LinkError::BadCode)?;
        if !bool::from(s.check().ct_eq(check)) {
            return Err(LinkError::CodeTypo);
        }
        Ok(s)
    }

    fn derive(&self, info: &[u8], out: &mut [u8]) -> Result<(), CryptoError> {
        hkdf_sha256(&ZERO_SALT, &self.0, &[info], out)
    }

    /// The slot id the offer is published under: `HKDF(salt = 32 × 0x00, ikm = s,
    /// info = "Tacit v1 link slot", L = 16)`. One-way: the server learns nothing of `s`.
    pub fn slot_id(&self) -> [u8; 16] {
        let mut id = [0u8; 16];
        // HKDF-SHA-256 fails only for outputs longer than 8,160 bytes.
        if self.derive(SLOT_INFO, &mut id).is_err() {
            id = [0u8; 16];
        }
        id
    }

    /// `k_offer = HKDF(salt = 32 × 0x00, ikm = s, info = "Tacit v1 link offer", L = 32)`.
    fn offer_key(&self) -> Result<HmacKey, CryptoError> {
        let mut k = Secret32([0u8; 32]);
        self.derive(OFFER_INFO, &mut k.0)?;
        Ok(HmacKey::new(&k))
    }
}

/// What the display of a device identity shows on both devices, so the user can compare:
/// `SHA256(DevicePublic)` read as 5 groups of 5 digits (each `u40` big-endian of 5 bytes,
/// mod 100,000), separated by spaces (about 83 bits).
pub fn device_fingerprint(device: &DevicePublic) -> String {
    let h = sha256(&[&device.to_bytes()]);
    let mut out = String::with_capacity(29);
    for (i, chunk) in h.chunks_exact(5).take(5).enumerate() {
        let v = chunk.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)) % 100_000;
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&format!("{v:05}"));
    }
    out
}

/// The fields an offer carries, before its MAC.
fn encode_offer_body(
    w: &mut impl Writer,
    device: &DevicePublic,
    label: &str,
    signed_prekey: &SignedPrekeyPublic,
    last_resort: &KemPrekeyPublic,
    ephemeral: &X25519Public,
    ephemeral_kem: &KemPublic,
) {
    w.put_u8(OFFER_FORMAT);
    device.encode(w);
    w.put_u8(u8::try_from(label.len()).unwrap_or(u8::MAX));
    w.put(label.as_bytes());
    signed_prekey.encode(w);
    last_resort.encode(w);
    w.put(ephemeral.as_bytes());
    w.put(ephemeral_kem.as_bytes());
}

fn check_prekeys(
    device: &DevicePublic,
    signed_prekey: &SignedPrekeyPublic,
    last_resort: &KemPrekeyPublic,
) -> Result<(), LinkError> {
    signed_prekey.verify(device).map_err(|_| LinkError::BadPrekey)?;
    if last_resort.kind != KemPrekeyKind::LastResort {
        return Err(LinkError::BadPrekey);
    }
    last_resort.verify(device).map_err(|_| LinkError::BadPrekey)
}

/// A history archive the new device downloads (see [`crate::archive`]).
pub struct HistoryRef {
    /// The blob's id on the server.
    pub blob_id: [u8; 16],
    /// The archive key (secret).
    pub key: Zeroizing<[u8; 32]>,
    /// Ciphertext bytes (the blob's size).
    pub size: u64,
    /// The archive's size once decrypted and decompressed: the bound the new device
    /// decompresses to (a larger stream is refused, so the archive cannot be a
    /// decompression bomb beyond what the approver declared).
    pub plain_size: u64,
    /// SHA-256 of the whole ciphertext.
    pub digest: [u8; 32],
}

/// What the approver tells the new device (secret: it may hold the account identity and the
/// history key). Never printed.
pub struct Provisioning {
    /// The account the device joins.
    pub account: AccountName,
    /// The id assigned to the new device.
    pub device_id: DeviceId,
    /// The approving device's id.
    pub approver_id: DeviceId,
    /// The signed device list (already published) that lists the new device.
    pub device_list: Vec<u8>,
    /// The account identity, when the new device is made an approver.
    pub account_identity: Option<AccountIdentity>,
    /// The history archive, unless declined.
    pub history: Option<HistoryRef>,
}

impl Provisioning {
    /// Encodes (see `docs/PROTOCOL.md` §10):
    /// `u8 1 || account name || u32 device id || u32 approver id || u32 n || list (n ≤ 8,192)
    /// || bool || [account identity seed (32)] || bool || [blob id (16) || key (32) || u64 size
    /// || u64 plain size || digest (32)]`.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        encode_exact(|w| {
            w.put_u8(PROVISIONING_FORMAT);
            self.account.encode(w);
            w.put_u32(self.device_id.get());
            w.put_u32(self.approver_id.get());
            w.put_bytes(&self.device_list);
            w.put_bool(self.account_identity.is_some());
            if let Some(id) = &self.account_identity {
                id.encode(w);
            }
            w.put_bool(self.history.is_some());
            if let Some(h) = &self.history {
                w.put(&h.blob_id);
                w.put(h.key.as_slice());
                w.put_u64(h.size);
                w.put_u64(h.plain_size);
                w.put(&h.digest);
            }
        })
    }

    /// Decodes [`Self::to_bytes`]'s encoding; every length bounded, trailing bytes refused.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let format = r.u8()?;
        if format != PROVISIONING_FORMAT {
            return Err(DecodeError::UnknownVersion(format));
        }
        let account = AccountName::decode(&mut r)?;
        let device_id = DeviceId::decode(&mut r)?;
        let approver_id = DeviceId::decode(&mut r)?;
        let device_list = r.bytes(MAX_PROVISIONING_LIST_BYTES)?.to_vec();
        let account_identity = if r.bool()? { Some(AccountIdentity::decode(&mut r)?) } else { None };
        let history = if r.bool()? {
            let blob_id = r.array()?;
            let mut key = Zeroizing::new([0u8; 32]);
            key.copy_from_slice(r.take(32)?);
            let size = r.u64()?;
            let plain_size = r.u64()?;
            let digest = r.array()?;
            Some(HistoryRef { blob_id, key, size, plain_size, digest })
        } else {
            None
        };
        r.finish()?;
        Ok(Self { account, device_id, approver_id, device_list, account_identity, history })
    }

    /// Checks the provisioning against the device it is for: its list verifies for its
    /// account (no key known yet: the answer is authenticated by `s`), lists `device` with
    /// `label` at `device_id`, lists `approver_id` as an approver, and the account identity is
    /// sent exactly when the new device is listed as an approver, and is the list's key.
    fn check_for(&self, device: &DevicePublic, label: &str) -> Result<DeviceList, LinkError> {
        let list = DeviceList::verify(&self.device_list, &self.account, None, None)?;
        if self.device_id == self.approver_id {
            return Err(LinkError::WrongDevice);
        }
        let entry = list.entry(self.device_id).ok_or(LinkError::WrongDevice)?;
        if entry.identity != *device || entry.label != label {
            return Err(LinkError::WrongDevice);
        }
        if !list.entry(self.approver_id).is_some_and(|a| a.approver) {
            return Err(LinkError::WrongDevice);
        }
        match &self.account_identity {
            Some(id) if id.public() != *list.account_key() || !entry.approver => {
                Err(LinkError::WrongAccountKey)
            }
            None if entry.approver => Err(LinkError::WrongAccountKey),
            _ => Ok(list),
        }
    }
}

/// The answer's AEAD key and nonce: `HKDF(salt = s, ikm = DH || SS, info = "Tacit v1 link
/// answer" || SHA256(offer) || approver ephemeral public (32) || KEM ciphertext (1,568),
/// L = 44)`, key = bytes 0..32, nonce = bytes 32..44.
fn answer_keys(
    secret: &LinkSecret,
    dh: &Secret32,
    ss: &Secret32,
    offer_hash: &[u8; 32],
    approver_ephemeral: &X25519Public,
    ct: &KemCiphertext,
) -> Result<(Secret32, [u8; NONCE_LEN]), CryptoError> {
    let mut ikm = Zeroizing::new([0u8; 64]);
    let (a, b) = ikm.split_at_mut(32);
    a.copy_from_slice(dh.expose());
    b.copy_from_slice(ss.expose());
    let mut okm = Zeroizing::new([0u8; 32 + NONCE_LEN]);
    hkdf_sha256(
        &secret.0,
        ikm.as_slice(),
        &[ANSWER_INFO, offer_hash, approver_ephemeral.as_bytes(), ct.as_bytes()],
        okm.as_mut_slice(),
    )?;
    let mut key = Secret32([0u8; 32]);
    let mut nonce = [0u8; NONCE_LEN];
    let (k, n) = okm.split_at(32);
    key.0.copy_from_slice(k);
    nonce.copy_from_slice(n);
    Ok((key, nonce))
}

fn answer_header(approver_ephemeral: &X25519Public, ct: &KemCiphertext) -> Vec<u8> {
    let mut w = Vec::with_capacity(ANSWER_HEADER_LEN);
    w.put_u8(ANSWER_FORMAT);
    w.put(approver_ephemeral.as_bytes());
    w.put(ct.as_bytes());
    w
}

/// The new device's side of a link in progress: the link secret, the identity it offered and
/// the ephemeral private keys. Zeroized on drop, never printed; persist it with
/// [`Self::to_bytes`] (secret) to resume after a restart, and delete it after one answer.
pub struct PendingLink {
    secret: LinkSecret,
    device: DevicePublic,
    label: String,
    offer_hash: [u8; 32],
    ephemeral: X25519Secret,
    ephemeral_kem: KemSecret,
}

impl PendingLink {
    /// Makes the offer for `device` (labelled `label`, with its first signed prekey and
    /// last-resort KEM prekey, both signed by it). Draws the ephemeral X25519 key from `rng`
    /// (the ML-KEM key from AWS-LC). Returns the pending state and the offer bytes, to
    /// publish under [`LinkSecret::slot_id`].
    pub fn new<R: RngCore + CryptoRng>(
        rng: &mut R,
        secret: &LinkSecret,
        device: &DevicePublic,
        label: &str,
        signed_prekey: &SignedPrekeyPublic,
        last_resort: &KemPrekeyPublic,
    ) -> Result<(Self, Vec<u8>), LinkError> {
        let kem = KemSecret::generate()?;
        Self::new_with_kem(rng, secret, device, label, signed_prekey, last_resort, kem)
    }

    /// [`Self::new`] with the ephemeral KEM key given (known-answer tests).
    pub(crate) fn new_with_kem<R: RngCore + CryptoRng>(
        rng: &mut R,
        secret: &LinkSecret,
        device: &DevicePublic,
        label: &str,
        signed_prekey: &SignedPrekeyPublic,
        last_resort: &KemPrekeyPublic,
        ephemeral_kem: KemSecret,
    ) -> Result<(Self, Vec<u8>), LinkError> {
        if !valid_device_label(label) {
            return Err(LinkError::BadLabel);
        }
        check_prekeys(device, signed_prekey, last_resort)?;
        let ephemeral = X25519Secret::generate(rng)?;
        let mut offer = Vec::with_capacity(OFFER_FIXED_LEN + label.len());
        encode_offer_body(
            &mut offer,
            device,
            label,
            signed_prekey,
            last_resort,
            ephemeral.public(),
            ephemeral_kem.public(),
        );
        let mac = secret.offer_key()?.mac(&offer);
        offer.put(mac.expose());
        let offer_hash = sha256(&[&offer]);
        let pending = Self {
            secret: secret.clone(),
            device: device.clone(),
            label: label.to_owned(),
            offer_hash,
            ephemeral,
            ephemeral_kem,
        };
        Ok((pending, offer))
    }

    /// The link secret (to show its code again after a restart).
    pub fn secret(&self) -> &LinkSecret {
        &self.secret
    }

    /// The slot id the offer was published under.
    pub fn slot_id(&self) -> [u8; 16] {
        self.secret.slot_id()
    }

    /// Opens the approver's answer: decrypts it with the ephemeral keys and `s`, decodes the
    /// provisioning and checks that its signed device list (verified for the provisioning's
    /// account, with no key known before) lists this device's identity and label at the
    /// assigned id.
    pub fn open_answer(&self, answer: &[u8]) -> Result<Provisioning, LinkError> {
        if answer.len() < ANSWER_HEADER_LEN + TAG_LEN {
            return Err(DecodeError::Truncated.into());
        }
        if answer.len() > MAX_ANSWER_LEN {
            return Err(DecodeError::TooLong.into());
        }
        let mut r = Reader::new(answer);
        let format = r.u8()?;
        if format != ANSWER_FORMAT {
            return Err(DecodeError::UnknownVersion(format).into());
        }
        let approver_ephemeral =
            X25519Public::from_bytes(r.array()?).map_err(|_| DecodeError::InvalidValue)?;
        let ct =
            KemCiphertext::from_bytes(r.take(kem::CIPHERTEXT_LEN)?).map_err(|_| DecodeError::InvalidValue)?;
        let sealed = r.rest();
        let header = answer.get(..ANSWER_HEADER_LEN).ok_or(DecodeError::Truncated)?;
        let dh = self.ephemeral.diffie_hellman(&approver_ephemeral).map_err(|_| LinkError::Open)?;
        let ss = self.ephemeral_kem.decapsulate(&ct).map_err(|_| LinkError::Open)?;
        let (key, nonce) = answer_keys(&self.secret, &dh, &ss, &self.offer_hash, &approver_ephemeral, &ct)?;
        let mut buf = Zeroizing::new(sealed.to_vec());
        aead::open(&key, &nonce, header, &mut buf).map_err(|_| LinkError::Open)?;
        let provisioning = Provisioning::from_bytes(&buf)?;
        provisioning.check_for(&self.device, &self.label)?;
        Ok(provisioning)
    }

    /// Serialises the pending link (secret: keep it in the encrypted store):
    /// `"TACT" || u8 5 || u8 2 || u64 0 || s (16) || DevicePublic (128) || u8 n || label
    /// || SHA256(offer) (32) || X25519 secret (32) || KEM encapsulation key (1,568)
    /// || KEM decapsulation key (3,168)`.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        encode_exact(|w| {
            write_header(w, StateKind::PendingLink, 0);
            w.put(&self.secret.0);
            self.device.encode(w);
            w.put_u8(u8::try_from(self.label.len()).unwrap_or(u8::MAX));
            w.put(self.label.as_bytes());
            w.put(&self.offer_hash);
            w.put(self.ephemeral.secret_bytes().expose());
            w.put(self.ephemeral_kem.public().as_bytes());
            w.put(self.ephemeral_kem.secret_bytes());
        })
    }

    /// Restores what [`Self::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let (_, version) = read_header(&mut r, StateKind::PendingLink)?;
        if version != 2 {
            return Err(DecodeError::UnknownVersion(version));
        }
        let mut secret = LinkSecret([0u8; LINK_SECRET_LEN]);
        secret.0.copy_from_slice(r.take(LINK_SECRET_LEN)?);
        let device = DevicePublic::decode(&mut r)?;
        let len = usize::from(r.u8()?);
        let label = core::str::from_utf8(r.take(len)?).map_err(|_| DecodeError::InvalidValue)?;
        if !valid_device_label(label) {
            return Err(DecodeError::InvalidValue);
        }
        let offer_hash = r.array()?;
        let ephemeral =
            X25519Secret::from_bytes(Secret32(r.array()?)).map_err(|_| DecodeError::InvalidValue)?;
        let kem_public =
            KemPublic::from_bytes(r.take(kem::PUBLIC_KEY_LEN)?).map_err(|_| DecodeError::InvalidValue)?;
        let ephemeral_kem = KemSecret::from_parts(r.take(kem::SECRET_KEY_LEN)?, kem_public)
            .map_err(|_| DecodeError::InvalidValue)?;
        r.finish()?;
        Ok(Self { secret, device, label: label.to_owned(), offer_hash, ephemeral, ephemeral_kem })
    }
}

/// An offer the approver opened with the code: its MAC verified under `s`, the device's
/// identity binding and both prekey signatures verified.
pub struct VerifiedOffer {
    secret: LinkSecret,
    offer_hash: [u8; 32],
    device: DevicePublic,
    label: String,
    signed_prekey: SignedPrekeyPublic,
    last_resort: KemPrekeyPublic,
    ephemeral: X25519Public,
    ephemeral_kem: KemPublic,
}

impl VerifiedOffer {
    /// Opens an offer fetched from the slot: bounds first, then the MAC (in constant time,
    /// before anything else is parsed or verified), then the identity binding and the
    /// prekey signatures.
    pub fn open(secret: &LinkSecret, offer: &[u8]) -> Result<Self, LinkError> {
        if offer.len() < OFFER_FIXED_LEN {
            return Err(DecodeError::Truncated.into());
        }
        if offer.len() > MAX_OFFER_LEN {
            return Err(DecodeError::TooLong.into());
        }
        let (body, mac) =
            offer.split_at_checked(offer.len() - MAC_LEN).ok_or(LinkError::Decode(DecodeError::Truncated))?;
        let want = secret.offer_key()?.mac(body);
        if !bool::from(want.expose().as_slice().ct_eq(mac)) {
            return Err(LinkError::BadMac);
        }
        let mut r = Reader::new(body);
        let format = r.u8()?;
        if format != OFFER_FORMAT {
            return Err(DecodeError::UnknownVersion(format).into());
        }
        let device = DevicePublic::decode_unverified(&mut r)?;
        let len = usize::from(r.u8()?);
        let label = core::str::from_utf8(r.take(len)?).map_err(|_| LinkError::BadLabel)?.to_owned();
        let signed_prekey = SignedPrekeyPublic::decode(&mut r)?;
        let last_resort = KemPrekeyPublic::decode(&mut r)?;
        let ephemeral = X25519Public::from_bytes(r.array()?).map_err(|_| DecodeError::InvalidValue)?;
        let ephemeral_kem =
            KemPublic::from_bytes(r.take(kem::PUBLIC_KEY_LEN)?).map_err(|_| DecodeError::InvalidValue)?;
        r.finish()?;
        if !valid_device_label(&label) {
            return Err(LinkError::BadLabel);
        }
        device.verify_binding().map_err(|_| LinkError::BadBinding)?;
        check_prekeys(&device, &signed_prekey, &last_resort)?;
        Ok(Self {
            secret: secret.clone(),
            offer_hash: sha256(&[offer]),
            device,
            label,
            signed_prekey,
            last_resort,
            ephemeral,
            ephemeral_kem,
        })
    }

    /// The new device's identity.
    pub fn device(&self) -> &DevicePublic {
        &self.device
    }

    /// The label its user gave it.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Its first signed prekey (for the device list publication's `new_devices`).
    pub fn signed_prekey(&self) -> &SignedPrekeyPublic {
        &self.signed_prekey
    }

    /// Its last-resort KEM prekey.
    pub fn last_resort_prekey(&self) -> &KemPrekeyPublic {
        &self.last_resort
    }

    /// [`device_fingerprint`] of the new device, to compare with what it shows.
    pub fn fingerprint(&self) -> String {
        device_fingerprint(&self.device)
    }

    /// Seals `provisioning` for the new device (after checking it lists the device at the
    /// assigned id with its label, as the new device will). Draws the approver's ephemeral
    /// X25519 key from `rng` (the KEM encapsulation from AWS-LC).
    pub fn seal_answer<R: RngCore + CryptoRng>(
        &self,
        rng: &mut R,
        provisioning: &Provisioning,
    ) -> Result<Vec<u8>, LinkError> {
        provisioning.check_for(&self.device, &self.label)?;
        let (ct, ss) = self.ephemeral_kem.encapsulate()?;
        self.seal_with_kem(rng, provisioning, ct, &ss)
    }

    /// Seals without checking the provisioning, with the KEM output given (tests).
    pub(crate) fn seal_with_kem<R: RngCore + CryptoRng>(
        &self,
        rng: &mut R,
        provisioning: &Provisioning,
        ct: KemCiphertext,
        ss: &Secret32,
    ) -> Result<Vec<u8>, LinkError> {
        let ephemeral = X25519Secret::generate(rng)?;
        let dh = ephemeral.diffie_hellman(&self.ephemeral)?;
        let (key, nonce) = answer_keys(&self.secret, &dh, ss, &self.offer_hash, ephemeral.public(), &ct)?;
        let header = answer_header(ephemeral.public(), &ct);
        let plain = provisioning.to_bytes();
        let mut buf = Vec::with_capacity(plain.len() + TAG_LEN);
        buf.extend_from_slice(&plain);
        aead::seal(&key, &nonce, &header, &mut buf)?;
        let mut answer = header;
        answer.extend_from_slice(&buf);
        Ok(answer)
    }
}

#[cfg(test)]
mod tests;
