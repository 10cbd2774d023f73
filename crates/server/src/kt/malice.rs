//! A lying key transparency directory, for tests only (cargo feature `malicious`, which no
//! release build enables and no configuration or flag can switch on: only a test holding
//! the server's [`crate::AppState`] installs one, with [`crate::AppState::set_malice`]).
//!
//! The liar has everything a malicious operator has: the directory's VRF key, its root
//! signing key, and its store. [`Malice`] replaces the server's answers on the transparency
//! routes; [`Fork`] is a second directory over the same keys, in memory, replayed from the
//! real log's history (every value passed through a rewrite) and then extended at will, so
//! a test can show one client a log that no honest server published, with valid signatures
//! and valid proofs. `crates/client/tests/malicious.rs` turns each behaviour of
//! `docs/THREAT_MODEL.md` §"A lying directory" into a test against it.

use std::collections::BTreeMap;

use akd::storage::StorageManager;
use akd::storage::memory::AsyncInMemoryDatabase;
use akd::{AkdLabel, AkdValue, AzksParallelismConfig, Directory};
use protobuf::Message as _;
use tacit_api::{KtInfo, KtProofResponse, SignedRootWire};
use tacit_protocol::AccountName;
use tacit_transparency::{Config, EpochRoot, account_label};

use super::{KtFailure, Transparency, Vrf, akd};

/// A request on the transparency routes, as the liar sees it.
#[derive(Clone, Copy, Debug)]
pub enum KtRequest<'a> {
    /// `GET /v1/kt`.
    Info,
    /// `GET /v1/kt/epochs/{epoch}`.
    Epoch(u64),
    /// `GET /v1/kt/epochs/{epoch}/audit`.
    Audit(u64),
    /// `GET /v1/kt/lookup/{name}`.
    Lookup(&'a str),
    /// `GET /v1/kt/history/{name}`.
    History(&'a str),
}

/// The liar's answer instead of the honest one.
#[derive(Clone, Debug)]
pub enum KtLie {
    /// For [`KtRequest::Info`].
    Info(KtInfo),
    /// For [`KtRequest::Epoch`].
    Root(SignedRootWire),
    /// For [`KtRequest::Lookup`] and [`KtRequest::History`].
    Proof(KtProofResponse),
    /// For [`KtRequest::Audit`].
    Bytes(Vec<u8>),
    /// 404 for any request.
    NotFound,
}

/// A lying directory: `None` answers honestly.
pub trait Malice: Send + Sync + 'static {
    /// The answer to `request` from `who` (the account whose bearer token came with it, if
    /// any), or `None` for the honest one.
    fn answer(&self, who: Option<&str>, request: KtRequest<'_>) -> Option<KtLie>;

    /// Whether the publisher leaves `name`'s changes out of the directory (they are marked
    /// published all the same, as an omitting server would).
    fn omits(&self, _name: &str) -> bool {
        false
    }
}

type MemDir = Directory<Config, AsyncInMemoryDatabase, Vrf>;

/// A second directory over the server's keys, in memory.
pub struct Fork {
    dir: MemDir,
    signer: tacit_transparency::RootSigner,
    namespace: String,
    roots: BTreeMap<u64, SignedRootWire>,
}

impl Fork {
    /// Replays the real log's history of `names` (every account the log holds, or the roots
    /// differ from the first epoch on) up to epoch `upto`, one fork epoch per real epoch,
    /// each value passed through `rewrite(name, epoch, value)`. Each replayed epoch is signed
    /// with the server's key at its real timestamp.
    pub async fn replay(
        kt: &Transparency,
        names: &[AccountName],
        upto: u64,
        rewrite: impl Fn(&AccountName, u64, Vec<u8>) -> Vec<u8>,
    ) -> Result<Self, KtFailure> {
        let storage = StorageManager::new_no_cache(AsyncInMemoryDatabase::new());
        let dir =
            MemDir::new(storage, kt.vrf.clone(), AzksParallelismConfig::default()).await.map_err(akd)?;
        let mut fork = Self {
            dir,
            signer: tacit_transparency::RootSigner::from_seed(*kt.signer.seed()).map_err(akd)?,
            namespace: kt.settings.namespace.clone(),
            roots: BTreeMap::new(),
        };
        let labels: Vec<Vec<u8>> = names.iter().map(account_label).collect();
        let mut by_epoch: BTreeMap<u64, Vec<(AkdLabel, AkdValue)>> = BTreeMap::new();
        for v in kt.store.kt_values(labels.clone()).await? {
            let Some(name) = labels.iter().position(|l| *l == v.label).and_then(|i| names.get(i)) else {
                continue;
            };
            if v.epoch <= upto {
                let value = rewrite(name, v.epoch, v.value);
                by_epoch.entry(v.epoch).or_default().push((AkdLabel(v.label), AkdValue(value)));
            }
        }
        for (epoch, updates) in by_epoch {
            let timestamp_ms = kt.store.kt_epoch(epoch).await?.map_or(0, |e| e.timestamp_ms);
            let got = fork.publish_at(updates, timestamp_ms).await?;
            if got != epoch {
                return Err(KtFailure::Akd(format!(
                    "the fork reached epoch {got} replaying epoch {epoch}: some epoch held an account not named"
                )));
            }
        }
        Ok(fork)
    }

    async fn publish_at(
        &mut self,
        updates: Vec<(AkdLabel, AkdValue)>,
        timestamp_ms: u64,
    ) -> Result<u64, KtFailure> {
        let hash = self.dir.publish(updates).await.map_err(akd)?;
        let signed = self.signer.sign(EpochRoot {
            namespace: self.namespace.clone(),
            timestamp_ms,
            epoch: hash.0,
            root: hash.1,
        });
        self.roots.insert(
            hash.0,
            SignedRootWire {
                namespace: self.namespace.clone(),
                timestamp_ms,
                epoch: hash.0,
                root: hash.1.to_vec().into(),
                signature: signed.signature.to_vec().into(),
                cosignatures: Vec::new(),
            },
        );
        Ok(hash.0)
    }

    /// Publishes one fork epoch of `updates` (account, raw entry bytes), signed at
    /// `timestamp_ms`; returns its number.
    pub async fn publish(
        &mut self,
        updates: Vec<(AccountName, Vec<u8>)>,
        timestamp_ms: u64,
    ) -> Result<u64, KtFailure> {
        let updates = updates.into_iter().map(|(n, v)| (AkdLabel(account_label(&n)), AkdValue(v))).collect();
        self.publish_at(updates, timestamp_ms).await
    }

    /// The fork's signed root of `epoch`.
    pub fn root(&self, epoch: u64) -> Option<SignedRootWire> {
        self.roots.get(&epoch).cloned()
    }

    /// The fork's newest signed root.
    pub fn latest(&self) -> Option<SignedRootWire> {
        self.roots.values().next_back().cloned()
    }

    /// A lookup proof of `name` at the fork's newest epoch.
    pub async fn lookup(&self, name: &AccountName) -> Result<KtProofResponse, KtFailure> {
        let (proof, hash) = self.dir.lookup(AkdLabel(account_label(name))).await.map_err(akd)?;
        let proof = akd_core::proto::specs::types::LookupProof::from(&proof).write_to_bytes().map_err(akd)?;
        self.answer(proof, hash.0)
    }

    /// A complete history proof of `name` at the fork's newest epoch.
    pub async fn history(&self, name: &AccountName) -> Result<KtProofResponse, KtFailure> {
        let (proof, hash) = self
            .dir
            .key_history(&AkdLabel(account_label(name)), akd::HistoryParams::Complete)
            .await
            .map_err(akd)?;
        let proof =
            akd_core::proto::specs::types::HistoryProof::from(&proof).write_to_bytes().map_err(akd)?;
        self.answer(proof, hash.0)
    }

    /// The fork's append-only proof from `epoch - 1` to `epoch`.
    pub async fn audit(&self, epoch: u64) -> Result<Vec<u8>, KtFailure> {
        let proof = self.dir.audit(epoch.saturating_sub(1), epoch).await.map_err(akd)?;
        let single = proof.proofs.first().ok_or_else(|| KtFailure::Akd("empty audit proof".into()))?;
        akd_core::proto::specs::types::SingleAppendOnlyProof::from(single).write_to_bytes().map_err(akd)
    }

    fn answer(&self, proof: Vec<u8>, epoch: u64) -> Result<KtProofResponse, KtFailure> {
        let root =
            self.root(epoch).ok_or_else(|| KtFailure::Akd(format!("no fork root for epoch {epoch}")))?;
        Ok(KtProofResponse { proof: proof.into(), root, pending: false })
    }
}

impl Transparency {
    /// The server's own (honest) lookup answer, as the route gives it.
    pub async fn honest_lookup(&self, name: &AccountName) -> Result<KtProofResponse, KtFailure> {
        let p = self.lookup(name).await?;
        let root = self.wire_cosigned(&p.epoch).await?;
        Ok(KtProofResponse { proof: p.proof.into(), root, pending: p.pending })
    }

    /// The server's own signed root of `epoch`, as the route gives it.
    pub async fn honest_root(&self, epoch: u64) -> Result<Option<SignedRootWire>, KtFailure> {
        match self.epoch(epoch).await? {
            Some(e) => Ok(Some(self.wire_cosigned(&e).await?)),
            None => Ok(None),
        }
    }
}
