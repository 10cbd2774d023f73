//! `GET /v1/keys`: the caller's one-time key counts and the "running low" signal.

use axum::extract::State;
use tacit_api::PrekeyStatus;

use super::extract::{ApiJson, Auth};
use crate::error::Failure;
use crate::service::prekeys;
use crate::state::AppState;

/// `GET /v1/keys` (auth) → [`PrekeyStatus`].
pub(super) async fn handler(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> Result<ApiJson<PrekeyStatus>, Failure> {
    prekeys::get_status(&state, &caller).await.map(ApiJson)
}
