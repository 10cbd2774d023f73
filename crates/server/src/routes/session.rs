//! `POST /v1/auth/session`: a signed challenge buys a bearer token.

use axum::extract::State;
use tacit_api::{SessionRequest, SessionResponse};

use super::extract::{ApiJson, Peer};
use crate::error::Failure;
use crate::service::auth;
use crate::state::AppState;

/// `POST /v1/auth/session` [`SessionRequest`] → [`SessionResponse`].
pub(super) async fn handler(
    State(state): State<AppState>,
    Peer(peer): Peer,
    ApiJson(req): ApiJson<SessionRequest>,
) -> Result<ApiJson<SessionResponse>, Failure> {
    auth::session(&state, peer, req).await.map(ApiJson)
}
