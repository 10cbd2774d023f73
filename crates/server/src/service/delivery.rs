//! Live delivery over a WebSocket (`GET /v1/ws`). On connect the device subscribes to the
//! bus first, then pages through its stored mailbox, sends `drained`, and from then on
//! forwards envelopes as the bus hands them over (no database read per live envelope).
//! Envelopes stay stored until the client acknowledges them (over the socket or HTTP);
//! an envelope seen both in the stored pages and on the bus is sent once. On shutdown the
//! server answers the sends still in flight, then closes every socket with "going away" and
//! the client reconnects elsewhere.
//!
//! A client may also send over its socket (`send` frames, answered by `sent` or
//! `send_failed`): the same service, rules and durability as `POST /v1/messages`, without a
//! request, a header parse and a token look-up per message. Sends and acknowledgements are
//! pipelined: each socket has at most [`MAX_IN_FLIGHT`] of them (and [`MAX_IN_FLIGHT_BYTES`])
//! waiting for the store, and the server stops reading a socket at that bound.
//!
//! Acknowledgements stay within the device's budget (one token per
//! [`super::messages::IDS_PER_ACK_TOKEN`] ids): an ack frame over it is held, and the
//! socket not read, until the tokens are there; it is never closed for it nor let through
//! without them. An ack frame costs the store at most one statement, and none for ids this
//! connection did not deliver (made up, or acknowledged already): every stored envelope of
//! the mailbox is delivered on the connection before the client can know its id.
//!
//! When a bundle fetch leaves the device's one-time prekeys low, its sockets get a
//! [`ServerFrame::PrekeysLow`] and the client uploads more.
//!
//! De-duplication uses a per-connection watermark: the highest id any resync has read.
//! Within one mailbox, ids follow commit order (SQLite: one writer assigns them; PostgreSQL:
//! the id is drawn while the send holds the recipient's device row lock, which it keeps
//! until commit), so a page that contains id `W` contains every envelope of the mailbox
//! with a smaller id that is still stored. A bus envelope at or below the watermark was
//! therefore in a page already (or has been acknowledged since) and is skipped; one above
//! it was not and is sent. A lagged subscriber resumes its resync from the watermark.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tacit_api::limits::{MAX_FETCH, MAX_FETCH_BYTES, MAX_MAILBOX_ENVELOPES, MAX_REQUEST_BYTES};
use tacit_api::{ClientFrame, Envelope, SendRequest, ServerFrame, close};

use super::messages::MAX_ACK_IDS;
use super::sockets::{Ended, Registration};
use crate::bus::Live;
use crate::error::Failure;
use crate::limiter::LimitKey;
use crate::state::AppState;
use crate::store::Authed;

/// Largest frame a client may send: a send takes what `POST /v1/messages` takes.
pub const MAX_CLIENT_FRAME: usize = MAX_REQUEST_BYTES;
/// Bytes read from a socket at a time. tungstenite zero-fills this much before each read,
/// so its 128 KiB default cost more CPU than the rest of a small frame's path (measured
/// with `perf`: 16% of the server's time under `tacit bench relay`), and kept 128 KiB per
/// idle connection.
pub const READ_BUFFER: usize = 8 * 1024;
/// A client that does not read for this long is disconnected.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Sends and acknowledgements one socket may have waiting for the store; beyond this the
/// server stops reading the socket until one completes (back-pressure, bounded memory).
const MAX_IN_FLIGHT: usize = 64;
/// Envelope bytes one socket may have waiting for the store (at least one send is taken).
const MAX_IN_FLIGHT_BYTES: usize = 4 * MAX_REQUEST_BYTES;
/// On shutdown, how long in-flight sends may take to be answered before the socket closes.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// The server pings every socket this often and checks that its session token is still
/// valid (not expired, the account not deleted).
const PING_EVERY: Duration = Duration::from_secs(30);
/// A resync page (at most 1 MiB) must be taken by the client within this long.
const PAGE_DEADLINE: Duration = Duration::from_secs(30);
/// A socket from which nothing (not even a pong) arrived for this long is closed.
const IDLE_LIMIT: Duration = Duration::from_secs(75);

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
    /// Envelopes acknowledged on this connection whose deletion has not committed yet (a
    /// resync meanwhile would still find them stored).
    acking: HashSet<u64>,
}

impl Tracker {
    /// Whether to send an envelope read from the store by a resync.
    fn read_from_store(&mut self, id: u64) -> bool {
        self.watermark = self.watermark.max(id);
        !self.acking.contains(&id) && self.sent.insert(id)
    }

    /// Whether to send an envelope handed over by the bus.
    fn taken_from_bus(&mut self, id: u64) -> bool {
        id > self.watermark && self.sent.insert(id)
    }

    /// The client acknowledged these (their deletion is on its way to the store).
    fn acked(&mut self, ids: &[u64]) {
        for id in ids {
            self.sent.remove(id);
            self.acking.insert(*id);
        }
    }

    /// Their deletion committed.
    fn deleted(&mut self, ids: &[u64]) {
        for id in ids {
            self.acking.remove(id);
        }
    }
}

/// [`ServerFrame::Envelope`] by reference, so a frame is encoded without copying the envelope
/// (the same JSON; a test compares the two).
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum EnvelopeFrame<'a> {
    Envelope(&'a Envelope),
}

/// An acknowledgement waiting for its tokens.
struct HeldAck {
    ids: Vec<u64>,
    state_counter: Option<u64>,
    cost: u32,
}

/// A store operation a socket started and has not seen finish.
enum Done {
    /// A send finished: answer it.
    Send { id: u64, bytes: usize, result: Result<u64, Failure> },
    /// An acknowledgement of these ids was committed (or failed).
    Ack(Vec<u64>, Result<(), Failure>),
}

type InFlight = FuturesUnordered<Pin<Box<dyn Future<Output = Done> + Send>>>;

struct Conn {
    socket: WebSocket,
    track: Tracker,
    /// Frames fed to the socket since the last flush.
    unflushed: bool,
    in_flight: InFlight,
    in_flight_bytes: usize,
    /// An acknowledgement over budget, waiting for its tokens (the socket is not read
    /// meanwhile).
    held_ack: Option<HeldAck>,
}

impl Conn {
    fn new(socket: WebSocket) -> Self {
        Self {
            socket,
            track: Tracker::default(),
            unflushed: false,
            in_flight: FuturesUnordered::new(),
            in_flight_bytes: 0,
            held_ack: None,
        }
    }

    /// Deletes the acknowledged envelopes this connection delivered (once each, in one store
    /// statement); ids it did not deliver cost the store nothing.
    fn start_ack(&mut self, state: &AppState, who: &Authed, mut ids: Vec<u64>, state_counter: Option<u64>) {
        ids.sort_unstable();
        ids.dedup();
        ids.retain(|id| self.track.sent.contains(id));
        if ids.is_empty() {
            return;
        }
        // The deletion commits in the background while delivery goes on; the client needs
        // no answer (an ack lost to a crash only means the envelope comes again, and
        // clients drop envelopes they have by id).
        self.track.acked(&ids);
        let store = state.store().clone();
        let key = who.key;
        self.in_flight.push(Box::pin(async move {
            let result = store.ack(key, &ids, state_counter).await.map(drop).map_err(Failure::from);
            Done::Ack(ids, result)
        }));
    }

    /// Takes the tokens of an acknowledgement and starts it, or holds it until they are
    /// there: `Some(wait)` when it is held.
    fn try_ack(&mut self, state: &AppState, who: &Authed, ack: HeldAck) -> Option<Duration> {
        let HeldAck { ids, state_counter, cost } = ack;
        match state.limit_wait_n(LimitKey::Acks(who.key), cost) {
            Ok(()) => {
                self.start_ack(state, who, ids, state_counter);
                None
            }
            Err(wait) => {
                self.held_ack = Some(HeldAck { ids, state_counter, cost });
                Some(Duration::from_millis(wait.max(1)))
            }
        }
    }

    /// Queues a text frame; frames go out together when the connection has nothing else
    /// ready ([`Conn::flush`]), so a burst costs one write, not one per frame.
    async fn feed(&mut self, message: Message) -> Result<(), Stop> {
        match tokio::time::timeout(SEND_TIMEOUT, self.socket.feed(message)).await {
            Ok(Ok(())) => {
                self.unflushed = true;
                Ok(())
            }
            _ => Err(Stop::Socket),
        }
    }

    async fn feed_frame<T: Serialize>(&mut self, frame: &T) -> Result<(), Stop> {
        let text = serde_json::to_string(frame).map_err(|_| Stop::Close(INTERNAL, "encoding failed"))?;
        self.feed(Message::Text(text.into())).await
    }

    async fn flush(&mut self) -> Result<(), Stop> {
        match tokio::time::timeout(SEND_TIMEOUT, self.socket.flush()).await {
            Ok(Ok(())) => {
                self.unflushed = false;
                Ok(())
            }
            _ => Err(Stop::Socket),
        }
    }

    async fn deliver(&mut self, envelope: &Envelope, from_store: bool) -> Result<(), Stop> {
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
        self.feed_frame(&EnvelopeFrame::Envelope(envelope)).await
    }

    /// Whether the socket may be read: what it started is within bounds.
    fn may_read(&self) -> bool {
        self.held_ack.is_none()
            && self.in_flight.len() < MAX_IN_FLIGHT
            && self.in_flight_bytes < MAX_IN_FLIGHT_BYTES
    }

    /// Answers a finished operation.
    async fn finished(&mut self, done: Done) -> Result<(), Stop> {
        match done {
            Done::Send { id, bytes, result } => {
                self.in_flight_bytes = self.in_flight_bytes.saturating_sub(bytes);
                let frame = match result {
                    Ok(server_time_ms) => ServerFrame::Sent { id, server_time_ms },
                    Err(failure) => failure.into_send_failed(id),
                };
                self.feed_frame(&frame).await
            }
            Done::Ack(ids, Ok(())) => {
                self.track.deleted(&ids);
                Ok(())
            }
            Done::Ack(_, Err(_)) => Err(Stop::Close(INTERNAL, "storage unavailable")),
        }
    }

    async fn close(mut self, code: u16, reason: &'static str) {
        let frame = CloseFrame { code, reason: reason.into() };
        let _ = tokio::time::timeout(SEND_TIMEOUT, self.socket.send(Message::Close(Some(frame)))).await;
    }
}

/// Sends every stored envelope above the watermark not yet sent on this connection. Each
/// page must be taken within [`PAGE_DEADLINE`], and the resync stops as soon as the socket is
/// to end (`halt`), so a client that reads slowly cannot hold its socket past a replacement,
/// a deletion or shutdown.
async fn resync(state: &AppState, who: &Authed, conn: &mut Conn, halt: &Halt<'_>) -> Result<(), Stop> {
    let mut after = conn.track.watermark;
    loop {
        halt.check()?;
        let page = state
            .store()
            .fetch(who.key, after, MAX_FETCH + 1, MAX_FETCH_BYTES)
            .await
            .map_err(|_| Stop::Close(INTERNAL, "storage unavailable"))?;
        // At most MAX_FETCH_BYTES (or one envelope) per page; the rest is read again.
        let keep = crate::store::page_len(&page, MAX_FETCH, MAX_FETCH_BYTES);
        let full = page.len() > keep;
        let sent = tokio::time::timeout(PAGE_DEADLINE, async {
            for e in page.iter().take(keep) {
                halt.check()?;
                after = after.max(e.id);
                conn.deliver(e, true).await?;
            }
            conn.flush().await
        });
        tokio::select! {
            r = sent => r.map_err(|_| Stop::Socket)??,
            () = halt.halted() => halt.check()?,
        }
        if !full {
            return Ok(());
        }
    }
}

/// What ends a socket from outside: shutdown, or its registration ending (replaced by a
/// newer socket of the device, or the account deleted).
struct Halt<'a> {
    shutdown: &'a tokio_util::sync::CancellationToken,
    registration: &'a Registration<'a>,
}

impl Halt<'_> {
    /// Why the socket must end now, if it must.
    fn check(&self) -> Result<(), Stop> {
        if self.shutdown.is_cancelled() {
            return Err(Stop::Close(GOING_AWAY, "server shutting down"));
        }
        if self.registration.end.is_cancelled() {
            return Err(self.ended());
        }
        Ok(())
    }

    /// Completes once the socket must end.
    async fn halted(&self) {
        tokio::select! {
            () = self.shutdown.cancelled() => {}
            () = self.registration.end.cancelled() => {}
        }
    }

    /// The close for an ended registration.
    fn ended(&self) -> Stop {
        match self.registration.why() {
            Some(Ended::AccountDeleted) => Stop::Close(close::SESSION_ENDED, "account deleted"),
            Some(Ended::DeviceRemoved) => Stop::Close(close::SESSION_ENDED, "device removed or logged out"),
            _ => Stop::Close(close::REPLACED, "replaced by a newer connection of this device"),
        }
    }
}

/// Starts a send read from the socket; its answer is fed when it finishes.
async fn start_send(
    state: &AppState,
    who: &Authed,
    conn: &mut Conn,
    id: u64,
    request: SendRequest,
) -> Result<(), Stop> {
    if let Err(failure) = state.limit(LimitKey::Sends(who.key)) {
        return conn.feed_frame(&failure.into_send_failed(id)).await;
    }
    let bytes = request.envelopes.iter().map(|e| e.content.as_slice().len()).sum::<usize>();
    conn.in_flight_bytes = conn.in_flight_bytes.saturating_add(bytes);
    let (state, who) = (state.clone(), who.clone());
    conn.in_flight.push(Box::pin(async move {
        let result = super::messages::send(&state, who, request).await.map(|r| r.server_time_ms);
        Done::Send { id, bytes, result }
    }));
    Ok(())
}

/// Handles one text frame; `Some(wait)` when it left an acknowledgement held for its tokens.
async fn on_text(
    state: &AppState,
    who: &Authed,
    conn: &mut Conn,
    text: &str,
) -> Result<Option<Duration>, Stop> {
    match serde_json::from_str::<ClientFrame>(text).map_err(|_| Stop::Close(POLICY, "bad_request"))? {
        ClientFrame::Ack { ids, state_counter } => {
            if ids.len() > MAX_ACK_IDS {
                return Err(Stop::Close(POLICY, "too_large"));
            }
            // Over the acknowledgement budget (one token per 64 ids, made-up ids included)
            // the ack waits for its tokens and the socket is not read meanwhile: slowed
            // down, never closed (a client acking a burst is doing what it should), and
            // never let through without the tokens.
            let cost = super::messages::ack_cost(ids.len());
            Ok(conn.try_ack(state, who, HeldAck { ids, state_counter, cost }))
        }
        ClientFrame::Send { id, recipient, envelopes, idempotency_key, state_counter } => {
            let request = SendRequest { recipient, envelopes, idempotency_key, state_counter };
            start_send(state, who, conn, id, request).await?;
            Ok(None)
        }
    }
}

/// Every [`PING_EVERY`]: closes a socket whose session ended or that went silent, else
/// pings it.
async fn keep_alive(
    state: &AppState,
    who: &Authed,
    token: &[u8; 32],
    conn: &mut Conn,
    last_heard: Instant,
) -> Result<(), Stop> {
    if last_heard.elapsed() > IDLE_LIMIT {
        return Err(Stop::Socket);
    }
    match super::auth::still_valid(state, token, who.key).await {
        Ok(true) => {}
        Ok(false) => return Err(Stop::Close(close::SESSION_ENDED, "session ended: authenticate again")),
        // A busy store is no reason to drop a healthy socket: checked again next time.
        Err(_) => tracing::debug!("token re-check postponed: store busy"),
    }
    conn.feed(Message::Ping(Default::default())).await
}

async fn serve(state: &AppState, who: &Authed, token: &[u8; 32], conn: &mut Conn) -> Result<(), Stop> {
    let mut registration = state.inner().open_sockets.register(who.key);
    let mut low = registration.take_low().ok_or(Stop::Close(INTERNAL, "registration"))?;
    let shutdown = state.inner().shutdown.clone();
    let halt = Halt { shutdown: &shutdown, registration: &registration };
    // An account deleted between the token check of the upgrade and the registration above
    // was not there to end this socket: look again now that it is registered.
    if !super::auth::still_valid(state, token, who.key).await.unwrap_or(true) {
        return Err(Stop::Close(close::SESSION_ENDED, "session ended: authenticate again"));
    }
    // Subscribe before reading the mailbox so nothing committed in between is missed.
    let mut sub = state.inner().bus.subscribe(who.key);
    resync(state, who, conn, &halt).await?;
    conn.feed_frame(&ServerFrame::Drained).await?;
    conn.flush().await?;
    // Spread over the interval by socket, so sockets opened together (after a restart) do
    // not all re-check their tokens at the same moment.
    let spread = Duration::from_millis(registration.id().wrapping_mul(7919) % 30_000);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY + spread, PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    // Made once: a cancellation future registers with its token each time it is created,
    // which under load cost a lock and an unlock per loop turn (seen with perf).
    let halted = halt.halted();
    tokio::pin!(halted);
    // When a held acknowledgement is tried again (armed only while one is held).
    let retry_ack = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(retry_ack);
    loop {
        let may_read = conn.may_read();
        // Biased: finish what is started first, then read, then deliver; flush only when
        // nothing else is ready, so a burst of frames is written together.
        tokio::select! {
            biased;
            () = &mut halted => {
                drain(conn).await;
                halt.check()?;
                return Err(halt.ended());
            }
            _ = ping.tick() => keep_alive(state, who, token, conn, last_heard).await?,
            Some(done) = conn.in_flight.next(), if !conn.in_flight.is_empty() => {
                conn.finished(done).await?;
            }
            incoming = conn.socket.recv(), if may_read => match incoming {
                Some(Ok(Message::Text(text))) => {
                    last_heard = Instant::now();
                    if let Some(wait) = on_text(state, who, conn, text.as_str()).await? {
                        retry_ack.as_mut().reset(tokio::time::Instant::now() + wait);
                    }
                }
                Some(Ok(Message::Binary(_))) => return Err(Stop::Close(POLICY, "bad_request")),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => last_heard = Instant::now(),
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    // Let started writes finish (their results stand) before the socket goes.
                    while conn.in_flight.next().await.is_some() {}
                    return Err(Stop::Socket);
                }
            },
            live = sub.recv() => {
                let Some(live) = live else {
                    drain(conn).await;
                    return Err(Stop::Close(GOING_AWAY, "server shutting down"));
                };
                match live {
                    Live::Envelope(envelope) => {
                        if sub.take_lagged() {
                            resync(state, who, conn, &halt).await?;
                        }
                        conn.deliver(&envelope, false).await?;
                    }
                    // Stored without being handed over (a large group message): read it.
                    Live::Wake => {
                        sub.take_lagged();
                        resync(state, who, conn, &halt).await?;
                    }
                }
            }
            () = &mut retry_ack, if conn.held_ack.is_some() => {
                if let Some(held) = conn.held_ack.take()
                    && let Some(wait) = conn.try_ack(state, who, held)
                {
                    retry_ack.as_mut().reset(tokio::time::Instant::now() + wait);
                }
            }
            Some((one_time, kem_one_time)) = low.recv() => {
                conn.feed_frame(&ServerFrame::PrekeysLow { one_time, kem_one_time }).await?;
            }
            () = std::future::ready(()), if conn.unflushed => conn.flush().await?,
        }
    }
}

/// Answers the sends still in flight (for a bounded time) before the socket closes.
async fn drain(conn: &mut Conn) {
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(done) = conn.in_flight.next().await {
            // A failed ack only means the envelope comes again: answering sends goes on.
            if matches!(done, Done::Ack(_, Err(_))) {
                continue;
            }
            if conn.finished(done).await.is_err() {
                return;
            }
        }
        let _ = conn.flush().await;
    })
    .await;
}

/// Runs one device's WebSocket until either side closes or the server shuts down.
pub async fn run(state: AppState, who: Authed, token: [u8; 32], socket: WebSocket) {
    let mut conn = Conn::new(socket);
    match serve(&state, &who, &token, &mut conn).await {
        Ok(()) | Err(Stop::Socket) => {}
        Err(Stop::Close(code, reason)) => {
            tracing::debug!(code, reason, "closing websocket");
            conn.close(code, reason).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{EnvelopeFrame, Tracker};

    #[test]
    fn borrowed_envelope_frame_is_the_api_frame() {
        let e = tacit_api::Envelope {
            id: 3,
            sender: "alice".into(),
            sender_device: 2,
            server_time_ms: 9,
            content: tacit_api::Bytes(vec![1, 2, 3]),
            group: None,
        };
        let borrowed = serde_json::to_string(&EnvelopeFrame::Envelope(&e)).unwrap();
        let owned = serde_json::to_string(&tacit_api::ServerFrame::Envelope(e)).unwrap();
        assert_eq!(borrowed, owned);
    }

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
        // Envelope 10 came off the bus and is acknowledged; its deletion has not committed
        // when a lag resync finds it still stored: it is not sent again.
        assert!(t.taken_from_bus(10));
        t.acked(&[10]);
        assert!(!t.read_from_store(10), "acknowledged envelope sent again by a resync");
        t.deleted(&[5, 7, 10]);
        assert!(t.acking.is_empty() && t.sent.len() == 2);
    }
}
