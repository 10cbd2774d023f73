//! Issue 9, "sessions that heal, receipts": delivery receipts, the outbox, retry requests
//! and notes to self, against the real server on loopback, on SQLite and on PostgreSQL.

// Also included by `server_tests` (each test module has its own copy of the harness).
#[allow(clippy::duplicate_mod)]
#[path = "../tests/common/mod.rs"]
#[macro_use]
mod common;

use std::time::Duration;

use common::{Backend, Relay, account, texts};

use tacit_protocol::{AccountName, DeviceId, Message, Session};

use crate::messaging::{OutboxMode, Outgoing};
use crate::payload::Payload;
use crate::tests::rand_id;
use crate::{Client, ReceivedMessage, store};

on_both!(
    receipts_are_counted_and_the_outbox_forgets_what_every_device_has,
    a_note_to_self_with_one_device_is_stored_and_sends_nothing,
    a_message_lost_to_a_restored_store_is_sent_again_and_read_once,
    a_message_lost_with_its_session_is_sent_again_and_read_once,
    a_message_to_a_used_one_time_key_is_sent_again_and_read_once,
    a_resend_of_a_message_already_read_is_not_shown_twice_and_unknown_retries_are_refused,
    a_receipt_for_an_unknown_message_is_refused,
    a_group_rejoin_request_is_honoured_only_for_the_member_device_that_sent_it,
    a_device_refreshes_its_group_keys_when_due_and_not_before,
    a_crash_at_each_step_of_a_commit_leaves_the_group_usable_for_everyone,
);

fn one(got: Vec<ReceivedMessage>) -> String {
    assert_eq!(got.len(), 1, "{got:?}");
    got[0].text.clone()
}

fn name(n: &str) -> AccountName {
    AccountName::new(n).unwrap()
}

/// Copies every file of `from` into `to`, replacing what `to` held (`cp -a`, a backup
/// restore).
fn replace_folder(from: &std::path::Path, to: &std::path::Path) {
    for e in std::fs::read_dir(to).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// `(delivered, devices)` of each sent message in the conversation with `peer`.
fn delivered(c: &Client, peer: &str) -> Vec<(Option<u32>, Option<u32>)> {
    c.history(peer).unwrap().into_iter().filter(|e| e.outgoing).map(|e| (e.delivered, e.devices)).collect()
}

/// Sends `payload` to every device of `to` as it is (nothing kept).
async fn send_raw(c: &mut Client, to: &str, payload: &Payload) {
    let bytes = payload.encode().unwrap();
    let out = Outgoing {
        payload: &bytes,
        sent_time_ms: 1,
        message_id: None,
        history: None,
        outbox: OutboxMode::None,
    };
    c.online().await.unwrap();
    c.send_payload(&name(to), &out).await.unwrap();
}

/// A message counts the recipient devices that receipted it; the outbox keeps its plaintext
/// until then. Receipts are not messages and are never receipted themselves; with one
/// device there is no sent transcript to send.
async fn receipts_are_counted_and_the_outbox_forgets_what_every_device_has(backend: Backend) {
    let relay = Relay::start(backend).await;
    let (ha, hb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = account(&relay, ha.path(), "alice").await;
    let mut bob = account(&relay, hb.path(), "bob").await;
    alice.send_text("bob", "one").await.unwrap();
    alice.send_text("bob", "two").await.unwrap();
    assert_eq!(delivered(&alice, "bob"), [(Some(0), Some(1)); 2]);
    assert_eq!(alice.store.outbox().unwrap().len(), 2);
    assert!(alice.store.pending_sends().unwrap().is_empty(), "no other own device: no transcript queued");

    assert_eq!(bob.receive(Duration::ZERO).await.unwrap().len(), 2);
    assert!(bob.store.pending_receipts().unwrap().is_empty(), "sent at the end of the receive");
    let ids =
        |c: &Client, peer| c.history(peer).unwrap().into_iter().map(|e| e.message_id).collect::<Vec<_>>();
    assert_eq!(ids(&bob, "alice"), ids(&alice, "bob"), "one id in every copy");
    assert!(ids(&bob, "alice").iter().all(Option::is_some));

    assert!(alice.receive(Duration::ZERO).await.unwrap().is_empty(), "a receipt is not a message");
    assert!(alice.take_warnings().is_empty());
    assert_eq!(delivered(&alice, "bob"), [(Some(1), Some(1)); 2]);
    assert!(alice.store.outbox().unwrap().is_empty(), "forgotten once every device has it");
    // One receipt message for both (batched per sender), and none back for it.
    assert!(bob.fetch_envelopes().await.unwrap().is_empty(), "receipts are never receipted");
    // Received messages carry no counts.
    assert!(bob.history("alice").unwrap().iter().all(|e| e.delivered.is_none() && e.devices.is_none()));
    relay.stop().await;
}

/// A note to self with no other own device: stored as sent, nothing to send; the own device
/// list it fetched was checked against the own account key.
async fn a_note_to_self_with_one_device_is_stored_and_sends_nothing(backend: Backend) {
    let relay = Relay::start(backend).await;
    let ha = tempfile::tempdir().unwrap();
    let mut alice = account(&relay, ha.path(), "alice").await;
    let sent = alice.send_text("alice", "note").await.unwrap();
    assert!(sent.devices.is_empty());
    let h = alice.history("alice").unwrap();
    assert_eq!(h.len(), 1);
    assert!(h[0].outgoing && h[0].text == "note" && h[0].devices.is_none() && h[0].message_id.is_some());
    assert_eq!(h[0].server_time_ms, Some(sent.sent_time_ms), "this device's clock: no server saw it");
    assert!(alice.store.outbox().unwrap().is_empty() && alice.store.pending_sends().unwrap().is_empty());
    // The own list was checked against the own account key, pinned (not trusted on first use).
    let own = alice.store.contact("alice").unwrap().unwrap();
    assert!(own.verified && own.account_key == *alice.me.account_key.as_bytes());
    assert!(alice.receive(Duration::ZERO).await.unwrap().is_empty());
    assert!(alice.take_warnings().is_empty());
    relay.stop().await;
}

/// (a) bob's whole home put back from a copy taken before the last ratchet steps: alice's
/// next message cannot be decrypted by it; bob asks for it again, alice resends it over a new
/// session, and bob reads it exactly once (before issue 9 it was lost).
async fn a_message_lost_to_a_restored_store_is_sent_again_and_read_once(backend: Backend) {
    let relay = Relay::start(backend).await;
    let (ha, hb, backup) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = account(&relay, ha.path(), "alice").await;
    let mut bob = account(&relay, hb.path(), "bob").await;
    alice.send_text("bob", "one").await.unwrap();
    assert_eq!(one(bob.receive(Duration::ZERO).await.unwrap()), "one");
    drop(bob);
    replace_folder(hb.path(), backup.path());
    let mut bob = Client::open(hb.path(), None).unwrap();
    // Two ratchet steps each way after the copy: the copy has no key for what comes next.
    for (i, t) in ["two", "three", "four"].iter().enumerate() {
        if i % 2 == 0 {
            bob.send_text("alice", t).await.unwrap();
            assert_eq!(one(alice.receive(Duration::ZERO).await.unwrap()), *t);
        } else {
            alice.send_text("bob", t).await.unwrap();
            assert_eq!(one(bob.receive(Duration::ZERO).await.unwrap()), *t);
        }
    }
    alice.send_text("bob", "five").await.unwrap();
    drop(bob);
    replace_folder(backup.path(), hb.path());
    let mut bob = Client::open(hb.path(), None).unwrap();

    assert!(bob.receive(Duration::ZERO).await.unwrap().is_empty());
    let w = bob.take_warnings();
    assert!(w.iter().any(|w| w.contains("restored from an old copy")), "{w:?}");
    assert!(w.iter().any(|w| w.contains("asked the sender to send it again")), "{w:?}");
    assert!(alice.receive(Duration::ZERO).await.unwrap().is_empty());
    let w = alice.take_warnings();
    assert!(w.iter().all(|w| w.contains("started a new session")), "no refusal: {w:?}");
    assert_eq!(one(bob.receive(Duration::ZERO).await.unwrap()), "five");
    assert!(bob.receive(Duration::ZERO).await.unwrap().is_empty(), "exactly once");
    assert_eq!(texts(&bob, "alice"), ["one", "five"], "the copy's history, and the message it lost");
    // Bob's receipt for it reaches alice; the conversation goes on both ways.
    assert!(alice.receive(Duration::ZERO).await.unwrap().is_empty());
    assert_eq!(delivered(&alice, "bob").last(), Some(&(Some(1), Some(1))));
    bob.send_text("alice", "six").await.unwrap();
    assert_eq!(one(alice.receive(Duration::ZERO).await.unwrap()), "six");
    alice.send_text("bob", "seven").await.unwrap();
    assert_eq!(one(bob.receive(Duration::ZERO).await.unwrap()), "seven");
    relay.stop().await;
}

/// (b) bob loses his sessions with alice (not a restore: nothing tells him): her next
/// message is undecryptable; his retry request gets it resent over a new session.
async fn a_message_lost_with_its_session_is_sent_again_and_read_once(backend: Backend) {
    let relay = Relay::start(backend).await;
    let (ha, hb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = account(&relay, ha.path(), "alice").await;
    let mut bob = account(&relay, hb.path(), "bob").await;
    alice.send_text("bob", "one").await.unwrap();
    assert_eq!(one(bob.receive(Duration::ZERO).await.unwrap()), "one");
    bob.send_text("alice", "two").await.unwrap();
    assert_eq!(one(alice.receive(Duration::ZERO).await.unwrap()), "two");
    let tx = bob.store.tx().unwrap();
    let deleted = store::delete_sessions(&tx, "alice", None).unwrap();
    tx.commit().unwrap();
    bob.gens.forget(&deleted).unwrap();
    alice.send_text("bob", "three").await.unwrap();

    assert!(bob.receive(Duration::ZERO).await.unwrap().is_empty());
    let w = bob.take_warnings();
    assert!(w.iter().any(|w| w.contains("asked the sender to send it again")), "{w:?}");
    assert!(alice.receive(Duration::ZERO).await.unwrap().is_empty());
    assert_eq!(one(bob.receive(Duration::ZERO).await.unwrap()), "three");
    assert!(bob.receive(Duration::ZERO).await.unwrap().is_empty());
    assert_eq!(texts(&bob, "alice"), ["one", "two", "three"]);
    alice.send_text("bob", "four").await.unwrap();
    assert_eq!(one(bob.receive(Duration::ZERO).await.unwrap()), "four");
    bob.send_text("alice", "five").await.unwrap();
    assert_eq!(one(alice.receive(Duration::ZERO).await.unwrap()), "five");
    relay.stop().await;
}

/// (c) alice's first message names a one-time key bob has already used (the server handed
/// it out twice, or bob used it meanwhile): no session can be made from it; resent over a new
/// session from a fresh bundle, it is read once.
async fn a_message_to_a_used_one_time_key_is_sent_again_and_read_once(backend: Backend) {
    let relay = Relay::start(backend).await;
    let (ha, hb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = account(&relay, ha.path(), "alice").await;
    let mut bob = account(&relay, hb.path(), "bob").await;
    bob.safety_number("alice").await.unwrap(); // bob knows alice's devices
    alice.send_text("bob", "first").await.unwrap();
    // The one-time key it names is used on bob's side before he reads it.
    let envelopes = bob.fetch_envelopes().await.unwrap();
    let Message::Prekey(p) = Message::from_bytes(envelopes[0].content.as_slice()).unwrap() else {
        panic!("a first message")
    };
    let dev = bob.stored_device(&name("alice"), DeviceId::new(1).unwrap()).unwrap().unwrap();
    let mut prekeys = bob.load_prekeys().unwrap();
    let me = bob.me.address();
    Session::accept(&bob.me.identity, me, &mut prekeys, &dev, &p).unwrap();
    bob.prekey_mark.raise(prekeys.generation()).unwrap();
    store::set_meta(bob.store.conn(), crate::client::meta::PREKEYS, &prekeys.to_bytes()).unwrap();

    assert!(bob.receive(Duration::ZERO).await.unwrap().is_empty());
    let w = bob.take_warnings();
    assert!(w.iter().any(|w| w.contains("asked the sender to send it again")), "{w:?}");
    assert!(alice.receive(Duration::ZERO).await.unwrap().is_empty());
    assert_eq!(one(bob.receive(Duration::ZERO).await.unwrap()), "first");
    assert!(bob.receive(Duration::ZERO).await.unwrap().is_empty());
    assert_eq!(texts(&bob, "alice"), ["first"]);
    bob.send_text("alice", "second").await.unwrap();
    assert_eq!(one(alice.receive(Duration::ZERO).await.unwrap()), "second");
    relay.stop().await;
}

/// A retry request for an envelope alice did send bob makes her resend it (same message id);
/// bob, who read the original as well, shows and stores it once. A retry request naming an
/// envelope never sent to the requesting device is refused with a warning: nothing is
/// queued or sent.
async fn a_resend_of_a_message_already_read_is_not_shown_twice_and_unknown_retries_are_refused(
    backend: Backend,
) {
    let relay = Relay::start(backend).await;
    let (ha, hb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = account(&relay, ha.path(), "alice").await;
    let mut bob = account(&relay, hb.path(), "bob").await;
    alice.send_text("bob", "one").await.unwrap();
    let envelopes = bob.fetch_envelopes().await.unwrap();
    let digest = crate::messaging::envelope_digest(envelopes[0].content.as_slice());
    let request = |digest| Payload::RetryRequest {
        sent_time_ms: 1,
        device: 1,
        digest,
        server_time_ms: envelopes[0].server_time_ms,
    };
    // Bob asks before reading the original (as if it had failed), then reads both copies.
    send_raw(&mut bob, "alice", &request(digest)).await;
    assert!(alice.receive(Duration::ZERO).await.unwrap().is_empty());
    assert!(alice.take_warnings().is_empty());
    assert_eq!(bob.fetch_envelopes().await.unwrap().len(), 2, "the original and the resend");
    assert_eq!(one(bob.receive(Duration::ZERO).await.unwrap()), "one");
    assert!(bob.take_warnings().is_empty());
    assert_eq!(texts(&bob, "alice"), ["one"], "stored once");

    // Never sent to bob's device: refused, nothing queued, nothing sent.
    send_raw(&mut bob, "alice", &request(rand_id())).await;
    assert!(alice.receive(Duration::ZERO).await.unwrap().is_empty());
    let w = alice.take_warnings();
    assert!(w.len() == 1 && w[0].contains("refused a request from bob device 1"), "{w:?}");
    assert!(alice.store.pending_sends().unwrap().is_empty());
    assert!(bob.fetch_envelopes().await.unwrap().is_empty(), "nothing was sent to bob");
    relay.stop().await;
}

/// A receipt naming a message never sent to its sender is refused with a warning and
/// stores nothing (the known id beside it is recorded).
async fn a_receipt_for_an_unknown_message_is_refused(backend: Backend) {
    let relay = Relay::start(backend).await;
    let (ha, hb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = account(&relay, ha.path(), "alice").await;
    let mut bob = account(&relay, hb.path(), "bob").await;
    alice.send_text("bob", "one").await.unwrap();
    let id = alice.history("bob").unwrap()[0].message_id.unwrap();
    send_raw(&mut bob, "alice", &Payload::Receipt { sent_time_ms: 1, message_ids: vec![rand_id()] }).await;
    assert!(alice.receive(Duration::ZERO).await.unwrap().is_empty());
    let w = alice.take_warnings();
    assert!(w.len() == 1 && w[0].contains("refused a delivery receipt from bob device 1"), "{w:?}");
    let receipts: i64 =
        alice.store.conn().query_row("SELECT count(*) FROM receipts", [], |r| r.get(0)).unwrap();
    assert_eq!(receipts, 0, "nothing stored");
    assert_eq!(delivered(&alice, "bob"), [(Some(0), Some(1))]);
    // The positive control: the same path records a known id.
    send_raw(&mut bob, "alice", &Payload::Receipt { sent_time_ms: 1, message_ids: vec![rand_id(), id] })
        .await;
    assert!(alice.receive(Duration::ZERO).await.unwrap().is_empty());
    assert_eq!(alice.take_warnings().len(), 1, "the unknown one");
    assert_eq!(delivered(&alice, "bob"), [(Some(1), Some(1))]);
    relay.stop().await;
}

/// Issue 11, rejoin: a member takes a device back into a group only when the request's
/// KeyPackage names the device that sent it and that device is a member; once per 10
/// minutes per device and group. Forged requests change nothing.
async fn a_group_rejoin_request_is_honoured_only_for_the_member_device_that_sent_it(backend: Backend) {
    let relay = Relay::start(backend).await;
    let homes: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut alice = account(&relay, homes[0].path(), "alice").await;
    let mut bob = account(&relay, homes[1].path(), "bob").await;
    let mut carol = account(&relay, homes[2].path(), "carol").await;
    let mut dave = account(&relay, homes[3].path(), "dave").await;
    for c in [&mut bob, &mut carol, &mut dave] {
        c.receive(Duration::ZERO).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    alice.create_group("g", &["bob", "carol"]).await.unwrap();
    bob.receive(Duration::ZERO).await.unwrap();
    carol.receive(Duration::ZERO).await.unwrap();
    let (id, _) = alice.find_group("g").unwrap();
    let epoch = alice.group("g").unwrap().epoch;
    let rejoin =
        |kp: Vec<u8>| Payload::GroupRejoin { sent_time_ms: 1, group_id: id.clone(), key_package: kp };
    alice.take_warnings();

    // Carol asks with a KeyPackage of Bob's: refused, with a notice.
    let bobs = carol.api.take_key_package("bob", 1).await.unwrap().key_package.0;
    send_raw(&mut carol, "alice", &rejoin(bobs)).await;
    alice.receive(Duration::ZERO).await.unwrap();
    let w = alice.take_warnings();
    assert!(w.iter().any(|w| w.contains("refused a request from carol device 1")), "{w:?}");
    assert_eq!(alice.group("g").unwrap().epoch, epoch);
    // Dave, not a member, asks with his own: nothing to take back.
    let daves = dave.api.take_key_package("dave", 1).await.unwrap().key_package.0;
    send_raw(&mut dave, "alice", &rejoin(daves)).await;
    alice.receive(Duration::ZERO).await.unwrap();
    assert_eq!(alice.group("g").unwrap().epoch, epoch);
    assert_eq!(alice.group("g").unwrap().members.len(), 3);

    // Bob asks with his own (positive control): one commit takes him back in; he joins
    // from its Welcome, one leaf still.
    let own = bob.api.take_key_package("bob", 1).await.unwrap().key_package.0;
    send_raw(&mut bob, "alice", &rejoin(own)).await;
    alice.receive(Duration::ZERO).await.unwrap();
    assert_eq!(alice.group("g").unwrap().epoch, epoch + 1);
    bob.receive(Duration::ZERO).await.unwrap();
    let b = bob.group("g").unwrap();
    assert_eq!((b.epoch, b.members.len()), (epoch + 1, 3));
    bob.group_send("g", "still here").await.unwrap();
    assert_eq!(one(alice.receive(Duration::ZERO).await.unwrap()), "still here");
    assert_eq!(one(carol.receive(Duration::ZERO).await.unwrap()), "still here");
    // Asked again at once: not honoured again within the interval.
    let again = bob.api.take_key_package("bob", 1).await.unwrap().key_package.0;
    send_raw(&mut bob, "alice", &rejoin(again)).await;
    alice.receive(Duration::ZERO).await.unwrap();
    assert_eq!(alice.group("g").unwrap().epoch, epoch + 1);
    relay.stop().await;
}

/// Issue 11, key refresh on a schedule: a device that has not committed in a group for
/// [`crate::groups::REFRESH_INTERVAL_MS`] (plus up to an eighth, at random) commits an
/// update at the end of a receive; the others follow. Not before it is due; a store from
/// before the schedule existed goes by when it joined.
async fn a_device_refreshes_its_group_keys_when_due_and_not_before(backend: Backend) {
    use crate::groups::REFRESH_INTERVAL_MS as WEEK;
    let relay = Relay::start(backend).await;
    let homes: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut alice = account(&relay, homes[0].path(), "alice").await;
    let mut bob = account(&relay, homes[1].path(), "bob").await;
    bob.receive(Duration::ZERO).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    alice.create_group("g", &["bob"]).await.unwrap();
    bob.receive(Duration::ZERO).await.unwrap();
    let (id, _) = alice.find_group("g").unwrap();
    let due = |c: &Client| -> (u64, u64) {
        c.store
            .conn()
            .query_row("SELECT refreshed_ms, due_ms FROM mls_refresh WHERE group_id = ?1", [&id], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
            })
            .unwrap()
    };
    let set_due = |c: &Client, refreshed: u64, due: u64| {
        c.store
            .conn()
            .execute(
                "UPDATE mls_refresh SET refreshed_ms = ?2, due_ms = ?3 WHERE group_id = ?1",
                rusqlite::params![id, refreshed as i64, due as i64],
            )
            .unwrap();
    };
    let epoch = |c: &Client| c.group("g").unwrap().epoch;
    // Both scheduled a week on, within an eighth of it more.
    let now = crate::client::now_ms();
    for c in [&alice, &bob] {
        let (refreshed, due) = due(c);
        assert!(refreshed <= now && refreshed + 60_000 > now, "{refreshed} {now}");
        assert!(due >= refreshed + WEEK && due <= refreshed + WEEK + WEEK / 8, "{due}");
    }
    // Not due: a receive commits nothing.
    let e = epoch(&alice);
    alice.receive(Duration::ZERO).await.unwrap();
    assert_eq!(epoch(&alice), e);

    // Due: Alice's next receive commits an update; Bob follows and the group goes on.
    set_due(&alice, now - WEEK - 1, 0);
    alice.receive(Duration::ZERO).await.unwrap();
    assert_eq!(epoch(&alice), e + 1);
    let (refreshed, next) = due(&alice);
    assert!(refreshed >= now && next >= refreshed + WEEK, "{refreshed} {next}");
    bob.receive(Duration::ZERO).await.unwrap();
    assert_eq!(epoch(&bob), e + 1);
    bob.group_send("g", "after the refresh").await.unwrap();
    // A message received rewrites the group's secret state, not its tree (which changes
    // only with a commit: the refresh above wrote it).
    let trees = crate::groups::TREE_WRITES.get();
    assert_eq!(one(alice.receive(Duration::ZERO).await.unwrap()), "after the refresh");
    assert_eq!(crate::groups::TREE_WRITES.get(), trees);
    bob.group_send("g", "again").await.unwrap();
    drop(alice);
    let mut alice = Client::open(homes[0].path(), None).unwrap();
    assert_eq!(one(alice.receive(Duration::ZERO).await.unwrap()), "again");

    // Due by the row, but the last refresh was just now (the group's interval grew, say):
    // put off to a full interval after it, no commit.
    set_due(&alice, now, 0);
    alice.receive(Duration::ZERO).await.unwrap();
    assert_eq!(epoch(&alice), e + 1);
    assert!(due(&alice).1 >= now + WEEK);

    // A store from before the schedule: no row, joined over a week ago.
    bob.store.conn().execute("DELETE FROM mls_refresh WHERE group_id = ?1", [&id]).unwrap();
    bob.store
        .conn()
        .execute(
            "UPDATE mls_groups SET joined_ms = ?2 WHERE id = ?1",
            rusqlite::params![id, (now - WEEK - 1) as i64],
        )
        .unwrap();
    bob.receive(Duration::ZERO).await.unwrap();
    assert_eq!(epoch(&bob), e + 2);
    alice.receive(Duration::ZERO).await.unwrap();
    assert_eq!(epoch(&alice), e + 2);
    assert!(due(&bob).1 >= now + WEEK);
    relay.stop().await;
}

/// Issue 11, crash injection: the client stops at each step of sending a commit (made;
/// stored with its request; taken by the relay) and of processing one (processed, not
/// stored), and is opened again from its store, as after a kill. Every member ends in the
/// same epoch and reads what is sent next; no commit is lost or applied twice. (Without
/// the stored request, a crash after the relay took the commit leaves the device an epoch
/// behind for good: the positive control this test was checked with.)
async fn a_crash_at_each_step_of_a_commit_leaves_the_group_usable_for_everyone(backend: Backend) {
    use crate::groups::{CRASH_AT, CommitStep};
    let relay = Relay::start(backend).await;
    let homes: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut alice = account(&relay, homes[0].path(), "alice").await;
    let mut bob = account(&relay, homes[1].path(), "bob").await;
    let mut carol = account(&relay, homes[2].path(), "carol").await;
    for c in [&mut bob, &mut carol] {
        c.receive(Duration::ZERO).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    alice.create_group("g", &["bob", "carol"]).await.unwrap();
    bob.receive(Duration::ZERO).await.unwrap();
    carol.receive(Duration::ZERO).await.unwrap();
    let pending = |c: &Client| -> i64 {
        c.store.conn().query_row("SELECT count(*) FROM mls_commit_pending", [], |r| r.get(0)).unwrap()
    };

    for step in [CommitStep::Made, CommitStep::Stored, CommitStep::Posted] {
        let epoch = alice.group("g").unwrap().epoch;
        CRASH_AT.set(Some(step));
        let r = alice.group_update("g").await;
        assert!(matches!(r, Err(crate::ClientError::Internal("injected crash"))), "{step:?}: {r:?}");
        drop(alice);
        alice = Client::open(homes[0].path(), None).unwrap();
        assert_eq!(pending(&alice), i64::from(step != CommitStep::Made), "{step:?}");
        // The next send settles the commit first: posted again (taken now, or answered as
        // taken before), merged once.
        let text = format!("after a crash at {step:?}");
        alice.group_send("g", &text).await.unwrap();
        let want = if step == CommitStep::Made { epoch } else { epoch + 1 };
        assert_eq!((alice.group("g").unwrap().epoch, pending(&alice)), (want, 0), "{step:?}");
        for c in [&mut bob, &mut carol] {
            assert_eq!(one(c.receive(Duration::ZERO).await.unwrap()), text);
            assert_eq!(c.group("g").unwrap().epoch, want, "{step:?}");
        }
    }

    // Bob stops with Carol's commit processed but not stored: it comes again and applies.
    let epoch = carol.group_update("g").await.unwrap().epoch;
    CRASH_AT.set(Some(CommitStep::Processed));
    assert!(bob.receive(Duration::ZERO).await.is_err());
    drop(bob);
    bob = Client::open(homes[1].path(), None).unwrap();
    assert_eq!(bob.group("g").unwrap().epoch, epoch - 1);
    bob.receive(Duration::ZERO).await.unwrap();
    assert_eq!(bob.group("g").unwrap().epoch, epoch);
    bob.group_send("g", "after a crash while processing").await.unwrap();
    assert_eq!(one(alice.receive(Duration::ZERO).await.unwrap()), "after a crash while processing");
    assert_eq!(one(carol.receive(Duration::ZERO).await.unwrap()), "after a crash while processing");
    assert_eq!(alice.group("g").unwrap().epoch, epoch);
    relay.stop().await;
}
