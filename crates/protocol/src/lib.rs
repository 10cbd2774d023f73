#![doc = include_str!("../README.md")]

pub mod archive;
mod codec;
pub mod crypto;
mod device_list;
mod identity;
#[cfg(test)]
mod kat;
mod link;
mod message;
pub mod padding;
mod pqxdh;
mod prekeys;
mod ratchet;
mod safety_number;
mod session;
#[cfg(test)]
mod session_tests;
pub mod state;

pub use archive::{ArchiveError, ArchiveOpener, ArchiveSealer, CHUNK_LEN, sealed_len};
pub use codec::DecodeError;
pub use crypto::CryptoError;
pub use crypto::ed25519::{Signature, VerifyingKey};
pub use crypto::kem::{KemCiphertext, KemPublic};
pub use crypto::x25519::X25519Public;
pub use device_list::{
    DeviceEntry, DeviceList, DeviceListError, MAX_DEVICE_LABEL_BYTES, MAX_DEVICES, VerifiedDevice,
    valid_device_label,
};
pub use identity::{
    AccountIdentity, AccountKey, AccountName, DeviceAddress, DeviceId, DeviceIdentity, DevicePublic,
    NameError,
};
pub use link::{
    HistoryRef, LINK_CODE_CHARS, LINK_SECRET_LEN, LinkError, LinkSecret, MAX_ANSWER_LEN, MAX_OFFER_LEN,
    MAX_PROVISIONING_LIST_BYTES, PendingLink, Provisioning, VerifiedOffer, device_fingerprint,
};
pub use message::{Message, PROTOCOL_VERSION, PrekeyMessage, RatchetHeader, RatchetMessage};
pub use pqxdh::KDF_INFO as PQXDH_INFO;
pub use prekeys::{
    DevicePrekeys, KemPrekeyKind, KemPrekeyPublic, MAX_SEEN_BASE_KEYS, MAX_SEEN_PER_SENDER,
    OneTimePrekeyPublic, PrekeyBundle, PrekeyError, PrekeyPlan, PrekeyPolicy, PrekeyUpload,
    SignedPrekeyPublic, UnixTime,
};
pub use ratchet::{MAX_MESSAGE_GAP, MAX_RECEIVING_CHAINS, MAX_SKIPPED_PER_CHAIN};
pub use safety_number::{SafetyNumber, SafetyNumberError};
pub use session::{MAX_PENDING_AGE_SECS, Session, SessionError};
