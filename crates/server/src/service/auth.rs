//! Challenge-response authentication. The server hands out a random single-use challenge
//! (valid [`CHALLENGE_TTL_SECS`]); the device signs [`tacit_api::auth_message`] over the
//! server's origin, its address and the challenge with its Ed25519 signing key; the server
//! consumes the challenge (whether or not the signature verifies, so nothing can be
//! replayed or retried against it), verifies, and issues a random bearer token of which it
//! keeps only the SHA-256 hash.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tacit_api::limits::{CHALLENGE_TTL_SECS, TOKEN_TTL_SECS};
use tacit_api::{ChallengeRequest, ChallengeResponse, SessionRequest, SessionResponse};
use tacit_protocol::Signature;

use crate::crypto::{random32, sha256};
use crate::error::Failure;
use crate::limiter::LimitKey;
use crate::state::{AppState, now_ms};
use crate::store::{Authed, DeviceKey};

/// Length of a challenge.
const CHALLENGE_LEN: usize = 32;
/// Longest `Authorization` header value considered.
const MAX_TOKEN_CHARS: usize = 64;

async fn device_of(state: &AppState, account: &str, device: u32) -> Result<DeviceKey, Failure> {
    tacit_protocol::AccountName::new(account).map_err(|_| Failure::NotFound)?;
    let record = state.store().account(account).await?.ok_or(Failure::NotFound)?;
    let key = DeviceKey { account: record.id, device };
    state.store().device_identity(key).await?.ok_or(Failure::NotFound)?;
    Ok(key)
}

/// Longest `Host` header taken as an origin (a 253-character DNS name and a port).
const MAX_HOST_LEN: usize = 262;

/// The origin this request's client signs: the configured one, or (a wildcard listener with
/// none) `scheme://` and the request's `Host` header.
fn origin(state: &AppState, host: Option<&str>) -> Result<String, Failure> {
    let Some(scheme) = state.inner().origin_from_host else { return Ok(state.inner().origin.clone()) };
    let host = host
        .filter(|h| {
            !h.is_empty()
                && h.len() <= MAX_HOST_LEN
                && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .ok_or(Failure::BadRequest("a Host header naming the server"))?;
    Ok(format!("{scheme}://{}", host.to_ascii_lowercase()))
}

/// `POST /v1/auth/challenge` (`host`: the request's `Host` header).
pub async fn challenge(
    state: &AppState,
    peer: Option<std::net::IpAddr>,
    host: Option<&str>,
    req: ChallengeRequest,
) -> Result<ChallengeResponse, Failure> {
    state.limit_address(peer)?;
    let origin = origin(state, host)?;
    let key = device_of(state, &req.account, req.device).await?;
    let challenge = random32()?;
    let expires = now_ms().saturating_add(CHALLENGE_TTL_SECS * 1000);
    state.store().put_challenge(key, &challenge, expires).await?;
    Ok(ChallengeResponse { challenge: challenge.to_vec().into(), origin })
}

/// `POST /v1/auth/session` (`host`: the request's `Host` header).
pub async fn session(
    state: &AppState,
    peer: Option<std::net::IpAddr>,
    host: Option<&str>,
    req: SessionRequest,
) -> Result<SessionResponse, Failure> {
    state.limit_address(peer)?;
    let origin = origin(state, host)?;
    if req.challenge.as_slice().len() != CHALLENGE_LEN {
        return Err(Failure::BadRequest("challenge is 32 bytes"));
    }
    let signature: [u8; 64] =
        req.signature.as_slice().try_into().map_err(|_| Failure::BadRequest("signature is 64 bytes"))?;
    let key = device_of(state, &req.account, req.device).await.map_err(|e| match e {
        Failure::NotFound => Failure::BadAuthentication,
        other => other,
    })?;
    if !state.store().take_challenge(key, req.challenge.as_slice(), now_ms()).await? {
        return Err(Failure::BadAuthentication);
    }
    let identity = super::prekeys::identity(state, key).await?;
    let message = tacit_api::auth_message(&origin, &req.account, req.device, req.challenge.as_slice());
    identity
        .signing_key()
        .verify(&message, &Signature::from_bytes(signature))
        .map_err(|_| Failure::BadAuthentication)?;
    let token = random32()?;
    let now = now_ms();
    let expires = now.saturating_add(TOKEN_TTL_SECS * 1000);
    // Refused for a device removed or logged out meanwhile.
    state.store().put_token(key, &sha256(&token), now, expires).await.map_err(|e| match e {
        crate::store::StoreError::NotFound => Failure::BadAuthentication,
        other => other.into(),
    })?;
    // The device compares it with its own: below it, it runs on a restored older copy.
    let state_counter = state.store().state_counter(key).await?;
    tracing::info!("session opened");
    Ok(SessionResponse {
        token: URL_SAFE_NO_PAD.encode(token),
        expires_in_secs: TOKEN_TTL_SECS,
        state_counter: Some(state_counter),
    })
}

/// Which of a device's budgets a request counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// `POST /v1/messages`.
    Send,
    /// `POST /v1/messages/ack`.
    Ack,
    /// Everything else.
    Other,
}

/// The stored hash of the bearer token in an `Authorization` header value, if it holds one.
pub(crate) fn token_hash(header: Option<&str>) -> Option<[u8; 32]> {
    let token = header.and_then(|h| h.strip_prefix("Bearer ")).filter(|t| t.len() <= MAX_TOKEN_CHARS)?;
    let raw = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
    Some(sha256(&raw))
}

/// Whether the token with this hash still opens a session for `device` (not expired, the
/// account not deleted).
pub(crate) async fn still_valid(
    state: &AppState,
    hash: &[u8; 32],
    device: DeviceKey,
) -> Result<bool, Failure> {
    Ok(state.store().token_device(hash, now_ms()).await?.is_some_and(|a| a.key == device))
}

/// Resolves an `Authorization` header value to a device and counts the request against the
/// device's budget for its kind.
pub async fn authenticate(
    state: &AppState,
    header: Option<&str>,
    kind: RequestKind,
) -> Result<Authed, Failure> {
    let hash = token_hash(header).ok_or(Failure::Unauthorized)?;
    let authed = state.store().token_device(&hash, now_ms()).await?.ok_or(Failure::Unauthorized)?;
    state.limit(match kind {
        RequestKind::Send => LimitKey::Sends(authed.key),
        RequestKind::Ack => LimitKey::Acks(authed.key),
        RequestKind::Other => LimitKey::Device(authed.key),
    })?;
    Ok(authed)
}
