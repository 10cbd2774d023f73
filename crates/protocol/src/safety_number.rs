//! Safety numbers, after Signal's numeric fingerprints (`NumericFingerprintGenerator`,
//! display version 0, 5,200 iterations).
//!
//! Each side's fingerprint is `SHA-512` iterated 5,200 times: starting from
//! `version (u16 = 0) || key || name`, each round computes `SHA-512(previous || key)`.
//! The first 30 bytes give 30 digits (six 5-byte big-endian chunks, each mod 100,000);
//! the two sides' digit strings are sorted and concatenated into 60 digits, shown as 12
//! groups of 5. The key is the **account** identity key and the name the account name, so
//! adding or revoking devices never changes a safety number.
//!
//! The scannable form is `0x01 || local[0..32] || remote[0..32]`; comparing a scanned
//! payload checks, in constant time, that its local half is our remote one and vice versa.

use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::crypto::kdf::sha512;
use crate::identity::{AccountKey, AccountName};

/// Rounds of SHA-512 per side (Signal's figure).
pub const ITERATIONS: u32 = 5_200;
/// Version of the display format hashed into every fingerprint.
const DISPLAY_VERSION: u16 = 0;
/// Version byte of the scannable payload.
pub const SCANNABLE_VERSION: u8 = 1;
/// Length of the scannable payload.
pub const SCANNABLE_LEN: usize = 1 + 32 + 32;

/// Why a scanned payload did not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SafetyNumberError {
    /// The payload is not a Tacit safety number of a known version.
    #[error("not a safety number payload of a supported version")]
    Malformed,
    /// The payload is well formed but belongs to different keys: the identity may have
    /// been replaced.
    #[error("safety numbers do not match")]
    Mismatch,
}

/// One side's iterated hash (the whole 64 bytes), over any key encoding.
pub(crate) fn fingerprint(key: &[u8], stable_id: &[u8]) -> [u8; 64] {
    let mut hash = Vec::with_capacity(64 + key.len());
    hash.extend_from_slice(&DISPLAY_VERSION.to_be_bytes());
    hash.extend_from_slice(key);
    hash.extend_from_slice(stable_id);
    let mut out = [0u8; 64];
    for _ in 0..ITERATIONS {
        out = sha512(&[&hash, key]);
        hash.clear();
        hash.extend_from_slice(&out);
    }
    out
}

/// 30 digits from the first 30 bytes of a fingerprint.
fn digits(fp: &[u8; 64]) -> String {
    let mut s = String::with_capacity(30);
    for chunk in fp.chunks_exact(5).take(6) {
        let v = chunk.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)) % 100_000;
        s.push_str(&format!("{v:05}"));
    }
    s
}

fn combine(local: &str, remote: &str) -> String {
    if local < remote { format!("{local}{remote}") } else { format!("{remote}{local}") }
}

/// The safety number between two accounts.
pub struct SafetyNumber {
    local: [u8; 64],
    remote: [u8; 64],
    digits: String,
}

impl SafetyNumber {
    /// Computes the safety number between the local and the remote account.
    pub fn new(
        local_name: &AccountName,
        local_key: &AccountKey,
        remote_name: &AccountName,
        remote_key: &AccountKey,
    ) -> Self {
        let local = fingerprint(local_key.as_bytes(), local_name.as_str().as_bytes());
        let remote = fingerprint(remote_key.as_bytes(), remote_name.as_str().as_bytes());
        Self::from_fingerprints(local, remote)
    }

    fn from_fingerprints(local: [u8; 64], remote: [u8; 64]) -> Self {
        let digits = combine(&digits(&local), &digits(&remote));
        Self { local, remote, digits }
    }

    /// The 60 digits, with no separators.
    pub fn digits(&self) -> &str {
        &self.digits
    }

    /// Twelve groups of five digits separated by spaces.
    pub fn display(&self) -> String {
        let mut out = String::with_capacity(71);
        for (i, c) in self.digits.chars().enumerate() {
            if i > 0 && i % 5 == 0 {
                out.push(' ');
            }
            out.push(c);
        }
        out
    }

    /// Whether `typed` (spaces and other separators ignored) equals this safety number,
    /// compared in constant time.
    pub fn matches_digits(&self, typed: &str) -> bool {
        let clean: String = typed.chars().filter(|c| !c.is_whitespace() && *c != '-').collect();
        clean.len() == self.digits.len() && bool::from(clean.as_bytes().ct_eq(self.digits.as_bytes()))
    }

    /// The payload to show as a QR code.
    pub fn scannable(&self) -> [u8; SCANNABLE_LEN] {
        let mut out = [0u8; SCANNABLE_LEN];
        let (v, rest) = out.split_at_mut(1);
        v.copy_from_slice(&[SCANNABLE_VERSION]);
        let (l, r) = rest.split_at_mut(32);
        l.copy_from_slice(self.local.get(..32).unwrap_or(&[0u8; 32]));
        r.copy_from_slice(self.remote.get(..32).unwrap_or(&[0u8; 32]));
        out
    }

    /// Compares a payload scanned from the peer's screen with ours.
    pub fn compare_scanned(&self, scanned: &[u8]) -> Result<(), SafetyNumberError> {
        if scanned.len() != SCANNABLE_LEN || scanned.first() != Some(&SCANNABLE_VERSION) {
            return Err(SafetyNumberError::Malformed);
        }
        let (their_local, their_remote) = scanned.get(1..).unwrap_or_default().split_at(32);
        let ok = their_local.ct_eq(self.remote.get(..32).unwrap_or_default())
            & their_remote.ct_eq(self.local.get(..32).unwrap_or_default());
        if bool::from(ok) { Ok(()) } else { Err(SafetyNumberError::Mismatch) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signal's published vector (libsignal-protocol-c `tests/test_fingerprint.c`): their
    /// 33-byte Curve25519 identity keys with phone numbers as stable identifiers.
    #[test]
    fn signal_vector() {
        let alice =
            hex::decode("0506863bc66d02b40d27b8d49ca7c09e9239236f9d7d25d6fcca5ce13c7064d868").unwrap();
        let bob = hex::decode("05f781b6fb32fed9ba1cf2de978d4d5da28dc34046ae814402b5c0dbd96fda907b").unwrap();
        let a = fingerprint(&alice, b"+14152222222");
        let b = fingerprint(&bob, b"+14153333333");
        // Both 32-byte halves appear in the published scannable (version 1) payloads.
        assert_eq!(hex::encode(&a[..32]), "1e301a0353dce3dbe7684cb8336e85136cdc0ee96219494ada305d62a7bd61df");
        assert_eq!(hex::encode(&b[..32]), "d62cbf73a11592015b6b9f1682ac306fea3aaf3885b84d12bca631e9d4fb3a4d");
        let sn = SafetyNumber::from_fingerprints(a, b);
        assert_eq!(sn.digits(), "300354477692869396892869876765458257569162576843440918079131");
        let sn_bob = SafetyNumber::from_fingerprints(b, a);
        assert_eq!(sn_bob.digits(), sn.digits());
        sn.compare_scanned(&sn_bob.scannable()).unwrap();
        assert_eq!(sn.compare_scanned(&sn.scannable()), Err(SafetyNumberError::Mismatch));
        assert!(sn.matches_digits("30035 44776 92869 39689 28698 76765 45825 75691 62576 84344 09180 79131"));
        assert!(!sn.matches_digits("30035"));
        assert_eq!(sn.display().split(' ').count(), 12);
    }
}
