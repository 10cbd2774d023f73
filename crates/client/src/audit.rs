//! Auditing a server's key transparency log (`tacit audit`, issue 10): every epoch from the
//! last one audited to the newest, each root's signature under the log's key and each
//! append-only proof from the epoch before (akd's auditor), with the audited position kept in
//! a state file so the next run goes on from there. A newest epoch older than one audited, a
//! root that differs from the one audited for its epoch, another key or namespace, a missing
//! or failing proof: each is a violation ([`ClientError::Transparency`], exit 4). Verified
//! roots can be countersigned (`--cosign`) as plexi `SignatureResponse` files, which
//! `tacit audit --serve` offers over plexi's API. Also `Client::kt_export`: one epoch's proof,
//! signature and key in the files `plexi local-audit` reads.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tacit_protocol::VerifyingKey;
use tacit_transparency::{EpochRoot, RootSigner, SignedRoot, key_id, verify_append_only};

use crate::client::Client;
use crate::error::{ClientError, Result};
use crate::net::{Api, ConnectOptions};

fn violation(what: impl Into<String>) -> ClientError {
    ClientError::kt(crate::error::KtViolation::Audit, format!("audit violation: {}", what.into()))
}

/// What an auditor keeps between runs (JSON).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditState {
    /// The server audited.
    pub server: String,
    /// The log's namespace.
    pub namespace: String,
    /// The log's transparency key (hex).
    pub public_key: String,
    /// The last epoch audited (0: none).
    pub epoch: u64,
    /// Its root (hex).
    pub root: String,
}

/// What one audit run checked.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditReport {
    /// The log's namespace.
    pub namespace: String,
    /// The log's key (hex).
    pub public_key: String,
    /// The first epoch verified in this run (the last one audited + 1).
    pub from: u64,
    /// The newest epoch, now audited.
    pub to: u64,
    /// Epochs verified in this run.
    pub epochs: u64,
    /// Wall time of the run.
    pub seconds: f64,
    /// Epochs countersigned in this run.
    pub cosigned: u64,
    /// With `--cosign`: the newest root's cosignature as the server took it (`Ok`), or why
    /// it did not (a server that does not list this auditor answers 403); clients that
    /// require this auditor find it with the root. `None` without `--cosign`.
    pub posted: Option<std::result::Result<u64, String>>,
}

/// A plexi `SignatureResponse` (its JSON shape: hex digest, signature and message).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlexiSignature {
    /// plexi's version field (the ciphersuite).
    pub version: u32,
    /// 1: protobuf + Ed25519.
    pub ciphersuite: u32,
    /// The log's namespace.
    pub namespace: String,
    /// Milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// The epoch.
    pub epoch: u64,
    /// The root (hex).
    pub digest: String,
    /// Ed25519 signature (hex).
    pub signature: String,
    /// The last byte of the signer's key.
    pub key_id: u8,
    /// The signed protobuf message (hex).
    pub serialized_message: String,
}

impl PlexiSignature {
    /// The plexi form of a signed root by `public`.
    pub fn from_signed(root: &SignedRoot, public: &[u8; 32]) -> Self {
        Self {
            version: 1,
            ciphersuite: tacit_transparency::CIPHERSUITE_PROTOBUF_ED25519,
            namespace: root.root.namespace.clone(),
            timestamp: root.root.timestamp_ms,
            epoch: root.root.epoch,
            digest: hex::encode(root.root.root),
            signature: hex::encode(root.signature),
            key_id: key_id(public),
            serialized_message: hex::encode(root.root.signed_message()),
        }
    }
}

fn unhex<const N: usize>(s: &str, what: &str) -> Result<[u8; N]> {
    hex::decode(s).ok().and_then(|b| <[u8; N]>::try_from(b).ok()).ok_or_else(|| {
        ClientError::kt(crate::error::KtViolation::Malformed, format!("{what} is not {N} bytes of hex"))
    })
}

/// Writes `bytes` to `path` through a temporary file and a rename (a crash leaves the old or
/// the new file, never half of one).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |e: std::io::Error| ClientError::file(path, &e);
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

/// The countersignatures folder of a state file: `FILE.d/audits/`.
pub fn cosignature_dir(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".d");
    PathBuf::from(name).join("audits")
}

/// The auditor's key in `path` (64 hex characters of seed), made there (0600) if absent.
pub fn load_or_make_cosign_key(path: &Path) -> Result<RootSigner> {
    let io = |e: std::io::Error| ClientError::file(path, &e);
    let seed = match std::fs::read_to_string(path) {
        Ok(text) => unhex::<32>(text.trim(), "the auditor key file")?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            aws_lc_rs::rand::fill(&mut seed).map_err(|_| ClientError::Internal("randomness"))?;
            #[cfg(unix)]
            {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                f.write_all(hex::encode(seed).as_bytes()).map_err(io)?;
                f.sync_all().map_err(io)?;
            }
            #[cfg(not(unix))]
            std::fs::write(path, hex::encode(seed)).map_err(io)?;
            seed
        }
        Err(e) => return Err(io(e)),
    };
    RootSigner::from_seed(seed).map_err(|e| ClientError::from((e, "the cosigning key")))
}

fn from_wire(w: &tacit_api::SignedRootWire) -> Result<SignedRoot> {
    crate::transparency::from_wire(w)
}

/// Audits `server`'s log from the epoch after the one in `state_path` (none: from the first)
/// to its newest, saving the state after each epoch. `cosign` countersigns each verified
/// root into [`cosignature_dir`]. `progress(done, total)` is told after each epoch.
pub async fn audit_server(
    server: &str,
    state_path: &Path,
    options: &ConnectOptions,
    cosign: Option<&RootSigner>,
    mut progress: impl FnMut(u64, u64),
) -> Result<AuditReport> {
    let started = Instant::now();
    let api = Api::new(server, options)?;
    api.check_transport()?;
    let info = api.kt_info().await?;
    let key_bytes = unhex::<32>(&hex::encode(info.public_key.as_slice()), "the log's key")?;
    let key =
        VerifyingKey::from_bytes(key_bytes).map_err(|_| violation("the log's key is not a valid key"))?;
    let state_io = |e: std::io::Error| ClientError::file(state_path, &e);
    let mut state = match std::fs::read(state_path) {
        Ok(bytes) => serde_json::from_slice::<AuditState>(&bytes).map_err(|e| ClientError::StoreFile {
            path: state_path.to_owned(),
            cause: format!("not an audit state file: {e}"),
            hint: "give the state file this auditor wrote, or a new path to start over",
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => AuditState {
            server: api.base().to_owned(),
            namespace: info.namespace.clone(),
            public_key: hex::encode(key_bytes),
            epoch: 0,
            root: hex::encode(tacit_transparency::empty_root().await.map_err(|e| violation(e.to_string()))?),
        },
        Err(e) => return Err(state_io(e)),
    };
    if state.public_key != hex::encode(key_bytes) {
        return Err(violation(format!(
            "the log's key is now {}, the audited log's was {}",
            hex::encode(key_bytes),
            state.public_key
        )));
    }
    if state.namespace != info.namespace {
        return Err(violation(format!(
            "the log is now named {}, it was {}",
            info.namespace, state.namespace
        )));
    }
    let newest = info.latest.as_ref().map_or(0, |l| l.epoch);
    if newest < state.epoch {
        return Err(violation(format!(
            "the newest epoch is {newest}, older than epoch {} already audited (a rollback)",
            state.epoch
        )));
    }
    let signed_root = |w: &tacit_api::SignedRootWire, epoch: u64| -> Result<SignedRoot> {
        let root = from_wire(w)?;
        if root.root.epoch != epoch {
            return Err(violation(format!(
                "asked for epoch {epoch}, the server sent epoch {}",
                root.root.epoch
            )));
        }
        root.verify(&key, &state.namespace).map_err(|e| violation(format!("epoch {epoch}: {e}")))?;
        Ok(root)
    };
    // The epoch audited last must still have the root audited (no rewritten history).
    if state.epoch > 0 {
        let w = api
            .kt_epoch(state.epoch)
            .await?
            .ok_or_else(|| violation(format!("epoch {} is gone", state.epoch)))?;
        let root = signed_root(&w, state.epoch)?;
        if hex::encode(root.root.root) != state.root {
            return Err(violation(format!(
                "epoch {} now has the root {}, the audited one was {} (a fork or a rewrite)",
                state.epoch,
                hex::encode(root.root.root),
                state.root
            )));
        }
    }
    let from = state.epoch + 1;
    let total = newest.saturating_sub(state.epoch);
    let mut previous = unhex::<32>(&state.root, "the audited root")?;
    let mut cosigned = 0u64;
    let cosign_dir = cosignature_dir(state_path);
    if cosign.is_some() {
        std::fs::create_dir_all(&cosign_dir).map_err(|e| ClientError::file(&cosign_dir, &e))?;
    }
    for epoch in from..=newest {
        let w = api
            .kt_epoch(epoch)
            .await?
            .ok_or_else(|| violation(format!("epoch {epoch} has no signed root")))?;
        let root = signed_root(&w, epoch)?;
        let proof = api
            .kt_audit(epoch)
            .await?
            .ok_or_else(|| violation(format!("epoch {epoch} has no append-only proof")))?;
        verify_append_only(&proof, previous, root.root.root, epoch)
            .await
            .map_err(|e| violation(format!("the log is not append-only: {e}")))?;
        if let Some(signer) = cosign {
            let co = signer.sign(EpochRoot {
                namespace: state.namespace.clone(),
                timestamp_ms: crate::client::now_ms(),
                epoch,
                root: root.root.root,
            });
            let json = serde_json::to_vec(&PlexiSignature::from_signed(&co, &signer.public()))
                .map_err(|_| ClientError::Internal("cosignature"))?;
            write_atomic(&cosign_dir.join(format!("{epoch}.json")), &json)?;
            cosigned += 1;
        }
        previous = root.root.root;
        state.epoch = epoch;
        state.root = hex::encode(previous);
        let json = serde_json::to_vec_pretty(&state).map_err(|_| ClientError::Internal("audit state"))?;
        write_atomic(state_path, &json)?;
        progress(epoch - from + 1, total);
    }
    // The newest audited root's cosignature goes to the server, which serves it with the
    // root to clients that require this auditor (again when nothing was new: an earlier
    // post may have failed).
    let posted = match cosign {
        Some(signer) if state.epoch > 0 => {
            let co = signer.sign(EpochRoot {
                namespace: state.namespace.clone(),
                timestamp_ms: crate::client::now_ms(),
                epoch: state.epoch,
                root: previous,
            });
            let wire = tacit_api::KtCosignatureWire {
                auditor: signer.public().to_vec().into(),
                timestamp_ms: co.root.timestamp_ms,
                signature: co.signature.to_vec().into(),
            };
            Some(api.kt_cosign(state.epoch, &wire).await.map(|()| state.epoch).map_err(|e| match e {
                ClientError::Server { status: 403, .. } => {
                    "403: the server does not list this auditor (tacit server --kt-auditor KEY)".to_owned()
                }
                e => e.to_string(),
            }))
        }
        _ => None,
    };
    Ok(AuditReport {
        namespace: state.namespace,
        public_key: state.public_key,
        from,
        to: newest,
        epochs: total,
        seconds: started.elapsed().as_secs_f64(),
        cosigned,
        posted,
    })
}

/// Audits an akd log published as audit blobs in a folder (`tacit audit --log-dir`), laid
/// out as akd's `generate_audit_blobs` names them: `DIR/{epoch}/{previous root hex}/{current
/// root hex}` holding the protobuf proof from `epoch` to `epoch + 1` (WhatsApp's layout).
/// The blobs must form one chain (each one's current root the next one's previous, epochs
/// consecutive from the first) and every proof must verify with akd's auditor. With
/// `verifying_key`, each `DIR/signatures/{epoch}.json` present (plexi's `SignatureResponse`
/// of the log's key) must verify for the root it names and match the chain. Not only
/// Tacit's logs: anything akd's own API wrote.
pub async fn audit_log_dir(dir: &Path, verifying_key: Option<[u8; 32]>) -> Result<AuditReport> {
    audit_log(LogSource::Dir(dir.to_owned()), verifying_key).await
}

/// [`audit_log_dir`] on a folder or, for an `http(s)://` location, a log published at a URL:
/// its blobs listed with S3's `ListObjectsV2` (`URL/?list-type=2`, as buckets and a Tacit
/// server answer it) and read at `URL/EPOCH/PREVIOUS/CURRENT`, signatures at
/// `URL/signatures/{epoch}.json` where present.
pub async fn audit_log_at(
    location: &str,
    options: &ConnectOptions,
    verifying_key: Option<[u8; 32]>,
) -> Result<AuditReport> {
    audit_log(LogSource::open(location, options)?, verifying_key).await
}

async fn audit_log(source: LogSource, verifying_key: Option<[u8; 32]>) -> Result<AuditReport> {
    let started = Instant::now();
    let mut blobs = source.blobs().await?;
    blobs.sort_by_key(|b| b.0);
    let (Some(first), Some(last)) = (blobs.first(), blobs.last()) else {
        return Err(violation(format!("no audit blob (EPOCH/PREVIOUS/CURRENT) in {}", source.name(""))));
    };
    let (from, to) = (first.0 + 1, last.0 + 1);
    let key = match verifying_key {
        Some(k) => {
            Some(VerifyingKey::from_bytes(k).map_err(|_| violation("the verifying key is not a valid key"))?)
        }
        None => None,
    };
    let mut namespace = String::new();
    for (i, (epoch, prev, cur, name)) in blobs.iter().enumerate() {
        if let Some((before, _, before_cur, _)) = i.checked_sub(1).and_then(|j| blobs.get(j)) {
            if *epoch != before + 1 {
                return Err(violation(format!("the log has no blob from epoch {} to {}", before + 1, epoch)));
            }
            if before_cur != prev {
                return Err(violation(format!(
                    "the blob from epoch {epoch} starts at {}, but the one before ended at {} (a fork or a rewrite)",
                    hex::encode(prev),
                    hex::encode(before_cur)
                )));
            }
        }
        let proof = source.fetch(name).await?;
        verify_append_only(&proof, *prev, *cur, epoch + 1)
            .await
            .map_err(|e| violation(format!("{}: not an append-only extension: {e}", source.name(name))))?;
        if let Some(key) = &key {
            let sig_name = format!("signatures/{}.json", epoch + 1);
            let sig_path = source.name(&sig_name);
            if let Ok(bytes) = source.fetch(&sig_name).await {
                let s: PlexiSignature = serde_json::from_slice(&bytes)
                    .map_err(|e| violation(format!("{sig_path}: not a plexi signature: {e}")))?;
                let root = SignedRoot {
                    root: EpochRoot {
                        namespace: s.namespace.clone(),
                        timestamp_ms: s.timestamp,
                        epoch: s.epoch,
                        root: unhex::<32>(&s.digest, "a signed digest")?,
                    },
                    signature: unhex::<64>(&s.signature, "a signature")?,
                };
                root.verify(key, &s.namespace).map_err(|e| violation(format!("{sig_path}: {e}")))?;
                if root.root.epoch != epoch + 1 || root.root.root != *cur {
                    return Err(violation(format!("{sig_path} signs another root than the log's")));
                }
                namespace = s.namespace;
            }
        }
    }
    Ok(AuditReport {
        namespace,
        public_key: verifying_key.map(hex::encode).unwrap_or_default(),
        from,
        to,
        epochs: u64::try_from(blobs.len()).unwrap_or(u64::MAX),
        seconds: started.elapsed().as_secs_f64(),
        cosigned: 0,
        posted: None,
    })
}

mod listing;
use listing::{parse_listing, percent_encode};

/// Most bytes of one listing page or one blob of a log read over HTTP.
const MAX_LOG_FETCH_BYTES: usize = 256 * 1024 * 1024;
/// Most listing pages of a log read over HTTP (1,000 keys a page on S3).
const MAX_LISTING_PAGES: usize = 100_000;

/// Where an akd log's audit blobs are: a folder, or a URL whose listing is S3's
/// `ListObjectsV2` (`GET URL/?list-type=2`, pages joined by `continuation-token`): akd logs
/// are published in buckets (WhatsApp's is one), and a Tacit server answers it at its root.
enum LogSource {
    Dir(PathBuf),
    Url { http: reqwest::Client, base: String },
}

/// One audit blob: the epoch it starts at, its two roots, and where it is.
type Blob = (u64, [u8; 32], [u8; 32], String);

impl LogSource {
    fn open(location: &str, options: &ConnectOptions) -> Result<Self> {
        if location.starts_with("http://") || location.starts_with("https://") {
            let http = Api::plain_client(options)?;
            return Ok(Self::Url { http, base: location.trim_end_matches('/').to_owned() });
        }
        Ok(Self::Dir(PathBuf::from(location)))
    }

    fn name(&self, key: &str) -> String {
        match self {
            Self::Dir(d) => d.join(key).display().to_string(),
            Self::Url { base, .. } => format!("{base}/{key}"),
        }
    }

    /// The blobs named `EPOCH/PREVIOUS/CURRENT` (other names are passed over).
    async fn blobs(&self) -> Result<Vec<Blob>> {
        let parse = |key: &str| -> Option<Blob> {
            let mut parts = key.trim_start_matches('/').split('/');
            let (e, p, c) = (parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() {
                return None;
            }
            Some((
                e.parse().ok()?,
                unhex::<32>(p, "a root").ok()?,
                unhex::<32>(c, "a root").ok()?,
                key.to_owned(),
            ))
        };
        match self {
            Self::Dir(dir) => {
                let read_dir = |p: &Path| std::fs::read_dir(p).map_err(|e| ClientError::file(p, &e));
                let mut out = Vec::new();
                for e in read_dir(dir)? {
                    let e = e.map_err(|e| ClientError::file(dir, &e))?;
                    let Some(epoch) = e.file_name().to_str().map(str::to_owned) else { continue };
                    for p in read_dir(&e.path())? {
                        let p = p.map_err(|e| ClientError::file(dir, &e))?;
                        let Some(prev) = p.file_name().to_str().map(str::to_owned) else { continue };
                        for c in read_dir(&p.path())? {
                            let c = c.map_err(|e| ClientError::file(dir, &e))?;
                            let Some(cur) = c.file_name().to_str().map(str::to_owned) else { continue };
                            out.extend(parse(&format!("{epoch}/{prev}/{cur}")));
                        }
                    }
                }
                Ok(out)
            }
            Self::Url { .. } => {
                let mut out = Vec::new();
                let mut token: Option<String> = None;
                for _ in 0..MAX_LISTING_PAGES {
                    let mut query = String::from("?list-type=2");
                    if let Some(t) = &token {
                        query.push_str("&continuation-token=");
                        query.push_str(&percent_encode(t));
                    }
                    let page = self.fetch(&query).await?;
                    let page = String::from_utf8(page)
                        .map_err(|_| violation(format!("{}: the listing is not UTF-8", self.name(&query))))?;
                    let (keys, next) = parse_listing(&page);
                    out.extend(keys.iter().filter_map(|k| parse(k)));
                    match next {
                        Some(t) if Some(&t) != token.as_ref() => token = Some(t),
                        _ => return Ok(out),
                    }
                }
                Err(violation(format!("{}: more than {MAX_LISTING_PAGES} listing pages", self.name(""))))
            }
        }
    }

    /// The bytes at `key` (a blob, a listing query), at most [`MAX_LOG_FETCH_BYTES`].
    async fn fetch(&self, key: &str) -> Result<Vec<u8>> {
        match self {
            Self::Dir(d) => {
                let path = d.join(key);
                std::fs::read(&path).map_err(|e| ClientError::file(&path, &e))
            }
            Self::Url { http, base } => {
                let url = format!("{base}/{key}");
                let mut resp = http.get(&url).send().await?;
                if !resp.status().is_success() {
                    return Err(ClientError::NotFound(format!("{url}: {}", resp.status())));
                }
                let mut body = Vec::new();
                while let Some(chunk) = resp.chunk().await? {
                    if body.len() + chunk.len() > MAX_LOG_FETCH_BYTES {
                        return Err(violation(format!("{url}: more than {MAX_LOG_FETCH_BYTES} bytes")));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(body)
            }
        }
    }
}

impl Client {
    /// Writes epoch `epoch`'s append-only proof (`proof.bin`), its signed root in plexi's
    /// JSON (`signature.json`) and the log's key (`verifying_key.hex`) into `out`, for
    /// `plexi local-audit`. The root is checked against the pinned key first.
    pub async fn kt_export(&mut self, epoch: u64, out: &Path) -> Result<()> {
        let pin = self.kt_pin().await?;
        let w =
            self.api.kt_epoch(epoch).await?.ok_or_else(|| {
                ClientError::NotFound(format!("no epoch {epoch} in the key transparency log"))
            })?;
        let root = from_wire(&w)?;
        root.verify(&pin.key, &pin.namespace).map_err(|e| ClientError::from((e, "")))?;
        let proof = self
            .api
            .kt_audit(epoch)
            .await?
            .ok_or_else(|| ClientError::NotFound(format!("no append-only proof for epoch {epoch}")))?;
        std::fs::create_dir_all(out).map_err(|e| ClientError::file(out, &e))?;
        let json = serde_json::to_vec_pretty(&PlexiSignature::from_signed(&root, pin.key.as_bytes()))
            .map_err(|_| ClientError::Internal("signature"))?;
        write_atomic(&out.join("proof.bin"), &proof)?;
        write_atomic(&out.join("signature.json"), &json)?;
        write_atomic(&out.join("verifying_key.hex"), hex::encode(pin.key.as_bytes()).as_bytes())?;
        Ok(())
    }
}
