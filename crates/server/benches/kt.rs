//! Key transparency speed and size (issue 10), `scripts/bench_kt`: akd's directory on the
//! server's real storage (SQLite, through the same `Database` adapter the server runs) and
//! on akd's in-memory storage in the same run, so the figures are ratios.
//!
//! For each size N (arguments; default 10000 100000): N accounts published on each storage,
//! then three epochs of 10,000 updates (other accounts each time) timed on each, the two
//! storages alternating, the median reported, each SQLite epoch started on a store at rest (its write-ahead log copied into
//! the database file, as between epochs a few seconds apart); a lookup proof's size and its verification time
//! (median of 200, the client's `verify_lookup` path: protobuf decode + akd's verifier); an
//! append-only proof of a 1,000-update epoch verified (the auditor's time per epoch). Prints
//! one JSON line per size.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use akd::storage::StorageManager;
use akd::storage::memory::AsyncInMemoryDatabase;
use akd::{AkdLabel, AkdValue, AzksParallelismConfig, Directory};
use akd_core::ecvrf::{HardCodedAkdVRF, VRFKeyStorage};
use protobuf::Message as _;
use tacit_server::kt::AkdDb;
use tacit_transparency::Config;

const UPDATES: usize = 10_000;
const CHUNK: usize = 100_000;
/// Timed epochs per storage and size (the median is reported).
const ROUNDS: u8 = 3;

fn label(i: usize) -> AkdLabel {
    AkdLabel(format!("tacit.account.v1:user{i:08}").into_bytes())
}

fn value(i: usize, round: u8) -> AkdValue {
    // About the size of a one-device signed list.
    let mut v = vec![round; 180];
    v[..8].copy_from_slice(&(i as u64).to_be_bytes());
    AkdValue(v)
}

async fn populate<S: akd::storage::Database + 'static>(
    dir: &Directory<Config, S, HardCodedAkdVRF>,
    n: usize,
) {
    let mut start = 0;
    while start < n {
        let end = (start + CHUNK).min(n);
        dir.publish((start..end).map(|i| (label(i), value(i, 1))).collect()).await.unwrap();
        start = end;
    }
}

/// One epoch of [`UPDATES`] updates to accounts spread over all `n` (shifted by `round`, so
/// each round updates other accounts where there are more than [`UPDATES`]), timed.
async fn update_epoch<S: akd::storage::Database + 'static>(
    dir: &Directory<Config, S, HardCodedAkdVRF>,
    n: usize,
    round: u8,
) -> Duration {
    let step = (n / UPDATES).max(1);
    let shift = usize::from(round);
    let updates = (0..UPDATES).map(|k| (k * step + shift) % n).map(|i| (label(i), value(i, round))).collect();
    let t = Instant::now();
    dir.publish(updates).await.unwrap();
    t.elapsed()
}

/// Waits (at most two minutes) until the store's checkpointer has copied the write-ahead
/// log into the database file and truncated it, as it does when the writer is idle: the
/// store at rest between epochs a few seconds apart.
async fn settle(wal: &std::path::Path) -> Duration {
    let t = Instant::now();
    while std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0) > 4 << 20
        && t.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.elapsed()
}

/// With `KT_BENCH_PHASES=1`, akd's own progress messages (its `log` lines: versions read,
/// nodes preloaded, leaves inserted, transaction committed) on stderr with the time since
/// the last one, to see where a publish spends its time.
struct Phases(std::sync::Mutex<Instant>);

impl log::Log for Phases {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Info && m.target().starts_with("akd")
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            let mut last = self.0.lock().unwrap();
            eprintln!("  +{:>8.3} s  {}", last.elapsed().as_secs_f64(), r.args());
            *last = Instant::now();
        }
    }
    fn flush(&self) {}
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::var_os("KT_BENCH_PHASES").is_some() {
        log::set_logger(Box::leak(Box::new(Phases(std::sync::Mutex::new(Instant::now()))))).unwrap();
        log::set_max_level(log::LevelFilter::Info);
    }
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![10_000, 100_000] } else { sizes };
    let vrf = HardCodedAkdVRF;
    let vrf_pk: [u8; 32] = vrf.get_vrf_public_key().await.unwrap().to_bytes();
    for n in sizes {
        // The server's storage: SQLite through the adapter the server uses.
        let tmp = tempfile::tempdir().unwrap();
        let store: Arc<dyn tacit_server::KtStore> =
            Arc::new(tacit_server::SqliteStore::open(tmp.path()).unwrap());
        let db = AkdDb::new(store);
        let storage = tacit_server::kt::directory_storage(db);
        let real = Directory::<Config, _, _>::new(storage, vrf.clone(), AzksParallelismConfig::default())
            .await
            .unwrap();
        let t = Instant::now();
        populate(&real, n).await;
        let populate_real = t.elapsed();
        let mem = Directory::<Config, _, _>::new(
            StorageManager::new_no_cache(AsyncInMemoryDatabase::new()),
            vrf.clone(),
            AzksParallelismConfig::default(),
        )
        .await
        .unwrap();
        let t = Instant::now();
        populate(&mem, n).await;
        let populate_mem = t.elapsed();

        // The two storages' epochs alternate, so what else the machine does falls on both.
        let wal = tmp.path().join("tacit.db-wal");
        let (mut publish_real, mut publish_mem) = (Vec::new(), Vec::new());
        let mut before = real.get_epoch_hash().await.unwrap();
        for round in 2..2 + ROUNDS {
            let waited = settle(&wal).await;
            eprintln!(
                "{n} accounts: write-ahead log checkpointed in {:.1} s; publish on SQLite",
                waited.as_secs_f64()
            );
            before = real.get_epoch_hash().await.unwrap();
            publish_real.push(update_epoch(&real, n, round).await);
            eprintln!("{n} accounts: publish in memory");
            publish_mem.push(update_epoch(&mem, n, round).await);
        }

        // Lookup proofs from the real directory: size, generation and verification time.
        let mut gen_times = Vec::new();
        let mut verify_times = Vec::new();
        let mut sizes = Vec::new();
        for k in 0..200 {
            let i = (k * 7919) % n;
            let t = Instant::now();
            let (proof, hash) = real.lookup(label(i)).await.unwrap();
            gen_times.push(t.elapsed());
            let bytes = akd_core::proto::specs::types::LookupProof::from(&proof).write_to_bytes().unwrap();
            sizes.push(bytes.len());
            let t = Instant::now();
            let parsed = akd_core::proto::specs::types::LookupProof::parse_from_bytes(&bytes).unwrap();
            let proof = akd_core::LookupProof::try_from(&parsed).unwrap();
            akd_core::verify::lookup_verify::<Config>(&vrf_pk, hash.hash(), hash.epoch(), label(i), proof)
                .unwrap();
            verify_times.push(t.elapsed());
        }
        sizes.sort_unstable();

        // The append-only proof of the 10,000-update epoch, verified as an auditor does.
        let latest = real.get_epoch_hash().await.unwrap();
        let t = Instant::now();
        let proof = real.audit(latest.0 - 1, latest.0).await.unwrap();
        let audit_generate = t.elapsed();
        let audit_bytes = akd_core::proto::specs::types::SingleAppendOnlyProof::from(&proof.proofs[0])
            .write_to_bytes()
            .unwrap();
        let t = Instant::now();
        tacit_transparency::verify_append_only(&audit_bytes, before.1, latest.1, latest.0).await.unwrap();
        let audit_verify = t.elapsed();
        println!(
            "{}",
            serde_json::json!({
                "accounts": n,
                "updates": UPDATES,
                "populate_sqlite_s": populate_real.as_secs_f64(),
                "populate_memory_s": populate_mem.as_secs_f64(),
                "publish_sqlite_runs_s": publish_real.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
                "publish_memory_runs_s": publish_mem.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
                "publish_sqlite_s": median(publish_real.clone()).as_secs_f64(),
                "publish_memory_s": median(publish_mem.clone()).as_secs_f64(),
                "lookup_generate_ms": median(gen_times).as_secs_f64() * 1000.0,
                "lookup_verify_ms": median(verify_times).as_secs_f64() * 1000.0,
                "lookup_proof_bytes_median": sizes[sizes.len() / 2],
                "lookup_proof_bytes_max": sizes[sizes.len() - 1],
                "audit_proof_bytes": audit_bytes.len(),
                "audit_generate_s": audit_generate.as_secs_f64(),
                "audit_verify_s": audit_verify.as_secs_f64(),
            })
        );
    }
}
