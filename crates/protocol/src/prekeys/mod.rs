//! Prekeys and their lifecycle (PQXDH revision 3, sections 3.2 and 4.12-4.13).
//!
//! A device publishes: one **signed X25519 prekey** (`SPK`), a set of **one-time X25519
//! prekeys** (`OPK`), a set of **one-time ML-KEM-1024 prekeys** and one **last-resort
//! ML-KEM-1024 prekey** (`PQSPK`), every KEM key and the SPK signed by the device's Ed25519
//! key. Which keys to make, rotate or delete is decided by the pure [`DevicePrekeys::plan`],
//! so forward secrecy depends on a schedule rather than on luck.

mod bundle;
mod lifecycle;
mod policy;
pub(crate) mod public;
mod replay;
mod store;
mod time;

pub use bundle::PrekeyBundle;
pub use lifecycle::{PrekeyPlan, PrekeyUpload};
pub use policy::PrekeyPolicy;
pub use public::{KemPrekeyKind, KemPrekeyPublic, OneTimePrekeyPublic, SignedPrekeyPublic};
pub(crate) use replay::ReplayTag;
pub use replay::{MAX_SEEN_BASE_KEYS, MAX_SEEN_PER_SENDER};
pub use store::{DevicePrekeys, PrekeyError};
pub(crate) use store::{PrekeySecrets, PrekeyUse};
pub use time::UnixTime;
