//! `POST /v1/accounts`: creates an account and its device 1 from public keys.

use axum::extract::State;
use tacit_api::{CreateAccountRequest, CreateAccountResponse};

use super::extract::{ApiJson, Peer};
use crate::error::Failure;
use crate::service::accounts;
use crate::state::AppState;

/// `POST /v1/accounts` [`CreateAccountRequest`] → [`CreateAccountResponse`].
pub(super) async fn handler(
    State(state): State<AppState>,
    Peer(peer): Peer,
    ApiJson(req): ApiJson<CreateAccountRequest>,
) -> Result<ApiJson<CreateAccountResponse>, Failure> {
    accounts::create(&state, peer, req).await.map(ApiJson)
}
