//! What the relay's group benches share (`fanout`, `delivery`): an opaque MLS
//! `PrivateMessage` frame and accounts made in the store directly.

use tacit_server::{Authed, DeviceKey, NewAccount, Store};

/// A `PrivateMessage` of `len` bytes whose header says `group`, `epoch` and `content_type`
/// (the relay reads nothing else).
pub fn frame(group: &[u8], epoch: u64, content_type: u8, len: usize) -> Vec<u8> {
    let mut m = vec![0, 1, 0, 2, group.len() as u8];
    m.extend_from_slice(group);
    m.extend_from_slice(&epoch.to_be_bytes());
    m.push(content_type);
    m.extend_from_slice(&[0, 1, 7, 0x40, 0x40]);
    m.resize(len, 9);
    m
}

/// An account named `name` with one device, made in the store (keys the relay never reads).
pub async fn account(store: &dyn Store, name: String) -> Authed {
    let id = store
        .create_account(NewAccount {
            name: name.clone(),
            account_key: vec![1; 32],
            device_list: vec![2; 200],
            device_list_version: 1,
            device_identity: vec![3; 100],
            signed_prekey: vec![4; 100],
            last_resort: vec![5; 1600],
            one_time: Vec::new(),
            kem_one_time: Vec::new(),
            now_ms: 1,
        })
        .await
        .unwrap();
    Authed { key: DeviceKey { account: id, device: 1 }, account: name }
}
