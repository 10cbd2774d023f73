//! The root chain (Double Ratchet specification, sections 2.2 and 5.2: `KDF_RK`).

use crate::crypto::kdf::hkdf_sha256;
use crate::crypto::{CryptoError, Secret32};

use super::chain_key::ChainKey;

/// `info` for `KDF_RK`.
pub(crate) const KDF_RK_INFO: &[u8] = b"Tacit v1 ratchet root";

/// A root key.
#[derive(Clone)]
pub(crate) struct RootKey(pub(crate) Secret32);

impl RootKey {
    /// `KDF_RK(rk, dh_out)`: HKDF-SHA-256 with `rk` as salt and `dh_out` as input key
    /// material, 64 bytes of output split into the next root key and a chain key
    /// (Double Ratchet section 5.2, "recommended cryptographic algorithms").
    pub(crate) fn ratchet(&self, dh_out: &Secret32) -> Result<(RootKey, ChainKey), CryptoError> {
        let mut okm = zeroize::Zeroizing::new([0u8; 64]);
        hkdf_sha256(self.0.expose(), dh_out.expose(), &[KDF_RK_INFO], okm.as_mut())?;
        let (rk, ck) = okm.split_at(32);
        let mut root = Secret32([0u8; 32]);
        root.0.copy_from_slice(rk);
        let mut chain = Secret32([0u8; 32]);
        chain.0.copy_from_slice(ck);
        Ok((RootKey(root), ChainKey::new(chain, 0)))
    }
}
