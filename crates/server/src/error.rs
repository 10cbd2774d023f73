//! Failures answered to clients: a stable [`ErrorCode`], an HTTP status and a short fixed
//! message. Internal details are logged here and never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tacit_api::{ApiError, ErrorCode, MismatchedDevices};

use crate::store::StoreError;

/// A request failed. Messages are fixed strings: nothing from the request or from the
/// server's internals is echoed back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// Malformed body, path, header or field.
    #[error("{0}")]
    BadRequest(&'static str),
    /// Over a size or count limit.
    #[error("{0}")]
    TooLarge(&'static str),
    /// No valid bearer token.
    #[error("missing, invalid or expired session token")]
    Unauthorized,
    /// No such method on this route.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Authenticated, but not allowed to touch this resource.
    #[error("not allowed for this account")]
    Forbidden,
    /// The challenge or its signature did not verify.
    #[error("authentication failed: request a new challenge")]
    BadAuthentication,
    /// Registration needs the server's token, and none was given.
    #[error("this server requires a registration token")]
    RegistrationClosed,
    /// Registration needs the server's token, and the one given is wrong (the same code as
    /// [`Self::RegistrationClosed`], so every client version reads it; another message).
    #[error("wrong registration token")]
    WrongRegistrationToken,
    /// The name is registered already.
    #[error("account name taken")]
    NameTaken,
    /// The name breaks the naming rule.
    #[error("account names are 3 to 32 of a-z 0-9 . _ -")]
    BadName,
    /// No such account or device.
    #[error("no such account or device")]
    NotFound,
    /// A send did not name exactly the recipient's devices.
    #[error("envelopes do not match the recipient's devices")]
    MismatchedDevices {
        /// Current devices with no envelope.
        missing: Vec<u32>,
        /// Envelopes for devices that do not exist.
        extra: Vec<u32>,
    },
    /// A recipient mailbox is full.
    #[error("the recipient's mailbox is full")]
    MailboxFull,
    /// The store is below its free-space watermark: no sends for now (acknowledgements go on).
    #[error("the server is low on storage; retry later")]
    StorageFull,
    /// Over a rate limit.
    #[error("too many requests; retry later")]
    RateLimited,
    /// The client's wire protocol is too old.
    #[error("this client is too old for this server: upgrade tacit")]
    ClientTooOld,
    /// Shutting down or overloaded.
    #[error("server unavailable; retry later")]
    Unavailable,
    /// A published device list is not a valid successor of the stored one (`409`).
    #[error("device list refused: {0}; fetch the current list and try again")]
    DeviceListConflict(&'static str),
    /// A link slot or blob already answered, completed, used, or not in the state asked
    /// for (`409 already_used`); the message says which (never a secret).
    #[error("{0}")]
    AlreadyUsed(String),
    /// A group commit or message made in another epoch than the group's, which is this one
    /// (`409`, body [`tacit_api::GroupEpochConflict`]).
    #[error("the group is in another epoch: receive its commits, then try again")]
    StaleEpoch(u64),
    /// A server-side failure; the string is logged, not sent.
    #[error("internal error")]
    Internal(String),
}

/// An I/O error as words for a start-up message ("address already in use"), without the
/// `(os error N)` suffix; the caller names the address or path it was about.
pub(crate) fn io_cause(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::AddrInUse => "address already in use (another server is listening there?)".into(),
        K::AddrNotAvailable => "no such address on this machine".into(),
        K::PermissionDenied => "permission denied".into(),
        K::AlreadyExists => "a file of that name is in the way".into(),
        K::NotFound => "no such file or folder".into(),
        K::NotADirectory => "a file is in the way where a folder should be".into(),
        K::IsADirectory => "it is a folder, not a file".into(),
        K::ReadOnlyFilesystem => "the file system is read-only".into(),
        K::StorageFull => "the disk is full".into(),
        _ => {
            let text = e.to_string();
            let text = text.split(" (os error").next().unwrap_or(&text);
            let mut chars = text.chars();
            chars.next().map(|c| c.to_lowercase().chain(chars).collect()).unwrap_or_default()
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NameTaken => Self::NameTaken,
            StoreError::NotFound => Self::NotFound,
            StoreError::MismatchedDevices { missing, extra } => Self::MismatchedDevices { missing, extra },
            StoreError::MailboxFull => Self::MailboxFull,
            StoreError::Closed => Self::Unavailable,
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "store unavailable");
                Self::Unavailable
            }
            StoreError::Backend(detail) => Self::Internal(detail),
            StoreError::Conflict => Self::AlreadyUsed("already used".into()),
            StoreError::TooManyBlobs => Self::RateLimited,
            StoreError::BlobOffset(b) => Self::AlreadyUsed(format!(
                "a chunk goes at offset {} (received {} of {} bytes)",
                b.received, b.received, b.size
            )),
            StoreError::BlobIncomplete => Self::AlreadyUsed("the blob is not completely uploaded yet".into()),
            StoreError::StaleEpoch(epoch) => Self::StaleEpoch(epoch),
            StoreError::GroupChange(why) => Self::BadRequest(why),
            StoreError::GroupTooLarge => Self::TooLarge("the group would have too many member devices"),
        }
    }
}

impl Failure {
    /// The HTTP status and stable code.
    pub fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, ErrorCode::BadRequest),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooLarge),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::BadRequest),
            Self::Forbidden => (StatusCode::FORBIDDEN, ErrorCode::Unauthorized),
            Self::BadAuthentication => (StatusCode::UNAUTHORIZED, ErrorCode::BadAuthentication),
            Self::RegistrationClosed | Self::WrongRegistrationToken => {
                (StatusCode::FORBIDDEN, ErrorCode::RegistrationClosed)
            }
            Self::NameTaken => (StatusCode::CONFLICT, ErrorCode::NameTaken),
            Self::BadName => (StatusCode::BAD_REQUEST, ErrorCode::BadName),
            Self::NotFound => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            Self::MismatchedDevices { .. } => (StatusCode::CONFLICT, ErrorCode::MismatchedDevices),
            Self::MailboxFull => (StatusCode::INSUFFICIENT_STORAGE, ErrorCode::MailboxFull),
            Self::StorageFull => (StatusCode::INSUFFICIENT_STORAGE, ErrorCode::StorageFull),
            Self::RateLimited => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited),
            Self::ClientTooOld => (StatusCode::UPGRADE_REQUIRED, ErrorCode::ClientTooOld),
            Self::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable),
            Self::DeviceListConflict(_) => (StatusCode::CONFLICT, ErrorCode::DeviceListConflict),
            Self::AlreadyUsed(_) => (StatusCode::CONFLICT, ErrorCode::AlreadyUsed),
            Self::StaleEpoch(_) => (StatusCode::CONFLICT, ErrorCode::StaleEpoch),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        match self {
            Self::MismatchedDevices { missing, extra } => {
                (status, axum::Json(MismatchedDevices { code, missing, extra })).into_response()
            }
            Self::StaleEpoch(epoch) => {
                (status, axum::Json(tacit_api::GroupEpochConflict { code, epoch })).into_response()
            }
            other => (status, axum::Json(ApiError { code, message: other.public_message() })).into_response(),
        }
    }
}

impl Failure {
    /// The message a client may see: internals are logged here and replaced.
    fn public_message(&self) -> String {
        match self {
            Self::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "internal error".into()
            }
            other => other.to_string(),
        }
    }

    /// The WebSocket answer to send `id` failing this way (the frame form of the HTTP error).
    pub(crate) fn into_send_failed(self, id: u64) -> tacit_api::ServerFrame {
        let (_, code) = self.status_and_code();
        let message = self.public_message();
        let (missing, extra) = match self {
            Self::MismatchedDevices { missing, extra } => (missing, extra),
            _ => (Vec::new(), Vec::new()),
        };
        tacit_api::ServerFrame::SendFailed { id, code, message, missing, extra }
    }
}
