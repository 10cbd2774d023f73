//! Mailboxes: send (the envelope set must match the recipient's devices; stored durably
//! before the 200), fetch and acknowledge (deletes only the caller's own envelopes).

use std::sync::Arc;

use tacit_api::limits::{MAX_ENVELOPE_BYTES, MAX_ENVELOPES_PER_SEND, MAX_FETCH, MAX_FETCH_BYTES};
use tacit_api::{AckRequest, FetchResponse, SendRequest, SendResponse};

use crate::error::Failure;
use crate::state::{AppState, now_ms};
use crate::store::{Authed, NewEnvelope};

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
    let now = now_ms();
    // Store and publish in a detached task, so that an envelope that commits is published
    // even when this request is cancelled meanwhile (the client hung up, or the request
    // timed out): commit implies publish, and no connected recipient waits for a resync.
    let store = state.store().clone();
    let bus = state.inner().bus.clone();
    let recipient = req.recipient;
    let task = tokio::spawn(async move {
        let stored = store.send(&caller, &recipient, envelopes, now).await?;
        // Durable now: wake the recipients' connections with the envelopes themselves.
        for s in stored {
            bus.publish(s.to, Arc::new(s.envelope));
        }
        Ok::<_, Failure>(())
    });
    task.await.map_err(|_| Failure::Internal("send task failed".into()))??;
    Ok(SendResponse { server_time_ms: now })
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
pub async fn ack(state: &AppState, caller: &Authed, req: AckRequest) -> Result<(), Failure> {
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
    state.store().ack(caller.key, &req.ids).await?;
    Ok(())
}
