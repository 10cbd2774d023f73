//! Message keys and the AEAD they drive (Double Ratchet specification, section 5.2:
//! `ENCRYPT` / `DECRYPT`).
//!
//! The specification recommends AES-256-CBC with HMAC-SHA-256 and allows any AEAD whose
//! keys are used once. Tacit uses AES-256-GCM-SIV (RFC 8452, see `crypto::aead`) with a full
//! 16-byte tag: HKDF-SHA-256 (salt
//! of 32 zero bytes, input key material `mk`, info [`MESSAGE_KEY_INFO`]) yields 44 bytes,
//! a 32-byte AES key then a 12-byte nonce. Every message key is used for exactly one
//! message, so every (key, nonce) pair is used once.

use crate::crypto::aead::{self, NONCE_LEN};
use crate::crypto::kdf::hkdf_sha256;
use crate::crypto::{CryptoError, Secret32};

/// `info` for the message-key expansion.
pub(crate) const MESSAGE_KEY_INFO: &[u8] = b"Tacit v1 message keys";

/// One message key and the chain index it belongs to.
#[derive(Clone)]
pub(crate) struct MessageKey {
    key: Secret32,
    index: u32,
}

impl MessageKey {
    pub(crate) fn new(key: Secret32, index: u32) -> Self {
        Self { key, index }
    }

    pub(crate) fn index(&self) -> u32 {
        self.index
    }

    pub(crate) fn key(&self) -> &Secret32 {
        &self.key
    }

    fn expand(&self) -> Result<(Secret32, [u8; NONCE_LEN]), CryptoError> {
        let mut okm = zeroize::Zeroizing::new([0u8; 32 + NONCE_LEN]);
        hkdf_sha256(&[0u8; 32], self.key.expose(), &[MESSAGE_KEY_INFO], okm.as_mut())?;
        let (k, n) = okm.split_at(32);
        let mut key = Secret32([0u8; 32]);
        key.0.copy_from_slice(k);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(n);
        Ok((key, nonce))
    }

    /// Encrypts `buf` in place (appending the tag) with `aad` authenticated.
    pub(crate) fn seal(&self, aad: &[u8], buf: &mut Vec<u8>) -> Result<(), CryptoError> {
        let (key, nonce) = self.expand()?;
        aead::seal(&key, &nonce, aad, buf)
    }

    /// Decrypts `buf` in place.
    pub(crate) fn open(&self, aad: &[u8], buf: &mut Vec<u8>) -> Result<(), CryptoError> {
        let (key, nonce) = self.expand()?;
        aead::open(&key, &nonce, aad, buf)
    }
}
