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
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    peer TEXT NOT NULL,
    device INTEGER NOT NULL,
    outgoing INTEGER NOT NULL,
    text TEXT NOT NULL,
    server_time_ms INTEGER,
    sent_time_ms INTEGER NOT NULL,
    envelope_id INTEGER UNIQUE
);
CREATE INDEX IF NOT EXISTS messages_peer ON messages (peer, id);
CREATE TABLE IF NOT EXISTS seen_envelopes (id INTEGER PRIMARY KEY);
";

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
}

fn open_with(path: &Path, key: &RawKey) -> Result<Connection> {
    let conn = Connection::open(path)?;
    // A wrong key is reported as an error value; SQLCipher need not also log it to stderr.
    conn.execute_batch("PRAGMA cipher_log_level = NONE;")?;
    conn.execute_batch(&Zeroizing::new(format!("PRAGMA key = {};", key.pragma_value().as_str())))?;
    // A wrong key shows up at the first read of the schema.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))
        .map_err(|_| ClientError::WrongKey)?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

impl Store {
    /// Whether `home` holds a store.
    pub(crate) fn exists(home: &Path) -> bool {
        home.join(DB_FILE).exists()
    }

    /// Creates a new store in `home` protected by `secret`.
    pub(crate) fn create(home: &Path, secret: &StoreSecret) -> Result<Self> {
        std::fs::create_dir_all(home)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700))?;
        }
        let pending = key::new_key(secret)?;
        let conn = open_with(&home.join(DB_FILE), &pending.key)?;
        conn.execute_batch(SCHEMA)?;
        pending.commit(home)?;
        Ok(Self { conn, home: home.to_owned() })
    }

    /// Opens the store in `home` (`passphrase` only when it has one).
    pub(crate) fn open(home: &Path, passphrase: Option<&Zeroizing<String>>) -> Result<Self> {
        if !Self::exists(home) {
            return Err(ClientError::NoAccount);
        }
        let key = key::existing_key(home, passphrase)?;
        let conn = open_with(&home.join(DB_FILE), &key)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn, home: home.to_owned() })
    }

    /// Re-encrypts the store under a new key (SQLCipher `PRAGMA rekey`). The new salt or key
    /// file is written only after the database took the new key; a crash in between leaves
    /// `store.salt.new`-style leftovers that `open` does not need, so the user re-runs rekey
    /// with the old secret. (SQLCipher rekeys in rollback-journal mode.)
    pub(crate) fn rekey(&mut self, secret: &StoreSecret) -> Result<()> {
        let pending: PendingKey = key::new_key(secret)?;
        self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;")?;
        self.conn.execute_batch(&Zeroizing::new(format!(
            "PRAGMA rekey = {};",
            pending.key.pragma_value().as_str()
        )))?;
        self.conn.execute_batch("PRAGMA journal_mode = WAL;")?;
        pending.commit(&self.home)?;
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

    /// The conversation with `peer`, oldest first.
    pub(crate) fn history(&self, peer: &str) -> Result<Vec<HistoryEntry>> {
        let mut st = self.conn.prepare(
            "SELECT peer, device, outgoing, text, server_time_ms, sent_time_ms FROM messages WHERE peer = ?1 ORDER BY id",
        )?;
        let rows = st.query_map([peer], |r| {
            Ok(HistoryEntry {
                peer: r.get(0)?,
                device: r.get(1)?,
                outgoing: r.get(2)?,
                text: r.get(3)?,
                server_time_ms: r.get::<_, Option<i64>>(4)?.map(|t| t.max(0) as u64),
                sent_time_ms: r.get::<_, i64>(5)?.max(0) as u64,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
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
/// and returns its row id.
pub(crate) fn put_message(conn: &Connection, e: &HistoryEntry, envelope_id: Option<u64>) -> Result<i64> {
    conn.execute(
        "INSERT INTO messages (peer, device, outgoing, text, server_time_ms, sent_time_ms, envelope_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            e.peer,
            e.device,
            e.outgoing,
            e.text,
            e.server_time_ms.map(|t| t as i64),
            e.sent_time_ms as i64,
            envelope_id.map(|i| i as i64)
        ],
    )?;
    Ok(conn.last_insert_rowid())
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
}
