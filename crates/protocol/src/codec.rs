//! A bounded, panic-free byte reader and writer for Tacit's wire and state formats.
//!
//! Every multi-byte integer is big-endian; every variable-length field carries an explicit
//! length that the reader checks against a caller-supplied maximum before allocating.

use thiserror::Error;

/// Why a byte string could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the field being read.
    #[error("input is truncated")]
    Truncated,
    /// Bytes were left over after the last field.
    #[error("input has trailing bytes")]
    TrailingBytes,
    /// A length or count field exceeds the limit for that field.
    #[error("a length or count exceeds its limit")]
    TooLong,
    /// The version byte names a format this build does not know.
    #[error("unknown format version {0}")]
    UnknownVersion(u8),
    /// A tag or enumeration byte has no defined meaning.
    #[error("unknown tag {0}")]
    UnknownTag(u8),
    /// A field holds a value that is not allowed (for example a non-canonical key).
    #[error("invalid field value")]
    InvalidValue,
}

/// Reads fields from a borrowed byte slice, never panicking and never over-allocating.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Takes exactly `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Takes a fixed-size array.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A boolean encoded as 0 or 1; any other byte is rejected.
    pub(crate) fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            t => Err(DecodeError::UnknownTag(t)),
        }
    }

    /// A `u32` count, checked against `max` before the caller allocates for it.
    pub(crate) fn count(&mut self, max: usize) -> Result<usize, DecodeError> {
        let n = usize::try_from(self.u32()?).map_err(|_| DecodeError::TooLong)?;
        if n > max {
            return Err(DecodeError::TooLong);
        }
        Ok(n)
    }

    /// A byte string with a `u32` length prefix of at most `max` bytes.
    pub(crate) fn bytes(&mut self, max: usize) -> Result<&'a [u8], DecodeError> {
        let n = self.count(max)?;
        self.take(n)
    }

    /// Everything that is left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.buf)
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() { Ok(()) } else { Err(DecodeError::TrailingBytes) }
    }
}

/// Appends fields to a growable buffer (the counterpart of [`Reader`]).
pub(crate) trait Writer {
    fn put(&mut self, bytes: &[u8]);
    fn put_u8(&mut self, v: u8) {
        self.put(&[v]);
    }
    fn put_u32(&mut self, v: u32) {
        self.put(&v.to_be_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.put(&v.to_be_bytes());
    }
    fn put_bool(&mut self, v: bool) {
        self.put_u8(u8::from(v));
    }
    /// A count, as written by the encoder of a collection bounded far below `u32::MAX`.
    fn put_count(&mut self, n: usize) {
        self.put_u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    fn put_bytes(&mut self, bytes: &[u8]) {
        self.put_count(bytes.len());
        self.put(bytes);
    }
}

/// A writer that first counts and then writes, so secret-bearing buffers are allocated
/// once at their exact size (a growing `Vec` leaves copies of its contents in freed memory).
pub(crate) enum ExactWriter<'a> {
    Count(usize),
    Write(&'a mut Vec<u8>),
}

impl Writer for ExactWriter<'_> {
    fn put(&mut self, bytes: &[u8]) {
        match self {
            Self::Count(n) => *n = n.saturating_add(bytes.len()),
            Self::Write(v) => v.extend_from_slice(bytes),
        }
    }
}

/// Runs `f` once to measure and once to write into a zeroizing buffer of exactly that size.
pub(crate) fn encode_exact(f: impl Fn(&mut ExactWriter<'_>)) -> zeroize::Zeroizing<Vec<u8>> {
    let mut count = ExactWriter::Count(0);
    f(&mut count);
    let len = match count {
        ExactWriter::Count(n) => n,
        ExactWriter::Write(_) => 0,
    };
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(len));
    f(&mut ExactWriter::Write(&mut out));
    out
}

impl Writer for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let mut w = Vec::new();
        w.put_u8(7);
        w.put_u32(0xdead_beef);
        w.put_bytes(b"abc");
        w.put_bool(true);
        let mut r = Reader::new(&w);
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u32().unwrap(), 0xdead_beef);
        assert_eq!(r.bytes(3).unwrap(), b"abc");
        assert!(r.bool().unwrap());
        r.finish().unwrap();

        let mut r = Reader::new(&w[5..]);
        assert_eq!(r.bytes(2), Err(DecodeError::TooLong));
        let mut r = Reader::new(&w[..3]);
        assert_eq!(r.u32(), Err(DecodeError::Truncated));
        let mut r = Reader::new(&[2u8]);
        assert_eq!(r.bool(), Err(DecodeError::UnknownTag(2)));
    }
}
