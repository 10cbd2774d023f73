//! Checking the server's akd proofs against a signed root the client already verified
//! ([`crate::SignedRoot::verify`]) with akd's own verifier (`akd_core::verify`). The proofs
//! travel in akd's protobuf encoding (about 3.6 times smaller than its serde form).

use akd_core::proto::specs::types as pb;
use akd_core::verify::history::{HistoryParams, HistoryVerificationParams};
use akd_core::{AkdLabel, HistoryProof, LookupProof};
use protobuf::Message as _;

use crate::{AccountEntry, Config, KtError, SignedRoot, account_label};

/// The largest lookup proof accepted: measured at 4,062 bytes for 1,000,000 accounts
/// (`docs/BENCHMARKS.md`); the bound leaves room for 2^40 accounts and the largest entry.
pub const MAX_LOOKUP_PROOF_BYTES: usize = 64 * 1024 + crate::MAX_ENTRY_BYTES;

/// The largest history proof accepted (25 KB for 10 versions at 1,000,000 accounts; the
/// server pages longer histories).
pub const MAX_HISTORY_PROOF_BYTES: usize = 4 * 1024 * 1024;

/// What a verified lookup proves: the account's latest version in the signed epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedLookup {
    /// The label's version (1 for its first entry).
    pub version: u64,
    /// The epoch the version was published in.
    pub epoch: u64,
    /// What the version commits to.
    pub entry: AccountEntry,
}

/// One version of an account's history.
pub type HistoryEntry = VerifiedLookup;

/// akd's verdict as ours: a VRF proof that fails binds the proof to another label (the proof
/// is another account's); anything else is a proof that does not verify.
fn bad(e: akd_core::verify::VerificationError) -> KtError {
    match e {
        akd_core::verify::VerificationError::Vrf(_) => KtError::WrongAccount,
        e => KtError::BadProof(e.to_string()),
    }
}

/// Verifies a lookup proof for `name` against `root` (whose signature the caller verified)
/// and the server's VRF public key.
pub fn verify_lookup(
    vrf_public_key: &[u8; 32],
    root: &SignedRoot,
    name: &tacit_protocol::AccountName,
    proof: &[u8],
) -> Result<VerifiedLookup, KtError> {
    if proof.len() > MAX_LOOKUP_PROOF_BYTES {
        return Err(KtError::TooLarge("lookup proof"));
    }
    let parsed = pb::LookupProof::parse_from_bytes(proof).map_err(|_| KtError::Malformed("lookup proof"))?;
    let proof = LookupProof::try_from(&parsed).map_err(|_| KtError::Malformed("lookup proof"))?;
    let label = AkdLabel(account_label(name));
    let result = akd_core::verify::lookup_verify::<Config>(
        vrf_public_key,
        root.root.root,
        root.root.epoch,
        label,
        proof,
    )
    .map_err(bad)?;
    if result.epoch > root.root.epoch {
        return Err(KtError::BadProof("a version from after the signed epoch".into()));
    }
    Ok(VerifiedLookup {
        version: result.version,
        epoch: result.epoch,
        entry: AccountEntry::from_bytes(&result.value.0)?,
    })
}

/// Verifies a complete key history proof for `name` against `root`; versions newest first.
pub fn verify_history(
    vrf_public_key: &[u8; 32],
    root: &SignedRoot,
    name: &tacit_protocol::AccountName,
    proof: &[u8],
) -> Result<Vec<HistoryEntry>, KtError> {
    if proof.len() > MAX_HISTORY_PROOF_BYTES {
        return Err(KtError::TooLarge("history proof"));
    }
    let parsed =
        pb::HistoryProof::parse_from_bytes(proof).map_err(|_| KtError::Malformed("history proof"))?;
    let proof = HistoryProof::try_from(&parsed).map_err(|_| KtError::Malformed("history proof"))?;
    let label = AkdLabel(account_label(name));
    let results = akd_core::verify::key_history_verify::<Config>(
        vrf_public_key,
        root.root.root,
        root.root.epoch,
        label,
        proof,
        HistoryVerificationParams::Default { history_params: HistoryParams::Complete },
    )
    .map_err(bad)?;
    results
        .into_iter()
        .map(|r| {
            Ok(HistoryEntry {
                version: r.version,
                epoch: r.epoch,
                entry: AccountEntry::from_bytes(&r.value.0)?,
            })
        })
        .collect()
}
