//! The prekey directory: upload (every signature checked against the device identity, but
//! an ML-KEM prekey the server already holds, byte for byte, is not checked twice; an
//! upload that names the device's full one-time set replaces it), status with the "running
//! low" signal, and bundle fetches that hand each one-time key out exactly once (PQXDH
//! section 3.2), rate-limited per requester and, for the one-time keys, per target device.
//! A fetch that leaves the target low tells the target's open sockets
//! ([`tacit_api::ServerFrame::PrekeysLow`]).

use std::collections::HashSet;

use tacit_api::limits::{LOW_PREKEY_WATER, MAX_PREKEYS_PER_UPLOAD, MAX_STORED_PREKEYS};
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
    verify_upload_except(identity, req, &HashSet::new())
}

/// Checks the counts of an upload (before any decoding).
fn check_sizes(req: &PrekeyUploadRequest) -> Result<(), Failure> {
    if req.one_time.len() > MAX_PREKEYS_PER_UPLOAD || req.kem_one_time.len() > MAX_PREKEYS_PER_UPLOAD {
        return Err(Failure::TooLarge("too many one-time prekeys in one upload"));
    }
    let ids = |l: &Option<Vec<u32>>| l.as_ref().map_or(0, Vec::len);
    if ids(&req.one_time_ids) > MAX_STORED_PREKEYS || ids(&req.kem_one_time_ids) > MAX_STORED_PREKEYS {
        return Err(Failure::TooLarge("too many one-time prekey ids in one upload"));
    }
    Ok(())
}

/// The ids of the ML-KEM prekeys in an upload (decoded only as far as the id), for
/// [`crate::store::Store::known_kem_prekeys`].
fn kem_ids(req: &PrekeyUploadRequest) -> Vec<u32> {
    req.kem_one_time
        .iter()
        .filter_map(|b| KemPrekeyPublic::from_bytes(b.as_slice()).ok())
        .map(|k| k.id)
        .collect()
}

/// [`verify_upload`], except that ML-KEM prekeys whose encoding is in `known` (stored
/// already, so verified against this identity when they were) are not verified again.
fn verify_upload_except(
    identity: &DevicePublic,
    req: &PrekeyUploadRequest,
    known: &HashSet<Vec<u8>>,
) -> Result<PrekeySet, Failure> {
    check_sizes(req)?;
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
        Some(b) => Some(verify_kem(identity, b.as_slice(), KemPrekeyKind::LastResort, known)?.bytes),
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
        .map(|b| verify_kem(identity, b.as_slice(), KemPrekeyKind::OneTime, known))
        .collect::<Result<_, Failure>>()?;
    Ok(PrekeySet {
        signed_prekey,
        last_resort,
        one_time,
        kem_one_time,
        keep_one_time: req.one_time_ids.clone(),
        keep_kem_one_time: req.kem_one_time_ids.clone(),
        state_counter: req.state_counter,
    })
}

fn verify_kem(
    identity: &DevicePublic,
    bytes: &[u8],
    kind: KemPrekeyKind,
    known: &HashSet<Vec<u8>>,
) -> Result<KeyRecord, Failure> {
    let k = KemPrekeyPublic::from_bytes(bytes).map_err(|_| Failure::BadRequest("malformed KEM prekey"))?;
    if k.kind != kind {
        return Err(Failure::BadRequest("KEM prekey of the wrong kind"));
    }
    let encoded = k.to_bytes();
    // A key stored already is exactly the bytes verified against this device's identity
    // when it was stored (a device's identity never changes): no second ML-KEM check.
    if !known.contains(&encoded) {
        k.verify(identity).map_err(|_| Failure::BadRequest("KEM prekey signature does not verify"))?;
    }
    Ok(KeyRecord { key_id: k.id, bytes: encoded })
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
    check_sizes(&req)?;
    let id = identity(state, caller.key).await?;
    let (req, known) = if req.kem_one_time.is_empty() && req.last_resort.is_none() {
        (req, HashSet::new())
    } else {
        // ML-KEM keys are parsed off the async workers.
        let (req, ids) = super::blocking(move || {
            let ids = kem_ids(&req);
            Ok((req, ids))
        })
        .await?;
        (req, state.store().known_kem_prekeys(caller.key, &ids).await?.into_iter().collect())
    };
    let keys = super::blocking(move || verify_upload_except(&id, &req, &known)).await?;
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
    let target = DeviceKey { account: record.id, device };
    // Over the target's budget, the bundle comes without one-time keys: a session can still
    // start (signed and last-resort prekeys), but many requesters together cannot drain it.
    let one_time = state.limit(LimitKey::OneTimeFetches(target)).is_ok();
    let parts = state.store().take_bundle(target, one_time).await?.ok_or(Failure::NotFound)?;
    // Only fetches that handed keys out tell (so at most the target's budget of them).
    if one_time && (parts.left.one_time < LOW_PREKEY_WATER || parts.left.kem_one_time < LOW_PREKEY_WATER) {
        state.inner().open_sockets.prekeys_low(target, parts.left.one_time, parts.left.kem_one_time);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tacit_protocol::{DeviceIdentity, DevicePrekeys, PrekeyPolicy, UnixTime};

    /// An ML-KEM prekey the store holds byte for byte is taken without a second signature
    /// check (shown with a key whose signature does not verify: refused unless known).
    #[test]
    fn a_known_kem_prekey_is_not_verified_again() {
        let mut rng = rand_core::OsRng;
        let device = DeviceIdentity::generate(&mut rng).unwrap();
        let mut prekeys = DevicePrekeys::new();
        let now = UnixTime(1_700_000_000);
        let policy = PrekeyPolicy { one_time_target: 1, one_time_low_water: 1, ..PrekeyPolicy::default() };
        let plan = prekeys.plan(now, &policy, 0, 0);
        let upload = prekeys.execute(&mut rng, &device, now, &plan).unwrap();
        let mut forged = upload.kem_one_time[0].to_bytes();
        // The signature is the encoding's last 64 bytes.
        *forged.last_mut().unwrap() ^= 1;
        let req = PrekeyUploadRequest {
            kem_one_time: vec![forged.clone().into()],
            ..PrekeyUploadRequest::default()
        };
        assert!(verify_upload(device.public(), &req).is_err(), "a bad signature is refused");
        assert_eq!(kem_ids(&req), vec![upload.kem_one_time[0].id]);
        let known: HashSet<Vec<u8>> = [forged].into_iter().collect();
        let set = verify_upload_except(device.public(), &req, &known).unwrap();
        assert_eq!(set.kem_one_time.len(), 1);
    }
}
