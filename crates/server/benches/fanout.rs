//! Group fan-out on the relay's stores (issue 11), `scripts/bench_fanout`: one group of N
//! member devices (argument; default 10000) made through `Store::group_commit` (one commit
//! adding them all), then group messages of 100 bytes (after framing, as a text message
//! pads to) stored to all N: the time to store one (median of 20), the bytes the store grew
//! by per message (SQLite: the database file after a checkpoint that empties the log;
//! PostgreSQL: `pg_total_relation_size` of the two tables), and that per recipient (the
//! envelope row each mailbox gets). Prints one JSON line per store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, missing_docs)]

use std::time::Instant;

mod common;

use common::{account, frame};
use tacit_server::{Authed, NewCommit, PgStore, SqliteStore, Store};

const MESSAGES: usize = 20;

async fn accounts(store: &dyn Store, n: usize, tag: &str) -> Vec<Authed> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(account(store, format!("{tag}{i:06}")).await);
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn run(store: &dyn Store, label: &str, n: usize, size: &dyn Fn() -> u64) {
    let tag = format!("f{}x", std::process::id() % 10_000);
    let members = accounts(store, n, &tag).await;
    let sender = &members[0];
    let group = vec![0xab; 16];
    let commit = NewCommit {
        group_id: group.clone(),
        epoch: 0,
        commit: frame(&group, 0, 3, 2000),
        welcome: Some(vec![7; 2000]),
        added: members[1..].iter().map(|m| (m.account.clone(), 1)).collect(),
        removed: Vec::new(),
        state_counter: None,
    };
    let t = Instant::now();
    store.group_commit(sender, commit, 2, None).await.unwrap();
    let commit_s = t.elapsed().as_secs_f64();
    let before = size();
    let mut times = Vec::new();
    for i in 0..MESSAGES {
        let t = Instant::now();
        store
            .group_message(sender, group.clone(), 1, frame(&group, 1, 1, 100 + i % 2), 3, None, None)
            .await
            .unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let per_message = (size().saturating_sub(before)) / MESSAGES as u64;
    println!(
        "{{\"store\":\"{label}\",\"devices\":{n},\"commit_adding_all_s\":{commit_s:.2},\"message_store_ms\":{:.1},\"message_bytes\":{per_message},\"bytes_per_recipient\":{:.0}}}",
        median(times),
        per_message as f64 / (n - 1) as f64
    );
}

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let path = dir.path().to_owned();
        // The database file after a checkpoint that empties the write-ahead log (the WAL
        // holds whole pages rewritten, which a checkpoint folds back: not storage).
        let size = move || {
            let c = rusqlite::Connection::open(path.join("tacit.db")).unwrap();
            c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
            std::fs::metadata(path.join("tacit.db")).map(|m| m.len()).unwrap_or(0)
        };
        run(&store, "sqlite", n, &size).await;
        store.close().await;

        let schema = format!("fanout_{}", std::process::id());
        let (admin, conn) =
            tokio_postgres::connect("host=127.0.0.1 port=5432 user=postgres dbname=test", tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(conn);
        admin.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
        let url = format!("postgres://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}");
        let store = PgStore::connect(&url).await.unwrap();
        let admin = std::sync::Arc::new(admin);
        let q = format!(
            "SELECT (pg_total_relation_size('{schema}.envelopes') + pg_total_relation_size('{schema}.group_payloads'))::BIGINT"
        );
        let pg_size = {
            let admin = admin.clone();
            let q = q.clone();
            move || -> u64 {
                let handle = tokio::runtime::Handle::current();
                tokio::task::block_in_place(|| {
                    handle.block_on(async { admin.query_one(&q, &[]).await.unwrap().get::<_, i64>(0) as u64 })
                })
            }
        };
        run(&store, "postgres", n, &pg_size).await;
        store.close().await;
        admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
    });
}
