//! The key transparency directory's tables on PostgreSQL ([`KtStore`]): one statement per
//! read whatever the number of ids (`= ANY($1)`), one transaction per write, records
//! upserted from arrays (`UNNEST`).

use async_trait::async_trait;
use deadpool_postgres::GenericClient;

use super::PgStore;
use crate::store::{
    KtCosignature, KtCurrent, KtEpoch, KtStore, KtWrite, StoreError, StoredValue, to_i64, to_u64,
};

/// Queues an account's change for the next epoch (in the change's own transaction).
pub(super) async fn enqueue(tx: &impl GenericClient, account: i64) -> Result<(), StoreError> {
    let st =
        tx.prepare_cached("INSERT INTO kt_pending (name) SELECT name FROM accounts WHERE id = $1").await?;
    tx.execute(&st, &[&account]).await?;
    Ok(())
}

fn to_epoch(r: &tokio_postgres::Row) -> Result<KtEpoch, StoreError> {
    let root: Vec<u8> = r.try_get(1)?;
    let signature: Vec<u8> = r.try_get(3)?;
    Ok(KtEpoch {
        epoch: to_u64(r.try_get(0)?),
        root: root
            .try_into()
            .map_err(|_| StoreError::Backend("a stored epoch root is not 32 bytes".into()))?,
        timestamp_ms: to_u64(r.try_get(2)?),
        signature: signature
            .try_into()
            .map_err(|_| StoreError::Backend("a stored epoch signature is not 64 bytes".into()))?,
        audit_proof: r.try_get(4)?,
    })
}

#[async_trait]
impl KtStore for PgStore {
    async fn kt_records(&self, ids: Vec<Vec<u8>>) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        let c = self.pool.get().await?;
        let st = c.prepare_cached("SELECT id, data FROM kt_records WHERE id = ANY($1)").await?;
        c.query(&st, &[&ids]).await?.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    async fn kt_values(&self, labels: Vec<Vec<u8>>) -> Result<Vec<StoredValue>, StoreError> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached(
                "SELECT label, epoch, version, node_label, value FROM kt_values WHERE label = ANY($1) \
                 ORDER BY label, epoch",
            )
            .await?;
        c.query(&st, &[&labels])
            .await?
            .iter()
            .map(|r| {
                Ok(StoredValue {
                    label: r.try_get(0)?,
                    epoch: to_u64(r.try_get(1)?),
                    version: to_u64(r.try_get(2)?),
                    node_label: r.try_get(3)?,
                    value: r.try_get(4)?,
                })
            })
            .collect()
    }

    async fn kt_write(&self, w: KtWrite) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        if let Some(epoch) = w.extends {
            // Locks the azks row: a second publisher waits here, then finds the epoch moved.
            let st = tx.prepare_cached("SELECT data FROM kt_records WHERE id = $1 FOR UPDATE").await?;
            let stored: Option<Vec<u8>> = tx
                .query_opt(&st, &[&crate::kt::records::AZKS_ID.as_slice()])
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
            if stored.as_deref().and_then(crate::kt::records::azks_epoch) != Some(epoch) {
                return Err(StoreError::Conflict);
            }
        }
        if !w.records.is_empty() {
            let (ids, data): (Vec<Vec<u8>>, Vec<Vec<u8>>) = w.records.into_iter().unzip();
            let st = tx
                .prepare_cached(
                    "INSERT INTO kt_records (id, data) SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) \
                     ON CONFLICT (id) DO UPDATE SET data = excluded.data",
                )
                .await?;
            tx.execute(&st, &[&ids, &data]).await?;
        }
        if !w.values.is_empty() {
            let labels: Vec<&[u8]> = w.values.iter().map(|v| v.label.as_slice()).collect();
            let epochs: Vec<i64> = w.values.iter().map(|v| to_i64(v.epoch)).collect();
            let versions: Vec<i64> = w.values.iter().map(|v| to_i64(v.version)).collect();
            let nodes: Vec<&[u8]> = w.values.iter().map(|v| v.node_label.as_slice()).collect();
            let values: Vec<&[u8]> = w.values.iter().map(|v| v.value.as_slice()).collect();
            let st = tx
                .prepare_cached(
                    "INSERT INTO kt_values (label, epoch, version, node_label, value) \
                     SELECT * FROM UNNEST($1::bytea[], $2::bigint[], $3::bigint[], $4::bytea[], $5::bytea[]) \
                     ON CONFLICT (label, epoch) DO UPDATE SET version = excluded.version, \
                     node_label = excluded.node_label, value = excluded.value",
                )
                .await?;
            tx.execute(&st, &[&labels, &epochs, &versions, &nodes, &values]).await?;
        }
        if !w.published.is_empty() {
            let st = tx.prepare_cached("DELETE FROM kt_pending WHERE seq = ANY($1)").await?;
            tx.execute(&st, &[&w.published]).await?;
        }
        if !w.published_devices.is_empty() {
            let (names, devices): (Vec<String>, Vec<String>) = w.published_devices.into_iter().unzip();
            let st = tx
                .prepare_cached(
                    "UPDATE accounts a SET kt_devices = u.devices FROM UNNEST($1::text[], $2::text[]) AS u(name, devices)                      WHERE a.name = u.name",
                )
                .await?;
            tx.execute(&st, &[&names, &devices]).await?;
        }
        #[cfg(feature = "malicious")]
        if w.extends.is_some()
            && let Some(pause) = crate::store::kt::pause_in_commit()
        {
            tokio::time::sleep(pause).await;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn kt_pending(&self, limit: usize) -> Result<Vec<(i64, String)>, StoreError> {
        let c = self.pool.get().await?;
        let st = c.prepare_cached("SELECT seq, name FROM kt_pending ORDER BY seq LIMIT $1").await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        c.query(&st, &[&limit]).await?.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    async fn kt_is_pending(&self, name: &str) -> Result<bool, StoreError> {
        let c = self.pool.get().await?;
        let st = c.prepare_cached("SELECT EXISTS (SELECT 1 FROM kt_pending WHERE name = $1)").await?;
        Ok(c.query_one(&st, &[&name]).await?.try_get(0)?)
    }

    async fn kt_current(&self, names: Vec<String>) -> Result<Vec<KtCurrent>, StoreError> {
        let c = self.pool.get().await?;
        // One statement, one snapshot: each list with its device rows.
        let st = c
            .prepare_cached(
                "SELECT name, device_list, (SELECT string_agg(device_id::text, ',') FROM devices d                  WHERE d.account_id = a.id) FROM accounts a WHERE name = ANY($1)",
            )
            .await?;
        c.query(&st, &[&names])
            .await?
            .iter()
            .map(|r| {
                Ok(KtCurrent {
                    name: r.try_get(0)?,
                    device_list: r.try_get(1)?,
                    devices: r.try_get::<_, Option<String>>(2)?.unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn kt_put_cosignature(&self, epoch: u64, co: KtCosignature) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached(
                "INSERT INTO kt_cosignatures (epoch, auditor, timestamp_ms, signature) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (epoch, auditor) DO UPDATE SET timestamp_ms = excluded.timestamp_ms, \
                 signature = excluded.signature WHERE excluded.timestamp_ms > kt_cosignatures.timestamp_ms",
            )
            .await?;
        c.execute(
            &st,
            &[&to_i64(epoch), &co.auditor.as_slice(), &to_i64(co.timestamp_ms), &co.signature.as_slice()],
        )
        .await?;
        Ok(())
    }

    async fn kt_cosignatures(&self, epoch: u64) -> Result<Vec<KtCosignature>, StoreError> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached(
                "SELECT auditor, timestamp_ms, signature FROM kt_cosignatures WHERE epoch = $1 ORDER BY auditor",
            )
            .await?;
        c.query(&st, &[&to_i64(epoch)])
            .await?
            .iter()
            .map(|r| crate::store::kt::to_cosignature(r.try_get(0)?, to_u64(r.try_get(1)?), r.try_get(2)?))
            .collect()
    }

    async fn kt_roots(&self, from: u64, limit: usize) -> Result<Vec<(u64, [u8; 32])>, StoreError> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached("SELECT epoch, root FROM kt_epochs WHERE epoch >= $1 ORDER BY epoch LIMIT $2")
            .await?;
        c.query(&st, &[&to_i64(from), &to_i64(limit as u64)])
            .await?
            .iter()
            .map(|r| {
                let root: Vec<u8> = r.try_get(1)?;
                let root = root
                    .try_into()
                    .map_err(|_| StoreError::Backend("a stored epoch root is not 32 bytes".into()))?;
                Ok((to_u64(r.try_get(0)?), root))
            })
            .collect()
    }

    async fn kt_put_epoch(&self, e: KtEpoch) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached(
                "INSERT INTO kt_epochs (epoch, root, timestamp_ms, signature, audit_proof) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (epoch) DO NOTHING",
            )
            .await?;
        c.execute(
            &st,
            &[
                &to_i64(e.epoch),
                &e.root.as_slice(),
                &to_i64(e.timestamp_ms),
                &e.signature.as_slice(),
                &e.audit_proof,
            ],
        )
        .await?;
        Ok(())
    }

    async fn kt_epoch(&self, epoch: u64) -> Result<Option<KtEpoch>, StoreError> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached(
                "SELECT epoch, root, timestamp_ms, signature, audit_proof FROM kt_epochs WHERE epoch = $1",
            )
            .await?;
        c.query_opt(&st, &[&to_i64(epoch)]).await?.as_ref().map(to_epoch).transpose()
    }

    async fn kt_latest_epoch(&self) -> Result<Option<KtEpoch>, StoreError> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached(
                "SELECT epoch, root, timestamp_ms, signature, audit_proof FROM kt_epochs ORDER BY epoch DESC LIMIT 1",
            )
            .await?;
        c.query_opt(&st, &[]).await?.as_ref().map(to_epoch).transpose()
    }

    async fn kt_newest_epoch(&self) -> Result<Option<u64>, StoreError> {
        let c = self.pool.get().await?;
        let st = c.prepare_cached("SELECT max(epoch) FROM kt_epochs").await?;
        Ok(c.query_one(&st, &[]).await?.try_get::<_, Option<i64>>(0)?.map(to_u64))
    }

    async fn kt_new_log(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(crate::store::kt::NEW_LOG_SQL).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn kt_setting(&self, name: &str, candidate: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached(
                "INSERT INTO kt_secrets (name, secret) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            )
            .await?;
        c.execute(&st, &[&name, &candidate]).await?;
        let st = c.prepare_cached("SELECT secret FROM kt_secrets WHERE name = $1").await?;
        let stored: Vec<u8> = c.query_one(&st, &[&name]).await?.try_get(0)?;
        Ok(stored)
    }
}
