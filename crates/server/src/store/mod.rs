//! Storage behind one async trait, with two implementations: embedded SQLite (the default,
//! [`SqliteStore`]) and PostgreSQL ([`PgStore`]). Both pass the same integration tests.
//!
//! The store holds only public keys, signed data, ciphertext and hashes of bearer tokens;
//! `docs/THREAT_MODEL.md` lists every table and column. Validation (names, signatures,
//! sizes) happens in the services before anything reaches the store; the store enforces
//! what must be atomic: unique names, one-time keys handed out once, the device set of a
//! send, mailbox bounds.

mod kt;
mod pg_tls;
mod postgres;
mod progress;
mod schema;
mod sqlite;

pub use kt::{KtCosignature, KtCurrent, KtEpoch, KtStore, KtWrite, StoredValue};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use async_trait::async_trait;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The account name is already registered.
    #[error("account name taken")]
    NameTaken,
    /// No such account or device.
    #[error("not found")]
    NotFound,
    /// The envelopes do not name exactly the recipient's current devices.
    #[error("envelopes do not match the recipient's devices")]
    MismatchedDevices {
        /// Current devices with no envelope.
        missing: Vec<u32>,
        /// Envelopes for devices that do not exist.
        extra: Vec<u32>,
    },
    /// A recipient mailbox holds [`tacit_api::limits::MAX_MAILBOX_ENVELOPES`] already, or
    /// the envelope would take it past [`StoreConfig::max_mailbox_bytes`].
    #[error("mailbox full")]
    MailboxFull,
    /// The store is shutting down.
    #[error("store closed")]
    Closed,
    /// No connection became free in time (or the database cannot be reached); the request
    /// may be retried. The detail is for the log only.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The database failed; the detail is for the log only.
    #[error("database: {0}")]
    Backend(String),
    /// A conditional write lost: the device list changed meanwhile (compare-and-set on its
    /// version), the link slot exists or was answered already.
    #[error("conflicting state")]
    Conflict,
    /// The account holds [`tacit_api::limits::MAX_BLOBS_PER_ACCOUNT`] live blobs already.
    #[error("too many blobs")]
    TooManyBlobs,
    /// A blob chunk not at the blob's received offset (or running past its size); the
    /// blob as stored.
    #[error("blob chunk at the wrong offset")]
    BlobOffset(BlobRecord),
    /// A blob read before the whole blob was uploaded.
    #[error("blob incomplete")]
    BlobIncomplete,
    /// A group commit or message made in another epoch than the group's, which is this one.
    #[error("stale group epoch")]
    StaleEpoch(u64),
    /// A group commit's member changes do not fit the group as stored (the reason).
    #[error("{0}")]
    GroupChange(&'static str),
    /// A commit would take the group past [`tacit_api::limits::MAX_GROUP_DEVICES`].
    #[error("too many group members")]
    GroupTooLarge,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Backend(e.to_string())
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // A connection lost mid-operation is worth a retry; anything else is a bug or data.
        // A database error's DETAIL (part of its Display) can quote row values (account
        // names, keys): only the SQLSTATE and the message reach the log.
        if e.is_closed() {
            return Self::Unavailable(e.to_string());
        }
        match e.as_db_error() {
            Some(db) => Self::Backend(format!("postgres {}: {}", db.code().code(), db.message())),
            None => Self::Backend(e.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError;
        match e {
            // No connection free in time, or none could be opened: the database is busy or
            // unreachable, which a client may retry (503), not a server bug (500).
            PoolError::Timeout(_) => Self::Unavailable(e.to_string()),
            PoolError::Backend(inner) => match Self::from(inner) {
                // Logged as SQLSTATE and message only (see above), and retryable.
                Self::Backend(detail) | Self::Unavailable(detail) => Self::Unavailable(detail),
                other => other,
            },
            PoolError::Closed => Self::Closed,
            other => Self::Backend(other.to_string()),
        }
    }
}

/// The default of [`StoreConfig::max_mailbox_bytes`]: 16 MiB, what one node can give every
/// free account (`docs/ARCHITECTURE.md`, "Defaults one node can serve"). It still holds all
/// [`tacit_api::limits::MAX_MAILBOX_ENVELOPES`] envelopes when they average 1.6 KiB (text
/// messages pad to a few hundred bytes) and 234 of the largest.
pub const DEFAULT_MAILBOX_BYTES: u64 = 16 * 1024 * 1024;

/// Bounds the store enforces, beyond the fixed ones of [`tacit_api::limits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreConfig {
    /// Most ciphertext bytes held for one device. Taken between
    /// [`tacit_api::limits::MAX_ENVELOPE_BYTES`] (a mailbox always takes one envelope) and
    /// [`tacit_api::limits::MAX_MAILBOX_BYTES`]; [`DEFAULT_MAILBOX_BYTES`] by default.
    pub max_mailbox_bytes: u64,
    /// PostgreSQL only: the bytes the database may take (`pg_database_size`); what is left
    /// of it is the store's free space for the storage watermark. `None`: PostgreSQL's free
    /// space is not known and the watermark does not apply to it.
    pub database_quota_bytes: Option<u64>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { max_mailbox_bytes: DEFAULT_MAILBOX_BYTES, database_quota_bytes: None }
    }
}

impl StoreConfig {
    /// The default bounds with `max_mailbox_bytes` set (clamped as documented there).
    pub fn with_max_mailbox_bytes(bytes: u64) -> Self {
        Self { max_mailbox_bytes: bytes, ..Self::default() }
    }

    /// These bounds with [`StoreConfig::database_quota_bytes`] set.
    pub fn with_database_quota_bytes(mut self, bytes: Option<u64>) -> Self {
        self.database_quota_bytes = bytes;
        self
    }

    /// The mailbox byte bound as stored (clamped into its allowed range).
    pub(crate) fn mailbox_bytes(&self) -> i64 {
        let low = to_i64(u64::try_from(tacit_api::limits::MAX_ENVELOPE_BYTES).unwrap_or(u64::MAX));
        let high = to_i64(u64::try_from(tacit_api::limits::MAX_MAILBOX_BYTES).unwrap_or(u64::MAX));
        to_i64(self.max_mailbox_bytes).clamp(low, high)
    }
}

/// The store's numeric account id (never reused, so a re-registered name is a new account).
pub type AccountId = i64;

/// One device: `(account id, device number)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceKey {
    /// The account.
    pub account: AccountId,
    /// The device number within it.
    pub device: u32,
}

/// A public key with the id the device gave it (for duplicate detection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// The device's id for the key.
    pub key_id: u32,
    /// The key in `tacit-protocol`'s published encoding (signature included where it has one).
    pub bytes: Vec<u8>,
}

/// Verified public prekeys to store for one device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrekeySet {
    /// Replaces the signed prekey.
    pub signed_prekey: Option<Vec<u8>>,
    /// Replaces the last-resort KEM prekey.
    pub last_resort: Option<Vec<u8>>,
    /// Added one-time X25519 prekeys (a key with the id of a stored one replaces it).
    pub one_time: Vec<KeyRecord>,
    /// Added one-time KEM prekeys (a key with the id of a stored one replaces it).
    pub kem_one_time: Vec<KeyRecord>,
    /// When set, the one-time X25519 keys to keep besides `one_time`: every other one of
    /// the device is deleted ([`tacit_api::PrekeyUploadRequest::one_time_ids`]).
    pub keep_one_time: Option<Vec<u32>>,
    /// The same for the one-time KEM keys.
    pub keep_kem_one_time: Option<Vec<u32>>,
    /// The device's state counter to record with these keys (the largest value reported
    /// is kept; see [`Store::state_counter`]).
    pub state_counter: Option<u64>,
}

impl PrekeySet {
    /// The one-time ids of `table` that survive this upload, if it replaces the set.
    pub(crate) fn kept(&self, kem: bool) -> Option<Vec<u32>> {
        let (keep, added) = if kem {
            (&self.keep_kem_one_time, &self.kem_one_time)
        } else {
            (&self.keep_one_time, &self.one_time)
        };
        keep.as_ref().map(|k| k.iter().copied().chain(added.iter().map(|r| r.key_id)).collect())
    }
}

/// A new account with its first device, every key already verified.
#[derive(Clone, Debug)]
pub struct NewAccount {
    /// Validated name.
    pub name: String,
    /// Account identity key (32 bytes).
    pub account_key: Vec<u8>,
    /// The signed device list as received.
    pub device_list: Vec<u8>,
    /// Its version.
    pub device_list_version: u64,
    /// Device 1's `DevicePublic` encoding.
    pub device_identity: Vec<u8>,
    /// Device 1's signed prekey.
    pub signed_prekey: Vec<u8>,
    /// Device 1's last-resort KEM prekey.
    pub last_resort: Vec<u8>,
    /// Device 1's one-time X25519 prekeys.
    pub one_time: Vec<KeyRecord>,
    /// Device 1's one-time KEM prekeys.
    pub kem_one_time: Vec<KeyRecord>,
    /// Creation time, milliseconds since the Unix epoch.
    pub now_ms: u64,
}

/// An account as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRecord {
    /// Its id.
    pub id: AccountId,
    /// Its name.
    pub name: String,
    /// The signed device list.
    pub device_list: Vec<u8>,
}

/// A device authenticated by a bearer token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authed {
    /// The device.
    pub key: DeviceKey,
    /// Its account's name.
    pub account: String,
}

/// What a bundle fetch took from the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleParts {
    /// `DevicePublic` encoding.
    pub identity: Vec<u8>,
    /// The signed prekey.
    pub signed_prekey: Vec<u8>,
    /// A one-time KEM prekey, or the last-resort one.
    pub kem_prekey: Vec<u8>,
    /// A one-time X25519 prekey, when one was left.
    pub one_time: Option<Vec<u8>>,
    /// One-time keys left after this fetch, counted up to
    /// [`tacit_api::limits::LOW_PREKEY_WATER`] of each kind (exact below it).
    pub left: PrekeyCounts,
}

/// One device of an account as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The device number.
    pub device: u32,
    /// Its `DevicePublic` encoding.
    pub identity: Vec<u8>,
    /// When the server stored it, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// When it last opened a session (to the minute).
    pub last_seen_ms: Option<u64>,
    /// It logged itself out.
    pub logged_out: bool,
}

/// What a device list publish is checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListState {
    /// The account key (32 bytes).
    pub account_key: Vec<u8>,
    /// The stored list's version.
    pub version: u64,
    /// The largest device id the account ever used.
    pub max_device_id: u32,
    /// The devices, by id.
    pub devices: Vec<DeviceRecord>,
}

/// A device added by a published list, its prekeys verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDevice {
    /// Its id.
    pub device: u32,
    /// `DevicePublic` encoding.
    pub identity: Vec<u8>,
    /// Signed prekey.
    pub signed_prekey: Vec<u8>,
    /// Last-resort KEM prekey.
    pub last_resort: Vec<u8>,
    /// One-time X25519 prekeys.
    pub one_time: Vec<KeyRecord>,
    /// One-time KEM prekeys.
    pub kem_one_time: Vec<KeyRecord>,
}

/// A verified device list replacing the stored one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListUpdate {
    /// The account.
    pub account: AccountId,
    /// The version the checks were made against: the update applies only if it is still
    /// the stored one (compare-and-set), else [`StoreError::Conflict`].
    pub previous_version: u64,
    /// The (possibly rotated) account key.
    pub account_key: Vec<u8>,
    /// The signed list as received.
    pub device_list: Vec<u8>,
    /// The previous key's signature over `device_list` when the key was rotated (kept with
    /// the list, [`Store::rotations`]).
    pub rotation_signature: Option<Vec<u8>>,
    /// Its version.
    pub version: u64,
    /// The largest device id ever used, this list included.
    pub max_device_id: u32,
    /// Devices to add.
    pub added: Vec<NewDevice>,
    /// Devices to remove with their keys, tokens, challenges and mailboxes.
    pub removed: Vec<u32>,
    /// Now, milliseconds since the Unix epoch.
    pub now_ms: u64,
}

/// An account key rotation as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationRecord {
    /// The list's version.
    pub version: u64,
    /// The list signed by the new key.
    pub device_list: Vec<u8>,
    /// The previous key's signature over it.
    pub signature: Vec<u8>,
}

/// A link slot as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkSlot {
    /// The new device's offer.
    pub offer: Vec<u8>,
    /// The approver's answer, once given.
    pub answer: Option<Vec<u8>>,
    /// When it expires, milliseconds since the Unix epoch.
    pub expires_ms: u64,
}

/// A blob's progress as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobRecord {
    /// Declared size.
    pub size: u64,
    /// Bytes received.
    pub received: u64,
    /// When it expires, milliseconds since the Unix epoch.
    pub expires_ms: u64,
}

/// What [`Store::send`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sent {
    /// Stored now: these envelopes, at the `now_ms` given.
    Stored(Vec<StoredEnvelope>),
    /// A send with the same idempotency key from the same device was stored before, at
    /// this time; nothing was stored again.
    Duplicate {
        /// The first send's server time.
        server_time_ms: u64,
    },
}

/// MLS KeyPackages held for a device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyPackageCounts {
    /// KeyPackages held besides the last-resort one.
    pub available: u32,
    /// A last-resort KeyPackage is held.
    pub last_resort: bool,
}

/// One-time keys left for a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrekeyCounts {
    /// One-time X25519 prekeys.
    pub one_time: u32,
    /// One-time KEM prekeys.
    pub kem_one_time: u32,
}

/// One envelope to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEnvelope {
    /// Recipient device number.
    pub device: u32,
    /// Ciphertext.
    pub content: Vec<u8>,
}

/// One stored envelope, with the mailbox it is in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEnvelope {
    /// The mailbox.
    pub to: DeviceKey,
    /// The envelope as the recipient sees it.
    pub envelope: tacit_api::Envelope,
}

/// One member device of a group, by account name.
pub type GroupMemberName = (String, u32);

/// A group commit to store: the relay's per-group total order (the first commit for an
/// epoch wins) and the fan-out of the commit and its Welcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCommit {
    /// The MLS group id.
    pub group_id: Vec<u8>,
    /// The epoch the commit was made in (read from its header).
    pub epoch: u64,
    /// The commit.
    pub commit: Vec<u8>,
    /// The Welcome for `added`.
    pub welcome: Option<Vec<u8>>,
    /// Devices added (distinct).
    pub added: Vec<GroupMemberName>,
    /// Devices removed (distinct; ones not in the group are ignored).
    pub removed: Vec<GroupMemberName>,
    /// The sender's state counter, recorded with the commit (`Store::send`'s).
    pub state_counter: Option<u64>,
}

/// One group envelope stored: in whose mailbox, its id, and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupStored {
    /// The mailbox.
    pub to: DeviceKey,
    /// The envelope's id in it.
    pub id: u64,
    /// What it carries.
    pub kind: tacit_api::GroupKind,
}

/// What a group commit or message did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupSent {
    /// Stored now, at the `now_ms` given: one payload, these envelopes referring to it.
    Stored(Vec<GroupStored>),
    /// A retry of one stored before (same idempotency key), at this time.
    Duplicate {
        /// The first one's server time.
        server_time_ms: u64,
    },
}

/// The storage interface the services use.
#[async_trait]
pub trait Store: KtStore + Send + Sync + 'static {
    /// Creates an account with device 1; [`StoreError::NameTaken`] if the name exists.
    async fn create_account(&self, account: NewAccount) -> Result<AccountId, StoreError>;
    /// Looks an account up by name.
    async fn account(&self, name: &str) -> Result<Option<AccountRecord>, StoreError>;
    /// A device's `DevicePublic` encoding (`None` once it logged out).
    async fn device_identity(&self, device: DeviceKey) -> Result<Option<Vec<u8>>, StoreError>;
    /// Deletes an account, its devices, keys, tokens, challenges and mailboxes.
    async fn delete_account(&self, account: AccountId) -> Result<(), StoreError>;

    /// Records a single-use challenge for a device.
    async fn put_challenge(
        &self,
        device: DeviceKey,
        challenge: &[u8],
        expires_ms: u64,
    ) -> Result<(), StoreError>;
    /// Consumes a challenge: true if it existed for that device and had not expired. It is
    /// deleted either way.
    async fn take_challenge(
        &self,
        device: DeviceKey,
        challenge: &[u8],
        now_ms: u64,
    ) -> Result<bool, StoreError>;
    /// Records a session token by its SHA-256 hash, for a device that exists and has not
    /// logged out ([`StoreError::NotFound`] otherwise), and notes that the device was seen
    /// at `now_ms` (to the minute: at most one write a minute).
    async fn put_token(
        &self,
        device: DeviceKey,
        token_hash: &[u8],
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<(), StoreError>;
    /// The device a token hash belongs to, if the token is unexpired.
    async fn token_device(&self, token_hash: &[u8], now_ms: u64) -> Result<Option<Authed>, StoreError>;
    /// Deletes expired challenges, tokens, idempotency keys, link slots and blobs.
    async fn purge_expired(&self, now_ms: u64) -> Result<(), StoreError>;

    /// Stores verified prekeys, keeping at most
    /// [`tacit_api::limits::MAX_STORED_PREKEYS`] of each one-time kind (oldest dropped),
    /// and raises the device's state counter to [`PrekeySet::state_counter`] in the same
    /// transaction.
    async fn put_prekeys(&self, device: DeviceKey, keys: PrekeySet) -> Result<PrekeyCounts, StoreError>;
    /// One-time keys left.
    async fn prekey_counts(&self, device: DeviceKey) -> Result<PrekeyCounts, StoreError>;
    /// Takes a bundle, removing the one-time keys it hands out (each exactly once, also
    /// under concurrent calls). With `one_time` false it hands out none (the last-resort
    /// KEM prekey and no one-time X25519 key).
    async fn take_bundle(&self, device: DeviceKey, one_time: bool)
    -> Result<Option<BundleParts>, StoreError>;
    /// The stored encodings among the device's one-time KEM prekeys with these ids and its
    /// last-resort KEM prekey (each verified when it was stored): an upload that repeats
    /// one of them needs no second signature check.
    async fn known_kem_prekeys(&self, device: DeviceKey, ids: &[u32]) -> Result<Vec<Vec<u8>>, StoreError>;

    /// Adds MLS KeyPackages (opaque) for the device and replaces its last-resort one when
    /// given, in one transaction, keeping at most
    /// [`tacit_api::limits::MAX_STORED_KEY_PACKAGES`] besides the last resort (the oldest
    /// dropped).
    async fn put_key_packages(
        &self,
        device: DeviceKey,
        key_packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    ) -> Result<KeyPackageCounts, StoreError>;
    /// KeyPackages held for the device.
    async fn key_package_counts(&self, device: DeviceKey) -> Result<KeyPackageCounts, StoreError>;
    /// Takes one of the device's KeyPackages, the oldest, removing it (each handed out
    /// exactly once, also under concurrent calls); when none is left, or with `one_time`
    /// false, its last-resort one, which stays (`true`). `None` when it has neither.
    async fn take_key_package(
        &self,
        device: DeviceKey,
        one_time: bool,
    ) -> Result<Option<(Vec<u8>, bool)>, StoreError>;

    /// Stores one envelope per device of `recipient`, durably, all or none. The device set
    /// must equal the recipient's current devices (less the sender's own device when it
    /// writes to its own account). With an idempotency key already stored for the sending
    /// device (and not expired), stores nothing and answers [`Sent::Duplicate`]; else the
    /// key is stored with the envelopes, in the same transaction, until `now_ms` plus
    /// [`tacit_api::limits::IDEMPOTENCY_TTL_SECS`]. The sending device's state counter is
    /// raised to `state_counter` (when given) in the same transaction as the envelopes.
    async fn send(
        &self,
        sender: &Authed,
        recipient: &str,
        envelopes: Vec<NewEnvelope>,
        now_ms: u64,
        idempotency_key: Option<[u8; tacit_api::limits::IDEMPOTENCY_KEY_BYTES]>,
        state_counter: Option<u64>,
    ) -> Result<Sent, StoreError>;
    /// Up to `limit` envelopes of a mailbox with ids above `after`, oldest first, stopping
    /// after the envelope whose content takes the total past `max_bytes` (that one is
    /// included, so the caller can tell the page was cut; see [`page_len`]).
    async fn fetch(
        &self,
        device: DeviceKey,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<tacit_api::Envelope>, StoreError>;
    /// The ids among `ids` still in the device's mailbox (a read: on SQLite one of the
    /// reader connections, so an acknowledgement naming made-up ids costs the single writer
    /// nothing).
    async fn stored_ids(&self, device: DeviceKey, ids: &[u64]) -> Result<Vec<u64>, StoreError>;
    /// Deletes the named envelopes from the device's own mailbox in one statement (whatever
    /// the number of ids); returns how many. When any was deleted, the device's state
    /// counter is raised to `state_counter` (when given) in the same transaction.
    async fn ack(
        &self,
        device: DeviceKey,
        ids: &[u64],
        state_counter: Option<u64>,
    ) -> Result<usize, StoreError>;

    /// Stores a group commit in one transaction: the group's epoch must be the commit's
    /// ([`StoreError::StaleEpoch`] with the group's otherwise; a group not stored yet is
    /// created by a commit of epoch 0), the sender a member device ([`StoreError::NotFound`]
    /// otherwise). The commit goes to every member device but the sender (the removed
    /// ones too), stored once; then `removed` leave, `added` join (each an existing device
    /// not in the group yet) and get the Welcome, stored once; the epoch goes up by one.
    /// Idempotency keys as in [`Store::send`].
    async fn group_commit(
        &self,
        sender: &Authed,
        commit: NewCommit,
        now_ms: u64,
        idempotency_key: Option<[u8; tacit_api::limits::IDEMPOTENCY_KEY_BYTES]>,
    ) -> Result<GroupSent, StoreError>;
    /// Stores a group's application message or proposal made in `epoch`, which must be the
    /// group's ([`StoreError::StaleEpoch`] otherwise), from a member device
    /// ([`StoreError::NotFound`] otherwise): stored once, referenced from the mailbox of
    /// every other member device whose mailbox has room (a full one misses it).
    /// `state_counter` is recorded with it as [`Store::send`]'s is.
    #[allow(clippy::too_many_arguments)]
    async fn group_message(
        &self,
        sender: &Authed,
        group_id: Vec<u8>,
        epoch: u64,
        content: Vec<u8>,
        now_ms: u64,
        idempotency_key: Option<[u8; tacit_api::limits::IDEMPOTENCY_KEY_BYTES]>,
        state_counter: Option<u64>,
    ) -> Result<GroupSent, StoreError>;
    /// A group's epoch and member devices, if `member` is one of them.
    async fn group_status(
        &self,
        member: DeviceKey,
        group_id: Vec<u8>,
    ) -> Result<Option<(u64, Vec<GroupMemberName>)>, StoreError>;
    /// Takes `member` out of the group's delivery (true if it was in); a group left with no
    /// member is deleted.
    async fn leave_group(&self, member: DeviceKey, group_id: Vec<u8>) -> Result<bool, StoreError>;

    /// The largest state counter the device reported with a send, an acknowledgement that
    /// deleted something, or a prekey upload (0 if none): every value was recorded in the
    /// transaction of the change it came with, so the world may have seen the device's
    /// state at that count (`tacit_api`'s "State counter").
    async fn state_counter(&self, device: DeviceKey) -> Result<u64, StoreError>;

    /// The stored account key, list version, largest device id ever used and devices of an
    /// account (`None`: no such account).
    async fn list_state(&self, account: AccountId) -> Result<Option<ListState>, StoreError>;
    /// Replaces the device list in one transaction: only if its version is still
    /// [`ListUpdate::previous_version`] ([`StoreError::Conflict`] otherwise, nothing changed),
    /// adding and removing devices as the update says.
    async fn publish_device_list(&self, update: ListUpdate) -> Result<(), StoreError>;
    /// The account's key rotations to lists of a version above `after`, oldest first, at
    /// most `limit`.
    async fn rotations(
        &self,
        account: AccountId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<RotationRecord>, StoreError>;
    /// Logs a device out: deletes its keys, tokens, challenges and mailbox and marks it
    /// logged out (it takes no envelopes and cannot authenticate).
    async fn logout_device(&self, device: DeviceKey) -> Result<(), StoreError>;

    /// Stores a link offer; [`StoreError::Conflict`] if an unexpired slot of that id exists.
    async fn put_link_offer(
        &self,
        slot: [u8; 16],
        offer: Vec<u8>,
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<(), StoreError>;
    /// An unexpired link slot.
    async fn link_slot(&self, slot: [u8; 16], now_ms: u64) -> Result<Option<LinkSlot>, StoreError>;
    /// Stores the answer of an unexpired slot, once: [`StoreError::NotFound`] without the
    /// slot, [`StoreError::Conflict`] when it was answered already.
    async fn put_link_answer(&self, slot: [u8; 16], answer: Vec<u8>, now_ms: u64) -> Result<(), StoreError>;
    /// Deletes a link slot (true if it existed).
    async fn delete_link_slot(&self, slot: [u8; 16]) -> Result<bool, StoreError>;

    /// Creates an empty blob of `size` bytes for `account`: [`StoreError::TooManyBlobs`]
    /// when the account holds `max` unexpired blobs already.
    async fn create_blob(
        &self,
        account: AccountId,
        id: [u8; 16],
        size: u64,
        now_ms: u64,
        expires_ms: u64,
        max: usize,
    ) -> Result<(), StoreError>;
    /// An unexpired blob of `account`.
    async fn blob(
        &self,
        account: AccountId,
        id: [u8; 16],
        now_ms: u64,
    ) -> Result<Option<BlobRecord>, StoreError>;
    /// Appends `data` at `offset`, which must equal the bytes received so far, within the
    /// size ([`StoreError::BlobOffset`] with the blob as stored otherwise); the blob after it.
    async fn put_blob_chunk(
        &self,
        account: AccountId,
        id: [u8; 16],
        offset: u64,
        data: Vec<u8>,
        now_ms: u64,
    ) -> Result<BlobRecord, StoreError>;
    /// Up to `len` bytes of a complete blob from `offset` ([`StoreError::BlobIncomplete`]
    /// before it is complete).
    async fn read_blob(
        &self,
        account: AccountId,
        id: [u8; 16],
        offset: u64,
        len: u64,
        now_ms: u64,
    ) -> Result<Vec<u8>, StoreError>;
    /// Deletes a blob of `account` (true if it existed).
    async fn delete_blob(&self, account: AccountId, id: [u8; 16]) -> Result<bool, StoreError>;

    /// Whether the store can take writes: false once the SQLite writer thread has ended or
    /// its batches keep failing to commit, when PostgreSQL does not answer `SELECT 1`
    /// within a short timeout, and on both while writes are waiting and none has finished
    /// for [`STALL_AFTER`] (a hung fsync, a lock held elsewhere). `GET /healthz` answers
    /// `503 unavailable` when false.
    async fn healthy(&self) -> bool;

    /// Bytes the store may still grow by, for the storage watermark: SQLite, the space
    /// available on the data folder's file system; PostgreSQL, what is left of
    /// [`StoreConfig::database_quota_bytes`] (`None` without one).
    async fn free_bytes(&self) -> Result<Option<u64>, StoreError>;

    /// Flushes and closes (waits for queued writes).
    async fn close(&self);
}

pub use progress::STALL_AFTER;

/// How many of `page` fit in `limit` envelopes and `max_bytes` of content (at least one).
pub(crate) fn page_len(page: &[tacit_api::Envelope], limit: usize, max_bytes: usize) -> usize {
    let mut total = 0usize;
    let mut keep = 0usize;
    for e in page.iter().take(limit) {
        total = total.saturating_add(e.content.as_slice().len());
        if keep > 0 && total > max_bytes {
            break;
        }
        keep += 1;
    }
    keep
}

/// A group envelope kind as both databases store it.
pub(crate) fn kind_code(kind: tacit_api::GroupKind) -> i16 {
    match kind {
        tacit_api::GroupKind::Commit => 1,
        tacit_api::GroupKind::Welcome => 2,
        tacit_api::GroupKind::Message => 3,
    }
}

/// A stored group envelope kind back (`None`: not a group envelope).
pub(crate) fn kind_of(code: Option<i64>) -> Option<tacit_api::GroupKind> {
    match code? {
        1 => Some(tacit_api::GroupKind::Commit),
        2 => Some(tacit_api::GroupKind::Welcome),
        3 => Some(tacit_api::GroupKind::Message),
        _ => None,
    }
}

/// The group part of a fetched envelope, from its payload's columns.
pub(crate) fn group_delivery(
    group_id: Option<Vec<u8>>,
    kind: Option<i64>,
    epoch: Option<i64>,
) -> Option<tacit_api::GroupDelivery> {
    Some(tacit_api::GroupDelivery { id: group_id?.into(), kind: kind_of(kind)?, epoch: to_u64(epoch?) })
}

/// The checks of a group commit against the group as stored, the same on both stores.
pub(crate) fn check_commit_members(sender: &Authed, commit: &NewCommit) -> Result<(), StoreError> {
    let me = (sender.account.clone(), sender.key.device);
    if commit.removed.contains(&me) {
        return Err(StoreError::GroupChange("a commit cannot remove its own sender"));
    }
    if commit.added.contains(&me) {
        return Err(StoreError::GroupChange("a device added is in the group already"));
    }
    Ok(())
}

/// Milliseconds as the signed integer both databases store.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A stored signed integer back to an unsigned one (never negative in our tables).
pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A stored device number (checked into range on insert).
pub(crate) fn to_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

/// Checks that `envelopes` name every device of `current` (sorted ascending) that the
/// newest published list holds (`published`: the ids of the account's list in the newest
/// key transparency epoch, comma-separated; `None` before its first epoch: all of
/// `current`) and no device outside `current`. Senders see only published lists, so a
/// device added since the last epoch may be sent to but is not required, and one removed
/// since is neither.
pub(crate) fn check_devices(
    current: &[u32],
    published: Option<&str>,
    envelopes: &[NewEnvelope],
) -> Result<(), StoreError> {
    let mut named: Vec<u32> = envelopes.iter().map(|e| e.device).collect();
    named.sort_unstable();
    let published: Option<Vec<u32>> =
        published.map(|p| p.split(',').filter_map(|d| d.trim().parse().ok()).collect());
    let missing: Vec<u32> = current
        .iter()
        .copied()
        .filter(|d| published.as_ref().is_none_or(|p| p.contains(d)))
        .filter(|d| named.binary_search(d).is_err())
        .collect();
    let extra: Vec<u32> = named.iter().copied().filter(|d| current.binary_search(d).is_err()).collect();
    if missing.is_empty() && extra.is_empty() {
        Ok(())
    } else {
        Err(StoreError::MismatchedDevices { missing, extra })
    }
}

/// The devices a send must cover: all of the recipient's, except the sending device itself
/// when a device writes to its own account (to reach its sibling devices).
pub(crate) fn required_devices(current: Vec<u32>, recipient: AccountId, sender: &Authed) -> Vec<u32> {
    if recipient == sender.key.account {
        current.into_iter().filter(|&d| d != sender.key.device).collect()
    } else {
        current
    }
}

/// Cuts the requested range of a blob out of its chunks (`(offset, data)`, ascending,
/// covering the range): at most `len` bytes from `offset`.
pub(crate) fn assemble(chunks: &[(u64, Vec<u8>)], offset: u64, len: u64) -> Vec<u8> {
    let end = offset.saturating_add(len);
    let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0).min(1 << 20));
    for (start, data) in chunks {
        let chunk_end = start.saturating_add(data.len() as u64);
        let from = offset.max(*start);
        let to = end.min(chunk_end);
        if from >= to {
            continue;
        }
        let a = usize::try_from(from - start).unwrap_or(usize::MAX);
        let b = usize::try_from(to - start).unwrap_or(usize::MAX);
        if let Some(part) = data.get(a..b) {
            out.extend_from_slice(part);
        }
    }
    out
}

/// Ids as the JSON array SQLite's `json_each` reads: a whole id list is one parameter of one
/// statement (no statement per id, and no SQL text that changes with the list's length).
pub(crate) fn json_ids<T: std::fmt::Display>(ids: &[T]) -> String {
    let mut out = String::with_capacity(2 + ids.len() * 12);
    out.push('[');
    for (n, id) in ids.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push_str(&id.to_string());
    }
    out.push(']');
    out
}
