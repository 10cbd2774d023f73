//! Mailboxes: send (the envelope set must match the recipient's devices; stored durably
//! before the 200), fetch and acknowledge (deletes only the caller's own envelopes).
//!
//! A send is refused (`507 storage_full`) while the store is below its free-space
//! watermark; acknowledgements never are, so mailboxes can drain. Its envelope bytes wait
//! for the store under a server-wide bound (no room within [`ROOM_WAIT`]: `503`), and its
//! caller waits at most [`STORE_DEADLINE`] (then `503`) while the write goes on, for at most
//! [`STORE_GIVE_UP`], in a detached task. A `503` may therefore be followed by the commit,
//! so a send carries an idempotency key: a retry with it is answered as the first send was
//! and stores nothing twice.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tacit_api::limits::{
    IDEMPOTENCY_KEY_BYTES, MAX_ENVELOPE_BYTES, MAX_ENVELOPES_PER_SEND, MAX_FETCH, MAX_FETCH_BYTES,
};
use tacit_api::{AckRequest, FetchResponse, SendRequest, SendResponse};

use crate::error::Failure;
use crate::state::{AppState, now_ms};
use crate::store::{Authed, NewEnvelope, Sent};

/// How long a send waits for room under the server-wide bound on bytes waiting for the
/// store ([`crate::Settings::max_pending_store_bytes`]).
pub const ROOM_WAIT: Duration = Duration::from_secs(1);
/// How long a send waits for the store before it is answered `503 unavailable` (below the
/// request timeout, so the answer is ours). The write goes on in its detached task (and
/// may still commit, then publish): the idempotency key makes the client's retry safe.
pub const STORE_DEADLINE: Duration = Duration::from_secs(10);
/// How long the detached task of a send waits for the store at all; then it gives the write
/// up (a SQLite job not started by then is skipped; a PostgreSQL transaction is rolled
/// back) and frees its room under the server-wide bound. Until then the room stays taken, so
/// a stalled store fills the bound and further sends are refused instead of queueing.
pub const STORE_GIVE_UP: Duration = Duration::from_secs(60);

/// Most ids in one acknowledgement (HTTP or WebSocket).
pub const MAX_ACK_IDS: usize = 1024;
/// An acknowledgement costs one token of the acknowledgement budget per this many ids (a
/// deletion per id is work for the store: 1,024 ids must not cost what one does).
pub const IDS_PER_ACK_TOKEN: usize = 64;

/// The tokens an acknowledgement of `ids` ids costs.
pub(crate) fn ack_cost(ids: usize) -> u32 {
    u32::try_from(ids.div_ceil(IDS_PER_ACK_TOKEN).max(1)).unwrap_or(u32::MAX)
}

/// `POST /v1/messages`.
pub async fn send(state: &AppState, caller: Authed, req: SendRequest) -> Result<SendResponse, Failure> {
    if tacit_protocol::AccountName::new(&req.recipient).is_err() {
        return Err(Failure::NotFound);
    }
    if req.envelopes.len() > MAX_ENVELOPES_PER_SEND {
        return Err(Failure::TooLarge("too many envelopes in one send"));
    }
    let mut devices = Vec::with_capacity(req.envelopes.len());
    let mut envelopes = Vec::with_capacity(req.envelopes.len());
    for e in req.envelopes {
        let len = e.content.as_slice().len();
        if len > MAX_ENVELOPE_BYTES {
            return Err(Failure::TooLarge("envelope too large"));
        }
        if len == 0 {
            return Err(Failure::BadRequest("empty envelope"));
        }
        devices.push(e.device);
        envelopes.push(NewEnvelope { device: e.device, content: e.content.0 });
    }
    devices.sort_unstable();
    if devices.windows(2).any(|w| w.first() == w.get(1)) {
        return Err(Failure::BadRequest("two envelopes for one device"));
    }
    let idempotency_key = idempotency_key(req.idempotency_key.as_ref())?;
    if state.storage_low() {
        return Err(Failure::StorageFull);
    }
    let bytes: usize = envelopes.iter().map(|e| e.content.len()).sum();
    let store = state.store().clone();
    let bus = state.inner().bus.clone();
    let recipient = req.recipient;
    let state_counter = req.state_counter;
    let now = now_ms();
    let server_time_ms = detached(state, bytes, async move {
        match store.send(&caller, &recipient, envelopes, now, idempotency_key, state_counter).await? {
            // Durable now: wake the recipients' connections with the envelopes themselves.
            Sent::Stored(stored) => {
                for s in stored {
                    bus.publish(s.to, Arc::new(s.envelope));
                }
                Ok(now)
            }
            // A retry of a send stored before: answered as that one was.
            Sent::Duplicate { server_time_ms } => Ok(server_time_ms),
        }
    })
    .await?;
    Ok(SendResponse { server_time_ms })
}

/// An idempotency key as sent (16 bytes, or none).
pub(crate) fn idempotency_key(
    key: Option<&tacit_api::Bytes>,
) -> Result<Option<[u8; IDEMPOTENCY_KEY_BYTES]>, Failure> {
    key.map(|k| {
        <[u8; IDEMPOTENCY_KEY_BYTES]>::try_from(k.as_slice())
            .map_err(|_| Failure::BadRequest("idempotency key is 16 bytes"))
    })
    .transpose()
}

/// Runs `write` (a store write and the publishing of what it stored) with room for its
/// `bytes` under the server-wide bound, in a detached task, so that what commits is
/// published even when the request is cancelled meanwhile (the client hung up, or the
/// request timed out): commit implies publish, and no connected recipient waits for a
/// resync. The caller waits at most [`STORE_DEADLINE`]; the write at most [`STORE_GIVE_UP`].
pub(crate) async fn detached<T: Send + 'static>(
    state: &AppState,
    bytes: usize,
    write: impl Future<Output = Result<T, Failure>> + Send + 'static,
) -> Result<T, Failure> {
    // Room for these bytes under the server-wide bound, held until the store answers.
    let inner = state.inner();
    let permits = u32::try_from(bytes.clamp(1, inner.max_pending_bytes)).unwrap_or(u32::MAX);
    let room = match tokio::time::timeout(ROOM_WAIT, inner.pending_bytes.clone().acquire_many_owned(permits))
        .await
    {
        Ok(Ok(permit)) => permit,
        _ => return Err(Failure::Unavailable),
    };
    let (answer, answered) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _room = room;
        let out = tokio::time::timeout(STORE_GIVE_UP, write).await.unwrap_or(Err(Failure::Unavailable));
        // The caller may have gone (its deadline, or it hung up): the write stands.
        let _ = answer.send(out);
    });
    match tokio::time::timeout(STORE_DEADLINE, answered).await {
        Ok(Ok(out)) => out,
        Ok(Err(_)) => Err(Failure::Internal("send task failed".into())),
        Err(_) => Err(Failure::Unavailable),
    }
}

/// `GET /v1/messages?after=ID`: the oldest pending envelopes with ids above `after` (a
/// client pages past the envelopes it holds back, so they cannot hide the ones behind).
pub async fn fetch(state: &AppState, caller: &Authed, after: u64) -> Result<FetchResponse, Failure> {
    let mut envelopes = state.store().fetch(caller.key, after, MAX_FETCH + 1, MAX_FETCH_BYTES).await?;
    let keep = crate::store::page_len(&envelopes, MAX_FETCH, MAX_FETCH_BYTES);
    let more = envelopes.len() > keep;
    envelopes.truncate(keep);
    Ok(FetchResponse { envelopes, more })
}

/// `POST /v1/messages/ack`.
pub async fn ack(state: &AppState, caller: &Authed, mut req: AckRequest) -> Result<(), Failure> {
    if req.ids.len() > MAX_ACK_IDS {
        return Err(Failure::TooLarge("too many ids in one acknowledgement"));
    }
    // The request itself paid one token when it was authenticated; the rest of its cost now.
    let rest = ack_cost(req.ids.len()).saturating_sub(1);
    if rest > 0 {
        state
            .limit_wait_n(crate::limiter::LimitKey::Acks(caller.key), rest)
            .map_err(|_| Failure::RateLimited)?;
    }
    // Every id was paid for; each is deleted once, in one statement, and only ids still
    // stored reach the writer (a read finds them): made-up ids cost it nothing. (Over the
    // WebSocket the connection knows what it delivered and needs no read.)
    req.ids.sort_unstable();
    req.ids.dedup();
    let stored = state.store().stored_ids(caller.key, &req.ids).await?;
    if !stored.is_empty() {
        state.store().ack(caller.key, &stored, req.state_counter).await?;
    }
    Ok(())
}
