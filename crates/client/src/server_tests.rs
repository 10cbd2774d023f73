//! The SDK against the real server on loopback, on SQLite and on PostgreSQL, where a test
//! needs the SDK's internals: a client killed after storing messages but before
//! acknowledging them, a WebSocket open while the server restarts, more than a page of held
//! envelopes, and the WebSocket's certificate checks.

#[path = "../tests/common/mod.rs"]
#[macro_use]
mod common;

use std::time::Duration;

use common::{Backend, Relay, account, texts};

use tacit_protocol::{AccountName, DeviceId, Message, X25519Public};

use crate::net::{Api, ConnectOptions, Incoming, SendOutcome};
use crate::payload::Payload;
use crate::rng::OsRng;
use crate::tests::rand_id;
use crate::{Client, ClientError, api};

on_both!(
    a_client_killed_between_storing_and_acking_shows_each_message_once,
    a_server_restart_mid_conversation_loses_nothing,
    more_than_a_page_of_held_envelopes_does_not_hide_the_ones_behind,
    envelopes_that_claim_ever_new_identities_cost_a_bounded_number_of_list_fetches,
    after_a_restored_store_the_server_holds_only_one_time_keys_the_device_can_use,
    a_session_reset_replaces_the_receivers_sessions_and_it_answers_over_the_new_one,
    two_devices_that_start_sessions_at_once_converge_on_one,
);

/// Two devices that start sessions with each other at the same moment (each sends its first
/// message before it has read the other's) end up with two sessions each; the one that
/// decrypts a message becomes the one that sends, so after a message goes through, both
/// send on the same session, and every message on the way decrypts.
async fn two_devices_that_start_sessions_at_once_converge_on_one(backend: Backend) {
    let relay = Relay::start(backend).await;
    let (ha, hb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = account(&relay, ha.path(), "alice").await;
    let mut bob = account(&relay, hb.path(), "bob").await;
    let newest = |c: &Client, peer: &str| c.store.sessions(peer, 1).unwrap()[0].base_key;
    alice.send_text("bob", "a1").await.unwrap();
    bob.send_text("alice", "b1").await.unwrap();
    assert_ne!(newest(&alice, "bob"), newest(&bob, "alice"), "two sessions, crossed");
    assert_eq!(alice.receive(Duration::ZERO).await.unwrap()[0].text, "b1");
    assert_eq!(bob.receive(Duration::ZERO).await.unwrap()[0].text, "a1");
    // alice answers on the session bob started (the one that decrypted his message) ...
    alice.send_text("bob", "a2").await.unwrap();
    assert_eq!(bob.receive(Duration::ZERO).await.unwrap()[0].text, "a2");
    // ... and bob, having read it there, now sends on it too: one session both ways.
    assert_eq!(newest(&alice, "bob"), newest(&bob, "alice"), "converged");
    for i in 0..3 {
        bob.send_text("alice", &format!("b{}", i + 2)).await.unwrap();
        assert_eq!(alice.receive(Duration::ZERO).await.unwrap().len(), 1);
        alice.send_text("bob", &format!("a{}", i + 3)).await.unwrap();
        assert_eq!(bob.receive(Duration::ZERO).await.unwrap().len(), 1);
        assert_eq!(newest(&alice, "bob"), newest(&bob, "alice"), "stays converged");
    }
    assert!(alice.take_warnings().is_empty() && bob.take_warnings().is_empty());
    relay.stop().await;
}

/// Issue 8, point 2, the receiver's side: a session reset arrives as a first message of a new
/// session from a device whose identity did not change; bob accepts it, shows a notice (no
/// message, nothing in the history), marks his older sessions with that device stale, and
/// the new one, his newest by store order, is the one he sends on.
async fn a_session_reset_replaces_the_receivers_sessions_and_it_answers_over_the_new_one(backend: Backend) {
    let relay = Relay::start(backend).await;
    let (ha, hb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = account(&relay, ha.path(), "alice").await;
    let mut bob = account(&relay, hb.path(), "bob").await;
    alice.send_text("bob", "one").await.unwrap();
    assert_eq!(bob.receive(Duration::ZERO).await.unwrap().len(), 1);
    bob.send_text("alice", "two").await.unwrap();
    assert_eq!(alice.receive(Duration::ZERO).await.unwrap().len(), 1);
    assert!(matches!(alice.reset_session("alice").await, Err(ClientError::SendToSelf(_))));

    assert_eq!(alice.reset_session("bob").await.unwrap(), [1]);
    assert!(alice.take_warnings().is_empty());
    let mine = alice.store.sessions("bob", 1).unwrap();
    assert_eq!(
        mine.iter().map(|r| r.stale).collect::<Vec<_>>(),
        [false, true],
        "the old one no longer sends"
    );
    assert!(bob.receive(Duration::ZERO).await.unwrap().is_empty(), "a notice, not a message");
    let w = bob.take_warnings();
    assert!(w.len() == 1 && w[0].contains("alice's device 1 started a new session"), "{w:?}");
    let theirs = bob.store.sessions("alice", 1).unwrap();
    assert_eq!(theirs.iter().map(|r| r.stale).collect::<Vec<_>>(), [false, true]);
    assert_eq!(theirs[0].base_key, mine[0].base_key, "bob's newest is the new session");
    assert_eq!(texts(&bob, "alice"), ["one", "two"]);

    bob.send_text("alice", "three").await.unwrap();
    assert_eq!(alice.receive(Duration::ZERO).await.unwrap()[0].text, "three");
    alice.send_text("bob", "four").await.unwrap();
    assert_eq!(bob.receive(Duration::ZERO).await.unwrap()[0].text, "four");
    assert!(alice.take_warnings().is_empty() && bob.take_warnings().is_empty());
    relay.stop().await;
}

async fn a_client_killed_between_storing_and_acking_shows_each_message_once(backend: Backend) {
    let relay = Relay::start(backend).await;
    let (ha, hb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = account(&relay, ha.path(), "alice").await;
    let mut bob = account(&relay, hb.path(), "bob").await;
    alice.send_text("bob", "a").await.unwrap();
    alice.send_text("bob", "b").await.unwrap();

    // Bob decrypts and stores both (one transaction each) ...
    let envelopes = bob.fetch_envelopes().await.unwrap();
    let ids: Vec<u64> = envelopes.iter().map(|e| e.id).collect();
    let (msgs, acks) = bob.process_all(envelopes).await.unwrap();
    assert_eq!(msgs.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(acks, ids);
    // ... and is killed before the acknowledgement leaves.
    drop(bob);

    let mut bob = Client::open(hb.path(), None).unwrap();
    let again = bob.fetch_envelopes().await.unwrap();
    assert_eq!(again.iter().map(|e| e.id).collect::<Vec<_>>(), ids, "the server still holds them");
    assert!(bob.receive(Duration::ZERO).await.unwrap().is_empty(), "not shown a second time");
    assert!(bob.fetch_envelopes().await.unwrap().is_empty(), "but acknowledged this time");
    assert_eq!(texts(&bob, "alice"), ["a", "b"]);
    assert!(bob.take_warnings().is_empty());

    // The sessions moved on exactly once: the conversation continues both ways.
    bob.send_text("alice", "c").await.unwrap();
    assert_eq!(alice.receive(Duration::ZERO).await.unwrap()[0].text, "c");
    alice.send_text("bob", "d").await.unwrap();
    assert_eq!(bob.receive(Duration::ZERO).await.unwrap()[0].text, "d");
    relay.stop().await;
}

async fn a_server_restart_mid_conversation_loses_nothing(backend: Backend) {
    let mut relay = Relay::start(backend).await;
    let (ha, hb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = account(&relay, ha.path(), "alice").await;
    let mut bob = account(&relay, hb.path(), "bob").await;
    alice.send_text("bob", "one").await.unwrap();
    assert_eq!(bob.receive(Duration::ZERO).await.unwrap()[0].text, "one");
    bob.send_text("alice", "two").await.unwrap();
    alice.send_text("bob", "three").await.unwrap();

    // Bob is listening on the WebSocket (it has delivered what was stored) when the server
    // goes down: the socket is closed, not left hanging.
    let mut live = bob.api.connect().await.unwrap();
    assert!(matches!(
        live.next(Duration::from_secs(5)).await.unwrap(),
        Some(Incoming::Event(crate::RelayEvent::Envelope(_)))
    ));
    assert!(matches!(live.next(Duration::from_secs(5)).await.unwrap(), Some(Incoming::Drained)));
    let listening = tokio::spawn(async move { live.next(Duration::from_secs(20)).await });
    relay.restart().await;
    let closed = listening.await.unwrap();
    assert!(matches!(closed, Ok(Some(Incoming::Closed)) | Err(_)), "the socket ended");

    // Same URL, same storage: the tokens the clients hold, their sessions and every
    // envelope stored before the restart are still good.
    assert_eq!(alice.receive(Duration::ZERO).await.unwrap()[0].text, "two");
    let got = bob.receive(Duration::from_secs(5)).await.unwrap();
    assert_eq!(got.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["three"], "over a new socket");
    bob.send_text("alice", "four").await.unwrap();
    // Any wait is accepted, the largest too (it used to overflow the clock and panic).
    assert_eq!(alice.receive(Duration::MAX).await.unwrap()[0].text, "four");
    // Both sides in the server's order (issue 8, point 6), though alice stored "three"
    // before she received "two".
    assert_eq!(texts(&alice, "bob"), ["one", "two", "three", "four"], "by server time");
    assert_eq!(texts(&bob, "alice"), ["one", "two", "three", "four"]);
    assert!(alice.take_warnings().is_empty() && bob.take_warnings().is_empty());
    relay.stop().await;
}

/// Envelopes alice holds (from bob, verified, who reinstalled) fill more than one fetch page,
/// by count (more than 256) and by bytes (more than 1 MiB), and carol writes after them:
/// `receive` pages past the held ones to carol's, over HTTP and over the socket, and ends; the
/// held ones stay on the server and are all shown, in order, once alice verifies bob again.
async fn more_than_a_page_of_held_envelopes_does_not_hide_the_ones_behind(backend: Backend) {
    const LARGE: usize = 17; // 17 x 64 KiB > MAX_FETCH_BYTES
    const HELD: usize = api::limits::MAX_FETCH + 20;
    let relay = Relay::start(backend).await;
    let homes: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut alice = account(&relay, homes[0].path(), "alice").await;
    let mut carol = account(&relay, homes[1].path(), "carol").await;
    let mut bob = account(&relay, homes[2].path(), "bob").await;
    let n = bob.safety_number("alice").await.unwrap();
    alice.verify("bob", &n).await.unwrap();
    bob.delete_account().await.unwrap();
    let mut bob = account(&relay, homes[3].path(), "bob").await;

    // The new bob writes HELD messages on one session (a request each, no list fetches).
    bob.send_text("alice", "held 0").await.unwrap();
    let alice_name = AccountName::new("alice").unwrap();
    let dev = bob.stored_device(&alice_name, DeviceId::new(1).unwrap()).unwrap().unwrap();
    let mut session = bob.sendable("alice", &dev).unwrap().unwrap();
    let mut sent = vec!["held 0".to_owned()];
    for i in 1..HELD {
        let pad = if i <= LARGE { "x".repeat(crate::MAX_TEXT_BYTES - 16) } else { String::new() };
        let text = format!("held {i}{pad}");
        let payload =
            Payload::Text { message_id: Some(rand_id()), sent_time_ms: 1, text: text.clone(), root: None }
                .encode()
                .unwrap();
        let content = api::Bytes(session.encrypt(&mut OsRng, &payload).unwrap().to_bytes());
        let req = api::SendRequest {
            recipient: "alice".into(),
            envelopes: vec![api::OutgoingEnvelope { device: 1, content }],
            idempotency_key: None,
            state_counter: None,
        };
        assert!(matches!(bob.api.send(&req).await.unwrap(), SendOutcome::Sent(_)));
        sent.push(text);
    }
    carol.send_text("alice", "behind them").await.unwrap();

    let got = alice.receive(Duration::ZERO).await.unwrap();
    assert_eq!(got.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["behind them"]);
    let warnings = alice.take_warnings();
    assert_eq!(
        warnings.iter().filter(|w| w.contains("holding messages from bob")).count(),
        1,
        "{warnings:?}"
    );
    // The socket sends every stored envelope once; the held ones do not stop it either.
    carol.send_text("alice", "live").await.unwrap();
    let got = alice.receive(Duration::from_secs(5)).await.unwrap();
    assert_eq!(got.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["live"]);
    let first = alice.api.fetch(0).await.unwrap();
    assert!(first.more && first.envelopes.len() < LARGE, "held, and more than a page of bytes");

    let n = bob.safety_number("alice").await.unwrap();
    alice.verify("bob", &n).await.unwrap();
    let got = alice.receive(Duration::ZERO).await.unwrap();
    assert_eq!(got.iter().map(|m| m.text.clone()).collect::<Vec<_>>(), sent);
    assert!(alice.api.fetch(0).await.unwrap().envelopes.is_empty());
    relay.stop().await;
}

/// First messages that each name another made-up identity make one `receive` fetch the
/// sender's device list at most `MAX_LIST_FETCHES_PER_RECEIVE` times: those envelopes are
/// dropped (no identity in the list decrypts them), the rest are held for the next receive
/// (not dropped unchecked), and the receive ends.
async fn envelopes_that_claim_ever_new_identities_cost_a_bounded_number_of_list_fetches(backend: Backend) {
    use crate::contacts::MAX_LIST_FETCHES_PER_RECEIVE as MAX;
    const EXTRA: usize = 6;
    let relay = Relay::start(backend).await;
    let (ha, hb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = account(&relay, ha.path(), "alice").await;
    let mut bob = account(&relay, hb.path(), "bob").await;
    bob.send_text("alice", "hi").await.unwrap();
    assert_eq!(alice.receive(Duration::ZERO).await.unwrap().len(), 1);

    // Bob's session is still a pending one: each message is a prekey message, which bob makes
    // claim another identity and a new session.
    let alice_name = AccountName::new("alice").unwrap();
    let dev = bob.stored_device(&alice_name, DeviceId::new(1).unwrap()).unwrap().unwrap();
    let mut session = bob.sendable("alice", &dev).unwrap().unwrap();
    for i in 0..MAX + EXTRA {
        let payload = Payload::text(rand_id(), 1, &format!("forged {i}")).encode().unwrap();
        let Message::Prekey(mut p) = session.encrypt(&mut OsRng, &payload).unwrap() else {
            panic!("a prekey message")
        };
        // A new session (unknown base key) from a made-up identity.
        p.identity_key = X25519Public::from_bytes([i as u8 + 1; 32]).unwrap();
        p.base_key = X25519Public::from_bytes([i as u8 + 1; 32]).unwrap();
        let content = api::Bytes(Message::Prekey(p).to_bytes());
        let req = api::SendRequest {
            recipient: "alice".into(),
            envelopes: vec![api::OutgoingEnvelope { device: 1, content }],
            idempotency_key: None,
            state_counter: None,
        };
        assert!(matches!(bob.api.send(&req).await.unwrap(), SendOutcome::Sent(_)));
    }

    assert!(alice.receive(Duration::ZERO).await.unwrap().is_empty());
    let warnings = alice.take_warnings();
    let dropped = warnings.iter().filter(|w| w.contains("dropped a message from bob")).count();
    assert!(dropped <= MAX, "{dropped} fetches");
    assert!(warnings.iter().any(|w| w.contains("could not check their current devices")), "{warnings:?}");
    let held = alice.api.fetch(0).await.unwrap().envelopes.len();
    assert!(held >= EXTRA && dropped + held == MAX + EXTRA, "{dropped} dropped, {held} held");
    // The next receive has its own budget: the rest are checked and dropped.
    assert!(alice.receive(Duration::ZERO).await.unwrap().is_empty());
    assert!(alice.api.fetch(0).await.unwrap().envelopes.is_empty());
    relay.stop().await;
}

/// Issue 7 point 5: `store.db` alone put back from an old copy makes the device drop every
/// one-time key (some were used since the copy); its next upload names the set it holds,
/// so the server drops the public halves of keys that are gone instead of handing them out
/// (first messages to them would be undecryptable).
async fn after_a_restored_store_the_server_holds_only_one_time_keys_the_device_can_use(backend: Backend) {
    let relay = Relay::start(backend).await;
    let (ha, hb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let backup = tempfile::tempdir().unwrap();
    let mut alice = account(&relay, ha.path(), "alice").await;
    let bob = account(&relay, hb.path(), "bob").await;
    drop(bob);
    std::fs::copy(hb.path().join(crate::store::DB_FILE), backup.path().join(crate::store::DB_FILE)).unwrap();
    let mut bob = Client::open(hb.path(), None).unwrap();
    alice.send_text("bob", "uses a one-time key").await.unwrap();
    assert_eq!(bob.receive(Duration::ZERO).await.unwrap().len(), 1);
    drop(bob);

    std::fs::copy(backup.path().join(crate::store::DB_FILE), hb.path().join(crate::store::DB_FILE)).unwrap();
    let mut bob = Client::open(hb.path(), None).unwrap();
    bob.online().await.unwrap();
    let w = bob.take_warnings();
    assert!(w.iter().any(|w| w.contains("restored from an old copy")), "{w:?}");
    let held = bob.load_prekeys().unwrap().one_time_counts();
    assert!(held.0 > 0 && held.1 > 0, "a new set was made: {held:?}");
    let status = bob.api.prekey_status().await.unwrap();
    assert_eq!(
        (status.one_time as usize, status.kem_one_time as usize),
        held,
        "the server holds exactly the one-time keys bob has private halves for"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_checks_the_certificate_as_https_does() {
    let relay = Relay::start_tls(Backend::Sqlite).await;
    let refused = Api::new(&relay.url, &ConnectOptions::default()).unwrap().connect().await.err().unwrap();
    assert!(matches!(&refused, ClientError::Network(m) if m.contains("certificate")), "{refused}");
    let other = ConnectOptions::default().with_extra_roots_pem(&relay.certs().other_ca_pem()).unwrap();
    let refused = Api::new(&relay.url, &other).unwrap().connect().await.err().unwrap();
    assert!(matches!(&refused, ClientError::Network(m) if m.contains("certificate")), "{refused}");
    // Trusting the CA, TLS succeeds and the server itself answers: no token, no socket.
    let trusted = ConnectOptions::default().with_extra_roots_pem(&relay.certs().ca_pem()).unwrap();
    let refused = Api::new(&relay.url, &trusted).unwrap().connect().await.err().unwrap();
    assert!(matches!(refused, ClientError::Server { status: 401, .. }), "{refused}");
    relay.stop().await;
}

#[test]
fn extra_roots_must_be_ca_certificates() {
    let bad = |pem: &str| ConnectOptions::default().with_extra_roots_pem(pem.as_bytes()).err().unwrap();
    assert!(matches!(bad("no PEM here"), ClientError::BadCertificate(_)));
    assert!(matches!(
        bad("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
        ClientError::BadCertificate(_)
    ));
    assert!(matches!(
        bad("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
        ClientError::BadCertificate(_)
    ));
}
