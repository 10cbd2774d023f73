//! Routes (axum 0.8 path syntax). "auth" means `Authorization: Bearer <token>` from
//! [`AUTH_SESSION`].

/// `GET`: liveness; `200 ok` with no body.
pub const HEALTHZ: &str = "/healthz";
/// `POST` [`crate::CreateAccountRequest`] → [`crate::CreateAccountResponse`].
pub const ACCOUNTS: &str = "/v1/accounts";
/// `DELETE` (auth, own account): removes the account, its devices, keys and mailboxes.
pub const ACCOUNT: &str = "/v1/accounts/{name}";
/// `GET` → [`crate::DeviceListResponse`]: the account's signed device list.
pub const DEVICE_LIST: &str = "/v1/accounts/{name}/devices";
/// `POST` [`crate::ChallengeRequest`] → [`crate::ChallengeResponse`].
pub const AUTH_CHALLENGE: &str = "/v1/auth/challenge";
/// `POST` [`crate::SessionRequest`] → [`crate::SessionResponse`].
pub const AUTH_SESSION: &str = "/v1/auth/session";
/// `PUT` (auth) [`crate::PrekeyUploadRequest`] → [`crate::PrekeyStatus`];
/// `GET` (auth) → [`crate::PrekeyStatus`] of the caller's device.
pub const PREKEYS: &str = "/v1/keys";
/// `GET` (auth) → [`crate::BundleResponse`]: hands out one-time keys exactly once.
pub const BUNDLE: &str = "/v1/keys/{name}/{device}";
/// `POST` (auth) [`crate::SendRequest`] → [`crate::SendResponse`] (or `409`
/// [`crate::MismatchedDevices`], `410` [`crate::StaleDevices`]);
/// `GET` (auth, optional query [`crate::FetchQuery`]: `?after=ID`) → [`crate::FetchResponse`]:
/// pending envelopes with ids above `after`, oldest first.
pub const MESSAGES: &str = "/v1/messages";
/// `POST` (auth) [`crate::AckRequest`]: deletes acknowledged envelopes.
pub const ACK: &str = "/v1/messages/ack";
/// `GET` (auth) WebSocket upgrade: [`crate::ServerFrame`]s down, [`crate::ClientFrame`]s up.
pub const WEBSOCKET: &str = "/v1/ws";
