//! Encryption of a history archive (`docs/PROTOCOL.md` §11): the STREAM construction of age
//! (age specification, "Payload"; Hoang, Reyhanitabar, Rogaway and Vizár, "Online
//! Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance"), with Tacit's AEAD.
//!
//! The plaintext is cut into chunks of [`CHUNK_LEN`] bytes; only the last may be shorter, and
//! it is empty only when it is the only chunk. Chunk `i` is sealed under a subkey of the
//! archive key with the nonce `i` (11 bytes, big-endian) || `0x01` for the last chunk and
//! `0x00` for every other, so dropping, reordering or cutting chunks off (the last flag)
//! fails to authenticate. The archive key is a fresh random key used for one archive only.
//!
//! Sans-IO: the caller feeds chunks in order and knows which one is last (from the
//! ciphertext size, see [`sealed_len`] and [`plain_len`]).

use thiserror::Error;

use crate::crypto::aead::{self, NONCE_LEN, TAG_LEN};
use crate::crypto::kdf::hkdf_sha256;
use crate::crypto::{CryptoError, Secret32};

/// Plaintext bytes per chunk (age's 64 KiB); every chunk but the last has exactly this many.
pub const CHUNK_LEN: usize = 65_536;
/// Ciphertext bytes of a full chunk: the plaintext and the 16-byte tag.
pub const SEALED_CHUNK_LEN: usize = CHUNK_LEN + TAG_LEN;
/// Ciphertext bytes added to each chunk (the AEAD tag).
pub const CHUNK_OVERHEAD: usize = TAG_LEN;

const INFO: &[u8] = b"Tacit v1 history archive";
const SALT: [u8; 32] = [0u8; 32];
const LAST: u8 = 0x01;
const NOT_LAST: u8 = 0x00;

/// Why a chunk could not be sealed or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// A chunk other than the last is not exactly [`CHUNK_LEN`] bytes of plaintext (or
    /// [`SEALED_CHUNK_LEN`] of ciphertext), the last is longer, or an empty last chunk
    /// follows other chunks.
    #[error("archive chunk has a bad length")]
    ChunkLength,
    /// The last chunk was already processed.
    #[error("archive stream already ended")]
    Finished,
    /// The chunk does not authenticate: tampered, out of order, or its "last" flag is wrong.
    #[error("archive chunk does not authenticate")]
    Open,
    /// A primitive failed.
    #[error("cryptographic failure: {0}")]
    Crypto(#[from] CryptoError),
}

/// Ciphertext length of an archive of `plain_len` bytes: one tag per chunk, at least one
/// chunk. `None` if it would overflow `u64`.
pub fn sealed_len(plain_len: u64) -> Option<u64> {
    let chunk = CHUNK_LEN as u64;
    let chunks = plain_len.div_ceil(chunk).max(1);
    chunks.checked_mul(TAG_LEN as u64)?.checked_add(plain_len)
}

/// Plaintext length of an archive of `sealed_len` ciphertext bytes, `None` if no archive has
/// that length (the inverse of [`sealed_len`]).
pub fn plain_len(sealed_len: u64) -> Option<u64> {
    let full = SEALED_CHUNK_LEN as u64;
    let chunks = sealed_len.div_ceil(full).max(1);
    let plain = sealed_len.checked_sub(chunks.checked_mul(TAG_LEN as u64)?)?;
    (self::sealed_len(plain) == Some(sealed_len)).then_some(plain)
}

fn subkey(key: &[u8; 32]) -> Result<Secret32, CryptoError> {
    let mut k = Secret32([0u8; 32]);
    hkdf_sha256(&SALT, key, &[INFO], &mut k.0)?;
    Ok(k)
}

fn nonce(counter: u64, last: bool) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    // Bytes 0..3 of the 11-byte counter stay zero: a u64 counter fills bytes 3..11.
    if let Some(c) = n.get_mut(3..11) {
        c.copy_from_slice(&counter.to_be_bytes());
    }
    if let Some(flag) = n.last_mut() {
        *flag = if last { LAST } else { NOT_LAST };
    }
    n
}

/// Where a stream is: the next chunk's number, or ended.
struct Position {
    key: Result<Secret32, CryptoError>,
    counter: u64,
    finished: bool,
}

impl Position {
    fn new(key: &[u8; 32]) -> Self {
        Self { key: subkey(key), counter: 0, finished: false }
    }

    /// Checks the plaintext length of chunk `self.counter`.
    fn check(&self, plain_len: usize, last: bool) -> Result<(), ArchiveError> {
        if self.finished {
            return Err(ArchiveError::Finished);
        }
        let ok = if last {
            plain_len <= CHUNK_LEN && (plain_len > 0 || self.counter == 0)
        } else {
            plain_len == CHUNK_LEN
        };
        if !ok {
            return Err(ArchiveError::ChunkLength);
        }
        // 2^64 chunks of 64 KiB cannot be reached; refuse rather than wrap.
        if self.counter == u64::MAX {
            return Err(ArchiveError::ChunkLength);
        }
        Ok(())
    }

    fn advance(&mut self, last: bool) {
        self.counter = self.counter.saturating_add(1);
        self.finished = last;
    }

    fn key(&self) -> Result<&Secret32, ArchiveError> {
        self.key.as_ref().map_err(|e| ArchiveError::Crypto(*e))
    }
}

/// Seals an archive chunk by chunk. Holds the subkey (zeroized on drop, never printed).
pub struct ArchiveSealer(Position);

impl ArchiveSealer {
    /// A sealer for a new archive under `key`, a fresh random 32-byte key used for this
    /// archive only.
    pub fn new(key: &[u8; 32]) -> Self {
        Self(Position::new(key))
    }

    /// Seals the next chunk: exactly [`CHUNK_LEN`] bytes unless `last`; the last chunk may be
    /// shorter, and empty only if it is the only chunk. Returns `plain.len() + 16` bytes.
    pub fn seal_chunk(&mut self, plain: &[u8], last: bool) -> Result<Vec<u8>, ArchiveError> {
        self.0.check(plain.len(), last)?;
        let mut buf = Vec::with_capacity(plain.len().saturating_add(TAG_LEN));
        buf.extend_from_slice(plain);
        aead::seal(self.0.key()?, &nonce(self.0.counter, last), &[], &mut buf)?;
        self.0.advance(last);
        Ok(buf)
    }

    /// Whether the last chunk was sealed.
    pub fn is_finished(&self) -> bool {
        self.0.finished
    }
}

/// Opens an archive chunk by chunk, in order. A chunk that fails leaves the opener as it
/// was (the same chunk may be tried again, for example after downloading it again).
pub struct ArchiveOpener(Position);

impl ArchiveOpener {
    /// An opener for an archive sealed under `key`.
    pub fn new(key: &[u8; 32]) -> Self {
        Self(Position::new(key))
    }

    /// Opens the next chunk; `last` says whether the caller expects it to be the last one
    /// (it knows from the archive's size). Returns its plaintext.
    pub fn open_chunk(&mut self, ct: &[u8], last: bool) -> Result<Vec<u8>, ArchiveError> {
        let plain_len = ct.len().checked_sub(TAG_LEN).ok_or(ArchiveError::ChunkLength)?;
        self.0.check(plain_len, last)?;
        let mut buf = ct.to_vec();
        aead::open(self.0.key()?, &nonce(self.0.counter, last), &[], &mut buf).map_err(|e| match e {
            CryptoError::DecryptionFailed => ArchiveError::Open,
            e => ArchiveError::Crypto(e),
        })?;
        self.0.advance(last);
        Ok(buf)
    }

    /// Whether the last chunk was opened: until it is, the archive is incomplete (cut off).
    pub fn is_finished(&self) -> bool {
        self.0.finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7u8; 32];

    fn seal_all(plain: &[u8]) -> Vec<Vec<u8>> {
        let mut s = ArchiveSealer::new(&KEY);
        let mut out = Vec::new();
        let mut chunks: Vec<&[u8]> = plain.chunks(CHUNK_LEN).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let n = chunks.len();
        for (i, c) in chunks.into_iter().enumerate() {
            out.push(s.seal_chunk(c, i + 1 == n).unwrap());
        }
        assert!(s.is_finished());
        out
    }

    fn open_all(chunks: &[Vec<u8>]) -> Result<Vec<u8>, ArchiveError> {
        let mut o = ArchiveOpener::new(&KEY);
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            out.extend_from_slice(&o.open_chunk(c, i + 1 == chunks.len())?);
        }
        assert!(o.is_finished());
        Ok(out)
    }

    #[test]
    fn round_trips_and_lengths() {
        for len in [0usize, 1, 1000, CHUNK_LEN - 1, CHUNK_LEN, CHUNK_LEN + 1, 3 * CHUNK_LEN + 17] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let chunks = seal_all(&plain);
            let total: usize = chunks.iter().map(Vec::len).sum();
            assert_eq!(Some(total as u64), sealed_len(len as u64), "sealed_len({len})");
            assert_eq!(plain_len(total as u64), Some(len as u64), "plain_len of {total}");
            assert_eq!(open_all(&chunks).unwrap(), plain);
        }
        // Lengths no archive has: a lone tag fragment, a full chunk without its last chunk.
        assert_eq!(plain_len(0), None);
        assert_eq!(plain_len(15), None);
        assert_eq!(plain_len(16), Some(0));
        assert_eq!(plain_len(SEALED_CHUNK_LEN as u64 + 16), None);
        assert_eq!(plain_len(SEALED_CHUNK_LEN as u64 + 17), Some(CHUNK_LEN as u64 + 1));
        assert_eq!(sealed_len(u64::MAX), None);
    }

    #[test]
    fn refuses_tampering_truncation_and_reordering() {
        let plain = vec![0x42u8; 2 * CHUNK_LEN + 5];
        let chunks = seal_all(&plain);
        assert_eq!(chunks.len(), 3);
        // Positive control.
        assert!(open_all(&chunks).is_ok());
        let mut bad = chunks.clone();
        bad[1][100] ^= 1;
        assert_eq!(open_all(&bad), Err(ArchiveError::Open));
        // Reordered (two full chunks swapped).
        let swapped = vec![chunks[1].clone(), chunks[0].clone(), chunks[2].clone()];
        assert_eq!(open_all(&swapped), Err(ArchiveError::Open));
        // Truncated at a chunk boundary: the second chunk opened as last fails.
        assert_eq!(open_all(&chunks[..2]), Err(ArchiveError::Open));
        // The last chunk opened as not last: wrong length.
        let mut o = ArchiveOpener::new(&KEY);
        o.open_chunk(&chunks[0], false).unwrap();
        o.open_chunk(&chunks[1], false).unwrap();
        assert_eq!(o.open_chunk(&chunks[2], false), Err(ArchiveError::ChunkLength));
        // A failed chunk leaves the opener usable.
        assert_eq!(o.open_chunk(&bad[1], true), Err(ArchiveError::Open));
        assert_eq!(o.open_chunk(&chunks[2], true).unwrap(), vec![0x42u8; 5]);
        assert!(o.is_finished());
        assert_eq!(o.open_chunk(&chunks[2], true), Err(ArchiveError::Finished));
        // A full last chunk, opened as not last, fails to authenticate.
        let one = seal_all(&vec![1u8; CHUNK_LEN]);
        let mut o = ArchiveOpener::new(&KEY);
        assert_eq!(o.open_chunk(&one[0], false), Err(ArchiveError::Open));
        assert_eq!(o.open_chunk(&one[0], true).unwrap(), vec![1u8; CHUNK_LEN]);
        // Another key.
        let mut o = ArchiveOpener::new(&[8u8; 32]);
        assert_eq!(o.open_chunk(&chunks[0], false), Err(ArchiveError::Open));
        // Too short to hold a tag.
        let mut o = ArchiveOpener::new(&KEY);
        assert_eq!(o.open_chunk(&[0u8; 15], true), Err(ArchiveError::ChunkLength));
    }

    #[test]
    fn sealer_refuses_bad_lengths() {
        let mut s = ArchiveSealer::new(&KEY);
        assert_eq!(s.seal_chunk(&[0u8; 10], false), Err(ArchiveError::ChunkLength));
        assert_eq!(s.seal_chunk(&vec![0u8; CHUNK_LEN + 1], true), Err(ArchiveError::ChunkLength));
        s.seal_chunk(&vec![0u8; CHUNK_LEN], false).unwrap();
        // An empty last chunk after others.
        assert_eq!(s.seal_chunk(&[], true), Err(ArchiveError::ChunkLength));
        s.seal_chunk(&[1], true).unwrap();
        assert_eq!(s.seal_chunk(&[1], true), Err(ArchiveError::Finished));
        // The only chunk may be empty.
        let mut s = ArchiveSealer::new(&KEY);
        assert_eq!(s.seal_chunk(&[], true).unwrap().len(), TAG_LEN);
    }

    #[test]
    fn nonces_are_counter_and_flag() {
        assert_eq!(nonce(0, false), [0u8; 12]);
        assert_eq!(nonce(1, true), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
        assert_eq!(nonce(0x0102, false), [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0]);
    }
}
