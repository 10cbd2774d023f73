//! Tacit's client SDK: one account's device.
//!
//! - [`Client::create_account`], [`Client::open`]: the local store (SQLCipher, keyed from a
//!   passphrase through Argon2id or from a private key file) holding identities, prekeys,
//!   sessions, contacts and history.
//! - [`Client::send_text`], [`Client::receive`], [`Client::history`]: messaging; a received
//!   message is stored with its session state in one transaction before it is acknowledged,
//!   and deduplicated by envelope id.
//! - [`Client::safety_number`], [`Client::verify`]: contacts are pinned on first use; a
//!   verified contact whose identity changes is refused until verified again (its messages
//!   are held on the server meanwhile); an unverified one is accepted with a warning, also
//!   when the first sign of the change is a message from the new installation.
//! - Sessions restored from an old copy of the store are detected through generation marks
//!   kept outside the database and never sent on again (a fresh session starts instead); a
//!   whole home folder put back from an older copy, through a state counter the server
//!   keeps: every session is replaced and each contact is sent a session reset
//!   ([`Client::reset_session`] does it for one contact).
//! - History transfer ([`Client::export_history`], [`Client::import_history`]): a linked
//!   device receives the approving device's contacts and messages as one encrypted,
//!   compressed archive carried by the server as a blob (resumable, bounded, all or nothing).
//! - Issue 9: every message has a 16-byte id; devices send end-to-end encrypted delivery
//!   receipts ([`HistoryEntry::delivered`] of [`HistoryEntry::devices`]); a message a device
//!   cannot decrypt is asked for again (a retry request) and resent from the sender's outbox
//!   of recent plaintexts over a new session; what a device sends is copied to the account's
//!   other devices (sent transcripts), and a send to one's own name is a note to self.
//! - Prekeys are refilled and rotated automatically ([`Client::maintain_prekeys`]).
//! - `https://` servers are verified against the system's roots and, through
//!   [`ConnectOptions`] ([`Client::open_with`], [`Client::create_account_with`]), the CAs of a
//!   private PKI.

pub mod audit;
mod client;
mod contacts;
mod devices;
mod error;
#[cfg(test)]
mod fanout_store_tests;
mod generations;
mod groups;
mod history_transfer;
mod home_lock;
mod messaging;
mod net;
mod origin;
mod payload;
mod prekey_mark;
#[cfg(test)]
mod receipt_tests;
pub mod relay;
mod restore;
mod rng;
#[cfg(test)]
mod send_retry_tests;
#[cfg(test)]
mod server_tests;
// The test harness shared with the integration tests names this crate `tacit_client`.
#[cfg(test)]
extern crate self as tacit_client;
mod store;
#[cfg(test)]
mod tests;
mod transparency;

pub use client::Client;
pub use devices::{ApproveOptions, DeviceInfo, LinkEvent, NewDevice, Revoked};
pub use error::{ClientError, ErrorKind, KtViolation, Result, TransparencyError};
pub use groups::{COMMIT_ATTEMPTS, GroupEvent, GroupHistoryEntry, GroupInfo, KEY_PACKAGE_TARGET};
pub use history_transfer::{
    ArchiveKey, HistoryArchive, HistoryError, ImportSummary, MAX_CONTACTS, MAX_PLAIN_BYTES, MAX_RESUME_AGE_MS,
};
pub use home_lock::LockNotice;
pub use messaging::{ReceiveEvent, ReceivedMessage, SentMessage};
pub use net::ConnectOptions;
pub use payload::MAX_TEXT_BYTES;
pub use relay::{RelayClient, RelayEvent, RelayProbe, RelayStream};
pub use store::HistoryEntry;
pub use store::key::StoreSecret;
/// The wire types, for callers that drive delivery themselves.
pub use tacit_api as api;
pub use transparency::{KtStatus, KtVersion, OwnHistory, RetiredLog};
