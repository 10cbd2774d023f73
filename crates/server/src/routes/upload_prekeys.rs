//! `PUT /v1/keys`: publishes the caller's prekeys.

use axum::extract::State;
use tacit_api::{PrekeyStatus, PrekeyUploadRequest};

use super::extract::{ApiJson, Auth};
use crate::error::Failure;
use crate::service::prekeys;
use crate::state::AppState;

/// `PUT /v1/keys` (auth) [`PrekeyUploadRequest`] → [`PrekeyStatus`].
pub(super) async fn handler(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(req): ApiJson<PrekeyUploadRequest>,
) -> Result<ApiJson<PrekeyStatus>, Failure> {
    prekeys::upload(&state, &caller, req).await.map(ApiJson)
}
