//! What the groups tests share: accounts with devices and signed device lists.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)] // test code

use rand_chacha::ChaCha20Rng;
use tacit_groups::MemberId;
use tacit_protocol::{
    AccountIdentity, AccountName, DeviceAddress, DeviceEntry, DeviceId, DeviceIdentity, DeviceList,
};

/// An account: its key, its devices (the first one the approver) and its list's version.
pub struct Account {
    pub name: AccountName,
    pub key: AccountIdentity,
    pub devices: Vec<(DeviceId, DeviceIdentity)>,
    pub version: u64,
}

impl Account {
    /// `devices` new devices, numbered from 1.
    pub fn new(name: &str, devices: u32, rng: &mut ChaCha20Rng) -> Self {
        let devices = (1..=devices)
            .map(|i| (DeviceId::new(i).unwrap(), DeviceIdentity::generate(rng).unwrap()))
            .collect();
        Self {
            name: AccountName::new(name).unwrap(),
            key: AccountIdentity::generate(rng).unwrap(),
            devices,
            version: 0,
        }
    }

    /// The next version of the account's signed list, with its current devices.
    pub fn list(&mut self) -> DeviceList {
        self.version += 1;
        let entries = self
            .devices
            .iter()
            .enumerate()
            .map(|(i, (id, d))| DeviceEntry { approver: i == 0, ..DeviceEntry::new(*id, d.public().clone()) })
            .collect();
        DeviceList::sign(&self.key, self.name.clone(), self.version, entries).unwrap()
    }

    /// Device `i`'s address.
    pub fn address(&self, i: usize) -> DeviceAddress {
        DeviceAddress { account: self.name.clone(), device: self.devices[i].0 }
    }

    /// Device `i` as a group member.
    pub fn member(&self, i: usize) -> MemberId {
        MemberId::new(&self.address(i))
    }
}
