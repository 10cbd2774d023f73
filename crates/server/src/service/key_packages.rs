//! MLS KeyPackages for groups (issue 11), kept like one-time prekeys: uploaded by each
//! device, handed out once each (oldest first) with the last-resort one when none is left,
//! under the same rate limits as prekey bundles (per requester, and per target device for
//! the ones handed out once). They are opaque here: the server does not parse MLS. A
//! client checks every KeyPackage it is given (its credential against the account's
//! verified device list, its signatures, its suite) before adding it to a group, so a
//! server that hands out a wrong one is refused there; the server only bounds counts and
//! sizes.

use tacit_api::limits::{LOW_KEY_PACKAGE_WATER, MAX_KEY_PACKAGE_BYTES, MAX_KEY_PACKAGES_PER_UPLOAD};
use tacit_api::{KeyPackageResponse, KeyPackageStatus, KeyPackageUpload};
use tacit_protocol::{AccountName, DeviceId};

use crate::error::Failure;
use crate::limiter::LimitKey;
use crate::state::AppState;
use crate::store::{Authed, DeviceKey, KeyPackageCounts};

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
    state.limit(LimitKey::Bundles(caller.key))?;
    AccountName::new(name).map_err(|_| Failure::NotFound)?;
    DeviceId::new(device).ok_or(Failure::NotFound)?;
    let record = state.store().account(name).await?.ok_or(Failure::NotFound)?;
    let target = DeviceKey { account: record.id, device };
    let one_time = state.limit(LimitKey::OneTimeFetches(target)).is_ok();
    let taken = state.store().take_key_package(target, one_time).await?;
    let (key_package, last_resort) = taken.ok_or(Failure::NotFound)?;
    Ok(KeyPackageResponse { key_package: key_package.into(), last_resort })
}
