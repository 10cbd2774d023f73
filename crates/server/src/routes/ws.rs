//! `GET /v1/ws`: the WebSocket for live delivery (authenticated by the bearer header).

use axum::extract::State;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::response::Response;

use super::extract::Auth;
use crate::error::Failure;
use crate::service::delivery;
use crate::state::AppState;

/// `GET /v1/ws` (auth) → `101` and [`tacit_api::ServerFrame`]s.
pub(super) async fn handler(
    State(state): State<AppState>,
    Auth(caller): Auth,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, Failure> {
    let upgrade = upgrade.map_err(|_| Failure::BadRequest("expected a WebSocket upgrade"))?;
    if state.inner().shutdown.is_cancelled() {
        return Err(Failure::Unavailable);
    }
    let tracker = state.inner().sockets.clone();
    Ok(upgrade
        .read_buffer_size(delivery::READ_BUFFER)
        .max_message_size(delivery::MAX_CLIENT_FRAME)
        .max_frame_size(delivery::MAX_CLIENT_FRAME)
        .on_upgrade(move |socket| tracker.track_future(delivery::run(state, caller, socket))))
}
