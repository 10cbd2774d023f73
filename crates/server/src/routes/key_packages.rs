//! `/v1/key-packages`: MLS KeyPackages for groups (upload, status, hand-out).

use axum::extract::State;
use tacit_api::{
    KeyPackageClaim, KeyPackageClaimResponse, KeyPackageResponse, KeyPackageStatus, KeyPackageUpload,
};

use super::extract::{ApiJson, ApiPath, Auth};
use crate::error::Failure;
use crate::service::key_packages;
use crate::state::AppState;

/// `PUT /v1/key-packages` (auth) [`KeyPackageUpload`] → [`KeyPackageStatus`].
pub(super) async fn upload(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(req): ApiJson<KeyPackageUpload>,
) -> Result<ApiJson<KeyPackageStatus>, Failure> {
    key_packages::upload(&state, &caller, req).await.map(ApiJson)
}

/// `GET /v1/key-packages` (auth) → [`KeyPackageStatus`].
pub(super) async fn status(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> Result<ApiJson<KeyPackageStatus>, Failure> {
    key_packages::get_status(&state, &caller).await.map(ApiJson)
}

/// `GET /v1/key-packages/{name}/{device}` (auth) → [`KeyPackageResponse`].
pub(super) async fn take(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiPath((name, device)): ApiPath<(String, u32)>,
) -> Result<ApiJson<KeyPackageResponse>, Failure> {
    key_packages::take(&state, &caller, &name, device).await.map(ApiJson)
}

/// `POST /v1/key-packages/claim` (auth) [`KeyPackageClaim`] → [`KeyPackageClaimResponse`].
pub(super) async fn claim(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(req): ApiJson<KeyPackageClaim>,
) -> Result<ApiJson<KeyPackageClaimResponse>, Failure> {
    key_packages::claim(&state, &caller, req).await.map(ApiJson)
}
