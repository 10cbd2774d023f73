//! Extractors and middleware that turn every malformed, oversized or unauthenticated
//! request into a [`Failure`] with a stable code (axum's own rejections are plain text).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tacit_api::{MIN_CLIENT_VERSION, VERSION_HEADER};

use crate::error::Failure;
use crate::state::AppState;
use crate::store::Authed;

/// A request that takes longer than this is answered `503 unavailable`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The connecting socket's address, as recorded by the accept loop (used for per-address
/// rate limits only; logged only when the operator turns it on).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// The client's address: the socket's, or the one a trusted proxy reports for it.
fn peer_of(state: &AppState, extensions: &axum::http::Extensions, headers: &HeaderMap) -> Option<IpAddr> {
    let socket = extensions.get::<ConnectInfo<PeerAddr>>().map(|c| c.0.0.ip())?;
    Some(crate::proxy::client_address(&state.inner().trusted_proxies, socket, headers))
}

/// A JSON body; malformed → `400 bad_request`, over the limit → `413 too_large`.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Failure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Failure> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(e) => Err(json_failure(&e)),
        }
    }
}

fn json_failure(e: &JsonRejection) -> Failure {
    match e {
        _ if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Failure::TooLarge("request body too large"),
        JsonRejection::MissingJsonContentType(_) => {
            Failure::BadRequest("expected Content-Type: application/json")
        }
        JsonRejection::JsonDataError(_) => Failure::BadRequest("request body does not match the schema"),
        JsonRejection::JsonSyntaxError(_) => Failure::BadRequest("request body is not JSON"),
        _ => Failure::BadRequest("unreadable request body"),
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Path parameters; malformed → `400 bad_request`.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Failure> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Self(v))
            .map_err(|_| Failure::BadRequest("malformed path"))
    }
}

/// A resource id in the path (a link slot, a blob): anything that does not even decode is
/// `404 not_found`, as a well-formed id of nothing is (the service parses the id).
pub struct IdPath(pub String);

impl<S> FromRequestParts<S> for IdPath
where
    S: Send + Sync,
{
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Failure> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Self(v))
            .map_err(|_| Failure::NotFound)
    }
}

/// The caller's address (for per-address limits on unauthenticated endpoints).
pub struct Peer(pub Option<IpAddr>);

impl FromRequestParts<AppState> for Peer {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Failure> {
        Ok(Self(peer_of(state, &parts.extensions, &parts.headers)))
    }
}

/// The device a valid bearer token names; else `401 unauthorized`.
pub struct Auth(pub Authed);

impl FromRequestParts<AppState> for Auth {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Failure> {
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        use crate::service::auth::RequestKind;
        let route = parts.extensions.get::<MatchedPath>().map_or_else(|| parts.uri.path(), |p| p.as_str());
        let kind = match (&parts.method, route) {
            (
                &axum::http::Method::POST,
                tacit_api::MESSAGES | tacit_api::GROUP_MESSAGES | tacit_api::GROUP_COMMITS,
            ) => RequestKind::Send,
            (&axum::http::Method::POST, tacit_api::ACK) => RequestKind::Ack,
            _ => RequestKind::Other,
        };
        crate::service::auth::authenticate(state, header, kind).await.map(Self)
    }
}

/// Refuses requests without a supported [`VERSION_HEADER`]: too old → `426 client_too_old`.
pub async fn version_check(req: Request, next: Next) -> Response {
    let version =
        req.headers().get(VERSION_HEADER).map(|v| v.to_str().ok().and_then(|s| s.trim().parse::<u32>().ok()));
    match version {
        None => Failure::BadRequest("missing tacit-protocol header").into_response(),
        Some(None) => Failure::BadRequest("malformed tacit-protocol header").into_response(),
        Some(Some(v)) if v < MIN_CLIENT_VERSION => Failure::ClientTooOld.into_response(),
        Some(Some(_)) => next.run(req).await,
    }
}

/// How long a request on `route` may take: [`REQUEST_TIMEOUT`], and a link answer's long
/// poll its whole wait allowance on top.
pub(crate) fn request_bound(method: &axum::http::Method, route: Option<&str>) -> Duration {
    if method == axum::http::Method::GET && route == Some(tacit_api::LINK_ANSWER) {
        REQUEST_TIMEOUT + Duration::from_secs(tacit_api::limits::MAX_LINK_WAIT_SECS)
    } else {
        REQUEST_TIMEOUT
    }
}

/// Logs each request by route template (never the concrete path, body or token), status
/// and duration, with the client address only when configured; bounds its duration.
pub async fn log_and_bound(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let ip =
        if state.inner().log_ip_addresses { peer_of(&state, req.extensions(), req.headers()) } else { None };
    let bound = request_bound(&method, route.as_deref());
    let response = match tokio::time::timeout(bound, next.run(req)).await {
        Ok(r) => r,
        Err(_) => Failure::Unavailable.into_response(),
    };
    let status = response.status().as_u16();
    let ms = start.elapsed().as_millis();
    let route = route.as_deref().unwrap_or("(unmatched)");
    match ip {
        Some(ip) => tracing::info!(%method, route, status, ms, %ip, "request"),
        None => tracing::info!(%method, route, status, ms, "request"),
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link answer's long poll is not cut by the request bound before its wait ends.
    #[test]
    fn a_link_answer_wait_outlasts_the_request_bound() {
        use axum::http::Method;
        let wait = Duration::from_secs(tacit_api::limits::MAX_LINK_WAIT_SECS);
        assert!(request_bound(&Method::GET, Some(tacit_api::LINK_ANSWER)) > wait);
        assert_eq!(request_bound(&Method::PUT, Some(tacit_api::LINK_ANSWER)), REQUEST_TIMEOUT);
        assert_eq!(request_bound(&Method::GET, Some(tacit_api::MESSAGES)), REQUEST_TIMEOUT);
        assert_eq!(request_bound(&Method::GET, None), REQUEST_TIMEOUT);
    }
}
