//! `DELETE /v1/accounts/{name}`: removes the caller's own account.

use axum::extract::State;
use axum::http::StatusCode;

use super::extract::{ApiPath, Auth};
use crate::error::Failure;
use crate::service::accounts;
use crate::state::AppState;

/// `DELETE /v1/accounts/{name}` (auth, own account) → `204`.
pub(super) async fn handler(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, Failure> {
    accounts::delete(&state, &caller, &name).await.map(|()| StatusCode::NO_CONTENT)
}
