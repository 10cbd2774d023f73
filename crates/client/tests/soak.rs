//! A randomised soak over the real server (issue 9, "Tests"): 3 accounts with up to 3 live
//! devices each. Devices link (the new device and its approver running at the same moment),
//! get revoked (by an approver, rotating the account key when the revoked device held it) or
//! log themselves out, go offline, restart, and restore an older copy of their home; the wire
//! drops (an envelope fetched but not processed stays on the server), duplicates (within a
//! batch, and replayed in a later batch after its ack) and reorders envelopes; two devices
//! that never talked start sessions with each other at the same moment.
//!
//! At the end (after a drain: receive rounds on every live device, no faults, until no
//! mailbox holds anything) it asserts that every live device has every message meant for it
//! exactly once, that no message is left undecryptable (every expected message is present),
//! and that no revoked device received anything sent after its revocation.
//!
//! - `TACIT_SOAK_SEED=N` replays a run (the seed is printed at the start and in every
//!   failure). The driver's choices are a function of the seed alone; what the network and
//!   the tasks do at the same moment (a link and its approval, two sends at once) is not, so
//!   a replay takes the same steps, not necessarily the same interleavings.
//! - `TACIT_SOAK_SKIP=logout,restore,...` leaves kinds of action out (send, receive,
//!   at-once, offline, restart, snapshot, restore, link, revoke, logout, revoked-receive): to
//!   narrow a failure down (the run is then another one).
//! - `TACIT_SOAK_STEPS=N` (default [`DEFAULT_STEPS`]); `TACIT_SOAK_BACKEND=postgres` runs the
//!   server on PostgreSQL (127.0.0.1:5432, database `test`). `scripts/soak` runs a long one
//!   and prints the figures (a `SOAK-FIGURES {json}` line) for docs/BENCHMARKS.md.
//!
//! What "meant for it" means, per message (texts are unique: `m{seq} ...`):
//! - every device of the recipient account that was in the account's list when it was sent,
//!   and every device of the sender's account (the sender itself, the others by the sent
//!   transcript; a note to self only those);
//! - a device linked with history also has what its approver's history held at approval;
//! - a device revoked (or logged out) after the send is no longer required to have it;
//! - a device restored from an older copy keeps what the copy holds plus what arrives after:
//!   what it had stored (and so acknowledged, deleted from the server) between the copy and
//!   the restore is history lost by the restore, not an undecryptable message, so it is no
//!   longer required (it may come back, at most once, through a resend). Everything else
//!   it was owed is still on the server or still held by its sender (the outbox), and must
//!   arrive. One exemption, counted in the figures: a message whose sending device no longer
//!   holds it (restored to a copy from before it sent it, revoked, logged out), since a copy
//!   that did not decrypt can then be resent by no one ("must not leave a message
//!   undecryptable while its sender still holds it"). Copies put back are at most
//!   [`MAX_SNAPSHOT_AGE`] steps old, so that exemption stays small.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)] // a test file

#[macro_use]
#[allow(unused_macros)]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Backend, Relay, account};
use tacit_client::{
    ApproveOptions, Client, ClientError, ConnectOptions, LinkEvent, NewDevice, StoreSecret, api,
};

/// Steps of the bounded run in `scripts/test` (under a minute in the test profile here).
const DEFAULT_STEPS: usize = 1500;
/// The seed `scripts/test` runs (no `TACIT_SOAK_SEED`): a fixed one, so CI is the same run
/// every time; `scripts/soak` (and `TACIT_SOAK_SEED=random`) draws one.
const CI_SEED: u64 = 2;
/// What `scripts/test` leaves out (no `TACIT_SOAK_SKIP`): nothing now. Restores were left
/// out until a device restored from a copy taken after its account key was rotated but before
/// it took the update (the update acknowledged, then the copy put back) could follow the
/// signed rotations the server keeps (`TACIT_SOAK_SEED=5` found it stranded). A kind of
/// action whose failure is not fixed yet goes here, with the seed that replays it.
const CI_SKIP: &[&str] = &[];
/// The accounts.
const ACCOUNTS: [&str; 3] = ["ada", "bix", "cyd"];
/// Live devices per account, at most.
const MAX_DEVICES: usize = 3;
/// Drain rounds at most (each: a receive on every live device).
const MAX_DRAIN_ROUNDS: usize = 16;
/// The longest one action may take (a hang is a failure, with the log).
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// Steps between two restores of one device, at least: the healing bounds are per hour
/// (one session reset per peer, a few resends per message and device), and a run compresses
/// hours into seconds; restores every few seconds would measure those bounds, not healing.
const MIN_RESTORE_GAP: usize = 150;
/// Steps after which a copy of a home is no longer put back.
const MAX_SNAPSHOT_AGE: usize = 60;
/// Lines of the action log shown with a failure.
const LOG_TAIL: usize = 80;

/// SplitMix64: a small deterministic generator for the driver's choices (never for keys).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> Option<T> {
        (!from.is_empty()).then(|| from[self.below(from.len())])
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// What became of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Live,
    /// Revoked by an approver: nothing sent from message `after` on may reach it.
    Revoked {
        after: u64,
    },
    /// Logged itself out: its home is gone.
    LoggedOut,
}

/// A copy of a device's home, and what its history held then.
struct Snapshot {
    dir: tempfile::TempDir,
    had: BTreeSet<u64>,
    /// The next message number when it was taken.
    next_seq: u64,
    /// The step it was taken at.
    step: usize,
}

struct Dev {
    /// `ada/2`.
    name: String,
    account: usize,
    id: u32,
    home: tempfile::TempDir,
    client: Option<Client>,
    approver: bool,
    status: Status,
    /// Skipped by every action before this step.
    offline_until: usize,
    snapshot: Option<Snapshot>,
    /// Messages it must have at the end.
    must: BTreeSet<u64>,
    /// Messages it may have (at most once) without having to.
    may: BTreeSet<u64>,
    /// The step of its last restore.
    last_restore: Option<usize>,
    /// Message numbers at which it was restored (the next number then).
    restored_at: Vec<u64>,
    /// Envelopes it processed, kept to be replayed later (a duplicate after the ack).
    replay: Vec<api::Envelope>,
    /// Texts that `receive` returned after its revocation.
    after_revocation: Vec<String>,
}

/// One message sent.
struct Msg {
    seq: u64,
    /// Index of the sending device.
    from: usize,
    /// The recipient account.
    to: usize,
    step: usize,
    text: String,
    /// The sending device no longer holds it (restored to a copy from before it, or revoked).
    sender_forgot: bool,
}

#[derive(Default)]
struct Figures {
    messages: u64,
    notes_to_self: u64,
    concurrent_starts: u64,
    receives: u64,
    envelopes: u64,
    dropped: u64,
    duplicated: u64,
    replayed: u64,
    reordered: u64,
    links: u64,
    links_with_history: u64,
    approvers_linked: u64,
    revocations: u64,
    rotations: u64,
    logouts: u64,
    last_approver_refused: u64,
    offline: u64,
    restarts: u64,
    snapshots: u64,
    restores: u64,
    revoked_receives: u64,
    undecryptable_warnings: u64,
    drain_rounds: u64,
    exempt_missing: u64,
    lost_by_restore: u64,
}

struct Soak {
    seed: u64,
    rng: Rng,
    relay: Relay,
    devs: Vec<Dev>,
    msgs: Vec<Msg>,
    step: usize,
    log: Vec<String>,
    fig: Figures,
    /// Kinds of action not taken (`TACIT_SOAK_SKIP=logout,restore`: to narrow a failure down).
    skip: Vec<String>,
}

fn seq_of(text: &str) -> Option<u64> {
    text.strip_prefix('m')?.split(' ').next()?.parse().ok()
}

/// Copies every file of `from` into `to`, replacing what `to` held (a backup restore).
fn replace_folder(from: &Path, to: &Path) {
    for e in std::fs::read_dir(to).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::remove_file(p).unwrap();
        }
    }
    copy_files(from, to);
}

fn copy_files(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Every message number in `c`'s history (all conversations), with repeats.
fn history_seqs(c: &Client) -> Vec<u64> {
    let mut out = Vec::new();
    for name in ACCOUNTS {
        match c.history(name) {
            Ok(h) => out.extend(h.iter().filter_map(|e| seq_of(&e.text))),
            Err(ClientError::UnknownContact(_)) => {}
            Err(e) => panic!("history of {name} on {}: {e}", c.account_name()),
        }
    }
    out
}

/// What the final check found on one device.
#[derive(Debug, Default, PartialEq, Eq)]
struct Findings {
    missing: Vec<u64>,
    duplicated: Vec<u64>,
    unexpected: Vec<u64>,
    after_revocation: Vec<u64>,
}

impl Findings {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Judges one device's history (`present`, with repeats): what it must have, what it may.
/// `revoked_after`: nothing numbered from it on may be there.
fn judge(
    present: &[u64],
    must: &BTreeSet<u64>,
    may: &BTreeSet<u64>,
    revoked_after: Option<u64>,
    exempt: &dyn Fn(u64) -> bool,
) -> Findings {
    let mut count: BTreeMap<u64, usize> = BTreeMap::new();
    for s in present {
        *count.entry(*s).or_default() += 1;
    }
    let mut f = Findings::default();
    for (s, n) in &count {
        if *n > 1 {
            f.duplicated.push(*s);
        }
        if revoked_after.is_some_and(|a| *s >= a) {
            f.after_revocation.push(*s);
        } else if !must.contains(s) && !may.contains(s) {
            f.unexpected.push(*s);
        }
    }
    if revoked_after.is_none() {
        f.missing = must.iter().filter(|s| !count.contains_key(s) && !exempt(**s)).copied().collect();
    }
    f
}

/// The checker reports each kind of fault it exists for (the positive control of the soak's
/// final "nothing found").
#[test]
fn the_final_check_finds_each_fault() {
    let must: BTreeSet<u64> = [1, 2, 3, 4].into();
    let may: BTreeSet<u64> = [9].into();
    let none = |_| false;
    assert!(judge(&[1, 2, 3, 4], &must, &may, None, &none).is_empty());
    assert!(judge(&[1, 2, 3, 4, 9], &must, &may, None, &none).is_empty());
    assert_eq!(judge(&[1, 2, 4], &must, &may, None, &none).missing, [3]);
    assert!(judge(&[1, 2, 4], &must, &may, None, &|s| s == 3).is_empty(), "exempt");
    assert_eq!(judge(&[1, 2, 3, 3, 4], &must, &may, None, &none).duplicated, [3]);
    assert_eq!(judge(&[1, 2, 3, 4, 9, 9], &must, &may, None, &none).duplicated, [9]);
    assert_eq!(judge(&[1, 2, 3, 4, 7], &must, &may, None, &none).unexpected, [7]);
    let f = judge(&[1, 5, 6], &must, &may, Some(5), &none);
    assert_eq!((f.after_revocation, f.missing), (vec![5, 6], vec![]), "a revoked device owes nothing");
    assert_eq!(seq_of("m12 ada/1 -> bix"), Some(12));
    assert_eq!(seq_of("hello"), None);
    // The generator is the replay: the same seed, the same choices.
    let (mut a, mut b) = (Rng(7), Rng(7));
    assert!((0..100).all(|_| a.next() == b.next()));
}

impl Soak {
    fn replay(&self) -> String {
        // Always said: with no TACIT_SOAK_SKIP the test leaves out what `CI_SKIP` names.
        let skip = format!(" TACIT_SOAK_SKIP={}", self.skip.join(","));
        format!("replay with TACIT_SOAK_SEED={} TACIT_SOAK_STEPS={}{skip}", self.seed, steps())
    }

    fn note(&mut self, line: String) {
        self.log.push(format!("[{}] {line}", self.step));
    }

    /// Fails the run: what went wrong, the end of the action log, the seed.
    fn fail(&self, what: &str) -> ! {
        let tail = self.log.len().saturating_sub(LOG_TAIL);
        let whole = std::env::temp_dir().join(format!("tacit-soak-{}.log", self.seed));
        let saved = match std::fs::write(&whole, self.log.join("\n")) {
            Ok(()) => format!("the whole log: {}", whole.display()),
            Err(e) => format!("the whole log could not be written to {}: {e}", whole.display()),
        };
        panic!(
            "soak failed at step {}: {what}\n--- last actions ({saved}) ---\n{}\n--- {} ---",
            self.step,
            self.log[tail..].join("\n"),
            self.replay()
        );
    }

    fn ok<T>(&self, what: &str, r: Result<T, ClientError>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => self.fail(&format!("{what}: {e} ({e:?})")),
        }
    }

    /// Devices that can act now: live, online, with a client.
    fn ready(&self) -> Vec<usize> {
        (0..self.devs.len())
            .filter(|&i| {
                let d = &self.devs[i];
                d.status == Status::Live && d.offline_until <= self.step && d.client.is_some()
            })
            .collect()
    }

    fn live_of(&self, account: usize) -> Vec<usize> {
        (0..self.devs.len())
            .filter(|&i| self.devs[i].account == account && self.devs[i].status == Status::Live)
            .collect()
    }

    fn next_seq(&self) -> u64 {
        self.msgs.len() as u64
    }

    fn take_warnings(&mut self, i: usize) {
        let w = self.devs[i].client.as_mut().map(Client::take_warnings).unwrap_or_default();
        let name = self.devs[i].name.clone();
        for w in w {
            if w.contains("could not decrypt") {
                self.fig.undecryptable_warnings += 1;
            }
            self.note(format!("{name} warning: {w}"));
        }
    }

    /// Records a message about to be sent by device `from` to `to`: who must have it.
    fn new_msg(&mut self, from: usize, to: usize) -> u64 {
        let seq = self.next_seq();
        let text = format!("m{seq} {} -> {}", self.devs[from].name, ACCOUNTS[to]);
        self.msgs.push(Msg { seq, from, to, step: self.step, text, sender_forgot: false });
        seq
    }

    /// The message went: every live device of the sender's and the recipient's account must
    /// have it.
    fn sent(&mut self, seq: u64) {
        let (from, to) = (self.msgs[seq as usize].from, self.msgs[seq as usize].to);
        let mut owed = self.live_of(self.devs[from].account);
        owed.extend(self.live_of(to));
        for i in owed {
            self.devs[i].must.insert(seq);
        }
        self.fig.messages += 1;
        if self.devs[from].account == to {
            self.fig.notes_to_self += 1;
        }
    }

    async fn send(&mut self, from: usize, to: usize) {
        let seq = self.new_msg(from, to);
        let text = self.msgs[seq as usize].text.clone();
        self.note(format!("send {text}"));
        let r = self.devs[from].client.as_mut().unwrap().send_text(ACCOUNTS[to], &text).await;
        self.ok(&format!("{} sends m{seq} to {}", self.devs[from].name, ACCOUNTS[to]), r);
        self.sent(seq);
        self.take_warnings(from);
    }

    /// Two devices of different accounts send to each other at the same moment (sessions
    /// started from both ends when they never talked).
    async fn cross_send(&mut self, a: usize, b: usize) {
        let (ta, tb) = (self.devs[b].account, self.devs[a].account);
        let sa = self.new_msg(a, ta);
        let sb = self.new_msg(b, tb);
        let (xa, xb) = (self.msgs[sa as usize].text.clone(), self.msgs[sb as usize].text.clone());
        self.note(format!("at once: {xa} | {xb}"));
        let mut ca = self.devs[a].client.take().unwrap();
        let mut cb = self.devs[b].client.take().unwrap();
        let (ra, rb) = tokio::join!(ca.send_text(ACCOUNTS[ta], &xa), cb.send_text(ACCOUNTS[tb], &xb));
        self.devs[a].client = Some(ca);
        self.devs[b].client = Some(cb);
        self.ok(&format!("{} sends m{sa} (at once)", self.devs[a].name), ra);
        self.ok(&format!("{} sends m{sb} (at once)", self.devs[b].name), rb);
        self.sent(sa);
        self.sent(sb);
        self.fig.concurrent_starts += 1;
        self.take_warnings(a);
        self.take_warnings(b);
    }

    /// A receive over a faulty wire: some envelopes dropped (left on the server), some
    /// duplicated, some replayed from an earlier batch, the batch shuffled.
    async fn receive_faulty(&mut self, i: usize) {
        let r = self.devs[i].client.as_mut().unwrap().fetch_envelopes().await;
        let fetched = self.ok(&format!("{} fetches", self.devs[i].name), r);
        let mut batch = Vec::new();
        let (mut dropped, mut dup, mut replayed) = (0, 0, 0);
        for e in fetched {
            if self.rng.chance(15) {
                dropped += 1;
                continue;
            }
            if self.rng.chance(10) {
                batch.push(e.clone());
                dup += 1;
            }
            if self.rng.chance(10) {
                let d = &mut self.devs[i];
                if d.replay.len() >= 8 {
                    d.replay.remove(0);
                }
                d.replay.push(e.clone());
            }
            batch.push(e);
        }
        if !self.devs[i].replay.is_empty() && self.rng.chance(20) {
            let k = self.rng.below(self.devs[i].replay.len());
            batch.push(self.devs[i].replay[k].clone());
            replayed += 1;
        }
        let reorder = batch.len() > 1 && self.rng.chance(50);
        if reorder {
            self.rng.shuffle(&mut batch);
            self.fig.reordered += 1;
        }
        self.fig.envelopes += batch.len() as u64;
        self.fig.dropped += dropped;
        self.fig.duplicated += dup;
        self.fig.replayed += replayed;
        self.fig.receives += 1;
        let n = batch.len();
        let r = self.devs[i].client.as_mut().unwrap().process_envelopes(batch).await;
        let got = self.ok(&format!("{} processes {n} envelopes", self.devs[i].name), r);
        let got: Vec<String> = got.into_iter().map(|m| m.text).collect();
        self.note(format!(
            "{} receives {n} (dropped {dropped}, dup {dup}, replayed {replayed}, reordered {reorder}): {got:?}",
            self.devs[i].name
        ));
        self.take_warnings(i);
    }

    /// A plain receive (the path the CLI takes).
    async fn receive_plain(&mut self, i: usize) -> usize {
        let r = self.devs[i].client.as_mut().unwrap().receive(Duration::ZERO).await;
        let got = self.ok(&format!("{} receives", self.devs[i].name), r);
        self.fig.receives += 1;
        let n = got.len();
        if n > 0 {
            let got: Vec<&str> = got.iter().map(|m| m.text.as_str()).collect();
            self.note(format!("{} receives {got:?}", self.devs[i].name));
        }
        self.take_warnings(i);
        n
    }

    fn restart(&mut self, i: usize) {
        self.devs[i].client = None;
        let r = Client::open(self.devs[i].home.path(), None);
        self.devs[i].client = Some(self.ok(&format!("{} reopens", self.devs[i].name), r));
    }

    /// Stops the client, copies its home aside (what a backup takes), starts it again.
    fn snapshot(&mut self, i: usize) {
        let had: BTreeSet<u64> = history_seqs(self.devs[i].client.as_ref().unwrap()).into_iter().collect();
        self.devs[i].client = None;
        let dir = tempfile::tempdir().unwrap();
        copy_files(self.devs[i].home.path(), dir.path());
        self.devs[i].snapshot = Some(Snapshot { dir, had, next_seq: self.next_seq(), step: self.step });
        self.restart(i);
        self.fig.snapshots += 1;
        let name = self.devs[i].name.clone();
        self.note(format!("{name} snapshot"));
    }

    /// Puts the copy back. What the device stored since the copy is history lost by the
    /// restore (it acknowledged it: the server deleted it): no longer owed. The messages this
    /// device sent since the copy are no longer in its outbox.
    fn restore(&mut self, i: usize) {
        let now: BTreeSet<u64> = history_seqs(self.devs[i].client.as_ref().unwrap()).into_iter().collect();
        let snap = self.devs[i].snapshot.take().unwrap();
        self.devs[i].client = None;
        replace_folder(snap.dir.path(), self.devs[i].home.path());
        let lost: Vec<u64> = now.difference(&snap.had).copied().collect();
        for s in &lost {
            self.devs[i].must.remove(s);
            self.devs[i].may.insert(*s);
        }
        self.fig.lost_by_restore += lost.len() as u64;
        for m in &mut self.msgs {
            if m.from == i && m.seq >= snap.next_seq {
                m.sender_forgot = true;
            }
        }
        let at = self.next_seq();
        self.devs[i].restored_at.push(at);
        self.devs[i].last_restore = Some(self.step);
        self.devs[i].snapshot = Some(snap);
        self.restart(i);
        self.fig.restores += 1;
        let name = self.devs[i].name.clone();
        self.note(format!("{name} restored from its copy (lost {lost:?})"));
    }

    /// A new device of `account`, approved by `approver` while it waits (both at once).
    async fn link(&mut self, approver: usize) {
        let account = self.devs[approver].account;
        let as_approver = self.rng.chance(30);
        let history = self.rng.chance(50);
        let home = tempfile::tempdir().unwrap();
        let label = format!("dev{}", self.devs.len());
        self.note(format!(
            "link {label} into {} via {} (approver {as_approver}, history {history})",
            ACCOUNTS[account], self.devs[approver].name
        ));
        let (tx, rx) = tokio::sync::oneshot::channel::<String>();
        let mut tx = Some(tx);
        let mut events = move |e: LinkEvent| {
            if let LinkEvent::Code { code, .. } = e
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(code);
            }
        };
        let mut ac = self.devs[approver].client.take().unwrap();
        let had: BTreeSet<u64> = history_seqs(&ac).into_iter().collect();
        let url = self.relay.url.clone();
        let options = ConnectOptions::default();
        // A failed approval stops the new device's wait (else it waits out the code's life).
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // And a link that fails before it shows a code stops the approval's wait for one.
        let (failed, link_failed) = tokio::sync::oneshot::channel::<()>();
        let linking = async {
            let r = tokio::select! {
                r = Client::link_device(home.path(), StoreSecret::NoPassphrase, &url, &label, true, &options, &mut events) => Some(r),
                Ok(()) = stopped => None,
            };
            if matches!(r, Some(Err(_))) {
                let _ = failed.send(());
            }
            r
        };
        let approving = async {
            let code = tokio::select! {
                c = rx => c.map_err(|_| ClientError::Internal("no link code"))?,
                Ok(()) = link_failed => return Err(ClientError::Internal("the new device failed before its code")),
            };
            let r = ac
                .approve_device(
                    &code,
                    ApproveOptions { approver: as_approver, history },
                    &mut |_: &NewDevice| true,
                    &mut |_: u64, _: u64| {},
                )
                .await;
            if r.is_err() {
                let _ = stop.send(());
            }
            r
        };
        let (linked, approved) = tokio::join!(linking, approving);
        // What the approver stored during the approval (its own list's key changed, so it took
        // its mailbox first) may be in the archive too.
        let during: BTreeSet<u64> = history_seqs(&ac).into_iter().filter(|s| !had.contains(s)).collect();
        self.devs[approver].client = Some(ac);
        let info = self.ok(&format!("{} approves {label}", self.devs[approver].name), approved);
        let Some(linked) = linked else { self.fail(&format!("{label}: approved, but the link stopped")) };
        let client = self.ok(&format!("{label} links"), linked);
        if client.device_id() != info.id || client.account_name() != ACCOUNTS[account] {
            self.fail(&format!(
                "{label} linked as {}/{}, approved as {}/{}",
                client.account_name(),
                client.device_id(),
                ACCOUNTS[account],
                info.id
            ));
        }
        let name = format!("{}/{}", ACCOUNTS[account], info.id);
        // History transfer: what the approver held is now here too (once).
        let must = if history { had } else { BTreeSet::new() };
        if history {
            let got: BTreeSet<u64> = history_seqs(&client).into_iter().collect();
            if !must.is_subset(&got) {
                let missing: Vec<_> = must.difference(&got).collect();
                self.fail(&format!("{name} linked with history lacks {missing:?}"));
            }
        }
        self.devs.push(Dev {
            name: name.clone(),
            account,
            id: info.id,
            home,
            client: Some(client),
            approver: as_approver,
            status: Status::Live,
            offline_until: 0,
            snapshot: None,
            must,
            may: if history { during } else { BTreeSet::new() },
            last_restore: None,
            restored_at: Vec::new(),
            replay: Vec::new(),
            after_revocation: Vec::new(),
        });
        self.fig.links += 1;
        self.fig.links_with_history += u64::from(history);
        self.fig.approvers_linked += u64::from(as_approver);
        self.note(format!("{name} linked"));
        self.take_warnings(approver);
    }

    /// Whether device `i` holds the account key now (a listed approver restored from a copy
    /// older than a rotation no longer does).
    fn holds_key(&self, i: usize) -> bool {
        self.devs[i].client.as_ref().is_some_and(Client::is_approver)
    }

    /// `by` (an approver) revokes `target` (another device of its account).
    async fn revoke(&mut self, by: usize, target: usize) {
        let account = self.devs[by].account;
        let approvers_left =
            self.live_of(account).into_iter().filter(|&i| i != target && self.devs[i].approver).count();
        let id = self.devs[target].id;
        let (bn, tn) = (self.devs[by].name.clone(), self.devs[target].name.clone());
        self.note(format!("{bn} revokes {tn}"));
        let r = self.devs[by].client.as_mut().unwrap().revoke_device(id).await;
        if approvers_left == 0 {
            // The last approver: refused, nothing changes.
            if !matches!(r, Err(ClientError::LastApprover)) {
                self.fail(&format!("{bn} revoking {tn}, the last approver: {r:?}"));
            }
            self.fig.last_approver_refused += 1;
            return;
        }
        let revoked = self.ok(&format!("{bn} revokes {tn}"), r);
        if revoked.rotated != self.devs[target].approver || revoked.this_device {
            self.fail(&format!("{bn} revoking {tn}: {revoked:?}"));
        }
        if revoked.rotated {
            self.fig.rotations += 1;
            // A copy from before the rotation holds the old account key: not put back.
            for d in &mut self.devs {
                if d.account == account {
                    d.snapshot = None;
                }
            }
        }
        let after = self.next_seq();
        self.devs[target].status = Status::Revoked { after };
        for m in &mut self.msgs {
            if m.from == target {
                m.sender_forgot = true;
            }
        }
        self.fig.revocations += 1;
        self.take_warnings(by);
    }

    /// A device that holds no account key logs itself out.
    async fn logout(&mut self, i: usize) {
        let name = self.devs[i].name.clone();
        self.note(format!("{name} logs out"));
        let id = self.devs[i].id;
        let r = self.devs[i].client.as_mut().unwrap().revoke_device(id).await;
        let revoked = self.ok(&format!("{name} logs out"), r);
        if !revoked.this_device || revoked.rotated {
            self.fail(&format!("{name} logging out: {revoked:?}"));
        }
        if Client::exists(self.devs[i].home.path()) {
            self.fail(&format!("{name} logged out but its home still holds the account"));
        }
        self.devs[i].client = None;
        self.devs[i].status = Status::LoggedOut;
        for m in &mut self.msgs {
            if m.from == i {
                m.sender_forgot = true;
            }
        }
        self.fig.logouts += 1;
    }

    /// A revoked device tries to receive: whatever it gets must be from before.
    async fn revoked_receive(&mut self, i: usize) {
        let Some(c) = self.devs[i].client.as_mut() else { return };
        let r = c.receive(Duration::ZERO).await;
        self.fig.revoked_receives += 1;
        let name = self.devs[i].name.clone();
        match r {
            Ok(got) => {
                let texts: Vec<String> = got.into_iter().map(|m| m.text).collect();
                self.note(format!("{name} (revoked) receives {texts:?}"));
                self.devs[i].after_revocation.extend(texts);
            }
            Err(e) => self.note(format!("{name} (revoked) receive: {e}")),
        }
        if !Client::exists(self.devs[i].home.path()) {
            self.devs[i].client = None;
        }
    }

    async fn step(&mut self) {
        let ready = self.ready();
        let roll = self.rng.below(100);
        let kind = match roll {
            0..=37 => "send",
            38..=67 => "receive",
            68..=72 => "at-once",
            73..=75 => "offline",
            76..=79 => "restart",
            80..=82 => "snapshot",
            83..=85 => "restore",
            86..=91 => "link",
            92..=95 => "revoke",
            _ => "revoked-receive",
        };
        if self.skip.iter().any(|s| s == kind) {
            return;
        }
        match roll {
            // Send (sometimes a note to self).
            0..=37 => {
                let Some(from) = self.rng.pick(&ready) else { return };
                let own = self.devs[from].account;
                let to = if self.rng.chance(15) {
                    own
                } else {
                    (own + 1 + self.rng.below(ACCOUNTS.len() - 1)) % ACCOUNTS.len()
                };
                self.send(from, to).await;
            }
            // Receive over a faulty wire, or the plain way.
            38..=67 => {
                let Some(i) = self.rng.pick(&ready) else { return };
                if self.rng.chance(70) {
                    self.receive_faulty(i).await;
                } else {
                    self.receive_plain(i).await;
                }
            }
            // Two devices of different accounts write to each other at once.
            68..=72 => {
                let Some(a) = self.rng.pick(&ready) else { return };
                let others: Vec<usize> =
                    ready.iter().copied().filter(|&b| self.devs[b].account != self.devs[a].account).collect();
                let Some(b) = self.rng.pick(&others) else { return };
                self.cross_send(a, b).await;
            }
            // Offline for a while.
            73..=75 => {
                let Some(i) = self.rng.pick(&ready) else { return };
                let until = self.step + 5 + self.rng.below(25);
                self.devs[i].offline_until = until;
                self.fig.offline += 1;
                let name = self.devs[i].name.clone();
                self.note(format!("{name} offline until step {until}"));
            }
            76..=79 => {
                let Some(i) = self.rng.pick(&ready) else { return };
                let name = self.devs[i].name.clone();
                self.note(format!("{name} restarts"));
                self.restart(i);
                self.fig.restarts += 1;
            }
            80..=82 => {
                let Some(i) = self.rng.pick(&ready) else { return };
                self.snapshot(i);
            }
            83..=85 => {
                // A recent copy (a backup of the last hour, say): what its device sent since is
                // forgotten by it, and those messages are exempt where they did not arrive.
                let step = self.step;
                let with: Vec<usize> = ready
                    .iter()
                    .copied()
                    .filter(|&i| {
                        self.devs[i].snapshot.as_ref().is_some_and(|s| s.step + MAX_SNAPSHOT_AGE >= step)
                    })
                    .filter(|&i| self.devs[i].last_restore.is_none_or(|r| r + MIN_RESTORE_GAP <= step))
                    .collect();
                let Some(i) = self.rng.pick(&with) else { return };
                self.restore(i);
            }
            // Link a device into an account that has room.
            86..=91 => {
                let approvers: Vec<usize> = ready
                    .iter()
                    .copied()
                    .filter(|&i| self.holds_key(i) && self.live_of(self.devs[i].account).len() < MAX_DEVICES)
                    .collect();
                let Some(a) = self.rng.pick(&approvers) else { return };
                self.link(a).await;
            }
            // Revoke another device (an approver), or log out (a device without the key).
            92..=95 => {
                let Some(i) = self.rng.pick(&ready) else { return };
                let others: Vec<usize> =
                    self.live_of(self.devs[i].account).into_iter().filter(|&t| t != i).collect();
                let only_approver = !others.iter().any(|&t| self.devs[t].approver);
                if self.devs[i].approver && !self.holds_key(i) {
                    // Listed as an approver, but its key went stale (restored from a copy older
                    // than a rotation, it followed the rotations and deleted the old key).
                    return;
                }
                if self.devs[i].approver && only_approver && self.rng.chance(10) {
                    // Revoking the last approver (itself) is refused.
                    self.revoke(i, i).await;
                } else if self.devs[i].approver {
                    let Some(t) = self.rng.pick(&others) else { return };
                    self.revoke(i, t).await;
                } else if self.rng.chance(40) && !self.skip.iter().any(|s| s == "logout") {
                    self.logout(i).await;
                }
            }
            // A revoked device tries its luck.
            _ => {
                let revoked: Vec<usize> = (0..self.devs.len())
                    .filter(|&i| {
                        matches!(self.devs[i].status, Status::Revoked { .. }) && self.devs[i].client.is_some()
                    })
                    .collect();
                let Some(i) = self.rng.pick(&revoked) else { return };
                self.revoked_receive(i).await;
            }
        }
    }

    /// Every live device back online, then receive rounds until no mailbox holds anything
    /// (retry requests answered, resends and receipts delivered).
    async fn drain(&mut self) {
        for d in &mut self.devs {
            d.offline_until = 0;
        }
        let live: Vec<usize> = self.ready();
        for round in 0..MAX_DRAIN_ROUNDS {
            self.fig.drain_rounds += 1;
            for &i in &live {
                self.receive_plain(i).await;
            }
            let mut pending = 0;
            for &i in &live {
                let r = self.devs[i].client.as_mut().unwrap().fetch_envelopes().await;
                pending += self.ok("drain fetch", r).len();
            }
            self.log.push(format!("[drain {round}] {pending} envelopes pending"));
            if pending == 0 && round >= 1 {
                return;
            }
        }
        self.fail(&format!("mailboxes still hold envelopes after {MAX_DRAIN_ROUNDS} drain rounds"));
    }

    /// The final check on every device that still has a store.
    fn check(&mut self) {
        let mut report = String::new();
        for i in 0..self.devs.len() {
            let d = &self.devs[i];
            let revoked_after = match d.status {
                Status::Live => None,
                Status::Revoked { after } => Some(after),
                Status::LoggedOut => continue,
            };
            let mut present = match &d.client {
                Some(c) if Client::exists(d.home.path()) => history_seqs(c),
                _ => Vec::new(),
            };
            present.extend(d.after_revocation.iter().filter_map(|t| seq_of(t)));
            if revoked_after.is_some() {
                present.sort_unstable();
                present.dedup();
            }
            let exempt = |s: u64| {
                let m = &self.msgs[s as usize];
                m.sender_forgot
            };
            let f = judge(&present, &d.must, &d.may, revoked_after, &exempt);
            if revoked_after.is_none() {
                self.fig.exempt_missing +=
                    d.must.iter().filter(|&&s| exempt(s) && !present.contains(&s)).count() as u64;
            }
            if f.is_empty() {
                continue;
            }
            let _ = writeln!(report, "{} ({:?}, restored at {:?}):", d.name, d.status, d.restored_at);
            let show = |seqs: &[u64]| -> String {
                seqs.iter()
                    .map(|&s| {
                        let m = &self.msgs[s as usize];
                        format!("\n      {} (step {})", m.text, m.step)
                    })
                    .collect()
            };
            for (what, seqs) in [
                ("missing (never arrived, or left undecryptable)", &f.missing),
                ("more than once", &f.duplicated),
                ("not meant for it", &f.unexpected),
                ("sent after its revocation", &f.after_revocation),
            ] {
                if !seqs.is_empty() {
                    let _ = writeln!(report, "    {what}: {}", show(seqs));
                }
            }
        }
        if !report.is_empty() {
            self.fail(&format!("the final check failed:\n{report}"));
        }
    }

    fn figures(&self, elapsed: Duration) -> String {
        let f = &self.fig;
        let live = self.devs.iter().filter(|d| d.status == Status::Live).count();
        format!(
            "{{\"seed\":{},\"steps\":{},\"wall_secs\":{:.1},\"messages\":{},\"notes_to_self\":{},\
             \"concurrent_starts\":{},\"receives\":{},\"envelopes_processed\":{},\"dropped\":{},\
             \"duplicated\":{},\"replayed\":{},\"reordered_batches\":{},\"devices_linked\":{},\
             \"linked_with_history\":{},\"linked_as_approver\":{},\"revoked\":{},\"rotations\":{},\
             \"logged_out\":{},\"last_approver_refused\":{},\"offline_periods\":{},\"restarts\":{},\
             \"snapshots\":{},\"restores\":{},\"lost_by_restore\":{},\"exempt_missing\":{},\
             \"revoked_receives\":{},\"undecryptable_warnings\":{},\"drain_rounds\":{},\
             \"devices_live_at_end\":{},\"skipped\":\"{}\"}}",
            self.seed,
            steps(),
            elapsed.as_secs_f64(),
            f.messages,
            f.notes_to_self,
            f.concurrent_starts,
            f.receives,
            f.envelopes,
            f.dropped,
            f.duplicated,
            f.replayed,
            f.reordered,
            f.links,
            f.links_with_history,
            f.approvers_linked,
            f.revocations,
            f.rotations,
            f.logouts,
            f.last_approver_refused,
            f.offline,
            f.restarts,
            f.snapshots,
            f.restores,
            f.lost_by_restore,
            f.exempt_missing,
            f.revoked_receives,
            f.undecryptable_warnings,
            f.drain_rounds,
            live,
            self.skip.join(",")
        )
    }
}

fn steps() -> usize {
    std::env::var("TACIT_SOAK_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_STEPS)
}

fn seed() -> u64 {
    match std::env::var("TACIT_SOAK_SEED").ok().as_deref() {
        None => CI_SEED,
        Some("random") => {
            let mut b = [0u8; 8];
            aws_lc_rs::rand::fill(&mut b).unwrap();
            u64::from_le_bytes(b) >> 11 // short enough to read out
        }
        Some(s) => s.parse().expect("TACIT_SOAK_SEED is a number or `random`"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak() {
    let seed = seed();
    let steps = steps();
    let backend = match std::env::var("TACIT_SOAK_BACKEND").as_deref() {
        Ok("postgres") => Backend::Postgres,
        _ => Backend::Sqlite,
    };
    let skip: Vec<String> = std::env::var("TACIT_SOAK_SKIP")
        .unwrap_or_else(|_| CI_SKIP.join(","))
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    eprintln!(
        "soak: seed {seed}, {steps} steps, {backend:?}, skipping {skip:?} (replay with TACIT_SOAK_SEED={seed})"
    );
    let started = Instant::now();
    // The real server; its per-minute rate limits widened, since a run compresses hours of
    // use into seconds (the limits themselves are the server's tests' business).
    let relay = Relay::start_with(backend, false, |c| {
        c.limits.bundle_fetches_per_minute = 1_000_000;
        c.limits.one_time_fetches_per_target_per_minute = 1_000_000;
        c.limits.requests_per_second = 100_000;
        c.limits.request_burst = 100_000;
        // Links too: a run links far more devices a minute from one address than a person
        // would (with the default, a refused offer left the approval waiting for a code).
        c.limits.link_offers_per_minute = 1_000_000;
    })
    .await;
    let mut soak = Soak {
        seed,
        rng: Rng(seed),
        relay,
        devs: Vec::new(),
        msgs: Vec::new(),
        step: 0,
        log: Vec::new(),
        fig: Figures::default(),
        skip,
    };
    for (a, name) in ACCOUNTS.iter().enumerate() {
        let home = tempfile::tempdir().unwrap();
        let client = account(&soak.relay, home.path(), name).await;
        soak.devs.push(Dev {
            name: format!("{name}/1"),
            account: a,
            id: 1,
            home,
            client: Some(client),
            approver: true,
            status: Status::Live,
            offline_until: 0,
            snapshot: None,
            must: BTreeSet::new(),
            may: BTreeSet::new(),
            last_restore: None,
            restored_at: Vec::new(),
            replay: Vec::new(),
            after_revocation: Vec::new(),
        });
    }
    while soak.step < steps {
        if tokio::time::timeout(STEP_TIMEOUT, soak.step()).await.is_err() {
            soak.fail(&format!(
                "the action did not finish within {STEP_TIMEOUT:?} (the last line of the log)"
            ));
        }
        soak.step += 1;
    }
    soak.drain().await;
    // Whatever a revoked device can still do, it gets nothing sent after its revocation.
    let revoked: Vec<usize> = (0..soak.devs.len())
        .filter(|&i| matches!(soak.devs[i].status, Status::Revoked { .. }) && soak.devs[i].client.is_some())
        .collect();
    for i in revoked {
        soak.revoked_receive(i).await;
    }
    soak.check();
    let figures = soak.figures(started.elapsed());
    eprintln!("SOAK-FIGURES {figures}");
    soak.relay.stop().await;
}
