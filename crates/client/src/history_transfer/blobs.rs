//! Moving the sealed archive through the server as a blob (`crates/api` routes `BLOBS`,
//! `BLOB`, `BLOB_STATUS`): upload and download in chunks of at most
//! [`api::limits::MAX_BLOB_CHUNK_BYTES`], each resumable from where it stopped.
//!
//! The transport is a trait so the same code runs over the real server (`crate::net::Api`)
//! and, in tests, over a stand-in that fails after a given number of chunks.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use tacit_api as api;

use super::HistoryError;
use crate::error::ClientError;
use crate::net::Api;

/// Attempts at one chunk before giving up (the state on disk and on the server is kept, so
/// the next call resumes).
const CHUNK_ATTEMPTS: u32 = 4;
/// The wait before the second attempt (doubled before each further one).
const RETRY_WAIT: Duration = Duration::from_millis(200);

/// The server's blob endpoints.
pub(crate) trait BlobTransport {
    /// `POST /v1/blobs`.
    async fn create(&self, size: u64) -> Result<api::BlobStatus, ClientError>;
    /// `GET /v1/blobs/{id}/status`.
    async fn status(&self, id: &str) -> Result<api::BlobStatus, ClientError>;
    /// `PUT /v1/blobs/{id}?offset=N`.
    async fn put(&self, id: &str, offset: u64, bytes: Vec<u8>) -> Result<api::BlobStatus, ClientError>;
    /// `GET /v1/blobs/{id}?offset=N&len=M`.
    async fn get(&self, id: &str, offset: u64, len: u64) -> Result<Vec<u8>, ClientError>;
    /// `DELETE /v1/blobs/{id}`.
    async fn delete(&self, id: &str) -> Result<(), ClientError>;
}

/// The blob id as the API writes it.
pub(crate) fn id_hex(id: &[u8; 16]) -> String {
    hex::encode(id)
}

/// Parses a blob id the server returned.
pub(crate) fn parse_id(s: &str) -> Result<[u8; 16], HistoryError> {
    let v = hex::decode(s).map_err(|_| HistoryError::Server("blob id is not hex"))?;
    v.as_slice().try_into().map_err(|_| HistoryError::Server("blob id is not 16 bytes"))
}

/// Whether an error may go away by asking again (the network, a busy server, a conflict
/// about the offset that the status answers).
fn transient(e: &ClientError) -> bool {
    matches!(e, ClientError::Network(_) | ClientError::Server { status: 409 | 429 | 500..=599, .. })
}

/// Uploads the file at `path` (`size` bytes) into the blob `id`, from the offset the server
/// reports (so an upload interrupted in this process or an earlier one goes on where it
/// stopped). `progress(done, total)` is called after each chunk.
pub(crate) async fn upload<T: BlobTransport>(
    t: &T,
    id: &str,
    path: &Path,
    size: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), HistoryError> {
    let mut file = std::fs::File::open(path).map_err(|e| HistoryError::file(path, &e))?;
    let mut status = t.status(id).await?;
    if status.size != size {
        return Err(HistoryError::Server("blob size differs from the archive's"));
    }
    let mut failures = 0;
    let mut wait = RETRY_WAIT;
    progress(status.received.min(size), size);
    while status.received < size {
        let offset = status.received;
        let len = (size - offset).min(api::limits::MAX_BLOB_CHUNK_BYTES as u64) as usize;
        let mut chunk = vec![0u8; len];
        file.seek(SeekFrom::Start(offset)).map_err(|e| HistoryError::file(path, &e))?;
        file.read_exact(&mut chunk).map_err(|e| HistoryError::file(path, &e))?;
        match t.put(id, offset, chunk).await {
            Ok(s) if s.received > offset && s.received <= size => {
                status = s;
                failures = 0;
                wait = RETRY_WAIT;
                progress(status.received, size);
            }
            Ok(_) => return Err(HistoryError::Server("blob upload did not advance")),
            Err(e) if transient(&e) && failures + 1 < CHUNK_ATTEMPTS => {
                failures += 1;
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
                // Where the server really is (the chunk may have landed before the answer
                // was lost, or an earlier attempt raced this one).
                status = t.status(id).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Downloads the blob `id` (`size` bytes) into `path`, appending to what an earlier,
/// interrupted download left there (resumed by the file's length). `progress(done, total)`
/// is called after each chunk.
pub(crate) async fn download<T: BlobTransport>(
    t: &T,
    id: &str,
    path: &Path,
    size: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), HistoryError> {
    let mut file = super::open_private(path, true)?;
    let mut have = file.metadata().map_err(|e| HistoryError::file(path, &e))?.len();
    if have > size {
        // Not a prefix of this blob: start over.
        file.set_len(0).map_err(|e| HistoryError::file(path, &e))?;
        have = 0;
    }
    file.seek(SeekFrom::Start(have)).map_err(|e| HistoryError::file(path, &e))?;
    let mut failures = 0;
    let mut wait = RETRY_WAIT;
    progress(have, size);
    while have < size {
        let len = (size - have).min(api::limits::MAX_BLOB_CHUNK_BYTES as u64);
        match t.get(id, have, len).await {
            Ok(bytes) if bytes.len() as u64 == len => {
                file.write_all(&bytes).map_err(|e| HistoryError::file(path, &e))?;
                have += len;
                failures = 0;
                wait = RETRY_WAIT;
                progress(have, size);
            }
            Ok(_) => return Err(HistoryError::Server("blob range of the wrong length")),
            Err(e) if transient(&e) && failures + 1 < CHUNK_ATTEMPTS => {
                failures += 1;
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
            Err(e) => {
                // What was written stays for the next attempt to resume from.
                let _ = file.sync_data();
                return Err(e.into());
            }
        }
    }
    file.sync_all().map_err(|e| HistoryError::file(path, &e))?;
    Ok(())
}

impl BlobTransport for Api {
    async fn create(&self, size: u64) -> Result<api::BlobStatus, ClientError> {
        self.blob_create(size).await
    }

    async fn status(&self, id: &str) -> Result<api::BlobStatus, ClientError> {
        self.blob_status(id).await
    }

    async fn put(&self, id: &str, offset: u64, bytes: Vec<u8>) -> Result<api::BlobStatus, ClientError> {
        self.blob_put(id, offset, bytes).await
    }

    async fn get(&self, id: &str, offset: u64, len: u64) -> Result<Vec<u8>, ClientError> {
        self.blob_get(id, offset, len).await
    }

    async fn delete(&self, id: &str) -> Result<(), ClientError> {
        self.blob_delete(id).await
    }
}
