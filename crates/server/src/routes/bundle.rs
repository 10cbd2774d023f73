//! `GET /v1/keys/{name}/{device}`: a prekey bundle, handing one-time keys out once.

use axum::extract::State;
use tacit_api::BundleResponse;

use super::extract::{ApiJson, ApiPath, Auth};
use crate::error::Failure;
use crate::service::prekeys;
use crate::state::AppState;

/// `GET /v1/keys/{name}/{device}` (auth) → [`BundleResponse`].
pub(super) async fn handler(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiPath((name, device)): ApiPath<(String, u32)>,
) -> Result<ApiJson<BundleResponse>, Failure> {
    prekeys::bundle(&state, &caller, &name, device).await.map(ApiJson)
}
