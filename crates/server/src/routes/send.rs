//! `POST /v1/messages`: stores one envelope per recipient device, durably.

use axum::extract::State;
use tacit_api::{SendRequest, SendResponse};

use super::extract::{ApiJson, Auth};
use crate::error::Failure;
use crate::service::messages;
use crate::state::AppState;

/// `POST /v1/messages` (auth) [`SendRequest`] → [`SendResponse`] once durable, or `409`
/// [`tacit_api::MismatchedDevices`].
pub(super) async fn handler(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(req): ApiJson<SendRequest>,
) -> Result<ApiJson<SendResponse>, Failure> {
    messages::send(&state, caller, req).await.map(ApiJson)
}
