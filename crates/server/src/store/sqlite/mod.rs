//! Embedded SQLite storage (the default): one file in the data directory, WAL mode,
//! `synchronous=FULL`, one writer thread with group commit ([`writer`]), WAL checkpoints on a
//! thread of their own ([`checkpoint`]) and a small pool of read-only connections for
//! fetches and token look-ups. Every statement is prepared once per connection
//! (`prepare_cached`).

mod checkpoint;
#[cfg(test)]
mod durability_tests;
mod readers;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tacit_api::limits::{MAX_MAILBOX_ENVELOPES, MAX_STORED_PREKEYS};
use tokio::sync::{mpsc, oneshot};

use super::schema;
use super::{
    AccountId, AccountRecord, Authed, BundleParts, DeviceKey, KeyRecord, NewAccount, NewEnvelope,
    PrekeyCounts, PrekeySet, Store, StoreConfig, StoreError, StoredEnvelope, to_i64, to_u32, to_u64,
};
use checkpoint::Checkpointer;
use readers::ReaderPool;
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
}

impl SqliteStore {
    /// Opens (creating if needed) `DIR/tacit.db` with the default bounds, applies pending
    /// migrations and starts the writer thread.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, &StoreConfig::default())
    }

    /// [`SqliteStore::open`] with the bounds of `config`.
    pub fn open_with(dir: &Path, config: &StoreConfig) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend(format!("data dir: {e}")))?;
        let path = dir.join("tacit.db");
        let mut conn = Connection::open(&path)?;
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
        let readers = Arc::new(ReaderPool::open(&path, readers::READERS, readers::READER_WAIT)?);
        Ok(Self {
            tx,
            health,
            checkpointer: Mutex::new(Some(checkpointer)),
            max_mailbox_bytes: config.mailbox_bytes(),
            readers,
            writer: Mutex::new(Some(handle)),
        })
    }

    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (job, rx) = Typed::job(f);
        self.tx.send(Msg::Job(job)).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.readers.read(f).await
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

fn insert_keys(conn: &Connection, table: Table, d: DeviceKey, keys: &[KeyRecord]) -> Result<(), StoreError> {
    let mut st = conn.prepare_cached(match table {
        Table::OneTime => {
            "INSERT OR IGNORE INTO one_time_prekeys (account_id, device_id, key_id, key) VALUES (?1, ?2, ?3, ?4)"
        }
        Table::Kem => {
            "INSERT OR IGNORE INTO kem_prekeys (account_id, device_id, key_id, key) VALUES (?1, ?2, ?3, ?4)"
        }
    })?;
    for k in keys {
        st.execute(params![d.account, d.device, k.key_id, k.bytes])?;
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

fn device_exists(conn: &Connection, d: DeviceKey) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM devices WHERE account_id = ?1 AND device_id = ?2")?
        .exists(params![d.account, d.device])?)
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
                "INSERT INTO devices (account_id, device_id, identity, signed_prekey, last_resort) \
                 VALUES (?1, 1, ?2, ?3, ?4)",
            )?
            .execute(params![id, a.device_identity, a.signed_prekey, a.last_resort])?;
            let d = DeviceKey { account: id, device: 1 };
            insert_keys(c, Table::OneTime, d, &a.one_time)?;
            insert_keys(c, Table::Kem, d, &a.kem_one_time)?;
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
            Ok(c.prepare_cached("SELECT identity FROM devices WHERE account_id = ?1 AND device_id = ?2")?
                .query_row(params![d.account, d.device], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    async fn delete_account(&self, account: AccountId) -> Result<(), StoreError> {
        self.write(move |c| {
            for sql in [
                "DELETE FROM envelopes WHERE account_id = ?1",
                "DELETE FROM one_time_prekeys WHERE account_id = ?1",
                "DELETE FROM kem_prekeys WHERE account_id = ?1",
                "DELETE FROM challenges WHERE account_id = ?1",
                "DELETE FROM tokens WHERE account_id = ?1",
                "DELETE FROM devices WHERE account_id = ?1",
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

    async fn put_token(&self, d: DeviceKey, token_hash: &[u8], expires_ms: u64) -> Result<(), StoreError> {
        let hash = token_hash.to_vec();
        self.write(move |c| {
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
        self.read(move |c| {
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
            insert_keys(c, Table::OneTime, d, &keys.one_time)?;
            insert_keys(c, Table::Kem, d, &keys.kem_one_time)?;
            counts(c, d)
        })
        .await
    }

    async fn prekey_counts(&self, d: DeviceKey) -> Result<PrekeyCounts, StoreError> {
        self.read(move |c| counts(c, d)).await
    }

    async fn take_bundle(&self, d: DeviceKey) -> Result<Option<BundleParts>, StoreError> {
        self.write(move |c| {
            let Some((identity, signed_prekey, last_resort)) = c
                .prepare_cached(
                    "SELECT identity, signed_prekey, last_resort FROM devices WHERE account_id = ?1 AND device_id = ?2",
                )?
                .query_row(params![d.account, d.device], |r| {
                    Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, Vec<u8>>(2)?))
                })
                .optional()?
            else {
                return Ok(None);
            };
            let one_time: Option<Vec<u8>> = c
                .prepare_cached(
                    "DELETE FROM one_time_prekeys WHERE id = (SELECT id FROM one_time_prekeys \
                     WHERE account_id = ?1 AND device_id = ?2 ORDER BY id LIMIT 1) RETURNING key",
                )?
                .query_row(params![d.account, d.device], |r| r.get(0))
                .optional()?;
            let kem: Option<Vec<u8>> = c
                .prepare_cached(
                    "DELETE FROM kem_prekeys WHERE id = (SELECT id FROM kem_prekeys \
                     WHERE account_id = ?1 AND device_id = ?2 ORDER BY id LIMIT 1) RETURNING key",
                )?
                .query_row(params![d.account, d.device], |r| r.get(0))
                .optional()?;
            Ok(Some(BundleParts { identity, signed_prekey, kem_prekey: kem.unwrap_or(last_resort), one_time }))
        })
        .await
    }

    async fn send(
        &self,
        sender: &Authed,
        recipient: &str,
        envelopes: Vec<NewEnvelope>,
        now_ms: u64,
    ) -> Result<Vec<StoredEnvelope>, StoreError> {
        let sender = sender.clone();
        let recipient = recipient.to_owned();
        let max_bytes = self.max_mailbox_bytes;
        self.write(move |c| {
            let account: AccountId = c
                .prepare_cached("SELECT id FROM accounts WHERE name = ?1")?
                .query_row([&recipient], |r| r.get(0))
                .optional()?
                .ok_or(StoreError::NotFound)?;
            let current: Vec<u32> = c
                .prepare_cached("SELECT device_id FROM devices WHERE account_id = ?1 ORDER BY device_id")?
                .query_map([account], |r| r.get::<_, i64>(0))?
                .map(|r| r.map(to_u32))
                .collect::<Result<_, _>>()?;
            super::check_devices(&super::required_devices(current, account, &sender), &envelopes)?;
            let mut bump = c.prepare_cached(
                "UPDATE devices SET mailbox_count = mailbox_count + 1, mailbox_bytes = mailbox_bytes + ?4 \
                 WHERE account_id = ?1 AND device_id = ?2 AND mailbox_count < ?3 AND mailbox_bytes + ?4 <= ?5",
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
                    },
                });
            }
            Ok(stored)
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
                "SELECT id, sender, sender_device, server_time_ms, content FROM envelopes \
                 WHERE account_id = ?1 AND device_id = ?2 AND id > ?3 ORDER BY id LIMIT ?4",
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

    async fn ack(&self, d: DeviceKey, ids: &[u64]) -> Result<usize, StoreError> {
        let ids = ids.to_vec();
        self.write(move |c| {
            let mut del = c.prepare_cached(
                "DELETE FROM envelopes WHERE id = ?1 AND account_id = ?2 AND device_id = ?3 \
                 RETURNING length(content)",
            )?;
            let mut n = 0usize;
            let mut bytes = 0i64;
            for id in ids {
                if let Some(len) = del
                    .query_row(params![to_i64(id), d.account, d.device], |r| r.get::<_, i64>(0))
                    .optional()?
                {
                    n += 1;
                    bytes = bytes.saturating_add(len);
                }
            }
            if n > 0 {
                c.prepare_cached(
                    "UPDATE devices SET mailbox_count = max(0, mailbox_count - ?3), \
                     mailbox_bytes = max(0, mailbox_bytes - ?4) WHERE account_id = ?1 AND device_id = ?2",
                )?
                .execute(params![
                    d.account,
                    d.device,
                    i64::try_from(n).unwrap_or(i64::MAX),
                    bytes
                ])?;
            }
            Ok(n)
        })
        .await
    }

    async fn healthy(&self) -> bool {
        self.health.healthy() && !self.tx.is_closed()
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
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
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
                            .send(&sender, "bob", vec![NewEnvelope { device: 1, content }], 1)
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
        let store = SqliteStore::open(dir.path()).unwrap();
        check(all(&store, bob).await);
        store.close().await;
    }

    /// Migration 3 counts the ciphertext already waiting in each mailbox.
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
                        c.prepare("SELECT device_id, mailbox_bytes FROM devices ORDER BY device_id")?;
                    let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
                    Ok(rows.collect::<Result<Vec<_>, _>>()?)
                })
                .await
                .unwrap()
        }
        assert_eq!(bytes(&store).await, vec![(1, 1234), (2, 0)]);
        let d = DeviceKey { account: 1, device: 1 };
        let ids: Vec<u64> = all(&store, d).await.iter().map(|e| e.id).collect();
        assert_eq!(store.ack(d, &ids).await.unwrap(), 2);
        assert_eq!(bytes(&store).await, vec![(1, 0), (2, 0)]);
        store.close().await;
    }
}
