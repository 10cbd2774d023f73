//! Embedded SQLite storage (the default): one file in the data directory, WAL mode,
//! `synchronous=FULL`, one writer thread with group commit ([`writer`]), WAL checkpoints on a
//! thread of their own ([`checkpoint`]) and a small pool of read-only connections for
//! fetches and token look-ups. Every statement is prepared once per connection
//! (`prepare_cached`).

mod checkpoint;
#[cfg(test)]
mod durability_tests;
mod groups;
mod kt;
mod readers;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tacit_api::limits::{
    IDEMPOTENCY_KEY_BYTES, IDEMPOTENCY_TTL_SECS, LOW_PREKEY_WATER, MAX_MAILBOX_ENVELOPES,
    MAX_STORED_KEY_PACKAGES, MAX_STORED_PREKEYS,
};
use tokio::sync::{mpsc, oneshot};

use super::progress::Progress;
use super::schema;
use super::{
    AccountId, AccountRecord, Authed, BlobRecord, BundleParts, DeviceKey, DeviceRecord, GroupMemberName,
    GroupSent, KeyPackageCounts, KeyRecord, LinkSlot, ListState, ListUpdate, NewAccount, NewCommit,
    NewEnvelope, PrekeyCounts, PrekeySet, RotationRecord, Sent, Store, StoreConfig, StoreError,
    StoredEnvelope, json_ids, to_i64, to_u32, to_u64,
};
use checkpoint::Checkpointer;
use readers::{ReadKind, ReaderPool};
use writer::{Msg, Typed, WriterHealth};

/// The size the WAL file is cut back to when it starts over (`journal_size_limit`), so it
/// does not keep its peak size between the checkpointer's truncations.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// The SQLite store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    tx: mpsc::Sender<Msg>,
    health: Arc<WriterHealth>,
    readers: Arc<ReaderPool>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Mutex<Option<Checkpointer>>,
    /// [`StoreConfig::mailbox_bytes`].
    max_mailbox_bytes: i64,
    /// Writes waiting for the writer thread, and when one last finished.
    progress: Progress,
    /// The data folder (its file system's free space is the store's).
    dir: std::path::PathBuf,
}

/// Makes the data folder 0700 when it creates it (an existing folder keeps its mode, with a
/// warning if others may enter it) and the database file 0600, created so before SQLite
/// opens it, whatever the umask. SQLite gives the WAL and shared-memory files the database
/// file's mode; ones left by an older version are set to 0600 here too.
fn private_files(dir: &Path, db: &Path) -> std::io::Result<()> {
    if !dir.is_dir() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
        #[cfg(unix)]
        std::fs::set_permissions(
            dir,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700),
        )?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"), "others may enter the data folder (0700 advised)");
        }
        drop(std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(db)?);
        let name = db.file_name().and_then(|n| n.to_str()).unwrap_or("tacit.db");
        for file in [db.to_owned(), dir.join(format!("{name}-wal")), dir.join(format!("{name}-shm"))] {
            match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
    }
    #[cfg(not(unix))]
    let _ = db;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) `DIR/tacit.db` with the default bounds, applies pending
    /// migrations and starts the writer thread.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, &StoreConfig::default())
    }

    /// [`SqliteStore::open`] with the bounds of `config`.
    pub fn open_with(dir: &Path, config: &StoreConfig) -> Result<Self, StoreError> {
        let path = dir.join("tacit.db");
        private_files(dir, &path).map_err(|e| {
            StoreError::Backend(format!(
                "cannot use the data folder {}: {}",
                dir.display(),
                crate::error::io_cause(&e)
            ))
        })?;
        let mut conn = Connection::open(&path)
            .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
        // Checkpoints run on the checkpointer's connection, never inside the writer's COMMIT.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        migrate(&mut conn)?;
        let (tx, rx) = mpsc::channel(writer::QUEUE);
        let health = Arc::new(WriterHealth::new());
        let writer_health = health.clone();
        let handle = std::thread::Builder::new()
            .name("tacit-sqlite-writer".into())
            .spawn(move || writer::run(conn, rx, &writer_health))
            .map_err(|e| StoreError::Backend(format!("writer thread: {e}")))?;
        let checkpointer = Checkpointer::start(&path, health.clone())?;
        let readers = Arc::new(ReaderPool::open(
            &path,
            readers::READERS,
            readers::TOKEN_READERS,
            readers::READER_WAIT,
        )?);
        Ok(Self {
            tx,
            health,
            checkpointer: Mutex::new(Some(checkpointer)),
            max_mailbox_bytes: config.mailbox_bytes(),
            readers,
            writer: Mutex::new(Some(handle)),
            progress: Progress::default(),
            dir: dir.to_owned(),
        })
    }

    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (job, rx) = Typed::job(f);
        let waiting = self.progress.begin();
        self.tx.send(Msg::Job(job)).await.map_err(|_| StoreError::Closed)?;
        let answer = rx.await.map_err(|_| StoreError::Closed)?;
        waiting.finished();
        answer
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.readers.read(ReadKind::Other, f).await
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let applied: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (n, sql) in schema::SQLITE.iter().enumerate().skip(usize::try_from(applied).unwrap_or(0)) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i64::try_from(n + 1).unwrap_or(i64::MAX))?;
        tx.commit()?;
    }
    Ok(())
}

/// Adds one-time keys (a key whose id is stored already replaces the stored one: the
/// device's latest key under an id is the one whose private half it holds), then, when
/// `keep` is given, deletes every other one-time key of the device not named in it.
fn insert_keys(
    conn: &Connection,
    table: Table,
    d: DeviceKey,
    keys: &[KeyRecord],
    keep: Option<&[u32]>,
) -> Result<(), StoreError> {
    let mut st = conn.prepare_cached(match table {
        Table::OneTime => {
            "INSERT INTO one_time_prekeys (account_id, device_id, key_id, key) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (account_id, device_id, key_id) DO UPDATE SET key = excluded.key"
        }
        Table::Kem => {
            "INSERT INTO kem_prekeys (account_id, device_id, key_id, key) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (account_id, device_id, key_id) DO UPDATE SET key = excluded.key"
        }
    })?;
    for k in keys {
        st.execute(params![d.account, d.device, k.key_id, k.bytes])?;
    }
    if let Some(keep) = keep {
        conn.prepare_cached(match table {
            Table::OneTime => {
                "DELETE FROM one_time_prekeys WHERE account_id = ?1 AND device_id = ?2 \
                 AND key_id NOT IN (SELECT value FROM json_each(?3))"
            }
            Table::Kem => {
                "DELETE FROM kem_prekeys WHERE account_id = ?1 AND device_id = ?2 \
                 AND key_id NOT IN (SELECT value FROM json_each(?3))"
            }
        })?
        .execute(params![d.account, d.device, json_ids(keep)])?;
    }
    let mut trim = conn.prepare_cached(match table {
        Table::OneTime => {
            "DELETE FROM one_time_prekeys WHERE account_id = ?1 AND device_id = ?2 AND id NOT IN \
             (SELECT id FROM one_time_prekeys WHERE account_id = ?1 AND device_id = ?2 ORDER BY id DESC LIMIT ?3)"
        }
        Table::Kem => {
            "DELETE FROM kem_prekeys WHERE account_id = ?1 AND device_id = ?2 AND id NOT IN \
             (SELECT id FROM kem_prekeys WHERE account_id = ?1 AND device_id = ?2 ORDER BY id DESC LIMIT ?3)"
        }
    })?;
    trim.execute(params![d.account, d.device, i64::try_from(MAX_STORED_PREKEYS).unwrap_or(i64::MAX)])?;
    Ok(())
}

#[derive(Clone, Copy)]
enum Table {
    OneTime,
    Kem,
}

fn counts(conn: &Connection, d: DeviceKey) -> Result<PrekeyCounts, StoreError> {
    let one: i64 = conn
        .prepare_cached("SELECT count(*) FROM one_time_prekeys WHERE account_id = ?1 AND device_id = ?2")?
        .query_row(params![d.account, d.device], |r| r.get(0))?;
    let kem: i64 = conn
        .prepare_cached("SELECT count(*) FROM kem_prekeys WHERE account_id = ?1 AND device_id = ?2")?
        .query_row(params![d.account, d.device], |r| r.get(0))?;
    Ok(PrekeyCounts { one_time: to_u32(one), kem_one_time: to_u32(kem) })
}

/// One-time keys left, counted up to [`LOW_PREKEY_WATER`] of each kind (bounded work).
/// Hands out (deletes and returns) the device's oldest key in `table`, as PostgreSQL's
/// `take_one` does: the single writer makes it atomic.
fn take_one(conn: &Connection, table: &str, d: DeviceKey) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "DELETE FROM {table} WHERE id = (SELECT id FROM {table} \
             WHERE account_id = ?1 AND device_id = ?2 ORDER BY id LIMIT 1) RETURNING key"
        ))?
        .query_row(params![d.account, d.device], |r| r.get(0))
        .optional()?)
}

fn last_resort_key_package(conn: &Connection, d: DeviceKey) -> Result<Option<(Vec<u8>, bool)>, StoreError> {
    let last: Option<Vec<u8>> = conn
        .prepare_cached(
            "SELECT data FROM key_packages WHERE account_id = ?1 AND device_id = ?2 AND last_resort = 1",
        )?
        .query_row(params![d.account, d.device], |r| r.get(0))
        .optional()?;
    Ok(last.map(|kp| (kp, true)))
}

fn key_package_counts(conn: &Connection, d: DeviceKey) -> Result<KeyPackageCounts, StoreError> {
    let (available, last_resort): (i64, i64) = conn
        .prepare_cached(
            "SELECT count(*) FILTER (WHERE last_resort = 0), count(*) FILTER (WHERE last_resort = 1) \
             FROM key_packages WHERE account_id = ?1 AND device_id = ?2",
        )?
        .query_row(params![d.account, d.device], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(KeyPackageCounts { available: to_u32(available), last_resort: last_resort > 0 })
}

fn low_counts(conn: &Connection, d: DeviceKey) -> Result<PrekeyCounts, StoreError> {
    let water = i64::from(LOW_PREKEY_WATER);
    let one: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM (SELECT 1 FROM one_time_prekeys WHERE account_id = ?1 AND device_id = ?2 LIMIT ?3)",
        )?
        .query_row(params![d.account, d.device, water], |r| r.get(0))?;
    let kem: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM (SELECT 1 FROM kem_prekeys WHERE account_id = ?1 AND device_id = ?2 LIMIT ?3)",
        )?
        .query_row(params![d.account, d.device, water], |r| r.get(0))?;
    Ok(PrekeyCounts { one_time: to_u32(one), kem_one_time: to_u32(kem) })
}

/// Raises the device's state counter to `value` (the largest value reported is kept).
fn raise_state_counter(conn: &Connection, d: DeviceKey, value: Option<u64>) -> Result<(), StoreError> {
    if let Some(v) = value {
        conn.prepare_cached(
            "INSERT INTO state_counters (account_id, device_id, value) VALUES (?1, ?2, ?3) \
             ON CONFLICT (account_id, device_id) DO UPDATE SET value = max(state_counters.value, excluded.value)",
        )?
        .execute(params![d.account, d.device, to_i64(v)])?;
    }
    Ok(())
}

/// The server time of an earlier send (or group commit or message) by `d` with this
/// idempotency key, if one is stored and unexpired.
fn duplicate_send(
    c: &Connection,
    d: DeviceKey,
    key: Option<&[u8]>,
    now_ms: u64,
) -> Result<Option<u64>, StoreError> {
    let Some(key) = key else { return Ok(None) };
    let first: Option<i64> = c
        .prepare_cached(
            "SELECT server_time_ms FROM send_keys WHERE account_id = ?1 AND device_id = ?2 \
             AND key = ?3 AND expires_ms > ?4",
        )?
        .query_row(params![d.account, d.device, key, to_i64(now_ms)], |r| r.get(0))
        .optional()?;
    Ok(first.map(to_u64))
}

/// Stores the idempotency key of a send by `d` at `now_ms`, until it expires.
fn remember_send(c: &Connection, d: DeviceKey, key: Option<&[u8]>, now_ms: u64) -> Result<(), StoreError> {
    let Some(key) = key else { return Ok(()) };
    let expires = now_ms.saturating_add(IDEMPOTENCY_TTL_SECS * 1000);
    c.prepare_cached(
        "INSERT INTO send_keys (account_id, device_id, key, server_time_ms, expires_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (account_id, device_id, key) \
         DO UPDATE SET server_time_ms = excluded.server_time_ms, expires_ms = excluded.expires_ms",
    )?
    .execute(params![d.account, d.device, key, to_i64(now_ms), to_i64(expires)])?;
    Ok(())
}

fn device_exists(conn: &Connection, d: DeviceKey) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM devices WHERE account_id = ?1 AND device_id = ?2")?
        .exists(params![d.account, d.device])?)
}

/// Deletes what a device holds on the server: its mailbox, one-time keys, challenges,
/// tokens, idempotency keys and state counter; then its row (`remove`) or marks it logged
/// out with its signed and last-resort prekeys emptied.
fn clear_device(conn: &Connection, d: DeviceKey, remove: bool) -> Result<(), StoreError> {
    groups::forget(conn, d.account, Some(d.device))?;
    for sql in [
        "DELETE FROM envelopes WHERE account_id = ?1 AND device_id = ?2",
        "DELETE FROM one_time_prekeys WHERE account_id = ?1 AND device_id = ?2",
        "DELETE FROM kem_prekeys WHERE account_id = ?1 AND device_id = ?2",
        "DELETE FROM key_packages WHERE account_id = ?1 AND device_id = ?2",
        "DELETE FROM challenges WHERE account_id = ?1 AND device_id = ?2",
        "DELETE FROM tokens WHERE account_id = ?1 AND device_id = ?2",
        "DELETE FROM send_keys WHERE account_id = ?1 AND device_id = ?2",
        "DELETE FROM state_counters WHERE account_id = ?1 AND device_id = ?2",
        "DELETE FROM mailboxes WHERE account_id = ?1 AND device_id = ?2",
    ] {
        conn.prepare_cached(sql)?.execute(params![d.account, d.device])?;
    }
    let last = if remove {
        "DELETE FROM devices WHERE account_id = ?1 AND device_id = ?2"
    } else {
        "UPDATE devices SET logged_out = 1, signed_prekey = x'', last_resort = x'' \
         WHERE account_id = ?1 AND device_id = ?2"
    };
    conn.prepare_cached(last)?.execute(params![d.account, d.device])?;
    Ok(())
}

fn blob_record(
    conn: &Connection,
    account: AccountId,
    id: &[u8],
    now_ms: u64,
) -> Result<Option<BlobRecord>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT size, received, expires_ms FROM blobs WHERE id = ?1 AND account_id = ?2 AND expires_ms > ?3",
        )?
        .query_row(params![id, account, to_i64(now_ms)], |r| {
            Ok(BlobRecord {
                size: to_u64(r.get(0)?),
                received: to_u64(r.get(1)?),
                expires_ms: to_u64(r.get(2)?),
            })
        })
        .optional()?)
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_account(&self, a: NewAccount) -> Result<AccountId, StoreError> {
        self.write(move |c| {
            if c.prepare_cached("SELECT 1 FROM accounts WHERE name = ?1")?.exists([&a.name])? {
                return Err(StoreError::NameTaken);
            }
            c.prepare_cached(
                "INSERT INTO accounts (name, account_key, device_list, device_list_version, created_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                a.name,
                a.account_key,
                a.device_list,
                to_i64(a.device_list_version),
                to_i64(a.now_ms)
            ])?;
            let id = c.last_insert_rowid();
            c.prepare_cached(
                "INSERT INTO devices (account_id, device_id, identity, signed_prekey, last_resort, created_ms) \
                 VALUES (?1, 1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![id, a.device_identity, a.signed_prekey, a.last_resort, to_i64(a.now_ms)])?;
            let d = DeviceKey { account: id, device: 1 };
            insert_keys(c, Table::OneTime, d, &a.one_time, None)?;
            insert_keys(c, Table::Kem, d, &a.kem_one_time, None)?;
            kt::enqueue(c, id)?;
            Ok(id)
        })
        .await
    }

    async fn account(&self, name: &str) -> Result<Option<AccountRecord>, StoreError> {
        let name = name.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT id, name, device_list FROM accounts WHERE name = ?1")?
                .query_row([&name], |r| {
                    Ok(AccountRecord { id: r.get(0)?, name: r.get(1)?, device_list: r.get(2)? })
                })
                .optional()?)
        })
        .await
    }

    async fn device_identity(&self, d: DeviceKey) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT identity FROM devices WHERE account_id = ?1 AND device_id = ?2 AND logged_out = 0",
            )?
            .query_row(params![d.account, d.device], |r| r.get(0))
            .optional()?)
        })
        .await
    }

    async fn delete_account(&self, account: AccountId) -> Result<(), StoreError> {
        self.write(move |c| {
            groups::forget(c, account, None)?;
            for sql in [
                "DELETE FROM envelopes WHERE account_id = ?1",
                "DELETE FROM blob_chunks WHERE blob_id IN (SELECT id FROM blobs WHERE account_id = ?1)",
                "DELETE FROM blobs WHERE account_id = ?1",
                "DELETE FROM send_keys WHERE account_id = ?1",
                "DELETE FROM state_counters WHERE account_id = ?1",
                "DELETE FROM one_time_prekeys WHERE account_id = ?1",
                "DELETE FROM kem_prekeys WHERE account_id = ?1",
                "DELETE FROM key_packages WHERE account_id = ?1",
                "DELETE FROM challenges WHERE account_id = ?1",
                "DELETE FROM tokens WHERE account_id = ?1",
                "DELETE FROM devices WHERE account_id = ?1",
                "DELETE FROM mailboxes WHERE account_id = ?1",
                "DELETE FROM rotations WHERE account_id = ?1",
                // The directory publishes the deletion (queued before the row goes).
                "INSERT INTO kt_pending (name) SELECT name FROM accounts WHERE id = ?1",
                "DELETE FROM accounts WHERE id = ?1",
            ] {
                c.prepare_cached(sql)?.execute([account])?;
            }
            Ok(())
        })
        .await
    }

    async fn put_challenge(&self, d: DeviceKey, challenge: &[u8], expires_ms: u64) -> Result<(), StoreError> {
        let challenge = challenge.to_vec();
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO challenges (challenge, account_id, device_id, expires_ms) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![challenge, d.account, d.device, to_i64(expires_ms)])?;
            Ok(())
        })
        .await
    }

    async fn take_challenge(&self, d: DeviceKey, challenge: &[u8], now_ms: u64) -> Result<bool, StoreError> {
        let challenge = challenge.to_vec();
        self.write(move |c| {
            let row: Option<(i64, i64, i64)> = c
                .prepare_cached(
                    "DELETE FROM challenges WHERE challenge = ?1 RETURNING account_id, device_id, expires_ms",
                )?
                .query_row([&challenge], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            Ok(row.is_some_and(|(a, dev, exp)| {
                a == d.account && dev == i64::from(d.device) && to_u64(exp) > now_ms
            }))
        })
        .await
    }

    async fn put_token(
        &self,
        d: DeviceKey,
        token_hash: &[u8],
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<(), StoreError> {
        let hash = token_hash.to_vec();
        let minute = to_i64(now_ms - now_ms % 60_000);
        self.write(move |c| {
            if !c
                .prepare_cached(
                    "SELECT 1 FROM devices WHERE account_id = ?1 AND device_id = ?2 AND logged_out = 0",
                )?
                .exists(params![d.account, d.device])?
            {
                return Err(StoreError::NotFound);
            }
            c.prepare_cached(
                "UPDATE devices SET last_seen_ms = ?3 WHERE account_id = ?1 AND device_id = ?2 \
                 AND (last_seen_ms IS NULL OR last_seen_ms < ?3)",
            )?
            .execute(params![d.account, d.device, minute])?;
            c.prepare_cached(
                "INSERT INTO tokens (token_hash, account_id, device_id, expires_ms) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![hash, d.account, d.device, to_i64(expires_ms)])?;
            Ok(())
        })
        .await
    }

    async fn token_device(&self, token_hash: &[u8], now_ms: u64) -> Result<Option<Authed>, StoreError> {
        let hash = token_hash.to_vec();
        // On the connections kept for token look-ups too: never behind public reads.
        self.readers.read(ReadKind::Token, move |c| {
            Ok(c.prepare_cached(
                "SELECT t.account_id, t.device_id, a.name FROM tokens t JOIN accounts a ON a.id = t.account_id \
                 WHERE t.token_hash = ?1 AND t.expires_ms > ?2",
            )?
            .query_row(params![hash, to_i64(now_ms)], |r| {
                Ok(Authed {
                    key: DeviceKey { account: r.get(0)?, device: to_u32(r.get(1)?) },
                    account: r.get(2)?,
                })
            })
            .optional()?)
        })
        .await
    }

    async fn purge_expired(&self, now_ms: u64) -> Result<(), StoreError> {
        self.write(move |c| {
            c.prepare_cached("DELETE FROM challenges WHERE expires_ms <= ?1")?.execute([to_i64(now_ms)])?;
            c.prepare_cached("DELETE FROM tokens WHERE expires_ms <= ?1")?.execute([to_i64(now_ms)])?;
            c.prepare_cached("DELETE FROM send_keys WHERE expires_ms <= ?1")?.execute([to_i64(now_ms)])?;
            c.prepare_cached("DELETE FROM link_slots WHERE expires_ms <= ?1")?.execute([to_i64(now_ms)])?;
            c.prepare_cached(
                "DELETE FROM blob_chunks WHERE blob_id IN (SELECT id FROM blobs WHERE expires_ms <= ?1)",
            )?
            .execute([to_i64(now_ms)])?;
            c.prepare_cached("DELETE FROM blobs WHERE expires_ms <= ?1")?.execute([to_i64(now_ms)])?;
            Ok(())
        })
        .await
    }

    async fn put_prekeys(&self, d: DeviceKey, keys: PrekeySet) -> Result<PrekeyCounts, StoreError> {
        self.write(move |c| {
            if !device_exists(c, d)? {
                return Err(StoreError::NotFound);
            }
            if let Some(spk) = &keys.signed_prekey {
                c.prepare_cached(
                    "UPDATE devices SET signed_prekey = ?3 WHERE account_id = ?1 AND device_id = ?2",
                )?
                .execute(params![d.account, d.device, spk])?;
            }
            if let Some(lr) = &keys.last_resort {
                c.prepare_cached(
                    "UPDATE devices SET last_resort = ?3 WHERE account_id = ?1 AND device_id = ?2",
                )?
                .execute(params![d.account, d.device, lr])?;
            }
            insert_keys(c, Table::OneTime, d, &keys.one_time, keys.kept(false).as_deref())?;
            insert_keys(c, Table::Kem, d, &keys.kem_one_time, keys.kept(true).as_deref())?;
            raise_state_counter(c, d, keys.state_counter)?;
            counts(c, d)
        })
        .await
    }

    async fn prekey_counts(&self, d: DeviceKey) -> Result<PrekeyCounts, StoreError> {
        self.read(move |c| counts(c, d)).await
    }

    async fn take_bundle(
        &self,
        d: DeviceKey,
        take_one_time: bool,
    ) -> Result<Option<BundleParts>, StoreError> {
        self.write(move |c| {
            let Some((identity, signed_prekey, last_resort)) = c
                .prepare_cached(
                    "SELECT identity, signed_prekey, last_resort FROM devices WHERE account_id = ?1 AND device_id = ?2 \
                     AND logged_out = 0",
                )?
                .query_row(params![d.account, d.device], |r| {
                    Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, Vec<u8>>(2)?))
                })
                .optional()?
            else {
                return Ok(None);
            };
            let (mut one_time, mut kem) = (None, None);
            if take_one_time {
                one_time = take_one(c, "one_time_prekeys", d)?;
                kem = take_one(c, "kem_prekeys", d)?;
            }
            let left = low_counts(c, d)?;
            Ok(Some(BundleParts {
                identity,
                signed_prekey,
                kem_prekey: kem.unwrap_or(last_resort),
                one_time,
                left,
            }))
        })
        .await
    }

    async fn put_key_packages(
        &self,
        d: DeviceKey,
        key_packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    ) -> Result<KeyPackageCounts, StoreError> {
        self.write(move |c| {
            if !device_exists(c, d)? {
                return Err(StoreError::NotFound);
            }
            if let Some(lr) = last_resort {
                c.prepare_cached("DELETE FROM key_packages WHERE account_id = ?1 AND device_id = ?2 AND last_resort = 1")?
                    .execute(params![d.account, d.device])?;
                c.prepare_cached(
                    "INSERT INTO key_packages (account_id, device_id, last_resort, data) VALUES (?1, ?2, 1, ?3)",
                )?
                .execute(params![d.account, d.device, lr])?;
            }
            let mut insert = c.prepare_cached(
                "INSERT INTO key_packages (account_id, device_id, last_resort, data) VALUES (?1, ?2, 0, ?3)",
            )?;
            for kp in key_packages {
                insert.execute(params![d.account, d.device, kp])?;
            }
            c.prepare_cached(
                "DELETE FROM key_packages WHERE account_id = ?1 AND device_id = ?2 AND last_resort = 0 AND id NOT IN \
                 (SELECT id FROM key_packages WHERE account_id = ?1 AND device_id = ?2 AND last_resort = 0 \
                 ORDER BY id DESC LIMIT ?3)",
            )?
            .execute(params![d.account, d.device, i64::try_from(MAX_STORED_KEY_PACKAGES).unwrap_or(i64::MAX)])?;
            key_package_counts(c, d)
        })
        .await
    }

    async fn key_package_counts(&self, d: DeviceKey) -> Result<KeyPackageCounts, StoreError> {
        self.read(move |c| key_package_counts(c, d)).await
    }

    async fn take_key_package(
        &self,
        d: DeviceKey,
        one_time: bool,
    ) -> Result<Option<(Vec<u8>, bool)>, StoreError> {
        self.write(move |c| {
            if !one_time {
                return last_resort_key_package(c, d);
            }
            let taken: Option<Vec<u8>> = c
                .prepare_cached(
                    "DELETE FROM key_packages WHERE id = (SELECT id FROM key_packages \
                     WHERE account_id = ?1 AND device_id = ?2 AND last_resort = 0 ORDER BY id LIMIT 1) RETURNING data",
                )?
                .query_row(params![d.account, d.device], |r| r.get(0))
                .optional()?;
            match taken {
                Some(kp) => Ok(Some((kp, false))),
                None => last_resort_key_package(c, d),
            }
        })
        .await
    }

    async fn known_kem_prekeys(&self, d: DeviceKey, ids: &[u32]) -> Result<Vec<Vec<u8>>, StoreError> {
        let ids = json_ids(ids);
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT key FROM kem_prekeys WHERE account_id = ?1 AND device_id = ?2 \
                 AND key_id IN (SELECT value FROM json_each(?3)) \
                 UNION ALL SELECT last_resort FROM devices WHERE account_id = ?1 AND device_id = ?2",
            )?;
            let rows = st.query_map(params![d.account, d.device, ids], |r| r.get::<_, Vec<u8>>(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn send(
        &self,
        sender: &Authed,
        recipient: &str,
        envelopes: Vec<NewEnvelope>,
        now_ms: u64,
        idempotency_key: Option<[u8; IDEMPOTENCY_KEY_BYTES]>,
        state_counter: Option<u64>,
    ) -> Result<Sent, StoreError> {
        let sender = sender.clone();
        let recipient = recipient.to_owned();
        let max_bytes = self.max_mailbox_bytes;
        self.write(move |c| {
            let key = idempotency_key.as_ref().map(|k| k.as_slice());
            if let Some(server_time_ms) = duplicate_send(c, sender.key, key, now_ms)? {
                return Ok(Sent::Duplicate { server_time_ms });
            }
            let (account, published): (AccountId, Option<String>) = c
                .prepare_cached("SELECT id, kt_devices FROM accounts WHERE name = ?1")?
                .query_row([&recipient], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
                .ok_or(StoreError::NotFound)?;
            let current: Vec<u32> = c
                .prepare_cached(
                    "SELECT device_id FROM devices WHERE account_id = ?1 AND logged_out = 0 ORDER BY device_id",
                )?
                .query_map([account], |r| r.get::<_, i64>(0))?
                .map(|r| r.map(to_u32))
                .collect::<Result<_, _>>()?;
            super::check_devices(
                &super::required_devices(current, account, &sender),
                published.as_deref(),
                &envelopes,
            )?;
            // The devices are the recipient's live ones (checked above); a mailbox without a
            // row is empty.
            let mut bump = c.prepare_cached(
                "INSERT INTO mailboxes (account_id, device_id, count, bytes) SELECT ?1, ?2, 1, ?4 WHERE ?4 <= ?5 \
                 ON CONFLICT (account_id, device_id) DO UPDATE SET count = count + 1, bytes = bytes + ?4 \
                 WHERE count < ?3 AND bytes + ?4 <= ?5",
            )?;
            let mut insert = c.prepare_cached(
                "INSERT INTO envelopes (account_id, device_id, sender, sender_device, server_time_ms, content) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let max = i64::try_from(MAX_MAILBOX_ENVELOPES).unwrap_or(i64::MAX);
            let mut stored = Vec::with_capacity(envelopes.len());
            for e in envelopes {
                let len = i64::try_from(e.content.len()).unwrap_or(i64::MAX);
                if bump.execute(params![account, e.device, max, len, max_bytes])? == 0 {
                    return Err(StoreError::MailboxFull);
                }
                insert.execute(params![
                    account,
                    e.device,
                    sender.account,
                    sender.key.device,
                    to_i64(now_ms),
                    e.content
                ])?;
                stored.push(StoredEnvelope {
                    to: DeviceKey { account, device: e.device },
                    envelope: tacit_api::Envelope {
                        id: to_u64(c.last_insert_rowid()),
                        sender: sender.account.clone(),
                        sender_device: sender.key.device,
                        server_time_ms: now_ms,
                        content: e.content.into(),
                        group: None,
                    },
                });
            }
            remember_send(c, sender.key, key, now_ms)?;
            raise_state_counter(c, sender.key, state_counter)?;
            Ok(Sent::Stored(stored))
        })
        .await
    }

    async fn fetch(
        &self,
        d: DeviceKey,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<tacit_api::Envelope>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT e.id, e.sender, e.sender_device, e.server_time_ms, coalesce(p.content, e.content), \
                 p.group_id, p.kind, p.epoch FROM envelopes e LEFT JOIN group_payloads p ON p.id = e.payload_id \
                 WHERE e.account_id = ?1 AND e.device_id = ?2 AND e.id > ?3 ORDER BY e.id LIMIT ?4",
            )?;
            let rows = st.query_map(
                params![d.account, d.device, to_i64(after), i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| {
                    Ok(tacit_api::Envelope {
                        id: to_u64(r.get(0)?),
                        sender: r.get(1)?,
                        sender_device: to_u32(r.get(2)?),
                        server_time_ms: to_u64(r.get(3)?),
                        content: r.get::<_, Vec<u8>>(4)?.into(),
                        group: super::group_delivery(r.get(5)?, r.get(6)?, r.get(7)?),
                    })
                },
            )?;
            // Rows are read one at a time: a page holds at most `max_bytes` plus one envelope.
            let mut out = Vec::new();
            let mut total = 0usize;
            for row in rows {
                let e = row?;
                total = total.saturating_add(e.content.as_slice().len());
                out.push(e);
                if total > max_bytes {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    async fn stored_ids(&self, d: DeviceKey, ids: &[u64]) -> Result<Vec<u64>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = json_ids(ids);
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id FROM envelopes WHERE account_id = ?1 AND device_id = ?2 \
                 AND id IN (SELECT value FROM json_each(?3))",
            )?;
            let rows = st.query_map(params![d.account, d.device, ids], |r| r.get::<_, i64>(0))?;
            rows.map(|r| r.map(to_u64).map_err(StoreError::from)).collect()
        })
        .await
    }

    async fn ack(&self, d: DeviceKey, ids: &[u64], state_counter: Option<u64>) -> Result<usize, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let ids = json_ids(ids);
        self.write(move |c| {
            // One statement for the whole list, however long.
            let mut del = c.prepare_cached(
                "DELETE FROM envelopes WHERE account_id = ?1 AND device_id = ?2 \
                 AND id IN (SELECT value FROM json_each(?3)) RETURNING length(content), payload_id",
            )?;
            let mut n = 0usize;
            let mut bytes = 0i64;
            let mut payloads: std::collections::BTreeMap<i64, i64> = std::collections::BTreeMap::new();
            let mut rows = del.query(params![d.account, d.device, ids])?;
            while let Some(row) = rows.next()? {
                n += 1;
                bytes = bytes.saturating_add(row.get::<_, i64>(0)?);
                if let Some(p) = row.get::<_, Option<i64>>(1)? {
                    *payloads.entry(p).or_default() += 1;
                }
            }
            drop(rows);
            groups::release(c, &payloads.into_iter().collect::<Vec<_>>())?;
            if n > 0 {
                c.prepare_cached(
                    "UPDATE mailboxes SET count = max(0, count - ?3), bytes = max(0, bytes - ?4) \
                     WHERE account_id = ?1 AND device_id = ?2",
                )?
                .execute(params![
                    d.account,
                    d.device,
                    i64::try_from(n).unwrap_or(i64::MAX),
                    bytes
                ])?;
                raise_state_counter(c, d, state_counter)?;
            }
            Ok(n)
        })
        .await
    }

    async fn group_commit(
        &self,
        sender: &Authed,
        commit: NewCommit,
        now_ms: u64,
        idempotency_key: Option<[u8; IDEMPOTENCY_KEY_BYTES]>,
    ) -> Result<GroupSent, StoreError> {
        let sender = sender.clone();
        self.write(move |c| {
            let state_counter = commit.state_counter;
            let sent =
                groups::commit(c, &sender, commit, now_ms, idempotency_key.as_ref().map(|k| k.as_slice()))?;
            raise_state_counter(c, sender.key, state_counter)?;
            Ok(sent)
        })
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn group_message(
        &self,
        sender: &Authed,
        group_id: Vec<u8>,
        epoch: u64,
        content: Vec<u8>,
        now_ms: u64,
        idempotency_key: Option<[u8; IDEMPOTENCY_KEY_BYTES]>,
        state_counter: Option<u64>,
    ) -> Result<GroupSent, StoreError> {
        let sender = sender.clone();
        self.write(move |c| {
            let key = idempotency_key.as_ref().map(|k| k.as_slice());
            let sent = groups::message(c, &sender, &group_id, epoch, &content, now_ms, key)?;
            raise_state_counter(c, sender.key, state_counter)?;
            Ok(sent)
        })
        .await
    }

    async fn group_status(
        &self,
        member: DeviceKey,
        group_id: Vec<u8>,
    ) -> Result<Option<(u64, Vec<GroupMemberName>)>, StoreError> {
        self.read(move |c| groups::status(c, member, &group_id)).await
    }

    async fn leave_group(&self, member: DeviceKey, group_id: Vec<u8>) -> Result<bool, StoreError> {
        self.write(move |c| groups::leave(c, member, &group_id)).await
    }

    async fn state_counter(&self, d: DeviceKey) -> Result<u64, StoreError> {
        self.read(move |c| {
            let v: Option<i64> = c
                .prepare_cached("SELECT value FROM state_counters WHERE account_id = ?1 AND device_id = ?2")?
                .query_row(params![d.account, d.device], |r| r.get(0))
                .optional()?;
            Ok(v.map_or(0, to_u64))
        })
        .await
    }

    async fn list_state(&self, account: AccountId) -> Result<Option<ListState>, StoreError> {
        self.read(move |c| {
            let Some((account_key, version, max_device_id)) = c
                .prepare_cached(
                    "SELECT account_key, device_list_version, max_device_id FROM accounts WHERE id = ?1",
                )?
                .query_row([account], |r| {
                    Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                })
                .optional()?
            else {
                return Ok(None);
            };
            let mut st = c.prepare_cached(
                "SELECT device_id, identity, created_ms, last_seen_ms, logged_out FROM devices \
                 WHERE account_id = ?1 ORDER BY device_id",
            )?;
            let devices = st
                .query_map([account], |r| {
                    Ok(DeviceRecord {
                        device: to_u32(r.get(0)?),
                        identity: r.get(1)?,
                        created_ms: to_u64(r.get(2)?),
                        last_seen_ms: r.get::<_, Option<i64>>(3)?.map(to_u64),
                        logged_out: r.get::<_, i64>(4)? != 0,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(ListState {
                account_key,
                version: to_u64(version),
                max_device_id: to_u32(max_device_id),
                devices,
            }))
        })
        .await
    }

    async fn publish_device_list(&self, u: ListUpdate) -> Result<(), StoreError> {
        self.write(move |c| {
            // Compare-and-set: the checks were made against `previous_version`.
            let changed = c
                .prepare_cached(
                    "UPDATE accounts SET account_key = ?2, device_list = ?3, device_list_version = ?4, \
                     max_device_id = max(max_device_id, ?5) WHERE id = ?1 AND device_list_version = ?6",
                )?
                .execute(params![
                    u.account,
                    u.account_key,
                    u.device_list,
                    to_i64(u.version),
                    u.max_device_id,
                    to_i64(u.previous_version),
                ])?;
            if changed == 0 {
                return Err(StoreError::Conflict);
            }
            kt::enqueue(c, u.account)?;
            if let Some(signature) = &u.rotation_signature {
                c.prepare_cached(
                    "INSERT INTO rotations (account_id, version, device_list, signature) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![u.account, to_i64(u.version), u.device_list, signature])?;
            }
            for &device in &u.removed {
                clear_device(c, DeviceKey { account: u.account, device }, true)?;
            }
            for n in &u.added {
                c.prepare_cached(
                    "INSERT INTO devices (account_id, device_id, identity, signed_prekey, last_resort, created_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![u.account, n.device, n.identity, n.signed_prekey, n.last_resort, to_i64(u.now_ms)])?;
                let d = DeviceKey { account: u.account, device: n.device };
                insert_keys(c, Table::OneTime, d, &n.one_time, None)?;
                insert_keys(c, Table::Kem, d, &n.kem_one_time, None)?;
            }
            Ok(())
        })
        .await
    }

    async fn rotations(
        &self,
        account: AccountId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<RotationRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT version, device_list, signature FROM rotations WHERE account_id = ?1 AND version > ?2 \
                 ORDER BY version LIMIT ?3",
            )?;
            let rows = st.query_map(params![account, to_i64(after), limit], |r| {
                Ok(RotationRecord { version: to_u64(r.get(0)?), device_list: r.get(1)?, signature: r.get(2)? })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn logout_device(&self, d: DeviceKey) -> Result<(), StoreError> {
        self.write(move |c| {
            if !device_exists(c, d)? {
                return Err(StoreError::NotFound);
            }
            clear_device(c, d, false)
        })
        .await
    }

    async fn put_link_offer(
        &self,
        slot: [u8; 16],
        offer: Vec<u8>,
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            c.prepare_cached("DELETE FROM link_slots WHERE slot = ?1 AND expires_ms <= ?2")?
                .execute(params![slot.as_slice(), to_i64(now_ms)])?;
            let n = c
                .prepare_cached(
                    "INSERT INTO link_slots (slot, offer, expires_ms) VALUES (?1, ?2, ?3) ON CONFLICT (slot) DO NOTHING",
                )?
                .execute(params![slot.as_slice(), offer, to_i64(expires_ms)])?;
            if n == 0 { Err(StoreError::Conflict) } else { Ok(()) }
        })
        .await
    }

    async fn link_slot(&self, slot: [u8; 16], now_ms: u64) -> Result<Option<LinkSlot>, StoreError> {
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT offer, answer, expires_ms FROM link_slots WHERE slot = ?1 AND expires_ms > ?2",
            )?
            .query_row(params![slot.as_slice(), to_i64(now_ms)], |r| {
                Ok(LinkSlot { offer: r.get(0)?, answer: r.get(1)?, expires_ms: to_u64(r.get(2)?) })
            })
            .optional()?)
        })
        .await
    }

    async fn put_link_answer(&self, slot: [u8; 16], answer: Vec<u8>, now_ms: u64) -> Result<(), StoreError> {
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE link_slots SET answer = ?2 WHERE slot = ?1 AND answer IS NULL AND expires_ms > ?3",
                )?
                .execute(params![slot.as_slice(), answer, to_i64(now_ms)])?;
            if n > 0 {
                return Ok(());
            }
            let exists = c
                .prepare_cached("SELECT 1 FROM link_slots WHERE slot = ?1 AND expires_ms > ?2")?
                .exists(params![slot.as_slice(), to_i64(now_ms)])?;
            Err(if exists { StoreError::Conflict } else { StoreError::NotFound })
        })
        .await
    }

    async fn delete_link_slot(&self, slot: [u8; 16]) -> Result<bool, StoreError> {
        self.write(move |c| {
            Ok(c.prepare_cached("DELETE FROM link_slots WHERE slot = ?1")?.execute([slot.as_slice()])? > 0)
        })
        .await
    }

    async fn create_blob(
        &self,
        account: AccountId,
        id: [u8; 16],
        size: u64,
        now_ms: u64,
        expires_ms: u64,
        max: usize,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            let live: i64 = c
                .prepare_cached("SELECT count(*) FROM blobs WHERE account_id = ?1 AND expires_ms > ?2")?
                .query_row(params![account, to_i64(now_ms)], |r| r.get(0))?;
            if to_u64(live) >= max as u64 {
                return Err(StoreError::TooManyBlobs);
            }
            c.prepare_cached(
                "INSERT INTO blobs (id, account_id, size, received, expires_ms) VALUES (?1, ?2, ?3, 0, ?4)",
            )?
            .execute(params![id.as_slice(), account, to_i64(size), to_i64(expires_ms)])?;
            Ok(())
        })
        .await
    }

    async fn blob(
        &self,
        account: AccountId,
        id: [u8; 16],
        now_ms: u64,
    ) -> Result<Option<BlobRecord>, StoreError> {
        self.read(move |c| blob_record(c, account, &id, now_ms)).await
    }

    async fn put_blob_chunk(
        &self,
        account: AccountId,
        id: [u8; 16],
        offset: u64,
        data: Vec<u8>,
        now_ms: u64,
    ) -> Result<BlobRecord, StoreError> {
        self.write(move |c| {
            let blob = blob_record(c, account, &id, now_ms)?.ok_or(StoreError::NotFound)?;
            let len = data.len() as u64;
            if blob.received != offset || offset.saturating_add(len) > blob.size {
                return Err(StoreError::BlobOffset(blob));
            }
            c.prepare_cached("INSERT INTO blob_chunks (blob_id, chunk_offset, data) VALUES (?1, ?2, ?3)")?
                .execute(params![id.as_slice(), to_i64(offset), data])?;
            c.prepare_cached("UPDATE blobs SET received = ?2 WHERE id = ?1")?
                .execute(params![id.as_slice(), to_i64(offset + len)])?;
            Ok(BlobRecord { received: offset + len, ..blob })
        })
        .await
    }

    async fn read_blob(
        &self,
        account: AccountId,
        id: [u8; 16],
        offset: u64,
        len: u64,
        now_ms: u64,
    ) -> Result<Vec<u8>, StoreError> {
        self.read(move |c| {
            let blob = blob_record(c, account, &id, now_ms)?.ok_or(StoreError::NotFound)?;
            if blob.received < blob.size {
                return Err(StoreError::BlobIncomplete);
            }
            let end = offset.saturating_add(len).min(blob.size);
            if offset >= end {
                return Ok(Vec::new());
            }
            // The chunk holding `offset` and every later one that starts before `end`.
            let mut st = c.prepare_cached(
                "SELECT chunk_offset, data FROM blob_chunks WHERE blob_id = ?1 AND chunk_offset < ?3 \
                 AND chunk_offset >= (SELECT coalesce(max(chunk_offset), 0) FROM blob_chunks \
                 WHERE blob_id = ?1 AND chunk_offset <= ?2) ORDER BY chunk_offset",
            )?;
            let chunks = st
                .query_map(params![id.as_slice(), to_i64(offset), to_i64(end)], |r| {
                    Ok((to_u64(r.get(0)?), r.get::<_, Vec<u8>>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(super::assemble(&chunks, offset, end - offset))
        })
        .await
    }

    async fn delete_blob(&self, account: AccountId, id: [u8; 16]) -> Result<bool, StoreError> {
        self.write(move |c| {
            let n = c
                .prepare_cached("DELETE FROM blobs WHERE id = ?1 AND account_id = ?2")?
                .execute(params![id.as_slice(), account])?;
            if n > 0 {
                c.prepare_cached("DELETE FROM blob_chunks WHERE blob_id = ?1")?.execute([id.as_slice()])?;
            }
            Ok(n > 0)
        })
        .await
    }

    async fn healthy(&self) -> bool {
        self.health.healthy() && !self.tx.is_closed() && !self.progress.stalled()
    }

    async fn free_bytes(&self) -> Result<Option<u64>, StoreError> {
        free_space(&self.dir).map(Some)
    }

    async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        // After the writer: its last commits are checkpointed and the WAL emptied.
        let checkpointer = self.checkpointer.lock().ok().and_then(|mut c| c.take());
        if let Some(c) = checkpointer {
            let _ = tokio::task::spawn_blocking(move || c.stop()).await;
        }
        self.readers.close();
    }
}

/// Bytes available to this process on the file system holding `dir`.
#[cfg(unix)]
fn free_space(dir: &Path) -> Result<u64, StoreError> {
    let st = rustix::fs::statvfs(dir).map_err(|e| StoreError::Backend(format!("statvfs: {e}")))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Elsewhere the free space is not known: as if plenty were left.
#[cfg(not(unix))]
fn free_space(_dir: &Path) -> Result<u64, StoreError> {
    Ok(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn account(name: &str) -> NewAccount {
        NewAccount {
            name: name.into(),
            account_key: vec![1; 32],
            device_list: vec![2; 100],
            device_list_version: 1,
            device_identity: vec![3; 100],
            signed_prekey: vec![4; 100],
            last_resort: vec![5; 100],
            one_time: Vec::new(),
            kem_one_time: Vec::new(),
            now_ms: 1,
        }
    }

    fn wal_len(dir: &Path) -> u64 {
        std::fs::metadata(dir.join("tacit.db-wal")).map(|m| m.len()).unwrap_or(0)
    }

    /// Every envelope in the mailbox, paging through it.
    async fn all(store: &SqliteStore, d: DeviceKey) -> Vec<tacit_api::Envelope> {
        let mut out: Vec<tacit_api::Envelope> = Vec::new();
        loop {
            let after = out.last().map_or(0, |e| e.id);
            let page = store.fetch(d, after, 256, 1 << 20).await.unwrap();
            if page.is_empty() {
                return out;
            }
            out.extend(page);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checkpoints_keep_the_wal_bounded_and_lose_nothing() {
        const SENDS: usize = 500;
        const SIZE: usize = 60 * 1024;
        let dir = tempfile::tempdir().unwrap();
        // 30 MiB into one mailbox: above the default byte bound.
        let config = StoreConfig::with_max_mailbox_bytes(tacit_api::limits::MAX_MAILBOX_BYTES as u64);
        let store = Arc::new(SqliteStore::open_with(dir.path(), &config).unwrap());
        // The writer never checkpoints (that is the checkpointer's job).
        let auto: i64 = store
            .write(|c| Ok(c.pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(auto, 0);
        let id = store.create_account(account("bob")).await.unwrap();
        let bob = DeviceKey { account: id, device: 1 };
        let alice = store.create_account(account("alice")).await.unwrap();
        let sender = Authed { key: DeviceKey { account: alice, device: 1 }, account: "alice".into() };
        // About 30 MiB of envelopes in rounds with pauses, 8 senders at a time (sharing
        // group commits). With no checkpoints the WAL would hold all of them.
        const ROUNDS: usize = 5;
        let mut peak = 0;
        for round in 0..ROUNDS {
            let mut tasks = Vec::new();
            for t in 0..8usize {
                let store = store.clone();
                let sender = sender.clone();
                tasks.push(tokio::spawn(async move {
                    for i in (round * SENDS / ROUNDS + t..(round + 1) * SENDS / ROUNDS).step_by(8) {
                        let mut content = vec![0u8; SIZE];
                        content[..8].copy_from_slice(&(i as u64).to_be_bytes());
                        store
                            .send(&sender, "bob", vec![NewEnvelope { device: 1, content }], 1, None, None)
                            .await
                            .unwrap();
                    }
                }));
            }
            while tasks.iter().any(|t| !t.is_finished()) {
                peak = peak.max(wal_len(dir.path()));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for t in tasks {
                t.await.unwrap();
            }
            peak = peak.max(wal_len(dir.path()));
            tokio::time::sleep(checkpoint::CHECKPOINT_EVERY + Duration::from_millis(300)).await;
        }
        let total = (SENDS * SIZE) as u64;
        assert!(peak < total / 2, "WAL reached {peak} bytes for {total} bytes written");
        // Once the writer is idle, the checkpointer empties the WAL.
        let deadline = std::time::Instant::now() + 4 * checkpoint::CHECKPOINT_EVERY;
        while wal_len(dir.path()) > checkpoint::TRUNCATE_ABOVE_BYTES && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let after = wal_len(dir.path());
        assert!(after <= checkpoint::TRUNCATE_ABOVE_BYTES, "WAL still {after} bytes (peak {peak})");
        // Nothing lost, before and after a restart.
        let check = |got: Vec<tacit_api::Envelope>| {
            let mut seen: Vec<u64> = got
                .iter()
                .map(|e| {
                    assert_eq!(e.content.as_slice().len(), SIZE);
                    u64::from_be_bytes(e.content.as_slice()[..8].try_into().unwrap())
                })
                .collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..SENDS as u64).collect::<Vec<_>>());
        };
        check(all(&store, bob).await);
        store.close().await;
        drop(store);
        let store = SqliteStore::open_with(dir.path(), &config).unwrap();
        check(all(&store, bob).await);
        store.close().await;
    }

    /// `DELETE FROM envelopes` statements the writer connection finished (traced).
    static ENVELOPE_DELETES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    fn count_envelope_deletes(event: rusqlite::trace::TraceEvent<'_>) {
        if let rusqlite::trace::TraceEvent::Profile(stmt, _) = event
            && stmt.sql().trim_start().starts_with("DELETE FROM envelopes")
        {
            ENVELOPE_DELETES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// An acknowledgement of 1,024 ids, most of them made up, is one `DELETE` on the writer
    /// (it was one per id), and deletes exactly the real ones.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_acknowledgement_is_one_statement_whatever_its_ids() {
        use rusqlite::trace::TraceEventCodes;
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let id = store.create_account(account("bob")).await.unwrap();
        let bob = DeviceKey { account: id, device: 1 };
        let alice = store.create_account(account("alice")).await.unwrap();
        let sender = Authed { key: DeviceKey { account: alice, device: 1 }, account: "alice".into() };
        for i in 0..3u8 {
            let e = vec![NewEnvelope { device: 1, content: vec![i; 10] }];
            store.send(&sender, "bob", e, 1, None, None).await.unwrap();
        }
        let real: Vec<u64> = all(&store, bob).await.iter().map(|e| e.id).collect();
        let mut ids: Vec<u64> = (1_000_000..1_000_000 + 1021).collect();
        ids.extend(&real);
        store
            .write(|c| {
                c.trace_v2(TraceEventCodes::SQLITE_TRACE_PROFILE, Some(count_envelope_deletes));
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(store.ack(bob, &ids, None).await.unwrap(), 3);
        store
            .write(|c| {
                c.trace_v2(TraceEventCodes::empty(), None);
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(ENVELOPE_DELETES.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(all(&store, bob).await.is_empty());
        // The mailbox's counters went back to zero with them.
        let (count, bytes): (i64, i64) = store
            .read(move |c| {
                Ok(c.query_row(
                    "SELECT count, bytes FROM mailboxes WHERE account_id = ?1 AND device_id = 1",
                    [bob.account],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?)
            })
            .await
            .unwrap();
        assert_eq!((count, bytes), (0, 0));
        store.close().await;
    }

    /// A write waiting behind a stalled writer (here a job that sleeps, as a hung fsync
    /// would) makes the store unhealthy after [`super::super::STALL_AFTER`]; healthy again
    /// once it finishes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_writer_is_unhealthy() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        assert!(store.healthy().await);
        let stall = super::super::STALL_AFTER + Duration::from_millis(1500);
        let stalled = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(move |_| {
                        std::thread::sleep(stall);
                        Ok(())
                    })
                    .await
            })
        };
        tokio::time::sleep(super::super::STALL_AFTER / 2).await;
        assert!(store.healthy().await, "a write in progress is not a stall yet");
        tokio::time::sleep(super::super::STALL_AFTER / 2 + Duration::from_millis(500)).await;
        assert!(!store.healthy().await, "queued work and no commit for longer than STALL_AFTER");
        stalled.await.unwrap().unwrap();
        assert!(store.healthy().await);
        store.close().await;
    }

    /// Migration 3 counts the ciphertext already waiting in each mailbox (and migration 12
    /// moves the counts to `mailboxes`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migration_3_counts_the_bytes_already_waiting() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join("tacit.db")).unwrap();
            for sql in &schema::SQLITE[..2] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 2).unwrap();
            conn.execute_batch(
                "INSERT INTO devices (account_id, device_id, identity, signed_prekey, last_resort, mailbox_count) \
                 VALUES (1, 1, x'00', x'00', x'00', 2), (1, 2, x'00', x'00', x'00', 0); \
                 INSERT INTO envelopes (account_id, device_id, sender, sender_device, server_time_ms, content) \
                 VALUES (1, 1, 'a', 1, 1, zeroblob(1000)), (1, 1, 'a', 1, 1, zeroblob(234));",
            )
            .unwrap();
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        async fn bytes(store: &SqliteStore) -> Vec<(i64, i64)> {
            store
                .read(|c| {
                    let mut st =
                        c.prepare(
                            "SELECT d.device_id, coalesce(b.bytes, 0) FROM devices d LEFT JOIN mailboxes b \
                             ON b.account_id = d.account_id AND b.device_id = d.device_id ORDER BY d.device_id",
                        )?;
                    let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
                    Ok(rows.collect::<Result<Vec<_>, _>>()?)
                })
                .await
                .unwrap()
        }
        assert_eq!(bytes(&store).await, vec![(1, 1234), (2, 0)]);
        let d = DeviceKey { account: 1, device: 1 };
        let ids: Vec<u64> = all(&store, d).await.iter().map(|e| e.id).collect();
        assert_eq!(store.ack(d, &ids, None).await.unwrap(), 2);
        assert_eq!(bytes(&store).await, vec![(1, 0), (2, 0)]);
        store.close().await;
    }

    /// Migration 6 gives existing devices their account's creation time and existing
    /// accounts their largest device id.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migration_6_backfills_devices_and_the_largest_id() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join("tacit.db")).unwrap();
            for sql in &schema::SQLITE[..5] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 5).unwrap();
            conn.execute_batch(
                "INSERT INTO accounts (id, name, account_key, device_list, device_list_version, created_ms) \
                 VALUES (1, 'a', x'00', x'00', 2, 1234), (2, 'b', x'00', x'00', 1, 99); \
                 INSERT INTO devices (account_id, device_id, identity, signed_prekey, last_resort) \
                 VALUES (1, 1, x'01', x'00', x'00'), (1, 3, x'03', x'00', x'00'), (2, 1, x'01', x'00', x'00');",
            )
            .unwrap();
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        let a = store.list_state(1).await.unwrap().unwrap();
        assert_eq!((a.version, a.max_device_id), (2, 3));
        let devices: Vec<(u32, u64, Option<u64>, bool)> =
            a.devices.iter().map(|d| (d.device, d.created_ms, d.last_seen_ms, d.logged_out)).collect();
        assert_eq!(devices, vec![(1, 1234, None, false), (3, 1234, None, false)]);
        let b = store.list_state(2).await.unwrap().unwrap();
        assert_eq!((b.max_device_id, b.devices[0].created_ms), (1, 99));
        assert_eq!(store.list_state(3).await.unwrap(), None);
        store.close().await;
    }
}
