//! AES-256-GCM-SIV (RFC 8452) with full 16-byte tags, through AWS-LC.
//!
//! GCM-SIV rather than GCM: Tacit's nonces are derived from single-use message keys, but a
//! state restored from an old copy can replay a chain, and with GCM-SIV a repeated
//! (key, nonce) pair reveals only whether two plaintexts were equal.

use aws_lc_rs::aead::{AES_256_GCM_SIV, Aad, LessSafeKey, Nonce, UnboundKey};

use super::{CryptoError, Secret32};

/// Tag length in bytes (full length, never truncated).
pub(crate) const TAG_LEN: usize = 16;
/// Nonce length in bytes.
pub(crate) const NONCE_LEN: usize = 12;

#[cfg(test)]
thread_local! {
    /// Every (key, nonce) pair used to encrypt on this thread, so tests can prove uniqueness.
    pub(crate) static SEALED: std::cell::RefCell<Vec<([u8; 32], [u8; NONCE_LEN])>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn key(k: &Secret32) -> Result<LessSafeKey, CryptoError> {
    let unbound = UnboundKey::new(&AES_256_GCM_SIV, k.expose()).map_err(|_| CryptoError::Library)?;
    Ok(LessSafeKey::new(unbound))
}

/// Encrypts `buf` in place and appends the tag.
pub(crate) fn seal(
    k: &Secret32,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(), CryptoError> {
    #[cfg(test)]
    SEALED.with(|s| s.borrow_mut().push((*k.expose(), *nonce)));
    let tag = key(k)?
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), buf)
        .map_err(|_| CryptoError::Library)?;
    buf.extend_from_slice(tag.as_ref());
    Ok(())
}

/// Decrypts `buf` (ciphertext followed by tag) in place; on success `buf` holds the plaintext.
pub(crate) fn open(
    k: &Secret32,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(), CryptoError> {
    if buf.len() < TAG_LEN {
        return Err(CryptoError::DecryptionFailed);
    }
    let len = key(k)?
        .open_in_place(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), buf)
        .map_err(|_| CryptoError::DecryptionFailed)?
        .len();
    buf.truncate(len);
    Ok(())
}
