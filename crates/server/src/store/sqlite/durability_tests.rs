//! The settings that make "stored" mean "on disk": read back from the connections the
//! store really uses, so a change to any of them fails here. (A killed process loses nothing
//! the kernel already has, so the crash test in `crates/cli/tests/crash.rs` cannot see a
//! writer that stopped syncing; this can.)
#![allow(clippy::unwrap_used)] // a test file

use super::*;

/// `PRAGMA synchronous` values (<https://sqlite.org/pragma.html#pragma_synchronous>).
const FULL: i64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_commits_with_synchronous_full_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let (synchronous, journal) = store
        .write(|c| {
            let s: i64 = c.pragma_query_value(None, "synchronous", |r| r.get(0))?;
            let j: String = c.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
            Ok((s, j))
        })
        .await
        .unwrap();
    assert_eq!(synchronous, FULL, "the writer's commits must be fsynced (synchronous=FULL)");
    assert_eq!(journal.to_lowercase(), "wal");
    store.close().await;
}
