#![doc = include_str!("../README.md")]

mod codec;
pub mod crypto;
mod identity;
mod message;
pub mod padding;
mod pqxdh;
mod prekeys;
mod ratchet;
mod session;
pub mod state;

pub use codec::DecodeError;
pub use crypto::CryptoError;
pub use crypto::ed25519::{Signature, VerifyingKey};
pub use crypto::kem::{KemCiphertext, KemPublic};
pub use crypto::x25519::X25519Public;
pub use identity::{AccountIdentity, AccountKey, AccountName, DeviceAddress, DeviceId, DeviceIdentity, DevicePublic, NameError};
pub use message::{Message, PrekeyMessage, RatchetHeader, RatchetMessage, PROTOCOL_VERSION};
pub use pqxdh::KDF_INFO as PQXDH_INFO;
pub use prekeys::{
    DevicePrekeys, KemPrekeyKind, KemPrekeyPublic, OneTimePrekeyPublic, PrekeyBundle, PrekeyError, PrekeyPlan,
    PrekeyPolicy, PrekeyUpload, SignedPrekeyPublic, UnixTime,
};
pub use ratchet::{MAX_MESSAGE_GAP, MAX_RECEIVING_CHAINS, MAX_SKIPPED_PER_CHAIN};
pub use session::{Session, SessionError};
