//! Plaintext padding to size buckets, applied inside the encryption so the server sees only
//! the bucket, never the message length.
//!
//! The plaintext is followed by a `0x80` byte and zeros (ISO/IEC 7816-4, as Signal pads)
//! up to the bucket size: 256 bytes for anything that fits, above that the Padmé scheme
//! (Nikitin et al., "Reducing Metadata Leakage from Encrypted Files and Communication with
//! PURBs", PETS 2019), whose buckets leak at most O(log log n) bits of the length and cost
//! at most 12% overhead.

use thiserror::Error;

/// The smallest bucket: every short message looks the same.
pub const MIN_PADDED_LEN: usize = 256;
/// The largest padded plaintext (64 KiB); larger payloads travel as encrypted files.
pub const MAX_PADDED_LEN: usize = 65_536;
/// The largest plaintext a message can carry.
pub const MAX_PLAINTEXT_LEN: usize = MAX_PADDED_LEN - 1;

/// Why a plaintext could not be padded or unpadded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PaddingError {
    /// The plaintext is longer than [`MAX_PLAINTEXT_LEN`].
    #[error("plaintext longer than {MAX_PLAINTEXT_LEN} bytes")]
    TooLong,
    /// The decrypted bytes carry no valid padding (only possible from a buggy sender, since
    /// padding is inside the authenticated encryption).
    #[error("invalid padding")]
    Invalid,
}

/// The bucket a plaintext of `len` bytes is padded to.
pub fn padded_len(len: usize) -> Result<usize, PaddingError> {
    if len > MAX_PLAINTEXT_LEN {
        return Err(PaddingError::TooLong);
    }
    let n = len + 1; // room for the 0x80 marker
    if n <= MIN_PADDED_LEN {
        return Ok(MIN_PADDED_LEN);
    }
    // Padmé: keep the top floor(log2(E)) + 1 bits of n, where E = floor(log2(n)).
    let e = usize::BITS - 1 - n.leading_zeros();
    let s = u32::BITS - e.leading_zeros();
    let zero_bits = e - s;
    let mask = (1usize << zero_bits) - 1;
    Ok((n + mask) & !mask)
}

/// Pads `plaintext` into a new buffer with `extra` spare capacity (for the AEAD tag).
pub(crate) fn pad(plaintext: &[u8], extra: usize) -> Result<Vec<u8>, PaddingError> {
    let total = padded_len(plaintext.len())?;
    let mut buf = Vec::with_capacity(total + extra);
    buf.extend_from_slice(plaintext);
    buf.push(0x80);
    buf.resize(total, 0);
    Ok(buf)
}

/// Strips the padding in place.
pub(crate) fn unpad(buf: &mut Vec<u8>) -> Result<(), PaddingError> {
    let end = buf.iter().rposition(|&b| b != 0).ok_or(PaddingError::Invalid)?;
    if buf.get(end) != Some(&0x80) {
        return Err(PaddingError::Invalid);
    }
    buf.truncate(end);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets() {
        assert_eq!(padded_len(0).unwrap(), 256);
        assert_eq!(padded_len(255).unwrap(), 256);
        assert_eq!(padded_len(256).unwrap(), 272);
        assert_eq!(padded_len(999).unwrap(), 1024);
        assert_eq!(padded_len(MAX_PLAINTEXT_LEN).unwrap(), MAX_PADDED_LEN);
        assert_eq!(padded_len(MAX_PLAINTEXT_LEN + 1), Err(PaddingError::TooLong));
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let mut p = pad(&data, 16).unwrap();
            let len = p.len();
            prop_assert!(len > data.len());
            prop_assert!(len * 100 <= (data.len() + 1).max(MIN_PADDED_LEN) * 112 + 100);
            unpad(&mut p).unwrap();
            prop_assert_eq!(p, data);
        }

        #[test]
        fn monotone(a in 0usize..MAX_PLAINTEXT_LEN, b in 0usize..MAX_PLAINTEXT_LEN) {
            let (x, y) = (a.min(b), a.max(b));
            prop_assert!(padded_len(x).unwrap() <= padded_len(y).unwrap());
        }
    }
}
