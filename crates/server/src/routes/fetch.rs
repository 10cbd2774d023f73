//! `GET /v1/messages`: the caller's pending envelopes.

use axum::extract::State;
use tacit_api::FetchResponse;

use super::extract::{ApiJson, Auth};
use crate::error::Failure;
use crate::service::messages;
use crate::state::AppState;

/// `GET /v1/messages` (auth) → [`FetchResponse`], oldest first.
pub(super) async fn handler(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> Result<ApiJson<FetchResponse>, Failure> {
    messages::fetch(&state, &caller).await.map(ApiJson)
}
