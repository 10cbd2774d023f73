//! Whether writes are getting through: a count of writes waiting for the database and the
//! last time one finished. Writes waiting while none has finished for [`STALL_AFTER`] mean
//! the store is stuck (an fsync that hangs, a lock held elsewhere): the store then reports
//! itself unhealthy, so `GET /healthz` tells a load balancer to send clients elsewhere,
//! though the process and its writer thread are alive.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Writes waiting this long with none finishing make the store unhealthy.
pub const STALL_AFTER: Duration = Duration::from_secs(3);

/// Waiting writes and the time of the last progress.
#[derive(Debug)]
pub(crate) struct Progress {
    /// The clock every time below is measured from.
    epoch: Instant,
    /// Writes started and not finished.
    waiting: AtomicU64,
    /// Milliseconds since `epoch` of the last progress: a write finished, or writes started
    /// waiting while none was.
    last_ms: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Self { epoch: Instant::now(), waiting: AtomicU64::new(0), last_ms: AtomicU64::new(0) }
    }
}

/// One waiting write; dropping it ends the wait. [`Waiting::finished`] marks progress.
pub(crate) struct Waiting<'a> {
    progress: &'a Progress,
}

impl Progress {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A write starts waiting for the database.
    pub(crate) fn begin(&self) -> Waiting<'_> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) == 0 {
            self.last_ms.store(self.now_ms(), Ordering::Release);
        }
        Waiting { progress: self }
    }

    /// Whether writes wait and none has finished for [`STALL_AFTER`].
    pub(crate) fn stalled(&self) -> bool {
        self.stalled_after(STALL_AFTER)
    }

    fn stalled_after(&self, after: Duration) -> bool {
        let since = self.now_ms().saturating_sub(self.last_ms.load(Ordering::Acquire));
        self.waiting.load(Ordering::Acquire) > 0 && u128::from(since) > after.as_millis()
    }
}

impl Waiting<'_> {
    /// The database answered this write (committed or failed): the store is moving.
    pub(crate) fn finished(self) {
        self.progress.last_ms.store(self.progress.now_ms(), Ordering::Release);
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.progress.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_without_progress_is_a_stall_and_an_answer_ends_it() {
        let p = Progress::default();
        let short = Duration::from_millis(30);
        std::thread::sleep(short * 2);
        assert!(!p.stalled_after(short), "idle is not stalled");
        let a = p.begin();
        assert!(!p.stalled_after(short), "just started");
        std::thread::sleep(short * 2);
        assert!(p.stalled_after(short), "waiting with no answer");
        let b = p.begin();
        assert!(p.stalled_after(short), "a second waiter is no progress");
        a.finished();
        assert!(!p.stalled_after(short), "an answer is progress");
        std::thread::sleep(short * 2);
        assert!(p.stalled_after(short));
        // A waiter that gives up (dropped without an answer) is no progress either.
        drop(b);
        assert!(!p.stalled_after(short), "nothing waits");
    }
}
