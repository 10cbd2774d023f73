//! `POST /v1/auth/challenge`: a single-use challenge for a device to sign.

use axum::extract::State;
use axum::http::{HeaderMap, header};
use tacit_api::{ChallengeRequest, ChallengeResponse};

use super::extract::{ApiJson, Peer};
use crate::error::Failure;
use crate::service::auth;
use crate::state::AppState;

/// `POST /v1/auth/challenge` [`ChallengeRequest`] → [`ChallengeResponse`].
pub(super) async fn handler(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ChallengeRequest>,
) -> Result<ApiJson<ChallengeResponse>, Failure> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    auth::challenge(&state, peer, host, req).await.map(ApiJson)
}
