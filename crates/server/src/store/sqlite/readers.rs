//! A fixed pool of read-only connections, all opened at start. A read waits (async, at most
//! [`READER_WAIT`]) for a free connection, then runs on tokio's blocking pool; however many
//! requests arrive, the store holds [`READERS`] read connections and runs at most that many
//! queries at once. The connection goes back to the pool when the query ends, even if the
//! request that asked for it was cancelled meanwhile or the query panicked.
//!
//! Token look-ups (every authenticated request starts with one) never wait behind other
//! reads: [`TOKEN_READERS`] of the connections are theirs alone, the others are shared by
//! everything. However many public reads (device lists) or fetches are running or queued,
//! they hold at most `READERS - TOKEN_READERS` connections.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::store::StoreError;

/// Read connections (fetches, token look-ups, prekey counts).
pub(super) const READERS: usize = 4;
/// Of those, connections only token look-ups use.
pub(super) const TOKEN_READERS: usize = 1;
/// How long a read waits for a free connection before it is answered `unavailable`.
pub(super) const READER_WAIT: Duration = Duration::from_secs(5);

/// Which reads may use a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReadKind {
    /// A token look-up: any free connection.
    Token,
    /// Anything else: only the connections not kept for token look-ups.
    Other,
}

/// The pool. Invariant: `free` has as many permits as `idle` has connections. A read of
/// [`ReadKind::Other`] holds a permit of `shared` (one fewer per token connection) before it
/// takes one of `free`, so those reads never hold every connection.
pub(super) struct ReaderPool {
    wait: Duration,
    free: Arc<Semaphore>,
    shared: Arc<Semaphore>,
    idle: Mutex<Vec<Connection>>,
}

/// A connection taken from the pool; dropping it gives the connection back.
struct Lease {
    conn: Option<Connection>,
    pool: Arc<ReaderPool>,
    // Released after `drop` has put the connection back (fields drop after `Drop::drop`).
    _permit: OwnedSemaphorePermit,
    _shared: Option<OwnedSemaphorePermit>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take()
            && !self.pool.free.is_closed()
        {
            self.pool.idle.lock().unwrap_or_else(PoisonError::into_inner).push(c);
        }
    }
}

impl ReaderPool {
    /// Opens `n` read-only connections to `db`, `reserved` of them kept for token look-ups
    /// (at least one is shared); a read waits at most `wait` for one.
    pub(super) fn open(db: &Path, n: usize, reserved: usize, wait: Duration) -> Result<Self, StoreError> {
        let mut idle = Vec::with_capacity(n);
        for _ in 0..n {
            let c = Connection::open(db)?;
            c.busy_timeout(Duration::from_secs(5))?;
            c.pragma_update(None, "query_only", true)?;
            idle.push(c);
        }
        let shared = n.saturating_sub(reserved).max(1);
        Ok(Self {
            wait,
            free: Arc::new(Semaphore::new(n)),
            shared: Arc::new(Semaphore::new(shared)),
            idle: Mutex::new(idle),
        })
    }

    /// Runs `f` on a free connection its `kind` may use: [`StoreError::Unavailable`] if
    /// none is free in time ([`READER_WAIT`] in the store), [`StoreError::Closed`] once the
    /// pool is closed.
    pub(super) async fn read<T, F>(self: &Arc<Self>, kind: ReadKind, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let permits = async {
            let shared = match kind {
                ReadKind::Token => None,
                ReadKind::Other => Some(self.shared.clone().acquire_owned().await?),
            };
            Ok::<_, tokio::sync::AcquireError>((self.free.clone().acquire_owned().await?, shared))
        };
        let (permit, shared) = match tokio::time::timeout(self.wait, permits).await {
            Err(_) => return Err(StoreError::Unavailable("no sqlite read connection free".into())),
            Ok(Err(_)) => return Err(StoreError::Closed),
            Ok(Ok(p)) => p,
        };
        let conn = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let Some(conn) = conn else {
            return Err(StoreError::Backend("sqlite reader pool out of connections".into()));
        };
        let lease = Lease { conn: Some(conn), pool: self.clone(), _permit: permit, _shared: shared };
        tokio::task::spawn_blocking(move || match &lease.conn {
            Some(c) => f(c),
            None => Err(StoreError::Backend("sqlite lease without a connection".into())),
        })
        .await
        .map_err(|e| StoreError::Backend(format!("reader task: {e}")))?
    }

    /// Closes the pool: waiting and later reads get [`StoreError::Closed`]; connections
    /// are closed as they come back.
    pub(super) fn close(&self) {
        self.free.close();
        self.shared.close();
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    /// Connections open in the pool right now (idle ones; for tests).
    #[cfg(test)]
    pub(super) fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_wait_for_one_of_a_fixed_set_of_connections() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let setup = Connection::open(&db).unwrap();
        setup
            .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (7);")
            .unwrap();
        let pool = Arc::new(ReaderPool::open(&db, 2, 0, READER_WAIT).unwrap());
        assert_eq!(pool.idle(), 2);
        // Twenty concurrent reads, each holding its connection a while: never more than two
        // at once, and no new connection is opened.
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let pool = pool.clone();
            let running = running.clone();
            let most = most.clone();
            tasks.push(tokio::spawn(async move {
                pool.read(ReadKind::Other, move |c| {
                    let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(10));
                    let v: i64 = c.query_row("SELECT v FROM t", [], |r| r.get(0))?;
                    running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(v)
                })
                .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), 7);
        }
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(pool.idle(), 2);
        // A read whose caller went away, and one that panicked, still give the connection back.
        let slow = pool.clone();
        let cancelled = tokio::spawn(async move {
            slow.read(ReadKind::Other, |_| {
                std::thread::sleep(Duration::from_millis(100));
                Ok(())
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        cancelled.abort();
        let panicked =
            pool.read(ReadKind::Other, |_| -> Result<(), StoreError> { panic!("a bug in a read") }).await;
        assert!(matches!(panicked, Err(StoreError::Backend(_))));
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(pool.idle(), 2);
        // Read-only.
        assert!(
            pool.read(ReadKind::Other, |c| Ok(c.execute("INSERT INTO t VALUES (8)", [])?)).await.is_err()
        );
        // Closed: reads are refused.
        pool.close();
        assert!(matches!(pool.read(ReadKind::Other, |_| Ok(())).await, Err(StoreError::Closed)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_that_finds_no_free_connection_in_time_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        drop(Connection::open(&db).unwrap());
        let pool = Arc::new(ReaderPool::open(&db, 1, 0, Duration::from_millis(100)).unwrap());
        let (hold, release) = std::sync::mpsc::channel::<()>();
        let busy = pool.clone();
        let holder = tokio::spawn(async move {
            busy.read(ReadKind::Other, move |_| {
                let _ = release.recv();
                Ok(())
            })
            .await
        });
        while pool.idle() > 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(pool.read(ReadKind::Other, |_| Ok(())).await, Err(StoreError::Unavailable(_))));
        hold.send(()).unwrap();
        holder.await.unwrap().unwrap();
        assert!(pool.read(ReadKind::Other, |_| Ok(())).await.is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn token_look_ups_never_wait_behind_other_reads() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        drop(Connection::open(&db).unwrap());
        let pool =
            Arc::new(ReaderPool::open(&db, READERS, TOKEN_READERS, Duration::from_millis(300)).unwrap());
        // Twenty slow public reads (a device-list flood) at once: they take every shared
        // connection, and the rest of them queue.
        let (hold, release) = std::sync::mpsc::channel::<()>();
        let release = Arc::new(Mutex::new(release));
        let mut flood = Vec::new();
        for _ in 0..20 {
            let (p, r) = (pool.clone(), release.clone());
            flood.push(tokio::spawn(async move {
                p.read(ReadKind::Other, move |_| {
                    let _ = r.lock().map(|r| r.recv_timeout(Duration::from_secs(5)));
                    Ok(())
                })
                .await
            }));
        }
        while pool.idle() > TOKEN_READERS {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(pool.idle(), TOKEN_READERS, "other reads took a token connection");
        // Token look-ups still get a connection at once, one after another.
        for _ in 0..10 {
            let start = std::time::Instant::now();
            assert!(pool.read(ReadKind::Token, |_| Ok(())).await.is_ok());
            assert!(start.elapsed() < Duration::from_millis(200));
        }
        // Another ordinary read waits for the flood and times out.
        assert!(matches!(pool.read(ReadKind::Other, |_| Ok(())).await, Err(StoreError::Unavailable(_))));
        for _ in 0..20 {
            let _ = hold.send(());
        }
        for t in flood {
            let _ = t.await.unwrap();
        }
        assert_eq!(pool.idle(), READERS);
    }
}
