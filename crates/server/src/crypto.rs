//! The server's only cryptography of its own: random challenges and tokens, and SHA-256 of
//! tokens (everything else is signature checking in `tacit-protocol`).

use crate::error::Failure;

/// SHA-256.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    <[u8; 32]>::try_from(d.as_ref()).unwrap_or_default()
}

/// 32 bytes from the operating system's CSPRNG (through AWS-LC).
pub(crate) fn random32() -> Result<[u8; 32], Failure> {
    let mut out = [0u8; 32];
    aws_lc_rs::rand::fill(&mut out).map_err(|_| Failure::Internal("random generator failed".into()))?;
    Ok(out)
}

/// Constant-time equality of two hashes.
pub(crate) fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a.as_slice(), b.as_slice()).into()
}
