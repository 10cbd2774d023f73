//! The device lists a device has verified, as the MLS identity provider sees them.
//!
//! MLS asks, for every leaf it meets (a KeyPackage added, a leaf in a Welcome's tree, a
//! leaf a commit's path replaces), whether that signing identity is a valid member. Tacit's
//! answer: the credential names an account and device ([`MemberId`]), and the account's
//! verified, signed device list (checked against its key transparency proof by the client
//! before it is put here) lists that device with exactly this signing key. The lists are
//! the caller's: the SDK inserts what it verified; this crate does no I/O. A leaf of an
//! account the directory does not hold is refused and the account recorded as
//! [`Directory::take_missing`], so the caller can fetch and verify its list and try again.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tacit_protocol::{AccountName, DeviceId, DeviceList};

use crate::MemberId;

/// What the directory says about a leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The account's list has the device with this signing key.
    Listed,
    /// The account's list does not have the device, or has it with another key.
    NotListed,
    /// No list of the account is held.
    UnknownAccount,
}

#[derive(Default)]
struct Inner {
    /// Per account, its devices' Ed25519 signing keys.
    accounts: HashMap<AccountName, HashMap<DeviceId, [u8; 32]>>,
}

/// A shared, cheaply cloned view of verified device lists.
#[derive(Clone, Default)]
pub struct Directory {
    inner: Arc<RwLock<Inner>>,
    missing: Arc<Mutex<BTreeSet<AccountName>>>,
}

impl Directory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Holds `list` as its account's current list (replacing an earlier one). The caller
    /// must have verified it (signature, no rollback, transparency).
    pub fn insert(&self, list: &DeviceList) {
        let devices =
            list.devices().iter().map(|entry| (entry.id, *entry.identity.signing_key().as_bytes())).collect();
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.accounts.insert(list.account().clone(), devices);
    }

    /// Forgets an account's list.
    pub fn remove(&self, account: &AccountName) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.accounts.remove(account);
    }

    /// Whether a list of `account` is held.
    pub fn has(&self, account: &AccountName) -> bool {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.accounts.contains_key(account)
    }

    /// Checks a leaf: its member and its signature key.
    pub fn lookup(&self, member: &MemberId, signature_key: &[u8]) -> Lookup {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        match inner.accounts.get(&member.account) {
            None => {
                drop(inner);
                self.missing.lock().unwrap_or_else(PoisonError::into_inner).insert(member.account.clone());
                Lookup::UnknownAccount
            }
            Some(devices) => match devices.get(&member.device) {
                Some(key) if key.as_slice() == signature_key => Lookup::Listed,
                _ => Lookup::NotListed,
            },
        }
    }

    /// The accounts asked for and not held since the last call, cleared.
    pub fn take_missing(&self) -> Vec<AccountName> {
        std::mem::take(&mut *self.missing.lock().unwrap_or_else(PoisonError::into_inner))
            .into_iter()
            .collect()
    }
}
