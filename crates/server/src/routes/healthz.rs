//! `GET /healthz`: whether this node can serve (its store takes writes).

use axum::extract::State;

use crate::error::Failure;
use crate::state::AppState;

/// `GET /healthz` → `200 ok`, or `503 unavailable` when the store reports itself unhealthy
/// (SQLite writer thread gone or failing to commit, PostgreSQL not answering, or on either
/// writes waiting with none finished for [`crate::STALL_AFTER`]: a hung fsync).
pub(super) async fn handler(State(state): State<AppState>) -> Result<&'static str, Failure> {
    if state.store().healthy().await { Ok("ok") } else { Err(Failure::Unavailable) }
}
