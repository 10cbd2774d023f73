//! `GET /v1/ws`: the WebSocket for live delivery (authenticated by the bearer header).

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::http::HeaderMap;
use axum::response::Response;

use super::extract::Auth;
use crate::error::Failure;
use crate::listen::ConnectionSlot;
use crate::service::delivery;
use crate::state::AppState;

/// `GET /v1/ws` (auth) → `101` and [`tacit_api::ServerFrame`]s.
pub(super) async fn handler(
    State(state): State<AppState>,
    Auth(caller): Auth,
    headers: HeaderMap,
    slot: Option<Extension<ConnectionSlot>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, Failure> {
    let upgrade = upgrade.map_err(|_| Failure::BadRequest("expected a WebSocket upgrade"))?;
    if state.inner().shutdown.is_cancelled() {
        return Err(Failure::Unavailable);
    }
    // The token is checked again while the socket lives (it may expire or be deleted).
    let header = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let token = crate::service::auth::token_hash(header).ok_or(Failure::Unauthorized)?;
    let tracker = state.inner().sockets.clone();
    Ok(upgrade
        .read_buffer_size(delivery::READ_BUFFER)
        .max_message_size(delivery::MAX_CLIENT_FRAME)
        .max_frame_size(delivery::MAX_CLIENT_FRAME)
        .on_upgrade(move |socket| {
            tracker.track_future(async move {
                // The connection's slot under the server's connection cap lives as long as
                // the socket; a socket whose slot went to a newcomer ends where it is.
                match slot {
                    Some(Extension(slot)) => tokio::select! {
                        () = delivery::run(state, caller, token, socket) => {}
                        () = slot.evicted() => {}
                    },
                    None => delivery::run(state, caller, token, socket).await,
                }
            })
        }))
}
