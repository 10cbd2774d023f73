//! `POST /v1/accounts`: creates an account and its device 1 from public keys.

use axum::extract::{FromRequest, Request, State};
use tacit_api::{CreateAccountRequest, CreateAccountResponse};

use super::extract::{ApiJson, Peer};
use crate::error::Failure;
use crate::service::accounts;
use crate::state::AppState;

/// `POST /v1/accounts` [`CreateAccountRequest`] → [`CreateAccountResponse`].
pub(super) async fn handler(
    State(state): State<AppState>,
    Peer(peer): Peer,
    request: Request,
) -> Result<ApiJson<CreateAccountResponse>, Failure> {
    // The per-address creation budget is checked before the body is read.
    state.limit_account_creation(peer)?;
    let ApiJson(req) = ApiJson::<CreateAccountRequest>::from_request(request, &state).await?;
    accounts::create(&state, peer, req).await.map(ApiJson)
}
