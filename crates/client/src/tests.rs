//! Offline tests of the receive path (dedupe, tampering, any order, kill between store and
//! ack) and of stale-session handling (a store restored from an old copy), driving a real
//! client store with a peer built from the protocol crate directly.

use crate::rng::OsRng;
use tacit_api as api;
use tacit_protocol::{
    AccountIdentity, AccountName, DeviceAddress, DeviceEntry, DeviceId, DeviceIdentity, DeviceList,
    DevicePrekeys, PrekeyBundle, Session, VerifiedDevice,
};

use crate::client::{Client, meta};
use crate::payload::Payload;
use crate::store::{self, ContactRow, HistoryEntry};

/// A peer outside any store: account, device 1, its signed list.
struct Peer {
    name: AccountName,
    identity: DeviceIdentity,
    list: DeviceList,
}

impl Peer {
    fn new(name: &str) -> Self {
        let name = AccountName::new(name).unwrap();
        let account = AccountIdentity::generate(&mut OsRng).unwrap();
        let identity = DeviceIdentity::generate(&mut OsRng).unwrap();
        let entry = DeviceEntry {
            approver: true,
            ..DeviceEntry::new(DeviceId::new(1).unwrap(), identity.public().clone())
        };
        let list = DeviceList::sign(&account, name.clone(), 1, vec![entry]).unwrap();
        Self { name, identity, list }
    }

    fn address(&self) -> DeviceAddress {
        DeviceAddress { account: self.name.clone(), device: DeviceId::new(1).unwrap() }
    }

    /// Makes `client` know this peer (as a contact with a pinned key).
    fn introduce_to(&self, client: &Client) {
        let row = ContactRow {
            account_key: *self.list.account_key().as_bytes(),
            device_list: self.list.to_bytes(),
            verified: false,
            pending: None,
        };
        store::put_contact(client.store.conn(), self.name.as_str(), &row).unwrap();
    }

    /// Starts a session with the client's device from its own prekeys.
    fn session_with(&self, client: &Client) -> Session {
        let prekeys = DevicePrekeys::from_bytes(&client.store.meta(meta::PREKEYS).unwrap().unwrap()).unwrap();
        let bundle: PrekeyBundle = prekeys.bundle(client.me.address(), &client.me.identity).unwrap();
        let remote = VerifiedDevice::dangerous_assume_verified(
            client.me.address(),
            client.me.identity.public().clone(),
        );
        Session::initiate(&mut OsRng, &self.identity, self.address(), &bundle, &remote, crate::client::now())
            .unwrap()
    }
}

fn envelope(id: u64, from: &Peer, session: &mut Session, text: &str) -> api::Envelope {
    let payload = Payload::Text {
        message_id: Some(rand_id()),
        sent_time_ms: 1_000 + id,
        text: text.into(),
        root: None,
    }
    .encode()
    .unwrap();
    api::Envelope {
        id,
        sender: from.name.to_string(),
        sender_device: 1,
        server_time_ms: 2_000 + id,
        content: api::Bytes(session.encrypt(&mut OsRng, &payload).unwrap().to_bytes()),
        group: None,
    }
}

/// A new random message id.
pub(crate) fn rand_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut OsRng, &mut id);
    id
}

fn texts(client: &Client, peer: &str) -> Vec<String> {
    client.store.history(peer).unwrap().into_iter().map(|e| e.text).collect()
}

#[tokio::test]
async fn redelivery_after_a_kill_before_ack_is_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    let mut bob = Client::offline(dir.path(), "bob").unwrap();
    let alice = Peer::new("alice");
    alice.introduce_to(&bob);
    let mut s = alice.session_with(&bob);
    let e1 = envelope(1, &alice, &mut s, "one");

    let (msgs, acks) = bob.process_all(vec![e1.clone()]).await.unwrap();
    assert_eq!((msgs.len(), acks.as_slice()), (1, &[1][..]));
    assert_eq!(msgs[0].sent_time_ms, 1_001);
    assert_eq!(msgs[0].server_time_ms, 2_001);
    // Killed before the ack reached the server: reopen, the server delivers envelope 1 again.
    drop(bob);
    let mut bob = Client::open(dir.path(), None).unwrap();
    let (msgs, acks) = bob.process_all(vec![e1]).await.unwrap();
    assert!(msgs.is_empty(), "a redelivered envelope is not shown twice");
    assert_eq!(acks, vec![1], "but it is acknowledged again");
    assert_eq!(texts(&bob, "alice"), ["one"]);
    assert!(bob.take_warnings().is_empty());
}

#[tokio::test]
async fn any_order_tampering_and_replay_leave_the_conversation_going() {
    let dir = tempfile::tempdir().unwrap();
    let mut bob = Client::offline(dir.path(), "bob").unwrap();
    let alice = Peer::new("alice");
    alice.introduce_to(&bob);
    let mut s = alice.session_with(&bob);
    let e: Vec<_> = (1..=4).map(|i| envelope(i, &alice, &mut s, &format!("m{i}"))).collect();

    let mut forged = e[1].clone();
    forged.id = 99;
    if let Some(b) = forged.content.0.last_mut() {
        *b ^= 1;
    }
    let mut replayed = e[2].clone();
    replayed.id = 100; // same ciphertext under a new envelope id: refused by the session
    let order = vec![e[3].clone(), forged, e[0].clone(), e[2].clone(), replayed, e[1].clone()];
    let (msgs, acks) = bob.process_all(order).await.unwrap();
    let got: Vec<_> = msgs.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(got, ["m4", "m1", "m3", "m2"]);
    assert_eq!(acks, vec![4, 99, 1, 3, 100, 2], "undecryptable envelopes are acked (and reported)");
    assert_eq!(bob.take_warnings().len(), 2);

    // Bob replies on the same session and Alice reads it.
    let dev = bob.stored_device(&alice.name, DeviceId::new(1).unwrap()).unwrap().unwrap();
    let mut bs = bob.sendable("alice", &dev).unwrap().unwrap();
    let reply = bs.encrypt(&mut OsRng, b"hi alice").unwrap();
    assert_eq!(s.decrypt(&reply).unwrap(), b"hi alice");
}

/// A version 1 text (a client from before issue 9) is still read and stored, with no id and
/// no receipt (there is nothing to name); a version 2 text queues a receipt; a copy of it
/// under another envelope (a resend) is neither shown nor stored again.
#[tokio::test]
async fn version_1_texts_are_still_read_and_a_resent_copy_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut bob = Client::offline(dir.path(), "bob").unwrap();
    let alice = Peer::new("alice");
    alice.introduce_to(&bob);
    let mut s = alice.session_with(&bob);
    let mut with = |id: u64, payload: &Payload| api::Envelope {
        id,
        sender: "alice".into(),
        sender_device: 1,
        server_time_ms: 2_000 + id,
        content: api::Bytes(s.encrypt(&mut OsRng, &payload.encode().unwrap()).unwrap().to_bytes()),
        group: None,
    };
    let v1 = with(1, &Payload::Text { message_id: None, sent_time_ms: 1, text: "old".into(), root: None });
    let message_id = rand_id();
    let v2 = with(2, &Payload::text(message_id, 2, "new"));
    let copy = with(3, &Payload::text(message_id, 2, "new"));
    let (msgs, acks) = bob.process_all(vec![v1, v2, copy]).await.unwrap();
    assert_eq!(msgs.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["old", "new"]);
    assert_eq!(acks, [1, 2, 3]);
    assert!(bob.take_warnings().is_empty());
    let h = bob.store.history("alice").unwrap();
    assert_eq!(h.iter().map(|e| e.message_id).collect::<Vec<_>>(), [None, Some(message_id)]);
    assert_eq!(bob.store.pending_receipts().unwrap(), [("alice".to_owned(), vec![message_id])]);
}

/// Issue 9, sent-message sync, as a second device of the own account would send it: a sent
/// transcript from an own device (in the own signed list) is stored as sent to its peer,
/// once per message id, and never receipted; a note to self shows under the own name; a
/// transcript from another account is refused and stores nothing.
#[tokio::test]
async fn a_sent_transcript_from_an_own_device_is_stored_as_sent_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut bob = Client::offline(dir.path(), "bob").unwrap();
    // Bob's second device: in the list his account key signed.
    let phone = DeviceIdentity::generate(&mut OsRng).unwrap();
    let entries = vec![
        DeviceEntry {
            approver: true,
            ..DeviceEntry::new(DeviceId::new(1).unwrap(), bob.me.identity.public().clone())
        },
        DeviceEntry::new(DeviceId::new(2).unwrap(), phone.public().clone()),
    ];
    let list = DeviceList::sign(bob.me.account.as_ref().unwrap(), bob.me.name.clone(), 2, entries).unwrap();
    let row = ContactRow {
        account_key: *bob.me.account_key.as_bytes(),
        device_list: list.to_bytes(),
        verified: true,
        pending: None,
    };
    store::put_contact(bob.store.conn(), "bob", &row).unwrap();
    let prekeys = DevicePrekeys::from_bytes(&bob.store.meta(meta::PREKEYS).unwrap().unwrap()).unwrap();
    let bundle = prekeys.bundle(bob.me.address(), &bob.me.identity).unwrap();
    let remote =
        VerifiedDevice::dangerous_assume_verified(bob.me.address(), bob.me.identity.public().clone());
    let phone_address = DeviceAddress { account: bob.me.name.clone(), device: DeviceId::new(2).unwrap() };
    let mut s =
        Session::initiate(&mut OsRng, &phone, phone_address, &bundle, &remote, crate::client::now()).unwrap();
    let transcript = |peer: &str, message_id, text: &str| Payload::SentTranscript {
        peer: AccountName::new(peer).unwrap(),
        message_id,
        sent_time_ms: 5,
        text: text.into(),
    };
    let mut from_phone = |id: u64, payload: &Payload| api::Envelope {
        id,
        sender: "bob".into(),
        sender_device: 2,
        server_time_ms: 1_000 + id,
        content: api::Bytes(s.encrypt(&mut OsRng, &payload.encode().unwrap()).unwrap().to_bytes()),
        group: None,
    };
    let to_carol = rand_id();
    let e1 = from_phone(1, &transcript("carol", to_carol, "hi carol"));
    let e2 = from_phone(2, &transcript("carol", to_carol, "hi carol"));
    let e3 = from_phone(3, &transcript("bob", rand_id(), "note"));
    let (msgs, acks) = bob.process_all(vec![e1, e2, e3]).await.unwrap();
    assert!(msgs.is_empty(), "sent messages, not received ones");
    assert_eq!(acks, [1, 2, 3]);
    assert!(bob.take_warnings().is_empty());
    let h = bob.history("carol").unwrap();
    assert_eq!(h.len(), 1, "once per id: {h:?}");
    assert!(h[0].outgoing && h[0].text == "hi carol" && h[0].message_id == Some(to_carol));
    assert_eq!((h[0].server_time_ms, h[0].sent_time_ms), (Some(1_001), 5));
    assert_eq!(texts(&bob, "bob"), ["note"]);
    assert!(bob.store.pending_receipts().unwrap().is_empty(), "transcripts are never receipted");

    // Another account cannot put words in bob's mouth.
    let alice = Peer::new("alice");
    alice.introduce_to(&bob);
    let mut a = alice.session_with(&bob);
    let forged = transcript("carol", rand_id(), "forged");
    let e = api::Envelope {
        id: 4,
        sender: "alice".into(),
        sender_device: 1,
        server_time_ms: 1_004,
        content: api::Bytes(a.encrypt(&mut OsRng, &forged.encode().unwrap()).unwrap().to_bytes()),
        group: None,
    };
    let (msgs, _) = bob.process_all(vec![e]).await.unwrap();
    assert!(msgs.is_empty());
    let w = bob.take_warnings();
    assert!(w.len() == 1 && w[0].contains("refused a sent-message copy from alice"), "{w:?}");
    assert_eq!(texts(&bob, "carol"), ["hi carol"]);
}

/// A queued payload (a sent transcript, a receipt) that cannot be sent because the server is
/// unreachable stays queued for the next command that reaches it; nothing is lost or
/// dropped.
#[tokio::test]
async fn a_queued_send_that_fails_on_the_network_stays_queued() {
    let dir = tempfile::tempdir().unwrap();
    let mut bob = Client::offline(dir.path(), "bob").unwrap(); // its server is a closed port
    let transcript = Payload::SentTranscript {
        peer: AccountName::new("carol").unwrap(),
        message_id: rand_id(),
        sent_time_ms: 1,
        text: "hi".into(),
    };
    let what = store::PendingKind::Payload {
        payload: zeroize::Zeroizing::new(transcript.encode().unwrap()),
        message_id: None,
    };
    store::queue_send(bob.store.conn(), "bob", &what, 1).unwrap();
    store::queue_receipt(bob.store.conn(), "alice", &rand_id()).unwrap();
    let err = bob.send_queued().await.unwrap_err();
    assert!(matches!(err, crate::ClientError::Network(_)), "{err}");
    assert_eq!(bob.store.pending_sends().unwrap().len(), 1, "kept for the next command");
    assert_eq!(bob.store.pending_receipts().unwrap().len(), 1);
    assert!(bob.take_warnings().is_empty(), "not dropped");
}

/// Issue 8, point 6: history is in the server's order, whatever the senders' clocks claim
/// and in whatever order the envelopes arrived; a sent message sorts by the server time its
/// send got, an unconfirmed one by this device's clock; equal times keep the stored order.
#[tokio::test]
async fn history_is_in_server_time_order_whatever_the_senders_clocks_say() {
    let dir = tempfile::tempdir().unwrap();
    let mut bob = Client::offline(dir.path(), "bob").unwrap();
    let alice = Peer::new("alice");
    alice.introduce_to(&bob);
    let mut s = alice.session_with(&bob);
    // Alice's clock is wrong both ways: her first message claims 2099, her third 1970.
    let claimed = |id: u64, sent_time_ms: u64, server_time_ms: u64, s: &mut Session| {
        let payload = Payload::text(rand_id(), sent_time_ms, &format!("a{id}")).encode().unwrap();
        api::Envelope {
            id,
            sender: "alice".into(),
            sender_device: 1,
            server_time_ms,
            content: api::Bytes(s.encrypt(&mut OsRng, &payload).unwrap().to_bytes()),
            group: None,
        }
    };
    let a1 = claimed(1, 4_070_908_800_000, 10_000, &mut s);
    let a2 = claimed(2, 20_000, 20_000, &mut s);
    let a3 = claimed(3, 1, 30_000, &mut s);
    // Bob replied between a1 and a2 by the server's clock (15,000), before a2 and a3 reached
    // him, and sent one the server never confirmed (his clock said 25,000); a4 has the same
    // server time as a3.
    let sent = |text: &str, server_time_ms: Option<u64>, sent_time_ms: u64| HistoryEntry {
        peer: "alice".into(),
        device: 0,
        outgoing: true,
        text: text.into(),
        server_time_ms,
        sent_time_ms,
        message_id: None,
        delivered: None,
        devices: None,
    };
    let (msgs, _) = bob.process_all(vec![a1]).await.unwrap();
    assert_eq!(msgs.len(), 1);
    store::put_message(bob.store.conn(), &sent("b1", Some(15_000), 14_000), None).unwrap();
    store::put_message(bob.store.conn(), &sent("b2 (not confirmed)", None, 25_000), None).unwrap();
    let a4 = claimed(4, 40_000, 30_000, &mut s);
    // Arrival order differs from the server's: a3, a4, then a2.
    let (msgs, _) = bob.process_all(vec![a3, a4, a2]).await.unwrap();
    assert_eq!(msgs.len(), 3);
    assert_eq!(texts(&bob, "alice"), ["a1", "b1", "a2", "b2 (not confirmed)", "a3", "a4"]);
    let h = bob.store.history("alice").unwrap();
    assert_eq!(h[0].sent_time_ms, 4_070_908_800_000, "the sender's claim is kept and shown");
    assert_eq!(h[0].server_time_ms, Some(10_000));
}

#[tokio::test]
async fn a_network_failure_while_receiving_acks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut bob = Client::offline(dir.path(), "bob").unwrap();
    let alice = Peer::new("alice");
    alice.introduce_to(&bob);
    let mut s = alice.session_with(&bob);
    let mut e = envelope(1, &alice, &mut s, "hi");
    e.sender = "mallory".into(); // not a contact and no server to ask: a network error
    assert!(bob.process_all(vec![e.clone()]).await.is_err(), "unreachable server: nothing acked");
    assert!(texts(&bob, "mallory").is_empty());
    e.sender = "alice".into();
    let (msgs, _) = bob.process_all(vec![e]).await.unwrap();
    assert_eq!(msgs.len(), 1, "the envelope is still processable after the failure");
}

/// Saves `session` as the client's sending session with the peer (as a send does).
/// Bob with device 1 and a prekey bundle for it.
fn bob_with_a_bundle() -> (Peer, VerifiedDevice, PrekeyBundle) {
    let bob = Peer::new("bob");
    let dev = bob.list.verified_device(DeviceId::new(1).unwrap()).unwrap();
    let mut bob_prekeys = DevicePrekeys::new();
    let plan = bob_prekeys.plan(tacit_protocol::UnixTime(0), &Default::default(), 0, 0);
    bob_prekeys.execute(&mut OsRng, &bob.identity, tacit_protocol::UnixTime(0), &plan).unwrap();
    let bundle = bob_prekeys.bundle(bob.address(), &bob.identity).unwrap();
    (bob, dev, bundle)
}

/// Alice's offline client in `dir`, with a session to bob that has sent "first" (saved).
fn alice_after_a_first_message(
    dir: &std::path::Path,
    bob: &Peer,
    bundle: &PrekeyBundle,
    dev: &VerifiedDevice,
) -> Client {
    alice_after_a_first_message_at(dir, bob, bundle, dev, crate::client::now())
}

/// [`alice_after_a_first_message`] with the session made at `made` (Alice's clock then).
fn alice_after_a_first_message_at(
    dir: &std::path::Path,
    bob: &Peer,
    bundle: &PrekeyBundle,
    dev: &VerifiedDevice,
    made: tacit_protocol::UnixTime,
) -> Client {
    let mut alice = Client::offline(dir, "alice").unwrap();
    bob.introduce_to(&alice);
    let mut s =
        Session::initiate(&mut OsRng, &alice.me.identity, alice.me.address(), bundle, dev, made).unwrap();
    s.encrypt(&mut OsRng, b"first").unwrap();
    save(&mut alice, "bob", &s);
    alice
}

/// Issue 7 point 9: a session bob never answered is not sent on once it is older than
/// `MAX_PENDING_AGE_SECS`; a younger one is.
#[tokio::test]
async fn a_pending_session_past_its_age_bound_is_not_sent_on() {
    let (bob, dev, bundle) = bob_with_a_bundle();
    let now = crate::client::now().0;
    let young = tempfile::tempdir().unwrap();
    let made = tacit_protocol::UnixTime(now - tacit_protocol::MAX_PENDING_AGE_SECS + 3_600);
    let mut alice = alice_after_a_first_message_at(young.path(), &bob, &bundle, &dev, made);
    assert!(alice.sendable("bob", &dev).unwrap().is_some());
    let old = tempfile::tempdir().unwrap();
    let made = tacit_protocol::UnixTime(now - tacit_protocol::MAX_PENDING_AGE_SECS - 1);
    let mut alice = alice_after_a_first_message_at(old.path(), &bob, &bundle, &dev, made);
    assert!(alice.sendable("bob", &dev).unwrap().is_none(), "an expired pending session is not sent on");
}

fn save(client: &mut Client, peer: &str, s: &Session) {
    client.gens.raise(&[(*s.base_key().as_bytes(), s.generation())]).unwrap();
    store::put_session(
        client.store.conn(),
        peer,
        1,
        s.base_key().as_bytes(),
        &s.to_bytes(),
        s.generation(),
        false,
    )
    .unwrap();
}

#[tokio::test]
async fn a_store_restored_from_an_old_copy_never_sends_on_an_old_chain() {
    let dir = tempfile::tempdir().unwrap();
    let backup = tempfile::tempdir().unwrap();
    let (bob, dev, bundle) = bob_with_a_bundle();

    // Alice's client is closed again before the copy.
    drop(alice_after_a_first_message(dir.path(), &bob, &bundle, &dev));
    // The user backs up the database (not the generations file beside it) ...
    std::fs::copy(dir.path().join(store::DB_FILE), backup.path().join(store::DB_FILE)).unwrap();
    {
        let mut alice = Client::open(dir.path(), None).unwrap();
        let mut s = alice.sendable("bob", &dev).unwrap().unwrap();
        s.encrypt(&mut OsRng, b"second").unwrap();
        save(&mut alice, "bob", &s);
    }
    // ... and later puts the old copy back.
    std::fs::copy(backup.path().join(store::DB_FILE), dir.path().join(store::DB_FILE)).unwrap();
    let mut alice = Client::open(dir.path(), None).unwrap();
    assert!(alice.sendable("bob", &dev).unwrap().is_none(), "the restored session is not sent on");
    let w = alice.take_warnings();
    assert!(w.len() == 1 && w[0].contains("old copy"), "{w:?}");
    // It stays stale even though nothing else changed.
    assert!(alice.sendable("bob", &dev).unwrap().is_none());
    assert!(alice.store.sessions("bob", 1).unwrap()[0].stale);
}

#[tokio::test]
async fn a_lost_generations_file_makes_existing_sessions_stale() {
    let dir = tempfile::tempdir().unwrap();
    let (bob, dev, bundle) = bob_with_a_bundle();
    {
        let mut alice = alice_after_a_first_message(dir.path(), &bob, &bundle, &dev);
        assert!(alice.sendable("bob", &dev).unwrap().is_some());
    }
    std::fs::remove_file(dir.path().join(crate::generations::FILE)).unwrap();
    let mut alice = Client::open(dir.path(), None).unwrap();
    assert!(alice.sendable("bob", &dev).unwrap().is_none());
}

/// A peer starts more sessions with one device than are kept: the sessions pushed out take
/// their generation marks with them, in memory and in the file.
#[tokio::test]
async fn generation_marks_are_pruned_with_their_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let mut bob = Client::offline(dir.path(), "bob").unwrap();
    let alice = Peer::new("alice");
    alice.introduce_to(&bob);
    let sessions = crate::client::SESSIONS_PER_DEVICE + 7;
    for i in 0..sessions {
        let mut s = alice.session_with(&bob);
        let (msgs, _) =
            bob.process_all(vec![envelope(i as u64 + 1, &alice, &mut s, "new session")]).await.unwrap();
        assert_eq!(msgs.len(), 1);
    }
    let kept = bob.store.sessions("alice", 1).unwrap();
    assert_eq!(kept.len(), crate::client::SESSIONS_PER_DEVICE);
    assert_eq!(bob.gens.len(), crate::client::SESSIONS_PER_DEVICE, "one mark per stored session");
    drop(bob);
    let mut bob = Client::open(dir.path(), None).unwrap();
    assert_eq!(bob.gens.len(), crate::client::SESSIONS_PER_DEVICE, "pruned in the file too");
    for row in &kept {
        assert!(bob.gens.expected_session(&row.base_key) < u64::MAX);
    }
}

/// Issue 7 point 5: `store.db` put back from a copy made before a first message was accepted
/// does not bring back the one-time keys it used: the same initial message, delivered again
/// under a new envelope id, is refused; the prekeys are reset once (with a warning), and the
/// reset set is trusted from then on.
#[tokio::test]
async fn a_restored_store_does_not_bring_back_used_one_time_keys() {
    let dir = tempfile::tempdir().unwrap();
    let backup = tempfile::tempdir().unwrap();
    let alice = Peer::new("alice");
    let mut s = {
        let bob = Client::offline(dir.path(), "bob").unwrap();
        alice.introduce_to(&bob);
        alice.session_with(&bob)
    };
    std::fs::copy(dir.path().join(store::DB_FILE), backup.path().join(store::DB_FILE)).unwrap();
    let e1 = envelope(1, &alice, &mut s, "one");
    {
        let mut bob = Client::open(dir.path(), None).unwrap();
        let (msgs, _) = bob.process_all(vec![e1.clone()]).await.unwrap();
        assert_eq!(msgs.len(), 1);
    }
    // The old database alone is put back; the server (or anyone) replays the first message.
    std::fs::copy(backup.path().join(store::DB_FILE), dir.path().join(store::DB_FILE)).unwrap();
    let mut bob = Client::open(dir.path(), None).unwrap();
    let mut replayed = e1;
    replayed.id = 2;
    let (msgs, acks) = bob.process_all(vec![replayed]).await.unwrap();
    assert!(msgs.is_empty(), "the replayed first message makes no second session");
    assert_eq!(acks, vec![2]);
    let w = bob.take_warnings();
    assert!(w.iter().any(|w| w.contains("prekeys were restored from an old copy")), "{w:?}");
    let prekeys = bob.load_prekeys().unwrap();
    assert_eq!(prekeys.one_time_counts(), (0, 0), "every one-time key of the old copy is gone");
    assert!(bob.take_warnings().is_empty(), "reset once, then trusted");
    // Reopened, the reset set is the trusted one.
    drop(bob);
    let mut bob = Client::open(dir.path(), None).unwrap();
    bob.load_prekeys().unwrap();
    assert!(bob.take_warnings().is_empty());
}

/// A message no session decrypts queues a session reset for its sender at most once an
/// hour per sender (a forger, the server included, can make this device start new sessions
/// no faster), remembered across opens of the store; a sender this device did not know gets
/// none unless a restore was detected lately (a contact met after the copy was taken); the
/// own account's other devices are healed as peers are (issue 9); and
/// no more than 256 peers an hour, none of them forgotten early.
#[test]
fn undecryptable_messages_heal_at_most_once_an_hour_per_sender() {
    use crate::restore::Heal;
    let dir = tempfile::tempdir().unwrap();
    let mut bob = Client::offline(dir.path(), "bob").unwrap();
    let (alice, carol) = (AccountName::new("alice").unwrap(), AccountName::new("carol").unwrap());
    assert_eq!(bob.heal_after_failure(&alice, true).unwrap(), Heal::Queued);
    assert_eq!(bob.heal_after_failure(&alice, true).unwrap(), Heal::Recently, "within the hour");
    assert_eq!(bob.heal_after_failure(&carol, true).unwrap(), Heal::Queued, "per sender");
    assert_eq!(
        bob.heal_after_failure(&AccountName::new("bob").unwrap(), true).unwrap(),
        Heal::Queued,
        "the own account's other devices too (issue 9)"
    );
    let stranger = AccountName::new("stranger").unwrap();
    assert_eq!(bob.heal_after_failure(&stranger, false).unwrap(), Heal::No, "not a stranger");
    let pending = bob.store.meta(meta::PENDING_RESETS).unwrap().unwrap();
    assert_eq!(String::from_utf8(pending.to_vec()).unwrap(), "alice\ncarol\nbob");
    drop(bob);
    let mut bob = Client::open(dir.path(), None).unwrap();
    assert_eq!(bob.heal_after_failure(&alice, true).unwrap(), Heal::Recently, "remembered in the store");
    // After a restore was detected, a peer the copy did not know is healed too.
    let tx = bob.store.tx().unwrap();
    store::set_meta(&tx, meta::RESTORED_AT, &crate::client::now_ms().to_be_bytes()).unwrap();
    tx.commit().unwrap();
    assert_eq!(bob.heal_after_failure(&stranger, false).unwrap(), Heal::Queued);
    // 256 peers an hour at most (4 so far), and none of them falls out of the table early.
    for i in 0..252 {
        let peer = AccountName::new(&format!("peer{i}")).unwrap();
        assert_eq!(bob.heal_after_failure(&peer, true).unwrap(), Heal::Queued, "{i}");
    }
    assert_eq!(bob.heal_after_failure(&AccountName::new("one-more").unwrap(), true).unwrap(), Heal::Recently);
    assert_eq!(bob.heal_after_failure(&alice, true).unwrap(), Heal::Recently, "alice still remembered");
}

/// An account removed by another process (`account forget`) while this one has it open:
/// the next change of state here is refused, not stored into the deleted file.
#[test]
fn an_account_forgotten_by_another_process_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let mut bob = Client::offline(dir.path(), "bob").unwrap();
    Client::forget(dir.path()).unwrap();
    let e = bob.rekey(crate::StoreSecret::NoPassphrase).err().unwrap();
    assert!(matches!(e, crate::ClientError::AccountRemoved(_)), "{e}");
    assert!(!dir.path().join("store.db").exists() && !dir.path().join("store.key").exists());
}
