//! An account's devices after its creation (issue 9): publishing a newer signed device list
//! (adding devices with their first prekeys, revoking others, rotating the account key),
//! the caller's view of its own devices, and logging a device out.
//!
//! A publish is checked against the stored list (key, version, devices, largest id ever
//! used) and stored only if that list is still the stored one (compare-and-set on its
//! version, in the transaction that applies it), so of two concurrent publishes exactly one
//! wins. Nothing is stored on any refusal.

use std::collections::HashMap;

use tacit_api::{DeviceListPublished, DeviceStatus, DeviceStatusResponse, PublishDeviceListRequest};
use tacit_protocol::{AccountKey, AccountName, DeviceList, DeviceListError, Signature};

use crate::error::Failure;
use crate::state::{AppState, now_ms};
use crate::store::{Authed, DeviceKey, ListState, ListUpdate, NewDevice, StoreError};

/// Most devices a list may add in one publish (`new_devices` entries).
const MAX_NEW_DEVICES: usize = 16;

/// `PUT /v1/accounts/{name}/devices`: a device of the account publishes a newer list.
pub async fn publish(
    state: &AppState,
    caller: &Authed,
    name: &str,
    req: PublishDeviceListRequest,
) -> Result<DeviceListPublished, Failure> {
    if caller.account != name {
        return Err(Failure::Forbidden);
    }
    if req.new_devices.len() > MAX_NEW_DEVICES {
        return Err(Failure::TooLarge("too many new devices in one list"));
    }
    let account = caller.key.account;
    let stored = state.store().list_state(account).await?.ok_or(Failure::NotFound)?;
    let name = AccountName::new(name).map_err(|_| Failure::NotFound)?;
    let update = super::blocking(move || check(&name, account, &stored, req)).await?;
    let removed = update.removed.clone();
    let version = update.version;
    state.store().publish_device_list(update).await.map_err(|e| match e {
        StoreError::Conflict => Failure::DeviceListConflict("the stored list changed meanwhile"),
        other => other.into(),
    })?;
    for device in removed {
        state.inner().open_sockets.end_device(DeviceKey { account, device });
    }
    tracing::info!(version, "device list published");
    Ok(DeviceListPublished { version })
}

/// Every check of a publish against the stored state; the update to apply.
fn check(
    name: &AccountName,
    account: crate::store::AccountId,
    stored: &ListState,
    req: PublishDeviceListRequest,
) -> Result<ListUpdate, Failure> {
    let key_bytes: [u8; 32] = stored
        .account_key
        .as_slice()
        .try_into()
        .map_err(|_| Failure::Internal("stored account key is not 32 bytes".into()))?;
    let stored_key = AccountKey::from_bytes(key_bytes)
        .map_err(|_| Failure::Internal("stored account key does not decode".into()))?;
    let bytes = req.device_list.as_slice();
    let bad = |_| Failure::BadRequest("device list does not verify for this account");
    let mut rotation_signature = None;
    let list = match DeviceList::verify(bytes, name, Some(&stored_key), None) {
        Ok(list) => list,
        Err(DeviceListError::AccountKeyChanged) => {
            // Signed by a new key: valid on its own, and the rotation signed by the stored key.
            let list = DeviceList::verify(bytes, name, None, None).map_err(bad)?;
            let sig: [u8; 64] = req
                .rotation_signature
                .as_ref()
                .ok_or(Failure::DeviceListConflict("a new account key needs a rotation signature"))?
                .as_slice()
                .try_into()
                .map_err(|_| Failure::BadRequest("rotation_signature is 64 bytes"))?;
            DeviceList::verify_rotation(&stored_key, bytes, &Signature::from_bytes(sig))
                .map_err(|_| Failure::DeviceListConflict("the rotation signature does not verify"))?;
            rotation_signature = Some(sig.to_vec());
            list
        }
        Err(e) => return Err(bad(e)),
    };
    if list.version() <= stored.version {
        return Err(Failure::DeviceListConflict("the version is not above the stored one"));
    }
    let mut prekeys: HashMap<u32, &tacit_api::PrekeyUploadRequest> = HashMap::new();
    for n in &req.new_devices {
        if prekeys.insert(n.device, &n.prekeys).is_some() {
            return Err(Failure::BadRequest("two new_devices entries for one device"));
        }
    }
    let current: HashMap<u32, &crate::store::DeviceRecord> =
        stored.devices.iter().map(|d| (d.device, d)).collect();
    let mut added = Vec::new();
    let mut max_device_id = stored.max_device_id;
    for entry in list.devices() {
        let id = entry.id.get();
        let identity = entry.identity.to_bytes();
        if let Some(existing) = current.get(&id) {
            if existing.identity != identity {
                return Err(Failure::DeviceListConflict("a listed device's identity changed"));
            }
            if prekeys.contains_key(&id) {
                return Err(Failure::BadRequest("new_devices names a device already listed"));
            }
            continue;
        }
        if id <= stored.max_device_id {
            return Err(Failure::DeviceListConflict("a device id is reused"));
        }
        let upload = prekeys
            .remove(&id)
            .ok_or(Failure::DeviceListConflict("an added device comes without its prekeys"))?;
        let keys = super::prekeys::verify_upload(&entry.identity, upload)?;
        let (Some(signed_prekey), Some(last_resort)) = (keys.signed_prekey, keys.last_resort) else {
            return Err(Failure::DeviceListConflict(
                "an added device needs its signed and last-resort prekeys",
            ));
        };
        max_device_id = max_device_id.max(id);
        added.push(NewDevice {
            device: id,
            identity,
            signed_prekey,
            last_resort,
            one_time: keys.one_time,
            kem_one_time: keys.kem_one_time,
        });
    }
    if !prekeys.is_empty() {
        return Err(Failure::BadRequest("new_devices names a device the list does not add"));
    }
    let removed: Vec<u32> = stored
        .devices
        .iter()
        .map(|d| d.device)
        .filter(|&d| tacit_protocol::DeviceId::new(d).is_none_or(|id| list.entry(id).is_none()))
        .collect();
    Ok(ListUpdate {
        account,
        previous_version: stored.version,
        account_key: list.account_key().as_bytes().to_vec(),
        device_list: req.device_list.0,
        rotation_signature,
        version: list.version(),
        max_device_id,
        added,
        removed,
        now_ms: now_ms(),
    })
}

/// `GET /v1/devices`: the caller's own devices as the server saw them.
pub async fn status(state: &AppState, caller: &Authed) -> Result<DeviceStatusResponse, Failure> {
    let stored = state.store().list_state(caller.key.account).await?.ok_or(Failure::NotFound)?;
    Ok(DeviceStatusResponse {
        max_device_id: stored.max_device_id,
        devices: stored
            .devices
            .into_iter()
            .map(|d| DeviceStatus {
                device: d.device,
                created_ms: d.created_ms,
                last_seen_ms: d.last_seen_ms,
                logged_out: d.logged_out,
            })
            .collect(),
    })
}

/// `DELETE /v1/devices/{device}`: a device logs itself out (and only itself).
pub async fn logout(state: &AppState, caller: &Authed, device: u32) -> Result<(), Failure> {
    if device != caller.key.device {
        return Err(Failure::Forbidden);
    }
    state.store().logout_device(caller.key).await?;
    state.inner().open_sockets.end_device(caller.key);
    tracing::info!("device logged out");
    Ok(())
}
