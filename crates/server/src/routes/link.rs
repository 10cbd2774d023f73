//! Link slots: `POST /v1/link`, `GET`/`DELETE /v1/link/{slot}`, `PUT`/`GET
//! /v1/link/{slot}/answer`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tacit_api::{LinkAnswerRequest, LinkOfferRequest, LinkOfferResponse, LinkWaitQuery};

use super::extract::{ApiJson, Auth, IdPath, Peer};
use crate::error::Failure;
use crate::service::link;
use crate::state::AppState;

/// `POST /v1/link` (no auth) → [`LinkOfferResponse`].
pub(super) async fn offer(
    State(state): State<AppState>,
    Peer(peer): Peer,
    ApiJson(req): ApiJson<LinkOfferRequest>,
) -> Result<ApiJson<LinkOfferResponse>, Failure> {
    link::offer(&state, peer, req).await.map(ApiJson)
}

/// `GET /v1/link/{slot}` (no auth) → [`LinkOfferResponse`].
pub(super) async fn get_offer(
    State(state): State<AppState>,
    Peer(peer): Peer,
    IdPath(slot): IdPath,
) -> Result<ApiJson<LinkOfferResponse>, Failure> {
    link::get_offer(&state, peer, &slot).await.map(ApiJson)
}

/// `DELETE /v1/link/{slot}` (no auth) → `204`.
pub(super) async fn delete(
    State(state): State<AppState>,
    Peer(peer): Peer,
    IdPath(slot): IdPath,
) -> Result<StatusCode, Failure> {
    link::delete(&state, peer, &slot).await.map(|()| StatusCode::NO_CONTENT)
}

/// `PUT /v1/link/{slot}/answer` (auth) → `204`.
pub(super) async fn answer(
    State(state): State<AppState>,
    Auth(caller): Auth,
    IdPath(slot): IdPath,
    ApiJson(req): ApiJson<LinkAnswerRequest>,
) -> Result<StatusCode, Failure> {
    link::answer(&state, &caller, &slot, req).await.map(|()| StatusCode::NO_CONTENT)
}

/// `GET /v1/link/{slot}/answer[?wait_secs=N]` (no auth) → [`tacit_api::LinkAnswerResponse`],
/// or `204` when none came within the wait.
pub(super) async fn wait_answer(
    State(state): State<AppState>,
    Peer(peer): Peer,
    IdPath(slot): IdPath,
    query: Result<Query<LinkWaitQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let Query(query) = query.map_err(|_| Failure::BadRequest("malformed query (expected ?wait_secs=N)"))?;
    Ok(match link::wait_answer(&state, peer, &slot, query.wait_secs).await? {
        Some(a) => ApiJson(a).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}
