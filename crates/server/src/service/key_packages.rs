//! MLS KeyPackages for groups (issue 11), kept like one-time prekeys: uploaded by each
//! device, handed out once each (oldest first) with the last-resort one when none is left,
//! under a per-target budget like prekey bundles' (so many requesters together cannot
//! drain a device) and a per-requester budget counted in devices, large enough for one
//! group of [`tacit_api::limits::MAX_GROUP_DEVICES`] at once (the bundles' 60 a minute
//! could not add more than about 30 two-device accounts). They are opaque here: the server does not parse MLS. A
//! client checks every KeyPackage it is given (its credential against the account's
//! verified device list, its signatures, its suite) before adding it to a group, so a
//! server that hands out a wrong one is refused there; the server only bounds counts and
//! sizes.

use std::collections::{HashMap, HashSet};

use tacit_api::limits::{
    LOW_KEY_PACKAGE_WATER, MAX_KEY_PACKAGE_BYTES, MAX_KEY_PACKAGE_CLAIM, MAX_KEY_PACKAGES_PER_UPLOAD,
};
use tacit_api::{
    ClaimedKeyPackage, KeyPackageClaim, KeyPackageClaimResponse, KeyPackageResponse, KeyPackageStatus,
    KeyPackageUpload,
};
use tacit_protocol::{AccountName, DeviceId};

use crate::error::Failure;
use crate::limiter::LimitKey;
use crate::state::AppState;
use crate::store::{AccountId, Authed, DeviceKey, KeyPackageCounts};

fn status(c: KeyPackageCounts) -> KeyPackageStatus {
    KeyPackageStatus {
        available: c.available,
        last_resort: c.last_resort,
        low: c.available < LOW_KEY_PACKAGE_WATER || !c.last_resort,
    }
}

/// `PUT /v1/key-packages`: adds the caller's KeyPackages.
pub async fn upload(
    state: &AppState,
    caller: &Authed,
    req: KeyPackageUpload,
) -> Result<KeyPackageStatus, Failure> {
    if req.key_packages.len() > MAX_KEY_PACKAGES_PER_UPLOAD {
        return Err(Failure::TooLarge("too many KeyPackages in one upload"));
    }
    let all = req.key_packages.iter().chain(req.last_resort.iter());
    for kp in all {
        if kp.as_slice().is_empty() || kp.as_slice().len() > MAX_KEY_PACKAGE_BYTES {
            return Err(Failure::BadRequest("a KeyPackage is empty or larger than the limit"));
        }
    }
    let key_packages = req.key_packages.into_iter().map(|b| b.as_slice().to_vec()).collect();
    let last_resort = req.last_resort.map(|b| b.as_slice().to_vec());
    Ok(status(state.store().put_key_packages(caller.key, key_packages, last_resort).await?))
}

/// `GET /v1/key-packages`: how many KeyPackages the caller's device has left.
pub async fn get_status(state: &AppState, caller: &Authed) -> Result<KeyPackageStatus, Failure> {
    Ok(status(state.store().key_package_counts(caller.key).await?))
}

/// `GET /v1/key-packages/{name}/{device}`: one KeyPackage of that device, removed from
/// the server unless it is the last-resort one. Over the target's budget of handed-out
/// keys (shared with prekey bundles), only the last-resort one is handed out, so many
/// requesters together cannot drain a device.
pub async fn take(
    state: &AppState,
    caller: &Authed,
    name: &str,
    device: u32,
) -> Result<KeyPackageResponse, Failure> {
    claim_budget(state, caller, 1)?;
    AccountName::new(name).map_err(|_| Failure::NotFound)?;
    DeviceId::new(device).ok_or(Failure::NotFound)?;
    let record = state.store().account(name).await?.ok_or(Failure::NotFound)?;
    let taken = take_one(state, DeviceKey { account: record.id, device }).await?;
    let (key_package, last_resort) = taken.ok_or(Failure::NotFound)?;
    Ok(KeyPackageResponse { key_package: key_package.into(), last_resort })
}

/// `POST /v1/key-packages/claim`: one KeyPackage of each device named, in order, each
/// handed out as by [`take`]; a device that has none, or is unknown, gets none. The whole
/// claim is counted against the caller's budget before anything is handed out.
pub async fn claim(
    state: &AppState,
    caller: &Authed,
    req: KeyPackageClaim,
) -> Result<KeyPackageClaimResponse, Failure> {
    if req.devices.len() > MAX_KEY_PACKAGE_CLAIM {
        return Err(Failure::TooLarge("too many devices in one KeyPackage claim"));
    }
    let mut seen = HashSet::with_capacity(req.devices.len());
    if !req.devices.iter().all(|d| seen.insert((d.account.as_str(), d.device))) {
        return Err(Failure::BadRequest("a device is named twice in a KeyPackage claim"));
    }
    claim_budget(state, caller, u32::try_from(req.devices.len()).unwrap_or(u32::MAX))?;
    let mut accounts: HashMap<String, Option<AccountId>> = HashMap::new();
    let mut key_packages = Vec::with_capacity(req.devices.len());
    for d in req.devices {
        let id = match accounts.get(&d.account) {
            Some(id) => *id,
            None => {
                let id = match AccountName::new(&d.account) {
                    Ok(_) => state.store().account(&d.account).await?.map(|r| r.id),
                    Err(_) => None,
                };
                accounts.insert(d.account.clone(), id);
                id
            }
        };
        let taken = match (id, DeviceId::new(d.device)) {
            (Some(account), Some(_)) => take_one(state, DeviceKey { account, device: d.device }).await?,
            _ => None,
        };
        let (key_package, last_resort) = match taken {
            Some((kp, last_resort)) => (Some(kp.into()), last_resort),
            None => (None, false),
        };
        key_packages.push(ClaimedKeyPackage {
            account: d.account,
            device: d.device,
            key_package,
            last_resort,
        });
    }
    Ok(KeyPackageClaimResponse { key_packages })
}

/// Counts `devices` KeyPackages against the caller's claim budget.
fn claim_budget(state: &AppState, caller: &Authed, devices: u32) -> Result<(), Failure> {
    state.limit_wait_n(LimitKey::KeyPackageClaims(caller.key), devices).map_err(|_| Failure::RateLimited)
}

/// One KeyPackage of `target`: a one-time one while the target's budget allows.
async fn take_one(state: &AppState, target: DeviceKey) -> Result<Option<(Vec<u8>, bool)>, Failure> {
    let one_time = state.limit(LimitKey::OneTimeFetches(target)).is_ok();
    Ok(state.store().take_key_package(target, one_time).await?)
}
