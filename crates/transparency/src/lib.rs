//! Key transparency for Tacit (`docs/PROTOCOL.md` §12): what the server's akd directory
//! commits to for each account, the signed epoch root, and the checks a client makes before
//! it trusts another account's keys.
//!
//! The directory is Meta's `akd` under `WhatsAppV1Configuration`: one label per account (the
//! name behind the VRF, so the directory does not list who exists), one version per change
//! of its signed device list (which carries the account key), and an epoch root the server
//! signs as Cloudflare `plexi`'s `SignatureMessage`, so that existing auditors verify Tacit's
//! log unchanged. This crate has no I/O, no clock and no global RNG; the directory itself
//! (storage, publishing) lives in the server.

mod entry;
mod error;
mod root;
mod verify;

pub use entry::{AccountEntry, LABEL_PREFIX, MAX_ENTRY_BYTES, account_label};
pub use error::KtError;
pub use root::{
    CIPHERSUITE_PROTOBUF_ED25519, EpochRoot, MAX_NAMESPACE_BYTES, RootSigner, SignedRoot, key_id, put_varint,
};
pub use verify::{
    HistoryEntry, MAX_HISTORY_PROOF_BYTES, MAX_LOOKUP_PROOF_BYTES, VerifiedLookup, verify_history,
    verify_lookup,
};

#[cfg(feature = "audit")]
mod audit;
#[cfg(feature = "audit")]
pub use audit::{MAX_AUDIT_PROOF_BYTES, empty_root, verify_append_only};

/// The akd configuration every Tacit directory uses (what existing auditors verify).
pub type Config = akd_core::WhatsAppV1Configuration;

/// The length of an epoch root (akd's digest).
pub const ROOT_LEN: usize = 32;
