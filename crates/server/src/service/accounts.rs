//! Accounts: created from public keys only (an account-signed device list naming exactly
//! device 1, and that device's signed prekeys), read back as the signed device list,
//! deleted by their own device.

use tacit_api::{
    CreateAccountRequest, CreateAccountResponse, DeviceListResponse, Rotation, RotationsResponse,
};
use tacit_protocol::{AccountKey, AccountName, DeviceList};

use crate::crypto::{ct_eq, sha256};
use crate::error::Failure;
use crate::state::{AppState, now_ms};
use crate::store::{Authed, NewAccount};

/// `POST /v1/accounts`.
pub async fn create(
    state: &AppState,
    peer: Option<std::net::IpAddr>,
    req: CreateAccountRequest,
) -> Result<CreateAccountResponse, Failure> {
    state.limit_address(peer)?;
    if let Some(want) = &state.inner().registration_token_hash {
        match req.registration_token.as_deref() {
            None => return Err(Failure::RegistrationClosed),
            Some(t) if !ct_eq(&sha256(t.as_bytes()), want) => return Err(Failure::WrongRegistrationToken),
            Some(_) => {}
        }
    }
    let name = AccountName::new(&req.name).map_err(|_| Failure::BadName)?;
    let key_bytes: [u8; 32] =
        req.account_key.as_slice().try_into().map_err(|_| Failure::BadRequest("account_key is 32 bytes"))?;
    let account_key =
        AccountKey::from_bytes(key_bytes).map_err(|_| Failure::BadRequest("invalid account key"))?;
    let new = super::blocking(move || {
        let list = DeviceList::verify(req.device_list.as_slice(), &name, Some(&account_key), None)
            .map_err(|_| Failure::BadRequest("device list does not verify for this name and account key"))?;
        let [entry] = list.devices() else {
            return Err(Failure::BadRequest("a new account's device list names exactly device 1"));
        };
        if entry.id.get() != 1 {
            return Err(Failure::BadRequest("a new account's device list names exactly device 1"));
        }
        let keys = super::prekeys::verify_upload(&entry.identity, &req.prekeys)?;
        Ok(NewAccount {
            name: name.as_str().to_owned(),
            account_key: key_bytes.to_vec(),
            device_list: req.device_list.0.clone(),
            device_list_version: list.version(),
            device_identity: entry.identity.to_bytes(),
            signed_prekey: keys
                .signed_prekey
                .ok_or(Failure::BadRequest("a new device needs a signed prekey"))?,
            last_resort: keys
                .last_resort
                .ok_or(Failure::BadRequest("a new device needs a last-resort KEM prekey"))?,
            one_time: keys.one_time,
            kem_one_time: keys.kem_one_time,
            now_ms: now_ms(),
        })
    })
    .await?;
    state.store().create_account(new).await?;
    tracing::info!("account created");
    Ok(CreateAccountResponse { device: 1 })
}

/// `GET /v1/accounts/{name}/devices`: public, so counted against the caller's per-address
/// budget before anything is read (the store serves it on connections token look-ups never
/// wait for).
pub async fn device_list(
    state: &AppState,
    peer: Option<std::net::IpAddr>,
    name: &str,
) -> Result<DeviceListResponse, Failure> {
    state.limit_address(peer)?;
    AccountName::new(name).map_err(|_| Failure::NotFound)?;
    let record = state.store().account(name).await?.ok_or(Failure::NotFound)?;
    Ok(DeviceListResponse { device_list: record.device_list.into() })
}

/// `GET /v1/accounts/{name}/rotations?after=VERSION`: the account's key rotations after
/// that list version, oldest first, a page at a time.
pub async fn rotations(
    state: &AppState,
    peer: Option<std::net::IpAddr>,
    name: &str,
    after: u64,
) -> Result<RotationsResponse, Failure> {
    state.limit_address(peer)?;
    AccountName::new(name).map_err(|_| Failure::NotFound)?;
    let record = state.store().account(name).await?.ok_or(Failure::NotFound)?;
    let page = tacit_api::limits::MAX_ROTATIONS_PER_PAGE;
    let mut rows = state.store().rotations(record.id, after, page + 1).await?;
    let more = rows.len() > page;
    rows.truncate(page);
    Ok(RotationsResponse {
        rotations: rows
            .into_iter()
            .map(|r| Rotation { device_list: r.device_list.into(), rotation_signature: r.signature.into() })
            .collect(),
        more,
    })
}

/// `DELETE /v1/accounts/{name}`: only the account's own devices may delete it.
pub async fn delete(state: &AppState, caller: &Authed, name: &str) -> Result<(), Failure> {
    if caller.account != name {
        return Err(Failure::Forbidden);
    }
    state.store().delete_account(caller.key.account).await?;
    state.inner().open_sockets.end_account(caller.key.account);
    tracing::info!("account deleted");
    Ok(())
}
