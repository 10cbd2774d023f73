//! Tacit's wire contract, version 1: every request, response and WebSocket frame that
//! crosses between a Tacit client and a Tacit server, plus the limits both enforce.
//!
//! Everything the server stores or relays is public-key material, signed data or
//! end-to-end ciphertext; nothing here carries a secret except the bearer token, which
//! only proves a device's identity to this server.
//!
//! HTTP requests carry [`VERSION_HEADER`]; a server that no longer supports the client's
//! version answers `426 Upgrade Required` with [`ErrorCode::ClientTooOld`].
//!
//! # State counter
//!
//! A device counts the changes of its protocol state (sessions, prekeys, envelopes taken
//! in) in its own store, and reports the count *after* storing a change, on the requests
//! that show the change to the world: a send ([`SendRequest::state_counter`], the
//! WebSocket's [`ClientFrame::Send`]), an acknowledgement ([`AckRequest::state_counter`],
//! [`ClientFrame::Ack`]) and a prekey upload ([`PrekeyUploadRequest::state_counter`]). The
//! server keeps the largest value per device, raised in the same transaction as the
//! request's own effect, and answers it at authentication
//! ([`SessionResponse::state_counter`]). It therefore only ever holds a count whose change
//! the world may have seen; a device that finds its own count below it runs on an older
//! copy of its data (a restored backup) and must start its sessions over. The field is
//! optional everywhere: absent, nothing is recorded.

mod b64;
mod error;
mod routes;
mod types;

pub use b64::Bytes;
pub use error::{ApiError, ErrorCode};
pub use routes::*;
pub use types::*;

/// The wire protocol version this crate describes.
pub const PROTOCOL_VERSION: u32 = 1;
/// The oldest client version a server of this build accepts.
pub const MIN_CLIENT_VERSION: u32 = 1;
/// Header naming the client's wire protocol version on every request.
pub const VERSION_HEADER: &str = "tacit-protocol";

/// WebSocket close codes the server uses besides RFC 6455's (private range, section 7.4.2).
pub mod close {
    /// The device opened a newer socket beyond its limit; this one is no longer used.
    pub const REPLACED: u16 = 4000;
    /// The session token expired or the account was deleted: authenticate again.
    pub const SESSION_ENDED: u16 = 4001;
}

/// Limits enforced by the server (and respected by the client).
pub mod limits {
    /// Largest HTTP request body.
    pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
    /// Largest single envelope ciphertext (the largest padded message, a prekey message
    /// header and slack).
    pub const MAX_ENVELOPE_BYTES: usize = 70 * 1024;
    /// Most envelopes in one send (one per recipient device plus the sender's own).
    pub const MAX_ENVELOPES_PER_SEND: usize = 64;
    /// Most envelopes held for one device; a full mailbox refuses new messages.
    pub const MAX_MAILBOX_ENVELOPES: usize = 10_000;
    /// Most ciphertext bytes held for one device (100 MiB); a send that would pass it is
    /// refused like one to a full mailbox. Without it the envelope bound alone lets a device
    /// be made to hold 10,000 × 70 KiB = 700 MiB. 100 MiB still holds 1,462 maximum-size
    /// envelopes, and all 10,000 of them when they average 10 KiB (text messages pad to a few
    /// hundred bytes, so for them the envelope bound comes first); larger payloads are meant
    /// to travel as files, not envelopes.
    pub const MAX_MAILBOX_BYTES: usize = 100 * 1024 * 1024;
    /// Most key rotations returned by one `GET` [`crate::ROTATIONS`] (a response that has
    /// more says so).
    pub const MAX_ROTATIONS_PER_PAGE: usize = 16;
    /// Most auditors a server takes cosignatures from (`--kt-auditor`), so most
    /// cosignatures served with one root.
    pub const MAX_KT_AUDITORS: usize = 16;
    /// Most envelopes returned by one fetch.
    pub const MAX_FETCH: usize = 256;
    /// Most ciphertext bytes in one fetch or WebSocket resync page (a page always holds at
    /// least one envelope); a fetch cut short by it says `more`.
    pub const MAX_FETCH_BYTES: usize = 1024 * 1024;
    /// Most one-time prekeys of each kind uploaded at once.
    pub const MAX_PREKEYS_PER_UPLOAD: usize = 200;
    /// Most one-time prekeys of each kind the server keeps for one device.
    pub const MAX_STORED_PREKEYS: usize = 1_000;
    /// Most KeyPackages uploaded at once (100 post-quantum ones, 2.7 KB each, fit in
    /// [`MAX_REQUEST_BYTES`] as base64).
    pub const MAX_KEY_PACKAGES_PER_UPLOAD: usize = 100;
    /// Most KeyPackages (besides the last-resort one) the server keeps for one device.
    pub const MAX_STORED_KEY_PACKAGES: usize = 1_000;
    /// Largest KeyPackage accepted (a post-quantum one is about 2.7 KB).
    pub const MAX_KEY_PACKAGE_BYTES: usize = 8 * 1024;
    /// The server reports "running low" below this many KeyPackages.
    pub const LOW_KEY_PACKAGE_WATER: u32 = 20;
    /// Most devices named in one KeyPackage claim (`POST` [`crate::KEY_PACKAGE_CLAIM`]):
    /// 200 post-quantum KeyPackages are about 720 KB of base64 in the answer.
    pub const MAX_KEY_PACKAGE_CLAIM: usize = 200;
    /// Devices whose KeyPackages one device may claim per hour, in claims and single takes
    /// together; its burst is [`KEY_PACKAGE_CLAIM_BURST`]. The 1:1 bundle budget
    /// ([`BUNDLE_FETCHES_PER_MINUTE`]) made a group of more than about 30 two-device
    /// accounts impossible to create at once; the per-target budget
    /// ([`ONE_TIME_FETCHES_PER_TARGET_PER_MINUTE`]) still keeps one device from being
    /// drained, whoever asks.
    pub const KEY_PACKAGE_CLAIMS_PER_HOUR: u32 = 2 * MAX_GROUP_DEVICES as u32;
    /// Burst of [`KEY_PACKAGE_CLAIMS_PER_HOUR`]: a group of [`MAX_GROUP_DEVICES`] devices
    /// created at once.
    pub const KEY_PACKAGE_CLAIM_BURST: u32 = MAX_GROUP_DEVICES as u32;
    /// Longest MLS group id the relay takes (mls-rs makes 32 random bytes).
    pub const MAX_GROUP_ID_BYTES: usize = 32;
    /// Most member devices of one group (10,000 members with two devices each).
    pub const MAX_GROUP_DEVICES: usize = 20_000;
    /// Largest commit request (commit, Welcome with the ratchet tree beside it, and the
    /// device lists): adding 10,000 devices in one post-quantum commit takes about 53 MB
    /// (docs/BENCHMARKS.md, "Groups: Tacit's path"). Other requests keep
    /// [`MAX_REQUEST_BYTES`].
    pub const MAX_GROUP_COMMIT_REQUEST_BYTES: usize = 96 * 1024 * 1024;
    /// Bundle fetches allowed per requesting device per minute (protects one-time keys).
    pub const BUNDLE_FETCHES_PER_MINUTE: u32 = 60;
    /// Requests allowed per connection or device per second, burst included.
    pub const REQUESTS_PER_SECOND: u32 = 200;
    /// Seconds an authentication challenge stays valid.
    pub const CHALLENGE_TTL_SECS: u64 = 60;
    /// Seconds a session token stays valid.
    pub const TOKEN_TTL_SECS: u64 = 24 * 3600;
    /// The server reports "running low" below this many one-time keys of either kind.
    pub const LOW_PREKEY_WATER: u32 = 20;
    /// Bundle fetches per minute that hand out one target device's one-time keys, whoever
    /// asks (the per-requester limit alone lets many accounts drain a device together).
    /// Beyond it a bundle comes without one-time keys (the signed and last-resort prekeys
    /// only) until the budget refills; the device is told to refill meanwhile.
    pub const ONE_TIME_FETCHES_PER_TARGET_PER_MINUTE: u32 = 30;
    /// Length of a send's idempotency key.
    pub const IDEMPOTENCY_KEY_BYTES: usize = 16;
    /// Seconds the server remembers a send's idempotency key (a retry after a `503` or a
    /// lost answer comes within seconds).
    pub const IDEMPOTENCY_TTL_SECS: u64 = 600;
    /// Largest link offer or answer (a device identity, ephemeral keys and prekeys; the
    /// sealed provisioning message).
    pub const MAX_LINK_MESSAGE_BYTES: usize = 64 * 1024;
    /// Seconds a link slot lives after its offer was published.
    pub const LINK_TTL_SECS: u64 = 600;
    /// Longest wait for a link answer in one request.
    pub const MAX_LINK_WAIT_SECS: u64 = 60;
    /// Link offers one address may publish per minute.
    pub const LINK_OFFERS_PER_MINUTE: u32 = 10;
    /// Largest blob (an encrypted, compressed history archive).
    pub const MAX_BLOB_BYTES: u64 = 512 * 1024 * 1024;
    /// Largest chunk of a blob uploaded or read in one request.
    pub const MAX_BLOB_CHUNK_BYTES: usize = 1024 * 1024;
    /// Blobs one account may hold at once.
    pub const MAX_BLOBS_PER_ACCOUNT: usize = 4;
    /// Seconds a blob lives after it was created.
    pub const BLOB_TTL_SECS: u64 = 24 * 3600;
}

/// The byte string a device signs to open an authenticated session: a label, the server's
/// origin (so a signature for one server is useless on another), the account, the device
/// and the server's single-use challenge.
pub fn auth_message(origin: &str, account: &str, device: u32, challenge: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(64 + origin.len() + account.len() + challenge.len());
    for part in [b"Tacit v1 auth".as_slice(), origin.as_bytes(), account.as_bytes()] {
        m.extend_from_slice(&(part.len() as u32).to_be_bytes());
        m.extend_from_slice(part);
    }
    m.extend_from_slice(&device.to_be_bytes());
    m.extend_from_slice(challenge);
    m
}
