//! Group commit: one writer thread owns the only writing connection. Writes arrive as jobs
//! on a channel; the thread takes every queued job (up to [`MAX_BATCH`]), runs each inside
//! its own savepoint (a job that fails is rolled back alone), commits the batch in one
//! transaction (one WAL fsync with `synchronous=FULL`) and only then answers each caller.
//! A caller's success therefore means its write is durable, and N concurrent writers pay
//! for one fsync instead of N.
//!
//! Because one thread applies every write in order, read-modify-write jobs (hand out a
//! one-time key, check a mailbox bound) are atomic without further locking.

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::store::StoreError;

/// Most jobs committed in one transaction.
pub(super) const MAX_BATCH: usize = 4096;
/// Jobs queued before callers wait (back-pressure).
pub(super) const QUEUE: usize = 16_384;

/// A write to run on the writer thread.
pub(super) trait Job: Send {
    /// Runs the write; false if it failed (its savepoint is then rolled back).
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
            (true, None) => Err(StoreError::Backend("job did not run".into())),
            (false, _) => Err(StoreError::Backend("batch did not commit".into())),
        };
        // The caller may have gone away (request cancelled); the write stands either way.
        let _ = self.reply.send(out);
    }
}

/// The writer thread's loop: runs until the channel closes or a `Stop` arrives.
pub(super) fn run(mut conn: Connection, mut rx: mpsc::Receiver<Msg>) {
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
            commit_batch(&mut conn, &mut batch);
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
                commit_batch(&mut conn, &mut batch);
            }
            let _ = s.send(());
            return;
        }
    }
}

fn exec(conn: &Connection, sql: &str) -> bool {
    conn.prepare_cached(sql).and_then(|mut s| s.execute([])).is_ok()
}

fn commit_batch(conn: &mut Connection, batch: &mut Vec<Box<dyn Job>>) {
    let mut ok = exec(conn, "BEGIN IMMEDIATE");
    if ok {
        for job in batch.iter_mut() {
            if !exec(conn, "SAVEPOINT job") {
                ok = false;
                break;
            }
            if !job.run(conn) && !exec(conn, "ROLLBACK TO job") {
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
    for job in batch.drain(..) {
        job.finish(committed);
    }
}
