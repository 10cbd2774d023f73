//! HTTPS and WSS: the real server on loopback with a certificate from a throwaway CA
//! (`scripts/test-certs`), on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a test file

#[macro_use]
mod common;

use std::path::Path;
use std::time::Duration;

use common::{Backend, Relay};
use tacit_client::{Client, ClientError, ConnectOptions, ErrorKind, StoreSecret};

on_both!(a_client_that_trusts_the_ca_talks_over_https_and_wss_and_others_refuse_the_server);

async fn create(
    relay: &Relay,
    home: &Path,
    name: &str,
    options: &ConnectOptions,
) -> Result<Client, ClientError> {
    Client::create_account_with(home, StoreSecret::NoPassphrase, &relay.url, name, None, options).await
}

fn assert_refused(err: ClientError) {
    assert_eq!(err.kind(), ErrorKind::Network, "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");
}

async fn a_client_that_trusts_the_ca_talks_over_https_and_wss_and_others_refuse_the_server(backend: Backend) {
    let relay = Relay::start_tls(backend).await;
    assert!(relay.url.starts_with("https://127.0.0.1:"), "{}", relay.url);
    let trusted = ConnectOptions::default().with_extra_roots_pem(&relay.certs().ca_pem()).unwrap();
    let other = ConnectOptions::default().with_extra_roots_pem(&relay.certs().other_ca_pem()).unwrap();
    let homes: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (ha, hb, hm) = (homes[0].path(), homes[1].path(), homes[2].path());

    // Trusting the system's roots only, or another CA: the server is refused before any
    // request is sent, so the name stays free (the keys made are kept to resume with).
    assert_refused(create(&relay, hm, "mallory", &ConnectOptions::default()).await.err().unwrap());
    assert_refused(create(&relay, hm, "mallory", &other).await.err().unwrap());
    create(&relay, hm, "mallory", &trusted).await.unwrap();

    let mut alice = create(&relay, ha, "alice", &trusted).await.unwrap();
    let mut bob = create(&relay, hb, "bob", &trusted).await.unwrap();
    alice.send_text("bob", "over https").await.unwrap();
    // A receive with a wait listens on the WebSocket: wss://.
    let got = bob.receive(Duration::from_secs(5)).await.unwrap();
    assert_eq!(got.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["over https"]);
    bob.send_text("alice", "fetched over https").await.unwrap();
    assert_eq!(alice.receive(Duration::ZERO).await.unwrap()[0].text, "fetched over https");
    // Live delivery while alice listens.
    let (got, sent) = tokio::join!(alice.receive(Duration::from_secs(5)), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        bob.send_text("alice", "live over wss").await
    });
    sent.unwrap();
    assert_eq!(got.unwrap()[0].text, "live over wss");

    // The same store opened without the CA refuses the server too.
    drop(alice);
    let mut alice = Client::open(ha, None).unwrap();
    assert_refused(alice.send_text("bob", "hello?").await.err().unwrap());
    let mut alice = Client::open_with(ha, None, &trusted).unwrap();
    alice.send_text("bob", "hello again").await.unwrap();
    assert_eq!(bob.receive(Duration::from_secs(5)).await.unwrap()[0].text, "hello again");
    relay.stop().await;
}
