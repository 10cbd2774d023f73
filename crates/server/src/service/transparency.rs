//! The key transparency routes' meaning: the directory's keys and newest signed epoch, one
//! epoch's signed root and append-only proof, and lookup and history proofs. All public
//! (anyone may audit) and counted against the caller's per-address budget.

use std::sync::Arc;

use tacit_api::{KtInfo, KtProofResponse, SignedRootWire};
use tacit_protocol::AccountName;

use crate::error::Failure;
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

fn wire(kt: &Transparency, e: &KtEpoch) -> SignedRootWire {
    SignedRootWire {
        namespace: kt.settings().namespace.clone(),
        timestamp_ms: e.timestamp_ms,
        epoch: e.epoch,
        root: e.root.to_vec().into(),
        signature: e.signature.to_vec().into(),
    }
}

/// `GET /v1/kt`.
pub fn info(state: &AppState, peer: Option<std::net::IpAddr>) -> Result<KtInfo, Failure> {
    state.limit_address(peer)?;
    let kt = directory(state)?;
    Ok(KtInfo {
        namespace: kt.settings().namespace.clone(),
        public_key: kt.public_key().to_vec().into(),
        vrf_public_key: kt.vrf_public_key().to_vec().into(),
        epoch_interval_ms: u64::try_from(kt.settings().epoch_interval.as_millis()).unwrap_or(u64::MAX),
        latest: kt.latest().map(|e| wire(kt, &e)),
    })
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
) -> Result<SignedRootWire, Failure> {
    state.limit_address(peer)?;
    let (kt, e) = stored_epoch(state, epoch).await?;
    Ok(wire(&kt, &e))
}

/// `GET /v1/kt/epochs/{epoch}/audit`: the raw append-only proof.
pub async fn audit(
    state: &AppState,
    peer: Option<std::net::IpAddr>,
    epoch: &str,
) -> Result<Vec<u8>, Failure> {
    state.limit_address(peer)?;
    Ok(stored_epoch(state, epoch).await?.1.audit_proof)
}

fn root_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
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
        (epoch.parse::<u64>(), root_hex(previous), root_hex(current))
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
) -> Result<KtProofResponse, Failure> {
    state.limit_address(peer)?;
    let name = AccountName::new(name).map_err(|_| Failure::NotFound)?;
    let kt = directory(state)?;
    let proof = if history { kt.history(&name).await? } else { kt.lookup(&name).await? };
    Ok(KtProofResponse { proof: proof.proof.into(), root: wire(kt, &proof.epoch), pending: proof.pending })
}
