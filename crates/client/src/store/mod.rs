//! The local store: one SQLCipher database (`store.db`) encrypted with a raw 256-bit key
//! (see [`key`]), holding identities, prekeys, sessions, contacts and message history.
//!
//! Every change that must survive a crash together happens in one transaction
//! (`synchronous=FULL`, WAL): a received message, the session state that decrypted it, the
//! prekeys it consumed and its envelope id (for dedupe) commit together, before the ack.

pub mod key;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use zeroize::Zeroizing;

use crate::error::{ClientError, Result};
use key::{PendingKey, RawKey, StoreSecret};

use crate::payload::MessageId;

/// The database file's name in the home directory.
pub(crate) const DB_FILE: &str = "store.db";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS contacts (
    name TEXT PRIMARY KEY,
    account_key BLOB NOT NULL,       -- pinned (trusted) account key
    device_list BLOB NOT NULL,       -- last accepted device list, signed by account_key
    verified INTEGER NOT NULL DEFAULT 0,
    pending_key BLOB,                -- a changed account key awaiting re-verification
    pending_list BLOB
);
CREATE TABLE IF NOT EXISTS sessions (
    base_key BLOB PRIMARY KEY,
    peer TEXT NOT NULL,
    device INTEGER NOT NULL,
    state BLOB NOT NULL,
    generation INTEGER NOT NULL,
    stale INTEGER NOT NULL DEFAULT 0,
    created_seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_peer ON sessions (peer, device, created_seq);
-- `MAX(created_seq)` at every session write: without it each write scans every session.
CREATE INDEX IF NOT EXISTS sessions_seq ON sessions (created_seq);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    peer TEXT NOT NULL,
    device INTEGER NOT NULL,
    outgoing INTEGER NOT NULL,
    text TEXT NOT NULL,
    server_time_ms INTEGER,
    sent_time_ms INTEGER NOT NULL,
    envelope_id INTEGER UNIQUE,
    message_id BLOB,                 -- 16 bytes (payload version 2); NULL for version 1
    devices INTEGER                  -- sent: the recipient devices it was encrypted for
);
CREATE INDEX IF NOT EXISTS messages_peer ON messages (peer, id);
CREATE TABLE IF NOT EXISTS seen_envelopes (id INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS state_counter (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    value INTEGER NOT NULL CHECK (value >= 0)
);
CREATE TABLE IF NOT EXISTS notices (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    peer TEXT NOT NULL,
    text TEXT NOT NULL,
    time_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS notices_peer ON notices (peer, id);
-- Delivery receipts: `device` of `peer` has the message this device (or another device of
-- the own account) sent to `peer`.
CREATE TABLE IF NOT EXISTS receipts (
    peer TEXT NOT NULL,
    message_id BLOB NOT NULL,
    device INTEGER NOT NULL,
    PRIMARY KEY (peer, message_id, device)
) WITHOUT ROWID;
-- Receipts naming a message this device does not hold (yet): a receipt goes to every
-- device of the sender's account, and the copy of the message from the own device that sent
-- it may come later. Applied when that copy (or a history import) brings the message;
-- bounded (`MAX_EARLY_RECEIPTS`, the oldest go).
CREATE TABLE IF NOT EXISTS early_receipts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    peer TEXT NOT NULL,
    message_id BLOB NOT NULL,
    device INTEGER NOT NULL,
    UNIQUE (peer, message_id, device)
);
-- Recent outgoing plaintexts, for retry requests (bounded: `OUTBOX_MAX_MESSAGES`,
-- `OUTBOX_MAX_AGE_MS`; an entry goes once every device it was sent to receipted it).
CREATE TABLE IF NOT EXISTS outbox (
    peer TEXT NOT NULL,
    message_id BLOB NOT NULL,
    payload BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (peer, message_id)
);
CREATE INDEX IF NOT EXISTS outbox_created ON outbox (created_ms);
-- The devices an outbox entry went to that have not receipted it, with the digest of the
-- envelope each was sent (SHA-256 of its content, first 16 bytes).
CREATE TABLE IF NOT EXISTS outbox_devices (
    peer TEXT NOT NULL,
    message_id BLOB NOT NULL,
    device INTEGER NOT NULL,
    digest BLOB NOT NULL,
    resends INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (peer, message_id, device),
    FOREIGN KEY (peer, message_id) REFERENCES outbox (peer, message_id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS outbox_digest ON outbox_devices (peer, device, digest);
-- Receipts still to send (one message per peer at the end of a receive).
CREATE TABLE IF NOT EXISTS pending_receipts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    peer TEXT NOT NULL,
    message_id BLOB NOT NULL,
    UNIQUE (peer, message_id)
);
-- Payloads still to send (sent transcripts, retry requests, answers to retry requests).
CREATE TABLE IF NOT EXISTS pending_sends (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient TEXT NOT NULL,
    kind INTEGER NOT NULL,           -- 1: payload as it is; 2: resend an outbox entry
    payload BLOB,                    -- kind 1
    message_id BLOB,                 -- kind 1: its outbox key, if kept; kind 2: the entry
    device INTEGER,                  -- kind 2: the device that asked
    created_ms INTEGER NOT NULL
);
-- Digests of envelopes sent without keeping their payload (receipts, retry requests,
-- session resets), so that a retry request for one is told from one for an envelope never
-- sent (bounded as the outbox is).
CREATE TABLE IF NOT EXISTS sent_unkept (
    peer TEXT NOT NULL,
    device INTEGER NOT NULL,
    digest BLOB NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sent_unkept_digest ON sent_unkept (peer, device, digest);
-- Retry requests sent, to ask once more when that device starts a new session with this one
-- (restored from an older copy, it may have lost the request with the session it came on);
-- at most `MAX_RETRY_ASKED`, none older than `OUTBOX_MAX_AGE_MS`.
CREATE TABLE IF NOT EXISTS retry_asked (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    peer TEXT NOT NULL,
    device INTEGER NOT NULL,
    digest BLOB NOT NULL,
    server_time_ms INTEGER NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS retry_asked_device ON retry_asked (peer, device);
-- Retry requests sent (the hourly bound per sender device).
CREATE TABLE IF NOT EXISTS retry_requests_sent (
    peer TEXT NOT NULL,
    device INTEGER NOT NULL,
    at_ms INTEGER NOT NULL
);
";

/// Run after [`SCHEMA`]: the indexes on columns a migration adds to older stores.
const SCHEMA_AFTER_MIGRATIONS: &str = "
CREATE UNIQUE INDEX IF NOT EXISTS messages_message_id ON messages (peer, outgoing, message_id)
    WHERE message_id IS NOT NULL;
";

/// Outgoing plaintexts kept for retry requests, at most (the oldest go first).
pub(crate) const OUTBOX_MAX_MESSAGES: usize = 1_000;
/// Outgoing plaintexts kept for retry requests, at most this long (7 days).
pub(crate) const OUTBOX_MAX_AGE_MS: u64 = 7 * 86_400_000;
/// Payloads waiting to be sent, at most (the oldest are dropped).
pub(crate) const MAX_PENDING_SENDS: usize = 1_000;
/// Receipts waiting to be sent, at most (the oldest are dropped).
pub(crate) const MAX_PENDING_RECEIPTS: usize = 4_096;
/// Retry requests remembered to ask again, at most (the oldest go).
pub(crate) const MAX_RETRY_ASKED: usize = 1_000;
/// Receipts kept for messages this device does not hold yet, at most (the oldest go).
pub(crate) const MAX_EARLY_RECEIPTS: usize = 4_096;

/// Brings a store made by an older version up to this one (in one transaction; opening
/// happens under the home's lock). Issue 9: `messages` gains `message_id` and `devices`.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let has = |col: &str| -> rusqlite::Result<bool> {
        conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info('messages') WHERE name = ?1)",
            [col],
            |r| r.get(0),
        )
    };
    if !has("message_id")? || !has("devices")? {
        let mut sql = String::from("BEGIN IMMEDIATE;");
        if !has("message_id")? {
            sql.push_str("ALTER TABLE messages ADD COLUMN message_id BLOB;");
        }
        if !has("devices")? {
            sql.push_str("ALTER TABLE messages ADD COLUMN devices INTEGER;");
        }
        sql.push_str("COMMIT;");
        conn.execute_batch(&sql)?;
    }
    conn.execute_batch(SCHEMA_AFTER_MIGRATIONS)?;
    conn.execute_batch(crate::groups::SCHEMA)
}

/// An open, unlocked store.
pub(crate) struct Store {
    conn: Connection,
    home: PathBuf,
}

/// A stored session row.
pub(crate) struct SessionRow {
    pub(crate) base_key: [u8; 32],
    pub(crate) state: Zeroizing<Vec<u8>>,
    pub(crate) stale: bool,
}

/// A stored contact row.
pub(crate) struct ContactRow {
    pub(crate) account_key: [u8; 32],
    pub(crate) device_list: Vec<u8>,
    pub(crate) verified: bool,
    pub(crate) pending: Option<([u8; 32], Vec<u8>)>,
}

/// One message in the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The other party.
    pub peer: String,
    /// Their device (received) or 0 (sent to every device).
    pub device: u32,
    /// Sent by us.
    pub outgoing: bool,
    /// The text.
    pub text: String,
    /// When the server accepted it (ms since the Unix epoch), if known.
    pub server_time_ms: Option<u64>,
    /// When the sender says it sent it (ms since the Unix epoch).
    pub sent_time_ms: u64,
    /// The message's id (16 bytes), `None` for a message from a version without ids.
    pub message_id: Option<[u8; 16]>,
    /// Sent: how many of the recipient's devices have receipted it (`None` for received
    /// messages).
    pub delivered: Option<u32>,
    /// Sent: how many of the recipient's devices it was encrypted for (`None` for received
    /// messages, notes to self and copies whose count is unknown).
    pub devices: Option<u32>,
}

fn open_with(path: &Path, key: &RawKey) -> Result<Connection> {
    let db = |e| ClientError::db(path, e);
    let conn = Connection::open(path).map_err(db)?;
    // A wrong key is reported as an error value; SQLCipher need not also log it to stderr.
    conn.execute_batch("PRAGMA cipher_log_level = NONE;").map_err(db)?;
    conn.execute_batch(&Zeroizing::new(format!("PRAGMA key = {};", key.pragma_value().as_str())))
        .map_err(db)?;
    // A wrong key shows up at the first read of the schema, as "not a database" (page 1 does
    // not decrypt). Anything else there (the folder or the file read-only, a full disk, the
    // WAL or shared-memory file that cannot be created) is a disk or permission problem, and
    // says so with the file's name (issue 8, point 10).
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)).map_err(|e| {
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) {
            ClientError::WrongKey
        } else {
            ClientError::db(path, e)
        }
    })?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        .map_err(db)?;
    conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(db)?;
    Ok(conn)
}

/// The files SQLite keeps for the database beside `store.db`.
pub(crate) const DB_SIDE_FILES: [&str; 2] = ["store.db-wal", "store.db-shm"];

/// Makes `store.db` exist with mode 0600 whatever the umask, before SQLite opens it: SQLite
/// would create it 0666 less the umask (0644 usually), and gives the WAL and shared-memory
/// files the database's mode (issue 8, point 13). An empty file is an empty database.
fn create_db_file(path: &Path) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let f = opts.open(path).map_err(|e| ClientError::file(path, &e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The umask may have removed the owner's bits too; make it exactly 0600.
        f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| ClientError::file(path, &e))?;
    }
    drop(f);
    Ok(())
}

/// A store created before `store.db` was made 0600 (or its WAL and shared-memory files,
/// which take its mode) may be readable by others: they are made 0600 when it is opened.
/// Best effort: the folder is private already, and a file we cannot change the mode of is
/// reported when SQLite fails to use it.
fn tighten_db_modes(home: &Path) {
    #[cfg(unix)]
    for name in std::iter::once(DB_FILE).chain(DB_SIDE_FILES) {
        use std::os::unix::fs::PermissionsExt;
        let file = home.join(name);
        if let Ok(m) = std::fs::symlink_metadata(&file)
            && m.is_file()
            && m.permissions().mode() & 0o077 != 0
        {
            let _ = std::fs::set_permissions(
                &file,
                std::fs::Permissions::from_mode(m.permissions().mode() & 0o700),
            );
        }
    }
    #[cfg(not(unix))]
    let _ = home;
}

/// Creates `dir` 0700 whatever the umask (missing parents 0700 less the umask); a folder
/// that exists already, or that appears meanwhile, is left as it is (it may be the user's,
/// with a mode they chose).
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    let failed = |p: &Path, e: std::io::Error| ClientError::file(p, &e);
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        builder.recursive(true).create(parent).map_err(|e| failed(parent, e))?;
    }
    // Not recursive: only a folder this call made has its mode set.
    match builder.recursive(false).create(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        other => other.map_err(|e| failed(dir, e))?,
    }
    #[cfg(unix)]
    {
        // The umask may have removed bits from 0700, never added any; make it exactly 0700.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| failed(dir, e))?;
    }
    Ok(())
}

/// The steps of [`Store::rekey`], for tests that make it fail before one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RekeyStep {
    /// Writing the new secret as `*.new`.
    WriteNew,
    /// `PRAGMA rekey`.
    Rekey,
    /// Renaming the `.new` file into place.
    Promote,
    /// Removing the old kind's file.
    RemoveOld,
}

#[cfg(test)]
thread_local! {
    /// The step before which the next rekey on this thread fails (tests only).
    pub(crate) static FAIL_BEFORE: std::cell::Cell<Option<RekeyStep>> = const { std::cell::Cell::new(None) };
}

/// In tests, fails before `step` when [`FAIL_BEFORE`] names it; otherwise nothing.
#[allow(clippy::unnecessary_wraps)] // returns an error only in tests
fn fail_point(step: RekeyStep) -> Result<()> {
    #[cfg(test)]
    if FAIL_BEFORE.with(std::cell::Cell::get) == Some(step) {
        return Err(ClientError::Internal("injected rekey failure"));
    }
    let _ = step;
    Ok(())
}

impl Store {
    /// Whether `home` holds a store; also when it cannot be told (a folder the user may not
    /// enter), so that opening it reports why, naming the file (issue 8, point 10).
    pub(crate) fn exists(home: &Path) -> bool {
        !matches!(home.join(DB_FILE).try_exists(), Ok(false))
    }

    /// Creates a new store in `home` protected by `secret`. A home folder that does not
    /// exist is created 0700 (with any missing parents); an existing one keeps its mode.
    pub(crate) fn create(home: &Path, secret: &StoreSecret) -> Result<Self> {
        create_private_dir(home)?;
        let pending = key::new_key(secret)?;
        let db = home.join(DB_FILE);
        create_db_file(&db)?;
        let made = open_with(&db, &pending.key).and_then(|conn| {
            conn.execute_batch(SCHEMA).map_err(|e| ClientError::db(&db, e))?;
            migrate(&conn).map_err(|e| ClientError::db(&db, e))?;
            pending.commit(home)?;
            Ok(conn)
        });
        match made {
            Ok(conn) => Ok(Self { conn, home: home.to_owned() }),
            Err(e) => {
                // A new database without its key file opens for nobody and would be taken for
                // a store whose key file was lost: leave none behind (a full disk, say). Best
                // effort: the error that stopped the creation is the one to report.
                for name in std::iter::once(DB_FILE).chain(DB_SIDE_FILES) {
                    let _ = std::fs::remove_file(home.join(name));
                }
                Err(e)
            }
        }
    }

    /// Opens the store in `home` (`passphrase` only when it has one). Every secret file
    /// present is tried, current ones first, so a rekey interrupted at any step still opens;
    /// the one that opened the store then becomes the only one ([`key::settle`]).
    pub(crate) fn open(home: &Path, passphrase: Option<&Zeroizing<String>>) -> Result<Self> {
        let db = home.join(DB_FILE);
        match db.try_exists() {
            Ok(true) => {}
            Ok(false) => return Err(ClientError::NoAccount),
            Err(e) => return Err(ClientError::file(&db, &e)),
        }
        let candidates = key::candidates(home);
        if candidates.is_empty() {
            // The database without its key: say what is missing, not "no account" (creating
            // one here would destroy the store; issue 8, point 11).
            return Err(ClientError::KeyFileMissing { home: home.to_owned() });
        }
        tighten_db_modes(home);
        let mut failure = ClientError::NoAccount;
        for candidate in candidates {
            let opened = key::key_from(home, candidate.name, passphrase).and_then(|key| open_with(&db, &key));
            match opened {
                Ok(conn) => {
                    key::settle(home, candidate)?;
                    conn.execute_batch(SCHEMA).map_err(|e| ClientError::db(&db, e))?;
                    migrate(&conn).map_err(|e| ClientError::db(&db, e))?;
                    return Ok(Self { conn, home: home.to_owned() });
                }
                // A wrong or missing secret: try the next file, reporting the most useful
                // reason (a missing passphrase over a wrong key) if none opens the store.
                Err(e @ (ClientError::WrongKey | ClientError::PassphraseRequired)) => {
                    if !matches!(failure, ClientError::PassphraseRequired) {
                        failure = e;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(failure)
    }

    /// Re-encrypts the store under a new key (SQLCipher `PRAGMA rekey`) without ever leaving
    /// it unopenable: (1) the new salt or key file is written and fsynced as `*.new`, (2) the
    /// database is rekeyed (atomically: SQLCipher rekeys in rollback-journal mode), (3) the
    /// `.new` file is renamed over the current one, (4) the old kind's file, if the kind
    /// changed, is removed. A crash after any step leaves files [`Store::open`] can open with.
    pub(crate) fn rekey(&mut self, secret: &StoreSecret) -> Result<()> {
        let pending: PendingKey = key::new_key(secret)?;
        fail_point(RekeyStep::WriteNew)?;
        pending.write_pending(&self.home)?;
        fail_point(RekeyStep::Rekey)?;
        self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;")?;
        self.conn.execute_batch(&Zeroizing::new(format!(
            "PRAGMA rekey = {};",
            pending.key.pragma_value().as_str()
        )))?;
        self.conn.execute_batch("PRAGMA journal_mode = WAL;")?;
        fail_point(RekeyStep::Promote)?;
        pending.promote(&self.home)?;
        fail_point(RekeyStep::RemoveOld)?;
        pending.remove_old(&self.home)?;
        Ok(())
    }

    /// The connection, for single statements (each its own transaction).
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Starts a transaction.
    pub(crate) fn tx(&mut self) -> Result<Transaction<'_>> {
        Ok(self.conn.transaction()?)
    }

    /// Reads a meta value.
    pub(crate) fn meta(&self, k: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        Ok(self
            .conn
            .query_row("SELECT v FROM meta WHERE k = ?1", [k], |r| r.get::<_, Vec<u8>>(0))
            .optional()?
            .map(Zeroizing::new))
    }

    /// Writes a meta value (outside a larger transaction).
    #[cfg(test)]
    pub(crate) fn set_meta(&self, k: &str, v: &[u8]) -> Result<()> {
        set_meta(&self.conn, k, v)
    }

    /// Sessions with one remote device, newest first.
    pub(crate) fn sessions(&self, peer: &str, device: u32) -> Result<Vec<SessionRow>> {
        let mut st = self.conn.prepare(
            "SELECT base_key, state, stale FROM sessions WHERE peer = ?1 AND device = ?2 ORDER BY created_seq DESC",
        )?;
        let rows = st.query_map(params![peer, device], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, Zeroizing::new(r.get::<_, Vec<u8>>(1)?), r.get::<_, bool>(2)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (k, state, stale) = row?;
            let base_key: [u8; 32] =
                k.as_slice().try_into().map_err(|_| ClientError::Internal("stored base key length"))?;
            out.push(SessionRow { base_key, state, stale });
        }
        Ok(out)
    }

    /// The session with this base key, if stored.
    pub(crate) fn session_by_base_key(&self, base_key: &[u8; 32]) -> Result<Option<SessionRow>> {
        Ok(self
            .conn
            .query_row("SELECT state, stale FROM sessions WHERE base_key = ?1", [base_key.as_slice()], |r| {
                Ok(SessionRow {
                    base_key: *base_key,
                    state: Zeroizing::new(r.get::<_, Vec<u8>>(0)?),
                    stale: r.get::<_, bool>(1)?,
                })
            })
            .optional()?)
    }

    /// The state counter: how many changes of protocol state this store has committed
    /// (see [`raise_state_counter`]); 0 before the first.
    pub(crate) fn state_counter(&self) -> Result<u64> {
        let v: Option<i64> = self
            .conn
            .query_row("SELECT value FROM state_counter WHERE id = 0", [], |r| r.get(0))
            .optional()?;
        Ok(v.map_or(0, |v| u64::try_from(v).unwrap_or(0)))
    }

    /// The peers of every stored session (each once, by name).
    pub(crate) fn session_peers(&self) -> Result<Vec<String>> {
        let mut st = self.conn.prepare("SELECT DISTINCT peer FROM sessions ORDER BY peer")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Whether any session is stored.
    pub(crate) fn has_sessions(&self) -> Result<bool> {
        Ok(self.conn.query_row("SELECT EXISTS (SELECT 1 FROM sessions)", [], |r| r.get(0))?)
    }

    /// A contact.
    pub(crate) fn contact(&self, name: &str) -> Result<Option<ContactRow>> {
        let row = self
            .conn
            .query_row(
                "SELECT account_key, device_list, verified, pending_key, pending_list FROM contacts WHERE name = ?1",
                [name],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, bool>(2)?,
                        r.get::<_, Option<Vec<u8>>>(3)?,
                        r.get::<_, Option<Vec<u8>>>(4)?,
                    ))
                },
            )
            .optional()?;
        let Some((k, list, verified, pk, pl)) = row else { return Ok(None) };
        let key32 = |v: Vec<u8>| -> Result<[u8; 32]> {
            v.as_slice().try_into().map_err(|_| ClientError::Internal("stored key length"))
        };
        let pending = match (pk, pl) {
            (Some(k), Some(l)) => Some((key32(k)?, l)),
            _ => None,
        };
        Ok(Some(ContactRow { account_key: key32(k)?, device_list: list, verified, pending }))
    }

    /// Whether this envelope was already processed.
    pub(crate) fn seen(&self, envelope_id: u64) -> Result<bool> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM seen_envelopes WHERE id = ?1)",
            [envelope_id as i64],
            |r| r.get(0),
        )?)
    }

    /// The conversation with `peer`, oldest first by the server's clock (issue 8, point 6):
    /// each message sorts by the time the server accepted it (a received message's
    /// `server_time`, a sent one's from the server's answer), never by the sender's claim
    /// (`sent_time`, which any sender sets as it likes). A sent message the server never
    /// confirmed has no server time: it sorts by this device's clock when it was sent (its
    /// own `sent_time`). Equal times keep the order they were stored in.
    pub(crate) fn history(&self, peer: &str) -> Result<Vec<HistoryEntry>> {
        let mut st = self.conn.prepare(
            "SELECT m.peer, m.device, m.outgoing, m.text, m.server_time_ms, m.sent_time_ms, m.message_id,
                    m.devices,
                    CASE WHEN m.outgoing AND m.message_id IS NOT NULL THEN
                        (SELECT count(*) FROM receipts r WHERE r.peer = m.peer AND r.message_id = m.message_id)
                    END
             FROM messages m WHERE m.peer = ?1
             ORDER BY COALESCE(m.server_time_ms, m.sent_time_ms), m.id",
        )?;
        let rows = st.query_map([peer], |r| {
            let message_id = r.get::<_, Option<Vec<u8>>>(6)?.and_then(|v| <[u8; 16]>::try_from(v).ok());
            let count = |v: Option<i64>| v.map(|n| u32::try_from(n.max(0)).unwrap_or(u32::MAX));
            Ok(HistoryEntry {
                peer: r.get(0)?,
                device: r.get(1)?,
                outgoing: r.get(2)?,
                text: r.get(3)?,
                server_time_ms: r.get::<_, Option<i64>>(4)?.map(|t| t.max(0) as u64),
                sent_time_ms: r.get::<_, i64>(5)?.max(0) as u64,
                message_id,
                devices: count(r.get(7)?),
                delivered: count(r.get(8)?),
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The outbox entries (peer, message id), oldest first (tests).
    #[cfg(test)]
    pub(crate) fn outbox(&self) -> Result<Vec<(String, MessageId)>> {
        let mut st = self.conn.prepare("SELECT peer, message_id FROM outbox ORDER BY created_ms, rowid")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (p, id) = row?;
            out.push((p, id.as_slice().try_into().map_err(|_| ClientError::Internal("stored message id"))?));
        }
        Ok(out)
    }

    /// The payloads waiting to be sent, oldest first.
    pub(crate) fn pending_sends(&self) -> Result<Vec<PendingSend>> {
        let mut st = self.conn.prepare(
            "SELECT seq, recipient, kind, payload, message_id, device FROM pending_sends ORDER BY seq",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<Vec<u8>>>(3)?,
                r.get::<_, Option<Vec<u8>>>(4)?,
                r.get::<_, Option<u32>>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, recipient, kind, payload, id, device) = row?;
            let id = match id {
                Some(v) => Some(
                    <MessageId>::try_from(v.as_slice())
                        .map_err(|_| ClientError::Internal("stored message id"))?,
                ),
                None => None,
            };
            let what = match (kind, payload, id, device) {
                (1, Some(p), id, _) => PendingKind::Payload { payload: Zeroizing::new(p), message_id: id },
                (2, _, Some(id), Some(device)) => PendingKind::Resend { message_id: id, device },
                _ => return Err(ClientError::Internal("stored pending send")),
            };
            out.push(PendingSend { seq, recipient, what });
        }
        Ok(out)
    }

    /// The receipts waiting to be sent, by peer (each peer once, in the order of its first
    /// receipt; its ids oldest first).
    pub(crate) fn pending_receipts(&self) -> Result<Vec<(String, Vec<MessageId>)>> {
        let mut st = self.conn.prepare("SELECT peer, message_id FROM pending_receipts ORDER BY seq")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
        let mut out: Vec<(String, Vec<MessageId>)> = Vec::new();
        for row in rows {
            let (peer, id) = row?;
            let id: MessageId =
                id.as_slice().try_into().map_err(|_| ClientError::Internal("stored message id"))?;
            match out.iter_mut().find(|(p, _)| *p == peer) {
                Some((_, ids)) => ids.push(id),
                None => out.push((peer, vec![id])),
            }
        }
        Ok(out)
    }

    /// Closes the database (checkpointing the WAL) so the files can be removed.
    pub(crate) fn close(self) -> Result<()> {
        self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        self.conn.close().map_err(|(_, e)| ClientError::Store(e))
    }

    /// The home directory.
    pub(crate) fn home(&self) -> &Path {
        &self.home
    }
}

/// Writes a meta value inside a transaction or on the connection.
pub(crate) fn set_meta(conn: &Connection, k: &str, v: &[u8]) -> Result<()> {
    conn.execute("INSERT OR REPLACE INTO meta (k, v) VALUES (?1, ?2)", params![k, v])?;
    Ok(())
}

/// The notices about `peer`, oldest first: (time in ms, text).
/// Every contact's name (the own account's included once it is stored).
pub(crate) fn contact_names(conn: &Connection) -> Result<Vec<String>> {
    let mut st = conn.prepare_cached("SELECT name FROM contacts ORDER BY name")?;
    let rows = st.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn notices(conn: &Connection, peer: &str) -> Result<Vec<(u64, String)>> {
    let mut st = conn.prepare("SELECT time_ms, text FROM notices WHERE peer = ?1 ORDER BY id")?;
    let rows = st.query_map([peer], |r| Ok((u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0), r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Records a notice about `peer` (a device added or removed) for its history.
pub(crate) fn add_notice(conn: &Connection, peer: &str, text: &str, time_ms: u64) -> Result<()> {
    conn.execute(
        "INSERT INTO notices (peer, text, time_ms) VALUES (?1, ?2, ?3)",
        params![peer, text, i64::try_from(time_ms).unwrap_or(i64::MAX)],
    )?;
    Ok(())
}

/// Deletes a meta value.
pub(crate) fn delete_meta(conn: &Connection, k: &str) -> Result<()> {
    conn.execute("DELETE FROM meta WHERE k = ?1", [k])?;
    Ok(())
}

/// Inserts or replaces a session.
pub(crate) fn put_session(
    conn: &Connection,
    peer: &str,
    device: u32,
    base_key: &[u8; 32],
    state: &[u8],
    generation: u64,
    stale: bool,
) -> Result<()> {
    // Creation order: an existing row keeps its place; a new one goes last (newest).
    conn.execute(
        "INSERT INTO sessions (base_key, peer, device, state, generation, stale, created_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, (SELECT COALESCE(MAX(created_seq), 0) + 1 FROM sessions))
         ON CONFLICT (base_key) DO UPDATE SET state = excluded.state, generation = excluded.generation,
             stale = MAX(sessions.stale, excluded.stale)",
        params![base_key.as_slice(), peer, device, state, generation as i64, stale],
    )?;
    Ok(())
}

/// Makes the session `base_key` the newest of its peer device (the one that sends) unless it
/// is stale or already the newest: a session that just decrypted a message is the one the
/// peer uses, so two devices that started sessions with each other at the same moment
/// converge on one (the first message that goes through without crossing another decides).
pub(crate) fn promote_session(conn: &Connection, peer: &str, device: u32, base_key: &[u8; 32]) -> Result<()> {
    conn.execute(
        "UPDATE sessions SET created_seq = (SELECT MAX(created_seq) + 1 FROM sessions)
         WHERE base_key = ?1 AND stale = 0
           AND created_seq < (SELECT MAX(created_seq) FROM sessions WHERE peer = ?2 AND device = ?3)",
        params![base_key.as_slice(), peer, device],
    )?;
    Ok(())
}

/// Raises the state counter by one, in the caller's transaction, and returns the new value.
/// Every transaction that changes protocol state the world can see (sessions a send
/// advanced, a received envelope taken in, prekeys to upload) raises it; the requests that
/// then show the change report it to the server, which keeps the largest (a copy of this
/// store below the server's value is an older copy put back: `crate::restore`).
pub(crate) fn raise_state_counter(conn: &Connection) -> Result<u64> {
    let v: i64 = conn.query_row(
        "INSERT INTO state_counter (id, value) VALUES (0, 1) ON CONFLICT (id) DO UPDATE
         SET value = CASE WHEN value < 9223372036854775807 THEN value + 1 ELSE value END RETURNING value",
        [],
        |r| r.get(0),
    )?;
    Ok(u64::try_from(v).unwrap_or(0))
}

/// Raises the state counter to at least `v` (clamped to SQLite's largest integer).
pub(crate) fn state_counter_at_least(conn: &Connection, v: u64) -> Result<()> {
    conn.execute(
        "INSERT INTO state_counter (id, value) VALUES (0, ?1) ON CONFLICT (id) DO UPDATE
         SET value = max(value, excluded.value)",
        [i64::try_from(v).unwrap_or(i64::MAX)],
    )?;
    Ok(())
}

/// Marks every session stale (with `peer` only, when given): none is sent on again, each
/// still decrypts late messages, and the next send to a device starts a new session.
pub(crate) fn mark_sessions_stale(conn: &Connection, peer: Option<&str>) -> Result<()> {
    match peer {
        Some(p) => conn.execute("UPDATE sessions SET stale = 1 WHERE peer = ?1", [p])?,
        None => conn.execute("UPDATE sessions SET stale = 1", [])?,
    };
    Ok(())
}

/// Marks every session with one remote device stale except the one with `keep` as its
/// base key (the device started that one to replace them).
pub(crate) fn mark_other_sessions_stale(
    conn: &Connection,
    peer: &str,
    device: u32,
    keep: &[u8; 32],
) -> Result<()> {
    conn.execute(
        "UPDATE sessions SET stale = 1 WHERE peer = ?1 AND device = ?2 AND base_key != ?3",
        params![peer, device, keep.as_slice()],
    )?;
    Ok(())
}

/// Marks a session stale (restored from an old copy: never sent on again).
pub(crate) fn mark_stale(conn: &Connection, base_key: &[u8; 32]) -> Result<()> {
    conn.execute("UPDATE sessions SET stale = 1 WHERE base_key = ?1", [base_key.as_slice()])?;
    Ok(())
}

/// Keeps at most `keep` sessions per remote device (the newest); returns the base keys of
/// the deleted ones (their generation marks are pruned once this commits).
pub(crate) fn prune_sessions(
    conn: &Connection,
    peer: &str,
    device: u32,
    keep: usize,
) -> Result<Vec<[u8; 32]>> {
    deleted_keys(
        conn,
        "DELETE FROM sessions WHERE peer = ?1 AND device = ?2 AND base_key NOT IN
         (SELECT base_key FROM sessions WHERE peer = ?1 AND device = ?2 ORDER BY created_seq DESC LIMIT ?3)
         RETURNING base_key",
        params![peer, device, keep as i64],
    )
}

/// Deletes every session with an account's devices (or one device); returns their base keys.
pub(crate) fn delete_sessions(conn: &Connection, peer: &str, device: Option<u32>) -> Result<Vec<[u8; 32]>> {
    match device {
        Some(d) => deleted_keys(
            conn,
            "DELETE FROM sessions WHERE peer = ?1 AND device = ?2 RETURNING base_key",
            params![peer, d],
        ),
        None => deleted_keys(conn, "DELETE FROM sessions WHERE peer = ?1 RETURNING base_key", params![peer]),
    }
}

/// The devices of `peer` this device holds sessions with.
pub(crate) fn session_devices(conn: &Connection, peer: &str) -> Result<Vec<u32>> {
    let mut st = conn.prepare_cached("SELECT DISTINCT device FROM sessions WHERE peer = ?1")?;
    let rows = st.query_map([peer], |r| r.get::<_, u32>(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Runs a `DELETE ... RETURNING base_key`.
fn deleted_keys(conn: &Connection, sql: &str, args: impl rusqlite::Params) -> Result<Vec<[u8; 32]>> {
    let mut st = conn.prepare(sql)?;
    let rows = st.query_map(args, |r| r.get::<_, Vec<u8>>(0))?;
    let mut out = Vec::new();
    for k in rows {
        out.push(k?.as_slice().try_into().map_err(|_| ClientError::Internal("stored base key length"))?);
    }
    Ok(out)
}

/// Inserts or replaces a contact.
pub(crate) fn put_contact(conn: &Connection, name: &str, c: &ContactRow) -> Result<()> {
    let (pk, pl) = match &c.pending {
        Some((k, l)) => (Some(k.as_slice()), Some(l.as_slice())),
        None => (None, None),
    };
    conn.execute(
        "INSERT OR REPLACE INTO contacts (name, account_key, device_list, verified, pending_key, pending_list)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![name, c.account_key.as_slice(), c.device_list, c.verified, pk, pl],
    )?;
    Ok(())
}

/// Appends a message to the history (with its envelope id when received, which is unique)
/// and returns its row id; `None` (nothing stored) when a message with the same id is
/// stored already in that direction with that peer (a resend, or a copy from another own
/// device).
pub(crate) fn put_message(
    conn: &Connection,
    e: &HistoryEntry,
    envelope_id: Option<u64>,
) -> Result<Option<i64>> {
    if let Some(id) = &e.message_id {
        let known: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE peer = ?1 AND outgoing = ?2 AND message_id = ?3)",
            params![e.peer, e.outgoing, id.as_slice()],
            |r| r.get(0),
        )?;
        if known {
            return Ok(None);
        }
    }
    conn.execute(
        "INSERT INTO messages (peer, device, outgoing, text, server_time_ms, sent_time_ms, envelope_id,
                               message_id, devices)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            e.peer,
            e.device,
            e.outgoing,
            e.text,
            e.server_time_ms.map(|t| t as i64),
            e.sent_time_ms as i64,
            envelope_id.map(|i| i as i64),
            e.message_id.as_ref().map(<[u8; 16]>::as_slice),
            e.devices,
        ],
    )?;
    let row = conn.last_insert_rowid();
    if let (true, Some(id)) = (e.outgoing, &e.message_id) {
        apply_early_receipts(conn, Some((&e.peer, id)))?;
    }
    Ok(Some(row))
}

/// Records the early receipts (`early_receipts`) whose message this device now holds, for
/// one message or (`None`, after a history import) for all.
pub(crate) fn apply_early_receipts(
    conn: &Connection,
    one: Option<(&str, &MessageId)>,
) -> rusqlite::Result<()> {
    let held = "EXISTS (SELECT 1 FROM messages m WHERE m.peer = e.peer AND m.outgoing = 1 AND m.message_id = e.message_id)";
    let (peer, id) = one.map_or((None, None), |(p, i)| (Some(p), Some(i.as_slice())));
    let which = "(?1 IS NULL OR (e.peer = ?1 AND e.message_id = ?2))";
    let n = conn.execute(
        &format!(
            "INSERT OR IGNORE INTO receipts (peer, message_id, device)
             SELECT e.peer, e.message_id, e.device FROM early_receipts e WHERE {which} AND {held}"
        ),
        params![peer, id],
    )?;
    if n > 0 || one.is_none() {
        conn.execute(
            &format!("DELETE FROM early_receipts AS e WHERE {which} AND {held}"),
            params![peer, id],
        )?;
    }
    Ok(())
}

/// Sets how many devices a sent message was encrypted for (a send retried after the
/// recipient's devices changed).
pub(crate) fn set_devices(conn: &Connection, row: i64, devices: Option<u32>) -> Result<()> {
    conn.execute("UPDATE messages SET devices = ?2 WHERE id = ?1", params![row, devices])?;
    Ok(())
}

/// A payload waiting to be sent ([`Store::pending_sends`]).
pub(crate) struct PendingSend {
    /// Its row.
    pub(crate) seq: i64,
    /// The account it goes to.
    pub(crate) recipient: String,
    /// What to send.
    pub(crate) what: PendingKind,
}

/// What a [`PendingSend`] sends.
pub(crate) enum PendingKind {
    /// This payload (kept in the outbox under `message_id` when there is one).
    Payload {
        /// The payload.
        payload: Zeroizing<Vec<u8>>,
        /// Its outbox key.
        message_id: Option<MessageId>,
    },
    /// The outbox entry (`recipient`, `message_id`) again, over a new session with `device`.
    Resend {
        /// The entry.
        message_id: MessageId,
        /// The device that asked.
        device: u32,
    },
}

/// Queues a payload to send ([`MAX_PENDING_SENDS`] at most: the oldest are dropped).
pub(crate) fn queue_send(conn: &Connection, recipient: &str, what: &PendingKind, now_ms: u64) -> Result<()> {
    match what {
        PendingKind::Payload { payload, message_id } => conn.execute(
            "INSERT INTO pending_sends (recipient, kind, payload, message_id, created_ms) VALUES (?1, 1, ?2, ?3, ?4)",
            params![recipient, payload.as_slice(), message_id.as_ref().map(<[u8; 16]>::as_slice), now_ms as i64],
        )?,
        PendingKind::Resend { message_id, device } => conn.execute(
            "INSERT INTO pending_sends (recipient, kind, message_id, device, created_ms) VALUES (?1, 2, ?2, ?3, ?4)",
            params![recipient, message_id.as_slice(), device, now_ms as i64],
        )?,
    };
    conn.execute(
        "DELETE FROM pending_sends WHERE seq <= (SELECT seq FROM pending_sends ORDER BY seq DESC LIMIT 1 OFFSET ?1)",
        [MAX_PENDING_SENDS as i64],
    )?;
    Ok(())
}

/// Removes a sent (or abandoned) pending payload.
pub(crate) fn delete_pending_send(conn: &Connection, seq: i64) -> Result<()> {
    conn.execute("DELETE FROM pending_sends WHERE seq = ?1", [seq])?;
    Ok(())
}

/// Queues a delivery receipt for `peer`'s message ([`MAX_PENDING_RECEIPTS`] at most: the
/// oldest are dropped).
pub(crate) fn queue_receipt(conn: &Connection, peer: &str, message_id: &MessageId) -> Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO pending_receipts (peer, message_id) VALUES (?1, ?2)",
        params![peer, message_id.as_slice()],
    )?;
    conn.execute(
        "DELETE FROM pending_receipts WHERE seq <=
         (SELECT seq FROM pending_receipts ORDER BY seq DESC LIMIT 1 OFFSET ?1)",
        [MAX_PENDING_RECEIPTS as i64],
    )?;
    Ok(())
}

/// Removes sent receipts.
pub(crate) fn delete_pending_receipts(conn: &Connection, peer: &str, ids: &[MessageId]) -> Result<()> {
    for id in ids {
        conn.execute(
            "DELETE FROM pending_receipts WHERE peer = ?1 AND message_id = ?2",
            params![peer, id.as_slice()],
        )?;
    }
    Ok(())
}

/// Keeps `payload`, sent to `peer` under `message_id`, for retry requests, with the digest
/// of the envelope each device got. `replace`: the devices listed are all it went to (a
/// first send: rows of an earlier attempt go); otherwise (a resend) only rows still there
/// are updated. Then applies the bounds ([`prune_outbox`]).
pub(crate) fn put_outbox(
    conn: &Connection,
    peer: &str,
    message_id: &MessageId,
    payload: &[u8],
    devices: &[(u32, [u8; 16])],
    replace: bool,
    now_ms: u64,
) -> Result<()> {
    let id = message_id.as_slice();
    if replace {
        conn.execute(
            "INSERT INTO outbox (peer, message_id, payload, created_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (peer, message_id) DO NOTHING",
            params![peer, id, payload, now_ms as i64],
        )?;
        conn.execute("DELETE FROM outbox_devices WHERE peer = ?1 AND message_id = ?2", params![peer, id])?;
        for (device, digest) in devices {
            conn.execute(
                "INSERT INTO outbox_devices (peer, message_id, device, digest) VALUES (?1, ?2, ?3, ?4)",
                params![peer, id, device, digest.as_slice()],
            )?;
        }
    } else {
        for (device, digest) in devices {
            conn.execute(
                "UPDATE outbox_devices SET digest = ?4 WHERE peer = ?1 AND message_id = ?2 AND device = ?3",
                params![peer, id, device, digest.as_slice()],
            )?;
        }
    }
    prune_outbox(conn, now_ms)
}

/// The outbox's bounds: entries older than [`OUTBOX_MAX_AGE_MS`] (or from the future: a
/// clock set back), past the newest [`OUTBOX_MAX_MESSAGES`], or that every device they were
/// sent to receipted, are forgotten.
pub(crate) fn prune_outbox(conn: &Connection, now_ms: u64) -> Result<()> {
    let oldest = now_ms.saturating_sub(OUTBOX_MAX_AGE_MS) as i64;
    conn.execute(
        "DELETE FROM outbox WHERE created_ms < ?1 OR created_ms > ?2",
        params![oldest, now_ms as i64 + 60_000],
    )?;
    conn.execute(
        "DELETE FROM outbox WHERE rowid NOT IN (SELECT rowid FROM outbox ORDER BY created_ms DESC, rowid DESC LIMIT ?1)",
        [OUTBOX_MAX_MESSAGES as i64],
    )?;
    conn.execute(
        "DELETE FROM outbox WHERE NOT EXISTS
         (SELECT 1 FROM outbox_devices d WHERE d.peer = outbox.peer AND d.message_id = outbox.message_id)",
        [],
    )?;
    Ok(())
}

/// Remembers the digests of envelopes sent to `peer` whose payload is not kept (at most
/// [`OUTBOX_MAX_MESSAGES`] rows, [`OUTBOX_MAX_AGE_MS`]).
pub(crate) fn remember_unkept(
    conn: &Connection,
    peer: &str,
    devices: &[(u32, [u8; 16])],
    now_ms: u64,
) -> Result<()> {
    for (device, digest) in devices {
        conn.execute(
            "INSERT INTO sent_unkept (peer, device, digest, at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![peer, device, digest.as_slice(), now_ms as i64],
        )?;
    }
    let oldest = now_ms.saturating_sub(OUTBOX_MAX_AGE_MS) as i64;
    conn.execute(
        "DELETE FROM sent_unkept WHERE at_ms < ?1 OR at_ms > ?2",
        params![oldest, now_ms as i64 + 60_000],
    )?;
    conn.execute(
        "DELETE FROM sent_unkept WHERE rowid <= (SELECT rowid FROM sent_unkept ORDER BY rowid DESC LIMIT 1 OFFSET ?1)",
        [OUTBOX_MAX_MESSAGES as i64],
    )?;
    Ok(())
}

/// Whether an envelope with this digest went to `peer`'s `device` without its payload
/// being kept ([`remember_unkept`]).
pub(crate) fn was_unkept(conn: &Connection, peer: &str, device: u32, digest: &[u8; 16]) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sent_unkept WHERE peer = ?1 AND device = ?2 AND digest = ?3)",
        params![peer, device, digest.as_slice()],
        |r| r.get(0),
    )?)
}

/// What [`find_outbox`] found: the entry `device` of `peer` was sent an envelope of.
pub(crate) struct OutboxHit {
    /// The entry.
    pub(crate) message_id: MessageId,
    /// Times it was resent to that device already.
    pub(crate) resends: u32,
}

/// The outbox entry whose envelope to `peer`'s `device` had this digest, if still kept
/// (younger than [`OUTBOX_MAX_AGE_MS`]).
pub(crate) fn find_outbox(
    conn: &Connection,
    peer: &str,
    device: u32,
    digest: &[u8; 16],
    now_ms: u64,
) -> Result<Option<OutboxHit>> {
    let oldest = now_ms.saturating_sub(OUTBOX_MAX_AGE_MS) as i64;
    let row = conn
        .query_row(
            "SELECT d.message_id, d.resends FROM outbox_devices d JOIN outbox o
                 ON o.peer = d.peer AND o.message_id = d.message_id
             WHERE d.peer = ?1 AND d.device = ?2 AND d.digest = ?3 AND o.created_ms >= ?4",
            params![peer, device, digest.as_slice(), oldest],
            |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)),
        )
        .optional()?;
    let Some((id, resends)) = row else { return Ok(None) };
    Ok(Some(OutboxHit {
        message_id: id.as_slice().try_into().map_err(|_| ClientError::Internal("stored message id"))?,
        resends: u32::try_from(resends.max(0)).unwrap_or(u32::MAX),
    }))
}

/// Counts one more resend of an outbox entry to `device`.
pub(crate) fn count_resend(conn: &Connection, peer: &str, message_id: &MessageId, device: u32) -> Result<()> {
    conn.execute(
        "UPDATE outbox_devices SET resends = resends + 1 WHERE peer = ?1 AND message_id = ?2 AND device = ?3",
        params![peer, message_id.as_slice(), device],
    )?;
    Ok(())
}

/// An outbox entry's payload, if still kept.
pub(crate) fn outbox_payload(
    conn: &Connection,
    peer: &str,
    message_id: &MessageId,
) -> Result<Option<Zeroizing<Vec<u8>>>> {
    Ok(conn
        .query_row(
            "SELECT payload FROM outbox WHERE peer = ?1 AND message_id = ?2",
            params![peer, message_id.as_slice()],
            |r| r.get::<_, Vec<u8>>(0),
        )
        .optional()?
        .map(Zeroizing::new))
}

/// Records that `peer`'s `device` has the message `message_id` sent to `peer`, and forgets
/// its outbox entry for that device (the whole entry once no device is left). `false` when
/// this device holds no message with that id sent to `peer`: the receipt is kept aside
/// (`early_receipts`) until the message comes, when `keep_early` (another device of the
/// account may have sent it), else nothing is stored.
pub(crate) fn record_receipt(
    conn: &Connection,
    peer: &str,
    message_id: &MessageId,
    device: u32,
    keep_early: bool,
) -> Result<bool> {
    let id = message_id.as_slice();
    let sent: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM messages WHERE peer = ?1 AND outgoing = 1 AND message_id = ?2)",
        params![peer, id],
        |r| r.get(0),
    )?;
    if !sent {
        if !keep_early {
            return Ok(false);
        }
        conn.execute(
            "INSERT OR IGNORE INTO early_receipts (peer, message_id, device) VALUES (?1, ?2, ?3)",
            params![peer, id, device],
        )?;
        conn.execute(
            "DELETE FROM early_receipts WHERE seq <=
             (SELECT seq FROM early_receipts ORDER BY seq DESC LIMIT 1 OFFSET ?1)",
            [MAX_EARLY_RECEIPTS as i64],
        )?;
        return Ok(false);
    }
    conn.execute(
        "INSERT OR IGNORE INTO receipts (peer, message_id, device) VALUES (?1, ?2, ?3)",
        params![peer, id, device],
    )?;
    conn.execute(
        "DELETE FROM outbox_devices WHERE peer = ?1 AND message_id = ?2 AND device = ?3",
        params![peer, id, device],
    )?;
    conn.execute(
        "DELETE FROM outbox WHERE peer = ?1 AND message_id = ?2 AND NOT EXISTS
         (SELECT 1 FROM outbox_devices d WHERE d.peer = ?1 AND d.message_id = ?2)",
        params![peer, id],
    )?;
    Ok(true)
}

/// Remembers a retry request sent to `peer`'s `device` for the envelope `digest` the server
/// took at `server_time_ms` (see `retry_asked`).
pub(crate) fn record_retry_asked(
    conn: &Connection,
    peer: &str,
    device: u32,
    digest: &[u8],
    server_time_ms: u64,
    now_ms: u64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO retry_asked (peer, device, digest, server_time_ms, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![peer, device, digest, server_time_ms as i64, now_ms as i64],
    )?;
    conn.execute(
        "DELETE FROM retry_asked WHERE at_ms < ?1 OR seq <=
         (SELECT seq FROM retry_asked ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
        params![now_ms.saturating_sub(OUTBOX_MAX_AGE_MS) as i64, MAX_RETRY_ASKED as i64],
    )?;
    Ok(())
}

/// The retry requests sent to `peer`'s `device` (digest, server time), forgotten here: each
/// is asked once more at most.
pub(crate) fn take_retry_asked(conn: &Connection, peer: &str, device: u32) -> Result<Vec<(Vec<u8>, u64)>> {
    let rows = conn
        .prepare(
            "SELECT digest, server_time_ms FROM retry_asked WHERE peer = ?1 AND device = ?2 ORDER BY seq",
        )?
        .query_map(params![peer, device], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)? as u64)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    conn.execute("DELETE FROM retry_asked WHERE peer = ?1 AND device = ?2", params![peer, device])?;
    Ok(rows)
}

/// Whether a retry request to `peer`'s `device` may be sent now, and if so records it: at
/// most `per_device` per device within `window_ms`, and requests to at most `devices`
/// devices within it (a new one past that waits, so none is forgotten early).
pub(crate) fn allow_retry_request(
    conn: &Connection,
    peer: &str,
    device: u32,
    now_ms: u64,
    window_ms: u64,
    per_device: u32,
    devices: u32,
) -> Result<bool> {
    let since = now_ms.saturating_sub(window_ms) as i64;
    // Times in the future (a clock set back) count as expired.
    conn.execute(
        "DELETE FROM retry_requests_sent WHERE at_ms < ?1 OR at_ms > ?2",
        params![since, now_ms as i64],
    )?;
    let mine: u32 = conn.query_row(
        "SELECT count(*) FROM retry_requests_sent WHERE peer = ?1 AND device = ?2",
        params![peer, device],
        |r| r.get(0),
    )?;
    if mine >= per_device {
        return Ok(false);
    }
    if mine == 0 {
        let others: u32 = conn.query_row(
            "SELECT count(*) FROM (SELECT DISTINCT peer, device FROM retry_requests_sent)",
            [],
            |r| r.get(0),
        )?;
        if others >= devices {
            return Ok(false);
        }
    }
    conn.execute(
        "INSERT INTO retry_requests_sent (peer, device, at_ms) VALUES (?1, ?2, ?3)",
        params![peer, device, now_ms as i64],
    )?;
    Ok(true)
}

/// Sets the server time of a sent message once the server accepted it.
pub(crate) fn set_server_time(conn: &Connection, message_id: i64, server_time_ms: u64) -> Result<()> {
    conn.execute(
        "UPDATE messages SET server_time_ms = ?2 WHERE id = ?1",
        params![message_id, server_time_ms as i64],
    )?;
    Ok(())
}

/// Records a processed envelope id (dedupe).
pub(crate) fn mark_seen(conn: &Connection, envelope_id: u64) -> Result<()> {
    conn.execute("INSERT OR IGNORE INTO seen_envelopes (id) VALUES (?1)", [envelope_id as i64])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_files(dir: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                out.extend(std::fs::read(p).unwrap());
            }
        }
        out
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn store_is_encrypted_and_wrong_passphrase_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let pass = || StoreSecret::Passphrase(Zeroizing::new("correct horse".into()));
        let secret_key = [0x5au8; 32];
        {
            let mut s = Store::create(dir.path(), &pass()).unwrap();
            let tx = s.tx().unwrap();
            set_meta(&tx, "device_identity", &secret_key).unwrap();
            let e = HistoryEntry {
                peer: "bob".into(),
                device: 1,
                outgoing: false,
                text: "attack at dawn, plaintext marker".into(),
                server_time_ms: Some(1),
                sent_time_ms: 2,
                message_id: None,
                delivered: None,
                devices: None,
            };
            put_message(&tx, &e, Some(7)).unwrap();
            tx.commit().unwrap();
            // Look at the files while the store is open (WAL) and after closing.
            let bytes = all_files(dir.path());
            assert!(!contains(&bytes, b"plaintext marker"));
            assert!(!contains(&bytes, &secret_key));
            assert!(!contains(&bytes, b"SQLite format 3"));
            s.close().unwrap();
        }
        let bytes = all_files(dir.path());
        assert!(!contains(&bytes, b"plaintext marker"));
        assert!(!contains(&bytes, &secret_key));

        let wrong = Zeroizing::new("wrong horse".to_string());
        assert!(matches!(Store::open(dir.path(), Some(&wrong)), Err(ClientError::WrongKey)));
        assert!(matches!(Store::open(dir.path(), None), Err(ClientError::PassphraseRequired)));
        let right = Zeroizing::new("correct horse".to_string());
        let s = Store::open(dir.path(), Some(&right)).unwrap();
        assert_eq!(s.history("bob").unwrap().len(), 1);
        assert_eq!(&**s.meta("device_identity").unwrap().unwrap(), &secret_key);
    }

    #[test]
    fn rekey_changes_the_passphrase_and_can_drop_it() {
        let dir = tempfile::tempdir().unwrap();
        let old = Zeroizing::new("old pass".to_string());
        let mut s = Store::create(dir.path(), &StoreSecret::Passphrase(old.clone())).unwrap();
        s.set_meta("x", b"y").unwrap();
        s.rekey(&StoreSecret::Passphrase(Zeroizing::new("new pass".into()))).unwrap();
        drop(s);
        assert!(matches!(Store::open(dir.path(), Some(&old)), Err(ClientError::WrongKey)));
        let mut s = Store::open(dir.path(), Some(&Zeroizing::new("new pass".into()))).unwrap();
        assert_eq!(&**s.meta("x").unwrap().unwrap(), b"y");
        s.rekey(&StoreSecret::NoPassphrase).unwrap();
        drop(s);
        assert!(!key::needs_passphrase(dir.path()));
        let s = Store::open(dir.path(), None).unwrap();
        assert_eq!(&**s.meta("x").unwrap().unwrap(), b"y");
    }

    /// The four kinds of rekey: passphrase to passphrase, to none, none to passphrase, none
    /// to none.
    fn transitions() -> Vec<(Option<&'static str>, Option<&'static str>)> {
        vec![
            (Some("old pass"), Some("new pass")),
            (Some("old pass"), None),
            (None, Some("new pass")),
            (None, None),
        ]
    }

    fn secret(p: Option<&str>) -> StoreSecret {
        p.map_or(StoreSecret::NoPassphrase, |p| StoreSecret::Passphrase(Zeroizing::new(p.into())))
    }

    /// Opens the store as a user would after a crash: with the new secret, else the old one.
    fn reopen(home: &Path, old: Option<&str>, new: Option<&str>) -> (Store, bool) {
        let try_with = |p: Option<&str>| Store::open(home, p.map(|p| Zeroizing::new(p.to_owned())).as_ref());
        match try_with(new) {
            Ok(s) => (s, true),
            Err(new_err) => match try_with(old) {
                Ok(s) => (s, false),
                Err(old_err) => panic!("the store opens with neither secret: {new_err} / {old_err}"),
            },
        }
    }

    /// The secret files in `home` (`store.salt`, `store.key` and their `.new`) with their bytes.
    fn secret_files(home: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(home)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("store.") && !n.starts_with(DB_FILE))
            .map(|n| (n.clone(), std::fs::read(home.join(&n)).unwrap()))
            .collect()
    }

    #[test]
    fn a_rekey_that_fails_before_any_step_leaves_a_store_that_opens() {
        let steps = [RekeyStep::WriteNew, RekeyStep::Rekey, RekeyStep::Promote, RekeyStep::RemoveOld];
        for (old, new) in transitions() {
            for step in steps {
                let dir = tempfile::tempdir().unwrap();
                let home = dir.path();
                let mut s = Store::create(home, &secret(old)).unwrap();
                s.set_meta("x", b"y").unwrap();
                let before = secret_files(home);
                FAIL_BEFORE.with(|f| f.set(Some(step)));
                let failed = s.rekey(&secret(new));
                FAIL_BEFORE.with(|f| f.set(None));
                assert!(failed.is_err(), "{old:?}->{new:?} before {step:?}");
                // A crash here: nothing else runs, the connection is dropped.
                drop(s);

                let (s, _) = reopen(home, old, new);
                assert_eq!(&**s.meta("x").unwrap().unwrap(), b"y", "{old:?}->{new:?} before {step:?}");
                drop(s);
                // Opening settled the files: one secret file, the one that opens the store;
                // the new one exactly when the database was rekeyed.
                let left = secret_files(home);
                assert_eq!(left.len(), 1, "{old:?}->{new:?} before {step:?}: {left:?}");
                let rekeyed = matches!(step, RekeyStep::Promote | RekeyStep::RemoveOld);
                assert_eq!(left != before, rekeyed, "{old:?}->{new:?} before {step:?}");
                let (mut s, _) = reopen(home, old, new);
                // And the user can finish what they started.
                s.rekey(&secret(new)).unwrap();
                drop(s);
                let s = Store::open(home, new.map(|p| Zeroizing::new(p.to_owned())).as_ref()).unwrap();
                assert_eq!(&**s.meta("x").unwrap().unwrap(), b"y");
            }
        }
    }

    #[test]
    fn an_existing_home_keeps_its_mode_and_a_new_one_is_private() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            let dir = tempfile::tempdir().unwrap();
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            drop(Store::create(dir.path(), &StoreSecret::NoPassphrase).unwrap());
            assert_eq!(mode(dir.path()), 0o755, "a folder the store did not create keeps its mode");
            let new_home = dir.path().join("a/b/home");
            drop(Store::create(&new_home, &StoreSecret::NoPassphrase).unwrap());
            assert_eq!(mode(&new_home), 0o700);
            assert_eq!(mode(&dir.path().join("a")), 0o700, "parents it created are private too");
        }
    }

    /// A creation that fails before the key file is in place leaves no `store.db` behind
    /// (which would read as a store whose key file was lost).
    #[test]
    fn a_failed_creation_leaves_no_database_without_its_key() {
        let dir = tempfile::tempdir().unwrap();
        // Something where the key file goes: the commit's rename fails.
        std::fs::create_dir_all(dir.path().join(key::KEY_FILE).join("x")).unwrap();
        let err = Store::create(dir.path(), &StoreSecret::NoPassphrase).err().unwrap();
        assert!(
            matches!(&err, ClientError::StoreFile { path, .. } if path.ends_with(key::KEY_FILE)),
            "{err}"
        );
        assert!(!Store::exists(dir.path()));
        for name in DB_SIDE_FILES {
            assert!(!dir.path().join(name).exists(), "{name}");
        }
        std::fs::remove_dir_all(dir.path().join(key::KEY_FILE)).unwrap();
        drop(Store::create(dir.path(), &StoreSecret::NoPassphrase).unwrap());
        assert!(Store::open(dir.path(), None).is_ok());
    }

    #[test]
    fn envelope_ids_dedupe() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::create(dir.path(), &StoreSecret::NoPassphrase).unwrap();
        let e = HistoryEntry {
            peer: "bob".into(),
            device: 1,
            outgoing: false,
            text: "hi".into(),
            server_time_ms: Some(1),
            sent_time_ms: 1,
            message_id: None,
            delivered: None,
            devices: None,
        };
        let tx = s.tx().unwrap();
        put_message(&tx, &e, Some(9)).unwrap();
        mark_seen(&tx, 9).unwrap();
        tx.commit().unwrap();
        assert!(s.seen(9).unwrap());
        let tx = s.tx().unwrap();
        assert!(put_message(&tx, &e, Some(9)).is_err(), "a second copy of envelope 9 is refused");
        drop(tx);
        assert_eq!(s.history("bob").unwrap().len(), 1);
    }

    fn sent(peer: &str, id: MessageId) -> HistoryEntry {
        HistoryEntry {
            peer: peer.into(),
            device: 0,
            outgoing: true,
            text: "t".into(),
            server_time_ms: Some(1),
            sent_time_ms: 1,
            message_id: Some(id),
            delivered: None,
            devices: Some(2),
        }
    }

    fn id(n: u32) -> MessageId {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&n.to_be_bytes());
        id
    }

    fn count(c: &Connection, table: &str) -> i64 {
        c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).unwrap()
    }

    /// A receipt that comes before the copy of the message it names (sent by another device
    /// of the account) is kept aside and counted once the copy comes, or a history import
    /// brings it; they are bounded, the oldest going first.
    #[test]
    fn a_receipt_before_its_message_counts_once_the_message_comes() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::create(dir.path(), &StoreSecret::NoPassphrase).unwrap();
        let c = s.conn();
        assert!(!record_receipt(c, "bob", &id(1), 1, true).unwrap());
        assert!(!record_receipt(c, "bob", &id(1), 2, true).unwrap());
        assert!(!record_receipt(c, "bob", &id(2), 1, true).unwrap());
        assert!(!record_receipt(c, "bob", &id(3), 1, false).unwrap(), "not kept");
        assert_eq!((count(c, "early_receipts"), count(c, "receipts")), (3, 0));
        let tx = s.tx().unwrap();
        put_message(&tx, &sent("bob", id(1)), None).unwrap();
        // The same id sent to another peer, or received: not the one receipted.
        put_message(&tx, &sent("carol", id(2)), None).unwrap();
        tx.commit().unwrap();
        let e = s.history("bob").unwrap().into_iter().find(|e| e.message_id == Some(id(1))).unwrap();
        assert_eq!(e.delivered, Some(2));
        let c = s.conn();
        assert_eq!((count(c, "early_receipts"), count(c, "receipts")), (1, 2));
        // An import that brought id 2 directly.
        c.execute(
            "INSERT INTO messages (peer, device, outgoing, text, sent_time_ms, message_id) VALUES ('bob', 0, 1, 'x', 1, ?1)",
            [id(2).as_slice()],
        )
        .unwrap();
        apply_early_receipts(c, None).unwrap();
        assert_eq!((count(c, "early_receipts"), count(c, "receipts")), (0, 3));
        // Bounded: the oldest go.
        for n in 0..MAX_EARLY_RECEIPTS as u32 + 10 {
            record_receipt(c, "bob", &id(1_000 + n), 1, true).unwrap();
        }
        assert_eq!(count(c, "early_receipts"), MAX_EARLY_RECEIPTS as i64);
        let oldest: Vec<u8> = c
            .query_row("SELECT message_id FROM early_receipts ORDER BY seq LIMIT 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(oldest, id(1_010).to_vec());
    }

    /// Retry requests are remembered per device to ask once more, then forgotten; bounded
    /// by count (the oldest go) and age.
    #[test]
    fn retry_requests_are_asked_again_once_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::create(dir.path(), &StoreSecret::NoPassphrase).unwrap();
        let c = s.conn();
        record_retry_asked(c, "bob", 2, &[1; 16], 10, 1_000).unwrap();
        record_retry_asked(c, "bob", 3, &[2; 16], 11, 1_000).unwrap();
        assert_eq!(take_retry_asked(c, "bob", 2).unwrap(), [(vec![1; 16], 10)]);
        assert!(take_retry_asked(c, "bob", 2).unwrap().is_empty(), "once");
        assert_eq!(take_retry_asked(c, "bob", 3).unwrap().len(), 1);
        for n in 0..MAX_RETRY_ASKED as u64 + 5 {
            record_retry_asked(c, "bob", 4, &[3; 16], n, 1_000).unwrap();
        }
        let kept = take_retry_asked(c, "bob", 4).unwrap();
        assert_eq!((kept.len(), kept[0].1), (MAX_RETRY_ASKED, 5), "the oldest went");
        record_retry_asked(c, "bob", 5, &[4; 16], 1, 1_000).unwrap();
        record_retry_asked(c, "bob", 5, &[5; 16], 2, 1_000 + OUTBOX_MAX_AGE_MS + 1).unwrap();
        assert_eq!(take_retry_asked(c, "bob", 5).unwrap(), [(vec![5; 16], 2)], "too old");
    }

    fn outbox_len(s: &Store) -> usize {
        s.outbox().unwrap().len()
    }

    /// The outbox keeps at most 1,000 messages (the oldest go), none older than 7 days, and
    /// forgets an entry once every device it went to receipted it.
    #[test]
    fn the_outbox_is_bounded_by_count_and_age_and_forgets_what_every_device_has() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::create(dir.path(), &StoreSecret::NoPassphrase).unwrap();
        let now = 10 * OUTBOX_MAX_AGE_MS;
        let devices = [(1, [1u8; 16]), (2, [2u8; 16])];
        let tx = s.tx().unwrap();
        for n in 0..OUTBOX_MAX_MESSAGES as u32 + 5 {
            put_message(&tx, &sent("bob", id(n)), None).unwrap();
            put_outbox(&tx, "bob", &id(n), b"payload", &devices, true, now + u64::from(n)).unwrap();
        }
        tx.commit().unwrap();
        let kept = s.outbox().unwrap();
        assert_eq!(kept.len(), OUTBOX_MAX_MESSAGES, "bounded by count");
        assert_eq!(kept[0].1, id(5), "the oldest went first");

        // A receipt from one device keeps the entry (the other may still ask); from both, it
        // is forgotten; the receipts are counted in the history.
        let c = s.conn();
        assert!(record_receipt(c, "bob", &id(5), 1, true).unwrap());
        assert_eq!(outbox_len(&s), OUTBOX_MAX_MESSAGES);
        assert!(find_outbox(c, "bob", 2, &[2u8; 16], now).unwrap().is_some());
        assert!(find_outbox(c, "bob", 1, &[1u8; 16], now + 6).unwrap().is_some(), "other entries still");
        assert!(record_receipt(c, "bob", &id(5), 2, true).unwrap());
        assert_eq!(outbox_len(&s), OUTBOX_MAX_MESSAGES - 1, "every device has it");
        assert!(outbox_payload(c, "bob", &id(5)).unwrap().is_none());
        let h = s.history("bob").unwrap();
        let e = h.iter().find(|e| e.message_id == Some(id(5))).unwrap();
        assert_eq!((e.delivered, e.devices), (Some(2), Some(2)));
        // A receipt for a message never sent to that peer stores nothing.
        assert!(!record_receipt(c, "bob", &id(99_999), 1, false).unwrap());
        assert!(!record_receipt(c, "carol", &id(6), 1, false).unwrap(), "sent to bob, not carol");
        let receipts: i64 = c.query_row("SELECT count(*) FROM receipts", [], |r| r.get(0)).unwrap();
        assert_eq!(receipts, 2);

        // Age: 7 days after they were made, the next send forgets them all (and a lookup
        // no longer finds one before that).
        let later = now + OUTBOX_MAX_AGE_MS + OUTBOX_MAX_MESSAGES as u64 + 10;
        assert!(find_outbox(c, "bob", 1, &[1u8; 16], later).unwrap().is_none());
        let tx = s.tx().unwrap();
        put_message(&tx, &sent("bob", id(100_000)), None).unwrap();
        put_outbox(&tx, "bob", &id(100_000), b"new", &devices, true, later).unwrap();
        tx.commit().unwrap();
        assert_eq!(s.outbox().unwrap(), [("bob".to_owned(), id(100_000))], "bounded by age");
        // A resend updates the digest of the device it went to; nothing else.
        let tx = s.tx().unwrap();
        put_outbox(&tx, "bob", &id(100_000), b"new", &[(1, [9u8; 16]), (3, [3u8; 16])], false, later)
            .unwrap();
        tx.commit().unwrap();
        assert!(find_outbox(s.conn(), "bob", 1, &[9u8; 16], later).unwrap().is_some());
        assert!(find_outbox(s.conn(), "bob", 1, &[1u8; 16], later).unwrap().is_none());
        assert!(find_outbox(s.conn(), "bob", 3, &[3u8; 16], later).unwrap().is_none(), "never sent to 3");
    }

    /// Retry requests: at most `per_device` to one device within the window, and to at most
    /// `devices` devices; the window moves on.
    #[test]
    fn retry_requests_are_bounded_per_device_and_in_devices() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::create(dir.path(), &StoreSecret::NoPassphrase).unwrap();
        let c = s.conn();
        let allow = |peer: &str, device: u32, now: u64| {
            allow_retry_request(c, peer, device, now, 1_000, 3, 2).unwrap()
        };
        assert!((0..3).all(|i| allow("bob", 1, 10 + i)));
        assert!(!allow("bob", 1, 20), "per device");
        assert!(allow("bob", 2, 20), "another device");
        assert!(!allow("carol", 1, 20), "two devices within the window already");
        assert!(allow("bob", 2, 21), "one already asked keeps its own bound");
        assert!(allow("bob", 1, 1_100) && allow("carol", 1, 1_100), "the window moved on");
    }

    /// A store made before issue 9 (no message ids) opens: the columns are added, its
    /// messages keep their text, and new ones carry ids.
    #[test]
    fn a_store_from_before_message_ids_opens_and_migrates() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Store::create(dir.path(), &StoreSecret::NoPassphrase).unwrap();
            let tx = s.tx().unwrap();
            let old = HistoryEntry { message_id: None, devices: None, ..sent("bob", id(0)) };
            put_message(&tx, &old, None).unwrap();
            tx.commit().unwrap();
            // Back to the schema of issue 8.
            s.conn()
                .execute_batch(
                    "DROP INDEX messages_message_id; ALTER TABLE messages DROP COLUMN message_id;
                     ALTER TABLE messages DROP COLUMN devices;",
                )
                .unwrap();
            let cols: i64 = s
                .conn()
                .query_row(
                    "SELECT count(*) FROM pragma_table_info('messages') WHERE name = 'devices'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(cols, 0);
        }
        let mut s = Store::open(dir.path(), None).unwrap();
        let tx = s.tx().unwrap();
        put_message(&tx, &sent("bob", id(1)), None).unwrap();
        assert_eq!(put_message(&tx, &sent("bob", id(1)), None).unwrap(), None, "deduplicated by id");
        tx.commit().unwrap();
        let h = s.history("bob").unwrap();
        assert_eq!(h.iter().map(|e| e.message_id).collect::<Vec<_>>(), [None, Some(id(1))]);
        assert_eq!(h[1].devices, Some(2));
        drop(s);
        assert!(Store::open(dir.path(), None).is_ok(), "and opens again");
    }

    /// The queues of payloads and receipts to send are bounded (the oldest go).
    #[test]
    fn the_send_queues_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::create(dir.path(), &StoreSecret::NoPassphrase).unwrap();
        let tx = s.tx().unwrap();
        for n in 0..MAX_PENDING_SENDS as u32 + 3 {
            let what = PendingKind::Resend { message_id: id(n), device: 1 };
            queue_send(&tx, "bob", &what, 1).unwrap();
        }
        for n in 0..MAX_PENDING_RECEIPTS as u32 + 3 {
            queue_receipt(&tx, "bob", &id(n)).unwrap();
        }
        queue_receipt(&tx, "bob", &id(10)).unwrap();
        tx.commit().unwrap();
        let sends = s.pending_sends().unwrap();
        assert_eq!(sends.len(), MAX_PENDING_SENDS);
        assert!(matches!(sends[0].what, PendingKind::Resend { message_id, .. } if message_id == id(3)));
        let receipts = s.pending_receipts().unwrap();
        assert_eq!(receipts.len(), 1);
        assert_eq!(receipts[0].1.len(), MAX_PENDING_RECEIPTS);
        assert_eq!(receipts[0].1[0], id(3), "the oldest went; a repeated id is queued once");
    }
}
