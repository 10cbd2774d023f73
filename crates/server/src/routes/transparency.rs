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

/// The requesting account, for a lying directory that lies to one client only (feature
/// `malicious`); nothing otherwise.
#[cfg(feature = "malicious")]
macro_rules! who {
    ($state:expr, $headers:expr) => {
        transparency::requester(&$state, &$headers).await
    };
}
#[cfg(not(feature = "malicious"))]
macro_rules! who {
    ($state:expr, $headers:expr) => {
        ()
    };
}

/// `GET /v1/kt` → [`KtInfo`].
pub(super) async fn info(
    State(state): State<AppState>,
    Peer(peer): Peer,
    #[cfg(feature = "malicious")] headers: axum::http::HeaderMap,
) -> Result<ApiJson<KtInfo>, Failure> {
    transparency::info(&state, peer, who!(state, headers)).await.map(ApiJson)
}

/// `GET /v1/kt/epochs/{epoch}` → [`SignedRootWire`].
pub(super) async fn epoch(
    State(state): State<AppState>,
    Peer(peer): Peer,
    #[cfg(feature = "malicious")] headers: axum::http::HeaderMap,
    ApiPath(epoch): ApiPath<String>,
) -> Result<ApiJson<SignedRootWire>, Failure> {
    transparency::epoch(&state, peer, &epoch, who!(state, headers)).await.map(ApiJson)
}

/// `GET /v1/kt/epochs/{epoch}/audit` → the raw append-only proof.
pub(super) async fn audit(
    State(state): State<AppState>,
    Peer(peer): Peer,
    #[cfg(feature = "malicious")] headers: axum::http::HeaderMap,
    ApiPath(epoch): ApiPath<String>,
) -> Result<impl IntoResponse, Failure> {
    let proof = transparency::audit(&state, peer, &epoch, who!(state, headers)).await?;
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
    #[cfg(feature = "malicious")] headers: axum::http::HeaderMap,
    ApiPath(name): ApiPath<String>,
) -> Result<ApiJson<KtProofResponse>, Failure> {
    transparency::proof(&state, peer, &name, false, who!(state, headers)).await.map(ApiJson)
}

/// `GET /v1/kt/history/{name}` → [`KtProofResponse`].
pub(super) async fn history(
    State(state): State<AppState>,
    Peer(peer): Peer,
    #[cfg(feature = "malicious")] headers: axum::http::HeaderMap,
    ApiPath(name): ApiPath<String>,
) -> Result<ApiJson<KtProofResponse>, Failure> {
    transparency::proof(&state, peer, &name, true, who!(state, headers)).await.map(ApiJson)
}

/// `PUT /v1/kt/epochs/{epoch}/cosignatures` → `204`.
pub(super) async fn cosign(
    State(state): State<AppState>,
    Peer(peer): Peer,
    ApiPath(epoch): ApiPath<String>,
    ApiJson(req): ApiJson<tacit_api::KtCosignatureWire>,
) -> Result<axum::http::StatusCode, Failure> {
    transparency::cosign(&state, peer, &epoch, req).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// `GET /?list-type=2` → the audit blobs, listed as S3 lists a bucket (XML).
pub(super) async fn listing(
    State(state): State<AppState>,
    Peer(peer): Peer,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<impl IntoResponse, Failure> {
    let xml = transparency::listing(&state, peer, query.as_deref()).await?;
    Ok(([(header::CONTENT_TYPE, "application/xml")], xml))
}
