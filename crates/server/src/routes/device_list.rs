//! `GET /v1/accounts/{name}/devices`: an account's signed device list; `GET
//! /v1/accounts/{name}/rotations`: the key rotations that led to it.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use tacit_api::{DeviceListResponse, RotationsQuery, RotationsResponse};

use super::extract::{ApiJson, ApiPath, Peer};
use crate::error::Failure;
use crate::service::accounts;
use crate::state::AppState;

/// `GET /v1/accounts/{name}/devices` → [`DeviceListResponse`] (unauthenticated: counted
/// against the caller's per-address budget).
pub(super) async fn handler(
    State(state): State<AppState>,
    Peer(peer): Peer,
    ApiPath(name): ApiPath<String>,
) -> Result<ApiJson<DeviceListResponse>, Failure> {
    accounts::device_list(&state, peer, &name).await.map(ApiJson)
}

/// `GET /v1/accounts/{name}/rotations[?after=VERSION]` → [`RotationsResponse`]
/// (unauthenticated, like the list itself).
pub(super) async fn rotations(
    State(state): State<AppState>,
    Peer(peer): Peer,
    ApiPath(name): ApiPath<String>,
    query: Result<Query<RotationsQuery>, QueryRejection>,
) -> Result<ApiJson<RotationsResponse>, Failure> {
    let Query(query) = query.map_err(|_| Failure::BadRequest("malformed query (expected ?after=VERSION)"))?;
    accounts::rotations(&state, peer, &name, query.after).await.map(ApiJson)
}
