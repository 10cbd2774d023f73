//! History transfer (issue 9, "History transfer"): the approving device sends its history to
//! a new device of the same account as one encrypted, compressed archive, carried by the
//! server as a ciphertext blob whose key, size and digest travel in the end-to-end encrypted
//! provisioning message ([`HistoryArchive`]).
//!
//! ```text
//! export: store ─▶ records ─▶ deflate ─▶ chunked AEAD ─▶ temp file (0600) ─▶ blob upload
//! import: blob download ─▶ temp file ─▶ size + SHA-256 ─▶ open chunks ─▶ inflate (bounded)
//!         ─▶ records ─▶ one store transaction
//! ```
//!
//! - **Never the whole history in memory**: rows are read one at a time and go through the
//!   pipes (64 KiB chunks, 1 MiB blob requests) to a file and back.
//! - **Confidentiality and integrity against the server**: a fresh random 32-byte key per
//!   archive, chunked AEAD in the manner of age's STREAM (`tacit_protocol::archive`,
//!   `docs/PROTOCOL.md` §11): a chunk
//!   altered, dropped, reordered, or the archive cut short fails to open. The SHA-256 of the
//!   whole ciphertext, also in the provisioning message, is checked before anything is
//!   opened.
//! - **Bounded import**: the decompressed stream may not exceed the size the provisioning
//!   message declares nor [`MAX_PLAIN_BYTES`]; every record field is bounded (`records.rs`).
//! - **All or nothing**: the import is one transaction, committed only once the end record
//!   and the last chunk authenticated; any failure leaves the store as it was. Messages the
//!   new device already holds are skipped (so importing twice adds nothing); a contact is
//!   pinned only where the device has no row for it yet; the device's own account is never
//!   taken from the archive (it comes from the provisioning message).
//! - **Resumable**: an upload goes on from the offset the server reports (also in a later
//!   call: the sealed file and its key wait in the home and the store for
//!   [`MAX_RESUME_AGE_MS`]); a download goes on from the partial file's length. A network
//!   failure keeps both; a verification failure removes the partial download.

mod blobs;
mod records;
mod stream;
#[cfg(test)]
mod tests;

use std::io::{BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};
use tacit_api as api;
use tacit_protocol::archive::{self, ArchiveError};
use tacit_protocol::{AccountKey, AccountName, DeviceList};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::client::{Client, now_ms};
use crate::error::ClientError;
use crate::store::{self, Store};
use blobs::BlobTransport;
use records::{ContactRecord, MessageRecord, Record, RecordReader, RecordWriter};
use stream::{BoundedReader, CountingWriter, OpenReader, SealWriter};

/// The largest decompressed archive a device imports, whatever the provisioning message
/// declares (4 GiB: some 25 million messages of typical length).
pub const MAX_PLAIN_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// The most contacts an archive may carry.
pub const MAX_CONTACTS: u64 = 100_000;
/// How long a sealed archive whose upload was interrupted is resumed rather than made
/// afresh (after that, it would leave out too much of what came since).
pub const MAX_RESUME_AGE_MS: u64 = 3600 * 1000;
/// Deflate level. Measured on 100,000 chat-like messages (`history_transfer_100k`, two runs
/// on a shared 2-core machine): level 1 2.5x at 90-140 MB/s, level 3 3.1x at 35-64 MB/s,
/// level 6 3.4x at 13-17 MB/s, level 9 3.4x at 8-12 MB/s; inflate 150-400 MB/s at every
/// level. Level 3 keeps compression well under a second for that history at nearly level
/// 6's ratio.
const COMPRESSION_LEVEL: u32 = 3;
/// The sealed archive being uploaded, in the home folder.
const EXPORT_FILE: &str = "history-export.tmp";
/// Meta key of the archive being uploaded (its blob id, key, sizes, digest, when made).
const EXPORT_PENDING: &str = "history_export_pending";

/// Why a history transfer failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// A chunk of the archive does not authenticate: altered on the way, or the wrong key.
    #[error("the history archive does not decrypt (altered, or not the one announced)")]
    Tampered,
    /// The archive ends before its last chunk or record.
    #[error("the history archive is cut short")]
    Truncated,
    /// The downloaded archive does not have the SHA-256 the provisioning message gave.
    #[error("the history archive does not match its digest (altered or damaged)")]
    DigestMismatch,
    /// The downloaded archive does not have the announced size.
    #[error("the history archive is {got} bytes, not the {expected} announced")]
    SizeMismatch {
        /// Announced.
        expected: u64,
        /// Found.
        got: u64,
    },
    /// Something in or about the archive exceeds its bound.
    #[error("history archive: {0} exceeds its bound")]
    TooLarge(&'static str),
    /// The archive's content does not parse (after it authenticated: a faulty sender).
    #[error("malformed history archive: {0}")]
    Malformed(&'static str),
    /// The archive's format is newer than this version reads.
    #[error("history archive format {0} is not supported by this version of tacit: upgrade it")]
    UnknownVersion(u16),
    /// The server's answer about the blob made no sense.
    #[error("unexpected answer from the server about the history upload: {0}")]
    Server(&'static str),
    /// The store, the network or the server failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A file of the transfer could not be read or written.
    #[error("{}: {cause}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What the system said.
        cause: String,
    },
    /// An internal invariant failed; please report it.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl HistoryError {
    fn file(path: &Path, e: &std::io::Error) -> Self {
        Self::File { path: path.to_owned(), cause: e.to_string() }
    }
}

impl From<ArchiveError> for HistoryError {
    fn from(e: ArchiveError) -> Self {
        match e {
            ArchiveError::Open => Self::Tampered,
            ArchiveError::ChunkLength | ArchiveError::Finished => Self::Malformed("archive chunk layout"),
            _ => Self::Internal("archive cipher"),
        }
    }
}

impl From<std::io::Error> for HistoryError {
    fn from(e: std::io::Error) -> Self {
        // Our own errors come back wrapped from inside the compressor's reads and writes.
        if e.get_ref().is_some_and(|inner| inner.is::<HistoryError>()) {
            if let Some(inner) = e.into_inner().and_then(|b| b.downcast::<HistoryError>().ok()) {
                return *inner;
            }
            return Self::Internal("wrapped error");
        }
        match e.kind() {
            // Inflate refuses a corrupt stream (it authenticated: the sender is faulty).
            std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => {
                Self::Malformed("compressed stream")
            }
            std::io::ErrorKind::UnexpectedEof => Self::Truncated,
            _ => Self::File { path: PathBuf::new(), cause: e.to_string() },
        }
    }
}

impl From<rusqlite::Error> for HistoryError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Client(ClientError::Store(e))
    }
}

/// The archive's symmetric key. Never printed; wiped on drop.
pub struct ArchiveKey(Zeroizing<[u8; 32]>);

impl ArchiveKey {
    /// A fresh random key.
    fn generate() -> Result<Self, HistoryError> {
        let mut k = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(k.as_mut_slice()).map_err(|_| HistoryError::Internal("system randomness"))?;
        Ok(Self(k))
    }

    /// The key received in a provisioning message.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The key's bytes, to seal into the provisioning message.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }
}

impl core::fmt::Debug for ArchiveKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ArchiveKey(***)")
    }
}

/// What the provisioning message carries for the new device to fetch and open the history.
#[derive(Debug)]
pub struct HistoryArchive {
    /// The server's blob id (hex in the API).
    pub blob_id: [u8; 16],
    /// The archive's key.
    pub key: ArchiveKey,
    /// Ciphertext bytes (the blob's size).
    pub size: u64,
    /// Decompressed record-stream bytes (the import's bound).
    pub plain_size: u64,
    /// SHA-256 of the ciphertext.
    pub digest: [u8; 32],
}

impl HistoryArchive {
    /// Bytes of [`Self::to_bytes`].
    pub const ENCODED_LEN: usize = 16 + 32 + 8 + 8 + 32;

    /// `blob_id || key || u64 size || u64 plain_size || digest` (big-endian), for the
    /// provisioning message. Holds the key: wiped on drop.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut v = Zeroizing::new(Vec::with_capacity(Self::ENCODED_LEN));
        v.extend_from_slice(&self.blob_id);
        v.extend_from_slice(self.key.expose_secret());
        v.extend_from_slice(&self.size.to_be_bytes());
        v.extend_from_slice(&self.plain_size.to_be_bytes());
        v.extend_from_slice(&self.digest);
        v
    }

    /// Parses [`Self::to_bytes`], refusing sizes over the bounds.
    pub fn from_bytes(b: &[u8]) -> Result<Self, HistoryError> {
        let b: &[u8; Self::ENCODED_LEN] =
            b.try_into().map_err(|_| HistoryError::Malformed("archive reference"))?;
        let (blob_id, rest) = b.split_first_chunk::<16>().ok_or(HistoryError::Internal("split"))?;
        let (key, rest) = rest.split_first_chunk::<32>().ok_or(HistoryError::Internal("split"))?;
        let (size, rest) = rest.split_first_chunk::<8>().ok_or(HistoryError::Internal("split"))?;
        let (plain, digest) = rest.split_first_chunk::<8>().ok_or(HistoryError::Internal("split"))?;
        let a = Self {
            blob_id: *blob_id,
            key: ArchiveKey::from_bytes(*key),
            size: u64::from_be_bytes(*size),
            plain_size: u64::from_be_bytes(*plain),
            digest: digest.try_into().map_err(|_| HistoryError::Internal("split"))?,
        };
        a.check_bounds()?;
        Ok(a)
    }

    fn check_bounds(&self) -> Result<(), HistoryError> {
        if self.size > api::limits::MAX_BLOB_BYTES {
            return Err(HistoryError::TooLarge("archive size"));
        }
        if archive::plain_len(self.size).is_none() {
            return Err(HistoryError::Malformed("no archive has this size"));
        }
        if self.plain_size > MAX_PLAIN_BYTES {
            return Err(HistoryError::TooLarge("decompressed archive size"));
        }
        Ok(())
    }
}

/// What an import added.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Contacts pinned from the archive (ones the device had no row for).
    pub contacts_added: u64,
    /// Messages added.
    pub messages_added: u64,
    /// Messages the device held already.
    pub messages_skipped: u64,
}

/// A sealed archive written to a file.
pub(crate) struct SealedFile {
    pub(crate) key: ArchiveKey,
    pub(crate) size: u64,
    pub(crate) plain_size: u64,
    pub(crate) digest: [u8; 32],
}

/// Opens (creating) a file readable by its owner only; `keep` keeps what it holds.
pub(crate) fn open_private(path: &Path, keep: bool) -> Result<std::fs::File, HistoryError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(!keep);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let f = opts.open(path).map_err(|e| HistoryError::file(path, &e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| HistoryError::file(path, &e))?;
    }
    Ok(f)
}

fn remove_quietly(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// Streams the store's contacts and messages into a sealed archive at `path` (0600).
/// Reads in one read transaction, so the archive is one consistent view.
pub(crate) fn write_archive(conn: &Connection, path: &Path) -> Result<SealedFile, HistoryError> {
    let key = ArchiveKey::generate()?;
    let file = open_private(path, false)?;
    let sealer = SealWriter::new(key.expose_secret(), BufWriter::with_capacity(256 * 1024, file));
    let deflate = flate2::write::DeflateEncoder::new(sealer, flate2::Compression::new(COMPRESSION_LEVEL));
    let mut w = RecordWriter::new(CountingWriter { inner: deflate, count: 0 })?;
    let read = conn.unchecked_transaction()?;
    {
        let mut st =
            read.prepare("SELECT name, account_key, device_list, verified FROM contacts ORDER BY name")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let Ok(name) = AccountName::new(&r.get::<_, String>(0)?) else { continue };
            let account_key: [u8; 32] = r
                .get::<_, Vec<u8>>(1)?
                .as_slice()
                .try_into()
                .map_err(|_| HistoryError::Internal("stored key length"))?;
            let device_list = r.get::<_, Vec<u8>>(2)?;
            w.contact(&ContactRecord { name, account_key, device_list, verified: r.get(3)? })?;
        }
    }
    {
        let id_column = if has_message_id(&read)? { "message_id" } else { "NULL" };
        let mut st = read.prepare(&format!(
            "SELECT peer, device, outgoing, text, server_time_ms, sent_time_ms, {id_column} FROM messages ORDER BY id"
        ))?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let Ok(peer) = AccountName::new(&r.get::<_, String>(0)?) else { continue };
            w.message(&MessageRecord {
                peer,
                device: r.get(1)?,
                outgoing: r.get(2)?,
                text: r.get(3)?,
                server_time_ms: r.get::<_, Option<i64>>(4)?.map(|t| t.max(0) as u64),
                sent_time_ms: r.get::<_, i64>(5)?.max(0) as u64,
                // An id of another length (none is stored so) is left out rather than cut.
                message_id: r.get::<_, Option<Vec<u8>>>(6)?.and_then(|v| v.as_slice().try_into().ok()),
            })?;
        }
    }
    drop(read);
    let counted = w.finish()?;
    let plain_size = counted.count;
    let sealer = counted.inner.finish()?;
    let (out, size, digest) = sealer.finish()?;
    let file = out.into_inner().map_err(|e| HistoryError::file(path, e.error()))?;
    file.sync_all().map_err(|e| HistoryError::file(path, &e))?;
    Ok(SealedFile { key, size, plain_size, digest })
}

/// Whether the messages table has the 16-byte `message_id` column (payload v2, issue 9).
/// MERGE: once that column is on the base branch, this is always true and can go.
fn has_message_id(conn: &Connection) -> Result<bool, HistoryError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('messages') WHERE name = 'message_id')",
        [],
        |r| r.get(0),
    )?)
}

/// SHA-256 of a file.
fn file_digest(path: &Path) -> Result<[u8; 32], HistoryError> {
    let mut f = std::fs::File::open(path).map_err(|e| HistoryError::file(path, &e))?;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(|e| HistoryError::file(path, &e))?;
        if n == 0 {
            break;
        }
        ctx.update(buf.get(..n).unwrap_or_default());
    }
    ctx.finish().as_ref().try_into().map_err(|_| HistoryError::Internal("digest length"))
}

/// Checks the sealed archive at `path` against `archive` (size, then digest), opens it and
/// imports its records into `store` in one transaction (nothing is committed on any
/// failure). `me` is the device's own account, never imported as a contact.
pub(crate) fn import_file(
    store: &mut Store,
    me: &AccountName,
    path: &Path,
    archive: &HistoryArchive,
) -> Result<ImportSummary, HistoryError> {
    archive.check_bounds()?;
    let got = std::fs::metadata(path).map_err(|e| HistoryError::file(path, &e))?.len();
    if got != archive.size {
        return Err(HistoryError::SizeMismatch { expected: archive.size, got });
    }
    // The ciphertext's digest is public (not derived from a secret): a plain comparison.
    if file_digest(path)? != archive.digest {
        return Err(HistoryError::DigestMismatch);
    }
    let file = std::fs::File::open(path).map_err(|e| HistoryError::file(path, &e))?;
    let opened = OpenReader::new(
        archive.key.expose_secret(),
        BufReader::with_capacity(256 * 1024, file),
        archive.size,
    );
    let inflate = flate2::bufread::DeflateDecoder::new(opened);
    let bounded = BoundedReader { inner: inflate, limit: archive.plain_size, count: 0 };
    let mut reader = RecordReader::new(bounded)?;
    let tx = store.tx()?;
    let summary = insert_records(&tx, me, &mut reader)?;
    // The end record came: the compressed stream must end there, and the archive with it
    // (its last chunk authenticated, nothing after).
    let mut bounded = reader.into_inner();
    let mut probe = [0u8; 1];
    if bounded.read(&mut probe)? != 0 || bounded.count != archive.plain_size {
        return Err(HistoryError::Malformed("bytes after the end record or a wrong declared size"));
    }
    if !bounded.inner.into_inner().at_authenticated_end()? {
        return Err(HistoryError::Malformed("bytes after the compressed stream"));
    }
    // Receipts that came before the messages they name.
    crate::store::apply_early_receipts(&tx, None)?;
    tx.commit()?;
    Ok(summary)
}

/// Inserts every record up to the end record.
fn insert_records<R: Read>(
    tx: &Connection,
    me: &AccountName,
    reader: &mut RecordReader<R>,
) -> Result<ImportSummary, HistoryError> {
    let mut summary = ImportSummary::default();
    // Only rows from before the import are looked at for duplicates (the import's own rows
    // need not be: the archive holds each message once).
    let max_before: i64 = tx.query_row("SELECT COALESCE(MAX(id), 0) FROM messages", [], |r| r.get(0))?;
    // A message with an id is the one with that id (and direction) in the conversation;
    // one without (payload v1), the one with the same device, direction, time and text.
    let with_ids = has_message_id(tx)?;
    let mut exists = tx.prepare(
        "SELECT EXISTS (SELECT 1 FROM messages WHERE peer = ?1 AND id <= ?2 AND device = ?3
         AND outgoing = ?4 AND sent_time_ms = ?5 AND text = ?6)",
    )?;
    let mut exists_by_id = with_ids
        .then(|| {
            tx.prepare("SELECT EXISTS (SELECT 1 FROM messages WHERE peer = ?1 AND id <= ?2 AND outgoing = ?3 AND message_id = ?4)")
        })
        .transpose()?;
    let mut insert = tx.prepare(if with_ids {
        "INSERT INTO messages (peer, device, outgoing, text, server_time_ms, sent_time_ms, message_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    } else {
        "INSERT INTO messages (peer, device, outgoing, text, server_time_ms, sent_time_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
    })?;
    // Pinned only where the device has no row yet (it keeps what it saw itself).
    let mut pin = tx.prepare(
        "INSERT OR IGNORE INTO contacts (name, account_key, device_list, verified) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut contacts = 0u64;
    loop {
        match reader.next_record()? {
            Record::Contact(c) => {
                contacts += 1;
                if contacts > MAX_CONTACTS {
                    return Err(HistoryError::TooLarge("contacts"));
                }
                if c.name == *me {
                    continue;
                }
                let key = AccountKey::from_bytes(c.account_key)
                    .map_err(|_| HistoryError::Malformed("contact key"))?;
                DeviceList::verify(&c.device_list, &c.name, Some(&key), None)
                    .map_err(|_| HistoryError::Malformed("a contact's device list does not verify"))?;
                let pinned = pin.execute(params![
                    c.name.as_str(),
                    c.account_key.as_slice(),
                    c.device_list,
                    c.verified
                ])?;
                summary.contacts_added += pinned as u64;
            }
            Record::Message(m) => {
                let (sent, server) = (m.sent_time_ms as i64, m.server_time_ms.map(|t| t as i64));
                let peer = m.peer.as_str();
                let held = max_before > 0
                    && match (&mut exists_by_id, &m.message_id) {
                        (Some(by_id), Some(id)) => by_id
                            .query_row(params![peer, max_before, m.outgoing, id.as_slice()], |r| r.get(0))?,
                        _ => exists.query_row(
                            params![peer, max_before, m.device, m.outgoing, sent, m.text],
                            |r| r.get::<_, bool>(0),
                        )?,
                    };
                if held {
                    summary.messages_skipped += 1;
                    continue;
                }
                if with_ids {
                    let id = m.message_id.as_ref().map(<[u8; 16]>::as_slice);
                    insert.execute(params![peer, m.device, m.outgoing, m.text, server, sent, id])?;
                } else {
                    insert.execute(params![peer, m.device, m.outgoing, m.text, server, sent])?;
                }
                summary.messages_added += 1;
            }
            Record::End => return Ok(summary),
        }
    }
}

/// The pending upload kept in the store while it is not finished.
struct Pending {
    archive: HistoryArchive,
    made_ms: u64,
}

impl Pending {
    fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut v = self.archive.to_bytes();
        v.extend_from_slice(&self.made_ms.to_be_bytes());
        v
    }

    fn from_bytes(b: &[u8]) -> Option<Self> {
        let (head, made) = b.split_at_checked(HistoryArchive::ENCODED_LEN)?;
        let made: [u8; 8] = made.try_into().ok()?;
        Some(Self { archive: HistoryArchive::from_bytes(head).ok()?, made_ms: u64::from_be_bytes(made) })
    }
}

/// Seals the history (or takes the one whose upload was interrupted less than
/// [`MAX_RESUME_AGE_MS`] ago) and uploads it through `t`.
pub(crate) async fn export_via<T: BlobTransport>(
    store: &Store,
    t: &T,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<HistoryArchive, HistoryError> {
    let path = store.home().join(EXPORT_FILE);
    let pending = store.meta(EXPORT_PENDING)?.and_then(|b| Pending::from_bytes(&b));
    let resumable = pending.filter(|p| {
        now_ms().saturating_sub(p.made_ms) < MAX_RESUME_AGE_MS
            && std::fs::metadata(&path).is_ok_and(|m| m.len() == p.archive.size)
    });
    let mut pending = match resumable {
        Some(mut p) => {
            // The blob may have expired or been deleted meanwhile: a new one for the file.
            if let Err(ClientError::NotFound(_)) = t.status(&blobs::id_hex(&p.archive.blob_id)).await {
                p.archive.blob_id = blobs::parse_id(&t.create(p.archive.size).await?.id)?;
                store::set_meta(store.conn(), EXPORT_PENDING, &p.to_bytes())?;
            }
            p
        }
        None => {
            let sealed = match write_archive(store.conn(), &path) {
                Ok(s) => s,
                Err(e) => {
                    remove_quietly(&path);
                    return Err(e);
                }
            };
            if sealed.size > api::limits::MAX_BLOB_BYTES {
                remove_quietly(&path);
                return Err(HistoryError::TooLarge("archive (more than the server keeps)"));
            }
            let created = match t.create(sealed.size).await {
                Ok(s) => s,
                Err(e) => {
                    remove_quietly(&path);
                    return Err(e.into());
                }
            };
            let p = Pending {
                archive: HistoryArchive {
                    blob_id: blobs::parse_id(&created.id)?,
                    key: sealed.key,
                    size: sealed.size,
                    plain_size: sealed.plain_size,
                    digest: sealed.digest,
                },
                made_ms: now_ms(),
            };
            store::set_meta(store.conn(), EXPORT_PENDING, &p.to_bytes())?;
            p
        }
    };
    let id = blobs::id_hex(&pending.archive.blob_id);
    blobs::upload(t, &id, &path, pending.archive.size, progress).await?;
    store::delete_meta(store.conn(), EXPORT_PENDING)?;
    remove_quietly(&path);
    pending.made_ms = 0;
    Ok(pending.archive)
}

/// Where the download of the blob `id` goes.
fn import_path(store: &Store, id: &str) -> PathBuf {
    store.home().join(format!("history-import-{id}.part"))
}

/// Downloads the archive through `t` into [`import_path`] (resuming a partial download).
async fn download_archive<T: BlobTransport>(
    store: &Store,
    t: &T,
    archive: &HistoryArchive,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<PathBuf, HistoryError> {
    archive.check_bounds()?;
    let id = blobs::id_hex(&archive.blob_id);
    let path = import_path(store, &id);
    // A failed download keeps its file (the next call resumes); anything else removes it.
    blobs::download(t, &id, &path, archive.size, progress).await?;
    Ok(path)
}

impl Client {
    /// Imports the downloaded archive at `path` under the home's lock, then removes the file
    /// whatever happened.
    async fn import_downloaded(
        &mut self,
        path: &Path,
        archive: &HistoryArchive,
    ) -> Result<ImportSummary, HistoryError> {
        let imported = match self.lock_state().await {
            Ok(_guard) => import_file(&mut self.store, &self.me.name, path, archive),
            Err(e) => Err(e.into()),
        };
        remove_quietly(path);
        imported
    }

    /// After an import: the blob is of no more use; it expires by itself if this fails.
    fn blob_not_deleted(&mut self, e: &ClientError) {
        self.warnings.push(format!(
            "the history upload could not be deleted from the server ({e}); it expires within a day"
        ));
    }
}

/// Downloads, imports and deletes through `t` (a transport other than the client's own
/// `Api`: the tests' stand-in that fails on demand).
#[cfg(test)]
pub(crate) async fn import_via<T: BlobTransport>(
    client: &mut Client,
    t: &T,
    archive: &HistoryArchive,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ImportSummary, HistoryError> {
    let path = download_archive(&client.store, t, archive, progress).await?;
    let summary = client.import_downloaded(&path, archive).await?;
    if let Err(e) = t.delete(&blobs::id_hex(&archive.blob_id)).await {
        client.blob_not_deleted(&e);
    }
    Ok(summary)
}

impl Client {
    /// Seals this device's history (contacts and messages) into an encrypted, compressed
    /// archive and uploads it as a blob, calling `progress(done, total)` as bytes go up; the
    /// returned [`HistoryArchive`] goes into the provisioning message. An upload interrupted
    /// earlier (within [`MAX_RESUME_AGE_MS`]) is resumed where it stopped.
    pub async fn export_history(
        &mut self,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<HistoryArchive, HistoryError> {
        self.online().await?;
        export_via(&self.store, &self.api, progress).await
    }

    /// Downloads the history `archive` names (resuming a partial download), checks it and
    /// imports it in one transaction (nothing is stored if anything fails), then deletes the
    /// blob. Calls `progress(done, total)` as bytes come down.
    pub async fn import_history(
        &mut self,
        archive: &HistoryArchive,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ImportSummary, HistoryError> {
        self.online().await?;
        let path = download_archive(&self.store, &self.api, archive, progress).await?;
        let summary = self.import_downloaded(&path, archive).await?;
        if let Err(e) = BlobTransport::delete(&self.api, &blobs::id_hex(&archive.blob_id)).await {
            self.blob_not_deleted(&e);
        }
        Ok(summary)
    }

    /// Declines a history transfer: deletes the blob (and any partial download of it).
    pub async fn discard_history(&mut self, archive: &HistoryArchive) -> Result<(), HistoryError> {
        let id = blobs::id_hex(&archive.blob_id);
        remove_quietly(&import_path(&self.store, &id));
        self.online().await?;
        match BlobTransport::delete(&self.api, &id).await {
            Ok(()) | Err(ClientError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
