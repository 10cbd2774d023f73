//! The prekey directory: upload (every signature checked against the device identity),
//! status with the "running low" signal, and bundle fetches that hand each one-time key out
//! exactly once (PQXDH section 3.2), rate-limited per requester.

use tacit_api::limits::{LOW_PREKEY_WATER, MAX_PREKEYS_PER_UPLOAD};
use tacit_api::{BundleResponse, PrekeyStatus, PrekeyUploadRequest};
use tacit_protocol::{
    AccountName, DeviceAddress, DeviceId, DevicePublic, KemPrekeyKind, KemPrekeyPublic, OneTimePrekeyPublic,
    PrekeyBundle, SignedPrekeyPublic,
};

use crate::error::Failure;
use crate::limiter::LimitKey;
use crate::state::AppState;
use crate::store::{Authed, DeviceKey, KeyRecord, PrekeyCounts, PrekeySet};

/// Decodes and verifies uploaded prekeys against the device's identity.
pub(crate) fn verify_upload(
    identity: &DevicePublic,
    req: &PrekeyUploadRequest,
) -> Result<PrekeySet, Failure> {
    if req.one_time.len() > MAX_PREKEYS_PER_UPLOAD || req.kem_one_time.len() > MAX_PREKEYS_PER_UPLOAD {
        return Err(Failure::TooLarge("too many one-time prekeys in one upload"));
    }
    let signed_prekey = match &req.signed_prekey {
        Some(b) => {
            let k = SignedPrekeyPublic::from_bytes(b.as_slice())
                .map_err(|_| Failure::BadRequest("malformed signed prekey"))?;
            k.verify(identity).map_err(|_| Failure::BadRequest("signed prekey signature does not verify"))?;
            Some(k.to_bytes())
        }
        None => None,
    };
    let last_resort = match &req.last_resort {
        Some(b) => Some(verify_kem(identity, b.as_slice(), KemPrekeyKind::LastResort)?.bytes),
        None => None,
    };
    let one_time = req
        .one_time
        .iter()
        .map(|b| {
            let k = OneTimePrekeyPublic::from_bytes(b.as_slice())
                .map_err(|_| Failure::BadRequest("malformed one-time prekey"))?;
            Ok(KeyRecord { key_id: k.id, bytes: k.to_bytes() })
        })
        .collect::<Result<_, Failure>>()?;
    let kem_one_time = req
        .kem_one_time
        .iter()
        .map(|b| verify_kem(identity, b.as_slice(), KemPrekeyKind::OneTime))
        .collect::<Result<_, Failure>>()?;
    Ok(PrekeySet { signed_prekey, last_resort, one_time, kem_one_time })
}

fn verify_kem(identity: &DevicePublic, bytes: &[u8], kind: KemPrekeyKind) -> Result<KeyRecord, Failure> {
    let k = KemPrekeyPublic::from_bytes(bytes).map_err(|_| Failure::BadRequest("malformed KEM prekey"))?;
    if k.kind != kind {
        return Err(Failure::BadRequest("KEM prekey of the wrong kind"));
    }
    k.verify(identity).map_err(|_| Failure::BadRequest("KEM prekey signature does not verify"))?;
    Ok(KeyRecord { key_id: k.id, bytes: k.to_bytes() })
}

fn status(c: PrekeyCounts) -> PrekeyStatus {
    PrekeyStatus {
        one_time: c.one_time,
        kem_one_time: c.kem_one_time,
        low: c.one_time < LOW_PREKEY_WATER || c.kem_one_time < LOW_PREKEY_WATER,
    }
}

/// Loads a stored device identity (verified when it was registered; re-checked here).
pub(crate) async fn identity(state: &AppState, device: DeviceKey) -> Result<DevicePublic, Failure> {
    let bytes = state.store().device_identity(device).await?.ok_or(Failure::NotFound)?;
    DevicePublic::from_bytes(&bytes)
        .map_err(|_| Failure::Internal("stored device identity does not decode".into()))
}

/// `PUT /v1/keys`: publishes the caller's prekeys.
pub async fn upload(
    state: &AppState,
    caller: &Authed,
    req: PrekeyUploadRequest,
) -> Result<PrekeyStatus, Failure> {
    let id = identity(state, caller.key).await?;
    let keys = super::blocking(move || verify_upload(&id, &req)).await?;
    Ok(status(state.store().put_prekeys(caller.key, keys).await?))
}

/// `GET /v1/keys`: how many one-time keys the caller's device has left.
pub async fn get_status(state: &AppState, caller: &Authed) -> Result<PrekeyStatus, Failure> {
    Ok(status(state.store().prekey_counts(caller.key).await?))
}

/// `GET /v1/keys/{name}/{device}`: one bundle, its one-time keys removed from the server.
pub async fn bundle(
    state: &AppState,
    caller: &Authed,
    name: &str,
    device: u32,
) -> Result<BundleResponse, Failure> {
    state.limit(LimitKey::Bundles(caller.key))?;
    let account = AccountName::new(name).map_err(|_| Failure::NotFound)?;
    let device_id = DeviceId::new(device).ok_or(Failure::NotFound)?;
    let record = state.store().account(name).await?.ok_or(Failure::NotFound)?;
    let parts = state
        .store()
        .take_bundle(DeviceKey { account: record.id, device })
        .await?
        .ok_or(Failure::NotFound)?;
    let corrupt = |_| Failure::Internal("stored prekey does not decode".into());
    let bundle = PrekeyBundle {
        address: DeviceAddress { account, device: device_id },
        identity: DevicePublic::from_bytes(&parts.identity).map_err(corrupt)?,
        signed_prekey: SignedPrekeyPublic::from_bytes(&parts.signed_prekey).map_err(corrupt)?,
        kem_prekey: KemPrekeyPublic::from_bytes(&parts.kem_prekey).map_err(corrupt)?,
        one_time_prekey: match parts.one_time {
            Some(b) => Some(OneTimePrekeyPublic::from_bytes(&b).map_err(corrupt)?),
            None => None,
        },
    };
    Ok(BundleResponse { bundle: bundle.to_bytes().into() })
}
