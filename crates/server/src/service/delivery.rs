//! Live delivery over a WebSocket (`GET /v1/ws`). On connect the device subscribes to the
//! bus first, then pages through its stored mailbox, sends `drained`, and from then on
//! forwards envelopes as the bus hands them over (no database read per live envelope).
//! Envelopes stay stored until the client acknowledges them (over the socket or HTTP);
//! an envelope seen both in the stored pages and on the bus is sent once. On shutdown the
//! server closes every socket with "going away" and the client reconnects elsewhere.
//!
//! De-duplication uses a per-connection watermark: the highest id any resync has read.
//! Within one mailbox, ids follow commit order (SQLite: one writer assigns them; PostgreSQL:
//! the id is drawn while the send holds the recipient's device row lock, which it keeps
//! until commit), so a page that contains id `W` contains every envelope of the mailbox
//! with a smaller id that is still stored. A bus envelope at or below the watermark was
//! therefore in a page already (or has been acknowledged since) and is skipped; one above
//! it was not and is sent. A lagged subscriber resumes its resync from the watermark.

use std::collections::HashSet;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use tacit_api::limits::{MAX_FETCH, MAX_FETCH_BYTES, MAX_MAILBOX_ENVELOPES};
use tacit_api::{ClientFrame, ServerFrame};

use super::messages::MAX_ACK_IDS;
use crate::limiter::LimitKey;
use crate::state::AppState;
use crate::store::Authed;

/// Largest frame a client may send (acks only).
pub const MAX_CLIENT_FRAME: usize = 64 * 1024;
/// A client that does not read for this long is disconnected.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Close codes (RFC 6455 section 7.4.1).
const GOING_AWAY: u16 = 1001;
const POLICY: u16 = 1008;
const INTERNAL: u16 = 1011;

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
enum Stop {
    /// The socket closed or a write failed or timed out.
    #[error("socket closed")]
    Socket,
    /// The server refuses to go on (code and reason sent to the client).
    #[error("closing: {1}")]
    Close(u16, &'static str),
}

/// What a connection has sent, to send each envelope once.
#[derive(Default)]
struct Tracker {
    /// The highest id any resync read from the store.
    watermark: u64,
    /// Envelopes sent on this connection and not yet acknowledged on it.
    sent: HashSet<u64>,
}

impl Tracker {
    /// Whether to send an envelope read from the store by a resync.
    fn read_from_store(&mut self, id: u64) -> bool {
        self.watermark = self.watermark.max(id);
        self.sent.insert(id)
    }

    /// Whether to send an envelope handed over by the bus.
    fn taken_from_bus(&mut self, id: u64) -> bool {
        id > self.watermark && self.sent.insert(id)
    }

    /// The client acknowledged these (they are deleted from the store).
    fn acked(&mut self, ids: &[u64]) {
        for id in ids {
            self.sent.remove(id);
        }
    }
}

struct Conn {
    socket: WebSocket,
    track: Tracker,
}

impl Conn {
    async fn send(&mut self, frame: &ServerFrame) -> Result<(), Stop> {
        let text = serde_json::to_string(frame).map_err(|_| Stop::Close(INTERNAL, "encoding failed"))?;
        match tokio::time::timeout(SEND_TIMEOUT, self.socket.send(Message::Text(text.into()))).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Stop::Socket),
        }
    }

    async fn deliver(&mut self, envelope: &tacit_api::Envelope, from_store: bool) -> Result<(), Stop> {
        let new = if from_store {
            self.track.read_from_store(envelope.id)
        } else {
            self.track.taken_from_bus(envelope.id)
        };
        if !new {
            return Ok(());
        }
        if self.track.sent.len() > 2 * MAX_MAILBOX_ENVELOPES {
            return Err(Stop::Close(POLICY, "too many unacknowledged envelopes"));
        }
        self.send(&ServerFrame::Envelope(envelope.clone())).await
    }

    async fn close(mut self, code: u16, reason: &'static str) {
        let frame = CloseFrame { code, reason: reason.into() };
        let _ = tokio::time::timeout(SEND_TIMEOUT, self.socket.send(Message::Close(Some(frame)))).await;
    }
}

/// Sends every stored envelope above the watermark not yet sent on this connection.
async fn resync(state: &AppState, who: &Authed, conn: &mut Conn) -> Result<(), Stop> {
    let mut after = conn.track.watermark;
    loop {
        let page = state
            .store()
            .fetch(who.key, after, MAX_FETCH + 1, MAX_FETCH_BYTES)
            .await
            .map_err(|_| Stop::Close(INTERNAL, "storage unavailable"))?;
        // At most MAX_FETCH_BYTES (or one envelope) per page; the rest is read again.
        let keep = crate::store::page_len(&page, MAX_FETCH, MAX_FETCH_BYTES);
        let full = page.len() > keep;
        for e in page.iter().take(keep) {
            after = after.max(e.id);
            conn.deliver(e, true).await?;
        }
        if !full {
            return Ok(());
        }
    }
}

async fn on_text(state: &AppState, who: &Authed, conn: &mut Conn, text: &str) -> Result<(), Stop> {
    // Over the acknowledgement budget the socket is slowed down, never closed: a client
    // acking a burst of envelopes is doing what it should.
    if let Err(wait) = state.limit_wait(LimitKey::Acks(who.key)) {
        tokio::time::sleep(Duration::from_millis(wait.min(1000))).await;
    }
    let ClientFrame::Ack { ids } =
        serde_json::from_str::<ClientFrame>(text).map_err(|_| Stop::Close(POLICY, "bad_request"))?;
    if ids.len() > MAX_ACK_IDS {
        return Err(Stop::Close(POLICY, "too_large"));
    }
    state.store().ack(who.key, &ids).await.map_err(|_| Stop::Close(INTERNAL, "storage unavailable"))?;
    conn.track.acked(&ids);
    Ok(())
}

async fn serve(state: &AppState, who: &Authed, conn: &mut Conn) -> Result<(), Stop> {
    // Subscribe before reading the mailbox so nothing committed in between is missed.
    let mut sub = state.inner().bus.subscribe(who.key);
    resync(state, who, conn).await?;
    conn.send(&ServerFrame::Drained).await?;
    let shutdown = state.inner().shutdown.clone();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Err(Stop::Close(GOING_AWAY, "server shutting down")),
            live = sub.recv() => {
                let Some(envelope) = live else {
                    return Err(Stop::Close(GOING_AWAY, "server shutting down"));
                };
                if sub.take_lagged() {
                    resync(state, who, conn).await?;
                }
                conn.deliver(&envelope, false).await?;
            }
            incoming = conn.socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => on_text(state, who, conn, text.as_str()).await?,
                Some(Ok(Message::Binary(_))) => return Err(Stop::Close(POLICY, "bad_request")),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_)) | Err(_)) | None => return Err(Stop::Socket),
            },
        }
    }
}

/// Runs one device's WebSocket until either side closes or the server shuts down.
pub async fn run(state: AppState, who: Authed, socket: WebSocket) {
    let mut conn = Conn { socket, track: Tracker::default() };
    match serve(&state, &who, &mut conn).await {
        Ok(()) | Err(Stop::Socket) => {}
        Err(Stop::Close(code, reason)) => {
            tracing::debug!(code, reason, "closing websocket");
            conn.close(code, reason).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Tracker;

    #[test]
    fn envelope_in_page_and_on_bus_is_sent_once_even_after_ack() {
        let mut t = Tracker::default();
        // Envelope 7 commits during the resync: the page has it and the bus queues it.
        assert!(t.read_from_store(5));
        assert!(t.read_from_store(7));
        // The client acknowledges both before the queued copy is taken off the bus.
        t.acked(&[5, 7]);
        assert!(!t.taken_from_bus(7), "acknowledged envelope sent again");
        // Later envelopes are sent once.
        assert!(t.taken_from_bus(8));
        assert!(!t.taken_from_bus(8));
        // A lag resync starts at the watermark and skips what the bus already sent.
        assert_eq!(t.watermark, 7);
        assert!(!t.read_from_store(8));
        assert!(t.read_from_store(9));
        assert!(!t.taken_from_bus(9));
    }
}
