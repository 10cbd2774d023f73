//! PostgreSQL storage, for fleets of stateless server nodes. Each operation is one
//! transaction on a pooled connection; PostgreSQL's commit is the durability point. One-time
//! keys are taken with `FOR UPDATE SKIP LOCKED`, so concurrent bundle fetches on any number
//! of nodes never hand out the same key; mailbox bounds are enforced by a conditional
//! update of the device row (which also serialises concurrent sends to one device).
//!
//! The URL may carry `options=-c search_path=...` to place the tables in a schema (the tests
//! use one schema per test). The store appends `-c synchronous_commit=on` to those options, so
//! a server, database or role default of `off` cannot turn "200 means durable" into "200
//! means in memory", and checks the setting once at start.
//!
//! TLS: `sslmode=require`, `verify-ca` and `verify-full` (with `sslrootcert`) in the URL,
//! with rustls (see `pg_tls.rs`).
//!
//! Every pool operation is bounded: an operation waits at most [`POOL_WAIT`] for a connection
//! ([`StoreError::Unavailable`], answered `503 unavailable`, instead of queueing without end
//! while the database is slow or gone); opening and recycling a connection are bounded too.
//!
//! Token look-ups (every authenticated request starts with one) never wait behind other
//! operations: one takes a free connection of the main pool if there is one right away, and
//! otherwise waits for one of a small pool of its own ([`TOKEN_POOL_SIZE`]), which nothing
//! else uses. A flood of public reads (device lists) can fill the main pool, not that one.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Pool, PoolConfig, RecyclingMethod, Runtime, Timeouts,
};
use tacit_api::limits::{
    IDEMPOTENCY_KEY_BYTES, IDEMPOTENCY_TTL_SECS, LOW_PREKEY_WATER, MAX_MAILBOX_ENVELOPES,
    MAX_STORED_KEY_PACKAGES, MAX_STORED_PREKEYS,
};
use tokio_postgres::NoTls;

mod groups;
mod kt;

use super::progress::Progress;
use super::schema;
use super::{
    AccountId, AccountRecord, Authed, BlobRecord, BundleParts, DeviceKey, DeviceRecord, GroupMemberName,
    GroupSent, KeyPackageCounts, KeyRecord, LinkSlot, ListState, ListUpdate, NewAccount, NewCommit,
    NewEnvelope, PrekeyCounts, PrekeySet, RotationRecord, Sent, Store, StoreConfig, StoreError,
    StoredEnvelope, to_i64, to_u32, to_u64,
};

/// Connections kept by the pool.
const POOL_SIZE: usize = 16;
/// Connections kept for token look-ups alone, beyond [`POOL_SIZE`].
pub(crate) const TOKEN_POOL_SIZE: usize = 2;
/// How long an operation waits for a free pooled connection.
pub(crate) const POOL_WAIT: Duration = Duration::from_secs(5);
/// How long opening a new connection may take.
const POOL_CREATE: Duration = Duration::from_secs(5);
/// How long checking a returned connection may take.
const POOL_RECYCLE: Duration = Duration::from_secs(5);
/// The session setting every pooled connection gets.
const DURABLE: &str = "-c synchronous_commit=on";
/// How long [`Store::healthy`] waits for a connection and `SELECT 1`.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a health answer is reused: `/healthz` is unauthenticated, so however often it
/// is asked, the database sees at most one `SELECT 1` per second from it.
const HEALTH_REUSE: Duration = Duration::from_secs(1);

/// The PostgreSQL store.
pub struct PgStore {
    pool: Pool,
    /// Token look-ups only, when `pool` has no connection free at once.
    token_pool: Pool,
    /// The last health answer and when it was taken (the lock also makes checks single-flight).
    health: tokio::sync::Mutex<Option<(tokio::time::Instant, bool)>>,
    /// [`StoreConfig::mailbox_bytes`].
    max_mailbox_bytes: i64,
    /// [`StoreConfig::database_quota_bytes`].
    quota: Option<u64>,
    /// Writes (sends, acknowledgements, bundle fetches, uploads) waiting for the database,
    /// and when one last finished.
    progress: Progress,
}

impl PgStore {
    /// Connects to `url` (`postgres://...`) with the default bounds, checks that commits are
    /// synchronous and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, &StoreConfig::default()).await
    }

    /// [`PgStore::connect`] with the bounds of `config`.
    pub async fn connect_with(url: &str, config: &StoreConfig) -> Result<Self, StoreError> {
        Self::connect_pool(url, config, POOL_SIZE, POOL_WAIT).await
    }

    /// [`PgStore::connect_with`] with `size` pooled connections and a wait of at most `wait`
    /// for one.
    pub(crate) async fn connect_pool(
        url: &str,
        config: &StoreConfig,
        size: usize,
        wait: Duration,
    ) -> Result<Self, StoreError> {
        let (url, tls_mode) = super::pg_tls::split(url)?;
        let tls = super::pg_tls::connector(&tls_mode)?;
        let mut cfg = deadpool_postgres::Config::new();
        cfg.url = Some(url);
        let mut pg = cfg.get_pg_config().map_err(|e| StoreError::Backend(format!("postgres config: {e}")))?;
        // Ours last: PostgreSQL applies startup options in order, and they take precedence
        // over server, database and role defaults.
        let options = match pg.get_options().map(str::trim) {
            Some(o) if !o.is_empty() => format!("{o} {DURABLE}"),
            _ => DURABLE.to_owned(),
        };
        pg.options(options);
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(POOL_CREATE);
        }
        if tls.is_some() {
            // TLS or no connection: tokio-postgres never falls back to plain text on Require.
            pg.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        let build = |pg: tokio_postgres::Config, size: usize| {
            let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
            let manager = match tls.clone() {
                Some(tls) => Manager::from_config(pg, tls, manager_config),
                None => Manager::from_config(pg, NoTls, manager_config),
            };
            let mut pool_config = PoolConfig::new(size);
            pool_config.timeouts =
                Timeouts { wait: Some(wait), create: Some(POOL_CREATE), recycle: Some(POOL_RECYCLE) };
            Pool::builder(manager)
                .config(pool_config)
                .runtime(Runtime::Tokio1)
                .build()
                .map_err(|e| StoreError::Backend(format!("postgres pool: {e}")))
        };
        let token_pool = build(pg.clone(), TOKEN_POOL_SIZE)?;
        let pool = build(pg, size)?;
        let store = Self {
            pool,
            token_pool,
            health: tokio::sync::Mutex::new(None),
            max_mailbox_bytes: config.mailbox_bytes(),
            quota: config.database_quota_bytes,
            progress: Progress::default(),
        };
        store.check_durable().await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Refuses to start unless commits wait for the WAL flush (a pooler that drops startup
    /// options would otherwise weaken durability silently).
    async fn check_durable(&self) -> Result<(), StoreError> {
        // The first connection: a failure says why in full (a refused TLS certificate is
        // only in the error's sources).
        let c = self.pool.get().await.map_err(|e| {
            let mut detail = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                detail.push_str(": ");
                detail.push_str(&c.to_string());
                cause = c.source();
            }
            StoreError::Unavailable(format!("postgres: cannot connect: {detail}"))
        })?;
        let setting: String = c.query_one("SHOW synchronous_commit", &[]).await?.try_get(0)?;
        if setting == "on" {
            Ok(())
        } else {
            Err(StoreError::Backend(format!(
                "postgres: synchronous_commit is {setting:?} on the store's connections, not \"on\" \
                 (a connection pooler may be dropping startup options)"
            )))
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // One migrating node at a time (per schema).
        tx.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema()))", &[]).await?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS tacit_schema (version BIGINT NOT NULL)").await?;
        let applied: i64 =
            tx.query_one("SELECT coalesce(max(version), 0) FROM tacit_schema", &[]).await?.try_get(0)?;
        for (n, sql) in schema::POSTGRES.iter().enumerate().skip(usize::try_from(applied).unwrap_or(0)) {
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO tacit_schema (version) VALUES ($1)",
                &[&i64::try_from(n + 1).unwrap_or(0)],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Adds one-time keys (a key whose id is stored already replaces the stored one: the
/// device's latest key under an id is the one whose private half it holds), then, when
/// `keep` is given, deletes every other one-time key of the device not named in it.
async fn insert_keys(
    c: &impl GenericClient,
    table: &str,
    d: DeviceKey,
    keys: &[KeyRecord],
    keep: Option<&[u32]>,
) -> Result<(), StoreError> {
    let insert = c
        .prepare_cached(&format!(
            "INSERT INTO {table} (account_id, device_id, key_id, key) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (account_id, device_id, key_id) DO UPDATE SET key = EXCLUDED.key"
        ))
        .await?;
    for k in keys {
        c.execute(&insert, &[&d.account, &i64::from(d.device), &i64::from(k.key_id), &k.bytes]).await?;
    }
    if let Some(keep) = keep {
        let keep: Vec<i64> = keep.iter().map(|&k| i64::from(k)).collect();
        let delete = c
            .prepare_cached(&format!(
                "DELETE FROM {table} WHERE account_id = $1 AND device_id = $2 AND NOT (key_id = ANY($3))"
            ))
            .await?;
        c.execute(&delete, &[&d.account, &i64::from(d.device), &keep]).await?;
    }
    let trim = c
        .prepare_cached(&format!(
            "DELETE FROM {table} WHERE account_id = $1 AND device_id = $2 AND id NOT IN \
             (SELECT id FROM {table} WHERE account_id = $1 AND device_id = $2 ORDER BY id DESC LIMIT $3)"
        ))
        .await?;
    c.execute(&trim, &[&d.account, &i64::from(d.device), &i64::try_from(MAX_STORED_PREKEYS).unwrap_or(0)])
        .await?;
    Ok(())
}

/// The distinct values of a sorted list with how often each occurs.
fn runs(sorted: &[i64]) -> (Vec<i64>, Vec<i64>) {
    let mut values: Vec<i64> = Vec::new();
    let mut counts: Vec<i64> = Vec::new();
    for &v in sorted {
        match (values.last(), counts.last_mut()) {
            (Some(&last), Some(n)) if last == v => *n += 1,
            _ => {
                values.push(v);
                counts.push(1);
            }
        }
    }
    (values, counts)
}

/// Claims a send's idempotency key for `d` at `now_ms` (stored with the send's own
/// transaction), or answers the server time of the earlier send that holds it. First in the
/// transaction: a concurrent retry with the same key waits on this row until the first
/// commits (then it is a duplicate) or rolls back.
async fn claim_send_key(
    c: &impl GenericClient,
    d: DeviceKey,
    key: Option<&[u8]>,
    now_ms: u64,
) -> Result<Option<u64>, StoreError> {
    let Some(key) = key else { return Ok(None) };
    let expires = to_i64(now_ms.saturating_add(IDEMPOTENCY_TTL_SECS * 1000));
    let st = c
        .prepare_cached(
            "INSERT INTO send_keys (account_id, device_id, key, server_time_ms, expires_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id, device_id, key) DO UPDATE \
             SET server_time_ms = EXCLUDED.server_time_ms, expires_ms = EXCLUDED.expires_ms \
             WHERE send_keys.expires_ms <= $4 RETURNING 1",
        )
        .await?;
    let dev = i64::from(d.device);
    if c.query_opt(&st, &[&d.account, &dev, &key, &to_i64(now_ms), &expires]).await?.is_some() {
        return Ok(None);
    }
    let st = c
        .prepare_cached(
            "SELECT server_time_ms FROM send_keys WHERE account_id = $1 AND device_id = $2 AND key = $3",
        )
        .await?;
    let first: i64 = c.query_one(&st, &[&d.account, &dev, &key]).await?.try_get(0)?;
    Ok(Some(to_u64(first)))
}

/// Raises the device's state counter to `value` (the largest value reported is kept). Its
/// row is written only by the device's own requests, each as its last statement, so the
/// lock it takes adds no lock-order cycle.
async fn raise_state_counter(
    c: &impl GenericClient,
    d: DeviceKey,
    value: Option<u64>,
) -> Result<(), StoreError> {
    let Some(v) = value else { return Ok(()) };
    let st = c
        .prepare_cached(
            "INSERT INTO state_counters (account_id, device_id, value) VALUES ($1, $2, $3) \
             ON CONFLICT (account_id, device_id) DO UPDATE SET value = GREATEST(state_counters.value, EXCLUDED.value)",
        )
        .await?;
    c.execute(&st, &[&d.account, &i64::from(d.device), &to_i64(v)]).await?;
    Ok(())
}

async fn counts(c: &impl GenericClient, d: DeviceKey) -> Result<PrekeyCounts, StoreError> {
    let st = c
        .prepare_cached(
            "SELECT (SELECT count(*) FROM one_time_prekeys WHERE account_id = $1 AND device_id = $2), \
                    (SELECT count(*) FROM kem_prekeys WHERE account_id = $1 AND device_id = $2)",
        )
        .await?;
    let row = c.query_one(&st, &[&d.account, &i64::from(d.device)]).await?;
    Ok(PrekeyCounts { one_time: to_u32(row.try_get(0)?), kem_one_time: to_u32(row.try_get(1)?) })
}

/// One-time keys left, counted up to [`LOW_PREKEY_WATER`] of each kind (bounded work).
async fn low_counts(c: &impl GenericClient, d: DeviceKey) -> Result<PrekeyCounts, StoreError> {
    let st = c
        .prepare_cached(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM one_time_prekeys WHERE account_id = $1 AND device_id = $2 LIMIT $3) o), \
                    (SELECT count(*) FROM (SELECT 1 FROM kem_prekeys WHERE account_id = $1 AND device_id = $2 LIMIT $3) k)",
        )
        .await?;
    let row = c.query_one(&st, &[&d.account, &i64::from(d.device), &i64::from(LOW_PREKEY_WATER)]).await?;
    Ok(PrekeyCounts { one_time: to_u32(row.try_get(0)?), kem_one_time: to_u32(row.try_get(1)?) })
}

async fn key_package_counts(c: &impl GenericClient, d: DeviceKey) -> Result<KeyPackageCounts, StoreError> {
    let st = c
        .prepare_cached(
            "SELECT count(*) FILTER (WHERE NOT last_resort), count(*) FILTER (WHERE last_resort) \
             FROM key_packages WHERE account_id = $1 AND device_id = $2",
        )
        .await?;
    let row = c.query_one(&st, &[&d.account, &i64::from(d.device)]).await?;
    let (available, last_resort): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    Ok(KeyPackageCounts { available: to_u32(available), last_resort: last_resort > 0 })
}

async fn take_one(c: &impl GenericClient, table: &str, d: DeviceKey) -> Result<Option<Vec<u8>>, StoreError> {
    let st = c
        .prepare_cached(&format!(
            "DELETE FROM {table} WHERE id = (SELECT id FROM {table} WHERE account_id = $1 AND device_id = $2 \
             ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING key"
        ))
        .await?;
    let row = c.query_opt(&st, &[&d.account, &i64::from(d.device)]).await?;
    Ok(match row {
        Some(r) => Some(r.try_get(0)?),
        None => None,
    })
}

/// Deletes what a device holds (see the SQLite store's `clear_device`). The device row
/// first: its lock waits for a send that is adding to the mailbox, whose envelopes are then
/// committed and deleted below.
async fn clear_device(c: &impl GenericClient, d: DeviceKey, remove: bool) -> Result<(), StoreError> {
    let dev = i64::from(d.device);
    let row = if remove {
        "DELETE FROM devices WHERE account_id = $1 AND device_id = $2"
    } else {
        "UPDATE devices SET logged_out = true, mailbox_count = 0, mailbox_bytes = 0, signed_prekey = '\\x', \
         last_resort = '\\x' WHERE account_id = $1 AND device_id = $2"
    };
    let st = c.prepare_cached(row).await?;
    c.execute(&st, &[&d.account, &dev]).await?;
    groups::forget(c, d.account, Some(d.device)).await?;
    for sql in [
        "DELETE FROM envelopes WHERE account_id = $1 AND device_id = $2",
        "DELETE FROM one_time_prekeys WHERE account_id = $1 AND device_id = $2",
        "DELETE FROM kem_prekeys WHERE account_id = $1 AND device_id = $2",
        "DELETE FROM key_packages WHERE account_id = $1 AND device_id = $2",
        "DELETE FROM challenges WHERE account_id = $1 AND device_id = $2",
        "DELETE FROM tokens WHERE account_id = $1 AND device_id = $2",
        "DELETE FROM send_keys WHERE account_id = $1 AND device_id = $2",
        "DELETE FROM state_counters WHERE account_id = $1 AND device_id = $2",
    ] {
        let st = c.prepare_cached(sql).await?;
        c.execute(&st, &[&d.account, &dev]).await?;
    }
    Ok(())
}

async fn blob_record(
    c: &impl GenericClient,
    account: AccountId,
    id: &[u8],
    now_ms: u64,
    lock: bool,
) -> Result<Option<BlobRecord>, StoreError> {
    let st = c
        .prepare_cached(if lock {
            "SELECT size, received, expires_ms FROM blobs WHERE id = $1 AND account_id = $2 AND expires_ms > $3 \
             FOR UPDATE"
        } else {
            "SELECT size, received, expires_ms FROM blobs WHERE id = $1 AND account_id = $2 AND expires_ms > $3"
        })
        .await?;
    Ok(match c.query_opt(&st, &[&id, &account, &to_i64(now_ms)]).await? {
        Some(r) => Some(BlobRecord {
            size: to_u64(r.try_get(0)?),
            received: to_u64(r.try_get(1)?),
            expires_ms: to_u64(r.try_get(2)?),
        }),
        None => None,
    })
}

impl PgStore {
    async fn publish_tx(&self, u: ListUpdate) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // Compare-and-set on the version: a concurrent publish waits on this row lock and
        // then finds the version changed.
        let st = tx
            .prepare_cached(
                "UPDATE accounts SET account_key = $2, device_list = $3, device_list_version = $4, \
                 max_device_id = GREATEST(max_device_id, $5) WHERE id = $1 AND device_list_version = $6",
            )
            .await?;
        let n = tx
            .execute(
                &st,
                &[
                    &u.account,
                    &u.account_key,
                    &u.device_list,
                    &to_i64(u.version),
                    &i64::from(u.max_device_id),
                    &to_i64(u.previous_version),
                ],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::Conflict);
        }
        kt::enqueue(&tx, u.account).await?;
        if let Some(signature) = &u.rotation_signature {
            let st = tx
                .prepare_cached(
                    "INSERT INTO rotations (account_id, version, device_list, signature) VALUES ($1, $2, $3, $4)",
                )
                .await?;
            tx.execute(&st, &[&u.account, &to_i64(u.version), &u.device_list, signature]).await?;
        }
        let mut removed = u.removed.clone();
        removed.sort_unstable();
        for device in removed {
            clear_device(&tx, DeviceKey { account: u.account, device }, true).await?;
        }
        let st = tx
            .prepare_cached(
                "INSERT INTO devices (account_id, device_id, identity, signed_prekey, last_resort, created_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .await?;
        for n in &u.added {
            tx.execute(
                &st,
                &[
                    &u.account,
                    &i64::from(n.device),
                    &n.identity,
                    &n.signed_prekey,
                    &n.last_resort,
                    &to_i64(u.now_ms),
                ],
            )
            .await?;
            let d = DeviceKey { account: u.account, device: n.device };
            insert_keys(&tx, "one_time_prekeys", d, &n.one_time, None).await?;
            insert_keys(&tx, "kem_prekeys", d, &n.kem_one_time, None).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn logout_tx(&self, d: DeviceKey) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let st = tx
            .prepare_cached("SELECT 1 FROM devices WHERE account_id = $1 AND device_id = $2 FOR UPDATE")
            .await?;
        if tx.query_opt(&st, &[&d.account, &i64::from(d.device)]).await?.is_none() {
            return Err(StoreError::NotFound);
        }
        clear_device(&tx, d, false).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_blob_tx(
        &self,
        account: AccountId,
        id: [u8; 16],
        size: u64,
        now_ms: u64,
        expires_ms: u64,
        max: usize,
    ) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // Concurrent creations of one account queue here, so the count below holds.
        let st = tx.prepare_cached("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE").await?;
        if tx.query_opt(&st, &[&account]).await?.is_none() {
            return Err(StoreError::NotFound);
        }
        let st =
            tx.prepare_cached("SELECT count(*) FROM blobs WHERE account_id = $1 AND expires_ms > $2").await?;
        let live: i64 = tx.query_one(&st, &[&account, &to_i64(now_ms)]).await?.try_get(0)?;
        if to_u64(live) >= max as u64 {
            return Err(StoreError::TooManyBlobs);
        }
        let st = tx
            .prepare_cached(
                "INSERT INTO blobs (id, account_id, size, received, expires_ms) VALUES ($1, $2, $3, 0, $4)",
            )
            .await?;
        tx.execute(&st, &[&id.as_slice(), &account, &to_i64(size), &to_i64(expires_ms)]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn put_chunk_tx(
        &self,
        account: AccountId,
        id: [u8; 16],
        offset: u64,
        data: Vec<u8>,
        now_ms: u64,
    ) -> Result<BlobRecord, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let blob = blob_record(&tx, account, &id, now_ms, true).await?.ok_or(StoreError::NotFound)?;
        let len = data.len() as u64;
        if blob.received != offset || offset.saturating_add(len) > blob.size {
            return Err(StoreError::BlobOffset(blob));
        }
        let st = tx
            .prepare_cached("INSERT INTO blob_chunks (blob_id, chunk_offset, data) VALUES ($1, $2, $3)")
            .await?;
        tx.execute(&st, &[&id.as_slice(), &to_i64(offset), &data]).await?;
        let st = tx.prepare_cached("UPDATE blobs SET received = $2 WHERE id = $1").await?;
        tx.execute(&st, &[&id.as_slice(), &to_i64(offset + len)]).await?;
        tx.commit().await?;
        Ok(BlobRecord { received: offset + len, ..blob })
    }

    /// Runs a write, counting it as waiting for the database until it is answered (see
    /// [`Progress`]).
    async fn tracked<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let waiting = self.progress.begin();
        let out = op.await;
        waiting.finished();
        out
    }

    async fn put_prekeys_tx(&self, d: DeviceKey, keys: PrekeySet) -> Result<PrekeyCounts, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let dev = i64::from(d.device);
        let st = tx
            .prepare_cached(
                "UPDATE devices SET signed_prekey = coalesce($3, signed_prekey), \
                 last_resort = coalesce($4, last_resort) WHERE account_id = $1 AND device_id = $2",
            )
            .await?;
        if tx.execute(&st, &[&d.account, &dev, &keys.signed_prekey, &keys.last_resort]).await? == 0 {
            return Err(StoreError::NotFound);
        }
        insert_keys(&tx, "one_time_prekeys", d, &keys.one_time, keys.kept(false).as_deref()).await?;
        insert_keys(&tx, "kem_prekeys", d, &keys.kem_one_time, keys.kept(true).as_deref()).await?;
        raise_state_counter(&tx, d, keys.state_counter).await?;
        let out = counts(&tx, d).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn put_key_packages_tx(
        &self,
        d: DeviceKey,
        key_packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    ) -> Result<KeyPackageCounts, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let dev = i64::from(d.device);
        // The device's row, locked: concurrent uploads of one device queue here (one
        // last-resort KeyPackage), and a device removed meanwhile is not found.
        let st = tx
            .prepare_cached("SELECT 1 FROM devices WHERE account_id = $1 AND device_id = $2 AND NOT logged_out FOR UPDATE")
            .await?;
        if tx.query_opt(&st, &[&d.account, &dev]).await?.is_none() {
            return Err(StoreError::NotFound);
        }
        if let Some(lr) = last_resort {
            let st = tx
                .prepare_cached(
                    "DELETE FROM key_packages WHERE account_id = $1 AND device_id = $2 AND last_resort",
                )
                .await?;
            tx.execute(&st, &[&d.account, &dev]).await?;
            let st = tx
                .prepare_cached(
                    "INSERT INTO key_packages (account_id, device_id, last_resort, data) VALUES ($1, $2, true, $3)",
                )
                .await?;
            tx.execute(&st, &[&d.account, &dev, &lr]).await?;
        }
        if !key_packages.is_empty() {
            let st = tx
                .prepare_cached(
                    "INSERT INTO key_packages (account_id, device_id, last_resort, data) \
                     SELECT $1, $2, false, data FROM unnest($3::bytea[]) WITH ORDINALITY AS k(data, n) ORDER BY n",
                )
                .await?;
            tx.execute(&st, &[&d.account, &dev, &key_packages]).await?;
        }
        let st = tx
            .prepare_cached(
                "DELETE FROM key_packages WHERE account_id = $1 AND device_id = $2 AND NOT last_resort AND id NOT IN \
                 (SELECT id FROM key_packages WHERE account_id = $1 AND device_id = $2 AND NOT last_resort \
                 ORDER BY id DESC LIMIT $3)",
            )
            .await?;
        let keep = i64::try_from(MAX_STORED_KEY_PACKAGES).unwrap_or(i64::MAX);
        tx.execute(&st, &[&d.account, &dev, &keep]).await?;
        let out = key_package_counts(&tx, d).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn take_key_package_tx(
        &self,
        d: DeviceKey,
        one_time: bool,
    ) -> Result<Option<(Vec<u8>, bool)>, StoreError> {
        let c = self.pool.get().await?;
        let dev = i64::from(d.device);
        if one_time {
            let st = c
            .prepare_cached(
                "DELETE FROM key_packages WHERE id = (SELECT id FROM key_packages WHERE account_id = $1 \
                 AND device_id = $2 AND NOT last_resort ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING data",
            )
            .await?;
            if let Some(row) = c.query_opt(&st, &[&d.account, &dev]).await? {
                return Ok(Some((row.try_get(0)?, false)));
            }
        }
        let st = c
            .prepare_cached(
                "SELECT data FROM key_packages WHERE account_id = $1 AND device_id = $2 AND last_resort",
            )
            .await?;
        Ok(match c.query_opt(&st, &[&d.account, &dev]).await? {
            Some(row) => Some((row.try_get(0)?, true)),
            None => None,
        })
    }

    async fn take_bundle_tx(
        &self,
        d: DeviceKey,
        take_one_time: bool,
    ) -> Result<Option<BundleParts>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let st = tx
            .prepare_cached(
                "SELECT identity, signed_prekey, last_resort FROM devices WHERE account_id = $1 AND device_id = $2 \
                 AND NOT logged_out",
            )
            .await?;
        let Some(row) = tx.query_opt(&st, &[&d.account, &i64::from(d.device)]).await? else {
            return Ok(None);
        };
        let (identity, signed_prekey, last_resort): (Vec<u8>, Vec<u8>, Vec<u8>) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let (mut one_time, mut kem) = (None, None);
        if take_one_time {
            one_time = take_one(&tx, "one_time_prekeys", d).await?;
            kem = take_one(&tx, "kem_prekeys", d).await?;
        }
        let left = low_counts(&tx, d).await?;
        tx.commit().await?;
        Ok(Some(BundleParts {
            identity,
            signed_prekey,
            kem_prekey: kem.unwrap_or(last_resort),
            one_time,
            left,
        }))
    }

    async fn send_tx(
        &self,
        sender: &Authed,
        recipient: &str,
        mut envelopes: Vec<NewEnvelope>,
        now_ms: u64,
        idempotency_key: Option<[u8; IDEMPOTENCY_KEY_BYTES]>,
        state_counter: Option<u64>,
    ) -> Result<Sent, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let key = idempotency_key.as_ref().map(|k| k.as_slice());
        if let Some(server_time_ms) = claim_send_key(&tx, sender.key, key, now_ms).await? {
            return Ok(Sent::Duplicate { server_time_ms });
        }
        let st = tx.prepare_cached("SELECT id, kt_devices FROM accounts WHERE name = $1").await?;
        let (account, published): (AccountId, Option<String>) = match tx.query_opt(&st, &[&recipient]).await?
        {
            Some(r) => (r.try_get(0)?, r.try_get(1)?),
            None => return Err(StoreError::NotFound),
        };
        let st = tx
            .prepare_cached(
                "SELECT device_id FROM devices WHERE account_id = $1 AND NOT logged_out ORDER BY device_id",
            )
            .await?;
        let current: Vec<u32> = tx
            .query(&st, &[&account])
            .await?
            .iter()
            .map(|r| r.try_get::<_, i64>(0).map(to_u32))
            .collect::<Result<_, _>>()?;
        super::check_devices(
            &super::required_devices(current, account, sender),
            published.as_deref(),
            &envelopes,
        )?;
        // Lock device rows in one order so concurrent sends cannot deadlock.
        envelopes.sort_by_key(|e| e.device);
        let bump = tx
            .prepare_cached(
                "UPDATE devices SET mailbox_count = mailbox_count + 1, mailbox_bytes = mailbox_bytes + $4 \
                 WHERE account_id = $1 AND device_id = $2 AND NOT logged_out AND mailbox_count < $3 \
                 AND mailbox_bytes + $4 <= $5",
            )
            .await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO envelopes (account_id, device_id, sender, sender_device, server_time_ms, content) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .await?;
        let max = i64::try_from(MAX_MAILBOX_ENVELOPES).unwrap_or(i64::MAX);
        let mut stored = Vec::with_capacity(envelopes.len());
        // Ids follow commit order within a mailbox: each id is drawn (identity sequence,
        // cache 1) after `bump` locked the recipient's device row, and the lock is held until
        // commit, so a later id of the same mailbox belongs to a later commit. WebSocket
        // delivery relies on this (`service::delivery`'s watermark).
        for e in envelopes {
            let dev = i64::from(e.device);
            let len = i64::try_from(e.content.len()).unwrap_or(i64::MAX);
            if tx.execute(&bump, &[&account, &dev, &max, &len, &self.max_mailbox_bytes]).await? == 0 {
                // The device was removed or logged out since the devices were read (a
                // concurrent publish or logout): its envelope is extra, not a full mailbox.
                let st = tx
                    .prepare_cached(
                        "SELECT 1 FROM devices WHERE account_id = $1 AND device_id = $2 AND NOT logged_out",
                    )
                    .await?;
                if tx.query_opt(&st, &[&account, &dev]).await?.is_none() {
                    return Err(StoreError::MismatchedDevices { missing: Vec::new(), extra: vec![e.device] });
                }
                return Err(StoreError::MailboxFull);
            }
            let row = tx
                .query_one(
                    &insert,
                    &[
                        &account,
                        &dev,
                        &sender.account,
                        &i64::from(sender.key.device),
                        &to_i64(now_ms),
                        &e.content,
                    ],
                )
                .await?;
            stored.push(StoredEnvelope {
                to: DeviceKey { account, device: e.device },
                envelope: tacit_api::Envelope {
                    id: to_u64(row.try_get(0)?),
                    sender: sender.account.clone(),
                    sender_device: sender.key.device,
                    server_time_ms: now_ms,
                    content: e.content.into(),
                    group: None,
                },
            });
        }
        raise_state_counter(&tx, sender.key, state_counter).await?;
        tx.commit().await?;
        Ok(Sent::Stored(stored))
    }
}

#[async_trait]
impl Store for PgStore {
    async fn create_account(&self, a: NewAccount) -> Result<AccountId, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let st = tx
            .prepare_cached(
                "INSERT INTO accounts (name, account_key, device_list, device_list_version, created_ms) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING RETURNING id",
            )
            .await?;
        let row = tx
            .query_opt(
                &st,
                &[&a.name, &a.account_key, &a.device_list, &to_i64(a.device_list_version), &to_i64(a.now_ms)],
            )
            .await?;
        let id: AccountId = match row {
            Some(r) => r.try_get(0)?,
            None => return Err(StoreError::NameTaken),
        };
        let st = tx
            .prepare_cached(
                "INSERT INTO devices (account_id, device_id, identity, signed_prekey, last_resort, created_ms) \
                 VALUES ($1, 1, $2, $3, $4, $5)",
            )
            .await?;
        tx.execute(&st, &[&id, &a.device_identity, &a.signed_prekey, &a.last_resort, &to_i64(a.now_ms)])
            .await?;
        let d = DeviceKey { account: id, device: 1 };
        insert_keys(&tx, "one_time_prekeys", d, &a.one_time, None).await?;
        insert_keys(&tx, "kem_prekeys", d, &a.kem_one_time, None).await?;
        kt::enqueue(&tx, id).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn account(&self, name: &str) -> Result<Option<AccountRecord>, StoreError> {
        let c = self.pool.get().await?;
        let st = c.prepare_cached("SELECT id, name, device_list FROM accounts WHERE name = $1").await?;
        Ok(match c.query_opt(&st, &[&name]).await? {
            Some(r) => {
                Some(AccountRecord { id: r.try_get(0)?, name: r.try_get(1)?, device_list: r.try_get(2)? })
            }
            None => None,
        })
    }

    async fn device_identity(&self, d: DeviceKey) -> Result<Option<Vec<u8>>, StoreError> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached(
                "SELECT identity FROM devices WHERE account_id = $1 AND device_id = $2 AND NOT logged_out",
            )
            .await?;
        Ok(match c.query_opt(&st, &[&d.account, &i64::from(d.device)]).await? {
            Some(r) => Some(r.try_get(0)?),
            None => None,
        })
    }

    async fn delete_account(&self, account: AccountId) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        groups::forget(&tx, account, None).await?;
        for sql in [
            "DELETE FROM envelopes WHERE account_id = $1",
            "DELETE FROM blob_chunks WHERE blob_id IN (SELECT id FROM blobs WHERE account_id = $1)",
            "DELETE FROM blobs WHERE account_id = $1",
            "DELETE FROM send_keys WHERE account_id = $1",
            "DELETE FROM state_counters WHERE account_id = $1",
            "DELETE FROM one_time_prekeys WHERE account_id = $1",
            "DELETE FROM kem_prekeys WHERE account_id = $1",
            "DELETE FROM key_packages WHERE account_id = $1",
            "DELETE FROM challenges WHERE account_id = $1",
            "DELETE FROM tokens WHERE account_id = $1",
            "DELETE FROM devices WHERE account_id = $1",
            "DELETE FROM rotations WHERE account_id = $1",
            // The directory publishes the deletion (queued before the row goes).
            "INSERT INTO kt_pending (name) SELECT name FROM accounts WHERE id = $1",
            "DELETE FROM accounts WHERE id = $1",
        ] {
            let st = tx.prepare_cached(sql).await?;
            tx.execute(&st, &[&account]).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn put_challenge(&self, d: DeviceKey, challenge: &[u8], expires_ms: u64) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached(
                "INSERT INTO challenges (challenge, account_id, device_id, expires_ms) VALUES ($1, $2, $3, $4)",
            )
            .await?;
        c.execute(&st, &[&challenge, &d.account, &i64::from(d.device), &to_i64(expires_ms)]).await?;
        Ok(())
    }

    async fn take_challenge(&self, d: DeviceKey, challenge: &[u8], now_ms: u64) -> Result<bool, StoreError> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached(
                "DELETE FROM challenges WHERE challenge = $1 RETURNING account_id, device_id, expires_ms",
            )
            .await?;
        Ok(match c.query_opt(&st, &[&challenge]).await? {
            Some(r) => {
                let (a, dev, exp): (i64, i64, i64) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
                a == d.account && dev == i64::from(d.device) && to_u64(exp) > now_ms
            }
            None => false,
        })
    }

    async fn put_token(
        &self,
        d: DeviceKey,
        token_hash: &[u8],
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        // One statement: the token only for a device that exists and has not logged out
        // (a logout or removal commits before or after it, never between).
        let st = c
            .prepare_cached(
                "INSERT INTO tokens (token_hash, account_id, device_id, expires_ms) \
                 SELECT $1, account_id, device_id, $4 FROM devices \
                 WHERE account_id = $2 AND device_id = $3 AND NOT logged_out FOR SHARE",
            )
            .await?;
        let dev = i64::from(d.device);
        if c.execute(&st, &[&token_hash, &d.account, &dev, &to_i64(expires_ms)]).await? == 0 {
            return Err(StoreError::NotFound);
        }
        // Seen, to the minute: at most one write a minute per device.
        let minute = to_i64(now_ms - now_ms % 60_000);
        let st = c
            .prepare_cached(
                "UPDATE devices SET last_seen_ms = $3 WHERE account_id = $1 AND device_id = $2 \
                 AND (last_seen_ms IS NULL OR last_seen_ms < $3)",
            )
            .await?;
        c.execute(&st, &[&d.account, &dev, &minute]).await?;
        Ok(())
    }

    async fn token_device(&self, token_hash: &[u8], now_ms: u64) -> Result<Option<Authed>, StoreError> {
        let at_once =
            Timeouts { wait: Some(Duration::ZERO), create: Some(POOL_CREATE), recycle: Some(POOL_RECYCLE) };
        let c = match self.pool.timeout_get(&at_once).await {
            Ok(c) => c,
            Err(deadpool_postgres::PoolError::Timeout(_)) => self.token_pool.get().await?,
            Err(e) => return Err(e.into()),
        };
        let st = c
            .prepare_cached(
                "SELECT t.account_id, t.device_id, a.name FROM tokens t JOIN accounts a ON a.id = t.account_id \
                 WHERE t.token_hash = $1 AND t.expires_ms > $2",
            )
            .await?;
        Ok(match c.query_opt(&st, &[&token_hash, &to_i64(now_ms)]).await? {
            Some(r) => Some(Authed {
                key: DeviceKey { account: r.try_get(0)?, device: to_u32(r.try_get(1)?) },
                account: r.try_get(2)?,
            }),
            None => None,
        })
    }

    async fn purge_expired(&self, now_ms: u64) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.execute("DELETE FROM challenges WHERE expires_ms <= $1", &[&to_i64(now_ms)]).await?;
        c.execute("DELETE FROM tokens WHERE expires_ms <= $1", &[&to_i64(now_ms)]).await?;
        c.execute("DELETE FROM send_keys WHERE expires_ms <= $1", &[&to_i64(now_ms)]).await?;
        c.execute("DELETE FROM link_slots WHERE expires_ms <= $1", &[&to_i64(now_ms)]).await?;
        c.execute(
            "DELETE FROM blob_chunks WHERE blob_id IN (SELECT id FROM blobs WHERE expires_ms <= $1)",
            &[&to_i64(now_ms)],
        )
        .await?;
        c.execute("DELETE FROM blobs WHERE expires_ms <= $1", &[&to_i64(now_ms)]).await?;
        Ok(())
    }

    async fn put_prekeys(&self, d: DeviceKey, keys: PrekeySet) -> Result<PrekeyCounts, StoreError> {
        self.tracked(self.put_prekeys_tx(d, keys)).await
    }

    async fn prekey_counts(&self, d: DeviceKey) -> Result<PrekeyCounts, StoreError> {
        let c = self.pool.get().await?;
        counts(&c, d).await
    }

    async fn take_bundle(&self, d: DeviceKey, one_time: bool) -> Result<Option<BundleParts>, StoreError> {
        self.tracked(self.take_bundle_tx(d, one_time)).await
    }

    async fn put_key_packages(
        &self,
        d: DeviceKey,
        key_packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    ) -> Result<KeyPackageCounts, StoreError> {
        self.tracked(self.put_key_packages_tx(d, key_packages, last_resort)).await
    }

    async fn key_package_counts(&self, d: DeviceKey) -> Result<KeyPackageCounts, StoreError> {
        let c = self.pool.get().await?;
        key_package_counts(&c, d).await
    }

    async fn take_key_package(
        &self,
        d: DeviceKey,
        one_time: bool,
    ) -> Result<Option<(Vec<u8>, bool)>, StoreError> {
        self.tracked(self.take_key_package_tx(d, one_time)).await
    }

    async fn known_kem_prekeys(&self, d: DeviceKey, ids: &[u32]) -> Result<Vec<Vec<u8>>, StoreError> {
        let ids: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached(
                "SELECT key FROM kem_prekeys WHERE account_id = $1 AND device_id = $2 AND key_id = ANY($3) \
                 UNION ALL SELECT last_resort FROM devices WHERE account_id = $1 AND device_id = $2",
            )
            .await?;
        let rows = c.query(&st, &[&d.account, &i64::from(d.device), &ids]).await?;
        rows.iter().map(|r| r.try_get::<_, Vec<u8>>(0).map_err(StoreError::from)).collect()
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
        self.tracked(self.send_tx(sender, recipient, envelopes, now_ms, idempotency_key, state_counter)).await
    }

    async fn fetch(
        &self,
        d: DeviceKey,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<tacit_api::Envelope>, StoreError> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached(
                "SELECT e.id, e.sender, e.sender_device, e.server_time_ms, coalesce(p.content, e.content), \
                 p.group_id, p.kind::BIGINT, p.epoch FROM envelopes e LEFT JOIN group_payloads p ON p.id = e.payload_id \
                 WHERE e.account_id = $1 AND e.device_id = $2 AND e.id > $3 ORDER BY e.id LIMIT $4",
            )
            .await?;
        let rows = c
            .query(
                &st,
                &[
                    &d.account,
                    &i64::from(d.device),
                    &to_i64(after),
                    &i64::try_from(limit).unwrap_or(i64::MAX),
                ],
            )
            .await?;
        let mut total = 0usize;
        let mut out = Vec::new();
        for r in &rows {
            if total > max_bytes {
                break;
            }
            let e: Result<tacit_api::Envelope, StoreError> = (|| {
                Ok(tacit_api::Envelope {
                    id: to_u64(r.try_get(0)?),
                    sender: r.try_get(1)?,
                    sender_device: to_u32(r.try_get(2)?),
                    server_time_ms: to_u64(r.try_get(3)?),
                    content: r.try_get::<_, Vec<u8>>(4)?.into(),
                    group: super::group_delivery(r.try_get(5)?, r.try_get(6)?, r.try_get(7)?),
                })
            })();
            let e = e?;
            total = total.saturating_add(e.content.as_slice().len());
            out.push(e);
        }
        Ok(out)
    }

    async fn stored_ids(&self, d: DeviceKey, ids: &[u64]) -> Result<Vec<u64>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = ids.iter().map(|&i| to_i64(i)).collect();
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached(
                "SELECT id FROM envelopes WHERE account_id = $1 AND device_id = $2 AND id = ANY($3)",
            )
            .await?;
        let rows = c.query(&st, &[&d.account, &i64::from(d.device), &ids]).await?;
        rows.iter().map(|r| r.try_get::<_, i64>(0).map(to_u64).map_err(StoreError::from)).collect()
    }

    async fn ack(&self, d: DeviceKey, ids: &[u64], state_counter: Option<u64>) -> Result<usize, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.tracked(self.ack_tx(d, ids, state_counter)).await
    }

    async fn group_commit(
        &self,
        sender: &Authed,
        commit: NewCommit,
        now_ms: u64,
        idempotency_key: Option<[u8; IDEMPOTENCY_KEY_BYTES]>,
    ) -> Result<GroupSent, StoreError> {
        let key = idempotency_key.as_ref().map(|k| k.as_slice());
        self.tracked(self.group_commit_tx(sender, commit, now_ms, key)).await
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
        let key = idempotency_key.as_ref().map(|k| k.as_slice());
        self.tracked(self.group_message_tx(sender, (&group_id, epoch), &content, now_ms, key, state_counter))
            .await
    }

    async fn group_status(
        &self,
        member: DeviceKey,
        group_id: Vec<u8>,
    ) -> Result<Option<(u64, Vec<GroupMemberName>)>, StoreError> {
        let c = self.pool.get().await?;
        groups::status(&c, member, &group_id).await
    }

    async fn leave_group(&self, member: DeviceKey, group_id: Vec<u8>) -> Result<bool, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let gone = groups::leave(&tx, member, &group_id).await?;
        tx.commit().await?;
        Ok(gone)
    }

    async fn state_counter(&self, d: DeviceKey) -> Result<u64, StoreError> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached("SELECT value FROM state_counters WHERE account_id = $1 AND device_id = $2")
            .await?;
        Ok(match c.query_opt(&st, &[&d.account, &i64::from(d.device)]).await? {
            Some(r) => to_u64(r.try_get(0)?),
            None => 0,
        })
    }

    async fn list_state(&self, account: AccountId) -> Result<Option<ListState>, StoreError> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached(
                "SELECT account_key, device_list_version, max_device_id FROM accounts WHERE id = $1",
            )
            .await?;
        let Some(row) = c.query_opt(&st, &[&account]).await? else { return Ok(None) };
        let (account_key, version, max_device_id): (Vec<u8>, i64, i64) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let st = c
            .prepare_cached(
                "SELECT device_id, identity, created_ms, last_seen_ms, logged_out FROM devices \
                 WHERE account_id = $1 ORDER BY device_id",
            )
            .await?;
        let devices = c
            .query(&st, &[&account])
            .await?
            .iter()
            .map(|r| {
                Ok(DeviceRecord {
                    device: to_u32(r.try_get(0)?),
                    identity: r.try_get(1)?,
                    created_ms: to_u64(r.try_get(2)?),
                    last_seen_ms: r.try_get::<_, Option<i64>>(3)?.map(to_u64),
                    logged_out: r.try_get(4)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Some(ListState {
            account_key,
            version: to_u64(version),
            max_device_id: to_u32(max_device_id),
            devices,
        }))
    }

    async fn publish_device_list(&self, update: ListUpdate) -> Result<(), StoreError> {
        self.tracked(self.publish_tx(update)).await
    }

    async fn rotations(
        &self,
        account: AccountId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<RotationRecord>, StoreError> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached(
                "SELECT version, device_list, signature FROM rotations WHERE account_id = $1 AND version > $2 \
                 ORDER BY version LIMIT $3",
            )
            .await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        c.query(&st, &[&account, &to_i64(after), &limit])
            .await?
            .into_iter()
            .map(|r| {
                Ok(RotationRecord {
                    version: to_u64(r.try_get(0)?),
                    device_list: r.try_get(1)?,
                    signature: r.try_get(2)?,
                })
            })
            .collect()
    }

    async fn logout_device(&self, d: DeviceKey) -> Result<(), StoreError> {
        self.tracked(self.logout_tx(d)).await
    }

    async fn put_link_offer(
        &self,
        slot: [u8; 16],
        offer: Vec<u8>,
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        // An expired slot of that id is replaced; a live one stays.
        let st = c
            .prepare_cached(
                "INSERT INTO link_slots (slot, offer, expires_ms) VALUES ($1, $2, $3) ON CONFLICT (slot) DO UPDATE \
                 SET offer = EXCLUDED.offer, answer = NULL, expires_ms = EXCLUDED.expires_ms \
                 WHERE link_slots.expires_ms <= $4",
            )
            .await?;
        let n = c.execute(&st, &[&slot.as_slice(), &offer, &to_i64(expires_ms), &to_i64(now_ms)]).await?;
        if n == 0 { Err(StoreError::Conflict) } else { Ok(()) }
    }

    async fn link_slot(&self, slot: [u8; 16], now_ms: u64) -> Result<Option<LinkSlot>, StoreError> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached(
                "SELECT offer, answer, expires_ms FROM link_slots WHERE slot = $1 AND expires_ms > $2",
            )
            .await?;
        Ok(match c.query_opt(&st, &[&slot.as_slice(), &to_i64(now_ms)]).await? {
            Some(r) => Some(LinkSlot {
                offer: r.try_get(0)?,
                answer: r.try_get(1)?,
                expires_ms: to_u64(r.try_get(2)?),
            }),
            None => None,
        })
    }

    async fn put_link_answer(&self, slot: [u8; 16], answer: Vec<u8>, now_ms: u64) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached(
                "UPDATE link_slots SET answer = $2 WHERE slot = $1 AND answer IS NULL AND expires_ms > $3",
            )
            .await?;
        if c.execute(&st, &[&slot.as_slice(), &answer, &to_i64(now_ms)]).await? > 0 {
            return Ok(());
        }
        let st = c.prepare_cached("SELECT 1 FROM link_slots WHERE slot = $1 AND expires_ms > $2").await?;
        Err(if c.query_opt(&st, &[&slot.as_slice(), &to_i64(now_ms)]).await?.is_some() {
            StoreError::Conflict
        } else {
            StoreError::NotFound
        })
    }

    async fn delete_link_slot(&self, slot: [u8; 16]) -> Result<bool, StoreError> {
        let c = self.pool.get().await?;
        let st = c.prepare_cached("DELETE FROM link_slots WHERE slot = $1").await?;
        Ok(c.execute(&st, &[&slot.as_slice()]).await? > 0)
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
        self.tracked(self.create_blob_tx(account, id, size, now_ms, expires_ms, max)).await
    }

    async fn blob(
        &self,
        account: AccountId,
        id: [u8; 16],
        now_ms: u64,
    ) -> Result<Option<BlobRecord>, StoreError> {
        let c = self.pool.get().await?;
        blob_record(&c, account, &id, now_ms, false).await
    }

    async fn put_blob_chunk(
        &self,
        account: AccountId,
        id: [u8; 16],
        offset: u64,
        data: Vec<u8>,
        now_ms: u64,
    ) -> Result<BlobRecord, StoreError> {
        self.tracked(self.put_chunk_tx(account, id, offset, data, now_ms)).await
    }

    async fn read_blob(
        &self,
        account: AccountId,
        id: [u8; 16],
        offset: u64,
        len: u64,
        now_ms: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let c = self.pool.get().await?;
        let blob = blob_record(&c, account, &id, now_ms, false).await?.ok_or(StoreError::NotFound)?;
        if blob.received < blob.size {
            return Err(StoreError::BlobIncomplete);
        }
        let end = offset.saturating_add(len).min(blob.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let st = c
            .prepare_cached(
                "SELECT chunk_offset, data FROM blob_chunks WHERE blob_id = $1 AND chunk_offset < $3 \
                 AND chunk_offset >= (SELECT coalesce(max(chunk_offset), 0) FROM blob_chunks \
                 WHERE blob_id = $1 AND chunk_offset <= $2) ORDER BY chunk_offset",
            )
            .await?;
        let chunks = c
            .query(&st, &[&id.as_slice(), &to_i64(offset), &to_i64(end)])
            .await?
            .iter()
            .map(|r| Ok((to_u64(r.try_get(0)?), r.try_get::<_, Vec<u8>>(1)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(super::assemble(&chunks, offset, end - offset))
    }

    async fn delete_blob(&self, account: AccountId, id: [u8; 16]) -> Result<bool, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let st = tx.prepare_cached("DELETE FROM blobs WHERE id = $1 AND account_id = $2").await?;
        let n = tx.execute(&st, &[&id.as_slice(), &account]).await?;
        if n > 0 {
            let st = tx.prepare_cached("DELETE FROM blob_chunks WHERE blob_id = $1").await?;
            tx.execute(&st, &[&id.as_slice()]).await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn healthy(&self) -> bool {
        if self.pool.is_closed() || self.progress.stalled() {
            return false;
        }
        self.select_one().await
    }

    async fn free_bytes(&self) -> Result<Option<u64>, StoreError> {
        let Some(quota) = self.quota else { return Ok(None) };
        let c = self.pool.get().await?;
        let used: i64 = c.query_one("SELECT pg_database_size(current_database())", &[]).await?.try_get(0)?;
        Ok(Some(quota.saturating_sub(to_u64(used))))
    }

    async fn close(&self) {
        self.pool.close();
        self.token_pool.close();
    }
}

impl PgStore {
    /// One statement deletes every acknowledged envelope (`id = ANY($3)`).
    async fn ack_tx(
        &self,
        d: DeviceKey,
        ids: &[u64],
        state_counter: Option<u64>,
    ) -> Result<usize, StoreError> {
        let ids: Vec<i64> = ids.iter().map(|&i| to_i64(i)).collect();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let dev = i64::from(d.device);
        let st = tx
            .prepare_cached(
                "WITH gone AS (DELETE FROM envelopes WHERE account_id = $1 AND device_id = $2 AND id = ANY($3) \
                 RETURNING octet_length(content) AS len, payload_id) \
                 SELECT count(*), coalesce(sum(len), 0)::BIGINT, \
                 coalesce(array_agg(payload_id ORDER BY payload_id) FILTER (WHERE payload_id IS NOT NULL), '{}') \
                 FROM gone",
            )
            .await?;
        let row = tx.query_one(&st, &[&d.account, &dev, &ids]).await?;
        let (n, bytes): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        let referenced: Vec<i64> = row.try_get(2)?;
        if n > 0 {
            let st = tx
                .prepare_cached(
                    "UPDATE devices SET mailbox_count = greatest(0, mailbox_count - $3), \
                     mailbox_bytes = greatest(0, mailbox_bytes - $4) WHERE account_id = $1 AND device_id = $2",
                )
                .await?;
            tx.execute(&st, &[&d.account, &dev, &n, &bytes]).await?;
            // After the device row (as a device's removal does), so the two cannot deadlock.
            let (payloads, counts) = runs(&referenced);
            groups::release(&tx, &payloads, &counts).await?;
            raise_state_counter(&tx, d, state_counter).await?;
        }
        tx.commit().await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// `SELECT 1` answered within [`HEALTH_TIMEOUT`] (reused for [`HEALTH_REUSE`]).
    async fn select_one(&self) -> bool {
        let mut last = self.health.lock().await;
        if let Some((at, ok)) = *last
            && at.elapsed() < HEALTH_REUSE
        {
            return ok;
        }
        let check = async {
            let c = self.pool.get().await?;
            c.simple_query("SELECT 1").await?;
            Ok::<(), StoreError>(())
        };
        let ok = matches!(tokio::time::timeout(HEALTH_TIMEOUT, check).await, Ok(Ok(())));
        *last = Some((tokio::time::Instant::now(), ok));
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

    async fn admin() -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(ADMIN, NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    }

    fn random_name(prefix: &str) -> String {
        let mut b = [0u8; 6];
        aws_lc_rs::rand::fill(&mut b).unwrap();
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!("{prefix}{hex}")
    }

    fn url(user: &str, schema: &str) -> String {
        format!("postgres://{user}@127.0.0.1:5432/test?options=-csearch_path%3D{schema}")
    }

    /// A role whose default is `synchronous_commit = off` (as a server, database or role
    /// setting could make it): the store's connections still commit synchronously, and keep
    /// the URL's `search_path`.
    #[tokio::test]
    async fn commits_are_synchronous_whatever_the_default() {
        let (role, schema) = (random_name("tacit_role_"), random_name("tacit_test_"));
        let a = admin().await;
        a.batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; ALTER ROLE {role} SET synchronous_commit = off; \
             CREATE SCHEMA {schema} AUTHORIZATION {role};"
        ))
        .await
        .unwrap();
        let (plain, conn) = tokio_postgres::connect(&url(&role, &schema), NoTls).await.unwrap();
        tokio::spawn(conn);
        let default: String = plain.query_one("SHOW synchronous_commit", &[]).await.unwrap().get(0);
        assert_eq!(default, "off", "the role's default applies to a plain connection");
        drop(plain);

        let store = PgStore::connect(&url(&role, &schema)).await.unwrap();
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(store.pool.get().await.unwrap());
        }
        for c in &held {
            let row =
                c.query_one("SELECT current_setting('synchronous_commit'), current_schema()", &[]).await;
            let row = row.unwrap();
            assert_eq!((row.get::<_, String>(0), row.get::<_, String>(1)), ("on".into(), schema.clone()));
        }
        drop(held);
        assert!(store.healthy().await);
        store.close().await;
        assert!(!store.healthy().await);
        a.batch_execute(&format!("DROP SCHEMA {schema} CASCADE; DROP ROLE {role};")).await.unwrap();
    }

    /// With every connection taken, an operation waits the pool's wait timeout and is then
    /// answered `Unavailable` (503), not left hanging.
    #[tokio::test]
    async fn a_full_pool_answers_unavailable_after_its_wait() {
        let schema = random_name("tacit_test_");
        let a = admin().await;
        a.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
        let wait = Duration::from_millis(200);
        let store =
            PgStore::connect_pool(&url("postgres", &schema), &StoreConfig::default(), 1, wait).await.unwrap();
        let held = store.pool.get().await.unwrap();
        let started = tokio::time::Instant::now();
        let got = store.account("nobody").await;
        assert!(matches!(got, Err(StoreError::Unavailable(_))), "{got:?}");
        assert!(started.elapsed() >= wait && started.elapsed() < wait * 10);
        assert!(matches!(
            crate::error::Failure::from(got.unwrap_err()).status_and_code().0,
            axum::http::StatusCode::SERVICE_UNAVAILABLE
        ));
        drop(held);
        assert_eq!(store.account("nobody").await.unwrap(), None);
        store.close().await;
        a.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
    }

    /// With the main pool full (a flood of public reads holding and queueing for every
    /// connection), a token look-up is answered at once from the connections kept for it.
    #[tokio::test]
    async fn token_look_ups_never_wait_behind_a_full_pool() {
        let schema = random_name("tacit_test_");
        let a = admin().await;
        a.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
        let wait = Duration::from_millis(300);
        let store = std::sync::Arc::new(
            PgStore::connect_pool(&url("postgres", &schema), &StoreConfig::default(), 2, wait).await.unwrap(),
        );
        let held = (store.pool.get().await.unwrap(), store.pool.get().await.unwrap());
        let queued: Vec<_> = (0..10)
            .map(|_| {
                let s = store.clone();
                tokio::spawn(async move { s.account("nobody").await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        for _ in 0..10 {
            let started = tokio::time::Instant::now();
            assert_eq!(store.token_device(&[7u8; 32], 0).await.unwrap(), None);
            assert!(started.elapsed() < wait, "{:?}", started.elapsed());
        }
        for q in queued {
            assert!(matches!(q.await.unwrap(), Err(StoreError::Unavailable(_))));
        }
        drop(held);
        store.close().await;
        a.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
    }

    /// Migration 3 counts the ciphertext already waiting in each mailbox.
    #[tokio::test]
    async fn migration_3_counts_the_bytes_already_waiting() {
        let schema = random_name("tacit_test_");
        let a = admin().await;
        a.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
        let (old, conn) = tokio_postgres::connect(&url("postgres", &schema), NoTls).await.unwrap();
        tokio::spawn(conn);
        for sql in &schema::POSTGRES[..2] {
            old.batch_execute(sql).await.unwrap();
        }
        old.batch_execute(
            "CREATE TABLE tacit_schema (version BIGINT NOT NULL); INSERT INTO tacit_schema VALUES (1), (2); \
             INSERT INTO devices (account_id, device_id, identity, signed_prekey, last_resort, mailbox_count) \
             VALUES (1, 1, '\\x00', '\\x00', '\\x00', 2), (1, 2, '\\x00', '\\x00', '\\x00', 0); \
             INSERT INTO envelopes (account_id, device_id, sender, sender_device, server_time_ms, content) \
             VALUES (1, 1, 'a', 1, 1, decode(repeat('00', 1000), 'hex')), (1, 1, 'a', 1, 1, decode(repeat('00', 234), 'hex'));",
        )
        .await
        .unwrap();
        drop(old);
        let store = PgStore::connect(&url("postgres", &schema)).await.unwrap();
        let bytes = || async {
            let c = store.pool.get().await.unwrap();
            let rows = c
                .query("SELECT device_id, mailbox_bytes FROM devices ORDER BY device_id", &[])
                .await
                .unwrap();
            rows.iter().map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1))).collect::<Vec<_>>()
        };
        assert_eq!(bytes().await, vec![(1, 1234), (2, 0)]);
        let d = DeviceKey { account: 1, device: 1 };
        let ids: Vec<u64> = store.fetch(d, 0, 10, 1 << 20).await.unwrap().iter().map(|e| e.id).collect();
        assert_eq!(store.ack(d, &ids, None).await.unwrap(), 2);
        assert_eq!(bytes().await, vec![(1, 0), (2, 0)]);
        store.close().await;
        a.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
    }

    /// Migration 6 gives existing devices their account's creation time and existing
    /// accounts their largest device id.
    #[tokio::test]
    async fn migration_6_backfills_devices_and_the_largest_id() {
        let schema = random_name("tacit_test_");
        let a = admin().await;
        a.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
        let (old, conn) = tokio_postgres::connect(&url("postgres", &schema), NoTls).await.unwrap();
        tokio::spawn(conn);
        for sql in &schema::POSTGRES[..5] {
            old.batch_execute(sql).await.unwrap();
        }
        old.batch_execute(
            "CREATE TABLE tacit_schema (version BIGINT NOT NULL); INSERT INTO tacit_schema VALUES (1), (2), (3), (4), (5); \
             INSERT INTO accounts (name, account_key, device_list, device_list_version, created_ms) \
             VALUES ('a', '\\x00', '\\x00', 2, 1234), ('b', '\\x00', '\\x00', 1, 99); \
             INSERT INTO devices (account_id, device_id, identity, signed_prekey, last_resort) \
             VALUES (1, 1, '\\x01', '\\x00', '\\x00'), (1, 3, '\\x03', '\\x00', '\\x00'), (2, 1, '\\x01', '\\x00', '\\x00');",
        )
        .await
        .unwrap();
        drop(old);
        let store = PgStore::connect(&url("postgres", &schema)).await.unwrap();
        let st = store.list_state(1).await.unwrap().unwrap();
        assert_eq!((st.version, st.max_device_id), (2, 3));
        let devices: Vec<(u32, u64, Option<u64>, bool)> =
            st.devices.iter().map(|d| (d.device, d.created_ms, d.last_seen_ms, d.logged_out)).collect();
        assert_eq!(devices, vec![(1, 1234, None, false), (3, 1234, None, false)]);
        let b = store.list_state(2).await.unwrap().unwrap();
        assert_eq!((b.max_device_id, b.devices[0].created_ms), (1, 99));
        store.close().await;
        a.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
    }
}
