//! `GET /v1/accounts/{name}/devices`: an account's signed device list.

use axum::extract::State;
use tacit_api::DeviceListResponse;

use super::extract::{ApiJson, ApiPath, Peer};
use crate::error::Failure;
use crate::service::accounts;
use crate::state::AppState;

/// `GET /v1/accounts/{name}/devices` → [`DeviceListResponse`] (unauthenticated: counted
/// against the caller's per-address budget).
pub(super) async fn handler(
    State(state): State<AppState>,
    Peer(peer): Peer,
    ApiPath(name): ApiPath<String>,
) -> Result<ApiJson<DeviceListResponse>, Failure> {
    accounts::device_list(&state, peer, &name).await.map(ApiJson)
}
