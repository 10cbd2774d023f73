//! `GET /v1/messages[?after=ID]`: the caller's pending envelopes.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use tacit_api::{FetchQuery, FetchResponse};

use super::extract::{ApiJson, Auth};
use crate::error::Failure;
use crate::service::messages;
use crate::state::AppState;

/// `GET /v1/messages` (auth, optional [`FetchQuery`]) → [`FetchResponse`], oldest first from
/// the cursor; a malformed query → `400 bad_request`.
pub(super) async fn handler(
    State(state): State<AppState>,
    Auth(caller): Auth,
    query: Result<Query<FetchQuery>, QueryRejection>,
) -> Result<ApiJson<FetchResponse>, Failure> {
    let Query(query) = query.map_err(|_| Failure::BadRequest("malformed query (expected ?after=ID)"))?;
    messages::fetch(&state, &caller, query.after).await.map(ApiJson)
}
