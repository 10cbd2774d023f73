//! `GET /v1/accounts/{name}/devices`: an account's signed device list.

use axum::extract::State;
use tacit_api::DeviceListResponse;

use super::extract::{ApiJson, ApiPath};
use crate::error::Failure;
use crate::service::accounts;
use crate::state::AppState;

/// `GET /v1/accounts/{name}/devices` → [`DeviceListResponse`].
pub(super) async fn handler(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<ApiJson<DeviceListResponse>, Failure> {
    accounts::device_list(&state, &name).await.map(ApiJson)
}
