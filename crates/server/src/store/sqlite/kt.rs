//! The key transparency directory's tables on SQLite ([`KtStore`]): reads on the reader
//! pool, writes on the single writer (an epoch is one job: one transaction).

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use crate::store::{
    KtCosignature, KtCurrent, KtEpoch, KtStore, KtWrite, StoreError, StoredValue, json_ids, to_i64, to_u64,
};

/// Queues an account's change for the next epoch (in the change's own transaction).
pub(super) fn enqueue(c: &Connection, account: i64) -> Result<(), StoreError> {
    c.prepare_cached("INSERT INTO kt_pending (name) SELECT name FROM accounts WHERE id = ?1")?
        .execute([account])?;
    Ok(())
}

/// An epoch row's columns, as read.
type EpochRow = (i64, Vec<u8>, i64, Vec<u8>, Vec<u8>);

fn epoch_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EpochRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn to_epoch(row: EpochRow) -> Result<KtEpoch, StoreError> {
    let (epoch, root, timestamp_ms, signature, audit_proof) = row;
    Ok(KtEpoch {
        epoch: to_u64(epoch),
        root: root
            .try_into()
            .map_err(|_| StoreError::Backend("a stored epoch root is not 32 bytes".into()))?,
        timestamp_ms: to_u64(timestamp_ms),
        signature: signature
            .try_into()
            .map_err(|_| StoreError::Backend("a stored epoch signature is not 64 bytes".into()))?,
        audit_proof,
    })
}

const EPOCH_COLUMNS: &str = "epoch, root, timestamp_ms, signature, audit_proof";

#[async_trait]
impl KtStore for SqliteStore {
    async fn kt_records(&self, ids: Vec<Vec<u8>>) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached("SELECT data FROM kt_records WHERE id = ?1")?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(data) = st.query_row([&id], |r| r.get::<_, Vec<u8>>(0)).optional()? {
                    out.push((id, data));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn kt_values(&self, labels: Vec<Vec<u8>>) -> Result<Vec<StoredValue>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT label, epoch, version, node_label, value FROM kt_values WHERE label = ?1 ORDER BY epoch",
            )?;
            let mut out = Vec::new();
            for label in labels {
                let rows = st.query_map([&label], |r| {
                    Ok(StoredValue {
                        label: r.get(0)?,
                        epoch: to_u64(r.get(1)?),
                        version: to_u64(r.get(2)?),
                        node_label: r.get(3)?,
                        value: r.get(4)?,
                    })
                })?;
                for row in rows {
                    out.push(row?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn kt_write(&self, w: KtWrite) -> Result<(), StoreError> {
        self.write(move |c| {
            if let Some(epoch) = w.extends {
                let stored: Option<Vec<u8>> = c
                    .prepare_cached("SELECT data FROM kt_records WHERE id = ?1")?
                    .query_row([crate::kt::records::AZKS_ID.as_slice()], |r| r.get(0))
                    .optional()?;
                if stored.as_deref().and_then(crate::kt::records::azks_epoch) != Some(epoch) {
                    return Err(StoreError::Conflict);
                }
            }
            let mut st = c.prepare_cached(
                "INSERT INTO kt_records (id, data) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET data = excluded.data",
            )?;
            for (id, data) in &w.records {
                st.execute(params![id, data])?;
            }
            let mut st = c.prepare_cached(
                "INSERT INTO kt_values (label, epoch, version, node_label, value) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (label, epoch) DO UPDATE SET version = excluded.version, \
                 node_label = excluded.node_label, value = excluded.value",
            )?;
            for v in &w.values {
                st.execute(params![v.label, to_i64(v.epoch), to_i64(v.version), v.node_label, v.value])?;
            }
            if !w.published.is_empty() {
                c.prepare_cached("DELETE FROM kt_pending WHERE seq IN (SELECT value FROM json_each(?1))")?
                    .execute([json_ids(&w.published)])?;
            }
            let mut st = c.prepare_cached("UPDATE accounts SET kt_devices = ?2 WHERE name = ?1")?;
            for (name, devices) in &w.published_devices {
                st.execute(params![name, devices])?;
            }
            // Inside the writer's transaction (`BEGIN IMMEDIATE` .. `COMMIT` around its jobs).
            #[cfg(feature = "malicious")]
            if w.extends.is_some()
                && let Some(pause) = crate::store::kt::pause_in_commit()
            {
                std::thread::sleep(pause);
            }
            Ok(())
        })
        .await
    }

    async fn kt_pending(&self, limit: usize) -> Result<Vec<(i64, String)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut st = c.prepare_cached("SELECT seq, name FROM kt_pending ORDER BY seq LIMIT ?1")?;
            let rows = st.query_map([limit], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn kt_is_pending(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT 1 FROM kt_pending WHERE name = ?1")?.exists([&name])?)
        })
        .await
    }

    async fn kt_current(&self, names: Vec<String>) -> Result<Vec<KtCurrent>, StoreError> {
        self.read(move |c| {
            // One read transaction: each list and its device rows are read from one snapshot.
            let tx = c.unchecked_transaction()?;
            let mut st = tx.prepare_cached(
                "SELECT device_list, (SELECT group_concat(device_id) FROM devices d WHERE d.account_id = a.id)                  FROM accounts a WHERE name = ?1",
            )?;
            let mut out = Vec::with_capacity(names.len());
            for name in names {
                let row = st
                    .query_row([&name], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Option<String>>(1)?)))
                    .optional()?;
                if let Some((device_list, devices)) = row {
                    out.push(KtCurrent { name, device_list, devices: devices.unwrap_or_default() });
                }
            }
            drop(st);
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn kt_put_cosignature(&self, epoch: u64, co: KtCosignature) -> Result<(), StoreError> {
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO kt_cosignatures (epoch, auditor, timestamp_ms, signature) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (epoch, auditor) DO UPDATE SET timestamp_ms = excluded.timestamp_ms, \
                 signature = excluded.signature WHERE excluded.timestamp_ms > kt_cosignatures.timestamp_ms",
            )?
            .execute(params![
                to_i64(epoch),
                co.auditor.as_slice(),
                to_i64(co.timestamp_ms),
                co.signature.as_slice()
            ])?;
            Ok(())
        })
        .await
    }

    async fn kt_cosignatures(&self, epoch: u64) -> Result<Vec<KtCosignature>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT auditor, timestamp_ms, signature FROM kt_cosignatures WHERE epoch = ?1 ORDER BY auditor",
            )?;
            let rows = st.query_map([to_i64(epoch)], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (a, t, sig) = row?;
                out.push(crate::store::kt::to_cosignature(a, to_u64(t), sig)?);
            }
            Ok(out)
        })
        .await
    }

    async fn kt_roots(&self, from: u64, limit: usize) -> Result<Vec<(u64, [u8; 32])>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT epoch, root FROM kt_epochs WHERE epoch >= ?1 ORDER BY epoch LIMIT ?2",
            )?;
            let rows = st.query_map(params![to_i64(from), to_i64(limit as u64)], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (e, root) = row?;
                let root = root
                    .try_into()
                    .map_err(|_| StoreError::Backend("a stored epoch root is not 32 bytes".into()))?;
                out.push((to_u64(e), root));
            }
            Ok(out)
        })
        .await
    }

    async fn kt_put_epoch(&self, e: KtEpoch) -> Result<(), StoreError> {
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO kt_epochs (epoch, root, timestamp_ms, signature, audit_proof) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (epoch) DO NOTHING",
            )?
            .execute(params![
                to_i64(e.epoch),
                e.root.as_slice(),
                to_i64(e.timestamp_ms),
                e.signature.as_slice(),
                e.audit_proof
            ])?;
            Ok(())
        })
        .await
    }

    async fn kt_epoch(&self, epoch: u64) -> Result<Option<KtEpoch>, StoreError> {
        self.read(move |c| {
            let sql = format!("SELECT {EPOCH_COLUMNS} FROM kt_epochs WHERE epoch = ?1");
            let row = c.prepare_cached(&sql)?.query_row([to_i64(epoch)], epoch_row).optional()?;
            row.map(to_epoch).transpose()
        })
        .await
    }

    async fn kt_latest_epoch(&self) -> Result<Option<KtEpoch>, StoreError> {
        self.read(move |c| {
            let sql = format!("SELECT {EPOCH_COLUMNS} FROM kt_epochs ORDER BY epoch DESC LIMIT 1");
            let row = c.prepare_cached(&sql)?.query_row([], epoch_row).optional()?;
            row.map(to_epoch).transpose()
        })
        .await
    }

    async fn kt_newest_epoch(&self) -> Result<Option<u64>, StoreError> {
        self.read(move |c| {
            let e: Option<i64> =
                c.prepare_cached("SELECT max(epoch) FROM kt_epochs")?.query_row([], |r| r.get(0))?;
            Ok(e.map(to_u64))
        })
        .await
    }

    async fn kt_new_log(&self) -> Result<(), StoreError> {
        // One writer job: one transaction.
        self.write(|c| Ok(c.execute_batch(crate::store::kt::NEW_LOG_SQL)?)).await
    }

    async fn kt_setting(&self, name: &str, candidate: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let name = name.to_owned();
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO kt_secrets (name, secret) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
            )?
            .execute(params![name, candidate])?;
            let stored: Vec<u8> = c
                .prepare_cached("SELECT secret FROM kt_secrets WHERE name = ?1")?
                .query_row([&name], |r| r.get(0))?;
            Ok(stored)
        })
        .await
    }
}
