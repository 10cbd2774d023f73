//! The origin a device signs in to: the client signs only for the server it dialled, and a
//! server on a wildcard address takes its origin from its `origin` setting, its certificate's
//! name, or (with neither) the request's `Host` header. The real server on loopback, on
//! SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)] // a test file

#[macro_use]
mod common;

use std::time::Duration;

use common::{Backend, Relay};
use tacit_client::{Client, ClientError, ConnectOptions, ErrorKind, StoreSecret};

on_both!(
    a_client_refuses_to_sign_for_another_origin_than_the_server_it_dialled,
    a_wildcard_server_with_a_certificate_signs_in_with_the_certificate_name,
    a_wildcard_server_with_neither_origin_nor_certificate_still_serves_local_clients,
);

async fn create(
    url: &str,
    home: &std::path::Path,
    name: &str,
    options: &ConnectOptions,
) -> Result<Client, ClientError> {
    Client::create_account_with(home, StoreSecret::NoPassphrase, url, name, None, options).await
}

fn assert_wrong_origin(err: &ClientError, signed: &str) {
    assert_eq!(err.kind(), ErrorKind::Security, "{err}");
    assert!(matches!(err, ClientError::WrongOrigin { signed: s, .. } if s == signed), "{err}");
}

async fn a_client_refuses_to_sign_for_another_origin_than_the_server_it_dialled(backend: Backend) {
    // A server that hands out challenges for another origin: what a relaying server does
    // (it passes on the challenge of the server it wants to sign in to as us).
    let relay = Relay::start_with(backend, false, |c| c.origin = Some("https://chat.example".into())).await;
    let home = tempfile::tempdir().unwrap();
    let mut alice = create(&relay.url, home.path(), "alice", &ConnectOptions::default()).await.unwrap();
    // Creating an account needs no sign-in; the first authenticated call does.
    let err = alice.receive(Duration::ZERO).await.err().unwrap();
    assert_wrong_origin(&err, "https://chat.example");
    relay.stop().await;
}

async fn a_wildcard_server_with_a_certificate_signs_in_with_the_certificate_name(backend: Backend) {
    let relay = Relay::start_with(backend, true, |c| c.listen = "0.0.0.0:0".parse().unwrap()).await;
    let trusted = ConnectOptions::default().with_extra_roots_pem(&relay.certs().ca_pem()).unwrap();
    let port = relay.port();
    // The certificate names localhost (and 127.0.0.1, which is not a DNS name): the origin.
    let (ha, hb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let by_name = format!("https://localhost:{port}");
    let mut alice = create(&by_name, ha.path(), "alice", &trusted).await.unwrap();
    assert!(alice.receive(Duration::ZERO).await.unwrap().is_empty(), "signed in");
    // Dialled by address, the same server asks for a signature for localhost: refused.
    let by_address = format!("https://127.0.0.1:{port}");
    let mut bob = create(&by_address, hb.path(), "bob", &trusted).await.unwrap();
    let err = bob.receive(Duration::ZERO).await.err().unwrap();
    assert_wrong_origin(&err, &by_name);
    relay.stop().await;
}

async fn a_wildcard_server_with_neither_origin_nor_certificate_still_serves_local_clients(backend: Backend) {
    let relay = Relay::start_with(backend, false, |c| c.listen = "[::]:0".parse().unwrap()).await;
    let port = relay.port();
    let (ha, hb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Each client signs for the address it dialled.
    let mut alice =
        create(&format!("http://127.0.0.1:{port}"), ha.path(), "alice", &ConnectOptions::default())
            .await
            .unwrap();
    let mut bob =
        create(&format!("http://[::1]:{port}"), hb.path(), "bob", &ConnectOptions::default()).await.unwrap();
    alice.send_text("bob", "over a wildcard listener").await.unwrap();
    let got = bob.receive(Duration::from_secs(5)).await.unwrap();
    assert_eq!(got[0].text, "over a wildcard listener");
    relay.stop().await;
}
