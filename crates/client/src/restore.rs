//! A whole home folder put back from an older copy (`cp -a`, a disk image, a phone backup),
//! and `tacit session reset`.
//!
//! The generation marks (`generations`, `prekeys_generation`) catch an old `store.db` put
//! back alone, but not the whole folder: the marks come back with it. So the store keeps a
//! **state counter** (`store::raise_state_counter`), raised by one in every transaction that
//! changes protocol state the world can see (a send's sessions, a received envelope, prekeys
//! to upload), and the requests that show the change to the world after it committed (the
//! send, the acknowledgement, the upload) report it. The server keeps the largest value per
//! device, in the same transaction as the request's own effect, and answers it at
//! authentication. It therefore only ever holds a value whose change the world may have
//! seen: a copy at or above it lost nothing anyone saw, and a copy below it did. A crash
//! between a commit and its request leaves the store ahead of the server, which is not a
//! restore.
//!
//! A copy found below the server's value ([`Client::check_restored`]) warns, marks every
//! session stale (never sent on again; they still decrypt late messages), resets the prekey
//! set (every private key a later copy may have published or used is dropped; a complete new
//! set is uploaded), moves its counter past the server's, and sends every peer of a stored
//! session a *session reset* over a new session ([`Client::send_pending_resets`]): the
//! receiver marks its older sessions with this device stale and, since the new one is its
//! newest, answers over it. The peers still to be told are stored with the reset (meta
//! `PENDING_RESETS`), so a crash or a failed request only postpones them to the next
//! command that reaches the server.
//!
//! Its groups are rejoined: every group state it holds is as old as the copy, so the
//! members are asked to take the device back in with a new leaf (`groups.rs`), and it sends
//! nothing in a group until one has.
//!
//! A message from a known device of a peer that no session decrypts (a contact met after the
//! copy was taken, whom the copy does not know; a session lost any other way) queues the same
//! reset for that peer ([`Client::heal_after_failure`]), at most once per peer per hour, so
//! such a conversation heals without the user: the next one in each direction decrypts, and
//! the message itself is asked for again (a retry request, `messaging.rs`), so it is not lost
//! while its sender still keeps it (issue 9). A restore counts as healing every peer it
//! resets, so a message the copy cannot decrypt queues no second reset within the hour.
//! [`Client::reset_session`] (`tacit session reset NAME`) does it at
//! once, for one contact, whatever the hour.

use tacit_protocol::AccountName;

use crate::client::{Client, meta, now_ms};
use crate::error::{ClientError, ErrorKind, Result};
use crate::messaging::{OutboxMode, Outgoing};
use crate::payload::Payload;
use crate::store;

/// The most prekey generations a restored copy is taken to be behind (each state change is
/// at most one generation; a larger claim from the server is not believed).
const MAX_GENERATIONS_BEHIND: u64 = 1 << 16;

/// A peer whose message could not be decrypted is sent at most one session reset per this
/// long (a forger, the server included, can make us start new sessions no faster).
const HEAL_INTERVAL_MS: u64 = 3_600_000;
/// Peers healed within the hour, at most (past that, none more until an hour passes).
const HEAL_REMEMBERED: usize = 256;
/// How long after a detected restore a peer this device does not know may be healed.
const HEAL_UNKNOWN_AFTER_RESTORE_MS: u64 = 30 * 24 * 3_600_000;

/// What [`Client::heal_after_failure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Heal {
    /// A session reset is queued.
    Queued,
    /// One was queued within the hour (or too many peers were): not again yet.
    Recently,
    /// Not for this peer (one this device does not know). The own account's other devices
    /// are healed as peers are (issue 9: they exchange sent transcripts).
    No,
}

impl Client {
    /// A message from `peer`'s device that no session decrypted: queues a session reset for
    /// `peer` (sent by the next [`Self::send_pending_resets`], at the end of this receive),
    /// unless one was queued for this reason within the hour. `known`: this device knew
    /// `peer` before the message (a stored device list). A peer it did not know gets one only
    /// within [`HEAL_UNKNOWN_AFTER_RESTORE_MS`] of a detected restore (a contact met after
    /// the copy was taken); otherwise a stranger's junk would make this device answer
    /// strangers (telling them it is online) and keep state for each.
    pub(crate) fn heal_after_failure(&mut self, peer: &AccountName, known: bool) -> Result<Heal> {
        let now = now_ms();
        if !known {
            let restored_at = match self.store.meta(meta::RESTORED_AT)? {
                Some(v) => <[u8; 8]>::try_from(v.as_slice()).map(u64::from_be_bytes).unwrap_or(0),
                None => 0,
            };
            if restored_at > now || now - restored_at >= HEAL_UNKNOWN_AFTER_RESTORE_MS {
                return Ok(Heal::No);
            }
        }
        let mut recent = self.healed_recently(now)?;
        if recent.iter().any(|(n, _)| n == peer.as_str()) {
            return Ok(Heal::Recently);
        }
        if recent.len() >= HEAL_REMEMBERED {
            // As many peers healed within the hour as are remembered: none more, so no peer
            // falls out of the table early (the hourly bound holds for every peer).
            return Ok(Heal::Recently);
        }
        recent.push((peer.to_string(), now));
        let mut pending = self.pending_resets()?;
        if !pending.iter().any(|n| n == peer.as_str()) {
            pending.push(peer.to_string());
        }
        let lines: Vec<String> = recent.iter().map(|(n, t)| format!("{n}\t{t}")).collect();
        let tx = self.store.tx()?;
        store::set_meta(&tx, meta::HEAL_RESETS, lines.join("\n").as_bytes())?;
        store::set_meta(&tx, meta::PENDING_RESETS, pending.join("\n").as_bytes())?;
        tx.commit()?;
        Ok(Heal::Queued)
    }

    /// The peers sent a session reset within the hour, with when.
    fn healed_recently(&self, now: u64) -> Result<Vec<(String, u64)>> {
        // Times in the future (a clock set back) count as expired, not as recent.
        let recent_at = |t: u64| t <= now && now - t < HEAL_INTERVAL_MS;
        Ok(match self.store.meta(meta::HEAL_RESETS)? {
            Some(v) => String::from_utf8(v.to_vec())
                .map_err(|_| ClientError::Internal("heal resets"))?
                .lines()
                .filter_map(|l| l.split_once('\t'))
                .filter_map(|(n, t)| Some((n.to_owned(), t.parse().ok()?)))
                .filter(|(_, t)| recent_at(*t))
                .collect(),
            None => Vec::new(),
        })
    }

    /// The state counter to report with a request that shows committed changes.
    pub(crate) fn reported_state_counter(&self) -> Result<Option<u64>> {
        Ok(Some(self.store.state_counter()?))
    }

    /// After authenticating: `server` is the largest state counter the server recorded for
    /// this device (`None`: a server that keeps none). Below it, this folder is an older copy
    /// of itself: every session is marked stale, the prekey set is reset, the counter moves
    /// past the server's and every peer is queued for a session reset, in one transaction.
    pub(crate) fn check_restored(&mut self, server: Option<u64>) -> Result<()> {
        let Some(seen) = server else { return Ok(()) };
        let local = self.store.state_counter()?;
        if local >= seen {
            return Ok(());
        }
        // Each prekey generation since the copy came with one raise at least: ids jump past
        // whatever keys a later copy made and published.
        // The server's number only sizes the jump, and is bounded: a server that sends a huge
        // one must not drive the generation near its end (marks only grow).
        let mut prekeys = self.load_prekeys()?;
        let behind = (seen - local).min(MAX_GENERATIONS_BEHIND);
        prekeys.reset_after_rollback(prekeys.generation().saturating_add(behind));
        self.prekey_mark.raise(prekeys.generation())?;
        let mut pending = self.pending_resets()?;
        // The own account's other devices included (they exchange sent transcripts).
        for peer in self.store.session_peers()? {
            if !pending.contains(&peer) {
                pending.push(peer);
            }
        }
        // Each of them counts as healed now: a message of theirs the copy cannot decrypt (one
        // sent before they receive the reset) queues no second reset within the hour (it
        // still asks for the message again: `Client::queue_retry_request`).
        let now = now_ms();
        let mut recent = self.healed_recently(now)?;
        recent.retain(|(n, _)| !pending.contains(n));
        recent.extend(pending.iter().map(|n| (n.clone(), now)));
        let healed: Vec<String> = recent.iter().map(|(n, t)| format!("{n}\t{t}")).collect();
        let tx = self.store.tx()?;
        store::set_meta(&tx, meta::HEAL_RESETS, healed.join("\n").as_bytes())?;
        store::set_meta(&tx, meta::PREKEYS, &prekeys.to_bytes())?;
        // An upload planned by the copy would publish keys whose private halves are gone.
        store::delete_meta(&tx, meta::PENDING_UPLOAD)?;
        store::mark_sessions_stale(&tx, None)?;
        // Its group states are as old as the rest: sending from them would reuse message
        // keys, so the members are asked to take it back into each (`groups.rs`).
        let groups = crate::groups::mark_all_rejoins(&tx)?;
        store::set_meta(&tx, meta::PENDING_RESETS, pending.join("\n").as_bytes())?;
        store::set_meta(&tx, meta::RESTORED_AT, &now_ms().to_be_bytes())?;
        store::state_counter_at_least(&tx, seen)?;
        store::raise_state_counter(&tx)?;
        tx.commit()?;
        // At most ten names: a warning is read, not scrolled.
        let who = match pending.len() {
            0 => "no contact".to_owned(),
            n if n <= 10 => pending.join(", "),
            n => format!(
                "{} and {} more",
                pending.iter().take(10).cloned().collect::<Vec<_>>().join(", "),
                n - 10
            ),
        };
        self.warnings.push(format!(
            "this device's data was restored from an old copy (the server has seen state {seen} of this \
             device, this copy is at {local}): messages sent and received since that copy was taken are not \
             in it, and its sessions and prekeys were replaced; starting new sessions with {who}. Messages \
             sent to this device before they receive the new session may not be readable{}",
            match groups {
                0 => String::new(),
                n => format!("; the members of its {n} group(s) are asked to take it back in"),
            }
        ));
        Ok(())
    }

    /// The contacts still to be sent a session reset.
    fn pending_resets(&self) -> Result<Vec<String>> {
        let Some(v) = self.store.meta(meta::PENDING_RESETS)? else { return Ok(Vec::new()) };
        let text = String::from_utf8(v.to_vec()).map_err(|_| ClientError::Internal("pending resets"))?;
        Ok(text.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect())
    }

    /// Sends the session resets a detected restore queued. A network failure, or a server
    /// that is busy, leaves the rest queued for the next command that reaches the server
    /// (with a warning); any other refusal (the account is gone, a verified contact's
    /// identity changed) drops that contact with a warning naming `tacit session reset`.
    pub(crate) async fn send_pending_resets(&mut self) -> Result<()> {
        // One process sends them (the queue is read and emptied under the home's lock).
        let _guard = self.lock_state().await?;
        for name in self.pending_resets()? {
            let sent = match AccountName::new(&name) {
                Ok(n) => self.send_reset(&n).await.map(drop),
                Err(e) => Err(e.into()),
            };
            match sent {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Local => return Err(e),
                Err(e) if transient(&e) => {
                    self.warnings.push(format!(
                        "could not start a new session with {name} yet ({e}); the next command that \
                         reaches the server tries again"
                    ));
                    return Ok(());
                }
                Err(e) => self.warnings.push(format!(
                    "could not start a new session with {name} ({e}); run `tacit session reset {name}` \
                     once that is resolved"
                )),
            }
            let rest: Vec<String> = self.pending_resets()?.into_iter().filter(|n| *n != name).collect();
            let tx = self.store.tx()?;
            if rest.is_empty() {
                store::delete_meta(&tx, meta::PENDING_RESETS)?;
            } else {
                store::set_meta(&tx, meta::PENDING_RESETS, rest.join("\n").as_bytes())?;
            }
            tx.commit()?;
        }
        // Then what else is queued (retry requests go after the resets, over the new
        // sessions; receipts; sent transcripts).
        match self.send_queued().await {
            Err(e) if e.kind() != ErrorKind::Local && transient(&e) => {
                self.warnings.push(format!(
                    "could not send queued messages yet ({e}); the next command that reaches the server \
                     tries again"
                ));
                Ok(())
            }
            other => other,
        }
    }

    /// Marks every session with `name` stale, then sends a session reset to each of its
    /// devices (over new sessions, since the old ones are stale). The caller is online.
    async fn send_reset(&mut self, name: &AccountName) -> Result<Vec<u32>> {
        // Marking stale and starting the new sessions are one step for other processes.
        let _guard = self.lock_state().await?;
        let tx = self.store.tx()?;
        store::mark_sessions_stale(&tx, Some(name.as_str()))?;
        tx.commit()?;
        let sent_time_ms = now_ms();
        let payload = Payload::session_reset(sent_time_ms);
        let out = Outgoing {
            payload: &payload,
            sent_time_ms,
            message_id: None,
            history: None,
            outbox: OutboxMode::None,
        };
        Ok(self.send_payload(name, &out).await?.devices)
    }

    /// `tacit session reset NAME`: stops sending on every session with `name` and starts a
    /// new one with each of its devices, carrying a session reset, so that the next message
    /// in each direction goes over the new session. For a conversation that fails to
    /// decrypt for a reason the client cannot see (a contact first met after the copy of
    /// this folder that was put back was taken). Returns the devices told.
    pub async fn reset_session(&mut self, name: &str) -> Result<Vec<u32>> {
        let name = AccountName::new(name)?;
        if name == self.me.name {
            return Err(ClientError::SendToSelf(name.to_string()));
        }
        self.online().await?;
        self.send_reset(&name).await
    }
}

/// A failure the next attempt may not meet: the network, a busy or rate-limiting server.
pub(crate) fn transient(e: &ClientError) -> bool {
    match e {
        ClientError::Network(_) => true,
        ClientError::Server { status, .. } => *status == 429 || *status >= 500,
        _ => false,
    }
}
