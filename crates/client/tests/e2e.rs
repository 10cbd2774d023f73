//! Clients against the real server on loopback, each test on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)] // a test file

#[macro_use]
mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Backend, Relay, account, texts};
use tacit_client::{Client, ClientError};
use tacit_protocol::{KemPrekeyKind, Message};

on_both!(
    two_clients_converse_verify_and_survive_restarts,
    verified_contact_with_a_new_identity_is_refused_until_reverified,
    a_store_restored_from_an_old_copy_starts_a_fresh_session_and_the_conversation_goes_on,
    fetched_but_unprocessed_messages_come_back_once,
    racing_senders_get_distinct_one_time_keys,
    a_reinstalled_unverified_contact_who_writes_first_is_delivered_with_a_warning,
    a_reinstalled_verified_contact_who_writes_first_is_held_until_verified,
    a_whole_home_restored_from_an_older_copy_is_detected_and_both_directions_decrypt,
);

/// Copies every file of `from` into `to` (the home folder holds files only), replacing
/// what `to` held: what `cp -a` or a backup restore does to it.
fn replace_folder(from: &std::path::Path, to: &std::path::Path) {
    for e in std::fs::read_dir(to).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Issue 8, point 2: the whole home folder (store, generation marks, key file) put back from
/// an older copy. Before, every later message was "could not decrypt" in both directions;
/// now the next command detects it (its state counter is below the server's), warns,
/// replaces its sessions and prekeys and sends bob a session reset over a new session, and
/// the next message in each direction decrypts. A copy that is not behind is never taken
/// for one (no warning anywhere else in the conversation).
async fn a_whole_home_restored_from_an_older_copy_is_detected_and_both_directions_decrypt(backend: Backend) {
    let relay = Relay::start(backend).await;
    let (ha, hb, backup) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = account(&relay, ha.path(), "alice").await;
    let mut bob = account(&relay, hb.path(), "bob").await;
    let one = |got: Vec<tacit_client::ReceivedMessage>| {
        assert_eq!(got.len(), 1, "{got:?}");
        got[0].text.clone()
    };
    alice.send_text("bob", "one").await.unwrap();
    assert_eq!(one(bob.receive(Duration::ZERO).await.unwrap()), "one");
    bob.send_text("alice", "two").await.unwrap();
    assert_eq!(one(alice.receive(Duration::ZERO).await.unwrap()), "two");

    drop(alice);
    replace_folder(ha.path(), backup.path());
    let mut alice = Client::open(ha.path(), None).unwrap();
    alice.send_text("bob", "three").await.unwrap();
    assert_eq!(one(bob.receive(Duration::ZERO).await.unwrap()), "three");
    bob.send_text("alice", "four").await.unwrap();
    assert_eq!(one(alice.receive(Duration::ZERO).await.unwrap()), "four");
    alice.send_text("bob", "five").await.unwrap();
    assert_eq!(one(bob.receive(Duration::ZERO).await.unwrap()), "five");
    assert!(alice.take_warnings().is_empty() && bob.take_warnings().is_empty());

    drop(alice);
    replace_folder(backup.path(), ha.path());
    let mut alice = Client::open(ha.path(), None).unwrap();
    // A first call cancelled after signing in, while the restore check waits for the home's
    // lock (another process holds it): the check is not skipped by the next call, which would
    // otherwise send on the old copy's sessions.
    let held = std::fs::File::options().read(true).write(true).open(ha.path().join("lock")).unwrap();
    held.lock().unwrap();
    let cancelled = tokio::time::timeout(Duration::from_millis(300), alice.send_text("bob", "lost")).await;
    assert!(cancelled.is_err(), "waited for the lock");
    held.unlock().unwrap();
    assert!(alice.receive(Duration::ZERO).await.unwrap().is_empty());
    let w = alice.take_warnings();
    assert!(w.iter().any(|w| w.contains("restored from an old copy") && w.contains("bob")), "{w:?}");
    // Bob is told (a notice, not a message, and nothing in the history) ...
    assert!(bob.receive(Duration::ZERO).await.unwrap().is_empty());
    let w = bob.take_warnings();
    assert!(w.len() == 1 && w[0].contains("alice's device 1 started a new session"), "{w:?}");
    assert_eq!(texts(&bob, "alice"), ["one", "two", "three", "four", "five"]);
    // ... and the next message each way decrypts.
    bob.send_text("alice", "six").await.unwrap();
    assert_eq!(one(alice.receive(Duration::ZERO).await.unwrap()), "six");
    alice.send_text("bob", "seven").await.unwrap();
    assert_eq!(one(bob.receive(Duration::ZERO).await.unwrap()), "seven");
    assert!(alice.take_warnings().is_empty() && bob.take_warnings().is_empty());
    // Detected once: the next start is not behind any more.
    drop(alice);
    let mut alice = Client::open(ha.path(), None).unwrap();
    bob.send_text("alice", "eight").await.unwrap();
    assert_eq!(one(alice.receive(Duration::ZERO).await.unwrap()), "eight");
    assert!(alice.take_warnings().is_empty());
    relay.stop().await;
}

async fn two_clients_converse_verify_and_survive_restarts(backend: Backend) {
    let relay = Relay::start(backend).await;
    let (ha, hb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = account(&relay, ha.path(), "alice").await;
    let mut bob = account(&relay, hb.path(), "bob").await;

    alice.send_text("bob", "hello bob").await.unwrap();
    alice.send_text("bob", "second").await.unwrap();
    let got = bob.receive(Duration::ZERO).await.unwrap();
    assert_eq!(got.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["hello bob", "second"]);
    assert_eq!((got[0].from.as_str(), got[0].device), ("alice", 1));
    assert!(bob.receive(Duration::ZERO).await.unwrap().is_empty(), "acked messages are gone");

    // A reply, received live over the WebSocket.
    bob.send_text("alice", "hi alice").await.unwrap();
    let got = alice.receive(Duration::from_secs(5)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].text, "hi alice");
    assert_eq!(texts(&alice, "bob"), ["hello bob", "second", "hi alice"]);

    // Safety numbers agree; a wrong one is refused, the right one verifies.
    let na = alice.safety_number("bob").await.unwrap();
    let nb = bob.safety_number("alice").await.unwrap();
    assert_eq!(na, nb);
    assert_eq!(na.split(' ').count(), 12);
    assert!(matches!(alice.verify("bob", &"1".repeat(60)).await, Err(ClientError::VerificationFailed(_))));
    alice.verify("bob", &nb).await.unwrap();
    assert!(alice.is_verified("bob").unwrap());

    // Reopening the stores (a restarted client) continues the same sessions.
    drop(alice);
    let mut alice = Client::open(ha.path(), None).unwrap();
    alice.send_text("bob", "after restart").await.unwrap();
    let got = bob.receive(Duration::from_secs(5)).await.unwrap();
    assert_eq!(got[0].text, "after restart");
    relay.stop().await;
}

async fn verified_contact_with_a_new_identity_is_refused_until_reverified(backend: Backend) {
    let relay = Relay::start(backend).await;
    let (ha, hb, hb2) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = account(&relay, ha.path(), "alice").await;
    let mut bob = account(&relay, hb.path(), "bob").await;
    let n = bob.safety_number("alice").await.unwrap();
    alice.verify("bob", &n).await.unwrap();

    // Bob re-installs: a new account key under the same name.
    bob.delete_account().await.unwrap();
    assert!(!Client::exists(hb.path()));
    let mut bob = account(&relay, hb2.path(), "bob").await;
    let err = alice.send_text("bob", "are you there?").await.unwrap_err();
    assert!(matches!(err, ClientError::IdentityChanged(_)), "{err}");
    assert!(err.to_string().contains("tacit verify bob"));
    // Messages from the new bob are held, not shown.
    bob.send_text("alice", "it's me, new phone").await.unwrap();
    assert!(alice.receive(Duration::ZERO).await.unwrap().is_empty());
    assert!(!alice.take_warnings().is_empty());

    // After comparing the new number, alice verifies again and everything flows.
    let n = bob.safety_number("alice").await.unwrap();
    assert_eq!(alice.safety_number("bob").await.unwrap(), n);
    alice.verify("bob", &n).await.unwrap();
    let got = alice.receive(Duration::ZERO).await.unwrap();
    assert_eq!(got[0].text, "it's me, new phone");
    alice.send_text("bob", "welcome back").await.unwrap();
    assert_eq!(bob.receive(Duration::ZERO).await.unwrap()[0].text, "welcome back");
    relay.stop().await;
}

async fn a_store_restored_from_an_old_copy_starts_a_fresh_session_and_the_conversation_goes_on(
    backend: Backend,
) {
    let relay = Relay::start(backend).await;
    let (ha, hb, backup) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = account(&relay, ha.path(), "alice").await;
    let mut bob = account(&relay, hb.path(), "bob").await;
    alice.send_text("bob", "one").await.unwrap();
    bob.receive(Duration::ZERO).await.unwrap();
    bob.send_text("alice", "two").await.unwrap();
    alice.receive(Duration::ZERO).await.unwrap();

    drop(alice);
    std::fs::copy(ha.path().join("store.db"), backup.path().join("store.db")).unwrap();
    let mut alice = Client::open(ha.path(), None).unwrap();
    alice.send_text("bob", "three").await.unwrap();
    drop(alice);
    std::fs::copy(backup.path().join("store.db"), ha.path().join("store.db")).unwrap();

    let mut alice = Client::open(ha.path(), None).unwrap();
    alice.send_text("bob", "four").await.unwrap();
    assert!(alice.take_warnings().iter().any(|w| w.contains("old copy")));
    let got = bob.receive(Duration::ZERO).await.unwrap();
    assert_eq!(got.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["three", "four"]);
    bob.send_text("alice", "five").await.unwrap();
    assert_eq!(alice.receive(Duration::ZERO).await.unwrap()[0].text, "five");
    relay.stop().await;
}

async fn fetched_but_unprocessed_messages_come_back_once(backend: Backend) {
    let relay = Relay::start(backend).await;
    let (ha, hb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = account(&relay, ha.path(), "alice").await;
    let mut bob = account(&relay, hb.path(), "bob").await;
    for t in ["a", "b", "c"] {
        alice.send_text("bob", t).await.unwrap();
    }
    // Killed after fetching, before storing: nothing was acked.
    let fetched = bob.fetch_envelopes().await.unwrap();
    assert_eq!(fetched.len(), 3);
    drop(bob);
    let mut bob = Client::open(hb.path(), None).unwrap();
    // Delivered in reverse order this time.
    let mut again = bob.fetch_envelopes().await.unwrap();
    again.reverse();
    let got = bob.process_envelopes(again).await.unwrap();
    assert_eq!(got.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["c", "b", "a"]);
    assert!(bob.receive(Duration::ZERO).await.unwrap().is_empty());
    assert_eq!(texts(&bob, "alice").len(), 3);
    relay.stop().await;
}

/// Senders that fetch one recipient's bundle at the same moment each get one-time prekeys
/// of their own (X25519 and ML-KEM): every first message names different ones, and every
/// one decrypts.
async fn racing_senders_get_distinct_one_time_keys(backend: Backend) {
    const RACERS: usize = 6;
    let relay = Relay::start(backend).await;
    let hb = tempfile::tempdir().unwrap();
    let mut bob = account(&relay, hb.path(), "bob").await;
    let homes: Vec<_> = (0..RACERS).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut racers = Vec::new();
    for (i, home) in homes.iter().enumerate() {
        let mut c = account(&relay, home.path(), &format!("racer{i}")).await;
        // Authenticated and bob's list pinned: what is left of a first send is the bundle.
        c.receive(Duration::ZERO).await.unwrap();
        c.safety_number("bob").await.unwrap();
        racers.push(c);
    }
    // One task (the SDK's futures are not `Send`), but every request is in flight at once.
    let sends = racers.iter_mut().map(|c| {
        let text = format!("from {}", c.account_name());
        async move { c.send_text("bob", &text).await.unwrap() }
    });
    futures_util::future::join_all(sends).await;

    let envelopes = bob.fetch_envelopes().await.unwrap();
    assert_eq!(envelopes.len(), RACERS);
    let (mut one_time, mut kem) = (HashSet::new(), HashSet::new());
    for e in &envelopes {
        let Message::Prekey(p) = Message::from_bytes(e.content.as_slice()).unwrap() else {
            panic!("a first message starts a session");
        };
        assert!(one_time.insert(p.one_time_prekey_id.expect("one-time prekeys were left")));
        assert_eq!(p.kem_prekey_kind, KemPrekeyKind::OneTime);
        assert!(kem.insert(p.kem_prekey_id), "KEM one-time prekey {} handed out twice", p.kem_prekey_id);
    }
    let got = bob.process_envelopes(envelopes).await.unwrap();
    let mut from: Vec<_> = got.iter().map(|m| m.from.clone()).collect();
    from.sort();
    assert_eq!(from, (0..RACERS).map(|i| format!("racer{i}")).collect::<Vec<_>>());
    assert!(bob.take_warnings().is_empty());
    relay.stop().await;
}

/// Alice and bob have talked; bob deletes his account and makes it again under the same name
/// (a new identity) in `new_home`. Returns alice and the new bob.
async fn bob_reinstalls(
    relay: &Relay,
    ha: &std::path::Path,
    hb: &std::path::Path,
    new_home: &std::path::Path,
    verify: bool,
) -> (Client, Client) {
    let mut alice = account(relay, ha, "alice").await;
    let mut bob = account(relay, hb, "bob").await;
    alice.send_text("bob", "hello bob").await.unwrap();
    assert_eq!(bob.receive(Duration::ZERO).await.unwrap()[0].text, "hello bob");
    bob.send_text("alice", "hello alice").await.unwrap();
    assert_eq!(alice.receive(Duration::ZERO).await.unwrap()[0].text, "hello alice");
    if verify {
        let n = bob.safety_number("alice").await.unwrap();
        alice.verify("bob", &n).await.unwrap();
    }
    bob.delete_account().await.unwrap();
    let bob = account(relay, new_home, "bob").await;
    (alice, bob)
}

/// Bob reinstalls and writes first: alice's client finds his new identity in his current
/// device list, accepts it (bob was not verified) with the identity-change warning, and shows
/// the message; the conversation goes on both ways.
async fn a_reinstalled_unverified_contact_who_writes_first_is_delivered_with_a_warning(backend: Backend) {
    let relay = Relay::start(backend).await;
    let (ha, hb, hb2) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut alice, mut bob) = bob_reinstalls(&relay, ha.path(), hb.path(), hb2.path(), false).await;
    bob.send_text("alice", "new phone, same bob").await.unwrap();
    bob.send_text("alice", "and a second one").await.unwrap();
    let got = alice.receive(Duration::ZERO).await.unwrap();
    assert_eq!(
        got.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        ["new phone, same bob", "and a second one"]
    );
    let warnings = alice.take_warnings();
    assert!(warnings.iter().any(|w| w.contains("bob's identity key changed")), "{warnings:?}");
    assert!(!warnings.iter().any(|w| w.contains("dropped")), "{warnings:?}");
    assert!(alice.fetch_envelopes().await.unwrap().is_empty(), "delivered and acknowledged");
    // The safety number is the new one, and replies reach the new installation.
    assert_eq!(alice.safety_number("bob").await.unwrap(), bob.safety_number("alice").await.unwrap());
    alice.send_text("bob", "welcome back").await.unwrap();
    assert_eq!(bob.receive(Duration::ZERO).await.unwrap()[0].text, "welcome back");
    relay.stop().await;
}

/// Bob, whom alice verified, reinstalls and writes first: the message is held (not shown, not
/// dropped, not acknowledged) over any number of receives, and shown at the first receive after
/// alice verifies the new safety number.
async fn a_reinstalled_verified_contact_who_writes_first_is_held_until_verified(backend: Backend) {
    let relay = Relay::start(backend).await;
    let (ha, hb, hb2) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut alice, mut bob) = bob_reinstalls(&relay, ha.path(), hb.path(), hb2.path(), true).await;
    bob.send_text("alice", "it's me, new phone").await.unwrap();
    for _ in 0..2 {
        assert!(alice.receive(Duration::ZERO).await.unwrap().is_empty());
        let warnings = alice.take_warnings();
        assert!(warnings.iter().any(|w| w.contains("holding messages from bob")), "{warnings:?}");
        assert!(!warnings.iter().any(|w| w.contains("dropped")), "{warnings:?}");
        assert_eq!(alice.fetch_envelopes().await.unwrap().len(), 1, "still on the server");
    }
    assert!(alice.receive(Duration::from_millis(500)).await.unwrap().is_empty(), "nor shown over the socket");
    assert!(matches!(alice.send_text("bob", "who is this?").await, Err(ClientError::IdentityChanged(_))));
    assert_eq!(texts(&alice, "bob"), ["hello bob", "hello alice"]);

    let n = bob.safety_number("alice").await.unwrap();
    assert_eq!(alice.safety_number("bob").await.unwrap(), n);
    alice.verify("bob", &n).await.unwrap();
    let got = alice.receive(Duration::ZERO).await.unwrap();
    assert_eq!(got.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["it's me, new phone"]);
    assert!(alice.fetch_envelopes().await.unwrap().is_empty());
    alice.send_text("bob", "verified again").await.unwrap();
    assert_eq!(bob.receive(Duration::ZERO).await.unwrap()[0].text, "verified again");
    relay.stop().await;
}
