//! Auditing (feature `audit`): an epoch's append-only proof checked with akd's own auditor
//! (`akd::auditor::verify_consecutive_append_only`), which rebuilds the proof's nodes in
//! memory and requires them to hash to the previous root, and with the inserted leaves to
//! the new one. The proof is akd's protobuf `SingleAppendOnlyProof`, the audit blob WhatsApp
//! publishes and plexi reads.

use akd::storage::StorageManager;
use akd::storage::memory::AsyncInMemoryDatabase;
use protobuf::Message as _;

use crate::{Config, KtError};

/// The largest append-only proof accepted (6.0 MB measured for a 1,000-update epoch at
/// 1,000,000 accounts; epochs of up to 20,000 updates).
pub const MAX_AUDIT_PROOF_BYTES: usize = 256 * 1024 * 1024;

/// Checks that `proof` takes the directory from `previous` to `current` at `epoch`.
pub async fn verify_append_only(
    proof: &[u8],
    previous: [u8; 32],
    current: [u8; 32],
    epoch: u64,
) -> Result<(), KtError> {
    if proof.len() > MAX_AUDIT_PROOF_BYTES {
        return Err(KtError::TooLarge("append-only proof"));
    }
    let parsed = akd_core::proto::specs::types::SingleAppendOnlyProof::parse_from_bytes(proof)
        .map_err(|_| KtError::Malformed("append-only proof"))?;
    let proof =
        akd::SingleAppendOnlyProof::try_from(&parsed).map_err(|_| KtError::Malformed("append-only proof"))?;
    akd::auditor::verify_consecutive_append_only::<Config>(&proof, previous, current, epoch)
        .await
        .map_err(|e| KtError::BadProof(format!("epoch {epoch}: {e}")))
}

/// The root of an empty directory (epoch 0) under [`Config`]: where the first proof starts.
pub async fn empty_root() -> Result<[u8; 32], KtError> {
    let db = AsyncInMemoryDatabase::new();
    let manager = StorageManager::new_no_cache(db);
    let dir = akd::Directory::<Config, _, _>::new(
        manager,
        akd::ecvrf::HardCodedAkdVRF,
        akd::AzksParallelismConfig::default(),
    )
    .await
    .map_err(|e| KtError::BadProof(e.to_string()))?;
    Ok(dir.get_epoch_hash().await.map_err(|e| KtError::BadProof(e.to_string()))?.1)
}
