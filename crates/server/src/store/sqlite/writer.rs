//! Group commit: one writer thread owns the only writing connection. Writes arrive as jobs
//! on a channel; the thread takes every queued job (up to [`MAX_BATCH`]), runs each inside
//! its own savepoint (a job that fails is rolled back alone), commits the batch in one
//! transaction (one WAL fsync with `synchronous=FULL`) and only then answers each caller.
//! A caller's success therefore means its write is durable, and N concurrent writers pay
//! for one fsync instead of N.
//!
//! Because one thread applies every write in order, read-modify-write jobs (hand out a
//! one-time key, check a mailbox bound) are atomic without further locking.
//!
//! A job that panics is caught, its savepoint rolled back and its caller answered with an
//! error; the batch goes on. If the thread ends anyway, or batches keep failing to commit,
//! [`WriterHealth`] says so and the store reports itself unhealthy (`GET /healthz` → 503).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::store::StoreError;

/// Most jobs committed in one transaction.
pub(super) const MAX_BATCH: usize = 4096;
/// Jobs queued before callers wait (back-pressure).
pub(super) const QUEUE: usize = 16_384;

/// Batches in a row that fail to commit before the store reports itself unhealthy.
pub(super) const UNHEALTHY_AFTER_FAILED_BATCHES: u32 = 3;

/// What the writer thread tells the rest of the store about itself.
#[derive(Debug)]
pub(super) struct WriterHealth {
    /// Cleared when the writer thread ends, however it ends.
    running: AtomicBool,
    /// Batches in a row that did not commit (reset by the next commit).
    failed_batches: AtomicU32,
    /// Batches committed so far (the checkpointer tells an idle writer by it).
    commits: AtomicU64,
}

impl WriterHealth {
    /// A writer about to start.
    pub(super) fn new() -> Self {
        Self { running: AtomicBool::new(true), failed_batches: AtomicU32::new(0), commits: AtomicU64::new(0) }
    }

    /// True while the thread runs and the last batches committed.
    pub(super) fn healthy(&self) -> bool {
        self.running.load(Ordering::Acquire)
            && self.failed_batches.load(Ordering::Acquire) < UNHEALTHY_AFTER_FAILED_BATCHES
    }

    /// Batches committed so far.
    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Acquire)
    }

    fn batch_done(&self, committed: bool) {
        if committed {
            self.failed_batches.store(0, Ordering::Release);
            self.commits.fetch_add(1, Ordering::AcqRel);
        } else {
            let _ = self
                .failed_batches
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| Some(n.saturating_add(1)));
        }
    }
}

/// Marks the writer stopped when the thread's loop ends, by return or by unwinding.
struct Running<'a>(&'a WriterHealth);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
    }
}

/// A write to run on the writer thread.
pub(super) trait Job: Send {
    /// Runs the write; false if it failed (its savepoint is then rolled back). A panic is
    /// caught by the writer; the job then answers an error.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller: its own result if the batch committed, an error otherwise.
    fn finish(self: Box<Self>, committed: bool);
}

/// A message to the writer thread.
pub(super) enum Msg {
    /// A write.
    Job(Box<dyn Job>),
    /// Finish the queued writes, then stop and answer.
    Stop(oneshot::Sender<()>),
}

/// A job made from a closure, answering through a oneshot channel.
pub(super) struct Typed<T, F> {
    f: Option<F>,
    out: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Typed<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    /// A job and the receiver of its answer.
    pub(super) fn job(f: F) -> (Box<dyn Job>, oneshot::Receiver<Result<T, StoreError>>) {
        let (reply, rx) = oneshot::channel();
        (Box::new(Self { f: Some(f), out: None, reply }), rx)
    }
}

impl<T, F> Job for Typed<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> bool {
        // Nobody waits for the answer any more (a send past its deadline, a cancelled
        // request): the write is not made, so a caller told "unavailable" before its job
        // started is not followed by a commit it never hears of.
        if self.reply.is_closed() {
            self.f = None;
            self.out = Some(Err(StoreError::Closed));
            return false;
        }
        let out = match self.f.take() {
            Some(f) => f(conn),
            None => Err(StoreError::Backend("job ran twice".into())),
        };
        let ok = out.is_ok();
        self.out = Some(out);
        ok
    }

    fn finish(self: Box<Self>, committed: bool) {
        let out = match (committed, self.out) {
            (true, Some(out)) => out,
            // `run` panicked (or never ran): its savepoint was rolled back.
            (true, None) => Err(StoreError::Backend("write job panicked".into())),
            (false, _) => Err(StoreError::Backend("batch did not commit".into())),
        };
        // The caller may have gone away (request cancelled); the write stands either way.
        let _ = self.reply.send(out);
    }
}

/// The writer thread's loop: runs until the channel closes or a `Stop` arrives.
pub(super) fn run(mut conn: Connection, mut rx: mpsc::Receiver<Msg>, health: &WriterHealth) {
    let _running = Running(health);
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    loop {
        let mut stop = None;
        match rx.blocking_recv() {
            None => return,
            Some(Msg::Job(j)) => batch.push(j),
            Some(Msg::Stop(s)) => stop = Some(s),
        }
        while stop.is_none() && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Job(j)) => batch.push(j),
                Ok(Msg::Stop(s)) => stop = Some(s),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            commit_batch(&mut conn, &mut batch, health);
        }
        if let Some(s) = stop {
            rx.close();
            // Anything queued behind the stop still gets an answer.
            while let Ok(msg) = rx.try_recv() {
                match msg {
                    Msg::Job(j) => batch.push(j),
                    Msg::Stop(s) => {
                        let _ = s.send(());
                    }
                }
            }
            if !batch.is_empty() {
                commit_batch(&mut conn, &mut batch, health);
            }
            let _ = s.send(());
            return;
        }
    }
}

fn exec(conn: &Connection, sql: &str) -> bool {
    conn.prepare_cached(sql).and_then(|mut s| s.execute([])).is_ok()
}

/// Runs one job, catching a panic (which counts as a failure).
fn run_job(conn: &Connection, job: &mut Box<dyn Job>) -> bool {
    match std::panic::catch_unwind(AssertUnwindSafe(|| job.run(conn))) {
        Ok(ok) => ok,
        Err(_) => {
            tracing::error!("sqlite write job panicked");
            false
        }
    }
}

fn commit_batch(conn: &mut Connection, batch: &mut Vec<Box<dyn Job>>, health: &WriterHealth) {
    let mut ok = exec(conn, "BEGIN IMMEDIATE");
    if ok {
        for job in batch.iter_mut() {
            if !exec(conn, "SAVEPOINT job") {
                ok = false;
                break;
            }
            if !run_job(conn, job) && !exec(conn, "ROLLBACK TO job") {
                ok = false;
                break;
            }
            if !exec(conn, "RELEASE job") {
                ok = false;
                break;
            }
        }
    }
    let committed = ok && exec(conn, "COMMIT");
    if !committed {
        tracing::error!(jobs = batch.len(), "sqlite batch did not commit");
        let _ = conn.execute_batch("ROLLBACK");
    }
    health.batch_done(committed);
    for job in batch.drain(..) {
        job.finish(committed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    type Answer<T> = oneshot::Receiver<Result<T, StoreError>>;

    fn start(conn: Connection) -> (mpsc::Sender<Msg>, Arc<WriterHealth>, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let health = Arc::new(WriterHealth::new());
        let h = health.clone();
        let thread = std::thread::spawn(move || run(conn, rx, &h));
        (tx, health, thread)
    }

    fn write<T, F>(tx: &mpsc::Sender<Msg>, f: F) -> Answer<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (job, rx) = Typed::job(f);
        assert!(tx.try_send(Msg::Job(job)).is_ok(), "writer queue open");
        rx
    }

    fn stop(tx: &mpsc::Sender<Msg>, thread: std::thread::JoinHandle<()>) {
        let (s, r) = oneshot::channel();
        assert!(tx.try_send(Msg::Stop(s)).is_ok());
        r.blocking_recv().unwrap();
        thread.join().unwrap();
    }

    fn table() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER)").unwrap();
        conn
    }

    fn insert(v: i64) -> impl FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static {
        move |c| {
            c.execute("INSERT INTO t VALUES (?1)", [v])?;
            Ok(())
        }
    }

    fn values(tx: &mpsc::Sender<Msg>) -> String {
        write(tx, |c| {
            Ok(c.query_row(
                "SELECT coalesce(group_concat(v), '') FROM (SELECT v FROM t ORDER BY v)",
                [],
                |r| r.get::<_, String>(0),
            )?)
        })
        .blocking_recv()
        .unwrap()
        .unwrap()
    }

    #[test]
    fn a_panicking_job_fails_alone_and_the_writer_goes_on() {
        let (tx, rx) = mpsc::channel(QUEUE);
        // Queued before the thread starts, so the three jobs share one batch.
        let before = write(&tx, insert(1));
        let boom = write(&tx, |c| -> Result<(), StoreError> {
            c.execute("INSERT INTO t VALUES (2)", [])?;
            panic!("a bug in a write job");
        });
        let after = write(&tx, insert(3));
        let health = Arc::new(WriterHealth::new());
        let h = health.clone();
        let conn = table();
        let thread = std::thread::spawn(move || run(conn, rx, &h));
        assert!(before.blocking_recv().unwrap().is_ok());
        assert!(matches!(boom.blocking_recv().unwrap(), Err(StoreError::Backend(_))));
        assert!(after.blocking_recv().unwrap().is_ok());
        // The panicking job's insert was rolled back; the next batch commits too.
        assert!(write(&tx, insert(4)).blocking_recv().unwrap().is_ok());
        assert_eq!(values(&tx), "1,3,4");
        assert!(health.healthy());
        stop(&tx, thread);
        assert!(!health.healthy(), "a stopped writer is not healthy");
    }

    #[test]
    fn batches_that_keep_failing_to_commit_make_the_writer_unhealthy() {
        let (tx, health, thread) = start(table());
        // Ending the transaction inside a job makes its batch fail (RELEASE has no savepoint).
        let breaks_the_batch = |c: &Connection| -> Result<(), StoreError> {
            c.execute_batch("ROLLBACK")?;
            Ok(())
        };
        for n in 1..=UNHEALTHY_AFTER_FAILED_BATCHES {
            assert!(health.healthy(), "healthy after {} failed batches", n - 1);
            assert!(matches!(
                write(&tx, breaks_the_batch).blocking_recv().unwrap(),
                Err(StoreError::Backend(_))
            ));
        }
        assert!(!health.healthy());
        // One commit later it is healthy again.
        assert!(write(&tx, insert(1)).blocking_recv().unwrap().is_ok());
        assert!(health.healthy());
        assert_eq!(values(&tx), "1");
        stop(&tx, thread);
    }

    #[test]
    fn a_job_whose_caller_has_gone_is_not_run() {
        let (tx, rx) = mpsc::channel(QUEUE);
        let gone = write(&tx, insert(1));
        drop(gone);
        let kept = write(&tx, insert(2));
        let health = Arc::new(WriterHealth::new());
        let h = health.clone();
        let conn = table();
        let thread = std::thread::spawn(move || run(conn, rx, &h));
        assert!(kept.blocking_recv().unwrap().is_ok());
        assert_eq!(values(&tx), "2");
        stop(&tx, thread);
    }

    #[test]
    fn a_writer_thread_that_ends_is_unhealthy_and_answers_closed() {
        let (tx, health, thread) = start(table());
        stop(&tx, thread);
        assert!(!health.healthy());
        let (job, _rx) = Typed::job(insert(1));
        assert!(tx.try_send(Msg::Job(job)).is_err(), "the queue closed with the thread");
    }
}
