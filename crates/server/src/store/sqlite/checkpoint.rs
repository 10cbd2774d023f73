//! WAL checkpoints off the writer thread. SQLite's automatic checkpoint runs inside the
//! COMMIT that crosses `wal_autocheckpoint` pages, so the writer (and every caller waiting
//! on its group commit) would stall while pages are copied into the database file. The writer
//! connection has it off; this thread checkpoints from a connection of its own instead:
//!
//! - every [`CHECKPOINT_EVERY`], if anything committed since it last looked, a `PASSIVE`
//!   checkpoint: it copies what no reader still needs and never blocks the writer. Once the
//!   whole WAL is copied, the writer's next transaction starts the WAL over from its start,
//!   so the file stops growing.
//! - when the WAL file is larger than [`TRUNCATE_ABOVE_BYTES`] and the writer was idle for a
//!   whole interval (or at most every [`TRUNCATE_BUSY_EVERY`] under constant load, which also
//!   ends checkpoint starvation by readers), a `TRUNCATE` checkpoint, which empties the file.
//!   It holds the write lock for a moment, so it waits at most [`BUSY_TIMEOUT`] for the writer
//!   and readers, and tries again later if they are busy.
//!
//! Between truncations the writer's `journal_size_limit` (64 MiB) still caps the size the
//! file keeps when the WAL starts over.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::writer::WriterHealth;
use crate::store::StoreError;

/// How often the checkpointer looks at the WAL.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// A WAL file above this size is truncated (when the writer is idle, or now and then).
pub(super) const TRUNCATE_ABOVE_BYTES: u64 = 4 * 1024 * 1024;
/// Under constant writes, the WAL is truncated at most this often.
pub(super) const TRUNCATE_BUSY_EVERY: Duration = Duration::from_secs(30);
/// How long a `TRUNCATE` checkpoint waits for the writer and readers.
const BUSY_TIMEOUT: Duration = Duration::from_millis(200);

/// The running checkpoint thread.
pub(super) struct Checkpointer {
    stop: Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    /// Opens a connection to `db` and starts checkpointing its WAL.
    pub(super) fn start(db: &Path, writer: Arc<WriterHealth>) -> Result<Self, StoreError> {
        let conn = Connection::open(db)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_size_limit", super::JOURNAL_SIZE_LIMIT)?;
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        let (stop, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("tacit-sqlite-checkpoint".into())
            .spawn(move || run(&conn, &wal, &rx, &writer))
            .map_err(|e| StoreError::Backend(format!("checkpoint thread: {e}")))?;
        Ok(Self { stop, thread })
    }

    /// Stops the thread (after a last `TRUNCATE` checkpoint) and waits for it.
    pub(super) fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

fn run(conn: &Connection, wal: &Path, stop: &Receiver<()>, writer: &WriterHealth) {
    let mut seen = writer.commits();
    let mut last_truncate = Instant::now();
    loop {
        match stop.recv_timeout(CHECKPOINT_EVERY) {
            Err(RecvTimeoutError::Timeout) => {}
            // Stopped, or the store is gone: the writer has finished, empty the WAL.
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                checkpoint(conn, "TRUNCATE");
                return;
            }
        }
        let commits = writer.commits();
        let idle = commits == seen;
        seen = commits;
        if !idle {
            checkpoint(conn, "PASSIVE");
        }
        let size = std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0);
        if size > TRUNCATE_ABOVE_BYTES && (idle || last_truncate.elapsed() >= TRUNCATE_BUSY_EVERY) {
            checkpoint(conn, "TRUNCATE");
            last_truncate = Instant::now();
        }
    }
}

/// Runs `PRAGMA wal_checkpoint(mode)`. A busy writer or reader is not an error (the next
/// round tries again); a failure is logged.
fn checkpoint(conn: &Connection, mode: &str) {
    let sql = format!("PRAGMA wal_checkpoint({mode})");
    match conn.query_row(&sql, [], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))) {
        Ok((busy, log, copied)) => tracing::debug!(mode, busy, log, copied, "sqlite checkpoint"),
        Err(e) => tracing::warn!(error = %e, mode, "sqlite checkpoint failed"),
    }
}
