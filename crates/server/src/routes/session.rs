//! `POST /v1/auth/session`: a signed challenge buys a bearer token.

use axum::extract::State;
use axum::http::{HeaderMap, header};
use tacit_api::{SessionRequest, SessionResponse};

use super::extract::{ApiJson, Peer};
use crate::error::Failure;
use crate::service::auth;
use crate::state::AppState;

/// `POST /v1/auth/session` [`SessionRequest`] → [`SessionResponse`].
pub(super) async fn handler(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    ApiJson(req): ApiJson<SessionRequest>,
) -> Result<ApiJson<SessionResponse>, Failure> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    auth::session(&state, peer, host, req).await.map(ApiJson)
}
