//! ML-KEM-1024 (FIPS 203) through AWS-LC.
//!
//! Decapsulation keys are stored in FIPS 203's expanded form (3,168 bytes), which
//! `aws-lc-rs` 1.19 can export and re-import; the encapsulation key is kept beside it.

use std::sync::Arc;

use aws_lc_rs::kem::{Ciphertext, DecapsulationKey, EncapsulationKey, ML_KEM_1024};
use zeroize::Zeroizing;

use super::{CryptoError, Secret32};

/// Length of an ML-KEM-1024 encapsulation (public) key.
pub const PUBLIC_KEY_LEN: usize = 1568;
/// Length of an ML-KEM-1024 ciphertext.
pub const CIPHERTEXT_LEN: usize = 1568;
/// Length of an ML-KEM-1024 expanded decapsulation key.
pub(crate) const SECRET_KEY_LEN: usize = 3168;

/// An ML-KEM-1024 encapsulation key (the parsed AWS-LC key is cached).
#[derive(Clone)]
pub struct KemPublic(Arc<([u8; PUBLIC_KEY_LEN], EncapsulationKey)>);

impl PartialEq for KemPublic {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}
impl Eq for KemPublic {}

impl KemPublic {
    /// Parses an encapsulation key after FIPS 203's modulus check (section 7.2, "Input
    /// checking"): AWS-LC's import copies the bytes and would only check at encapsulation.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; PUBLIC_KEY_LEN] = bytes.try_into().map_err(|_| CryptoError::InvalidPublicKey)?;
        if !modulus_check(&arr) {
            return Err(CryptoError::InvalidPublicKey);
        }
        let ek = EncapsulationKey::new(&ML_KEM_1024, &arr).map_err(|_| CryptoError::InvalidPublicKey)?;
        Ok(Self(Arc::new((arr, ek))))
    }

    /// The 1,568-byte encoding.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0.0
    }

    /// Encapsulates to this key: returns the ciphertext and the 32-byte shared secret.
    pub(crate) fn encapsulate(&self) -> Result<(KemCiphertext, Secret32), CryptoError> {
        let (ct, ss) = self.0.1.encapsulate().map_err(|_| CryptoError::KemFailed)?;
        let ct: [u8; CIPHERTEXT_LEN] = ct.as_ref().try_into().map_err(|_| CryptoError::Library)?;
        let mut out = Secret32([0u8; 32]);
        if ss.as_ref().len() != 32 {
            return Err(CryptoError::Library);
        }
        out.0.copy_from_slice(ss.as_ref());
        Ok((KemCiphertext(Box::new(ct)), out))
    }
}

/// ML-KEM's q.
const Q: u16 = 3329;

/// FIPS 203 section 7.2: `ByteEncode12(ByteDecode12(ek[0:384k])) == ek[0:384k]`, which
/// holds exactly when every 12-bit coefficient of the encoded vector `t` is below q.
fn modulus_check(ek: &[u8; PUBLIC_KEY_LEN]) -> bool {
    // k = 4: 4 polynomials of 256 coefficients, 3 bytes per pair of coefficients.
    ek.chunks_exact(3).take(4 * 256 / 2).all(|b| match b {
        [b0, b1, b2] => {
            let d1 = u16::from(*b0) | (u16::from(*b1 & 0x0f) << 8);
            let d2 = (u16::from(*b1) >> 4) | (u16::from(*b2) << 4);
            d1 < Q && d2 < Q
        }
        _ => false,
    })
}

impl core::fmt::Debug for KemPublic {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("KemPublic(..)")
    }
}

/// An ML-KEM-1024 ciphertext.
#[derive(Clone, PartialEq, Eq)]
pub struct KemCiphertext(pub(crate) Box<[u8; CIPHERTEXT_LEN]>);

impl KemCiphertext {
    /// Wraps a ciphertext (ML-KEM accepts any byte string of the right length).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; CIPHERTEXT_LEN] = bytes.try_into().map_err(|_| CryptoError::KemFailed)?;
        Ok(Self(Box::new(arr)))
    }
    /// The 1,568-byte encoding.
    pub fn as_bytes(&self) -> &[u8; CIPHERTEXT_LEN] {
        &self.0
    }
}

impl core::fmt::Debug for KemCiphertext {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("KemCiphertext(..)")
    }
}

/// An ML-KEM-1024 key pair.
#[derive(Clone)]
pub(crate) struct KemSecret {
    bytes: Arc<Zeroizing<Vec<u8>>>,
    key: Arc<DecapsulationKey>,
    public: KemPublic,
}

impl KemSecret {
    /// Generates a key pair with AWS-LC's DRBG (see the module note on randomness).
    pub(crate) fn generate() -> Result<Self, CryptoError> {
        let dk = DecapsulationKey::generate(&ML_KEM_1024).map_err(|_| CryptoError::Library)?;
        let ek = dk.encapsulation_key().map_err(|_| CryptoError::Library)?;
        let ek_bytes = ek.key_bytes().map_err(|_| CryptoError::Library)?;
        let public = KemPublic::from_bytes(ek_bytes.as_ref())?;
        let dk_bytes = dk.key_bytes().map_err(|_| CryptoError::Library)?;
        let bytes = Zeroizing::new(dk_bytes.as_ref().to_vec());
        Ok(Self { bytes: Arc::new(bytes), key: Arc::new(dk), public })
    }

    /// Restores a key pair from its stored parts; fails unless the public key is the one
    /// embedded in the expanded decapsulation key (FIPS 203 section 7.3's consistency check).
    pub(crate) fn from_parts(secret: &[u8], public: KemPublic) -> Result<Self, CryptoError> {
        if secret.len() != SECRET_KEY_LEN {
            return Err(CryptoError::KemFailed);
        }
        // dk = dk_PKE (1536 bytes) || ek (1568) || H(ek) (32) || z (32).
        let embedded = secret.get(1536..1536 + PUBLIC_KEY_LEN).ok_or(CryptoError::KemFailed)?;
        if embedded != public.as_bytes().as_slice() {
            return Err(CryptoError::KemFailed);
        }
        let hash =
            secret.get(1536 + PUBLIC_KEY_LEN..1536 + PUBLIC_KEY_LEN + 32).ok_or(CryptoError::KemFailed)?;
        let h = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA3_256, public.as_bytes());
        if h.as_ref() != hash {
            return Err(CryptoError::KemFailed);
        }
        let key = DecapsulationKey::new(&ML_KEM_1024, secret).map_err(|_| CryptoError::KemFailed)?;
        Ok(Self { bytes: Arc::new(Zeroizing::new(secret.to_vec())), key: Arc::new(key), public })
    }

    pub(crate) fn public(&self) -> &KemPublic {
        &self.public
    }

    pub(crate) fn secret_bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    /// Decapsulates; ML-KEM's implicit rejection means a forged ciphertext yields an
    /// unrelated secret, which the first message's AEAD then rejects.
    pub(crate) fn decapsulate(&self, ct: &KemCiphertext) -> Result<Secret32, CryptoError> {
        let ss =
            self.key.decapsulate(Ciphertext::from(ct.0.as_slice())).map_err(|_| CryptoError::KemFailed)?;
        let mut out = Secret32([0u8; 32]);
        if ss.as_ref().len() != 32 {
            return Err(CryptoError::Library);
        }
        out.0.copy_from_slice(ss.as_ref());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modulus_check_refuses_out_of_range_coefficients() {
        let k = KemSecret::generate().unwrap();
        let mut ek = *k.public().as_bytes();
        assert!(KemPublic::from_bytes(&ek).is_ok());
        // Coefficient 0 := 3329 (q), the smallest value out of range.
        ek[0] = (3329 & 0xff) as u8;
        ek[1] = (ek[1] & 0xf0) | (3329 >> 8) as u8;
        assert_eq!(KemPublic::from_bytes(&ek), Err(CryptoError::InvalidPublicKey));
        // 3328 is fine.
        ek[0] = (3328 & 0xff) as u8;
        assert!(KemPublic::from_bytes(&ek).is_ok());
        // The seed rho (last 32 bytes) is not checked.
        let mut ek2 = *k.public().as_bytes();
        ek2[PUBLIC_KEY_LEN - 1] = 0xff;
        assert!(KemPublic::from_bytes(&ek2).is_ok());
    }

    #[test]
    fn round_trip_and_restore() {
        let k = KemSecret::generate().unwrap();
        let (ct, ss) = k.public().encapsulate().unwrap();
        let k2 = KemSecret::from_parts(k.secret_bytes(), k.public().clone()).unwrap();
        assert_eq!(k2.decapsulate(&ct).unwrap().0, ss.0);
        let other = KemSecret::generate().unwrap();
        assert!(KemSecret::from_parts(k.secret_bytes(), other.public().clone()).is_err());
    }
}
