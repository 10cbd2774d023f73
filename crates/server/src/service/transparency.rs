//! The key transparency routes' meaning: the directory's keys and newest signed epoch, one
//! epoch's signed root and append-only proof, and lookup and history proofs. All public
//! (anyone may audit) and counted against the caller's per-address budget.

use std::sync::Arc;

use tacit_api::{KtInfo, KtProofResponse, SignedRootWire};
use tacit_protocol::AccountName;

use crate::error::Failure;
#[cfg(feature = "malicious")]
use crate::kt::malice::{KtLie, KtRequest};
use crate::kt::{KtFailure, Transparency};
use crate::state::AppState;
use crate::store::KtEpoch;

fn directory(state: &AppState) -> Result<&Arc<Transparency>, Failure> {
    state.transparency().ok_or(Failure::Unavailable)
}

impl From<KtFailure> for Failure {
    fn from(e: KtFailure) -> Self {
        match e {
            KtFailure::Store(e) => e.into(),
            KtFailure::NotFound => Failure::NotFound,
            KtFailure::Akd(detail) => Failure::Internal(detail),
        }
    }
}

/// Answers with the lie installed for `$request` (an `Option<KtRequest>`) from `$who`,
/// if any: the route's own kind (`KtLie::$variant`), any other kind a 404. Without the
/// feature `malicious` it is nothing (`$request` is not even compiled).
#[cfg(feature = "malicious")]
macro_rules! lie {
    ($state:expr, $who:expr, $request:expr, $variant:ident) => {
        if let Some(lie) = $request.and_then(|r| $state.malice($who.as_deref(), r)) {
            return match lie {
                KtLie::$variant(x) => Ok(x),
                _ => Err(Failure::NotFound),
            };
        }
    };
}
#[cfg(not(feature = "malicious"))]
macro_rules! lie {
    ($state:expr, $who:expr, $request:expr, $variant:ident) => {
        let () = $who;
    };
}

/// Who asks (feature `malicious`: the account a valid bearer token names, for a liar that
/// lies to one client only); `()` otherwise.
#[cfg(feature = "malicious")]
pub type Who = Option<String>;
/// Who asks: nothing without the feature `malicious`.
#[cfg(not(feature = "malicious"))]
pub type Who = ();

/// [`Who`] from the request's bearer token.
#[cfg(feature = "malicious")]
pub async fn requester(state: &AppState, headers: &axum::http::HeaderMap) -> Who {
    let header = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok())?;
    let hash = super::auth::token_hash(Some(header))?;
    let authed = state.store().token_device(&hash, crate::state::now_ms()).await.ok()??;
    Some(authed.account)
}

/// `GET /v1/kt`.
pub async fn info(state: &AppState, peer: Option<std::net::IpAddr>, who: Who) -> Result<KtInfo, Failure> {
    state.limit_address(peer)?;
    lie!(state, who, Some(KtRequest::Info), Info);
    Ok(directory(state)?.info())
}

async fn stored_epoch(state: &AppState, epoch: &str) -> Result<(Arc<Transparency>, KtEpoch), Failure> {
    let kt = directory(state)?.clone();
    let epoch: u64 = epoch.parse().map_err(|_| Failure::NotFound)?;
    let e = kt.epoch(epoch).await?.ok_or(Failure::NotFound)?;
    Ok((kt, e))
}

/// `GET /v1/kt/epochs/{epoch}`.
pub async fn epoch(
    state: &AppState,
    peer: Option<std::net::IpAddr>,
    epoch: &str,
    who: Who,
) -> Result<SignedRootWire, Failure> {
    state.limit_address(peer)?;
    lie!(state, who, epoch.parse().ok().map(KtRequest::Epoch), Root);
    let (kt, e) = stored_epoch(state, epoch).await?;
    Ok(kt.wire_cosigned(&e).await?)
}

/// `GET /v1/kt/epochs/{epoch}/audit`: the raw append-only proof.
pub async fn audit(
    state: &AppState,
    peer: Option<std::net::IpAddr>,
    epoch: &str,
    who: Who,
) -> Result<Vec<u8>, Failure> {
    state.limit_address(peer)?;
    lie!(state, who, epoch.parse().ok().map(KtRequest::Audit), Bytes);
    Ok(stored_epoch(state, epoch).await?.1.audit_proof)
}

/// `GET /{epoch}/{previous}/{current}`: the append-only proof from `previous` to `current`
/// under either naming (the start epoch, akd's; the end epoch, plexi's).
pub async fn blob(
    state: &AppState,
    peer: Option<std::net::IpAddr>,
    epoch: &str,
    previous: &str,
    current: &str,
) -> Result<Vec<u8>, Failure> {
    state.limit_address(peer)?;
    let kt = directory(state)?.clone();
    let (Ok(epoch), Some(previous), Some(current)) =
        (epoch.parse::<u64>(), crate::hexstr::decode32(previous), crate::hexstr::decode32(current))
    else {
        return Err(Failure::NotFound);
    };
    for end in [epoch, epoch.saturating_add(1)] {
        if end == 0 {
            continue;
        }
        let Some(e) = kt.epoch(end).await? else { continue };
        let before = match end - 1 {
            0 => Some(kt.empty_root()),
            p => kt.epoch(p).await?.map(|p| p.root),
        };
        if e.root == current && before == Some(previous) {
            return Ok(e.audit_proof);
        }
    }
    Err(Failure::NotFound)
}

/// `GET /v1/kt/lookup/{name}` (`history` false) and `GET /v1/kt/history/{name}` (true).
pub async fn proof(
    state: &AppState,
    peer: Option<std::net::IpAddr>,
    name: &str,
    history: bool,
    who: Who,
) -> Result<KtProofResponse, Failure> {
    state.limit_address(peer)?;
    lie!(state, who, Some(if history { KtRequest::History(name) } else { KtRequest::Lookup(name) }), Proof);
    let name = AccountName::new(name).map_err(|_| Failure::NotFound)?;
    let kt = directory(state)?;
    let proof = if history { kt.history(&name).await? } else { kt.lookup(&name).await? };
    let root = kt.wire_cosigned(&proof.epoch).await?;
    Ok(KtProofResponse { proof: proof.proof.into(), root, pending: proof.pending })
}

/// `PUT /v1/kt/epochs/{epoch}/cosignatures`: an auditor's cosignature of the epoch's root.
pub async fn cosign(
    state: &AppState,
    peer: Option<std::net::IpAddr>,
    epoch: &str,
    c: tacit_api::KtCosignatureWire,
) -> Result<(), Failure> {
    state.limit_address(peer)?;
    let kt = directory(state)?;
    let epoch: u64 = epoch.parse().map_err(|_| Failure::NotFound)?;
    let (Ok(auditor), Ok(signature)) =
        (<[u8; 32]>::try_from(c.auditor.as_slice()), <[u8; 64]>::try_from(c.signature.as_slice()))
    else {
        return Err(Failure::BadRequest("a cosignature is a 32-byte key and a 64-byte signature"));
    };
    let co = crate::store::KtCosignature { auditor, timestamp_ms: c.timestamp_ms, signature };
    kt.cosign(epoch, co).await.map_err(|e| match e {
        crate::kt::CosignFailure::Kt(e) => e.into(),
        crate::kt::CosignFailure::UnknownEpoch => Failure::NotFound,
        crate::kt::CosignFailure::NotListed => Failure::Forbidden,
        crate::kt::CosignFailure::BadSignature => {
            Failure::BadRequest("the cosignature does not verify over the epoch's root")
        }
    })
}

/// Most keys one listing page names (S3's own page size).
const MAX_LISTING_KEYS: usize = 1000;

/// `GET /?list-type=2[&continuation-token=E][&max-keys=N]`: the audit blobs' names as S3's
/// `ListObjectsV2` lists a bucket, so tools that audit akd logs published in buckets
/// (`tacit audit --log-dir URL`) find every blob. The token is the last epoch listed.
pub async fn listing(
    state: &AppState,
    peer: Option<std::net::IpAddr>,
    query: Option<&str>,
) -> Result<String, Failure> {
    state.limit_address(peer)?;
    let mut list_type = false;
    let mut after = 0u64;
    let mut max = MAX_LISTING_KEYS;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "list-type" => list_type = v == "2",
            "continuation-token" => {
                after = v.parse().map_err(|_| Failure::BadRequest("malformed continuation-token"))?
            }
            "max-keys" => {
                max = v
                    .parse::<usize>()
                    .map_err(|_| Failure::BadRequest("malformed max-keys"))?
                    .clamp(1, MAX_LISTING_KEYS)
            }
            _ => {}
        }
    }
    if !list_type {
        return Err(Failure::NotFound);
    }
    let kt = directory(state)?;
    let (names, more) = kt.blob_names(after, max).await?;
    let next =
        names.last().and_then(|n| n.split('/').next()).and_then(|e| e.parse::<u64>().ok()).map(|e| e + 1);
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
    );
    xml.push_str(&format!(
        "<Name>{}</Name><Prefix></Prefix><KeyCount>{}</KeyCount><MaxKeys>{max}</MaxKeys>",
        kt.settings().namespace,
        names.len()
    ));
    xml.push_str(&format!("<IsTruncated>{more}</IsTruncated>"));
    for n in &names {
        xml.push_str(&format!("<Contents><Key>{n}</Key></Contents>"));
    }
    if let (true, Some(next)) = (more, next) {
        xml.push_str(&format!("<NextContinuationToken>{next}</NextContinuationToken>"));
    }
    xml.push_str("</ListBucketResult>\n");
    Ok(xml)
}
