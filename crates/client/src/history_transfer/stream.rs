//! The byte pipes around the record stream: a writer that seals its input chunk by chunk
//! into a file (hashing the ciphertext), a reader that opens a sealed file chunk by chunk,
//! and the counting and bounding adapters around the compressor.

use std::io::{self, BufRead, Read, Write};

use aws_lc_rs::digest;

use super::HistoryError;
use super::archive::{ArchiveOpener, ArchiveSealer, CHUNK_LEN};

/// The AEAD tag of each chunk.
pub(crate) const TAG_LEN: usize = 16;

fn io_error(e: HistoryError) -> io::Error {
    io::Error::other(e)
}

/// Takes bytes, seals each full chunk (the last one at [`SealWriter::finish`]) and writes
/// the ciphertext to `out`, hashing it (SHA-256).
pub(crate) struct SealWriter<W: Write> {
    sealer: ArchiveSealer,
    buf: Vec<u8>,
    out: W,
    hash: digest::Context,
    written: u64,
}

impl<W: Write> SealWriter<W> {
    pub(crate) fn new(key: &[u8; 32], out: W) -> Self {
        Self {
            sealer: ArchiveSealer::new(key),
            buf: Vec::with_capacity(CHUNK_LEN),
            out,
            hash: digest::Context::new(&digest::SHA256),
            written: 0,
        }
    }

    fn emit(&mut self, last: bool) -> Result<(), HistoryError> {
        let ct = self.sealer.seal_chunk(&self.buf, last).map_err(HistoryError::from)?;
        self.buf.clear();
        self.hash.update(&ct);
        self.out.write_all(&ct)?;
        self.written += ct.len() as u64;
        Ok(())
    }

    /// Seals what is left as the last chunk; returns the output, the ciphertext's size and
    /// its SHA-256.
    pub(crate) fn finish(mut self) -> Result<(W, u64, [u8; 32]), HistoryError> {
        self.emit(true)?;
        self.out.flush()?;
        let digest: [u8; 32] =
            self.hash.finish().as_ref().try_into().map_err(|_| HistoryError::Internal("digest length"))?;
        Ok((self.out, self.written, digest))
    }
}

impl<W: Write> Write for SealWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        // A full buffer is sealed only once more bytes come: the last chunk may be full.
        if self.buf.len() == CHUNK_LEN {
            self.emit(false).map_err(io_error)?;
        }
        let n = data.len().min(CHUNK_LEN - self.buf.len());
        self.buf.extend_from_slice(data.get(..n).unwrap_or_default());
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads a sealed stream of a known total size, opening each chunk in order: the chunk
/// that ends at `size` is the last (a stream cut short at a chunk boundary fails to open).
pub(crate) struct OpenReader<R: Read> {
    opener: ArchiveOpener,
    input: R,
    remaining: u64,
    ct: Vec<u8>,
    plain: Vec<u8>,
    pos: usize,
    finished: bool,
}

impl<R: Read> OpenReader<R> {
    pub(crate) fn new(key: &[u8; 32], input: R, size: u64) -> Self {
        Self {
            opener: ArchiveOpener::new(key),
            input,
            remaining: size,
            ct: Vec::with_capacity(CHUNK_LEN + TAG_LEN),
            plain: Vec::new(),
            pos: 0,
            finished: false,
        }
    }

    /// Opens the next chunk into `plain` (nothing once the last one was opened).
    fn next_chunk(&mut self) -> Result<(), HistoryError> {
        if self.finished {
            return Ok(());
        }
        let full = (CHUNK_LEN + TAG_LEN) as u64;
        let len = self.remaining.min(full);
        let last = len == self.remaining;
        self.ct.resize(len as usize, 0);
        self.input.read_exact(&mut self.ct).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => HistoryError::Truncated,
            _ => e.into(),
        })?;
        self.plain = self.opener.open_chunk(&self.ct, last).map_err(HistoryError::from)?;
        self.pos = 0;
        self.remaining -= len;
        self.finished = last;
        Ok(())
    }

    /// Whether every chunk was opened (the last one included) and read.
    pub(crate) fn at_authenticated_end(&mut self) -> Result<bool, HistoryError> {
        if self.pos < self.plain.len() {
            return Ok(false);
        }
        // Chunks that are left may be empty only if they are the (empty) last one.
        while !self.finished {
            self.next_chunk()?;
            if !self.plain.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl<R: Read> BufRead for OpenReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos >= self.plain.len() && !self.finished {
            self.next_chunk().map_err(io_error)?;
        }
        Ok(self.plain.get(self.pos..).unwrap_or_default())
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.plain.len());
    }
}

impl<R: Read> Read for OpenReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        if let (Some(dst), Some(src)) = (out.get_mut(..n), avail.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.consume(n);
        Ok(n)
    }
}

/// Counts the bytes written through it.
pub(crate) struct CountingWriter<W: Write> {
    pub(crate) inner: W,
    pub(crate) count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Passes at most `limit` bytes through; one more is an error ([`HistoryError::TooLarge`]):
/// the bound on decompression (a small archive that inflates without end).
pub(crate) struct BoundedReader<R: Read> {
    pub(crate) inner: R,
    pub(crate) limit: u64,
    pub(crate) count: u64,
}

impl<R: Read> Read for BoundedReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        // Ask for one byte more than allowed, so going over shows.
        let room = (self.limit - self.count.min(self.limit)).saturating_add(1);
        let want = out.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(out.get_mut(..want).unwrap_or_default())?;
        self.count += n as u64;
        if self.count > self.limit {
            return Err(io_error(HistoryError::TooLarge("decompressed archive (more than declared)")));
        }
        Ok(n)
    }
}
