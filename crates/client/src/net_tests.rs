//! Issue 9's calls of [`crate::net::Api`] against the real server on loopback, on SQLite and
//! on PostgreSQL: each goes through and reads its answer (errors come back typed).

// The SDK's loopback harness, as `server_tests.rs` loads it (this file belongs to `net.rs`,
// whose owner does not touch `server_tests.rs`).
#[allow(clippy::duplicate_mod)]
#[path = "../tests/common/mod.rs"]
#[macro_use]
mod common;

use common::{Backend, Relay, account};
use tacit_protocol::{DeviceEntry, DeviceList};

use crate::ClientError;
use crate::api;
use crate::net::{Api, ConnectOptions};

on_both!(issue_9_calls_round_trip);

async fn issue_9_calls_round_trip(backend: Backend) {
    let relay = Relay::start(backend).await;
    let home = tempfile::tempdir().unwrap();
    let client = account(&relay, home.path(), "alice").await;
    let mut api = Api::new(&relay.url, &ConnectOptions::default()).unwrap();
    let identity = &client.me.identity;
    api.authenticate("alice", 1, |m| Ok(identity.sign_auth_message(m)?.as_bytes().to_vec())).await.unwrap();

    let st = api.device_status().await.unwrap();
    assert_eq!(st.devices.iter().map(|d| d.device).collect::<Vec<_>>(), vec![1]);
    let list = DeviceList::sign(
        client.me.account.as_ref().unwrap(),
        client.me.name.clone(),
        2,
        vec![DeviceEntry { approver: true, ..DeviceEntry::new(client.me.device, identity.public().clone()) }],
    )
    .unwrap();
    let req = api::PublishDeviceListRequest {
        device_list: list.to_bytes().into(),
        rotation_signature: None,
        new_devices: vec![],
    };
    assert_eq!(api.publish_device_list("alice", &req).await.unwrap().version, 2);
    let again = api.publish_device_list("alice", &req).await.unwrap_err();
    assert!(
        matches!(
            again,
            ClientError::Server { status: 409, code: Some(api::ErrorCode::DeviceListConflict), .. }
        ),
        "{again:?}"
    );

    let slot = [9u8; 16];
    let offer = api::LinkOfferRequest { slot: slot.to_vec().into(), offer: b"offer".to_vec().into() };
    assert_eq!(api.link_offer_post(&offer).await.unwrap().offer.0, b"offer");
    assert_eq!(api.link_offer_get(&slot).await.unwrap().offer.0, b"offer");
    assert!(api.link_answer_wait(&slot, 0).await.unwrap().is_none());
    api.link_answer_put(&slot, &api::LinkAnswerRequest { answer: b"sealed".to_vec().into() }).await.unwrap();
    assert_eq!(api.link_answer_wait(&slot, 5).await.unwrap().unwrap().answer.0, b"sealed");
    api.link_delete(&slot).await.unwrap();
    assert!(matches!(api.link_offer_get(&slot).await, Err(ClientError::NotFound(_))));

    let b = api.blob_create(5).await.unwrap();
    assert_eq!(api.blob_put(&b.id, 0, b"ab".to_vec()).await.unwrap().received, 2);
    assert_eq!(api.blob_status(&b.id).await.unwrap().received, 2);
    let wrong = api.blob_put(&b.id, 0, b"cde".to_vec()).await.unwrap_err();
    assert!(matches!(wrong, ClientError::Server { status: 409, .. }), "{wrong:?}");
    api.blob_put(&b.id, 2, b"cde".to_vec()).await.unwrap();
    assert_eq!(api.blob_get(&b.id, 1, 10).await.unwrap(), b"bcde");
    api.blob_delete(&b.id).await.unwrap();
    assert!(matches!(api.blob_status(&b.id).await, Err(ClientError::NotFound(_))));

    api.logout_device(1).await.unwrap();
    assert!(api.device_status().await.is_err(), "logged out");
    relay.stop().await;
}
