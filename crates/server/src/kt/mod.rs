//! The key transparency directory (issue 10, `docs/PROTOCOL.md` §12): every account's signed
//! device list, which carries its account key, committed in Meta's `akd` under
//! `WhatsAppV1Configuration`, one label per account (its name behind the VRF), one version
//! per change. Changes are queued in the store in the same transaction as the change itself
//! (`kt_pending`) and published together as one epoch at most every `epoch_interval`
//! ([`Transparency::run`]); each epoch's root is signed by the server's transparency key as
//! plexi's `SignatureMessage`, and its append-only proof from the previous epoch is kept
//! for auditors.
//!
//! Crash safety: an epoch's records and the end of the pending changes it publishes commit in
//! one transaction ([`db::AkdDb`]); the signature and audit proof follow, and a start finds
//! an epoch without them and completes it before serving anything. Proofs are only served
//! for signed epochs: publishing and signing hold the directory's write lock.

mod db;
#[cfg(feature = "malicious")]
pub mod malice;
pub(crate) mod records;

use std::sync::Arc;
use std::time::Duration;

use akd::storage::StorageManager;
use akd::{AkdLabel, AkdValue, AzksParallelismConfig, Directory};
use akd_core::ecvrf::{VRFKeyStorage, VrfError};
use protobuf::Message as _;
use tacit_transparency::{AccountEntry, Config, EpochRoot, RootSigner, SignedRoot, account_label};
use tokio::sync::RwLock;
use zeroize::Zeroizing;

use crate::store::{KtEpoch, KtStore, KtWrite, StoreError};
pub use db::AkdDb;

/// The default of [`KtSettings::epoch_interval`].
pub const DEFAULT_EPOCH_INTERVAL: Duration = Duration::from_secs(1);

/// Most pending changes one epoch publishes (more wait for the next).
pub const MAX_EPOCH_UPDATES: usize = 20_000;

/// How the directory runs.
#[derive(Clone, Debug)]
pub struct KtSettings {
    /// The log's name in signed roots (plexi's namespace), e.g. `tacit.example.org.v1`.
    pub namespace: String,
    /// Pending changes publish together at most this often.
    pub epoch_interval: Duration,
    /// The namespace was configured (a stored one that differs is then an error); otherwise
    /// it is only the default for a new directory.
    pub explicit_namespace: bool,
    /// Auditors whose cosignatures are kept and served (Ed25519 public keys).
    pub auditors: Vec<[u8; 32]>,
}

/// Why a cosignature was refused.
#[derive(Debug, thiserror::Error)]
pub enum CosignFailure {
    /// The store or the directory failed.
    #[error(transparent)]
    Kt(#[from] KtFailure),
    /// No such epoch.
    #[error("no such epoch")]
    UnknownEpoch,
    /// The key is not one of the auditors this server lists.
    #[error("not an auditor this server lists")]
    NotListed,
    /// The signature does not verify over the epoch's root.
    #[error("the cosignature does not verify over the epoch's root")]
    BadSignature,
}

/// Why the directory failed.
#[derive(Debug, thiserror::Error)]
pub enum KtFailure {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// akd failed (a storage error inside it, or a bug).
    #[error("key transparency directory: {0}")]
    Akd(String),
    /// The label has no version in a signed epoch yet.
    #[error("not in the key transparency directory yet")]
    NotFound,
}

fn akd(e: impl core::fmt::Display) -> KtFailure {
    KtFailure::Akd(e.to_string())
}

/// A label akd has no version of is [`KtFailure::NotFound`]; anything else is akd's failure.
fn not_found(e: akd::errors::AkdError) -> KtFailure {
    match e {
        akd::errors::AkdError::Storage(akd::errors::StorageError::NotFound(_)) => KtFailure::NotFound,
        e => akd(e),
    }
}

/// The VRF key, read from the store.
#[derive(Clone)]
struct Vrf(Arc<Zeroizing<[u8; 32]>>);

#[async_trait::async_trait]
impl VRFKeyStorage for Vrf {
    async fn retrieve(&self) -> Result<Vec<u8>, VrfError> {
        Ok(self.0.to_vec())
    }
}

type Dir = Directory<Config, AkdDb, Vrf>;

/// akd's storage over the store, with akd's cache: a publish preloads the nodes its paths
/// need into it in a few batched reads, and proofs read the top of the tree from it.
///
/// Entries live 30 seconds, and the cache is cleaned once a minute, inside whichever call
/// comes next (a lookup or a publish). A clean drops expired entries in one pass; only
/// when what is left is over the memory bound does akd sort every entry by age to evict
/// the oldest, which stalled that call for 6.6 s at 1,000,000 accounts (`scripts/bench_kt`,
/// with entries kept 10 minutes under a 256 MiB bound). Entries that expire within half a
/// minute keep the sort for a working set over 1 GiB; nodes a publish needs again are
/// reloaded by its preload (0.6 s for 206,175 nodes at 1,000,000 accounts).
pub fn directory_storage(db: AkdDb) -> StorageManager<AkdDb> {
    StorageManager::new(
        db,
        Some(Duration::from_secs(30)),
        Some(1024 * 1024 * 1024),
        Some(Duration::from_secs(60)),
    )
}

/// A lookup proof with the signed root it verifies against.
pub struct Proof {
    /// akd's protobuf encoding of the proof.
    pub proof: Vec<u8>,
    /// The signed epoch.
    pub epoch: KtEpoch,
    /// Lookups: the account has a change waiting for the next epoch.
    pub pending: bool,
}

/// The running directory.
pub struct Transparency {
    store: Arc<dyn KtStore>,
    db: AkdDb,
    vrf: Vrf,
    vrf_public: [u8; 32],
    signer: RootSigner,
    settings: KtSettings,
    /// The directory; the write lock is held from publishing an epoch to storing its
    /// signature, so a proof is never served for an epoch that is not signed yet.
    dir: RwLock<Dir>,
    /// The newest signed epoch.
    latest: std::sync::RwLock<Option<KtEpoch>>,
    /// [`Self::empty_root`].
    empty_root: [u8; 32],
    /// A lying directory installed by a test (feature `malicious` only).
    #[cfg(feature = "malicious")]
    pub(crate) malice: std::sync::RwLock<Option<Arc<dyn malice::Malice>>>,
}

/// The stored 32-byte secret `name`, made on the first start.
async fn secret(store: &dyn KtStore, name: &str) -> Result<Zeroizing<[u8; 32]>, KtFailure> {
    let mut fresh = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(fresh.as_mut_slice()).map_err(|_| KtFailure::Akd("no randomness".into()))?;
    let stored = Zeroizing::new(store.kt_setting(name, fresh.to_vec()).await?);
    let mut out = Zeroizing::new([0u8; 32]);
    if stored.len() != 32 {
        return Err(KtFailure::Akd(format!("the stored {name} key is not 32 bytes")));
    }
    out.copy_from_slice(&stored);
    Ok(out)
}

/// `--kt-new-log RETIRING`: starts a new log if `retiring` is the directory's root signing
/// key (a restored copy of the data can only continue the log it was copied from, which the
/// clients and auditors that saw later epochs see as a rollback, then as a fork: a new log
/// under a new key is the honest way on). Returns whether it did; under another key (for
/// instance because the new log was started already) it changes nothing, so a flag left in
/// a service's command line starts no second new log.
pub async fn start_new_log(store: &dyn KtStore, retiring: [u8; 32]) -> Result<bool, KtFailure> {
    let current = RootSigner::from_seed(*secret(store, "root_signing").await?).map_err(akd)?.public();
    if current != retiring {
        return Ok(false);
    }
    store.kt_new_log().await?;
    Ok(true)
}

impl Transparency {
    /// Opens the directory on `store`: reads its keys (making them on the first start),
    /// completes an epoch a crash left unsigned, and is ready to publish and serve proofs.
    pub async fn open(store: Arc<dyn KtStore>, settings: KtSettings, now_ms: u64) -> Result<Self, KtFailure> {
        let vrf = Vrf(Arc::new(secret(&*store, "vrf").await?));
        let signer = RootSigner::from_seed(*secret(&*store, "root_signing").await?).map_err(akd)?;
        let stored = store.kt_setting("namespace", settings.namespace.clone().into_bytes()).await?;
        let namespace = String::from_utf8(stored).map_err(|_| KtFailure::Akd("stored namespace".into()))?;
        if namespace != settings.namespace && settings.explicit_namespace {
            return Err(KtFailure::Akd(format!(
                "this directory's log is named {namespace:?}, not {:?}: a log keeps its name (remove \
                 kt_namespace from the configuration, or set it to the stored name)",
                settings.namespace
            )));
        }
        let settings = KtSettings { namespace, ..settings };
        let vrf_public: [u8; 32] = vrf.get_vrf_public_key().await.map_err(akd)?.to_bytes();
        let db = AkdDb::new(store.clone());
        let dir = Dir::new(directory_storage(db.clone()), vrf.clone(), AzksParallelismConfig::default())
            .await
            .map_err(akd)?;
        let kt = Self {
            store,
            db,
            vrf,
            vrf_public,
            signer,
            settings,
            dir: RwLock::new(dir),
            latest: std::sync::RwLock::new(None),
            empty_root: tacit_transparency::empty_root().await.map_err(akd)?,
            #[cfg(feature = "malicious")]
            malice: std::sync::RwLock::new(None),
        };
        {
            let dir = kt.dir.write().await;
            kt.finish_epoch(&dir, now_ms).await?;
        }
        Ok(kt)
    }

    /// The transparency key clients pin.
    pub fn public_key(&self) -> [u8; 32] {
        self.signer.public()
    }

    /// The VRF public key proofs verify under.
    pub fn vrf_public_key(&self) -> [u8; 32] {
        self.vrf_public
    }

    /// The root of an empty directory (epoch 0), where the first append-only proof starts.
    pub fn empty_root(&self) -> [u8; 32] {
        self.empty_root
    }

    /// The settings.
    pub fn settings(&self) -> &KtSettings {
        &self.settings
    }

    /// The newest signed epoch (`None` before the first).
    pub fn latest(&self) -> Option<KtEpoch> {
        self.latest.read().ok().and_then(|g| g.clone())
    }

    /// The signed form of a stored epoch.
    pub fn signed(&self, e: &KtEpoch) -> SignedRoot {
        SignedRoot {
            root: EpochRoot {
                namespace: self.settings.namespace.clone(),
                timestamp_ms: e.timestamp_ms,
                epoch: e.epoch,
                root: e.root,
            },
            signature: e.signature,
        }
    }

    /// A stored epoch as the routes send it.
    pub fn wire(&self, e: &KtEpoch) -> tacit_api::SignedRootWire {
        tacit_api::SignedRootWire {
            namespace: self.settings.namespace.clone(),
            timestamp_ms: e.timestamp_ms,
            epoch: e.epoch,
            root: e.root.to_vec().into(),
            signature: e.signature.to_vec().into(),
            cosignatures: Vec::new(),
        }
    }

    /// [`Self::wire`] with the auditors' cosignatures of the epoch (one indexed read; none
    /// when the server lists no auditor).
    pub async fn wire_cosigned(&self, e: &KtEpoch) -> Result<tacit_api::SignedRootWire, KtFailure> {
        let mut w = self.wire(e);
        if !self.settings.auditors.is_empty() {
            w.cosignatures = self
                .store
                .kt_cosignatures(e.epoch)
                .await?
                .into_iter()
                .filter(|c| self.settings.auditors.contains(&c.auditor))
                .take(tacit_api::limits::MAX_KT_AUDITORS)
                .map(|c| tacit_api::KtCosignatureWire {
                    auditor: c.auditor.to_vec().into(),
                    timestamp_ms: c.timestamp_ms,
                    signature: c.signature.to_vec().into(),
                })
                .collect();
        }
        Ok(w)
    }

    /// Keeps an auditor's cosignature of `epoch`'s root: from a listed auditor, verified
    /// (plexi's `SignatureMessage` of the root, the namespace and the auditor's timestamp,
    /// under the auditor's key) before it is stored.
    pub async fn cosign(&self, epoch: u64, c: crate::store::KtCosignature) -> Result<(), CosignFailure> {
        if !self.settings.auditors.contains(&c.auditor) {
            return Err(CosignFailure::NotListed);
        }
        let e =
            self.store.kt_epoch(epoch).await.map_err(KtFailure::from)?.ok_or(CosignFailure::UnknownEpoch)?;
        let key =
            tacit_protocol::VerifyingKey::from_bytes(c.auditor).map_err(|_| CosignFailure::BadSignature)?;
        let signed = SignedRoot {
            root: EpochRoot {
                namespace: self.settings.namespace.clone(),
                timestamp_ms: c.timestamp_ms,
                epoch,
                root: e.root,
            },
            signature: c.signature,
        };
        signed.verify(&key, &self.settings.namespace).map_err(|_| CosignFailure::BadSignature)?;
        self.store.kt_put_cosignature(epoch, c).await.map_err(KtFailure::from)?;
        Ok(())
    }

    /// `GET /v1/kt`: the directory's keys and newest signed epoch.
    pub fn info(&self) -> tacit_api::KtInfo {
        tacit_api::KtInfo {
            namespace: self.settings.namespace.clone(),
            public_key: self.public_key().to_vec().into(),
            vrf_public_key: self.vrf_public_key().to_vec().into(),
            epoch_interval_ms: u64::try_from(self.settings.epoch_interval.as_millis()).unwrap_or(u64::MAX),
            latest: self.latest().map(|e| self.wire(&e)),
        }
    }

    /// Caches the newest signed epoch, without its audit proof (megabytes for a large
    /// epoch; served from the store by its own route), so proofs and `/v1/kt` clone little.
    fn set_latest(&self, e: KtEpoch) {
        if let Ok(mut g) = self.latest.write() {
            *g = Some(KtEpoch { audit_proof: Vec::new(), ..e });
        }
    }

    /// Signs the directory's current epoch and stores its append-only proof, unless that
    /// was done already. Runs under the write lock.
    async fn finish_epoch(&self, dir: &Dir, now_ms: u64) -> Result<(), KtFailure> {
        let hash = dir.get_epoch_hash().await.map_err(akd)?;
        let (epoch, root) = (hash.0, hash.1);
        if epoch == 0 {
            return Ok(());
        }
        if let Some(stored) = self.store.kt_epoch(epoch).await? {
            self.set_latest(stored);
            return Ok(());
        }
        let proof = dir.audit(epoch - 1, epoch).await.map_err(akd)?;
        let single = proof.proofs.first().ok_or_else(|| KtFailure::Akd("empty audit proof".into()))?;
        let audit_proof = akd_core::proto::specs::types::SingleAppendOnlyProof::from(single)
            .write_to_bytes()
            .map_err(akd)?;
        let signed = self.signer.sign(EpochRoot {
            namespace: self.settings.namespace.clone(),
            timestamp_ms: now_ms,
            epoch,
            root,
        });
        let e = KtEpoch { epoch, root, timestamp_ms: now_ms, signature: signed.signature, audit_proof };
        self.store.kt_put_epoch(e.clone()).await?;
        // Another node may have stored it first: serve what is stored.
        let stored = self.store.kt_epoch(epoch).await?.unwrap_or(e);
        self.set_latest(stored);
        Ok(())
    }

    /// Publishes the pending changes as one epoch. `Ok(None)`: nothing was pending.
    pub async fn publish(&self, now_ms: u64) -> Result<Option<u64>, KtFailure> {
        let pending = self.store.kt_pending(MAX_EPOCH_UPDATES).await?;
        if pending.is_empty() {
            return Ok(None);
        }
        let seqs: Vec<i64> = pending.iter().map(|(seq, _)| *seq).collect();
        let mut names: Vec<String> = pending.into_iter().map(|(_, n)| n).collect();
        names.sort();
        names.dedup();
        #[cfg(feature = "malicious")]
        if let Some(m) = self.malice.read().ok().and_then(|g| g.clone()) {
            names.retain(|n| !m.omits(n));
        }
        let current: std::collections::HashMap<String, crate::store::KtCurrent> =
            self.store.kt_current(names.clone()).await?.into_iter().map(|c| (c.name.clone(), c)).collect();
        let devices: Vec<(String, String)> =
            current.values().map(|c| (c.name.clone(), c.devices.clone())).collect();
        let updates = names
            .iter()
            .filter_map(|n| {
                let name = tacit_protocol::AccountName::new(n).ok()?;
                let entry = match current.get(n) {
                    Some(c) => AccountEntry::List(c.device_list.clone()),
                    None => AccountEntry::Deleted,
                };
                Some((AkdLabel(account_label(&name)), AkdValue(entry.to_bytes())))
            })
            .collect::<Vec<_>>();
        if updates.is_empty() {
            // Nothing to publish (every change was left out): they are done all the same.
            self.store
                .kt_write(KtWrite { published: seqs, published_devices: devices, ..KtWrite::default() })
                .await?;
            return Ok(None);
        }
        let mut dir = self.dir.write().await;
        let before = dir.get_epoch_hash().await.map_err(akd)?.0;
        self.db.publishes(seqs.clone(), devices.clone());
        let published = dir.publish(updates).await;
        self.db.publishes(Vec::new(), Vec::new());
        let epoch = match published {
            Ok(hash) => hash.0,
            Err(e) => {
                // akd fills its cache before the database write: start over from what the
                // database holds.
                if let Ok(fresh) = Dir::new(
                    directory_storage(self.db.clone()),
                    self.vrf.clone(),
                    AzksParallelismConfig::default(),
                )
                .await
                {
                    *dir = fresh;
                }
                return Err(akd(e));
            }
        };
        if epoch == before {
            // Every change was already the published value: no epoch, but they are done.
            self.store
                .kt_write(KtWrite { published: seqs, published_devices: devices, ..KtWrite::default() })
                .await?;
            return Ok(None);
        }
        self.finish_epoch(&dir, now_ms).await?;
        Ok(Some(epoch))
    }

    /// Brings this node's view (akd's cache) up to an epoch another publisher on the same
    /// database signed: one indexed read per proof served.
    async fn catch_up(&self) -> Result<(), KtFailure> {
        let Some(newest) = self.store.kt_newest_epoch().await? else { return Ok(()) };
        if newest <= self.latest().map_or(0, |e| e.epoch) {
            return Ok(());
        }
        let Some(stored) = self.store.kt_latest_epoch().await? else { return Ok(()) };
        let mut dir = self.dir.write().await;
        if dir.get_epoch_hash().await.map_err(akd)?.0 < stored.epoch {
            *dir = Dir::new(
                directory_storage(self.db.clone()),
                self.vrf.clone(),
                AzksParallelismConfig::default(),
            )
            .await
            .map_err(akd)?;
        }
        self.set_latest(stored);
        Ok(())
    }

    /// The signed epoch `epoch` without its audit proof: the cached newest one (the common
    /// case: a proof is for the newest epoch), else read from the store.
    async fn signed_epoch(&self, epoch: u64) -> Result<KtEpoch, KtFailure> {
        if let Some(latest) = self.latest().filter(|l| l.epoch == epoch) {
            return Ok(latest);
        }
        let e = self.store.kt_epoch(epoch).await?.ok_or(KtFailure::NotFound)?;
        Ok(KtEpoch { audit_proof: Vec::new(), ..e })
    }

    /// A lookup proof of `name`'s newest version, with the signed epoch it is for.
    pub async fn lookup(&self, name: &tacit_protocol::AccountName) -> Result<Proof, KtFailure> {
        self.catch_up().await?;
        let dir = self.dir.read().await;
        let (proof, hash) = dir.lookup(AkdLabel(account_label(name))).await.map_err(not_found)?;
        let epoch = self.signed_epoch(hash.0).await?;
        // Still under the read lock: no epoch can publish (and end pending changes) between
        // the proof and this answer.
        let pending = self.store.kt_is_pending(name.as_str()).await?;
        let proof = akd_core::proto::specs::types::LookupProof::from(&proof).write_to_bytes().map_err(akd)?;
        Ok(Proof { proof, epoch, pending })
    }

    /// A complete history proof of `name`, with the signed epoch it is for.
    pub async fn history(&self, name: &tacit_protocol::AccountName) -> Result<Proof, KtFailure> {
        self.catch_up().await?;
        let dir = self.dir.read().await;
        let (proof, hash) = dir
            .key_history(&AkdLabel(account_label(name)), akd::HistoryParams::Complete)
            .await
            .map_err(not_found)?;
        let epoch = self.signed_epoch(hash.0).await?;
        let proof =
            akd_core::proto::specs::types::HistoryProof::from(&proof).write_to_bytes().map_err(akd)?;
        Ok(Proof { proof, epoch, pending: false })
    }

    /// The audit blobs' names (`EPOCH/PREVIOUS/CURRENT`, akd's: the proof from EPOCH to
    /// EPOCH + 1) of the epochs after `after` (the blob starting at `after` included), at
    /// most `limit`, oldest first; `true` when more follow.
    pub async fn blob_names(&self, after: u64, limit: usize) -> Result<(Vec<String>, bool), KtFailure> {
        let roots = self.store.kt_roots(after, limit.saturating_add(2)).await?;
        let mut previous = if after == 0 { Some(self.empty_root) } else { None };
        let mut names = Vec::new();
        for (epoch, root) in &roots {
            let before = match previous {
                Some(p) if *epoch >= 1 => p,
                _ => {
                    previous = Some(*root);
                    continue;
                }
            };
            if names.len() == limit {
                return Ok((names, true));
            }
            names.push(format!(
                "{}/{}/{}",
                epoch - 1,
                crate::hexstr::encode(&before),
                crate::hexstr::encode(root)
            ));
            previous = Some(*root);
        }
        Ok((names, false))
    }

    /// One stored epoch.
    pub async fn epoch(&self, epoch: u64) -> Result<Option<KtEpoch>, KtFailure> {
        Ok(self.store.kt_epoch(epoch).await?)
    }

    /// Publishes an epoch whenever changes are pending, at most once per interval, until
    /// `stop` is cancelled.
    pub async fn run(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        // The first epoch one interval after start, not at once: a start is not a reason to
        // publish early (and a test that drives `publish` itself is not raced at start).
        let period = self.settings.epoch_interval;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            match self.publish(crate::state::now_ms()).await {
                Ok(Some(epoch)) => tracing::debug!(epoch, "published a key transparency epoch"),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "publishing a key transparency epoch failed; retrying"),
            }
        }
    }
}
