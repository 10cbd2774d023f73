//! HTTP routes: one endpoint per file, each a thin handler (decode → service → encode).
//! [`app`] builds the router so tests can drive it.

mod ack;
mod blobs;
mod bundle;
mod challenge;
mod create_account;
mod delete_account;
mod device_list;
mod devices;
pub(crate) mod extract;
mod fetch;
mod groups;
mod healthz;
mod key_packages;
mod link;
mod prekey_status;
mod send;
mod session;
mod transparency;
mod upload_prekeys;
mod ws;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use tacit_api::limits::{MAX_BLOB_CHUNK_BYTES, MAX_GROUP_COMMIT_REQUEST_BYTES, MAX_REQUEST_BYTES};

use crate::error::Failure;
use crate::state::AppState;

/// The whole HTTP surface of [`tacit_api`]'s routes, with body limits, version check,
/// request logging, timeouts and a panic guard.
pub fn app(state: AppState) -> Router {
    let v1 = Router::new()
        .route(tacit_api::ACCOUNTS, post(create_account::handler))
        .route(tacit_api::ACCOUNT, delete(delete_account::handler))
        .route(tacit_api::DEVICE_LIST, get(device_list::handler).put(devices::publish))
        .route(tacit_api::ROTATIONS, get(device_list::rotations))
        .route(tacit_api::KT, get(transparency::info))
        .route(tacit_api::KT_EPOCH, get(transparency::epoch))
        .route(tacit_api::KT_AUDIT, get(transparency::audit))
        .route(tacit_api::KT_COSIGNATURES, put(transparency::cosign))
        .route(tacit_api::KT_LOOKUP, get(transparency::lookup))
        .route(tacit_api::KT_HISTORY, get(transparency::history))
        .route(tacit_api::DEVICES, get(devices::status))
        .route(tacit_api::DEVICE, delete(devices::logout))
        .route(tacit_api::LINK, post(link::offer))
        .route(tacit_api::LINK_SLOT, get(link::get_offer).delete(link::delete))
        .route(tacit_api::LINK_ANSWER, put(link::answer).get(link::wait_answer))
        .route(tacit_api::BLOBS, post(blobs::create))
        .route(
            tacit_api::BLOB,
            // A full chunk is the whole body (no JSON around it): its own limit.
            put(blobs::put_chunk)
                .layer(DefaultBodyLimit::max(MAX_BLOB_CHUNK_BYTES))
                .get(blobs::read)
                .delete(blobs::delete),
        )
        .route(tacit_api::BLOB_STATUS, get(blobs::status))
        .route(tacit_api::AUTH_CHALLENGE, post(challenge::handler))
        .route(tacit_api::AUTH_SESSION, post(session::handler))
        .route(tacit_api::PREKEYS, put(upload_prekeys::handler).get(prekey_status::handler))
        .route(tacit_api::BUNDLE, get(bundle::handler))
        .route(tacit_api::KEY_PACKAGES, put(key_packages::upload).get(key_packages::status))
        .route(tacit_api::KEY_PACKAGE_CLAIM, post(key_packages::claim))
        .route(tacit_api::KEY_PACKAGE, get(key_packages::take))
        .route(tacit_api::GROUP, get(groups::status))
        .route(
            tacit_api::GROUP_COMMITS,
            // A commit adding thousands of devices carries its Welcome and tree: its own limit.
            post(groups::commit).layer(DefaultBodyLimit::max(MAX_GROUP_COMMIT_REQUEST_BYTES)),
        )
        .route(tacit_api::GROUP_MESSAGES, post(groups::message))
        .route(tacit_api::GROUP_MEMBERSHIP, delete(groups::leave))
        .route(tacit_api::MESSAGES, post(send::handler).get(fetch::handler))
        .route(tacit_api::ACK, post(ack::handler))
        .route(tacit_api::WEBSOCKET, get(ws::handler))
        .layer(axum::middleware::from_fn(extract::version_check));
    v1.route(tacit_api::HEALTHZ, get(healthz::handler))
        .route(tacit_api::KT_BLOB, get(transparency::blob))
        .route(tacit_api::KT_BLOB_LISTING, get(transparency::listing))
        .fallback(|| async { Failure::NotFound })
        .method_not_allowed_fallback(|| async { Failure::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(axum::middleware::from_fn_with_state(state.clone(), extract::log_and_bound))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(Failure::Internal("handler panicked".into()))
        }))
        .with_state(state)
}
