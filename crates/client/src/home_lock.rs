//! One home, many processes: every read-modify-write of protocol state holds an exclusive
//! lock on `HOME/lock`.
//!
//! Two `tacit send` started at the same moment used to load the same session, each make its
//! own ratchet step and commit it: the recipient could decrypt one and, from then on, nothing
//! in either direction. A SQLite transaction alone cannot serialise that work, because it
//! spans more than the database (the generation marks in `generations` and
//! `prekeys_generation` are raised before the commit, the log is compacted through a
//! temporary file) and sometimes a request (a bundle fetch, a prekey upload). So the SDK takes
//! an advisory lock on a file in the home folder (`flock` on Unix, `LockFileEx` on Windows,
//! through `std::fs::File::lock`) around each such operation, loads what it changes only
//! after taking it, and releases it when the operation ends: a `receive --wait` that listens
//! for minutes holds it only while it stores what arrived, so sends from other terminals go
//! through between messages. The lock belongs to the open file, so a process killed while
//! holding it releases it with its descriptors; nothing is left to clean up.
//!
//! The lock is re-entrant within one [`HomeLock`] (a send that refills prekeys takes it once
//! more); two [`HomeLock`]s, in one process or two, exclude each other. A process that has to
//! wait says so through the notice callback and waits (async callers poll, so a cancelled
//! operation never leaves the lock taken).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::error::{ClientError, Result};

/// The lock file's name in the home folder.
pub(crate) const FILE: &str = "lock";

/// How often an async waiter tries again.
const POLL: Duration = Duration::from_millis(10);

/// Called once when an operation has to wait for another process (the message says which).
pub type LockNotice = Arc<dyn Fn(&str) + Send + Sync>;

/// The home folder's lock, shared by the guards it hands out.
#[derive(Clone)]
pub(crate) struct HomeLock {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    file: File,
    /// Guards alive: the file is locked while this is above zero.
    depth: Mutex<usize>,
    notice: Mutex<Option<LockNotice>>,
}

/// Holds the lock until dropped.
pub(crate) struct HomeGuard {
    inner: Arc<Inner>,
    /// This guard took the lock (it was not already held by this `HomeLock`): what was loaded
    /// before may have been changed by another process.
    pub(crate) fresh: bool,
}

impl HomeLock {
    /// Opens (creating, mode 0600) the lock file of `home`, which must exist.
    pub(crate) fn open(home: &Path) -> Result<Self> {
        let path = home.join(FILE);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&path).map_err(|e| {
            ClientError::Io(std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        })?;
        Ok(Self { inner: Arc::new(Inner { path, file, depth: Mutex::new(0), notice: Mutex::new(None) }) })
    }

    /// Sets the callback told when an operation must wait for another process.
    pub(crate) fn set_notice(&self, notice: Option<LockNotice>) {
        *self.inner.notice.lock().unwrap_or_else(PoisonError::into_inner) = notice;
    }

    /// Takes the lock, blocking the thread while another process holds it (for the
    /// synchronous calls: open, rekey).
    pub(crate) fn lock_blocking(&self) -> Result<HomeGuard> {
        match self.try_take()? {
            Some(g) => Ok(g),
            None => {
                self.notify();
                self.inner.file.lock().map_err(|e| self.io_error(e))?;
                Ok(self.taken())
            }
        }
    }

    /// Takes the lock, polling without blocking the runtime while another process holds it.
    pub(crate) async fn lock(&self) -> Result<HomeGuard> {
        if let Some(g) = self.try_take()? {
            return Ok(g);
        }
        self.notify();
        loop {
            tokio::time::sleep(POLL).await;
            if let Some(g) = self.try_take()? {
                return Ok(g);
            }
        }
    }

    /// The guard if this `HomeLock` holds the lock already or gets it now; `None` if another
    /// holder has it.
    fn try_take(&self) -> Result<Option<HomeGuard>> {
        let mut depth = self.inner.depth.lock().unwrap_or_else(PoisonError::into_inner);
        if *depth > 0 {
            *depth += 1;
            return Ok(Some(HomeGuard { inner: self.inner.clone(), fresh: false }));
        }
        match self.inner.file.try_lock() {
            Ok(()) => {
                *depth = 1;
                drop(depth);
                self.record_holder();
                Ok(Some(HomeGuard { inner: self.inner.clone(), fresh: true }))
            }
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(self.io_error(e)),
        }
    }

    /// After a blocking `lock()` succeeded.
    fn taken(&self) -> HomeGuard {
        *self.inner.depth.lock().unwrap_or_else(PoisonError::into_inner) = 1;
        self.record_holder();
        HomeGuard { inner: self.inner.clone(), fresh: true }
    }

    /// Writes this process's id into the file, for the notice of the next one that waits.
    /// Best effort: the lock does not depend on it.
    fn record_holder(&self) {
        let f = &self.inner.file;
        let _ = f.set_len(0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            let _ = f.write_at(std::process::id().to_string().as_bytes(), 0);
        }
        #[cfg(not(unix))]
        {
            use std::io::Write;
            let _ = (&mut &*f).write_all(std::process::id().to_string().as_bytes());
        }
    }

    fn notify(&self) {
        let notice = self.inner.notice.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let Some(notice) = notice else { return };
        let holder = std::fs::read_to_string(&self.inner.path)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .map(|pid| format!(" (pid {pid})"))
            .unwrap_or_default();
        let home = self.inner.path.parent().unwrap_or(&self.inner.path);
        notice(&format!(
            "another tacit process{holder} is using {}; waiting for it to finish",
            home.display()
        ));
    }

    fn io_error(&self, e: std::io::Error) -> ClientError {
        ClientError::Io(std::io::Error::new(
            e.kind(),
            format!("cannot lock {}: {e}", self.inner.path.display()),
        ))
    }
}

impl Drop for HomeGuard {
    fn drop(&mut self) {
        let mut depth = self.inner.depth.lock().unwrap_or_else(PoisonError::into_inner);
        *depth = depth.saturating_sub(1);
        if *depth == 0 {
            // Closing the file would release it too; an error here leaves it held until then.
            let _ = self.inner.file.unlock();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn two_locks_exclude_each_other_and_one_is_reentrant() {
        let dir = tempfile::tempdir().unwrap();
        let a = HomeLock::open(dir.path()).unwrap();
        let b = HomeLock::open(dir.path()).unwrap();
        let outer = a.lock_blocking().unwrap();
        assert!(outer.fresh);
        let inner = a.try_take().unwrap().expect("re-entrant");
        assert!(!inner.fresh);
        assert!(b.try_take().unwrap().is_none(), "another holder must wait");
        drop(inner);
        assert!(b.try_take().unwrap().is_none(), "still held by the outer guard");
        drop(outer);
        let got = b.try_take().unwrap().expect("released");
        assert!(got.fresh);
        assert_eq!(std::fs::read_to_string(dir.path().join(FILE)).unwrap(), std::process::id().to_string());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiter_is_told_once_and_gets_the_lock_when_released() {
        let dir = tempfile::tempdir().unwrap();
        let a = HomeLock::open(dir.path()).unwrap();
        let b = HomeLock::open(dir.path()).unwrap();
        let told = Arc::new(AtomicUsize::new(0));
        let counter = told.clone();
        b.set_notice(Some(Arc::new(move |m: &str| {
            assert!(m.contains("waiting"), "{m}");
            counter.fetch_add(1, Ordering::SeqCst);
        })));
        let held = a.lock().await.unwrap();
        let waiter = tokio::spawn(async move { b.lock().await.map(|g| g.fresh) });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiter.is_finished(), "must wait while the lock is held");
        drop(held);
        assert!(waiter.await.unwrap().unwrap());
        assert_eq!(told.load(Ordering::SeqCst), 1);
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let _l = HomeLock::open(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
