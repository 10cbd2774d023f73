//! Stable error codes: the server answers every failure with one of these and a short
//! message, never with internals.

use serde::{Deserialize, Serialize};

/// A stable, machine-readable error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request body or a field in it is malformed.
    BadRequest,
    /// The request is larger than the server accepts.
    TooLarge,
    /// No valid session token.
    Unauthorized,
    /// The challenge signature did not verify, or the challenge is unknown, used or expired.
    BadAuthentication,
    /// The server requires a registration token and none or a wrong one was given.
    RegistrationClosed,
    /// The account name is taken.
    NameTaken,
    /// The account name is not 3 to 32 of `a-z 0-9 . _ -`.
    BadName,
    /// No such account or device.
    NotFound,
    /// The envelopes do not match the recipient's current devices (see `MismatchedDevices`).
    MismatchedDevices,
    /// The recipient device was re-registered: its old sessions are gone (410).
    StaleDevices,
    /// The recipient's mailbox is full.
    MailboxFull,
    /// The server is low on storage and takes no new messages for now (`507`);
    /// acknowledgements still work, so mailboxes drain. Retry later.
    StorageFull,
    /// Too many requests; retry later.
    RateLimited,
    /// The device has no prekeys to hand out.
    NoPrekeys,
    /// The client speaks a wire protocol this server no longer supports: upgrade it.
    ClientTooOld,
    /// The server is shutting down or overloaded; retry later.
    Unavailable,
    /// Something failed on the server; the detail is in its log.
    Internal,
    /// A published device list was refused (`409`): not newer than the stored one, signed by
    /// another key without a valid rotation signature, re-using a device id, or adding a
    /// device without its prekeys. Nothing changed: fetch the current list and try again.
    DeviceListConflict,
    /// A link slot or blob that was already answered, completed or used (`409`).
    AlreadyUsed,
    /// A group commit or message made in another epoch than the group's (`409`, body
    /// `GroupEpochConflict`): process what is waiting in the mailbox, then make it again.
    StaleEpoch,
}

/// The body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// The stable code.
    pub code: ErrorCode,
    /// A short human-readable message (never internals).
    pub message: String,
}
