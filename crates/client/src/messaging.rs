//! Sending and receiving text messages.
//!
//! **Send**: fresh device list → verified devices → for each, the newest session that is
//! not stale (or a new PQXDH session from a fetched bundle) → encrypt → raise the generation
//! marks, then commit sessions and the history entry in one transaction → one request with
//! an envelope per device. `409` refetches the list and `410` drops the re-registered
//! devices' sessions, then encrypts again.
//!
//! **Receive**: for each envelope, dedupe by envelope id → decrypt (an existing session, or
//! `Session::accept` for a new prekey message) → raise the marks, then commit the session,
//! consumed prekeys, the message and the envelope id in one transaction → only then ack.
//! Killed anywhere, the client neither loses (no ack before commit) nor duplicates (the id
//! is checked before decrypting) a message.
//!
//! **Issue 9** (payload version 2, `payload.rs`): every text carries a 16-byte message id. A
//! send keeps the payload and each envelope's digest in the outbox (`store::put_outbox`, in
//! the send's transaction) and, once the server took it, queues a *sent transcript* for the
//! own account's other devices (a note to self is only that). A receive stores a text once
//! per id, queues a delivery receipt for it (one message per sender account, sent at the end
//! of the receive to all its devices), records receipts for what this account sent, stores
//! transcripts from own devices as sent, and answers a *retry request* it can match in the
//! outbox by sending the original payload again over a new session. A message no session
//! decrypts makes this device send one (`drop_undecryptable`).
//!
//! A message is first tried with the sender's stored device list. If that cannot decrypt it
//! and it comes from a device the stored list lacks, or is a first message naming another
//! identity (a reinstall), the client fetches the sender's current list before deciding (a
//! forged, replayed or lost-session message no list can help with): a changed identity
//! of an unverified contact is accepted with a warning and the message delivered; for a
//! verified contact the message is *held* (neither shown, dropped nor acknowledged) until the
//! user verifies the new safety number. Only a message that no current identity can decrypt
//! is dropped. Held envelopes stay on the server, and the HTTP fetch pages past them with a
//! cursor (`?after=ID`), so they never hide the envelopes behind them.

use std::time::{Duration, Instant};

use crate::rng::OsRng;
use tacit_api as api;
use tacit_protocol::{
    AccountName, DeviceId, DevicePrekeys, Message, PrekeyBundle, Session, SessionError, VerifiedDevice,
};

use crate::client::{Client, SESSIONS_PER_DEVICE, meta, now, now_ms};
use crate::error::ErrorKind;
use crate::error::{ClientError, Result};
use crate::net::{Incoming, RelayEvent, SendOutcome};
use crate::payload::{DIGEST_LEN, MAX_RECEIPT_IDS, MAX_TEXT_BYTES, MessageId, Payload, PayloadError};
use crate::restore::Heal;
use crate::store::{self, ContactRow, HistoryEntry, PendingKind};
use zeroize::Zeroizing;

/// Attempts at a send when the server reports a changed device set.
const SEND_ATTEMPTS: usize = 3;
/// After the first live message, how long to wait for more in the same burst.
const BURST_GRACE: Duration = Duration::from_millis(300);
/// A `receive` that lost its connection while waiting reconnects after this, doubling up
/// to [`RECONNECT_MAX`].
const RECONNECT_FIRST: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// Warnings about dropped envelopes kept until the caller takes them; past it, one line
/// says that more were dropped.
const MAX_WARNINGS: usize = 256;
const MORE_DROPPED: &str = "more messages were dropped or refused (not shown: too many warnings)";
/// Retry requests sent to one device within [`RETRY_WINDOW_MS`], at most.
pub(crate) const RETRY_REQUESTS_PER_DEVICE: u32 = 100;
/// Devices sent retry requests within [`RETRY_WINDOW_MS`], at most (past it, a new device
/// waits until the window moves on).
pub(crate) const RETRY_DEVICES: u32 = 256;
/// The window of the retry-request bounds: an hour.
pub(crate) const RETRY_WINDOW_MS: u64 = 3_600_000;
/// Times one outbox entry is resent to one device on its retry requests, at most.
pub(crate) const MAX_RESENDS: u32 = 3;
/// The longest a `receive` waits (the CLI's `--wait` stops at the same bound).
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(86_400);

/// A message accepted by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    /// Server time of acceptance (ms since the Unix epoch).
    pub server_time_ms: u64,
    /// Our clock when sending (ms since the Unix epoch).
    pub sent_time_ms: u64,
    /// Recipient devices.
    pub devices: Vec<u32>,
}

/// A received, decrypted and stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// Sender account.
    pub from: String,
    /// Sender device.
    pub device: u32,
    /// When the server accepted it (ms since the Unix epoch).
    pub server_time_ms: u64,
    /// When the sender says it sent it (ms since the Unix epoch; the sender's claim).
    pub sent_time_ms: u64,
    /// The text.
    pub text: String,
    /// The group it was sent to (its name), or `None` for a 1:1 message.
    pub group: Option<String>,
}

/// What [`Client::receive_each`] tells its caller as it happens.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReceiveEvent<'a> {
    /// A message, just stored (not yet acknowledged).
    Message(&'a ReceivedMessage),
    /// A warning gathered before the next message (an identity change, a dropped envelope).
    Warning(String),
    /// Something happened to a group (a join, members added or removed, a rename), stored.
    Group(&'a crate::groups::GroupEvent),
}

/// What processing one envelope did.
enum Outcome {
    /// Stored: ack.
    Message(ReceivedMessage),
    /// Already stored earlier, or undecryptable: ack (with a warning for the latter).
    Done,
    /// Held back (the sender's identity changed and awaits verification, or could not be
    /// checked now): do not ack; the next receive tries again.
    Held,
    /// A group event, stored: ack.
    Event(crate::groups::GroupEvent),
}

impl Client {
    /// Loads a stored session for sending: `None` if it is stale (marked, or below its
    /// generation mark: restored from an old copy), pending past its age bound, or no longer
    /// matches the device.
    pub(crate) fn sendable(&mut self, peer: &str, dev: &VerifiedDevice) -> Result<Option<Session>> {
        let rows = self.store.sessions(peer, dev.address().device.get())?;
        let Some(row) = rows.into_iter().next() else { return Ok(None) };
        if row.stale {
            return Ok(None);
        }
        match Session::from_bytes_at_least(&row.state, self.gens.expected_session(&row.base_key)) {
            // Unanswered for MAX_PENDING_AGE_SECS: start over from a fresh bundle.
            Ok(s) if s.pending_expired(now()) => Ok(None),
            Ok(s) if s.remote_identity() == dev.identity() => Ok(Some(s)),
            Ok(_) => Ok(None),
            Err(SessionError::RolledBack { stored, expected }) => {
                store::mark_stale(self.store.conn(), &row.base_key)?;
                let why = if expected == u64::MAX {
                    "its generation mark is gone".to_owned()
                } else {
                    format!("generation {stored} < {expected}")
                };
                self.warnings.push(format!(
                    "the session with {peer} device {} was restored from an old copy of the store \
                     ({why}); starting a new one",
                    dev.address().device
                ));
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sends `text` to every device of `to` and, once the server took it, a *sent
    /// transcript* of it to every other device of the own account (so it shows there as
    /// sent). `to` may be the own name: a note to self, stored here as sent and sent to the
    /// own account's other devices only (with no other device, stored only: no request).
    pub async fn send_text(&mut self, to: &str, text: &str) -> Result<SentMessage> {
        let name = AccountName::new(to)?;
        let sent_time_ms = now_ms();
        let message_id = new_message_id();
        let own = name == self.me.name;
        // Refused before anything is stored or sent when too long (its transcript must fit).
        let payload = if own {
            Payload::SentTranscript { peer: name.clone(), message_id, sent_time_ms, text: text.to_owned() }
        } else {
            // The newest transparency root seen rides along, for the contact to compare.
            Payload::Text {
                message_id: Some(message_id),
                sent_time_ms,
                text: text.to_owned(),
                root: self.kt_gossip_root()?,
            }
        };
        let payload = Zeroizing::new(payload.encode().map_err(payload_error)?);
        self.online().await?;
        let out = Outgoing {
            payload: &payload,
            sent_time_ms,
            message_id: Some(message_id),
            history: Some(text),
            outbox: OutboxMode::Keep,
        };
        let sent = self.send_payload(&name, &out).await?;
        if !own {
            // The message went; its copy to the other own devices is queued (kept over a
            // failure, sent at the next command that reaches the server).
            let transcript = Payload::SentTranscript {
                peer: name.clone(),
                message_id,
                sent_time_ms,
                text: text.to_owned(),
            };
            let what = PendingKind::Payload {
                payload: Zeroizing::new(transcript.encode().map_err(payload_error)?),
                message_id: Some(message_id),
            };
            store::queue_send(self.store.conn(), self.me.name.as_str(), &what, now_ms())?;
            if let Err(e) = self.send_queued().await {
                if e.kind() == ErrorKind::Local {
                    return Err(e);
                }
                self.warnings.push(format!(
                    "the message was sent, but not yet copied to your other devices ({e}); the next \
                     command that reaches the server tries again"
                ));
            }
        }
        Ok(sent)
    }

    /// Encrypts `out.payload` for every device of `name` (the newest session that is not
    /// stale, else a new one; with [`OutboxMode::Resend`], a new session with that device
    /// whatever is stored) and sends it. For the own name, every device but this one (the
    /// server does not ask for one to the sender); none: nothing is sent. With `history`, a
    /// history entry records it; with [`OutboxMode::Keep`], the payload and each envelope's
    /// digest are kept in the outbox for retry requests, in the same transaction as the
    /// sessions. The caller is online.
    pub(crate) async fn send_payload(
        &mut self,
        name: &AccountName,
        out: &Outgoing<'_>,
    ) -> Result<SentMessage> {
        self.send_payload_with(name, out, None).await
    }

    /// [`Self::send_payload`], with `per_device` (when given) making each device's payload
    /// instead of `out.payload` (an account key update: the key only to approvers).
    pub(crate) async fn send_payload_with(
        &mut self,
        name: &AccountName,
        out: &Outgoing<'_>,
        per_device: Option<&PerDevice<'_>>,
    ) -> Result<SentMessage> {
        let payload = out.payload;
        let sent_time_ms = out.sent_time_ms;
        let own = *name == self.me.name;
        // From loading the sessions to committing them, no other process on this home may
        // step them (two sends at once would each make their own ratchet step from the same
        // state). Held through the request, so the 409 retries reload what this send stored.
        let _guard = self.lock_state().await?;
        // One key for this message, on every attempt: a retry the server already stored is
        // not stored twice.
        let mut idempotency_key = [0u8; api::limits::IDEMPOTENCY_KEY_BYTES];
        rand_core::RngCore::fill_bytes(&mut OsRng, &mut idempotency_key);
        let mut history_row = None;
        let mut last_error = None;
        if own {
            self.pin_own_account()?;
        }
        let mut skip: Vec<u32> = Vec::new();
        for attempt in 0..SEND_ATTEMPTS {
            let list = match self.refresh_contact(name).await {
                // The own account's key was rotated by another device whose update waits in the
                // mailbox: take it (what else is there is stored for the history), then again.
                // No update there (this device was restored from a copy older than the
                // rotation): the signed rotations from the key it holds.
                Err(ClientError::IdentityChanged(_)) if own && !self.own_list_retried => {
                    self.own_list_retried = true;
                    let got = Box::pin(self.receive(Duration::ZERO)).await;
                    let followed = match (got, self.refresh_contact(name).await) {
                        (Err(e), _) => Err(e),
                        (Ok(_), Err(ClientError::IdentityChanged(_))) => self.follow_rotations().await,
                        (Ok(_), r) => r.map(Some),
                    };
                    self.own_list_retried = false;
                    followed?.ok_or_else(|| ClientError::IdentityChanged(name.to_string()))?
                }
                // The same, from inside that receive (its queued sends): the mailbox was just
                // taken, so only the rotations are left; failing here would drop the send.
                Err(ClientError::IdentityChanged(_)) if own => self
                    .follow_rotations()
                    .await?
                    .ok_or_else(|| ClientError::IdentityChanged(name.to_string()))?,
                r => r?,
            };
            if own && list.account_key() != &self.me.account_key {
                // Not a local failure: a queued self-send is dropped with a warning, not
                // retried at every command.
                return Err(ClientError::DeviceList {
                    name: name.to_string(),
                    source: tacit_protocol::DeviceListError::AccountKeyChanged,
                });
            }
            // A retry request's answer starts a new session with the device that asked (its
            // old one is what failed); a later attempt uses the one this one stored.
            let fresh = match out.outbox {
                OutboxMode::Resend(d) if attempt == 0 => Some(d),
                _ => None,
            };
            let mut envelopes = Vec::new();
            let mut sessions = Vec::new();
            let mut digests = Vec::new();
            for dev in list.verified_devices() {
                let device = dev.address().device.get();
                if (own && device == self.me.device.get()) || skip.contains(&device) {
                    continue;
                }
                let stored = if fresh == Some(device) { None } else { self.sendable(name.as_str(), &dev)? };
                let mut session = match stored {
                    Some(s) => s,
                    None => {
                        let bytes = match self.api.bundle(name.as_str(), device).await {
                            Ok(b) => b,
                            // A listed device with no keys on the server logged itself out:
                            // the send goes without it (the server asks for none; if it did,
                            // the 409 would say so).
                            Err(ClientError::NotFound(_)) => {
                                skip.push(device);
                                continue;
                            }
                            Err(e) => return Err(e),
                        };
                        let bundle = PrekeyBundle::from_bytes(&bytes)?;
                        Session::initiate(
                            &mut OsRng,
                            &self.me.identity,
                            self.me.address(),
                            &bundle,
                            &dev,
                            now(),
                        )?
                    }
                };
                let own_payload = per_device.map(|f| f(device));
                let wire = session
                    .encrypt(&mut OsRng, own_payload.as_deref().map_or(payload, Vec::as_slice))?
                    .to_bytes();
                digests.push((device, envelope_digest(&wire)));
                envelopes.push(api::OutgoingEnvelope { device, content: api::Bytes(wire) });
                sessions.push((device, session));
            }
            let devices: Vec<u32> = envelopes.iter().map(|e| e.device).collect();
            // A message to another account records how many devices it went to (what
            // receipts are counted against); a note to self does not.
            let count = (!own).then(|| u32::try_from(devices.len()).unwrap_or(u32::MAX));
            // Marks first, then the states: a crash in between only makes a session look
            // stale, never an old state look current.
            let marks: Vec<_> =
                sessions.iter().map(|(_, s)| (*s.base_key().as_bytes(), s.generation())).collect();
            self.gens.raise(&marks)?;
            let mut pruned = Vec::new();
            let tx = self.store.tx()?;
            for (device, s) in &sessions {
                store::put_session(
                    &tx,
                    name.as_str(),
                    *device,
                    s.base_key().as_bytes(),
                    &s.to_bytes(),
                    s.generation(),
                    false,
                )?;
                pruned.extend(store::prune_sessions(&tx, name.as_str(), *device, SESSIONS_PER_DEVICE)?);
            }
            match (history_row, out.history) {
                (None, Some(text)) => {
                    let entry = HistoryEntry {
                        peer: name.to_string(),
                        device: 0,
                        outgoing: true,
                        text: text.to_owned(),
                        // Nothing to send (a note to self with no other device): this
                        // device's clock is the only one.
                        server_time_ms: envelopes.is_empty().then_some(sent_time_ms),
                        sent_time_ms,
                        message_id: out.message_id,
                        delivered: None,
                        devices: count,
                    };
                    history_row = store::put_message(&tx, &entry, None)?;
                }
                (Some(row), Some(_)) => store::set_devices(&tx, row, count)?,
                _ => {}
            }
            if let Some(id) = &out.message_id {
                match out.outbox {
                    OutboxMode::Keep if !digests.is_empty() => {
                        store::put_outbox(&tx, name.as_str(), id, payload, &digests, true, now_ms())?;
                    }
                    OutboxMode::Resend(d) => {
                        // The asking device's new envelope carries the message; the others'
                        // carry nothing (remembered as not kept).
                        let (mine, others): (Vec<_>, Vec<_>) = digests.iter().partition(|(dev, _)| *dev == d);
                        store::put_outbox(&tx, name.as_str(), id, payload, &mine, false, now_ms())?;
                        store::remember_unkept(&tx, name.as_str(), &others, now_ms())?;
                        store::count_resend(&tx, name.as_str(), id, d)?;
                    }
                    OutboxMode::Keep | OutboxMode::None => {}
                }
            }
            if out.outbox == OutboxMode::None || out.message_id.is_none() {
                store::remember_unkept(&tx, name.as_str(), &digests, now_ms())?;
            }
            if envelopes.is_empty() {
                // The own account's only device: nothing to send, nothing the world sees.
                tx.commit()?;
                self.gens.forget(&pruned)?;
                return Ok(SentMessage { server_time_ms: sent_time_ms, sent_time_ms, devices });
            }
            let state_counter = store::raise_state_counter(&tx)?;
            tx.commit()?;
            self.gens.forget(&pruned)?;
            let request = api::SendRequest {
                recipient: name.to_string(),
                envelopes,
                idempotency_key: Some(api::Bytes(idempotency_key.to_vec())),
                state_counter: Some(state_counter),
            };
            match self.api.send(&request).await? {
                SendOutcome::Sent(r) => {
                    if let Some(row) = history_row {
                        store::set_server_time(self.store.conn(), row, r.server_time_ms)?;
                    }
                    return Ok(SentMessage { server_time_ms: r.server_time_ms, sent_time_ms, devices });
                }
                SendOutcome::Mismatched(m) => {
                    // A device still in the signed list that the server calls extra logged
                    // itself out: it takes nothing more, so the next attempt leaves it out (an
                    // approver removes it from the list). The list is fetched again anyway.
                    skip.extend(m.extra.iter().copied());
                    last_error =
                        Some(format!("devices changed (missing {:?}, extra {:?})", m.missing, m.extra));
                }
                SendOutcome::Stale(s) => {
                    let tx = self.store.tx()?;
                    let mut deleted = Vec::new();
                    for d in &s.stale {
                        deleted.extend(store::delete_sessions(&tx, name.as_str(), Some(*d))?);
                    }
                    tx.commit()?;
                    self.gens.forget(&deleted)?;
                    last_error = Some(format!("devices re-registered: {:?}", s.stale));
                }
            }
        }
        Err(ClientError::Server {
            status: 409,
            code: Some(api::ErrorCode::MismatchedDevices),
            message: last_error.unwrap_or_default(),
        })
    }

    /// Before the own account's device list is first fetched (a sent transcript, a note to
    /// self): pins the own account key as a verified contact, with the list this device
    /// stored, so a list the server makes up under another key is refused rather than
    /// trusted on first use. (A rotation of the own account key must update this row.)
    fn pin_own_account(&mut self) -> Result<()> {
        if self.store.contact(self.me.name.as_str())?.is_some() {
            return Ok(());
        }
        let Some(list) = self.store.meta(meta::DEVICE_LIST)? else { return Ok(()) };
        let row = ContactRow {
            account_key: *self.me.account_key.as_bytes(),
            device_list: list.to_vec(),
            verified: true,
            pending: None,
        };
        store::put_contact(self.store.conn(), self.me.name.as_str(), &row)
    }

    /// Sends what is queued: payloads (sent transcripts, retry requests, answers to retry
    /// requests) in the order they were queued, then the delivery receipts, one message per
    /// peer (up to [`MAX_RECEIPT_IDS`] ids each), to all the peer's devices. A network failure
    /// or a busy server stops here and leaves the rest for the next command that reaches the
    /// server (the error is returned); a payload the server refuses for good (the account is
    /// gone, a verified contact's identity changed) is dropped with a warning.
    pub(crate) async fn send_queued(&mut self) -> Result<()> {
        // One process sends them (the queue is read and emptied under the home's lock).
        let _guard = self.lock_state().await?;
        for p in self.store.pending_sends()? {
            let sent = match AccountName::new(&p.recipient) {
                Ok(name) => self.send_pending(&name, &p.what).await,
                Err(e) => Err(e.into()),
            };
            match sent {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Local || crate::restore::transient(&e) => return Err(e),
                Err(e) => self
                    .warnings
                    .push(format!("could not send a queued message to {} ({e}); dropped", p.recipient)),
            }
            store::delete_pending_send(self.store.conn(), p.seq)?;
        }
        for (peer, ids) in self.store.pending_receipts()? {
            let name = match AccountName::new(&peer) {
                Ok(n) => n,
                Err(_) => {
                    store::delete_pending_receipts(self.store.conn(), &peer, &ids)?;
                    continue;
                }
            };
            for chunk in ids.chunks(MAX_RECEIPT_IDS) {
                let sent_time_ms = now_ms();
                let receipt = Payload::Receipt { sent_time_ms, message_ids: chunk.to_vec() };
                let payload = receipt.encode().map_err(payload_error)?;
                let out = Outgoing {
                    payload: &payload,
                    sent_time_ms,
                    message_id: None,
                    history: None,
                    outbox: OutboxMode::None,
                };
                match self.send_payload(&name, &out).await {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::Local || crate::restore::transient(&e) => return Err(e),
                    Err(e) => self
                        .warnings
                        .push(format!("could not send delivery receipts to {peer} ({e}); dropped")),
                }
                store::delete_pending_receipts(self.store.conn(), &peer, chunk)?;
            }
        }
        Ok(())
    }

    /// Sends one queued payload.
    async fn send_pending(&mut self, name: &AccountName, what: &PendingKind) -> Result<()> {
        let sent_time_ms = now_ms();
        match what {
            PendingKind::Payload { payload, message_id } => {
                let outbox = if message_id.is_some() { OutboxMode::Keep } else { OutboxMode::None };
                let out = Outgoing { payload, sent_time_ms, message_id: *message_id, history: None, outbox };
                self.send_payload(name, &out).await.map(drop)
            }
            PendingKind::Resend { message_id, device } => {
                let Some(payload) = store::outbox_payload(self.store.conn(), name.as_str(), message_id)?
                else {
                    // Receipted or forgotten meanwhile.
                    return Ok(());
                };
                let out = Outgoing {
                    payload: &payload,
                    sent_time_ms,
                    message_id: Some(*message_id),
                    history: None,
                    outbox: OutboxMode::Resend(*device),
                };
                // Only the device that asked gets the message again: a send covers every
                // device of the account, and the others (one linked since, say) get nothing.
                let asked = *device;
                let text = zeroize::Zeroizing::new(payload.clone());
                let nothing = Payload::Nothing { sent_time_ms }
                    .encode()
                    .map_err(|_| ClientError::Internal("nothing payload"))?;
                let per_device = move |d: u32| -> zeroize::Zeroizing<Vec<u8>> {
                    zeroize::Zeroizing::new(if d == asked { text.to_vec() } else { nothing.clone() })
                };
                self.send_payload_with(name, &out, Some(&per_device)).await.map(drop)
            }
        }
    }

    /// Receives pending messages. With `wait` zero, fetches over HTTP what is stored (page
    /// after page, each from the last id of the one before, so held envelopes are passed
    /// over and the loop ends); else listens on the WebSocket up to `wait` for at least one
    /// message and returns every message pending by then. Each message is stored before it
    /// is acknowledged.
    pub async fn receive(&mut self, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        let r = self.receive_inner(wait, &mut |_| {}, false).await;
        self.kt_process_gossip().await;
        r
    }

    /// [`Self::receive`], telling `on_event` of each message the moment it is stored (and of
    /// the warnings gathered before it), before its ack or anything else that can fail: a
    /// caller that prints there loses nothing to a later error (a server gone under a
    /// `receive --wait`, a failed prekey refill). Warnings gathered after the last message
    /// stay for [`Self::take_warnings`]; the messages are returned as well.
    pub async fn receive_each(
        &mut self,
        wait: Duration,
        mut on_event: impl FnMut(ReceiveEvent<'_>) + Send,
    ) -> Result<Vec<ReceivedMessage>> {
        let r = self.receive_inner(wait, &mut on_event, true).await;
        self.kt_process_gossip().await;
        r
    }

    /// `tell`: whether `on_event` wants the events (else warnings stay for `take_warnings`).
    async fn receive_inner(
        &mut self,
        wait: Duration,
        on_event: &mut (dyn FnMut(ReceiveEvent<'_>) + Send),
        tell: bool,
    ) -> Result<Vec<ReceivedMessage>> {
        self.online().await?;
        self.list_fetches.clear();
        // Groups held back stay so for the whole receive (every page of it).
        self.held_groups.clear();
        // Key transparency: this account's own history, at most every 10 minutes. An alarm
        // is a warning (and `tacit kt status` exits 4); a failed check is said, never skipped
        // in silence, and blocks nothing.
        if let Err(e) = self.kt_check_own(false).await {
            self.warnings.push(format!("could not check this account's key history in the directory: {e}"));
        }
        let mut out = Vec::new();
        if wait.is_zero() {
            let mut after = 0;
            loop {
                let batch = self.api.fetch(after).await?;
                // Ids grow within a mailbox; a page that does not move the cursor ends the loop.
                let last = batch.envelopes.iter().map(|e| e.id).max().unwrap_or(0);
                let more = batch.more && last > after;
                after = after.max(last);
                let (msgs, acks) = self.process_all_with(batch.envelopes, &mut *on_event, tell).await?;
                self.api.ack(acks, self.reported_state_counter()?).await?;
                out.extend(msgs);
                if !more {
                    break;
                }
            }
        } else {
            // Any `Duration` is accepted: a wait past a day is a day (an unbounded sum would
            // overflow the clock and panic).
            let deadline = Instant::now() + wait.min(MAX_WAIT);
            let mut live = Some(self.api.connect().await?);
            let mut drained = false;
            // While the connection is lost: the next wait before reconnecting, and why.
            let mut backoff = RECONNECT_FIRST;
            let mut lost: Option<ClientError> = None;
            loop {
                let now = Instant::now();
                let limit = if drained && !out.is_empty() {
                    BURST_GRACE
                } else {
                    deadline.saturating_duration_since(now)
                };
                if limit.is_zero() {
                    break;
                }
                let Some(conn) = live.as_mut() else {
                    // The server went away (restarted, a network change) before anything came:
                    // reconnect until the deadline; the resync sends what was stored meanwhile.
                    tokio::time::sleep(backoff.min(limit)).await;
                    if Instant::now() >= deadline {
                        break;
                    }
                    match self.api.connect().await {
                        Ok(c) => {
                            live = Some(c);
                            lost = None;
                            backoff = RECONNECT_FIRST;
                        }
                        Err(e @ ClientError::Network(_)) => {
                            lost = Some(e);
                            backoff = (backoff * 2).min(RECONNECT_MAX);
                        }
                        Err(e) => return Err(e),
                    }
                    continue;
                };
                let next = conn.next(limit).await;
                let gone = match next {
                    Ok(None) => break,
                    Ok(Some(Incoming::Closed)) => {
                        ClientError::Network("the server closed the connection".into())
                    }
                    Err(e @ ClientError::Network(_)) => e,
                    Err(e) => return Err(e),
                    Ok(Some(Incoming::Drained)) => {
                        drained = true;
                        continue;
                    }
                    // Bundle fetches left this device low: refill now, not at the next command.
                    Ok(Some(Incoming::PrekeysLow)) => match self.maintain_prekeys().await {
                        Ok(()) => continue,
                        // Messages already stored stay with an untold caller (see the end).
                        Err(e) if !tell && !out.is_empty() => e,
                        Err(e) => return Err(e),
                    },
                    // This connection sends nothing, so it gets no answers to sends.
                    Ok(Some(Incoming::Event(RelayEvent::Sent { .. } | RelayEvent::SendFailed { .. }))) => {
                        continue;
                    }
                    Ok(Some(Incoming::Event(RelayEvent::Envelope(e)))) => {
                        let (msgs, acks) = self.process_all_with(vec![e], &mut *on_event, tell).await?;
                        out.extend(msgs);
                        // Stored already: an ack lost with the connection is sent again after
                        // the resync redelivers the envelope (its id is known, so no repeat).
                        match conn.ack(acks, self.reported_state_counter()?).await {
                            Ok(()) => continue,
                            Err(e @ ClientError::Network(_)) => e,
                            Err(e) => return Err(e),
                        }
                    }
                };
                if let Some(c) = live.take() {
                    c.close().await;
                }
                if !out.is_empty() {
                    // Messages came: the wait did its job; what follows reports the server.
                    break;
                }
                let warning = format!("lost the connection to the server ({gone}); reconnecting");
                if tell {
                    on_event(ReceiveEvent::Warning(warning));
                } else {
                    self.warnings.push(warning);
                }
                lost = Some(gone);
            }
            if let Some(c) = live {
                c.close().await;
            } else if out.is_empty()
                && let Some(e) = lost
            {
                // Never reconnected before the deadline: the server is unreachable.
                return Err(e);
            }
        }
        // Prekeys, and the sessions reset for messages that could not be decrypted (the
        // peers hear now). The messages are stored already: a caller that was not told of
        // them as they came gets them with a warning rather than an error that loses them.
        let tail = match self.maintain_prekeys().await.and_then(|()| self.queue_rejoin_requests()) {
            Ok(()) => self.send_pending_resets().await,
            Err(e) => Err(e),
        };
        // Commits of this device's left pending (a crash, a lost answer).
        let tail = match tail {
            Ok(()) => self.settle_commits().await,
            e => e,
        };
        // A member that left: its removal proposal is committed now (the first member to
        // commit wins; the others find nothing left to commit).
        let tail = match tail {
            Ok(()) => self.commit_pending_proposals().await,
            e => e,
        };
        // Devices of this account linked or revoked since: into or out of every group.
        let tail = match tail {
            Ok(()) => Box::pin(self.reconcile_own_devices()).await,
            e => e,
        };
        // Members that lost their state of a group (restored from an older copy) and asked
        // to be taken back in.
        let tail = match tail {
            Ok(()) => Box::pin(self.honour_rejoins()).await,
            e => e,
        };
        // This device's keys in the groups where it has not committed for a while.
        let tail = match tail {
            Ok(()) => Box::pin(self.refresh_groups()).await,
            e => e,
        };
        match tail {
            Err(e) if !tell && !out.is_empty() => {
                self.warnings.push(format!("the messages were received, but then: {e}"));
                Ok(out)
            }
            other => other.map(|()| out),
        }
    }

    /// Fetches the first page of stored envelopes without processing them (for tools and the
    /// demo, which may deliver them to [`Self::process_envelopes`] in any order).
    pub async fn fetch_envelopes(&mut self) -> Result<Vec<api::Envelope>> {
        self.online().await?;
        Ok(self.api.fetch(0).await?.envelopes)
    }

    /// Processes envelopes in the given order (decrypt, store, then ack).
    pub async fn process_envelopes(&mut self, envelopes: Vec<api::Envelope>) -> Result<Vec<ReceivedMessage>> {
        self.online().await?;
        self.list_fetches.clear();
        let (msgs, acks) = self.process_all(envelopes).await?;
        self.api.ack(acks, self.reported_state_counter()?).await?;
        if let Err(e) = self.send_pending_resets().await {
            if msgs.is_empty() {
                return Err(e);
            }
            self.warnings.push(format!("the messages were received, but then: {e}"));
        }
        Ok(msgs)
    }

    /// Processes envelopes in order under the home's lock (decrypt, store; the caller acks).
    pub(crate) async fn process_all(
        &mut self,
        envelopes: Vec<api::Envelope>,
    ) -> Result<(Vec<ReceivedMessage>, Vec<u64>)> {
        self.process_all_with(envelopes, &mut |_| {}, false).await
    }

    /// [`Self::process_all`], telling `on_event` (when `tell`) of each message as soon as it
    /// is stored, with the warnings gathered before it, before anything that can fail next.
    async fn process_all_with(
        &mut self,
        envelopes: Vec<api::Envelope>,
        on_event: &mut (dyn FnMut(ReceiveEvent<'_>) + Send),
        tell: bool,
    ) -> Result<(Vec<ReceivedMessage>, Vec<u64>)> {
        let mut msgs = Vec::new();
        let mut acks = Vec::new();
        if envelopes.is_empty() {
            return Ok((msgs, acks));
        }
        // Another process on this home may be storing the same envelopes (two `receive`s)
        // or stepping the same sessions (a send): one at a time, each seeing what the other
        // committed (the envelope id check, the session states, the prekeys).
        let _guard = self.lock_state().await?;
        for e in envelopes {
            let id = e.id;
            match self.process(e).await? {
                Outcome::Message(m) => {
                    if tell {
                        for w in std::mem::take(&mut self.warnings) {
                            on_event(ReceiveEvent::Warning(w));
                        }
                        on_event(ReceiveEvent::Message(&m));
                    }
                    msgs.push(m);
                    acks.push(id);
                }
                Outcome::Done => {
                    if tell {
                        for w in std::mem::take(&mut self.warnings) {
                            on_event(ReceiveEvent::Warning(w));
                        }
                    }
                    acks.push(id);
                }
                Outcome::Event(ev) => {
                    if tell {
                        for w in std::mem::take(&mut self.warnings) {
                            on_event(ReceiveEvent::Warning(w));
                        }
                        on_event(ReceiveEvent::Group(&ev));
                    }
                    acks.push(id);
                }
                Outcome::Held => {}
            }
        }
        Ok((msgs, acks))
    }

    /// Drops an envelope that can never be read: remembered as processed, acked, reported.
    fn drop_envelope(&mut self, e: &api::Envelope, why: &str) -> Result<Outcome> {
        store::mark_seen(self.store.conn(), e.id)?;
        self.warn_bounded(format!(
            "dropped a message from {} device {} (envelope {}): {why}",
            e.sender, e.sender_device, e.id
        ));
        Ok(Outcome::Done)
    }

    /// Adds a warning a peer can cause: the warnings waiting are bounded (past
    /// [`MAX_WARNINGS`], one line says that more were dropped).
    fn warn_bounded(&mut self, warning: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(warning);
        } else if self.warnings.last().map(String::as_str) != Some(MORE_DROPPED) {
            self.warnings.push(MORE_DROPPED.to_owned());
        }
    }

    async fn process(&mut self, e: api::Envelope) -> Result<Outcome> {
        if self.store.seen(e.id)? {
            return Ok(Outcome::Done);
        }
        if let Some(g) = &e.group {
            return Ok(match self.process_group(&e, &g.clone()).await? {
                crate::groups::GroupOutcome::Message(m) => Outcome::Message(m),
                crate::groups::GroupOutcome::Event(ev) => Outcome::Event(ev),
                crate::groups::GroupOutcome::Done => Outcome::Done,
                crate::groups::GroupOutcome::Held => Outcome::Held,
            });
        }
        let Ok(message) = Message::from_bytes(e.content.as_slice()) else {
            return self.drop_envelope(&e, "malformed");
        };
        let (Ok(sender), Some(device)) = (AccountName::new(&e.sender), DeviceId::new(e.sender_device)) else {
            return self.drop_envelope(&e, "bad sender address");
        };
        // The stored list first: no request for the usual message.
        let stored = self.stored_device(&sender, device)?;
        if let Some(dev) = &stored
            && let Some(d) = self.decrypt(&sender, dev, &message)?
        {
            return self.deliver(&e, &sender, device, d);
        }
        // Not with what is stored. A device the stored list does not have, or a first message
        // from an identity other than the stored one (a reinstall, a re-registered device):
        // ask the server for the current list. Anything else (forged, replayed, for a lost
        // session) no list can help with.
        let claimed = match &message {
            Message::Prekey(p) => Some(*p.identity_key.as_bytes()),
            Message::Ratchet(_) => None,
        };
        let other_identity = match (&stored, &claimed) {
            (None, _) => true,
            (Some(dev), Some(claimed)) => dev.identity().dh_key().as_bytes() != claimed,
            (Some(_), None) => false,
        };
        if !other_identity {
            return self.drop_undecryptable(&e, &sender, true);
        }
        let dev = match self.current_device(&sender, device, claimed).await {
            Ok(Some(d)) => d,
            Ok(None) => {
                self.warn_once(format!(
                    "holding messages from {sender}: could not check their current devices now; they \
                     stay on the server for the next receive"
                ));
                return Ok(Outcome::Held);
            }
            Err(ClientError::IdentityChanged(n)) => {
                self.warn_once(format!(
                    "holding messages from {n}: their identity key changed since you verified it; run \
                     `tacit safety-number {n}` and `tacit verify {n} DIGITS` to read them"
                ));
                return Ok(Outcome::Held);
            }
            Err(ClientError::UnknownDevice { .. }) if self.kt_may_be_unpublished(&sender) => {
                // A device added since the directory's last epoch: its list is published
                // within an epoch interval; the envelope waits on the server until then.
                self.warn_once(format!(
                    "holding messages from a new device of {sender} until the key transparency \
                     directory publishes it; they stay on the server for the next receive"
                ));
                return Ok(Outcome::Held);
            }
            Err(
                err @ (ClientError::UnknownDevice { .. }
                | ClientError::DeviceList { .. }
                | ClientError::NotFound(_)),
            ) => {
                return self.drop_envelope(&e, &err.to_string());
            }
            Err(err) => return Err(err),
        };
        let tried = stored.as_ref().is_some_and(|s| s.identity() == dev.identity());
        match if tried { None } else { self.decrypt(&sender, &dev, &message)? } {
            Some(d) => self.deliver(&e, &sender, device, d),
            None => self.drop_undecryptable(&e, &sender, stored.is_some()),
        }
    }

    /// Drops a message from a device in `sender`'s signed list that no session decrypts
    /// (forged, or for a session this device lost) and, for a peer it knew (`known`) or one
    /// met after a restored copy was taken, queues a session reset for `sender`, at most one
    /// an hour ([`Client::heal_after_failure`]): when the session was lost, the next message
    /// in each direction decrypts without the user doing anything.
    fn drop_undecryptable(
        &mut self,
        e: &api::Envelope,
        sender: &AccountName,
        known: bool,
    ) -> Result<Outcome> {
        let heal = self.heal_after_failure(sender, known)?;
        // The sender may still hold the message: ask it to send it again over the new session
        // (for the peers a reset may be sent to; at most RETRY_REQUESTS_PER_DEVICE an hour).
        let asked = heal != Heal::No && self.queue_retry_request(e, sender)?;
        let again = if asked { "; asked the sender to send it again" } else { "" };
        let why = match heal {
            Heal::Queued => format!(
                "could not decrypt (forged, or for a session this device lost); starting a new session \
                 with {sender} so that the next messages decrypt{again}"
            ),
            Heal::Recently => format!(
                "could not decrypt (forged, or for a session this device lost); a new session with \
                 {sender} was started within the hour (`tacit session reset {sender}` starts one now){again}"
            ),
            Heal::No => format!(
                "could not decrypt (forged, or for a session this device lost; if {sender} is someone \
                 you write to, `tacit session reset {sender}` starts a new session)"
            ),
        };
        self.drop_envelope(e, &why)
    }

    /// Queues a retry request for envelope `e` to its sender (sent, after the session reset
    /// [`Client::heal_after_failure`] queued, at the end of this receive), unless
    /// [`RETRY_REQUESTS_PER_DEVICE`] went to that device within the hour, or requests went to
    /// [`RETRY_DEVICES`] other devices within it (the bound on what a forger, the server
    /// included, can make this device send). Whether it was queued.
    fn queue_retry_request(&mut self, e: &api::Envelope, sender: &AccountName) -> Result<bool> {
        let now = now_ms();
        let tx = self.store.tx()?;
        let allowed = store::allow_retry_request(
            &tx,
            sender.as_str(),
            e.sender_device,
            now,
            RETRY_WINDOW_MS,
            RETRY_REQUESTS_PER_DEVICE,
            RETRY_DEVICES,
        )?;
        if allowed {
            let request = Payload::RetryRequest {
                sent_time_ms: now,
                device: e.sender_device,
                digest: envelope_digest(e.content.as_slice()),
                server_time_ms: e.server_time_ms,
            };
            let what = PendingKind::Payload {
                payload: Zeroizing::new(request.encode().map_err(payload_error)?),
                message_id: None,
            };
            store::queue_send(&tx, sender.as_str(), &what, now)?;
            let digest = envelope_digest(e.content.as_slice());
            store::record_retry_asked(&tx, sender.as_str(), e.sender_device, &digest, e.server_time_ms, now)?;
        }
        tx.commit()?;
        Ok(allowed)
    }

    /// `sender`'s `device` started a new session with this device: it may have been restored
    /// from a copy older than the session a retry request of this device came on, and lost
    /// the request. Each request sent to it is asked once more, over the new session (the
    /// sender keeps the message 7 days and resends it at most 3 times; a copy that arrives
    /// twice shows once).
    fn ask_again(&mut self, sender: &AccountName, device: DeviceId) -> Result<()> {
        let tx = self.store.tx()?;
        let now = now_ms();
        for (digest, server_time_ms) in store::take_retry_asked(&tx, sender.as_str(), device.get())? {
            let Ok(digest) = <[u8; DIGEST_LEN]>::try_from(digest.as_slice()) else { continue };
            let request =
                Payload::RetryRequest { sent_time_ms: now, device: device.get(), digest, server_time_ms };
            let what = PendingKind::Payload {
                payload: Zeroizing::new(request.encode().map_err(payload_error)?),
                message_id: None,
            };
            store::queue_send(&tx, sender.as_str(), &what, now)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Adds a warning unless the same one is already waiting (one per sender, not one per
    /// held envelope).
    pub(crate) fn warn_once(&mut self, warning: String) {
        if !self.warnings.contains(&warning) {
            self.warnings.push(warning);
        }
    }

    /// Stores a decrypted message with the session that decrypted it (marks first), then
    /// prunes the marks of the sessions this pushed out.
    fn deliver(
        &mut self,
        e: &api::Envelope,
        sender: &AccountName,
        device: DeviceId,
        d: Decrypted,
    ) -> Result<Outcome> {
        let Decrypted { session, plaintext, stale, prekeys, promote } = d;
        let payload = Payload::decode(&plaintext);
        self.gens.raise(&[(*session.base_key().as_bytes(), session.generation())])?;
        if let Some(p) = &prekeys {
            self.prekey_mark.raise(p.generation())?;
        }
        // A sent transcript records how many devices the message went to as far as this
        // device knows (the recipient's stored list).
        let transcript_devices = match &payload {
            // A stored list that does not verify (never expected) only leaves the count unknown.
            Ok(Payload::SentTranscript { peer: to, .. }) if *to != self.me.name => self
                .stored_list(to)
                .ok()
                .flatten()
                .map(|(_, l)| u32::try_from(l.devices().len()).unwrap_or(u32::MAX)),
            _ => None,
        };
        // The own list this device accepted, for an account key update.
        let own_previous = match &payload {
            Ok(Payload::AccountKeyUpdate { .. }) => self.accepted_own_list()?,
            _ => None,
        };
        // A receipt goes to every device of the account: one naming a message this device
        // does not hold is news only when no other device could have sent it.
        let sole_device = match &payload {
            Ok(Payload::Receipt { .. }) => self
                .stored_list(&self.me.name)
                .ok()
                .flatten()
                .is_none_or(|(_, l)| l.devices().iter().all(|d| d.id == self.me.device)),
            _ => false,
        };
        let tx = self.store.tx()?;
        let peer = sender.as_str();
        store::put_session(
            &tx,
            peer,
            device.get(),
            session.base_key().as_bytes(),
            &session.to_bytes(),
            session.generation(),
            stale,
        )?;
        // The session the peer sends on is the one to answer on (see `promote_session`).
        if promote {
            store::promote_session(&tx, peer, device.get(), session.base_key().as_bytes())?;
        }
        let pruned = store::prune_sessions(&tx, peer, device.get(), SESSIONS_PER_DEVICE)?;
        if let Some(p) = &prekeys {
            store::set_meta(&tx, meta::PREKEYS, &p.to_bytes())?;
        }
        store::mark_seen(&tx, e.id)?;
        let reset = matches!(payload, Ok(Payload::SessionReset { .. }));
        if reset {
            // The sender lost its state of the older sessions with this device: this one
            // replaces them (it is the newest, so the next send goes over it).
            store::mark_other_sessions_stale(&tx, peer, device.get(), session.base_key().as_bytes())?;
        }
        store::raise_state_counter(&tx)?;
        let own = *sender == self.me.name;
        let mut notice = None;
        let mut key_update = None;
        let received = match payload {
            Ok(Payload::Text { message_id, sent_time_ms, text, root }) => {
                if let Some(root) = root
                    && !own
                    && self.kt.gossip.len() < crate::transparency::MAX_GOSSIP_PER_RECEIVE
                {
                    self.kt.gossip.push((sender.to_string(), root));
                }
                let entry = HistoryEntry {
                    peer: peer.to_owned(),
                    device: device.get(),
                    outgoing: false,
                    text,
                    server_time_ms: Some(e.server_time_ms),
                    sent_time_ms,
                    message_id,
                    delivered: None,
                    devices: None,
                };
                // A copy stored already (a resend after a retry request) is not shown again;
                // it is receipted again (the first receipt may be what was lost).
                let stored = store::put_message(&tx, &entry, Some(e.id))?;
                if let Some(id) = &message_id
                    && !own
                {
                    store::queue_receipt(&tx, peer, id)?;
                }
                stored.map(|_| ReceivedMessage {
                    from: entry.peer,
                    device: entry.device,
                    server_time_ms: e.server_time_ms,
                    sent_time_ms: entry.sent_time_ms,
                    text: entry.text,
                    group: None,
                })
            }
            Ok(Payload::SessionReset { .. } | Payload::Nothing { .. }) => None,
            Ok(Payload::SentTranscript { peer: to, message_id, sent_time_ms, text }) => {
                if own {
                    // Another device of this account sent it: stored as sent (once). How many
                    // devices it went to is the count this device knows of.
                    let devices = transcript_devices;
                    let entry = HistoryEntry {
                        peer: to.to_string(),
                        device: 0,
                        outgoing: true,
                        text,
                        server_time_ms: Some(e.server_time_ms),
                        sent_time_ms,
                        message_id: Some(message_id),
                        delivered: None,
                        devices,
                    };
                    store::put_message(&tx, &entry, Some(e.id))?;
                } else {
                    notice = Some(format!(
                        "refused a sent-message copy from {sender} device {device}: only your own devices \
                         send those; nothing was stored"
                    ));
                }
                None
            }
            Ok(Payload::Receipt { message_ids, .. }) => {
                let mut unknown = 0usize;
                if own {
                    unknown = message_ids.len();
                } else {
                    for id in &message_ids {
                        if !store::record_receipt(&tx, peer, id, device.get(), !sole_device)? {
                            unknown += 1;
                        }
                    }
                }
                if unknown > 0 && (own || sole_device) {
                    let err = ClientError::UnknownMessage {
                        name: sender.to_string(),
                        device: device.get(),
                        count: unknown,
                    };
                    notice = Some(err.to_string());
                }
                None
            }
            Ok(Payload::AccountKeyUpdate { list, previous, account, .. }) => {
                let me = (&self.me.name, self.me.device, self.me.identity.public());
                match crate::devices::account_key_update(
                    &tx,
                    me,
                    own_previous.as_ref(),
                    own,
                    device,
                    &list,
                    &previous,
                    account.as_ref(),
                ) {
                    Ok(n) => key_update = Some(n),
                    Err(e) => notice = Some(e.to_string()),
                }
                None
            }
            Ok(Payload::GroupRejoin { group_id, key_package, .. }) => {
                notice =
                    crate::groups::note_rejoin_request(&tx, (peer, device.get()), &group_id, &key_package)?;
                None
            }
            Ok(Payload::RetryRequest { device: target, digest, server_time_ms, .. }) => {
                // Addressed to the device that sent the envelope: the sender's other devices
                // received the same request and ignore it.
                if target == self.me.device.get() {
                    let now = now_ms();
                    match store::find_outbox(&tx, peer, device.get(), &digest, now)? {
                        Some(hit) if hit.resends < MAX_RESENDS => {
                            let what =
                                PendingKind::Resend { message_id: hit.message_id, device: device.get() };
                            store::queue_send(&tx, peer, &what, now)?;
                        }
                        // A receipt, retry request or session reset this device sent: not
                        // kept, not worth a warning (the exchange that lost it heals).
                        None if store::was_unkept(&tx, peer, device.get(), &digest)? => {}
                        found => {
                            let err = ClientError::RetryRefused {
                                name: sender.to_string(),
                                device: device.get(),
                                server_time_ms,
                                resent: found.is_some(),
                            };
                            notice = Some(err.to_string());
                        }
                    }
                }
                None
            }
            Err(_) => {
                notice = Some(format!("a message from {sender} has a payload this version cannot read"));
                None
            }
        };
        tx.commit()?;
        self.gens.forget(&pruned)?;
        if let Some(update) = key_update {
            self.account_key_updated(update)?;
        }
        if reset {
            self.warnings.push(session_reset_notice(sender, device));
            self.ask_again(sender, device)?;
        }
        if let Some(n) = notice {
            self.warn_bounded(n);
        }
        Ok(match received {
            Some(m) => Outcome::Message(m),
            None => Outcome::Done,
        })
    }

    /// Decrypts with an existing session of this device or, for a new prekey message, a new
    /// one. `None`: nothing could decrypt it.
    fn decrypt(
        &mut self,
        sender: &AccountName,
        dev: &VerifiedDevice,
        message: &Message,
    ) -> Result<Option<Decrypted>> {
        let candidates = match message {
            Message::Prekey(p) => match self.store.session_by_base_key(p.base_key.as_bytes())? {
                Some(row) => vec![row],
                None => {
                    let mut prekeys = self.load_prekeys()?;
                    return Ok(
                        match Session::accept(&self.me.identity, self.me.address(), &mut prekeys, dev, p) {
                            Ok((session, plaintext)) => Some(Decrypted {
                                session,
                                plaintext: zeroize::Zeroizing::new(plaintext),
                                stale: false,
                                prekeys: Some(prekeys),
                                promote: false,
                            }),
                            Err(_) => None,
                        },
                    );
                }
            },
            Message::Ratchet(_) => self.store.sessions(sender.as_str(), dev.address().device.get())?,
        };
        // A ratchet message's candidates come newest first: the first needs no promotion.
        let newest_first = matches!(message, Message::Ratchet(_));
        for (i, row) in candidates.into_iter().enumerate() {
            // Decrypting on a stale copy is safe (it sends nothing); it stays stale.
            let Ok(mut session) = Session::from_bytes(&row.state) else { continue };
            if session.remote_address() != dev.address() || session.remote_identity() != dev.identity() {
                continue;
            }
            let before = session.generation();
            if let Ok(plaintext) = session.decrypt(message) {
                let stale = row.stale || before < self.gens.expected_session(&row.base_key);
                let promote = !stale && (i > 0 || !newest_first);
                return Ok(Some(Decrypted {
                    session,
                    plaintext: zeroize::Zeroizing::new(plaintext),
                    stale,
                    prekeys: None,
                    promote,
                }));
            }
        }
        Ok(None)
    }
}

/// How a send keeps its payload for retry requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutboxMode {
    /// Not kept (receipts, retry requests, session resets).
    None,
    /// Kept under the message id, with each envelope's digest.
    Keep,
    /// An answer to a retry request from this device: a new session with it; the digests of
    /// the entry's devices are updated.
    Resend(u32),
}

/// Makes one device's payload ([`Client::send_payload_with`]).
pub(crate) type PerDevice<'a> = dyn Fn(u32) -> zeroize::Zeroizing<Vec<u8>> + Send + Sync + 'a;

/// One payload to send ([`Client::send_payload`]).
pub(crate) struct Outgoing<'a> {
    /// The payload.
    pub(crate) payload: &'a [u8],
    /// Our clock when sending.
    pub(crate) sent_time_ms: u64,
    /// Its message id (history and outbox key).
    pub(crate) message_id: Option<MessageId>,
    /// A text to store as a sent message.
    pub(crate) history: Option<&'a str>,
    /// Whether and how it is kept for retry requests.
    pub(crate) outbox: OutboxMode,
}

/// A new random message id.
fn new_message_id() -> MessageId {
    let mut id = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut OsRng, &mut id);
    id
}

/// What a retry request names an envelope by: SHA-256 of its content, first 16 bytes.
pub(crate) fn envelope_digest(content: &[u8]) -> [u8; DIGEST_LEN] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, content);
    let mut out = [0u8; DIGEST_LEN];
    for (o, b) in out.iter_mut().zip(d.as_ref()) {
        *o = *b;
    }
    out
}

/// A payload this client cannot encode (a text too long).
fn payload_error(e: PayloadError) -> ClientError {
    match e {
        PayloadError::TooLong { len } => ClientError::MessageTooLong { len, max: MAX_TEXT_BYTES },
        _ => ClientError::Internal("payload encoding"),
    }
}

/// What a receiver is told when a device of `sender` replaced its sessions with this device.
fn session_reset_notice(sender: &AccountName, device: DeviceId) -> String {
    format!(
        "{sender}'s device {device} started a new session with this device (its data was restored from \
         an older copy, or it ran `tacit session reset`): messages it sent earlier may not have arrived, \
         and your messages to it go over the new session"
    )
}

/// What decrypting an envelope produced.
struct Decrypted {
    /// The session after decrypting.
    session: Session,
    /// The padded-off plaintext.
    plaintext: zeroize::Zeroizing<Vec<u8>>,
    /// The session is stale (restored from an old copy): it decrypts but never sends.
    stale: bool,
    /// The prekeys, when a new session consumed some.
    prekeys: Option<DevicePrekeys>,
    /// It may not be the newest session of its device: make it the one that sends.
    promote: bool,
}
