//! `tacit audit --serve ADDR`: the auditor's countersignatures over the HTTP API that
//! Cloudflare's plexi client speaks (plexi-core 0.1.2), so `plexi audit --remote-url` works
//! against a Tacit auditor unchanged:
//!
//! - `GET /info`: the auditor's key (`keys: [{public_key, not_before}]`) and its logs;
//! - `GET /namespaces`, `GET /namespaces/{ns}`: the log, with `log_directory` (the Tacit
//!   server, whose root serves akd's audit blobs by name) and `root` (`EPOCH/HEX`: the first
//!   epoch countersigned, where plexi's checks start);
//! - `GET /namespaces/{ns}/audits/{E}`: the countersignature of epoch E (plexi's
//!   `SignatureResponse`);
//! - `GET /namespaces/{ns}/last-verified-epoch`.
//!
//! Everything is read from the files `tacit audit --cosign` writes next to its state file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};
use tacit_client::audit::{AuditState, PlexiSignature, cosignature_dir};

struct Served {
    state: PathBuf,
    public_key: String,
    started_ms: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn read_state(path: &Path) -> Option<AuditState> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The countersigned epochs, ascending.
fn epochs(dir: &Path) -> Vec<u64> {
    let mut out: Vec<u64> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".json")?.parse().ok()).collect()
        })
        .unwrap_or_default();
    out.sort_unstable();
    out
}

fn signature(dir: &Path, epoch: u64) -> Option<PlexiSignature> {
    serde_json::from_slice(&std::fs::read(dir.join(format!("{epoch}.json"))).ok()?).ok()
}

fn namespace_info(s: &Served) -> Option<Value> {
    let st = read_state(&s.state)?;
    let dir = cosignature_dir(&s.state);
    let all = epochs(&dir);
    let first = signature(&dir, *all.first()?)?;
    let last = *all.last()?;
    Some(json!({
        "name": st.namespace,
        "log_directory": st.server,
        "root": format!("{}/{}", first.epoch, first.digest),
        "last_verified_epoch": last,
        "status": "Online",
        "reports_uri": format!("/namespaces/{}/reports", st.namespace),
        "audits_uri": format!("/namespaces/{}/audits", st.namespace),
        "signature_version": 1,
        "ciphersuite": 1,
    }))
}

async fn info(State(s): State<Arc<Served>>) -> Json<Value> {
    let logs: Vec<String> = read_state(&s.state).map(|st| vec![st.namespace]).unwrap_or_default();
    Json(json!({"keys": [{"public_key": s.public_key, "not_before": s.started_ms}], "logs": logs}))
}

async fn namespaces(State(s): State<Arc<Served>>) -> Json<Value> {
    Json(json!({"namespaces": namespace_info(&s).into_iter().collect::<Vec<_>>()}))
}

fn ours(s: &Served, ns: &str) -> Result<(), StatusCode> {
    match read_state(&s.state) {
        Some(st) if st.namespace == ns => Ok(()),
        _ => Err(StatusCode::NOT_FOUND),
    }
}

async fn namespace(
    State(s): State<Arc<Served>>,
    UrlPath(ns): UrlPath<String>,
) -> Result<Json<Value>, StatusCode> {
    ours(&s, &ns)?;
    namespace_info(&s).map(Json).ok_or(StatusCode::NOT_FOUND)
}

async fn audit(
    State(s): State<Arc<Served>>,
    UrlPath((ns, epoch)): UrlPath<(String, u64)>,
) -> Result<Json<PlexiSignature>, StatusCode> {
    ours(&s, &ns)?;
    signature(&cosignature_dir(&s.state), epoch).map(Json).ok_or(StatusCode::NOT_FOUND)
}

async fn last_verified(
    State(s): State<Arc<Served>>,
    UrlPath(ns): UrlPath<String>,
) -> Result<Json<Value>, StatusCode> {
    ours(&s, &ns)?;
    let dir = cosignature_dir(&s.state);
    let last = *epochs(&dir).last().ok_or(StatusCode::NOT_FOUND)?;
    let end = signature(&dir, last).ok_or(StatusCode::NOT_FOUND)?;
    let start = match last {
        1 => None,
        e => signature(&dir, e - 1).map(|p| p.digest),
    };
    Ok(Json(json!({
        "job_id": "00000000-0000-0000-0000-000000000000",
        "epoch": last,
        "start_hash": start.unwrap_or_else(|| end.digest.clone()),
        "end_hash": end.digest,
        "timestamp": end.timestamp,
    })))
}

/// The plexi API over the state and countersignatures of `state`, signed by `public_key`.
pub fn router(state: &Path, public_key: [u8; 32]) -> Router {
    let served = Arc::new(Served {
        state: state.to_owned(),
        public_key: public_key.iter().map(|b| format!("{b:02x}")).collect(),
        started_ms: now_ms().saturating_sub(86_400_000),
    });
    Router::new()
        .route("/info", get(info))
        .route("/namespaces", get(namespaces))
        .route("/namespaces/{ns}", get(namespace))
        .route("/namespaces/{ns}/audits/{epoch}", get(audit))
        .route("/namespaces/{ns}/last-verified-epoch", get(last_verified))
        .with_state(served)
}

/// Binds `addr` (the bound address is returned through `bound` before serving).
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    bound: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    bound(listener.local_addr()?);
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}
