//! `/v1/groups/{group}`: MLS group delivery (issue 11).

use axum::extract::State;
use axum::http::StatusCode;
use tacit_api::{GroupCommitRequest, GroupMessageRequest, GroupStatus, SendResponse};

use super::extract::{ApiJson, ApiPath, Auth};
use crate::error::Failure;
use crate::service::groups;
use crate::state::AppState;

/// `GET /v1/groups/{group}` (auth) → [`GroupStatus`].
pub(super) async fn status(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiPath(group): ApiPath<String>,
) -> Result<ApiJson<GroupStatus>, Failure> {
    groups::status(&state, &caller, &group).await.map(ApiJson)
}

/// `POST /v1/groups/{group}/commits` (auth) [`GroupCommitRequest`] → [`SendResponse`].
pub(super) async fn commit(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiPath(group): ApiPath<String>,
    ApiJson(req): ApiJson<GroupCommitRequest>,
) -> Result<ApiJson<SendResponse>, Failure> {
    groups::commit(&state, caller, &group, req).await.map(ApiJson)
}

/// `POST /v1/groups/{group}/messages` (auth) [`GroupMessageRequest`] → [`SendResponse`].
pub(super) async fn message(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiPath(group): ApiPath<String>,
    ApiJson(req): ApiJson<GroupMessageRequest>,
) -> Result<ApiJson<SendResponse>, Failure> {
    groups::message(&state, caller, &group, req).await.map(ApiJson)
}

/// `DELETE /v1/groups/{group}/membership` (auth) → `204`.
pub(super) async fn leave(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiPath(group): ApiPath<String>,
) -> Result<StatusCode, Failure> {
    groups::leave(&state, &caller, &group).await.map(|()| StatusCode::NO_CONTENT)
}
