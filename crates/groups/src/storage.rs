//! mls-rs's storage traits over memory the caller fills and drains: this crate does no
//! I/O. The SDK loads a group's stored state before an operation and, after it, writes
//! what changed in the same transaction as the messages the operation stored or sent, so
//! a crash leaves either the state before or the state after, never half of a merge.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use mls_rs::{GroupStateStorage, KeyPackageStorage};
use mls_rs_core::group::{EpochRecord, GroupState};
use mls_rs_core::key_package::KeyPackageData;
use zeroize::Zeroizing;

/// How many earlier epochs a group keeps, so messages sent just before a commit (and
/// delivered after it) still decrypt. Each holds that epoch's remaining message keys.
pub const MAX_PAST_EPOCHS: usize = 4;

#[derive(Default)]
pub(crate) struct GroupData {
    pub(crate) state: Option<Zeroizing<Vec<u8>>>,
    pub(crate) epochs: BTreeMap<u64, Zeroizing<Vec<u8>>>,
}

/// Group states held in memory for mls-rs.
#[derive(Clone, Default)]
pub(crate) struct StateStore {
    inner: Arc<Mutex<HashMap<Vec<u8>, GroupData>>>,
}

impl StateStore {
    fn lock(&self) -> MutexGuard<'_, HashMap<Vec<u8>, GroupData>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn put(&self, group_id: &[u8], data: GroupData) {
        self.lock().insert(group_id.to_vec(), data);
    }

    pub(crate) fn take(&self, group_id: &[u8]) -> Option<GroupData> {
        self.lock().remove(group_id)
    }
}

impl GroupStateStorage for StateStore {
    type Error = Infallible;

    fn state(&self, group_id: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, Self::Error> {
        Ok(self.lock().get(group_id).and_then(|g| g.state.clone()))
    }

    fn epoch(&self, group_id: &[u8], epoch_id: u64) -> Result<Option<Zeroizing<Vec<u8>>>, Self::Error> {
        Ok(self.lock().get(group_id).and_then(|g| g.epochs.get(&epoch_id).cloned()))
    }

    fn write(
        &mut self,
        state: GroupState,
        epoch_inserts: Vec<EpochRecord>,
        epoch_updates: Vec<EpochRecord>,
    ) -> Result<(), Self::Error> {
        let mut all = self.lock();
        let group = all.entry(state.id.clone()).or_default();
        group.state = Some(state.data);
        for record in epoch_inserts.into_iter().chain(epoch_updates) {
            group.epochs.insert(record.id, record.data);
        }
        while group.epochs.len() > MAX_PAST_EPOCHS {
            group.epochs.pop_first();
        }
        Ok(())
    }

    fn max_epoch_id(&self, group_id: &[u8]) -> Result<Option<u64>, Self::Error> {
        Ok(self.lock().get(group_id).and_then(|g| g.epochs.keys().next_back().copied()))
    }
}

/// Key package secrets held in memory for mls-rs: a new one is taken out for the caller
/// to store, and the one a Welcome needs is put in before joining.
#[derive(Clone, Default)]
pub(crate) struct KeyPackageStore {
    inner: Arc<Mutex<KeyPackages>>,
}

#[derive(Default)]
pub(crate) struct KeyPackages {
    pub(crate) held: HashMap<Vec<u8>, KeyPackageData>,
}

impl KeyPackageStore {
    pub(crate) fn lock(&self) -> MutexGuard<'_, KeyPackages> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl KeyPackageStorage for KeyPackageStore {
    type Error = Infallible;

    fn delete(&mut self, id: &[u8]) -> Result<(), Self::Error> {
        self.lock().held.remove(id);
        Ok(())
    }

    fn insert(&mut self, id: Vec<u8>, pkg: KeyPackageData) -> Result<(), Self::Error> {
        self.lock().held.insert(id, pkg);
        Ok(())
    }

    fn get(&self, id: &[u8]) -> Result<Option<KeyPackageData>, Self::Error> {
        Ok(self.lock().held.get(id).cloned())
    }
}
