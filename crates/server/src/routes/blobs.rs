//! Blobs: `POST /v1/blobs`, `PUT`/`GET`/`DELETE /v1/blobs/{id}`, `GET /v1/blobs/{id}/status`.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tacit_api::{BlobOffset, BlobRange, BlobStatus, CreateBlobRequest};

use super::extract::{ApiJson, Auth, IdPath};
use crate::error::Failure;
use crate::service::blobs;
use crate::state::AppState;

/// `POST /v1/blobs` (auth) → [`BlobStatus`].
pub(super) async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(req): ApiJson<CreateBlobRequest>,
) -> Result<ApiJson<BlobStatus>, Failure> {
    blobs::create(&state, &caller, req).await.map(ApiJson)
}

/// `PUT /v1/blobs/{id}?offset=N` (auth), raw body → [`BlobStatus`].
pub(super) async fn put_chunk(
    State(state): State<AppState>,
    Auth(caller): Auth,
    IdPath(id): IdPath,
    query: Result<Query<BlobOffset>, QueryRejection>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<ApiJson<BlobStatus>, Failure> {
    let Query(query) = query.map_err(|_| Failure::BadRequest("malformed query (expected ?offset=N)"))?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Failure::TooLarge("blob chunk too large")
        } else {
            Failure::BadRequest("unreadable request body")
        }
    })?;
    blobs::put_chunk(&state, &caller, &id, query.offset, body.to_vec()).await.map(ApiJson)
}

/// `GET /v1/blobs/{id}?offset=N&len=M` (auth) → raw bytes.
pub(super) async fn read(
    State(state): State<AppState>,
    Auth(caller): Auth,
    IdPath(id): IdPath,
    query: Result<Query<BlobRange>, QueryRejection>,
) -> Result<Response, Failure> {
    let Query(q) = query.map_err(|_| Failure::BadRequest("malformed query (expected ?offset=N&len=M)"))?;
    let data = blobs::read(&state, &caller, &id, q.offset, q.len).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response())
}

/// `DELETE /v1/blobs/{id}` (auth) → `204`.
pub(super) async fn delete(
    State(state): State<AppState>,
    Auth(caller): Auth,
    IdPath(id): IdPath,
) -> Result<StatusCode, Failure> {
    blobs::delete(&state, &caller, &id).await.map(|()| StatusCode::NO_CONTENT)
}

/// `GET /v1/blobs/{id}/status` (auth) → [`BlobStatus`].
pub(super) async fn status(
    State(state): State<AppState>,
    Auth(caller): Auth,
    IdPath(id): IdPath,
) -> Result<ApiJson<BlobStatus>, Failure> {
    blobs::get_status(&state, &caller, &id).await.map(ApiJson)
}
