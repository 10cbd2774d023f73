//! akd's `Database` trait over the server's store ([`KtStore`]). akd collects a publish's
//! records in its own transaction log and hands them over in one `batch_set`; that call is
//! one database transaction here, which also deletes the pending changes the epoch
//! publishes, so an epoch and the end of its pending changes commit together or not at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use akd::errors::StorageError;
use akd::storage::types::{
    DbRecord, KeyData, StorageType, ValueState, ValueStateKey, ValueStateRetrievalFlag,
};
use akd::storage::{Database, DbSetState, Storable};
use akd::{AkdLabel, AkdValue};
use async_trait::async_trait;

use super::records;
use crate::store::{KtStore, KtWrite, StoreError};

/// The pending changes an epoch publishes, and its lists' device ids by account name.
type Published = (Vec<i64>, Vec<(String, String)>);

/// akd's view of the store.
#[derive(Clone)]
pub struct AkdDb {
    store: Arc<dyn KtStore>,
    /// Set by the publisher before an epoch: the pending changes it publishes, and the
    /// device ids of the lists it publishes.
    published: Arc<Mutex<Published>>,
}

impl AkdDb {
    /// akd's view of `store`.
    pub fn new(store: Arc<dyn KtStore>) -> Self {
        Self { store, published: Arc::new(Mutex::new((Vec::new(), Vec::new()))) }
    }

    /// The next committed batch also ends these pending changes and records these lists'
    /// device ids as published.
    pub fn publishes(&self, seqs: Vec<i64>, devices: Vec<(String, String)>) {
        if let Ok(mut g) = self.published.lock() {
            *g = (seqs, devices);
        }
    }
}

fn storage(e: StoreError) -> StorageError {
    match e {
        StoreError::Unavailable(m) => StorageError::Connection(m),
        other => StorageError::Other(other.to_string()),
    }
}

fn corrupt(what: &str) -> StorageError {
    StorageError::Other(format!("a stored {what} does not decode"))
}

/// The state of `states` (sorted by epoch) that `flag` selects, as akd's reference
/// in-memory database selects it.
fn select(states: &[ValueState], flag: ValueStateRetrievalFlag) -> Option<&ValueState> {
    match flag {
        ValueStateRetrievalFlag::MaxEpoch => states.iter().max_by_key(|s| s.epoch),
        ValueStateRetrievalFlag::MinEpoch => states.iter().min_by_key(|s| s.epoch),
        ValueStateRetrievalFlag::SpecificVersion(v) => states.iter().find(|s| s.version == v),
        ValueStateRetrievalFlag::SpecificEpoch(e) => states.iter().find(|s| s.epoch == e),
        ValueStateRetrievalFlag::LeqEpoch(e) => {
            states.iter().filter(|s| s.epoch <= e).max_by_key(|s| s.epoch)
        }
    }
}

impl AkdDb {
    async fn states(
        &self,
        mut labels: Vec<Vec<u8>>,
    ) -> Result<HashMap<Vec<u8>, Vec<ValueState>>, StorageError> {
        // In key order, the store walks its index once instead of jumping about it.
        labels.sort_unstable();
        let rows = self.store.kt_values(labels).await.map_err(storage)?;
        let mut out: HashMap<Vec<u8>, Vec<ValueState>> = HashMap::new();
        for row in &rows {
            let state = records::value_state(row).map_err(|_| corrupt("value state"))?;
            out.entry(row.label.clone()).or_default().push(state);
        }
        for states in out.values_mut() {
            states.sort_by_key(|s| s.epoch);
        }
        Ok(out)
    }
}

#[async_trait]
impl Database for AkdDb {
    async fn set(&self, record: DbRecord) -> Result<(), StorageError> {
        self.batch_set(vec![record], DbSetState::General).await
    }

    async fn batch_set(&self, batch: Vec<DbRecord>, state: DbSetState) -> Result<(), StorageError> {
        let mut write = KtWrite::default();
        for record in &batch {
            match record {
                DbRecord::ValueState(v) => write.values.push(records::stored_value(v)),
                other => {
                    if let Some(data) = records::encode(other) {
                        write.records.push((other.get_full_binary_id(), data));
                    }
                }
            }
        }
        // In key order: an epoch touches tree nodes all over the table, and a B-tree takes
        // sorted keys page by page (each page read and written once) where random ones make
        // it fetch, dirty and spill the same pages again and again (issue 10's publish
        // benchmark: sorting took a 100,000-account epoch's commit from 2.33 s to 1.57 s).
        write.records.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        write.values.sort_unstable_by(|a, b| (&a.label, a.epoch).cmp(&(&b.label, b.epoch)));
        if matches!(state, DbSetState::TransactionCommit)
            && let Some(DbRecord::Azks(azks)) = batch.iter().find(|r| matches!(r, DbRecord::Azks(_)))
            && azks.latest_epoch > 0
        {
            write.extends = Some(azks.latest_epoch - 1);
        }
        if matches!(state, DbSetState::TransactionCommit) {
            (write.published, write.published_devices) =
                self.published.lock().map(|mut g| std::mem::take(&mut *g)).unwrap_or_default();
        }
        self.store.kt_write(write).await.map_err(storage)
    }

    async fn get<St: Storable>(&self, id: &St::StorageKey) -> Result<DbRecord, StorageError> {
        self.batch_get::<St>(std::slice::from_ref(id))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| StorageError::NotFound(format!("{:?} {id:?}", St::data_type())))
    }

    async fn batch_get<St: Storable>(&self, ids: &[St::StorageKey]) -> Result<Vec<DbRecord>, StorageError> {
        if St::data_type() == StorageType::ValueState {
            let keys = ids
                .iter()
                .filter_map(|id| ValueState::key_from_full_binary(&St::get_full_binary_key_id(id)).ok())
                .collect::<Vec<ValueStateKey>>();
            let states = self.states(keys.iter().map(|k| k.0.clone()).collect()).await?;
            return Ok(keys
                .iter()
                .filter_map(|ValueStateKey(label, epoch)| {
                    states.get(label).and_then(|s| s.iter().find(|s| s.epoch == *epoch))
                })
                .map(|s| DbRecord::ValueState(s.clone()))
                .collect());
        }
        let mut ids = ids.iter().map(St::get_full_binary_key_id).collect::<Vec<_>>();
        ids.sort_unstable();
        let rows = self.store.kt_records(ids).await.map_err(storage)?;
        rows.iter()
            .map(|(id, data)| records::decode(id, data).map_err(|_| corrupt("directory record")))
            .collect()
    }

    async fn get_user_data(&self, username: &AkdLabel) -> Result<KeyData, StorageError> {
        let mut states = self.states(vec![username.0.clone()]).await?;
        match states.remove(&username.0) {
            Some(states) if !states.is_empty() => Ok(KeyData { states }),
            _ => Err(StorageError::NotFound(format!("ValueState {username:?}"))),
        }
    }

    async fn get_user_state(
        &self,
        username: &AkdLabel,
        flag: ValueStateRetrievalFlag,
    ) -> Result<ValueState, StorageError> {
        let states = self.states(vec![username.0.clone()]).await?;
        states
            .get(&username.0)
            .and_then(|s| select(s, flag))
            .cloned()
            .ok_or_else(|| StorageError::NotFound(format!("ValueState {username:?}")))
    }

    async fn get_user_state_versions(
        &self,
        usernames: &[AkdLabel],
        flag: ValueStateRetrievalFlag,
    ) -> Result<HashMap<AkdLabel, (u64, AkdValue)>, StorageError> {
        let states = self.states(usernames.iter().map(|u| u.0.clone()).collect()).await?;
        Ok(usernames
            .iter()
            .filter_map(|u| {
                let s = select(states.get(&u.0)?, flag)?;
                Some((u.clone(), (s.version, s.value.clone())))
            })
            .collect())
    }
}
