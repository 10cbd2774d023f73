//! Issue 9's device routes: `PUT /v1/accounts/{name}/devices` (publish a newer list),
//! `GET /v1/devices` (the caller's devices) and `DELETE /v1/devices/{device}` (log out).

use axum::extract::State;
use axum::http::StatusCode;
use tacit_api::{DeviceListPublished, DeviceStatusResponse, PublishDeviceListRequest};

use super::extract::{ApiJson, ApiPath, Auth};
use crate::error::Failure;
use crate::service::devices;
use crate::state::AppState;

/// `PUT /v1/accounts/{name}/devices` (auth, a device of the account) →
/// [`DeviceListPublished`]; `409 device_list_conflict` when not a valid successor.
pub(super) async fn publish(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<PublishDeviceListRequest>,
) -> Result<ApiJson<DeviceListPublished>, Failure> {
    devices::publish(&state, &caller, &name, req).await.map(ApiJson)
}

/// `GET /v1/devices` (auth) → [`DeviceStatusResponse`].
pub(super) async fn status(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> Result<ApiJson<DeviceStatusResponse>, Failure> {
    devices::status(&state, &caller).await.map(ApiJson)
}

/// `DELETE /v1/devices/{device}` (auth, the device itself) → `204`.
pub(super) async fn logout(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiPath(device): ApiPath<u32>,
) -> Result<StatusCode, Failure> {
    devices::logout(&state, &caller, device).await.map(|()| StatusCode::NO_CONTENT)
}
