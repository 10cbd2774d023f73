//! HMAC-SHA-256 (RFC 2104) and HKDF-SHA-256 (RFC 5869) through RustCrypto (`hmac`, `hkdf`,
//! `sha2`, which uses the SHA extensions where the CPU has them), and SHA-512 through AWS-LC.
//!
//! The per-message key schedule is a handful of 32-byte HMACs; RustCrypto's in-process
//! implementation measured faster for these than a call through AWS-LC's EVP layer.

use aws_lc_rs::digest;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

use super::{CryptoError, Secret32};

type HmacSha256 = hmac::Hmac<Sha256>;

/// HKDF-SHA-256: extract with `salt`, expand with `info` into `out`.
pub(crate) fn hkdf_sha256(
    salt: &[u8],
    ikm: &[u8],
    info: &[&[u8]],
    out: &mut [u8],
) -> Result<(), CryptoError> {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(salt), ikm);
    hk.expand_multi_info(info, out).map_err(|_| CryptoError::Library)
}

/// SHA-256 (FIPS 180-4) of the concatenation of `parts`.
pub(crate) fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// An HMAC-SHA-256 key, keyed once and used for several messages.
pub(crate) struct HmacKey(HmacSha256);

impl HmacKey {
    pub(crate) fn new(key: &Secret32) -> Self {
        // HMAC accepts keys of any length; this cannot fail.
        match <HmacSha256 as KeyInit>::new_from_slice(key.expose()) {
            Ok(m) => Self(m),
            Err(_) => Self(<HmacSha256 as KeyInit>::new(&Default::default())),
        }
    }

    pub(crate) fn mac(&self, data: &[u8]) -> Secret32 {
        let mut m = self.0.clone();
        m.update(data);
        Secret32(m.finalize().into_bytes().into())
    }
}

/// SHA-512 of the concatenation of `parts`.
pub(crate) fn sha512(parts: &[&[u8]]) -> [u8; 64] {
    let mut ctx = digest::Context::new(&digest::SHA512);
    for p in parts {
        ctx.update(p);
    }
    let d = ctx.finish();
    let mut out = [0u8; 64];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5869_case1() {
        let ikm = [0x0bu8; 22];
        let salt = hex::decode("000102030405060708090a0b0c").unwrap();
        let info = hex::decode("f0f1f2f3f4f5f6f7f8f9").unwrap();
        let mut okm = [0u8; 42];
        hkdf_sha256(&salt, &ikm, &[&info], &mut okm).unwrap();
        assert_eq!(
            hex::encode(okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }

    #[test]
    fn rfc4231_case2() {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(b"Jefe");
        // RFC 4231 uses a 4-byte key; HMAC pads keys with zeros, so a zero-extended 32-byte
        // key gives the same tag.
        let tag = HmacKey::new(&Secret32(k)).mac(b"what do ya want for nothing?");
        assert_eq!(hex::encode(tag.0), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
