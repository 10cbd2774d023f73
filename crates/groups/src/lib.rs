//! Tacit's groups over MLS (RFC 9420), through mls-rs with the AWS-LC provider.
//!
//! Every device is a member (a leaf). A leaf's credential names the account and device
//! ([`MemberId`]) and its signature key is the device's own signing key, so it is valid
//! exactly when the account's verified, signed device list has that device with that key
//! ([`Directory`]). The group's name, avatar text and roles are in the encrypted group
//! context ([`GroupMeta`]). Like `tacit-protocol` this crate does no I/O and reads no clock:
//! state comes in and goes out as bytes ([`StoredGroup`]), time as an argument.
//! Randomness is AWS-LC's (mls-rs's provider takes none from the caller), as for ML-KEM in
//! `tacit-protocol`.

mod directory;
mod error;
mod group;
mod identity;
mod member;
mod meta;
mod rules;
mod storage;

pub use directory::{Directory, Lookup};
pub use error::GroupError;
pub use group::{Commit, CommitSummary, GroupDevice, NewKeyPackage, OpenGroup, Received, StoredGroup, Suite};
pub use identity::IdentityError;
pub use member::MemberId;
pub use meta::{GroupMeta, MAX_ADMINS, MAX_AVATAR_BYTES, MAX_NAME_BYTES, MetaError};
pub use storage::MAX_PAST_EPOCHS;
