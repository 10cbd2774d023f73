//! Groups over MLS (issue 11): every device of every member account is a leaf, checked
//! against the account's verified device list (the key transparency directory's for
//! contacts; `tacit-groups`' `Directory`), with the state in the encrypted store.
//!
//! - **KeyPackages**: each device keeps [`KEY_PACKAGE_TARGET`] on the relay and a
//!   last-resort one ([`Client::maintain_key_packages`], run with the prekey upkeep); their
//!   private halves stay in the store until a Welcome uses them.
//! - **Create, add, remove**: the committer fetches the added accounts' verified lists, one
//!   KeyPackage per device, commits, and posts the commit (and one Welcome with the ratchet
//!   tree beside it) to the relay. A commit that loses its epoch to another member's (`409
//!   stale_epoch`) is dropped, the winner processed, and the commit made again on top
//!   ([`COMMIT_ATTEMPTS`]), without the user noticing. Only once the relay took it is it
//!   merged and the state stored.
//! - **Send**: the message is encrypted and the state stored (so no key is ever used twice)
//!   with the outgoing history entry, in one transaction, before it is posted; a post made in
//!   a stale epoch processes what is waiting and encrypts again.
//! - **Receive**: a group envelope is processed, and the new group state, the message or
//!   event and the envelope's id are stored in one transaction before the acknowledgement,
//!   as 1:1 messages are. A message the group refuses changes nothing (`tacit-groups`
//!   restores its state) and is dropped with a warning.
//! - **Rejoin** (a device whose state of a group is out of date: its data restored from an
//!   older copy, a change it missed, a Welcome for a KeyPackage it no longer holds): sending
//!   from an old state would reuse message keys and could never reach the group's epoch, so
//!   the device stops sending in the group ([`ClientError::GroupRejoining`]) and asks members
//!   over 1:1 sessions (payload kind 8, carrying a fresh KeyPackage of its own) to take it
//!   back in. A member that receives the request checks that the KeyPackage names the
//!   requesting device and that the device is a member, and commits the removal of its old
//!   leaf and the addition of the new one in one commit (RFC 9420 §12.3 applies removals
//!   first; the leaf's signature key is the device's identity key, so the two cannot coexist).
//!   The device joins from the Welcome. A request is honoured at most once per
//!   [`REJOIN_INTERVAL_MS`] per device and group; the members asked are the device's own
//!   account first, then admins, then others ([`REJOIN_ASKED`] accounts), asked again with
//!   a doubling interval until one answers.

use std::collections::HashSet;
use std::time::Duration;

use rusqlite::OptionalExtension;
use tacit_api as api;
use tacit_groups::{
    CommitSummary, Directory, GroupDevice, GroupError, GroupMeta, MemberId, OpenGroup, Received, StoredGroup,
    Suite,
};
use tacit_protocol::AccountName;
use zeroize::Zeroizing;

use crate::client::{Client, now, now_ms};
use crate::error::{ClientError, Result};
use crate::store;

/// The suite of every group this version makes: X25519 with ML-KEM-768 (post-quantum, as
/// 1:1 sessions are), mls-rs's code point.
pub(crate) const SUITE: Suite = Suite::PostQuantum;
/// KeyPackages kept on the relay besides the last-resort one.
pub const KEY_PACKAGE_TARGET: u32 = 20;
/// How long a KeyPackage's private half is kept: its lifetime (tacit-groups makes them
/// valid for 90 days).
const KEY_PACKAGE_LIFETIME_MS: u64 = 90 * 24 * 3600 * 1000;
/// The own device list every group's own devices last matched (store meta key).
const GROUPS_SYNCED_LIST: &str = "groups_synced_list";
/// Times a commit is sent again, unchanged, when its answer was lost.
const COMMIT_RESENDS: usize = 3;
/// Attempts at a commit or message whose epoch another member's commit took first.
pub const COMMIT_ATTEMPTS: usize = 4;
/// Fetches the device lists a group operation asked for (`names`), unless every one was
/// fetched in this operation already (then the operation cannot succeed: `false`). Each
/// round fetches at least one account more, so an operation ends within the group's size.
async fn more_lists(
    client: &mut Client,
    directory: &Directory,
    fetched: &mut Vec<AccountName>,
    names: &[AccountName],
) -> Result<bool> {
    let new: Vec<AccountName> = names.iter().filter(|n| !fetched.contains(n)).cloned().collect();
    if new.is_empty() {
        return Ok(false);
    }
    fetched.extend(new.iter().cloned());
    client.fetch_lists(directory, new).await?;
    Ok(true)
}
/// A rejoin request is sent again (to other members) after this long without an answer,
/// doubling each time up to [`REJOIN_MAX_INTERVAL_MS`]; a member honours one device's
/// request in a group at most once per this long.
pub const REJOIN_INTERVAL_MS: u64 = 10 * 60 * 1000;
/// The longest wait between two rejoin requests for one group.
const REJOIN_MAX_INTERVAL_MS: u64 = 24 * 3600 * 1000;
/// Accounts asked per rejoin request (besides the one whose message showed the loss).
pub const REJOIN_ASKED: usize = 3;
/// Groups this device asks to be taken back into at once, at most (a relay that invents
/// groups cannot make it ask without end).
const MAX_REJOINS: i64 = 256;
/// The KeyPackage a rejoin request carries is replaced after this long (well within its
/// 90-day lifetime).
const REJOIN_KEY_PACKAGE_MAX_AGE_MS: u64 = 30 * 24 * 3600 * 1000;
/// How long after a detected restore a group this device does not hold may be rejoined
/// (a group created after the copy was taken) when the message came from a stranger.
const REJOIN_UNKNOWN_AFTER_RESTORE_MS: u64 = 30 * 24 * 3600 * 1000;
/// A device replaces its own leaf's keys in a group (a commit with nothing but an update
/// path, RFC 9420 §12.4) when it has not committed there for this long: a leaf key taken
/// from this device stops opening the group's secrets within the interval (post-compromise
/// security needs every member to update, not only the ones that change the group).
pub const REFRESH_INTERVAL_MS: u64 = 7 * 24 * 3600 * 1000;
/// ... and no more often than once per this long per member device, so that a large group
/// sees one refresh every few minutes at most (10,000 devices: every 35 days each).
pub const REFRESH_PER_DEVICE_MS: u64 = 5 * 60 * 1000;
/// Groups refreshed per receive, at most (the rest on the next receives).
const REFRESHES_PER_RECEIVE: usize = 4;
/// The encoding of a Welcome envelope: this version byte, the Welcome's length (u32
/// big-endian), the Welcome, then the ratchet tree.
const WELCOME_V1: u8 = 1;
/// The encoding of a group text: this version byte, the sender's clock (ms, u64
/// big-endian), then the UTF-8 text.
const TEXT_V1: u8 = 1;

/// A group as this device holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    /// The MLS group id, hex.
    pub id: String,
    /// Its name (from the encrypted group context).
    pub name: String,
    /// Its epoch.
    pub epoch: u64,
    /// Its member devices, by account then device.
    pub members: Vec<(String, u32)>,
}

/// Something that happened to a group, told by [`Client::receive_each`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupEvent {
    /// This device joined (a Welcome).
    Joined {
        /// The group's name.
        group: String,
        /// Who added this device.
        by: String,
    },
    /// Devices were added.
    Added {
        /// The group's name.
        group: String,
        /// The committer.
        by: String,
        /// The devices added.
        devices: Vec<(String, u32)>,
    },
    /// Devices were removed (or left).
    Removed {
        /// The group's name.
        group: String,
        /// The committer.
        by: String,
        /// The devices removed.
        devices: Vec<(String, u32)>,
    },
    /// The group was renamed.
    Renamed {
        /// The group's new name.
        group: String,
        /// The committer.
        by: String,
    },
    /// This device was removed from the group: it reads nothing more of it.
    RemovedMe {
        /// The group's name.
        group: String,
        /// The committer.
        by: String,
    },
    /// Devices were taken back in with new keys, replacing their old leaves: they had lost
    /// their state of the group (restored from an older copy; at their request), or their
    /// account was made again (a reinstall; its identity change is told as for 1:1).
    Rejoined {
        /// The group's name.
        group: String,
        /// The committer.
        by: String,
        /// The devices.
        devices: Vec<(String, u32)>,
    },
    /// This device, which had lost its state of the group, was taken back in: it reads and
    /// sends in the group again.
    RejoinedMe {
        /// The group's name.
        group: String,
        /// The committer.
        by: String,
    },
}

/// How a commit is made ([`Client::commit_and_post_as`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CommitMode {
    /// A change (add, remove, rename, a member's leaving): nothing to commit once another
    /// member's commit made it.
    Change,
    /// Takes the devices removed back in from their rejoin requests' KeyPackages: nothing to
    /// do once they are no longer members or no longer waiting.
    Rejoin,
    /// A key refresh: always commits (an update path, nothing else).
    Refresh,
}

/// How long this device waits between two refreshes of its keys in a group of `devices`.
fn refresh_interval(devices: usize) -> u64 {
    REFRESH_INTERVAL_MS.max((devices as u64).saturating_mul(REFRESH_PER_DEVICE_MS))
}

/// The next refresh of a group of `devices` after `from` (ms): its interval and up to an
/// eighth of it more, drawn at random, so that devices that joined together do not all
/// commit at once (the relay takes one commit per epoch; the others would retry).
fn next_refresh(from: u64, devices: usize) -> u64 {
    let interval = refresh_interval(devices);
    let jitter = rand_core::RngCore::next_u64(&mut crate::rng::OsRng) % (interval / 8).max(1);
    from.saturating_add(interval).saturating_add(jitter)
}

/// Notes that this device committed in the group now (its leaf has new keys), in the
/// caller's transaction: the next refresh is an interval away.
fn refreshed(conn: &rusqlite::Connection, id: &[u8], devices: usize) -> Result<()> {
    let now = now_ms();
    conn.execute(
        "INSERT INTO mls_refresh (group_id, refreshed_ms, due_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (group_id) DO UPDATE SET refreshed_ms = excluded.refreshed_ms, due_ms = excluded.due_ms",
        rusqlite::params![id, now as i64, next_refresh(now, devices) as i64],
    )?;
    Ok(())
}

/// The steps of sending a commit and of processing one, for the tests that crash the
/// client at each ([`crash_point`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CommitStep {
    /// The commit is made (in memory), nothing stored or sent.
    Made,
    /// The group state with the commit pending and the request are stored; not posted.
    Stored,
    /// The relay took the commit; its answer is not acted on.
    Posted,
    /// A received commit is processed (in memory); its transaction is not committed.
    Processed,
}

#[cfg(test)]
thread_local! {
    /// The step at which the client on this thread "crashes" next (tests only): the call
    /// returns an error there and the test drops the client, so nothing after the step runs
    /// (an open transaction rolls back, as SQLite's does at a kill).
    pub(crate) static CRASH_AT: std::cell::Cell<Option<CommitStep>> = const { std::cell::Cell::new(None) };
}

#[cfg(test)]
thread_local! {
    /// Group trees written to the store on this thread (tests only).
    pub(crate) static TREE_WRITES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// In tests, stops at `step` once when [`CRASH_AT`] names it; otherwise nothing.
#[allow(clippy::unnecessary_wraps)] // returns an error only in tests
fn crash_point(step: CommitStep) -> Result<()> {
    #[cfg(test)]
    if CRASH_AT.with(|c| c.get() == Some(step) && c.take().is_some()) {
        return Err(ClientError::Internal("injected crash"));
    }
    let _ = step;
    Ok(())
}

/// A fresh idempotency key.
fn random_key() -> Vec<u8> {
    let mut key = vec![0u8; api::limits::IDEMPOTENCY_KEY_BYTES];
    rand_core::RngCore::fill_bytes(&mut crate::rng::OsRng, &mut key);
    key
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn device_of(m: &MemberId) -> (String, u32) {
    let a = m.address();
    (a.account.to_string(), a.device.get())
}

fn pack_welcome(welcome: &[u8], tree: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + welcome.len() + tree.len());
    out.push(WELCOME_V1);
    out.extend_from_slice(&u32::try_from(welcome.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(welcome);
    out.extend_from_slice(tree);
    out
}

fn unpack_welcome(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&version, rest) = bytes.split_first()?;
    if version != WELCOME_V1 || rest.len() < 4 {
        return None;
    }
    let (len, rest) = rest.split_at(4);
    let len = usize::try_from(u32::from_be_bytes(len.try_into().ok()?)).ok()?;
    (rest.len() >= len).then(|| rest.split_at(len))
}

fn pack_text(text: &str, sent_time_ms: u64) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(9 + text.len()));
    out.push(TEXT_V1);
    out.extend_from_slice(&sent_time_ms.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

fn unpack_text(bytes: &[u8]) -> Option<(String, u64)> {
    let (&version, rest) = bytes.split_first()?;
    if version != TEXT_V1 || rest.len() < 8 {
        return None;
    }
    let (time, text) = rest.split_at(8);
    Some((String::from_utf8(text.to_vec()).ok()?, u64::from_be_bytes(time.try_into().ok()?)))
}

impl From<GroupError> for ClientError {
    fn from(e: GroupError) -> Self {
        ClientError::Group(Box::new(e))
    }
}

/// The group tables (created with the rest of the schema).
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS mls_groups (
    id BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    state BLOB NOT NULL,             -- the MLS state without the tree (secret)
    tree BLOB NOT NULL,              -- the ratchet tree (public)
    joined_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS mls_past_epochs (
    group_id BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    state BLOB NOT NULL,             -- an earlier epoch's secrets, for late messages (secret)
    PRIMARY KEY (group_id, epoch)
);
CREATE TABLE IF NOT EXISTS mls_key_packages (
    reference BLOB PRIMARY KEY,
    secret BLOB NOT NULL,            -- the KeyPackage's private keys (secret)
    last_resort INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS group_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id BLOB NOT NULL,
    sender TEXT NOT NULL,
    device INTEGER NOT NULL,
    outgoing INTEGER NOT NULL,
    text TEXT NOT NULL,
    server_time_ms INTEGER,
    sent_time_ms INTEGER NOT NULL,
    envelope_id INTEGER UNIQUE
);
CREATE INDEX IF NOT EXISTS group_messages_by_group ON group_messages (group_id, id);
CREATE TABLE IF NOT EXISTS mls_rejoins (
    group_id BLOB PRIMARY KEY,       -- a group this device must be taken back into
    ask TEXT,                        -- an account to ask besides the members this device knows
    asked_ms INTEGER NOT NULL,       -- when requests were last queued (0: not yet)
    asks INTEGER NOT NULL,           -- how many times
    key_package BLOB,                -- the KeyPackage the requests carry (public)
    key_package_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS mls_rejoin_requests (
    group_id BLOB NOT NULL,
    account TEXT NOT NULL,
    device INTEGER NOT NULL,
    key_package BLOB,                -- NULL once honoured (by this device or another member)
    honoured_ms INTEGER NOT NULL,
    PRIMARY KEY (group_id, account, device)
);
CREATE TABLE IF NOT EXISTS mls_refresh (
    group_id BLOB PRIMARY KEY,       -- when this device last replaced its leaf's keys there
    refreshed_ms INTEGER NOT NULL,   -- (a commit of its own, or joining)
    due_ms INTEGER NOT NULL          -- and when it does next (`Client::refresh_groups`)
);
CREATE TABLE IF NOT EXISTS mls_commit_pending (
    group_id BLOB PRIMARY KEY,       -- a commit of this device's the relay may have taken: the
    request BLOB NOT NULL,           -- request as posted (JSON, with its idempotency key), posted
    created_ms INTEGER NOT NULL      -- again before anything else is done in the group
);
CREATE TABLE IF NOT EXISTS mls_left (
    group_id BLOB PRIMARY KEY,       -- a group this device left: never asked to be taken back in
    left_ms INTEGER NOT NULL
);
";

/// Whether this device is waiting to be taken back into the group.
fn rejoining(conn: &rusqlite::Connection, id: &[u8]) -> Result<bool> {
    Ok(conn.query_row("SELECT EXISTS (SELECT 1 FROM mls_rejoins WHERE group_id = ?1)", [id], |r| r.get(0))?)
}

/// Notes that this device must be taken back into the group (in the caller's transaction);
/// `ask`: an account to ask besides the members. `false` when the table is full or the
/// device left the group.
fn mark_rejoin(conn: &rusqlite::Connection, id: &[u8], ask: Option<&str>) -> Result<bool> {
    let left: bool =
        conn.query_row("SELECT EXISTS (SELECT 1 FROM mls_left WHERE group_id = ?1)", [id], |r| r.get(0))?;
    let rows: i64 = conn.query_row("SELECT COUNT(*) FROM mls_rejoins", [], |r| r.get(0))?;
    if left || (rows >= MAX_REJOINS && !rejoining(conn, id)?) {
        return Ok(false);
    }
    conn.execute(
        "INSERT INTO mls_rejoins (group_id, ask, asked_ms, asks, key_package, key_package_ms)
         VALUES (?1, ?2, 0, 0, NULL, 0)
         ON CONFLICT (group_id) DO UPDATE SET ask = COALESCE(mls_rejoins.ask, excluded.ask)",
        rusqlite::params![id, ask],
    )?;
    Ok(true)
}

/// Every group this device holds must be taken back into (its data was restored from an
/// older copy: `restore.rs`), in the caller's transaction. Returns how many.
pub(crate) fn mark_all_rejoins(conn: &rusqlite::Connection) -> Result<usize> {
    let ids: Vec<Vec<u8>> = {
        let mut st = conn.prepare("SELECT id FROM mls_groups")?;
        let it = st.query_map([], |r| r.get(0))?;
        it.collect::<rusqlite::Result<_>>()?
    };
    for id in &ids {
        mark_rejoin(conn, id, None)?;
    }
    Ok(ids.len())
}

/// A member's request to be taken back into a group (payload kind 8), in the receive's
/// transaction: kept for [`Client::honour_rejoins`] when this device holds the group and
/// the KeyPackage names the sending device, unless that device's request in the group was
/// honoured within [`REJOIN_INTERVAL_MS`]. Whether the device is a member is checked when
/// it is honoured. Returns a notice for the user when the request is refused.
pub(crate) fn note_rejoin_request(
    conn: &rusqlite::Connection,
    (account, device): (&str, u32),
    id: &[u8],
    key_package: &[u8],
) -> Result<Option<String>> {
    let held: bool =
        conn.query_row("SELECT EXISTS (SELECT 1 FROM mls_groups WHERE id = ?1)", [id], |r| r.get(0))?;
    if !held {
        return Ok(None);
    }
    match GroupDevice::key_package_member(key_package) {
        Ok(m) if device_of(&m) == (account.to_owned(), device) => {}
        _ => {
            return Ok(Some(format!(
                "refused a request from {account} device {device} to be re-added to a group: its KeyPackage \
                 names another device or does not decode"
            )));
        }
    }
    let now = now_ms();
    let honoured: Option<i64> = conn
        .query_row(
            "SELECT honoured_ms FROM mls_rejoin_requests WHERE group_id = ?1 AND account = ?2 AND device = ?3",
            rusqlite::params![id, account, device],
            |r| r.get(0),
        )
        .optional()?;
    if honoured.is_some_and(|t| (t as u64) <= now && now - (t as u64) < REJOIN_INTERVAL_MS) {
        return Ok(None);
    }
    conn.execute(
        "INSERT INTO mls_rejoin_requests (group_id, account, device, key_package, honoured_ms)
         VALUES (?1, ?2, ?3, ?4, 0)
         ON CONFLICT (group_id, account, device) DO UPDATE SET key_package = excluded.key_package",
        rusqlite::params![id, account, device, key_package],
    )?;
    Ok(None)
}

/// Marks the requests of devices a commit took back in as honoured.
fn rejoins_honoured(conn: &rusqlite::Connection, id: &[u8], devices: &[MemberId]) -> Result<()> {
    for m in devices {
        let (account, device) = device_of(m);
        conn.execute(
            "UPDATE mls_rejoin_requests SET key_package = NULL, honoured_ms = ?4
             WHERE group_id = ?1 AND account = ?2 AND device = ?3",
            rusqlite::params![id, account, device, now_ms() as i64],
        )?;
    }
    Ok(())
}

/// Whether a rejoin request of `who` in the group still waits to be honoured.
fn rejoin_waiting(conn: &rusqlite::Connection, id: &[u8], who: &MemberId) -> Result<bool> {
    let (account, device) = device_of(who);
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM mls_rejoin_requests WHERE group_id = ?1 AND account = ?2 AND device = ?3
         AND key_package IS NOT NULL)",
        rusqlite::params![id, account, device],
        |r| r.get(0),
    )?)
}

/// Stores a group's state (replacing what was stored), in the caller's transaction, and
/// raises the state counter (`restore.rs`): a copy of the store from before this change
/// must be found out, since sending from its group state would reuse message keys.
fn put_group(conn: &rusqlite::Connection, name: &str, group: &mut OpenGroup) -> Result<()> {
    store::raise_state_counter(conn)?;
    let stored = group.save()?;
    let held: Option<i64> = conn
        .query_row("SELECT epoch FROM mls_groups WHERE id = ?1", [&stored.group_id], |r| r.get(0))
        .optional()?;
    if held == Some(stored.epoch as i64) {
        // The tree changes only with the epoch (a commit): a message sent or received
        // rewrites the secret state alone, not the tree (megabytes in a large group).
        conn.execute(
            "UPDATE mls_groups SET name = ?2, state = ?3 WHERE id = ?1",
            rusqlite::params![stored.group_id, name, stored.state.as_slice()],
        )?;
    } else {
        let tree = group.tree()?;
        #[cfg(test)]
        TREE_WRITES.with(|n| n.set(n.get() + 1));
        conn.execute(
            "INSERT INTO mls_groups (id, name, epoch, state, tree, joined_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, epoch = excluded.epoch, state = excluded.state,
             tree = excluded.tree",
            rusqlite::params![
                stored.group_id,
                name,
                stored.epoch as i64,
                stored.state.as_slice(),
                tree,
                now_ms() as i64
            ],
        )?;
    }
    if held.is_none() {
        // Joined now: its leaf's keys are the KeyPackage's, the first refresh an interval on.
        let now = now_ms();
        conn.execute(
            "INSERT INTO mls_refresh (group_id, refreshed_ms, due_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (group_id) DO NOTHING",
            rusqlite::params![stored.group_id, now as i64, next_refresh(now, group.members().len()) as i64],
        )?;
    }
    conn.execute("DELETE FROM mls_past_epochs WHERE group_id = ?1", [&stored.group_id])?;
    for (epoch, state) in &stored.past_epochs {
        conn.execute(
            "INSERT INTO mls_past_epochs (group_id, epoch, state) VALUES (?1, ?2, ?3)",
            rusqlite::params![stored.group_id, *epoch as i64, state.as_slice()],
        )?;
    }
    Ok(())
}

fn delete_group(conn: &rusqlite::Connection, id: &[u8]) -> Result<()> {
    conn.execute("DELETE FROM mls_groups WHERE id = ?1", [id])?;
    conn.execute("DELETE FROM mls_past_epochs WHERE group_id = ?1", [id])?;
    conn.execute("DELETE FROM mls_refresh WHERE group_id = ?1", [id])?;
    conn.execute("DELETE FROM mls_commit_pending WHERE group_id = ?1", [id])?;
    Ok(())
}

fn put_group_message(
    conn: &rusqlite::Connection,
    group: &[u8],
    (sender, device): (&str, u32),
    outgoing: bool,
    text: &str,
    times: (Option<u64>, u64),
    envelope_id: Option<u64>,
) -> Result<i64> {
    conn.execute(
        "INSERT INTO group_messages (group_id, sender, device, outgoing, text, server_time_ms, sent_time_ms, envelope_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        rusqlite::params![
            group,
            sender,
            device,
            outgoing,
            text,
            times.0.map(|t| t as i64),
            times.1 as i64,
            envelope_id.map(|i| i as i64)
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

/// One entry of a group's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupHistoryEntry {
    /// The sending account.
    pub from: String,
    /// Its device.
    pub device: u32,
    /// Sent by this account (this device or another of its devices).
    pub outgoing: bool,
    /// The text.
    pub text: String,
    /// When the relay accepted it (ms since the Unix epoch), if known.
    pub server_time_ms: Option<u64>,
    /// When the sender says it sent it (ms since the Unix epoch).
    pub sent_time_ms: u64,
}

/// What processing one group envelope did (for the receive loop).
pub(crate) enum GroupOutcome {
    /// A text, stored.
    Message(crate::messaging::ReceivedMessage),
    /// An event, stored.
    Event(GroupEvent),
    /// Nothing to show (already processed, own message, or dropped with a warning).
    Done,
    /// Held on the relay for the next receive (a member device the key transparency
    /// directory has not published yet), with everything after it in the same group.
    Held,
}

impl Client {
    /// The directory group members are checked against: this account's and every
    /// contact's accepted (verified) device list.
    fn group_directory(&self) -> Result<Directory> {
        let directory = Directory::new();
        for name in store::contact_names(self.store.conn())? {
            let Ok(name) = AccountName::new(&name) else { continue };
            if let Some((_, list)) = self.stored_list(&name)? {
                directory.insert(&list);
            }
        }
        Ok(directory)
    }

    fn group_device(&self, directory: &Directory) -> GroupDevice {
        GroupDevice::new(&self.me.identity, &self.me.address(), SUITE, directory.clone())
    }

    /// Fetches (through the key transparency directory) and adds the lists a group
    /// operation asked for.
    async fn fetch_lists(&mut self, directory: &Directory, names: Vec<AccountName>) -> Result<()> {
        for name in names {
            let list = self.refresh_contact(&name).await?;
            directory.insert(&list);
        }
        Ok(())
    }

    /// The stored group named `name` (its name, or its id in hex or a prefix of it).
    pub(crate) fn find_group(&self, name: &str) -> Result<(Vec<u8>, String)> {
        let rows: Vec<(Vec<u8>, String)> = {
            let mut st =
                self.store.conn().prepare("SELECT id, name FROM mls_groups ORDER BY joined_ms, id")?;
            let it = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            it.collect::<rusqlite::Result<_>>()?
        };
        let by_name: Vec<&(Vec<u8>, String)> = rows.iter().filter(|(_, n)| n == name).collect();
        if let [one] = by_name.as_slice() {
            return Ok((*one).clone());
        }
        let wanted = name.to_ascii_lowercase();
        let by_id: Vec<&(Vec<u8>, String)> =
            rows.iter().filter(|(id, _)| wanted.len() >= 4 && hex(id).starts_with(&wanted)).collect();
        if let [one] = by_id.as_slice() {
            return Ok((*one).clone());
        }
        if by_name.len() > 1 {
            return Err(ClientError::NotFound(format!(
                "{} groups are named {name}: name one by its id (`tacit group list` shows them)",
                by_name.len()
            )));
        }
        Err(ClientError::NotFound(format!("no group named {name} (`tacit group list` shows yours)")))
    }

    /// The stored name of the group `id` (its id in hex when it is not held).
    fn find_group_name(&self, id: &[u8]) -> Result<String> {
        let name: Option<String> = self
            .store
            .conn()
            .query_row("SELECT name FROM mls_groups WHERE id = ?1", [id], |r| r.get(0))
            .optional()?;
        Ok(name.unwrap_or_else(|| hex(id)))
    }

    fn open_group(&self, device: &GroupDevice, id: &[u8]) -> Result<Option<(OpenGroup, String)>> {
        let conn = self.store.conn();
        let row: Option<(String, i64, Vec<u8>, Vec<u8>)> = conn
            .query_row("SELECT name, epoch, state, tree FROM mls_groups WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let Some((name, epoch, state, tree)) = row else { return Ok(None) };
        let mut st =
            conn.prepare("SELECT epoch, state FROM mls_past_epochs WHERE group_id = ?1 ORDER BY epoch")?;
        let past_epochs = st
            .query_map([id], |r| Ok((r.get::<_, i64>(0)? as u64, Zeroizing::new(r.get::<_, Vec<u8>>(1)?))))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let stored = StoredGroup {
            group_id: id.to_vec(),
            epoch: epoch as u64,
            state: Zeroizing::new(state),
            past_epochs,
        };
        Ok(Some((device.load(&stored, &tree)?, name)))
    }

    fn info(id: &[u8], name: &str, group: &OpenGroup) -> GroupInfo {
        let mut members: Vec<(String, u32)> = group.members().values().map(device_of).collect();
        members.sort();
        GroupInfo { id: hex(id), name: name.to_owned(), epoch: group.epoch(), members }
    }

    /// Keeps [`KEY_PACKAGE_TARGET`] KeyPackages and a last-resort one on the relay, their
    /// private halves stored first.
    pub async fn maintain_key_packages(&mut self) -> Result<()> {
        // Private halves of KeyPackages past their lifetime: no Welcome can use them.
        self.store.conn().execute(
            "DELETE FROM mls_key_packages WHERE created_ms < ?1",
            [now_ms().saturating_sub(KEY_PACKAGE_LIFETIME_MS) as i64],
        )?;
        let status = self.api.key_package_status().await?;
        if !status.low {
            return Ok(());
        }
        let directory = Directory::new();
        let device = self.group_device(&directory);
        let wanted = KEY_PACKAGE_TARGET.saturating_sub(status.available);
        let mut upload = api::KeyPackageUpload::default();
        let tx = self.store.tx()?;
        let add = |last_resort: bool| -> Result<Vec<u8>> {
            let kp = device.new_key_package(now())?;
            tx.execute(
                "INSERT INTO mls_key_packages (reference, secret, last_resort, created_ms) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![kp.reference, kp.secret.as_slice(), last_resort, now_ms() as i64],
            )?;
            Ok(kp.public)
        };
        for _ in 0..wanted {
            upload.key_packages.push(add(false)?.into());
        }
        if !status.last_resort {
            upload.last_resort = Some(add(true)?.into());
        }
        tx.commit()?;
        self.api.upload_key_packages(&upload).await?;
        Ok(())
    }

    /// The groups this device is in.
    pub fn groups(&self) -> Result<Vec<GroupInfo>> {
        let directory = self.group_directory()?;
        let device = self.group_device(&directory);
        let ids: Vec<Vec<u8>> = {
            let mut st = self.store.conn().prepare("SELECT id FROM mls_groups ORDER BY joined_ms, id")?;
            let it = st.query_map([], |r| r.get(0))?;
            it.collect::<rusqlite::Result<_>>()?
        };
        let mut out = Vec::new();
        for id in ids {
            if let Some((g, name)) = self.open_group(&device, &id)? {
                out.push(Self::info(&id, &name, &g));
            }
        }
        Ok(out)
    }

    /// One group, by name or id.
    pub fn group(&self, name: &str) -> Result<GroupInfo> {
        let (id, _) = self.find_group(name)?;
        let directory = self.group_directory()?;
        let device = self.group_device(&directory);
        let (g, name) = self.open_group(&device, &id)?.ok_or(ClientError::Internal("group gone"))?;
        Ok(Self::info(&id, &name, &g))
    }

    /// A group's messages, oldest first.
    pub fn group_history(&self, name: &str) -> Result<Vec<GroupHistoryEntry>> {
        let (id, _) = self.find_group(name)?;
        let mut st = self.store.conn().prepare(
            "SELECT sender, device, outgoing, text, server_time_ms, sent_time_ms FROM group_messages
             WHERE group_id = ?1 ORDER BY id",
        )?;
        let rows = st.query_map([&id], |r| {
            Ok(GroupHistoryEntry {
                from: r.get(0)?,
                device: r.get(1)?,
                outgoing: r.get(2)?,
                text: r.get(3)?,
                server_time_ms: r.get::<_, Option<i64>>(4)?.map(|t| t as u64),
                sent_time_ms: r.get::<_, i64>(5)? as u64,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The verified lists of `accounts` (fetched through key transparency), put in
    /// `directory`. A verified contact whose identity changed is
    /// [`ClientError::IdentityChanged`], as for a 1:1 send.
    async fn verified_lists(
        &mut self,
        directory: &Directory,
        accounts: &[AccountName],
    ) -> Result<Vec<tacit_protocol::DeviceList>> {
        let mut lists = Vec::with_capacity(accounts.len());
        for account in accounts {
            let list = self.refresh_contact(account).await?;
            directory.insert(&list);
            lists.push(list);
        }
        Ok(lists)
    }

    /// One KeyPackage of every device of `lists`, this device and the devices in `present`
    /// excepted (no KeyPackage is taken from the relay for them); `(KeyPackages, devices)`.
    /// They are claimed [`api::limits::MAX_KEY_PACKAGE_CLAIM`] devices per request (a relay
    /// without claims is asked device by device).
    async fn key_packages_of(
        &mut self,
        lists: &[tacit_protocol::DeviceList],
        present: &HashSet<(String, u32)>,
    ) -> Result<(Vec<Vec<u8>>, Vec<api::GroupMember>)> {
        let mut wanted = Vec::new();
        let mut skipped = HashSet::new();
        for list in lists {
            let account = list.account();
            for entry in list.devices() {
                let device = entry.id.get();
                if *account == self.me.name && device == self.me.device.get() {
                    continue;
                }
                if present.contains(&(account.to_string(), device)) {
                    skipped.insert(account.to_string());
                    continue;
                }
                wanted.push(api::GroupMember { account: account.to_string(), device });
            }
        }
        let mut got: Vec<Option<Vec<u8>>> = Vec::with_capacity(wanted.len());
        for chunk in wanted.chunks(api::limits::MAX_KEY_PACKAGE_CLAIM) {
            let claim = api::KeyPackageClaim { devices: chunk.to_vec() };
            match self.api.claim_key_packages(&claim).await {
                Ok(r)
                    if r.key_packages.len() == chunk.len()
                        && r.key_packages
                            .iter()
                            .zip(chunk)
                            .all(|(k, d)| k.account == d.account && k.device == d.device) =>
                {
                    got.extend(r.key_packages.into_iter().map(|k| k.key_package.map(|b| b.0)));
                }
                Ok(_) => {
                    return Err(ClientError::Network(
                        "the relay answered a KeyPackage claim for other devices than those asked".into(),
                    ));
                }
                // A relay from before claims: the route is unknown.
                Err(ClientError::NotFound(_)) => {
                    for d in chunk {
                        got.push(match self.api.take_key_package(&d.account, d.device).await {
                            Ok(r) => Some(r.key_package.0),
                            Err(ClientError::NotFound(_)) => None,
                            Err(e) => return Err(e),
                        });
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let mut kps = Vec::new();
        let mut devices = Vec::new();
        let mut with_one = HashSet::new();
        for (d, kp) in wanted.into_iter().zip(got) {
            match kp {
                Some(kp) => {
                    with_one.insert(d.account.clone());
                    kps.push(kp);
                    devices.push(d);
                }
                None => self.warnings.push(format!(
                    "{} device {} cannot join groups yet (no KeyPackages on the server: it needs a newer tacit); added without it",
                    d.account, d.device
                )),
            }
        }
        for list in lists {
            let account = list.account().to_string();
            if *list.account() != self.me.name && !with_one.contains(&account) && !skipped.contains(&account)
            {
                return Err(ClientError::NotFound(format!(
                    "none of {account}'s devices can join groups yet (no KeyPackages on the server)"
                )));
            }
        }
        Ok((kps, devices))
    }

    /// Commits `key_packages` (adding `added`) and removing `remove` in the group, posts it,
    /// and merges it once the relay took it; on `409 stale_epoch`, processes what is waiting
    /// and commits again on top.
    #[allow(clippy::too_many_arguments)]
    async fn commit_and_post(
        &mut self,
        directory: &Directory,
        id: &[u8],
        key_packages: &[Vec<u8>],
        added: &[api::GroupMember],
        remove: &[MemberId],
        meta: Option<&GroupMeta>,
        fresh: Option<(OpenGroup, String)>,
    ) -> Result<GroupInfo> {
        self.commit_and_post_as(directory, id, key_packages, added, remove, meta, fresh, CommitMode::Change)
            .await
    }

    /// [`Self::commit_and_post`], made as `mode` says ([`CommitMode`]). Every commit this
    /// device makes carries an update path (its leaf's keys replaced): the next scheduled
    /// refresh is an interval after it.
    #[allow(clippy::too_many_arguments)]
    async fn commit_and_post_as(
        &mut self,
        directory: &Directory,
        id: &[u8],
        key_packages: &[Vec<u8>],
        added: &[api::GroupMember],
        remove: &[MemberId],
        meta: Option<&GroupMeta>,
        fresh: Option<(OpenGroup, String)>,
        mode: CommitMode,
    ) -> Result<GroupInfo> {
        if rejoining(self.store.conn(), id)? {
            let group = match &fresh {
                Some((_, name)) => name.clone(),
                None => self.find_group_name(id)?,
            };
            return Err(ClientError::GroupRejoining { group });
        }
        // A group state handed in is out of date once a pending commit merged.
        let mut fresh = if self.settle_commit(id).await? { None } else { fresh };
        if fresh.is_none() {
            // What waits first: a message sent before this commit (from a device it removes,
            // say) can no longer be attributed once the commit is merged.
            self.receive_inner_now().await?;
        }
        for _ in 0..COMMIT_ATTEMPTS {
            let device = self.group_device(directory);
            let (mut group, name) = match fresh.take() {
                Some(g) => g,
                None => self.open_group(&device, id)?.ok_or(ClientError::Internal("group gone"))?,
            };
            let members = group.members();
            // Devices the winner of an earlier round added or removed already are left out.
            let still: Vec<MemberId> =
                remove.iter().filter(|m| members.values().any(|x| x == *m)).cloned().collect();
            // A device whose old leaf this commit removes may be added again (a new leaf).
            let present: HashSet<(String, u32)> =
                members.values().filter(|m| !still.contains(m)).map(device_of).collect();
            let (remove, key_packages, added): (Vec<MemberId>, Vec<Vec<u8>>, Vec<api::GroupMember>) =
                if mode == CommitMode::Rejoin {
                    let mut waiting = still.len() == remove.len();
                    for m in remove {
                        waiting = waiting && rejoin_waiting(self.store.conn(), id, m)?;
                    }
                    if !waiting {
                        return Ok(Self::info(id, &name, &group));
                    }
                    (still, key_packages.to_vec(), added.to_vec())
                } else {
                    let (k, a) = key_packages
                        .iter()
                        .zip(added)
                        .filter(|(_, d)| !present.contains(&(d.account.clone(), d.device)))
                        .map(|(k, d)| (k.clone(), d.clone()))
                        .unzip();
                    (still, k, a)
                };
            if mode != CommitMode::Refresh
                && key_packages.is_empty()
                && remove.is_empty()
                && meta.is_none()
                && !group.commit_required()
            {
                // Nothing left to do: another member's commit did it.
                return Ok(Self::info(id, &name, &group));
            }
            let key_packages = key_packages.as_slice();
            let added = added.as_slice();
            let mut fetched = Vec::new();
            let commit = loop {
                match group.commit(key_packages, &remove, meta) {
                    Err(GroupError::NeedDeviceLists(names))
                        if more_lists(self, directory, &mut fetched, &names).await? => {}
                    other => break other?,
                }
            };
            let req = api::GroupCommitRequest {
                commit: commit.commit.clone().into(),
                welcome: match (&commit.welcome, &commit.tree) {
                    (Some(w), Some(t)) => Some(pack_welcome(w, t).into()),
                    _ => None,
                },
                added: if commit.welcome.is_some() { added.to_vec() } else { Vec::new() },
                removed: remove
                    .iter()
                    .map(|m| {
                        let (account, device) = device_of(m);
                        api::GroupMember { account, device }
                    })
                    .collect(),
                idempotency_key: Some(random_key().into()),
                // The group state changes when the commit merges, after the relay took it:
                // the counter is raised first, so a copy from before is found out.
                state_counter: Some(store::raise_state_counter(self.store.conn())?),
            };
            crash_point(CommitStep::Made)?;
            // The state with the commit pending and the request, stored before the request
            // leaves: a crash (or a lost answer) after the relay took it must not leave this
            // device an epoch behind, so the same request is posted again first thing
            // ([`Self::settle_commit`]), and the relay answers it as it did the first time.
            let stored = serde_json::to_vec(&req).map_err(|_| ClientError::Internal("commit request"))?;
            let tx = self.store.tx()?;
            put_group(&tx, &name, &mut group)?;
            tx.execute(
                "INSERT INTO mls_commit_pending (group_id, request, created_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (group_id) DO UPDATE SET request = excluded.request, created_ms = excluded.created_ms",
                rusqlite::params![id, stored, now_ms() as i64],
            )?;
            tx.commit()?;
            crash_point(CommitStep::Stored)?;
            let posted = self.post_commit(id, &req).await;
            if posted.is_ok() {
                crash_point(CommitStep::Posted)?;
            }
            match posted {
                Ok(()) => {
                    let info = self.merge_own_commit(id, group)?;
                    return Ok(GroupInfo {
                        name: meta.map_or(info.name.clone(), |m| m.name.clone()),
                        ..info
                    });
                }
                Err(ClientError::Server { code: Some(api::ErrorCode::StaleEpoch), .. }) => {
                    self.drop_own_commit(id, &name, group)?;
                    // The winner (and what came with it) first; the next round commits on top.
                    self.receive_inner_now().await?;
                }
                // The relay may have taken it: kept pending, posted again before anything
                // else is done in the group.
                Err(e) if crate::restore::transient(&e) => return Err(e),
                Err(e) if group.epoch() == 0 => {
                    // A group being created that the relay refused: not kept.
                    delete_group(self.store.conn(), id)?;
                    return Err(e);
                }
                Err(e) => {
                    self.drop_own_commit(id, &name, group)?;
                    return Err(e);
                }
            }
        }
        Err(ClientError::Network("other members kept changing the group; run the command again".into()))
    }

    /// Posts a commit, and the same request (same idempotency key) again while the answer
    /// is lost: the relay answers a retry of a commit it took as it did the first time.
    async fn post_commit(&mut self, id: &[u8], req: &api::GroupCommitRequest) -> Result<()> {
        let mut posted = self.api.group_commit(id, req).await;
        let mut wait = Duration::from_millis(250);
        for _ in 0..COMMIT_RESENDS {
            if !matches!(&posted, Err(ClientError::Network(_)) | Err(ClientError::Server { status: 503, .. }))
            {
                break;
            }
            tokio::time::sleep(wait).await;
            wait *= 2;
            posted = self.api.group_commit(id, req).await;
        }
        posted.map(|_| ())
    }

    /// The relay took this device's pending commit: the group moves to its epoch, stored
    /// with the pending request gone, in one transaction.
    fn merge_own_commit(&mut self, id: &[u8], mut group: OpenGroup) -> Result<GroupInfo> {
        let summary = group.merge_pending()?;
        let name = group.meta()?.name;
        let tx = self.store.tx()?;
        put_group(&tx, &name, &mut group)?;
        refreshed(&tx, id, group.members().len())?;
        rejoins_honoured(&tx, id, &summary.rejoined)?;
        tx.execute("DELETE FROM mls_commit_pending WHERE group_id = ?1", [id])?;
        tx.commit()?;
        Ok(Self::info(id, &name, &group))
    }

    /// The relay refused this device's pending commit: the group stays in its epoch,
    /// stored without it.
    fn drop_own_commit(&mut self, id: &[u8], name: &str, mut group: OpenGroup) -> Result<()> {
        group.discard_pending();
        let tx = self.store.tx()?;
        put_group(&tx, name, &mut group)?;
        tx.execute("DELETE FROM mls_commit_pending WHERE group_id = ?1", [id])?;
        tx.commit()?;
        Ok(())
    }

    /// Settles a commit of this device's left pending by a crash or a lost answer: posts
    /// the stored request again (the relay answers a retry within 10 minutes as it did the
    /// first time) and merges or drops it. Run before anything else is done in the group
    /// (a send, a commit, processing what arrives). A transient failure is returned: the
    /// commit stays pending. Past the relay's 10 minutes, a commit it took is answered
    /// `stale_epoch` and dropped here; the device is then behind and is taken back in by
    /// the rejoin of §13.
    /// `true` when there was one.
    pub(crate) async fn settle_commit(&mut self, id: &[u8]) -> Result<bool> {
        let stored: Option<Vec<u8>> = self
            .store
            .conn()
            .query_row("SELECT request FROM mls_commit_pending WHERE group_id = ?1", [id], |r| r.get(0))
            .optional()?;
        let Some(stored) = stored else { return Ok(false) };
        // The group is opened once, after the post (its state is megabytes in a large group).
        let held: Option<String> = self
            .store
            .conn()
            .query_row("SELECT name FROM mls_groups WHERE id = ?1", [id], |r| r.get(0))
            .optional()?;
        let (Ok(req), Some(name)) = (serde_json::from_slice::<api::GroupCommitRequest>(&stored), held) else {
            self.store.conn().execute("DELETE FROM mls_commit_pending WHERE group_id = ?1", [id])?;
            return Ok(true);
        };
        let posted = self.post_commit(id, &req).await;
        let directory = self.group_directory()?;
        let device = self.group_device(&directory);
        let (group, _) = self.open_group(&device, id)?.ok_or(ClientError::Internal("group gone"))?;
        match posted {
            Ok(()) => self.merge_own_commit(id, group).map(|_| true),
            Err(e) if crate::restore::transient(&e) => Err(e),
            Err(e) => {
                self.drop_own_commit(id, &name, group)?;
                self.warnings.push(format!("a change to group {name} did not go through: {e}"));
                Ok(true)
            }
        }
    }

    /// Settles every commit of this device's left pending ([`Self::settle_commit`]); one
    /// that cannot be settled now (the relay unreachable) is left for the next receive.
    pub(crate) async fn settle_commits(&mut self) -> Result<()> {
        let ids: Vec<Vec<u8>> = {
            let mut st =
                self.store.conn().prepare("SELECT group_id FROM mls_commit_pending ORDER BY created_ms")?;
            let it = st.query_map([], |r| r.get(0))?;
            it.collect::<rusqlite::Result<_>>()?
        };
        for id in ids {
            match self.settle_commit(&id).await {
                Ok(_) => {}
                Err(e) if crate::restore::transient(&e) => {
                    self.warn_once(format!(
                        "a change this device made to a group is not settled yet ({e}); the next receive tries again"
                    ));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Processes what waits in the mailbox now (the winning commit of a lost race).
    async fn receive_inner_now(&mut self) -> Result<()> {
        let got = self.receive(Duration::ZERO).await?;
        if !got.is_empty() {
            self.warnings.push(format!(
                "{} message(s) arrived meanwhile and are stored (`tacit history` shows them)",
                got.len()
            ));
        }
        Ok(())
    }

    /// Creates the group `name` with every device of `members` and this account's other
    /// devices.
    pub async fn create_group(&mut self, name: &str, members: &[&str]) -> Result<GroupInfo> {
        self.online().await?;
        let meta = GroupMeta::new(name, "", vec![self.me.name.clone()]).map_err(GroupError::from)?;
        let mut accounts = vec![self.me.name.clone()];
        for m in members {
            let m = AccountName::new(m)?;
            if !accounts.contains(&m) {
                accounts.push(m);
            }
        }
        let directory = self.group_directory()?;
        let lists = self.verified_lists(&directory, &accounts).await?;
        let (kps, added) = self.key_packages_of(&lists, &HashSet::new()).await?;
        let device = self.group_device(&directory);
        let mut group = device.create(&meta, now())?;
        let id = group.id().to_vec();
        if kps.is_empty() {
            // Alone for now: the relay learns of the group with its first commit.
            let tx = self.store.tx()?;
            put_group(&tx, name, &mut group)?;
            tx.commit()?;
            return Ok(Self::info(&id, name, &group));
        }
        self.commit_and_post(&directory, &id, &kps, &added, &[], None, Some((group, name.to_owned()))).await
    }

    /// Adds every device of `members` to the group that is not in it already. A leaf of
    /// theirs that their current list no longer has with its key (a device revoked since,
    /// or the account made again: a reinstall, whose identity change is told as for 1:1) is
    /// removed in the same commit, and the device added again if the list has it.
    pub async fn group_add(&mut self, group: &str, members: &[&str]) -> Result<GroupInfo> {
        self.online().await?;
        let (id, _) = self.find_group(group)?;
        let accounts: Vec<AccountName> =
            members.iter().map(|m| AccountName::new(m)).collect::<std::result::Result<_, _>>()?;
        let directory = self.group_directory()?;
        let lists = self.verified_lists(&directory, &accounts).await?;
        let device = self.group_device(&directory);
        let (g, _) = self.open_group(&device, &id)?.ok_or(ClientError::Internal("group gone"))?;
        let stale = g.unlisted(&accounts);
        let present: HashSet<(String, u32)> =
            g.members().values().filter(|m| !stale.contains(m)).map(device_of).collect();
        drop(g);
        let (kps, added) = self.key_packages_of(&lists, &present).await?;
        if kps.is_empty() && stale.is_empty() {
            // A change the directory has not published yet (an account made again just
            // now) looks like nothing to do: say so, and that it passes.
            if let Some(a) = accounts.iter().find(|a| self.kt_may_be_unpublished(a)) {
                return Err(ClientError::Network(format!(
                    "{a}'s keys changed on the server and the key transparency directory has not published \
                     them yet; run the command again in a minute"
                )));
            }
            return Err(ClientError::NotFound("every device named is in the group already".into()));
        }
        self.commit_and_post(&directory, &id, &kps, &added, &stale, None, None).await
    }

    /// Renames the group (a commit of its metadata: the name lives in the encrypted group
    /// context, never on the relay).
    pub async fn group_rename(&mut self, group: &str, name: &str) -> Result<GroupInfo> {
        self.online().await?;
        let (id, _) = self.find_group(group)?;
        let directory = self.group_directory()?;
        let device = self.group_device(&directory);
        let (g, _) = self.open_group(&device, &id)?.ok_or(ClientError::Internal("group gone"))?;
        let current = g.meta()?;
        drop(g);
        let meta = GroupMeta::new(name, &current.avatar, current.admins).map_err(GroupError::from)?;
        self.commit_and_post(&directory, &id, &[], &[], &[], Some(&meta), None).await
    }

    /// Keeps this account's devices in every group equal to its device list: a device
    /// linked since is added (once it has KeyPackages on the relay; until then the next
    /// receive tries again), a device revoked since is removed. Run at the end of a receive
    /// when the own list changed since the groups last matched it. Another device of the
    /// account doing the same at once loses its epoch and finds nothing left to do.
    pub(crate) async fn reconcile_own_devices(&mut self) -> Result<()> {
        if self.reconciling {
            return Ok(());
        }
        self.reconciling = true;
        let out = self.reconcile_inner().await;
        self.reconciling = false;
        out
    }

    async fn reconcile_inner(&mut self) -> Result<()> {
        let has_groups: bool =
            self.store.conn().query_row("SELECT EXISTS (SELECT 1 FROM mls_groups)", [], |r| r.get(0))?;
        if !has_groups {
            return Ok(());
        }
        let list = self.own_list().await?;
        let bytes = list.to_bytes();
        let synced = self.store.meta(GROUPS_SYNCED_LIST)?;
        if synced.as_deref().map(Vec::as_slice) == Some(bytes.as_slice()) {
            return Ok(());
        }
        let ids: Vec<Vec<u8>> = {
            let mut st = self.store.conn().prepare("SELECT id FROM mls_groups ORDER BY joined_ms, id")?;
            let it = st.query_map([], |r| r.get(0))?;
            it.collect::<rusqlite::Result<_>>()?
        };
        let mut complete = true;
        for id in ids {
            if rejoining(self.store.conn(), &id)? {
                // Its state is out of date: the members take care of this account's devices
                // meanwhile (and the list is matched again once it is back in).
                complete = false;
                continue;
            }
            let directory = self.group_directory()?;
            directory.insert(&list);
            let device = self.group_device(&directory);
            let Some((g, _)) = self.open_group(&device, &id)? else { continue };
            let mine: Vec<MemberId> =
                g.members().into_values().filter(|m| m.address().account == self.me.name).collect();
            drop(g);
            let listed = |m: &MemberId| list.devices().iter().any(|e| e.id == m.address().device);
            let remove: Vec<MemberId> = mine.iter().filter(|m| !listed(m)).cloned().collect();
            let mut kps = Vec::new();
            let mut added = Vec::new();
            for entry in list.devices() {
                if mine.iter().any(|m| m.address().device == entry.id) {
                    continue;
                }
                match self.api.take_key_package(self.me.name.as_str(), entry.id.get()).await {
                    Ok(r) => {
                        kps.push(r.key_package.0);
                        added.push(api::GroupMember {
                            account: self.me.name.to_string(),
                            device: entry.id.get(),
                        });
                    }
                    // Linked, but not signed in yet: the next receive tries again.
                    Err(ClientError::NotFound(_)) => complete = false,
                    Err(e) => return Err(e),
                }
            }
            if kps.is_empty() && remove.is_empty() {
                continue;
            }
            Box::pin(self.commit_and_post(&directory, &id, &kps, &added, &remove, None, None)).await?;
        }
        if complete {
            store::set_meta(self.store.conn(), GROUPS_SYNCED_LIST, &bytes)?;
        }
        Ok(())
    }

    /// Removes every device of `members` from the group.
    pub async fn group_remove(&mut self, group: &str, members: &[&str]) -> Result<GroupInfo> {
        self.online().await?;
        let (id, _) = self.find_group(group)?;
        let directory = self.group_directory()?;
        let device = self.group_device(&directory);
        let (g, _) = self.open_group(&device, &id)?.ok_or(ClientError::Internal("group gone"))?;
        let names: Vec<AccountName> =
            members.iter().map(|m| AccountName::new(m)).collect::<std::result::Result<_, _>>()?;
        let remove: Vec<MemberId> = g
            .members()
            .values()
            .filter(|m| names.contains(&m.address().account) && **m != *device.member())
            .cloned()
            .collect();
        drop(g);
        if remove.is_empty() {
            return Err(ClientError::NotFound("none of them is in the group".into()));
        }
        self.commit_and_post(&directory, &id, &[], &[], &remove, None, None).await
    }

    /// Sends `text` to the group.
    pub async fn group_send(&mut self, group: &str, text: &str) -> Result<crate::messaging::SentMessage> {
        if text.len() > crate::payload::MAX_TEXT_BYTES {
            return Err(ClientError::MessageTooLong { len: text.len(), max: crate::payload::MAX_TEXT_BYTES });
        }
        self.online().await?;
        let (id, name) = self.find_group(group)?;
        for _ in 0..COMMIT_ATTEMPTS {
            // Also after a receive between rounds, which may have found the state behind.
            if rejoining(self.store.conn(), &id)? {
                return Err(ClientError::GroupRejoining { group: name });
            }
            self.settle_commit(&id).await?;
            let directory = self.group_directory()?;
            let device = self.group_device(&directory);
            let sent_time_ms = now_ms();
            let (content, row, devices) = {
                let _guard = self.lock_state().await?;
                let (mut g, name) =
                    self.open_group(&device, &id)?.ok_or(ClientError::Internal("group gone"))?;
                if g.commit_required() {
                    drop(g);
                    drop(_guard);
                    if !self.group_proposals.contains(&id) {
                        self.group_proposals.push(id.clone());
                    }
                    self.commit_pending_proposals().await?;
                    continue;
                }
                let content = g.encrypt(&pack_text(text, sent_time_ms))?;
                let devices = u32::try_from(g.members().len().saturating_sub(1)).unwrap_or(u32::MAX);
                // The state after encrypting is stored before the message leaves: no key is
                // ever used for two messages, whatever happens next.
                let tx = self.store.tx()?;
                put_group(&tx, &name, &mut g)?;
                let me = (self.me.name.as_str(), self.me.device.get());
                let row = put_group_message(&tx, &id, me, true, text, (None, sent_time_ms), None)?;
                tx.commit()?;
                (content, row, devices)
            };
            let req = api::GroupMessageRequest {
                content: content.into(),
                idempotency_key: Some(random_key().into()),
                state_counter: self.reported_state_counter()?,
            };
            match self.api.group_message(&id, &req).await {
                Ok(r) => {
                    self.store.conn().execute(
                        "UPDATE group_messages SET server_time_ms = ?2 WHERE id = ?1",
                        rusqlite::params![row, r.server_time_ms as i64],
                    )?;
                    return Ok(crate::messaging::SentMessage {
                        server_time_ms: r.server_time_ms,
                        sent_time_ms,
                        devices: vec![devices],
                    });
                }
                Err(ClientError::Server { code: Some(api::ErrorCode::StaleEpoch), .. }) => {
                    self.store.conn().execute("DELETE FROM group_messages WHERE id = ?1", [row])?;
                    self.receive_inner_now().await?;
                }
                Err(e) => {
                    self.store.conn().execute("DELETE FROM group_messages WHERE id = ?1", [row])?;
                    return Err(e);
                }
            }
        }
        Err(ClientError::Network("other members kept changing the group; send again".into()))
    }

    /// Leaves the group: this device stops receiving it, and the other members are asked
    /// (by a removal proposal) to take it out of the group's keys.
    pub async fn group_leave(&mut self, group: &str) -> Result<()> {
        self.online().await?;
        let (id, _) = self.find_group(group)?;
        // The proposal that removes this device, for another member to commit, made in the
        // group's current epoch (what waits is processed first) and sent before leaving the
        // delivery (the relay takes it only from a member).
        for _ in 0..COMMIT_ATTEMPTS {
            self.receive_inner_now().await?;
            self.settle_commit(&id).await?;
            if rejoining(self.store.conn(), &id)? {
                // A proposal from an out-of-date state reaches no one; the device leaves the
                // delivery, and its old leaf stays until a member removes it.
                self.warnings.push(
                    "this device's state of the group is out of date: it left the group's delivery, but a member \
                     must remove it (`tacit group remove`) to take it out of the group's keys"
                        .into(),
                );
                break;
            }
            let directory = self.group_directory()?;
            let device = self.group_device(&directory);
            let Some((g, _)) = self.open_group(&device, &id)? else { break };
            let proposal = g.propose_leave()?;
            let req = api::GroupMessageRequest {
                content: proposal.into(),
                idempotency_key: Some(random_key().into()),
                state_counter: self.reported_state_counter()?,
            };
            match self.api.group_message(&id, &req).await {
                // Sent, or the relay dropped this device already.
                Ok(_) | Err(ClientError::NotFound(_)) => break,
                Err(ClientError::Server { code: Some(api::ErrorCode::StaleEpoch), .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        match self.api.group_leave(&id).await {
            Ok(()) | Err(ClientError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let tx = self.store.tx()?;
        delete_group(&tx, &id)?;
        tx.execute("DELETE FROM mls_rejoins WHERE group_id = ?1", [&id])?;
        // Its messages still in the mailbox ask for no rejoin.
        tx.execute(
            "INSERT INTO mls_left (group_id, left_ms) VALUES (?1, ?2)
             ON CONFLICT (group_id) DO UPDATE SET left_ms = excluded.left_ms",
            rusqlite::params![id, now_ms() as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Queues (durably, sent with the rest of the queue by the caller) a request to be
    /// taken back in for every group this device lost its state of and did not ask about
    /// within its interval. Each carries a fresh KeyPackage of this device (kept, like a
    /// last-resort one, for every Welcome that answers it).
    pub(crate) fn queue_rejoin_requests(&mut self) -> Result<()> {
        type Row = (Vec<u8>, Option<String>, i64, i64, Option<Vec<u8>>, i64);
        let rows: Vec<Row> = {
            let mut st = self.store.conn().prepare(
                "SELECT group_id, ask, asked_ms, asks, key_package, key_package_ms FROM mls_rejoins ORDER BY group_id",
            )?;
            let it =
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?;
            it.collect::<rusqlite::Result<_>>()?
        };
        if rows.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let directory = self.group_directory()?;
        let device = self.group_device(&directory);
        for (id, ask, asked_ms, asks, kp, kp_ms) in rows {
            let (asked_ms, asks, kp_ms) = (asked_ms as u64, asks.clamp(0, 16) as u32, kp_ms as u64);
            let interval = REJOIN_INTERVAL_MS.saturating_mul(1 << asks.min(8)).min(REJOIN_MAX_INTERVAL_MS);
            if asked_ms != 0 && asked_ms <= now && now - asked_ms < interval {
                continue;
            }
            // Who to ask: this account's other devices first (they answer soonest), then the
            // admins, then other members, a different draw each time.
            let me = self.me.name.to_string();
            let mut targets: Vec<String> = Vec::new();
            let local = self.open_group(&device, &id).ok().flatten();
            let name = local.as_ref().map_or_else(|| hex(&id), |(_, n)| n.clone());
            if let Some((g, _)) = &local {
                let members: Vec<(String, u32)> = g.members().values().map(device_of).collect();
                if members.iter().any(|(a, d)| *a == me && *d != self.me.device.get()) {
                    targets.push(me.clone());
                }
                let mut others: Vec<String> =
                    members.iter().map(|(a, _)| a.clone()).filter(|a| *a != me).collect();
                others.sort();
                others.dedup();
                for admin in g.meta().map(|m| m.admins).unwrap_or_default() {
                    let admin = admin.to_string();
                    if others.contains(&admin) && !targets.contains(&admin) && targets.len() < REJOIN_ASKED {
                        targets.push(admin);
                    }
                }
                others.retain(|a| !targets.contains(a));
                while targets.len() < REJOIN_ASKED && !others.is_empty() {
                    let i = usize::try_from(
                        rand_core::RngCore::next_u64(&mut crate::rng::OsRng) % others.len() as u64,
                    )
                    .unwrap_or(0);
                    targets.push(others.swap_remove(i.min(others.len() - 1)));
                }
            }
            if let Some(a) = ask
                && !targets.contains(&a)
                && (a != me || local.is_none())
            {
                targets.push(a);
            }
            if targets.is_empty() {
                continue;
            }
            let tx = self.store.tx()?;
            let kp = match kp {
                Some(kp) if kp_ms <= now && now - kp_ms < REJOIN_KEY_PACKAGE_MAX_AGE_MS => kp,
                _ => {
                    let kp = device.new_key_package(crate::client::now())?;
                    tx.execute(
                        "INSERT INTO mls_key_packages (reference, secret, last_resort, created_ms) VALUES (?1, ?2, 1, ?3)",
                        rusqlite::params![kp.reference, kp.secret.as_slice(), now as i64],
                    )?;
                    tx.execute(
                        "UPDATE mls_rejoins SET key_package = ?2, key_package_ms = ?3 WHERE group_id = ?1",
                        rusqlite::params![id, kp.public, now as i64],
                    )?;
                    kp.public
                }
            };
            let payload = crate::payload::Payload::GroupRejoin {
                sent_time_ms: now,
                group_id: id.clone(),
                key_package: kp,
            }
            .encode()
            .map_err(|_| ClientError::Internal("rejoin request"))?;
            for t in &targets {
                let what = store::PendingKind::Payload {
                    payload: Zeroizing::new(payload.clone()),
                    message_id: None,
                };
                store::queue_send(&tx, t, &what, now)?;
            }
            tx.execute(
                "UPDATE mls_rejoins SET asked_ms = ?2, asks = asks + 1 WHERE group_id = ?1",
                rusqlite::params![id, now as i64],
            )?;
            tx.commit()?;
            if asks == 0 {
                self.warnings.push(format!(
                    "this device's state of group {name} is out of date (its data was restored from an older copy, \
                     or it missed a change): it sends nothing in it until a member takes it back in; asked {}",
                    targets.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Honours the members' requests to be taken back in ([`note_rejoin_request`]): one
    /// commit per device removes its old leaf and adds it from the KeyPackage it sent. A
    /// device no longer a member, or taken back in by another member's commit meanwhile, is
    /// left as it is.
    pub(crate) async fn honour_rejoins(&mut self) -> Result<()> {
        if self.honouring {
            return Ok(());
        }
        self.honouring = true;
        let out = self.honour_inner().await;
        self.honouring = false;
        out
    }

    async fn honour_inner(&mut self) -> Result<()> {
        let rows: Vec<(Vec<u8>, String, u32, Vec<u8>)> = {
            let mut st = self.store.conn().prepare(
                "SELECT group_id, account, device, key_package FROM mls_rejoin_requests
                 WHERE key_package IS NOT NULL ORDER BY group_id, account, device",
            )?;
            let it = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            it.collect::<rusqlite::Result<_>>()?
        };
        for (id, account, device, kp) in rows {
            let forget = |c: &rusqlite::Connection| -> Result<()> {
                c.execute(
                    "UPDATE mls_rejoin_requests SET key_package = NULL, honoured_ms = ?4
                     WHERE group_id = ?1 AND account = ?2 AND device = ?3",
                    rusqlite::params![id, account, device, now_ms() as i64],
                )?;
                Ok(())
            };
            if rejoining(self.store.conn(), &id)? {
                // This device cannot commit in the group either; a member that can will.
                continue;
            }
            let directory = self.group_directory()?;
            let own = self.group_device(&directory);
            let who = match self.open_group(&own, &id)? {
                Some((g, _)) => g.members().into_values().find(|m| device_of(m) == (account.clone(), device)),
                None => None,
            };
            let Some(who) = who.filter(|m| m != own.member()) else {
                // Not a member (removed since, or never was): nothing to take back.
                forget(self.store.conn())?;
                continue;
            };
            let added = [api::GroupMember { account: account.clone(), device }];
            let done = Box::pin(self.commit_and_post_as(
                &directory,
                &id,
                std::slice::from_ref(&kp),
                &added,
                std::slice::from_ref(&who),
                None,
                None,
                CommitMode::Rejoin,
            ))
            .await;
            match done {
                Ok(_) => forget(self.store.conn())?,
                Err(e) if e.kind() == crate::error::ErrorKind::Local => return Err(e),
                Err(e)
                    if crate::restore::transient(&e) || matches!(e, ClientError::GroupRejoining { .. }) =>
                {
                    self.warnings.push(format!(
                        "could not take {account} device {device} back into a group yet ({e}); the next receive tries again"
                    ));
                }
                Err(e) => {
                    forget(self.store.conn())?;
                    self.warnings
                        .push(format!("did not take {account} device {device} back into a group: {e}"));
                }
            }
        }
        Ok(())
    }

    /// Replaces this device's keys in the group now (a commit with an update path and
    /// nothing else; every member moves to the next epoch). Done on a schedule by
    /// [`Self::refresh_groups`]; by hand, after this device may have been exposed.
    /// The leaves of accounts that were deleted, or of devices their account's list no longer
    /// has, go in the same commit ([`Self::departed`]).
    pub async fn group_update(&mut self, group: &str) -> Result<GroupInfo> {
        self.online().await?;
        let (id, _) = self.find_group(group)?;
        let directory = self.group_directory()?;
        // What [`Self::commit_and_post_as`] does first when not handed the group: a pending
        // commit settled, then what waits received; the group is then opened once.
        self.settle_commit(&id).await?;
        self.receive_inner_now().await?;
        let device = self.group_device(&directory);
        let (g, name) = self.open_group(&device, &id)?.ok_or(ClientError::Internal("group gone"))?;
        let gone = self.departed(&directory, &id, &g, &name).await?;
        self.commit_and_post_as(&directory, &id, &[], &[], &gone, None, Some((g, name)), CommitMode::Refresh)
            .await
    }

    /// The group's leaves whose device left delivery without a commit removing it: its
    /// account was deleted (the relay takes a deleted account's devices out of its groups,
    /// and nobody of that account is left to commit their removal), or its account's list no
    /// longer has it with its key (revoked, or the account made again) while none of that
    /// account's devices removed it. Only the relay's member list says which to look at; what
    /// is removed is decided by the account's verified list: a deletion the key transparency
    /// directory published (a lookup that proves the account absent or deleted), or a list
    /// that lacks the leaf. A relay that hides a member from its list gets it checked, not
    /// removed. Each removal is told as a warning.
    async fn departed(
        &mut self,
        directory: &Directory,
        id: &[u8],
        g: &OpenGroup,
        name: &str,
    ) -> Result<Vec<MemberId>> {
        let relay: HashSet<(String, u32)> = match self.api.group_status(id).await {
            Ok(s) => s.members.into_iter().map(|m| (m.account, m.device)).collect(),
            // Not a member on the relay (yet): nothing to compare.
            Err(ClientError::NotFound(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let members = g.members();
        let mut accounts: Vec<AccountName> = Vec::new();
        for m in members.values() {
            if m.account != self.me.name && !relay.contains(&device_of(m)) && !accounts.contains(&m.account) {
                accounts.push(m.account.clone());
            }
        }
        let mut gone = Vec::new();
        for account in accounts {
            match self.refresh_contact(&account).await {
                Ok(list) => {
                    directory.insert(&list);
                    for m in g.unlisted(std::slice::from_ref(&account)) {
                        self.warnings.push(format!(
                            "{} device {} is no longer in {account}'s device list: removed from {name}",
                            m.account, m.device
                        ));
                        gone.push(m);
                    }
                }
                Err(ClientError::NotFound(_)) => {
                    self.warnings.push(format!("{account}'s account was deleted: removed from {name}"));
                    gone.extend(members.values().filter(|m| m.account == account).cloned());
                }
                Err(e) if e.kind() == crate::error::ErrorKind::Local => return Err(e),
                Err(e) => self.warnings.push(format!("could not check {account}'s devices in {name}: {e}")),
            }
        }
        Ok(gone)
    }

    /// Refreshes this device's keys in the groups whose refresh is due (at most
    /// [`REFRESHES_PER_RECEIVE`] per call, the longest due first): run at the end of each
    /// receive. A group whose membership grew since its refresh was scheduled is put off to
    /// its new interval instead ([`refresh_interval`]).
    pub(crate) async fn refresh_groups(&mut self) -> Result<()> {
        if self.refreshing {
            return Ok(());
        }
        self.refreshing = true;
        let out = self.refresh_inner().await;
        self.refreshing = false;
        out
    }

    async fn refresh_inner(&mut self) -> Result<()> {
        let now = now_ms();
        // Groups stored before this table have no row: due an interval after joining.
        let rows: Vec<(Vec<u8>, i64)> = {
            let mut st = self.store.conn().prepare(
                "SELECT g.id, COALESCE(r.refreshed_ms, g.joined_ms) FROM mls_groups g
                 LEFT JOIN mls_refresh r ON r.group_id = g.id
                 WHERE COALESCE(r.due_ms, g.joined_ms + ?2) <= ?1
                   AND g.id NOT IN (SELECT group_id FROM mls_rejoins)
                 ORDER BY COALESCE(r.due_ms, g.joined_ms + ?2), g.id LIMIT ?3",
            )?;
            let it = st.query_map(
                rusqlite::params![now as i64, REFRESH_INTERVAL_MS as i64, REFRESHES_PER_RECEIVE as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            it.collect::<rusqlite::Result<_>>()?
        };
        for (id, since) in rows {
            let directory = self.group_directory()?;
            let device = self.group_device(&directory);
            let Some((g, name)) = self.open_group(&device, &id)? else { continue };
            let devices = g.members().len();
            let since = u64::try_from(since).unwrap_or(0);
            if since.saturating_add(refresh_interval(devices)) > now {
                let due = next_refresh(since, devices);
                self.store.conn().execute(
                    "INSERT INTO mls_refresh (group_id, refreshed_ms, due_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (group_id) DO UPDATE SET due_ms = excluded.due_ms",
                    rusqlite::params![id, since as i64, due as i64],
                )?;
                continue;
            }
            let gone = match self.departed(&directory, &id, &g, &name).await {
                Ok(gone) => gone,
                Err(e) if e.kind() == crate::error::ErrorKind::Local => return Err(e),
                Err(e) => {
                    self.warnings.push(format!("could not compare {name}'s members with the relay's ({e})"));
                    Vec::new()
                }
            };
            let done = Box::pin(self.commit_and_post_as(
                &directory,
                &id,
                &[],
                &[],
                &gone,
                None,
                Some((g, name.clone())),
                CommitMode::Refresh,
            ))
            .await;
            match done {
                Ok(_) => {}
                Err(e) if e.kind() == crate::error::ErrorKind::Local => return Err(e),
                Err(e) if crate::restore::transient(&e) => {
                    self.warnings.push(format!(
                        "could not refresh this device's keys in group {} yet ({e}); the next receive tries again",
                        name
                    ));
                }
                Err(e) => {
                    // Not retried at every receive: an interval on, as after a refresh.
                    refreshed(self.store.conn(), &id, devices)?;
                    self.warnings.push(format!("could not refresh this device's keys in group {name}: {e}"));
                }
            }
        }
        Ok(())
    }

    /// Commits the proposals received in the groups [`Client::process_group`] noted (a
    /// member that left): the first member to commit wins, the others find nothing left.
    pub(crate) async fn commit_pending_proposals(&mut self) -> Result<()> {
        for id in std::mem::take(&mut self.group_proposals) {
            if rejoining(self.store.conn(), &id)? {
                continue;
            }
            let directory = self.group_directory()?;
            let device = self.group_device(&directory);
            let Some((g, _)) = self.open_group(&device, &id)? else { continue };
            if !g.commit_required() {
                continue;
            }
            drop(g);
            // Boxed: a commit that loses its epoch receives, which may come back here.
            if let Err(e) = Box::pin(self.commit_and_post(&directory, &id, &[], &[], &[], None, None)).await {
                self.warnings.push(format!("could not commit a member's leaving yet: {e}"));
            }
        }
        Ok(())
    }

    /// Processes one group envelope (the receive loop's part for groups): the new state,
    /// what it brought and the envelope id in one transaction.
    pub(crate) async fn process_group(
        &mut self,
        e: &api::Envelope,
        g: &api::GroupDelivery,
    ) -> Result<GroupOutcome> {
        let (Ok(sender), Some(_)) =
            (AccountName::new(&e.sender), tacit_protocol::DeviceId::new(e.sender_device))
        else {
            return self.drop_group(e, "bad sender address");
        };
        let directory = self.group_directory()?;
        match g.kind {
            api::GroupKind::Welcome => self.join_from(e, &sender, g, &directory).await,
            api::GroupKind::Commit | api::GroupKind::Message => {
                if self.held_groups.contains(&g.id.0) {
                    return Ok(GroupOutcome::Held);
                }
                // A commit of this device's the relay may have taken comes first: what
                // arrives may be in the epoch after it.
                if let Err(err) = self.settle_commit(g.id.as_slice()).await {
                    if !crate::restore::transient(&err) {
                        return Err(err);
                    }
                    self.held_groups.push(g.id.0.clone());
                    self.warn_once(format!(
                        "holding group messages: a change this device made to the group is not settled yet \
                         ({err}); they stay on the server for the next receive"
                    ));
                    return Ok(GroupOutcome::Held);
                }
                let device = self.group_device(&directory);
                let Some((mut group, name)) = self.open_group(&device, g.id.as_slice())? else {
                    return self.unknown_group(e, &sender, g);
                };
                let mut fetched = Vec::new();
                let mut refreshed: Vec<AccountName> = Vec::new();
                let received = loop {
                    match group.process(e.content.as_slice()) {
                        Err(GroupError::NeedDeviceLists(names))
                            if more_lists(self, &directory, &mut fetched, &names).await? => {}
                        // A device added to its account's list since this device last looked
                        // (a member linked a device): the current list, once.
                        Err(GroupError::NotInDeviceList(m)) if !refreshed.contains(&m.address().account) => {
                            let account = m.address().account;
                            refreshed.push(account.clone());
                            match self.refresh_contact(&account).await {
                                Ok(list) => directory.insert(&list),
                                Err(ClientError::IdentityChanged(n)) => {
                                    // As for 1:1: a verified contact's new identity is not
                                    // taken on the server's word; the group waits on the
                                    // relay until the user verifies it.
                                    self.held_groups.push(g.id.0.clone());
                                    self.warn_once(format!(
                                        "holding group messages of {name}: {n}'s identity key changed since you \
                                         verified it; run `tacit safety-number {n}` and `tacit verify {n} DIGITS` \
                                         to read them"
                                    ));
                                    return Ok(GroupOutcome::Held);
                                }
                                Err(_) if self.kt_may_be_unpublished(&account) => {}
                                Err(e) => return Err(e),
                            }
                        }
                        other => break other,
                    }
                };
                if let Err(GroupError::NotInDeviceList(m)) = &received
                    && self.kt_may_be_unpublished(&m.address().account)
                {
                    // Not published yet: the envelope (and the group's later ones) wait on
                    // the relay for the next receive.
                    self.held_groups.push(g.id.0.clone());
                    self.warnings.push(format!(
                        "holding group messages of {name} until the key transparency directory publishes a new \
                         device of {}; they stay on the server for the next receive",
                        m.address().account
                    ));
                    return Ok(GroupOutcome::Held);
                }
                let id = g.id.as_slice();
                match received {
                    Ok(Received::Application { sender: who, data, .. }) => {
                        let (from, device) = device_of(&who);
                        let Some((text, sent_time_ms)) = unpack_text(&data) else {
                            return self.drop_group(e, "not a text this version reads");
                        };
                        let tx = self.store.tx()?;
                        put_group(&tx, &name, &mut group)?;
                        let outgoing = from == self.me.name.as_str();
                        put_group_message(
                            &tx,
                            id,
                            (&from, device),
                            outgoing,
                            &text,
                            (Some(e.server_time_ms), sent_time_ms),
                            Some(e.id),
                        )?;
                        store::mark_seen(&tx, e.id)?;
                        tx.commit()?;
                        Ok(GroupOutcome::Message(crate::messaging::ReceivedMessage {
                            from,
                            device,
                            server_time_ms: e.server_time_ms,
                            sent_time_ms,
                            text,
                            group: Some(name),
                        }))
                    }
                    Ok(Received::Commit(summary)) => self.after_commit(e, id, name, group, summary),
                    Ok(Received::Proposal { .. }) => {
                        let tx = self.store.tx()?;
                        put_group(&tx, &name, &mut group)?;
                        store::mark_seen(&tx, e.id)?;
                        tx.commit()?;
                        if !self.group_proposals.contains(&id.to_vec()) {
                            self.group_proposals.push(id.to_vec());
                        }
                        Ok(GroupOutcome::Done)
                    }
                    Err(GroupError::OwnMessage) => {
                        store::mark_seen(self.store.conn(), e.id)?;
                        Ok(GroupOutcome::Done)
                    }
                    Err(err) => self.group_refused(e, &sender, g, &name, &err),
                }
            }
        }
    }

    fn after_commit(
        &mut self,
        e: &api::Envelope,
        id: &[u8],
        name: String,
        mut group: OpenGroup,
        s: CommitSummary,
    ) -> Result<GroupOutcome> {
        let by = s.committer.address().account.to_string();
        let new_name = s.renamed.as_ref().map_or(name.clone(), |m| m.name.clone());
        let me = (self.me.name.to_string(), self.me.device.get());
        let tx = self.store.tx()?;
        if s.removed_me && s.rejoined.iter().any(|m| device_of(m) == me) {
            // Taken back in with a new leaf (this device asked): the Welcome that follows
            // brings the new state; the old one stays until then.
            store::mark_seen(&tx, e.id)?;
            tx.commit()?;
            return Ok(GroupOutcome::Done);
        }
        if s.removed_me {
            delete_group(&tx, id)?;
            tx.execute("DELETE FROM mls_rejoins WHERE group_id = ?1", [id])?;
        } else {
            put_group(&tx, &new_name, &mut group)?;
            rejoins_honoured(&tx, id, &s.rejoined)?;
        }
        store::mark_seen(&tx, e.id)?;
        crash_point(CommitStep::Processed)?;
        tx.commit()?;
        let event = if s.removed_me {
            GroupEvent::RemovedMe { group: name, by }
        } else if !s.added.is_empty() {
            GroupEvent::Added { group: new_name, by, devices: s.added.iter().map(device_of).collect() }
        } else if !s.removed.is_empty() {
            GroupEvent::Removed { group: new_name, by, devices: s.removed.iter().map(device_of).collect() }
        } else if !s.rejoined.is_empty() {
            GroupEvent::Rejoined { group: new_name, by, devices: s.rejoined.iter().map(device_of).collect() }
        } else if s.renamed.is_some() {
            GroupEvent::Renamed { group: new_name, by }
        } else {
            return Ok(GroupOutcome::Done);
        };
        Ok(GroupOutcome::Event(event))
    }

    async fn join_from(
        &mut self,
        e: &api::Envelope,
        sender: &AccountName,
        g: &api::GroupDelivery,
        directory: &Directory,
    ) -> Result<GroupOutcome> {
        let Some((welcome, tree)) = unpack_welcome(e.content.as_slice()) else {
            return self.drop_group(e, "a malformed Welcome");
        };
        let Ok(refs) = GroupDevice::welcome_references(welcome) else {
            return self.drop_group(e, "a malformed Welcome");
        };
        let mut found = None;
        for r in &refs {
            let row: Option<(Vec<u8>, bool)> = self
                .store
                .conn()
                .query_row(
                    "SELECT secret, last_resort FROM mls_key_packages WHERE reference = ?1",
                    [r],
                    |x| Ok((x.get(0)?, x.get(1)?)),
                )
                .optional()?;
            if let Some((secret, last_resort)) = row {
                found = Some((r.clone(), Zeroizing::new(secret), last_resort));
                break;
            }
        }
        let Some((reference, secret, last_resort)) = found else {
            // A KeyPackage a later copy of this device's data made and uploaded (this one was
            // restored from an older copy): the members are asked to add this device again.
            let id = g.id.as_slice();
            let held: bool = self.store.conn().query_row(
                "SELECT EXISTS (SELECT 1 FROM mls_groups WHERE id = ?1)",
                [id],
                |r| r.get(0),
            )?;
            if !held && self.may_rejoin_unknown(sender)? {
                let tx = self.store.tx()?;
                let marked = mark_rejoin(&tx, id, Some(sender.as_str()))?;
                store::mark_seen(&tx, e.id)?;
                tx.commit()?;
                if marked {
                    return Ok(GroupOutcome::Done);
                }
            }
            return self.drop_group(e, "a Welcome for a KeyPackage this device does not hold");
        };
        let device = self.group_device(directory);
        // Every member's list first (one round), rather than one account per failed join.
        let mut fetched: Vec<AccountName> = Vec::new();
        if let Ok(accounts) = GroupDevice::tree_accounts(tree) {
            let unknown: Vec<AccountName> = accounts.into_iter().filter(|a| !directory.has(a)).collect();
            more_lists(self, directory, &mut fetched, &unknown).await?;
        }
        let mut refreshed: Vec<AccountName> = Vec::new();
        let joined = loop {
            match device.join(welcome, tree, &reference, &secret, now()) {
                Err(GroupError::NeedDeviceLists(names))
                    if more_lists(self, directory, &mut fetched, &names).await? => {}
                // A member's device this device's stored list of its account does not have
                // (linked since, or the account made again): the current list, once.
                Err(GroupError::NotInDeviceList(m)) if !refreshed.contains(&m.address().account) => {
                    let account = m.address().account;
                    refreshed.push(account.clone());
                    match self.refresh_contact(&account).await {
                        Ok(list) => directory.insert(&list),
                        Err(ClientError::IdentityChanged(n)) => {
                            self.warn_once(format!(
                                "holding an invitation to a group: {n}'s identity key changed since you \
                                 verified it; run `tacit safety-number {n}` and `tacit verify {n} DIGITS` to \
                                 join"
                            ));
                            return Ok(GroupOutcome::Held);
                        }
                        Err(_) if self.kt_may_be_unpublished(&account) => {
                            self.warn_once(format!(
                                "holding an invitation to a group until the key transparency directory \
                                 publishes a new device of {account}; it stays on the server for the next \
                                 receive"
                            ));
                            return Ok(GroupOutcome::Held);
                        }
                        Err(e) => return Err(e),
                    }
                }
                other => break other,
            }
        };
        let mut group = match joined {
            Ok(g) => g,
            Err(err) => return self.drop_group(e, &format!("a Welcome refused: {err}")),
        };
        let name = group.meta()?.name;
        let id = group.id().to_vec();
        let held_epoch: Option<i64> = self
            .store
            .conn()
            .query_row("SELECT epoch FROM mls_groups WHERE id = ?1", [&id], |r| r.get(0))
            .optional()?;
        if held_epoch.is_some_and(|held| group.epoch() <= held as u64) {
            // Never back to an older state (an old Welcome sent again).
            return self.drop_group(e, "a Welcome into a group this device holds at a later epoch");
        }
        let was_rejoining = rejoining(self.store.conn(), &id)?;
        let tx = self.store.tx()?;
        put_group(&tx, &name, &mut group)?;
        if !last_resort {
            tx.execute("DELETE FROM mls_key_packages WHERE reference = ?1", [&reference])?;
        }
        tx.execute("DELETE FROM mls_rejoins WHERE group_id = ?1", [&id])?;
        tx.execute("DELETE FROM mls_left WHERE group_id = ?1", [&id])?;
        store::mark_seen(&tx, e.id)?;
        tx.commit()?;
        self.rejoin_warned.retain(|x| *x != id);
        let by = sender.to_string();
        Ok(GroupOutcome::Event(if was_rejoining {
            GroupEvent::RejoinedMe { group: name, by }
        } else if held_epoch.is_some() {
            // A second member answered the same request: its commit took this device in
            // again; nothing for the user.
            return Ok(GroupOutcome::Done);
        } else {
            GroupEvent::Joined { group: name, by }
        }))
    }

    /// Whether a message about a group this device does not hold, from `sender`, may make
    /// it ask to be taken in: from its own account or a contact, or within
    /// [`REJOIN_UNKNOWN_AFTER_RESTORE_MS`] of a detected restore (a group made after the
    /// copy was taken).
    fn may_rejoin_unknown(&self, sender: &AccountName) -> Result<bool> {
        if *sender == self.me.name || self.stored_list(sender)?.is_some() {
            return Ok(true);
        }
        let now = now_ms();
        let restored_at = match self.store.meta(crate::client::meta::RESTORED_AT)? {
            Some(v) => <[u8; 8]>::try_from(v.as_slice()).map(u64::from_be_bytes).unwrap_or(0),
            None => return Ok(false),
        };
        Ok(restored_at <= now && now - restored_at < REJOIN_UNKNOWN_AFTER_RESTORE_MS)
    }

    /// A message or commit for a group this device does not hold, which the relay still
    /// delivers to it (so takes it for a member): its data was restored from a copy older
    /// than the group, or a Welcome was lost. The members are asked to take it in.
    fn unknown_group(
        &mut self,
        e: &api::Envelope,
        sender: &AccountName,
        g: &api::GroupDelivery,
    ) -> Result<GroupOutcome> {
        let id = g.id.as_slice();
        if rejoining(self.store.conn(), id)? {
            return self.drop_rejoining(e, id, &hex(id));
        }
        if self.may_rejoin_unknown(sender)? {
            let tx = self.store.tx()?;
            let marked = mark_rejoin(&tx, id, Some(sender.as_str()))?;
            store::mark_seen(&tx, e.id)?;
            tx.commit()?;
            if marked {
                // Told once, with whom it asked (`queue_rejoin_requests`).
                self.rejoin_warned.push(id.to_vec());
                return Ok(GroupOutcome::Done);
            }
        }
        self.drop_group(e, "for a group this device is not in")
    }

    /// A group message the group refused. One from an epoch past this device's state (it
    /// missed a commit, or its data was restored from an older copy) makes it ask the
    /// members to take it back in; while it waits, the group's messages are dropped
    /// quietly (they were encrypted for keys it cannot reach).
    fn group_refused(
        &mut self,
        e: &api::Envelope,
        sender: &AccountName,
        g: &api::GroupDelivery,
        name: &str,
        err: &GroupError,
    ) -> Result<GroupOutcome> {
        let id = g.id.as_slice();
        if rejoining(self.store.conn(), id)? {
            return self.drop_rejoining(e, id, name);
        }
        if matches!(err, GroupError::WrongEpoch { current } if g.epoch > *current) {
            let tx = self.store.tx()?;
            let marked = mark_rejoin(&tx, id, Some(sender.as_str()))?;
            store::mark_seen(&tx, e.id)?;
            tx.commit()?;
            if marked {
                self.rejoin_warned.push(id.to_vec());
                return Ok(GroupOutcome::Done);
            }
        }
        self.drop_group(e, &format!("in group {name}: {err}"))
    }

    fn drop_rejoining(&mut self, e: &api::Envelope, id: &[u8], name: &str) -> Result<GroupOutcome> {
        store::mark_seen(self.store.conn(), e.id)?;
        if !self.rejoin_warned.iter().any(|x| x == id) {
            self.rejoin_warned.push(id.to_vec());
            self.warnings.push(format!(
                "messages in group {name} cannot be read until the members take this device back in (they were \
                 asked; `tacit receive` later)"
            ));
        }
        Ok(GroupOutcome::Done)
    }

    fn drop_group(&mut self, e: &api::Envelope, why: &str) -> Result<GroupOutcome> {
        store::mark_seen(self.store.conn(), e.id)?;
        self.warnings.push(format!(
            "dropped a group message from {} device {} (envelope {}): {why}",
            e.sender, e.sender_device, e.id
        ));
        Ok(GroupOutcome::Done)
    }
}
