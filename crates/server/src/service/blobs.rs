//! Blobs (issue 9, history transfer): ciphertext of a declared size, uploaded in chunks at
//! the offset received so far (resumable), readable in ranges by the devices of the same
//! account once complete, deleted after [`BLOB_TTL_SECS`]. Another account's blob is
//! answered `404` like a missing one (its existence is not revealed).
//!
//! An account holds at most [`MAX_BLOBS_PER_ACCOUNT`] live blobs: one more is refused with
//! `429 rate_limited` (retry once one is deleted or expired). A blob is refused with
//! `507 storage_full` while the store is below its free-space watermark, or when its size
//! would take the store below it (the data folder's free space on SQLite,
//! `database_quota_bytes` on PostgreSQL); chunks are refused likewise while it is low.

use tacit_api::limits::{BLOB_TTL_SECS, MAX_BLOB_BYTES, MAX_BLOB_CHUNK_BYTES, MAX_BLOBS_PER_ACCOUNT};
use tacit_api::{BlobStatus, CreateBlobRequest};

use crate::error::Failure;
use crate::state::{AppState, now_ms};
use crate::store::{Authed, BlobRecord};

/// A blob id from its path form: 32 lowercase hex characters, else not found.
pub fn parse_id(hex: &str) -> Result<[u8; 16], Failure> {
    super::link::parse_slot(hex)
}

fn hex(id: &[u8; 16]) -> String {
    crate::hexstr::encode(id)
}

fn status(id: &[u8; 16], b: BlobRecord, now: u64) -> BlobStatus {
    BlobStatus {
        id: hex(id),
        size: b.size,
        received: b.received,
        expires_in_secs: b.expires_ms.saturating_sub(now).div_ceil(1000),
    }
}

/// `POST /v1/blobs` (auth).
pub async fn create(
    state: &AppState,
    caller: &Authed,
    req: CreateBlobRequest,
) -> Result<BlobStatus, Failure> {
    if req.size == 0 {
        return Err(Failure::BadRequest("a blob holds at least one byte"));
    }
    if req.size > MAX_BLOB_BYTES {
        return Err(Failure::TooLarge("blob larger than the server takes"));
    }
    if state.storage_low() {
        return Err(Failure::StorageFull);
    }
    let min_free = state.inner().min_free_bytes;
    if min_free > 0
        && let Ok(Some(free)) = state.store().free_bytes().await
        && free.saturating_sub(min_free) < req.size
    {
        return Err(Failure::StorageFull);
    }
    let mut id = [0u8; 16];
    aws_lc_rs::rand::fill(&mut id).map_err(|_| Failure::Internal("random generator failed".into()))?;
    let now = now_ms();
    let expires = now.saturating_add(BLOB_TTL_SECS * 1000);
    state.store().create_blob(caller.key.account, id, req.size, now, expires, MAX_BLOBS_PER_ACCOUNT).await?;
    Ok(status(&id, BlobRecord { size: req.size, received: 0, expires_ms: expires }, now))
}

/// `PUT /v1/blobs/{id}?offset=N` (auth): appends a chunk at the offset received so far.
pub async fn put_chunk(
    state: &AppState,
    caller: &Authed,
    id: &str,
    offset: u64,
    data: Vec<u8>,
) -> Result<BlobStatus, Failure> {
    let id = parse_id(id)?;
    if data.len() > MAX_BLOB_CHUNK_BYTES {
        return Err(Failure::TooLarge("blob chunk too large"));
    }
    if data.is_empty() {
        return Err(Failure::BadRequest("empty blob chunk"));
    }
    if state.storage_low() {
        return Err(Failure::StorageFull);
    }
    let now = now_ms();
    let b = state.store().put_blob_chunk(caller.key.account, id, offset, data, now).await?;
    Ok(status(&id, b, now))
}

/// `GET /v1/blobs/{id}/status` (auth).
pub async fn get_status(state: &AppState, caller: &Authed, id: &str) -> Result<BlobStatus, Failure> {
    let id = parse_id(id)?;
    let now = now_ms();
    let b = state.store().blob(caller.key.account, id, now).await?.ok_or(Failure::NotFound)?;
    Ok(status(&id, b, now))
}

/// `GET /v1/blobs/{id}?offset=N&len=M` (auth): a range of a complete blob.
pub async fn read(
    state: &AppState,
    caller: &Authed,
    id: &str,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, Failure> {
    let id = parse_id(id)?;
    if len > MAX_BLOB_CHUNK_BYTES as u64 {
        return Err(Failure::TooLarge("blob range too large"));
    }
    Ok(state.store().read_blob(caller.key.account, id, offset, len, now_ms()).await?)
}

/// `DELETE /v1/blobs/{id}` (auth).
pub async fn delete(state: &AppState, caller: &Authed, id: &str) -> Result<(), Failure> {
    let id = parse_id(id)?;
    if state.store().delete_blob(caller.key.account, id).await? { Ok(()) } else { Err(Failure::NotFound) }
}
