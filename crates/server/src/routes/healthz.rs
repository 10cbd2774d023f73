//! `GET /healthz`: liveness.

/// `GET /healthz` → `200 ok`.
pub(super) async fn handler() -> &'static str {
    "ok"
}
