//! `POST /v1/messages/ack`: deletes the caller's acknowledged envelopes.

use axum::extract::State;
use axum::http::StatusCode;
use tacit_api::AckRequest;

use super::extract::{ApiJson, Auth};
use crate::error::Failure;
use crate::service::messages;
use crate::state::AppState;

/// `POST /v1/messages/ack` (auth) [`AckRequest`] → `204`.
pub(super) async fn handler(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(req): ApiJson<AckRequest>,
) -> Result<StatusCode, Failure> {
    messages::ack(&state, &caller, req).await.map(|()| StatusCode::NO_CONTENT)
}
