//! The key transparency routes (`GET /v1/kt...`): thin handlers over
//! [`crate::service::transparency`].

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use tacit_api::{KtInfo, KtProofResponse, SignedRootWire};

use super::extract::{ApiJson, ApiPath, Peer};
use crate::error::Failure;
use crate::service::transparency;
use crate::state::AppState;

/// `GET /v1/kt` → [`KtInfo`].
pub(super) async fn info(
    State(state): State<AppState>,
    Peer(peer): Peer,
) -> Result<ApiJson<KtInfo>, Failure> {
    transparency::info(&state, peer).map(ApiJson)
}

/// `GET /v1/kt/epochs/{epoch}` → [`SignedRootWire`].
pub(super) async fn epoch(
    State(state): State<AppState>,
    Peer(peer): Peer,
    ApiPath(epoch): ApiPath<String>,
) -> Result<ApiJson<SignedRootWire>, Failure> {
    transparency::epoch(&state, peer, &epoch).await.map(ApiJson)
}

/// `GET /v1/kt/epochs/{epoch}/audit` → the raw append-only proof.
pub(super) async fn audit(
    State(state): State<AppState>,
    Peer(peer): Peer,
    ApiPath(epoch): ApiPath<String>,
) -> Result<impl IntoResponse, Failure> {
    let proof = transparency::audit(&state, peer, &epoch).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], proof))
}

/// `GET /{epoch}/{previous}/{current}` → the raw append-only proof, by akd's blob name.
pub(super) async fn blob(
    State(state): State<AppState>,
    Peer(peer): Peer,
    ApiPath((epoch, previous, current)): ApiPath<(String, String, String)>,
) -> Result<impl IntoResponse, Failure> {
    let proof = transparency::blob(&state, peer, &epoch, &previous, &current).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], proof))
}

/// `GET /v1/kt/lookup/{name}` → [`KtProofResponse`].
pub(super) async fn lookup(
    State(state): State<AppState>,
    Peer(peer): Peer,
    ApiPath(name): ApiPath<String>,
) -> Result<ApiJson<KtProofResponse>, Failure> {
    transparency::proof(&state, peer, &name, false).await.map(ApiJson)
}

/// `GET /v1/kt/history/{name}` → [`KtProofResponse`].
pub(super) async fn history(
    State(state): State<AppState>,
    Peer(peer): Peer,
    ApiPath(name): ApiPath<String>,
) -> Result<ApiJson<KtProofResponse>, Failure> {
    transparency::proof(&state, peer, &name, true).await.map(ApiJson)
}
