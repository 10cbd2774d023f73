//! STAND-IN, TO BE REPLACED AT MERGE by `tacit_protocol::archive` (written in parallel by
//! the protocol helper with exactly this API): delete this file, the `mod archive_shim`
//! line in `history_transfer.rs`, and import `tacit_protocol::archive::{ArchiveError,
//! ArchiveOpener, ArchiveSealer, CHUNK_LEN}` instead.
//!
//! Chunked AEAD in the manner of age's STREAM (age spec, "Payload"; Hoang, Reyhanitabar,
//! Rogaway and Vizár, "Online Authenticated-Encryption and its Nonce-Reuse
//! Misuse-Resistance"): the plaintext is cut into chunks of [`CHUNK_LEN`] bytes (the last
//! one shorter or equal), each sealed with AES-256-GCM-SIV under one key with the nonce
//! `11-byte big-endian chunk counter || last flag`, so chunks cannot be reordered, dropped
//! or the stream cut short at a chunk boundary without the opener noticing.

use aws_lc_rs::aead::{AES_256_GCM_SIV, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use tacit_protocol::CryptoError;
use thiserror::Error;

/// Plaintext bytes in every chunk but the last.
pub const CHUNK_LEN: usize = 65536;
/// The AEAD tag appended to each chunk.
const TAG_LEN: usize = 16;
/// Chunks one key may seal (the counter's 11 bytes hold more; this keeps it in a u64).
const MAX_CHUNKS: u64 = u64::MAX;

/// Checks the plaintext length of chunk number `counter`.
fn check(done: bool, counter: u64, plain_len: usize, last: bool) -> Result<(), ArchiveError> {
    if done {
        return Err(ArchiveError::Finished);
    }
    let ok =
        if last { plain_len <= CHUNK_LEN && (plain_len > 0 || counter == 0) } else { plain_len == CHUNK_LEN };
    if !ok || counter == MAX_CHUNKS {
        return Err(ArchiveError::ChunkLength);
    }
    Ok(())
}

/// Why sealing or opening a chunk failed (the variants of `tacit_protocol::archive`'s).
#[derive(Debug, Clone, Copy, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArchiveError {
    /// A chunk that is not the last is not exactly [`CHUNK_LEN`] bytes (plus the tag), the
    /// last is longer, or an empty last chunk follows other chunks.
    #[error("archive chunk has a bad length")]
    ChunkLength,
    /// The last chunk was already processed.
    #[error("archive stream already ended")]
    Finished,
    /// The chunk does not authenticate (tampered, reordered, cut short, or the wrong key).
    #[error("archive chunk does not authenticate")]
    Open,
    /// A primitive failed.
    #[error("cryptographic failure: {0}")]
    Crypto(#[from] CryptoError),
}

fn nonce(counter: u64, last: bool) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    // 11-byte big-endian counter: 3 zero bytes, then the u64.
    if let Some(c) = n.get_mut(3..11) {
        c.copy_from_slice(&counter.to_be_bytes());
    }
    if let Some(f) = n.get_mut(11) {
        *f = u8::from(last);
    }
    Nonce::assume_unique_for_key(n)
}

fn key(k: &[u8; 32]) -> Option<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM_SIV, k).ok().map(LessSafeKey::new)
}

/// Seals a stream chunk by chunk.
pub struct ArchiveSealer {
    key: Option<LessSafeKey>,
    counter: u64,
    done: bool,
}

impl ArchiveSealer {
    /// A sealer under `key` (a fresh random key per archive).
    pub fn new(key_bytes: &[u8; 32]) -> Self {
        Self { key: key(key_bytes), counter: 0, done: false }
    }

    /// Seals the next chunk: exactly [`CHUNK_LEN`] bytes unless `last`, at most that if
    /// `last`. Returns the ciphertext (plaintext length + 16).
    pub fn seal_chunk(&mut self, plain: &[u8], last: bool) -> Result<Vec<u8>, ArchiveError> {
        check(self.done, self.counter, plain.len(), last)?;
        let key = self.key.as_ref().ok_or(ArchiveError::Crypto(CryptoError::Library))?;
        let mut out = Vec::with_capacity(plain.len() + TAG_LEN);
        out.extend_from_slice(plain);
        key.seal_in_place_append_tag(nonce(self.counter, last), Aad::empty(), &mut out)
            .map_err(|_| ArchiveError::Crypto(CryptoError::Library))?;
        self.counter += 1;
        self.done = last;
        Ok(out)
    }
}

/// Opens a stream chunk by chunk, in order.
pub struct ArchiveOpener {
    key: Option<LessSafeKey>,
    counter: u64,
    done: bool,
}

impl ArchiveOpener {
    /// An opener under `key`.
    pub fn new(key_bytes: &[u8; 32]) -> Self {
        Self { key: key(key_bytes), counter: 0, done: false }
    }

    /// Opens the next chunk; `last` says whether the caller expects it to be the last (from
    /// the archive's known size). A chunk sealed with the other flag does not open.
    pub fn open_chunk(&mut self, ct: &[u8], last: bool) -> Result<Vec<u8>, ArchiveError> {
        let plain_len = ct.len().checked_sub(TAG_LEN).ok_or(ArchiveError::ChunkLength)?;
        check(self.done, self.counter, plain_len, last)?;
        let key = self.key.as_ref().ok_or(ArchiveError::Crypto(CryptoError::Library))?;
        let mut buf = ct.to_vec();
        let len = key
            .open_in_place(nonce(self.counter, last), Aad::empty(), &mut buf)
            .map_err(|_| ArchiveError::Open)?
            .len();
        buf.truncate(len);
        self.counter += 1;
        self.done = last;
        Ok(buf)
    }
}
