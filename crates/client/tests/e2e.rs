//! Two clients against the real server on loopback (embedded SQLite, temp folders).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a test file

use std::path::Path;
use std::time::Duration;

use tacit_client::{Client, ClientError, StoreSecret};
use tacit_server::{Server, ServerConfig};
use tokio::sync::oneshot;

struct Relay {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Relay {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::default();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.data_dir = dir.path().join("server");
        let server = Server::bind(config).await.unwrap();
        let url = format!("http://{}", server.local_addr());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Self { url, stop: Some(tx), task, _dir: dir }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = self.task.await;
    }
}

async fn account(relay: &Relay, home: &Path, name: &str) -> Client {
    Client::create_account(home, StoreSecret::NoPassphrase, &relay.url, name, None).await.unwrap()
}

fn texts(c: &Client, peer: &str) -> Vec<String> {
    c.history(peer).unwrap().into_iter().map(|e| e.text).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_converse_verify_and_survive_restarts() {
    let relay = Relay::start().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_contact_with_a_new_identity_is_refused_until_reverified() {
    let relay = Relay::start().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_restored_from_an_old_copy_starts_a_fresh_session_and_the_conversation_goes_on() {
    let relay = Relay::start().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetched_but_unprocessed_messages_come_back_once() {
    let relay = Relay::start().await;
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
