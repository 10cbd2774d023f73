//! The only place Tacit touches cryptographic primitives.
//!
//! Everything here wraps a vetted implementation: AWS-LC (through `aws-lc-rs`) for X25519,
//! Ed25519 signing, ML-KEM-1024, AES-256-GCM-SIV, HMAC/HKDF-SHA-256 and SHA-512, and
//! `ed25519-dalek` for *strict* Ed25519 verification. No primitive is implemented here; this
//! module only fixes parameters, types the keys, validates encodings and maps errors.
//!
//! Randomness: X25519 and Ed25519 private keys are made from bytes drawn from the caller's
//! RNG, so they are reproducible in tests. ML-KEM key generation and encapsulation draw from
//! AWS-LC's own DRBG (seeded from the operating system), because `aws-lc-rs` offers no API
//! that accepts caller randomness for them; this is the one exception to "no ambient
//! randomness" and is recorded in `docs/ARCHITECTURE.md`.

pub(crate) mod aead;
pub(crate) mod ed25519;
pub(crate) mod kdf;
pub(crate) mod kem;
pub(crate) mod x25519;

use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A primitive refused its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// A public key has a non-canonical or otherwise invalid encoding.
    #[error("invalid public key")]
    InvalidPublicKey,
    /// A Diffie-Hellman result was all zeros (a small-order peer key).
    #[error("degenerate Diffie-Hellman result")]
    DegenerateSharedSecret,
    /// A signature did not verify.
    #[error("bad signature")]
    BadSignature,
    /// An AEAD tag did not verify.
    #[error("decryption failed")]
    DecryptionFailed,
    /// A KEM ciphertext or key was rejected.
    #[error("KEM operation failed")]
    KemFailed,
    /// The underlying library reported an internal failure.
    #[error("internal cryptographic library failure")]
    Library,
}

/// A 32-byte secret: zeroized on drop, never printed, compared in constant time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct Secret32(pub(crate) [u8; 32]);

impl Secret32 {
    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl subtle::ConstantTimeEq for Secret32 {
    fn ct_eq(&self, other: &Self) -> subtle::Choice {
        self.0.ct_eq(&other.0)
    }
}

/// Fills a fresh 32-byte secret from the caller's RNG.
pub(crate) fn random_secret<R: rand_core::RngCore + rand_core::CryptoRng>(rng: &mut R) -> Secret32 {
    let mut s = Secret32([0u8; 32]);
    rng.fill_bytes(&mut s.0);
    s
}
