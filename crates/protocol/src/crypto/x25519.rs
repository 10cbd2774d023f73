//! X25519 (RFC 7748) through AWS-LC, with strict public-key validation.

use std::sync::Arc;

use aws_lc_rs::agreement::{self, UnparsedPublicKey, X25519};
use subtle::ConstantTimeEq;

use super::{CryptoError, Secret32};

/// p = 2^255 - 19, little-endian.
const P_LE: [u8; 32] = {
    let mut p = [0xffu8; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    p
};

/// An X25519 public key whose encoding is canonical: the top bit is clear and u < p.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct X25519Public([u8; 32]);

impl X25519Public {
    /// Length of the encoding.
    pub const LEN: usize = 32;

    /// Parses and validates a public key (RFC 7748 section 5 encodings with u >= p or the
    /// top bit set are refused, so one key has exactly one encoding).
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, CryptoError> {
        // Compare u with p as little-endian integers (public data: variable time is fine).
        for (b, p) in bytes.iter().rev().zip(P_LE.iter().rev()) {
            if b < p {
                return Ok(Self(bytes));
            }
            if b > p {
                return Err(CryptoError::InvalidPublicKey);
            }
        }
        Err(CryptoError::InvalidPublicKey) // u == p
    }

    /// The 32-byte encoding.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl core::fmt::Debug for X25519Public {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "X25519Public(")?;
        for b in self.0.iter().take(4) {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// An X25519 private key. The parsed AWS-LC key is cached so a Diffie-Hellman costs one
/// scalar multiplication; the raw bytes are kept (zeroized on drop) for serialisation.
#[derive(Clone)]
pub(crate) struct X25519Secret {
    bytes: Secret32,
    key: Arc<agreement::PrivateKey>,
    public: X25519Public,
}

impl X25519Secret {
    /// Makes a key from 32 secret bytes (clamping is applied by X25519 itself).
    pub(crate) fn from_bytes(bytes: Secret32) -> Result<Self, CryptoError> {
        let key = agreement::PrivateKey::from_private_key(&X25519, bytes.expose())
            .map_err(|_| CryptoError::Library)?;
        let pub_key = key.compute_public_key().map_err(|_| CryptoError::Library)?;
        let mut public = [0u8; 32];
        if pub_key.as_ref().len() != 32 {
            return Err(CryptoError::Library);
        }
        public.copy_from_slice(pub_key.as_ref());
        Ok(Self { bytes, key: Arc::new(key), public: X25519Public(public) })
    }

    /// Generates a key from the caller's RNG.
    pub(crate) fn generate<R: rand_core::RngCore + rand_core::CryptoRng>(
        rng: &mut R,
    ) -> Result<Self, CryptoError> {
        Self::from_bytes(super::random_secret(rng))
    }

    pub(crate) fn public(&self) -> &X25519Public {
        &self.public
    }

    pub(crate) fn secret_bytes(&self) -> &Secret32 {
        &self.bytes
    }

    /// X25519(self, peer). An all-zero result (small-order peer key) is an error, as
    /// PQXDH revision 3 section 4.8 and RFC 7748 section 6.1 require.
    pub(crate) fn diffie_hellman(&self, peer: &X25519Public) -> Result<Secret32, CryptoError> {
        let peer_key = UnparsedPublicKey::new(&X25519, peer.as_bytes());
        let out = agreement::agree(&self.key, peer_key, CryptoError::DegenerateSharedSecret, |s| {
            let mut out = Secret32([0u8; 32]);
            if s.len() != 32 {
                return Err(CryptoError::Library);
            }
            out.0.copy_from_slice(s);
            Ok(out)
        })?;
        if bool::from(out.0.ct_eq(&[0u8; 32])) {
            return Err(CryptoError::DegenerateSharedSecret);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7748_vector() {
        // RFC 7748 section 6.1.
        let a = hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a").unwrap();
        let b_pub = hex::decode("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f").unwrap();
        let k = hex::decode("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742").unwrap();
        let a = X25519Secret::from_bytes(Secret32(a.try_into().unwrap())).unwrap();
        let b = X25519Public::from_bytes(b_pub.try_into().unwrap()).unwrap();
        assert_eq!(a.diffie_hellman(&b).unwrap().0.to_vec(), k);
    }

    #[test]
    fn non_canonical_and_small_order_rejected() {
        assert!(X25519Public::from_bytes(P_LE).is_err());
        let mut high = [0u8; 32];
        high[31] = 0x80;
        assert!(X25519Public::from_bytes(high).is_err());
        let mut p_minus_1 = P_LE;
        p_minus_1[0] -= 1;
        assert!(X25519Public::from_bytes(p_minus_1).is_ok());
        // u = 0 and u = 1 are small-order points: the DH result is all zeros.
        let s = X25519Secret::from_bytes(Secret32([7u8; 32])).unwrap();
        for u in [0u8, 1] {
            let mut k = [0u8; 32];
            k[0] = u;
            let k = X25519Public::from_bytes(k).unwrap();
            assert!(s.diffie_hellman(&k).is_err());
        }
    }
}
