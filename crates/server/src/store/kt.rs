//! What the key transparency directory keeps in the server's own database (schema
//! migration 8, SQLite and PostgreSQL alike): akd's azks and tree nodes (`kt_records`), its
//! value states (`kt_values`), the accounts whose keys changed since the last epoch
//! (`kt_pending`, written in the same transaction as the change), each published epoch's
//! signed root and append-only proof (`kt_epochs`), and the directory's own settings
//! (`kt_secrets`: the VRF key, the root signing key, the namespace; never a user's secret).

use async_trait::async_trait;

pub use crate::kt::records::StoredValue;

use super::StoreError;

/// An auditor's countersignature of an epoch root (plexi's `SignatureMessage` under the
/// auditor's Ed25519 key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KtCosignature {
    /// The auditor's public key.
    pub auditor: [u8; 32],
    /// When the auditor signed (milliseconds since the Unix epoch).
    pub timestamp_ms: u64,
    /// The signature.
    pub signature: [u8; 64],
}

/// Tests only (feature `malicious`, which no release build has): with
/// `TACIT_TEST_KT_PAUSE_IN_COMMIT_MS` set, an epoch's write waits that long inside its
/// transaction, after writing everything and before committing, and says so on standard
/// error, so a test can kill the process exactly there.
#[cfg(feature = "malicious")]
pub(crate) fn pause_in_commit() -> Option<std::time::Duration> {
    let ms: u64 = std::env::var("TACIT_TEST_KT_PAUSE_IN_COMMIT_MS").ok()?.parse().ok()?;
    eprintln!("tacit test: paused inside the epoch transaction for {ms} ms");
    Some(std::time::Duration::from_millis(ms))
}

/// One epoch as published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KtEpoch {
    /// The epoch.
    pub epoch: u64,
    /// Its akd root hash.
    pub root: [u8; 32],
    /// When it was signed (milliseconds since the Unix epoch).
    pub timestamp_ms: u64,
    /// The transparency key's signature over plexi's `SignatureMessage`.
    pub signature: [u8; 64],
    /// akd's append-only proof from the previous epoch to this one (protobuf
    /// `SingleAppendOnlyProof`).
    pub audit_proof: Vec<u8>,
}

/// One write of the directory, applied in one transaction.
#[derive(Clone, Debug, Default)]
pub struct KtWrite {
    /// azks and tree node records: `(akd binary id, encoding)`, inserted or replaced.
    pub records: Vec<(Vec<u8>, Vec<u8>)>,
    /// New value states.
    pub values: Vec<StoredValue>,
    /// The pending changes (by sequence number) this write publishes: deleted with it.
    pub published: Vec<i64>,
    /// The device ids of each list this write publishes, by account name: the server's
    /// device-set check requires envelopes for the published devices only.
    pub published_devices: Vec<(String, String)>,
    /// An epoch's commit: the stored directory must be at this epoch (the one before), or
    /// nothing is written ([`StoreError::Conflict`]): two publishers on one database (nodes
    /// of a fleet) cannot both extend the same epoch.
    pub extends: Option<u64>,
}

/// An account's current signed list, as the publisher reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KtCurrent {
    /// The account name.
    pub name: String,
    /// Its signed device list.
    pub device_list: Vec<u8>,
    /// The ids of its devices (the list's), comma-separated, read with the list.
    pub devices: String,
}

/// The key transparency directory's storage.
#[async_trait]
pub trait KtStore: Send + Sync {
    /// Records by akd binary id; ids not stored are left out.
    async fn kt_records(&self, ids: Vec<Vec<u8>>) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError>;
    /// Every stored value state of these labels.
    async fn kt_values(&self, labels: Vec<Vec<u8>>) -> Result<Vec<StoredValue>, StoreError>;
    /// Applies a write atomically.
    async fn kt_write(&self, write: KtWrite) -> Result<(), StoreError>;
    /// Accounts changed since the last epoch: `(sequence number, account name)`, oldest
    /// first, at most `limit`.
    async fn kt_pending(&self, limit: usize) -> Result<Vec<(i64, String)>, StoreError>;
    /// Whether `name` has a change waiting for the next epoch.
    async fn kt_is_pending(&self, name: &str) -> Result<bool, StoreError>;
    /// The signed device lists the accounts hold now, with their device ids; a name not
    /// registered is left out.
    async fn kt_current(&self, names: Vec<String>) -> Result<Vec<KtCurrent>, StoreError>;
    /// Stores an auditor's cosignature of an epoch's root (verified by the caller); a newer
    /// one of the same auditor and epoch replaces it.
    async fn kt_put_cosignature(&self, epoch: u64, c: KtCosignature) -> Result<(), StoreError>;
    /// The cosignatures of an epoch's root, by auditor key.
    async fn kt_cosignatures(&self, epoch: u64) -> Result<Vec<KtCosignature>, StoreError>;
    /// The roots of the epochs from `from` on, oldest first, at most `limit` (the audit
    /// blob listing).
    async fn kt_roots(&self, from: u64, limit: usize) -> Result<Vec<(u64, [u8; 32])>, StoreError>;
    /// Records a published epoch (once; an epoch stored already is left as it is).
    async fn kt_put_epoch(&self, epoch: KtEpoch) -> Result<(), StoreError>;
    /// One published epoch.
    async fn kt_epoch(&self, epoch: u64) -> Result<Option<KtEpoch>, StoreError>;
    /// The newest published epoch.
    async fn kt_latest_epoch(&self) -> Result<Option<KtEpoch>, StoreError>;
    /// The newest published epoch's number only (a cheap read, before every proof served).
    async fn kt_newest_epoch(&self) -> Result<Option<u64>, StoreError>;
    /// The directory setting `name` (its secret keys, its namespace), storing `candidate` as
    /// it if there is none yet: the first start makes them and every later one, and every
    /// node of a fleet, reads the same.
    async fn kt_setting(&self, name: &str, candidate: Vec<u8>) -> Result<Vec<u8>, StoreError>;
    /// Retires the directory for a new log, in one transaction (`tacit server --kt-new-log`,
    /// after the data was restored from an older copy): its records, value states, epochs,
    /// cosignatures and its VRF and root signing keys are deleted (the namespace is kept),
    /// no account counts as published, and every account is queued for the new log's first
    /// epoch.
    async fn kt_new_log(&self) -> Result<(), StoreError>;
}

/// The statements of [`KtStore::kt_new_log`], the same on SQLite and PostgreSQL.
pub(crate) const NEW_LOG_SQL: &str = "DELETE FROM kt_records; DELETE FROM kt_values; DELETE FROM kt_epochs; \
    DELETE FROM kt_cosignatures; DELETE FROM kt_pending; \
    DELETE FROM kt_secrets WHERE name IN ('vrf', 'root_signing'); \
    UPDATE accounts SET kt_devices = NULL; \
    INSERT INTO kt_pending (name) SELECT name FROM accounts ORDER BY id;";

/// A cosignature row's columns as read: (auditor, timestamp, signature).
pub(crate) fn to_cosignature(
    auditor: Vec<u8>,
    timestamp_ms: u64,
    signature: Vec<u8>,
) -> Result<KtCosignature, StoreError> {
    Ok(KtCosignature {
        auditor: auditor
            .try_into()
            .map_err(|_| StoreError::Backend("a stored auditor key is not 32 bytes".into()))?,
        timestamp_ms,
        signature: signature
            .try_into()
            .map_err(|_| StoreError::Backend("a stored cosignature is not 64 bytes".into()))?,
    })
}
