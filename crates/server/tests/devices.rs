//! Issue 9 on the server, over real sockets, on SQLite and PostgreSQL: device list
//! publishing (add, revoke, rotate, conflicts, concurrent publishes), self-send coverage,
//! logout, link slots and blobs. Every refusal is checked to have changed nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[macro_use]
mod common;

use common::*;
use rand_core::OsRng;
use reqwest::{Method, StatusCode};
use tacit_api as api;
use tacit_protocol::{
    AccountIdentity, AccountName, DeviceEntry, DeviceId, DeviceIdentity, DeviceList, DevicePrekeys, UnixTime,
};

on_both!(
    publish_adds_revokes_and_rotates,
    refused_publishes_change_nothing,
    concurrent_publishes_one_wins,
    self_sends_and_logout,
    link_slot_lifecycle,
    blobs_upload_resume_and_limits,
    blobs_are_refused_below_the_storage_watermark,
);

/// A new device: its identity and first prekeys (signed, last resort, two one-time).
fn new_device() -> (DeviceIdentity, api::PrekeyUploadRequest) {
    let device = DeviceIdentity::generate(&mut OsRng).unwrap();
    let mut prekeys = DevicePrekeys::new();
    let now = UnixTime(1_700_000_000);
    let plan = prekeys.plan(now, &policy(2), 0, 0);
    let upload = prekeys.execute(&mut OsRng, &device, now, &plan).unwrap();
    (device, upload_request(&upload))
}

fn entry(id: u32, d: &DeviceIdentity, approver: bool) -> DeviceEntry {
    DeviceEntry { approver, ..DeviceEntry::new(DeviceId::new(id).unwrap(), d.public().clone()) }
}

fn sign(key: &AccountIdentity, name: &str, version: u64, entries: Vec<DeviceEntry>) -> Vec<u8> {
    DeviceList::sign(key, AccountName::new(name).unwrap(), version, entries).unwrap().to_bytes()
}

fn publish_req(list: Vec<u8>, new: Vec<(u32, api::PrekeyUploadRequest)>) -> api::PublishDeviceListRequest {
    api::PublishDeviceListRequest {
        device_list: list.into(),
        rotation_signature: None,
        new_devices: new
            .into_iter()
            .map(|(device, prekeys)| api::NewDevicePrekeys { device, prekeys })
            .collect(),
    }
}

async fn publish(
    http: &Http,
    name: &str,
    token: &str,
    req: &api::PublishDeviceListRequest,
) -> (StatusCode, serde_json::Value) {
    http.call(Method::PUT, &api::DEVICE_LIST.replace("{name}", name), Some(token), Some(req)).await
}

/// Signs in as `device` of `name`: the token, or the failing status.
async fn login(http: &Http, name: &str, device: u32, identity: &DeviceIdentity) -> Result<String, u16> {
    let (s, j) = http
        .call(
            Method::POST,
            api::AUTH_CHALLENGE,
            None,
            Some(&api::ChallengeRequest { account: name.into(), device }),
        )
        .await;
    if !s.is_success() {
        return Err(s.as_u16());
    }
    let c: api::ChallengeResponse = serde_json::from_value(j).unwrap();
    let msg = api::auth_message(&c.origin, name, device, c.challenge.as_slice());
    let req = api::SessionRequest {
        account: name.into(),
        device,
        challenge: c.challenge,
        signature: device_sign(identity, &msg).into(),
    };
    let (s, j) = http.call(Method::POST, api::AUTH_SESSION, None, Some(&req)).await;
    if !s.is_success() {
        return Err(s.as_u16());
    }
    Ok(serde_json::from_value::<api::SessionResponse>(j).unwrap().token)
}

async fn stored_list(http: &Http, name: &str) -> Vec<u8> {
    let r: api::DeviceListResponse =
        http.ok(Method::GET, &api::DEVICE_LIST.replace("{name}", name), None, NONE).await;
    r.device_list.0
}

async fn rotations(http: &Http, name: &str, after: u64) -> api::RotationsResponse {
    let path = format!("{}?after={after}", api::ROTATIONS.replace("{name}", name));
    http.ok(Method::GET, &path, None, NONE).await
}

async fn status(http: &Http, token: &str) -> api::DeviceStatusResponse {
    http.ok(Method::GET, api::DEVICES, Some(token), NONE).await
}

async fn send_as(http: &Http, token: &str, to: &str, devices: &[u32]) -> (StatusCode, serde_json::Value) {
    let req = api::SendRequest {
        recipient: to.into(),
        envelopes: devices
            .iter()
            .map(|&d| api::OutgoingEnvelope { device: d, content: b"hi".to_vec().into() })
            .collect(),
        idempotency_key: None,
        state_counter: None,
    };
    http.call(Method::POST, api::MESSAGES, Some(token), Some(&req)).await
}

fn mismatch(got: (StatusCode, serde_json::Value), missing: &[u32], extra: &[u32]) {
    assert_eq!(got.0.as_u16(), 409, "{}", got.1);
    let m: api::MismatchedDevices = serde_json::from_value(got.1).unwrap();
    assert_eq!((m.missing.as_slice(), m.extra.as_slice()), (missing, extra));
}

/// Envelopes stored for a device, read from the store directly (a revoked or logged-out
/// device cannot fetch).
async fn mailbox_len(server: &TestServer, name: &str, device: u32) -> usize {
    let account = server.state().store().account(name).await.unwrap().unwrap().id;
    server
        .state()
        .store()
        .fetch(tacit_server::DeviceKey { account, device }, 0, 100, 1 << 20)
        .await
        .unwrap()
        .len()
}

async fn publish_adds_revokes_and_rotates(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let alice = User::register(&http, &unique("alice"), 1).await;
    let bob = User::register(&http, &unique("bob"), 1).await;
    let name = alice.name.clone();

    // Add device 2 with its prekeys: reachable at once.
    let (d2, p2) = new_device();
    let v2 = sign(&alice.account, &name, 2, vec![entry(1, &alice.device, true), entry(2, &d2, false)]);
    let (s, j) = publish(&http, &name, &alice.token, &publish_req(v2.clone(), vec![(2, p2)])).await;
    assert_eq!(s, 200, "{j}");
    assert_eq!(j["version"], 2);
    assert_eq!(stored_list(&http, &name).await, v2);
    let r: api::BundleResponse = http
        .ok(Method::GET, &api::BUNDLE.replace("{name}", &name).replace("{device}", "2"), bob.tok(), NONE)
        .await;
    assert!(!r.bundle.0.is_empty());
    mismatch(bob.send(&http, &name, &[1], b"x").await, &[2], &[]);
    assert_eq!(bob.send(&http, &name, &[1, 2], b"x").await.0, 200);
    let t2 = login(&http, &name, 2, &d2).await.unwrap();
    let st = status(&http, &t2).await;
    assert_eq!(st.devices.iter().map(|d| d.device).collect::<Vec<_>>(), vec![1, 2]);
    assert!(st.devices.iter().all(|d| d.created_ms > 0 && d.last_seen_ms.is_some() && !d.logged_out));
    let mut ws2 = ws_connect(&server, Some(&t2)).await.unwrap();
    assert!(matches!(next_frame(&mut ws2).await, api::ServerFrame::Envelope(_)));
    assert_eq!(mailbox_len(&server, &name, 2).await, 1);

    // Revoke device 2: its keys, tokens, mailbox and socket are gone; it cannot sign in.
    let v3 = sign(&alice.account, &name, 3, vec![entry(1, &alice.device, true)]);
    let (s, j) = publish(&http, &name, &alice.token, &publish_req(v3.clone(), vec![])).await;
    assert_eq!(s, 200, "{j}");
    assert_eq!(close_code(&mut ws2).await, api::close::SESSION_ENDED);
    assert_eq!(http.call(Method::GET, api::MESSAGES, Some(&t2), NONE).await.0, 401);
    assert!(login(&http, &name, 2, &d2).await.is_err());
    assert_eq!(mailbox_len(&server, &name, 2).await, 0);
    mismatch(bob.send(&http, &name, &[1, 2], b"x").await, &[], &[2]);
    assert_eq!(bob.send(&http, &name, &[1], b"x").await.0, 200);
    let (s, _) = http
        .call(Method::GET, &api::BUNDLE.replace("{name}", &name).replace("{device}", "2"), bob.tok(), NONE)
        .await;
    assert_eq!(s, 404);

    // Add device 3 (an approver), then revoke device 1, the approver holding the key: the
    // account key rotates, signed over by the old key. Device 1 publishes its own removal.
    let (d3, p3) = new_device();
    let v4 = sign(&alice.account, &name, 4, vec![entry(1, &alice.device, true), entry(3, &d3, true)]);
    assert_eq!(publish(&http, &name, &alice.token, &publish_req(v4.clone(), vec![(3, p3)])).await.0, 200);
    let new_key = AccountIdentity::generate(&mut OsRng).unwrap();
    let v5 = sign(&new_key, &name, 5, vec![entry(3, &d3, true)]);
    // Without a rotation signature, or with a wrong one: refused, nothing changed.
    assert_code(
        publish(&http, &name, &alice.token, &publish_req(v5.clone(), vec![])).await,
        409,
        "device_list_conflict",
    );
    let mut wrong = publish_req(v5.clone(), vec![]);
    wrong.rotation_signature = Some(DeviceList::sign_rotation(&new_key, &v5).as_bytes().to_vec().into());
    assert_code(publish(&http, &name, &alice.token, &wrong).await, 409, "device_list_conflict");
    assert_eq!(stored_list(&http, &name).await, v4);
    let mut rotate = publish_req(v5.clone(), vec![]);
    rotate.rotation_signature =
        Some(DeviceList::sign_rotation(&alice.account, &v5).as_bytes().to_vec().into());
    let (s, j) = publish(&http, &name, &alice.token, &rotate).await;
    assert_eq!(s, 200, "{j}");
    assert_eq!(stored_list(&http, &name).await, v5);
    assert_eq!(http.call(Method::GET, api::MESSAGES, alice.tok(), NONE).await.0, 401, "device 1 was removed");
    // The old key can no longer publish; the new one can (device 3 signed in).
    let t3 = login(&http, &name, 3, &d3).await.unwrap();
    let stale = sign(&alice.account, &name, 6, vec![entry(3, &d3, true)]);
    assert_code(publish(&http, &name, &t3, &publish_req(stale, vec![])).await, 409, "device_list_conflict");
    let v6 = sign(&new_key, &name, 6, vec![entry(3, &d3, true)]);
    assert_eq!(publish(&http, &name, &t3, &publish_req(v6, vec![])).await.0, 200);

    // The rotation is kept (the refused ones are not): the list and the old key's signature.
    let first = rotations(&http, &name, 0).await;
    assert!(!first.more);
    assert_eq!(
        first.rotations,
        vec![api::Rotation {
            device_list: v5.clone().into(),
            rotation_signature: rotate.rotation_signature.clone().unwrap()
        }]
    );
    assert!(rotations(&http, &name, 5).await.rotations.is_empty());
    // More rotations than a page: a device that follows them from the first key, a page at a
    // time, ends at the current one.
    let mut key = new_key;
    let total = api::limits::MAX_ROTATIONS_PER_PAGE + 2;
    for v in 7..7 + total as u64 {
        let next = AccountIdentity::generate(&mut OsRng).unwrap();
        let list = sign(&next, &name, v, vec![entry(3, &d3, true)]);
        let mut req = publish_req(list.clone(), vec![]);
        req.rotation_signature = Some(DeviceList::sign_rotation(&key, &list).as_bytes().to_vec().into());
        assert_eq!(publish(&http, &name, &t3, &req).await.0, 200);
        key = next;
    }
    let (mut after, mut held, mut pages) = (0, alice.account.public(), 0);
    loop {
        let page = rotations(&http, &name, after).await;
        pages += 1;
        for r in &page.rotations {
            let sig: [u8; 64] = r.rotation_signature.0.as_slice().try_into().unwrap();
            DeviceList::verify_rotation(&held, &r.device_list.0, &tacit_protocol::Signature::from_bytes(sig))
                .unwrap();
            let list =
                DeviceList::verify(&r.device_list.0, &AccountName::new(&name).unwrap(), None, None).unwrap();
            held = *list.account_key();
            after = list.version();
        }
        if !page.more {
            break;
        }
    }
    assert_eq!((held, pages), (key.public(), 2));
    assert_eq!(rotations(&http, &name, 0).await.rotations.len(), api::limits::MAX_ROTATIONS_PER_PAGE);
    // Unknown accounts and malformed queries.
    let (s, _) = http.call(Method::GET, &api::ROTATIONS.replace("{name}", "nobody-here"), None, NONE).await;
    assert_eq!(s, 404);
    let bad = format!("{}?after=x", api::ROTATIONS.replace("{name}", &name));
    assert_code(http.call(Method::GET, &bad, None, NONE).await, 400, "bad_request");
    server.finish().await;
}

async fn refused_publishes_change_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let alice = User::register(&http, &unique("alice"), 1).await;
    let bob = User::register(&http, &unique("bob"), 1).await;
    let name = alice.name.clone();
    let (d2, p2) = new_device();
    let v2 = sign(&alice.account, &name, 2, vec![entry(1, &alice.device, true), entry(2, &d2, false)]);
    assert_eq!(
        publish(&http, &name, &alice.token, &publish_req(v2.clone(), vec![(2, p2.clone())])).await.0,
        200
    );
    // Revoke 2, so id 2 is used and gone.
    let v3 = sign(&alice.account, &name, 3, vec![entry(1, &alice.device, true)]);
    assert_eq!(publish(&http, &name, &alice.token, &publish_req(v3.clone(), vec![])).await.0, 200);
    let before = (stored_list(&http, &name).await, status(&http, &alice.token).await);

    let (d4, p4) = new_device();
    let (other, _) = new_device();
    let garbage = api::PublishDeviceListRequest {
        device_list: vec![1, 2, 3].into(),
        rotation_signature: None,
        new_devices: vec![],
    };
    let cases: Vec<(&str, api::PublishDeviceListRequest, u16, &str)> = vec![
        (
            "same version",
            publish_req(
                sign(&alice.account, &name, 3, vec![entry(1, &alice.device, true), entry(4, &d4, false)]),
                vec![(4, p4.clone())],
            ),
            409,
            "device_list_conflict",
        ),
        (
            "older version",
            publish_req(sign(&alice.account, &name, 2, vec![entry(1, &alice.device, true)]), vec![]),
            409,
            "device_list_conflict",
        ),
        (
            "id reuse",
            publish_req(
                sign(&alice.account, &name, 4, vec![entry(1, &alice.device, true), entry(2, &d4, false)]),
                vec![(2, p4.clone())],
            ),
            409,
            "device_list_conflict",
        ),
        (
            "identity change",
            publish_req(sign(&alice.account, &name, 4, vec![entry(1, &other, true)]), vec![]),
            409,
            "device_list_conflict",
        ),
        (
            "missing prekeys",
            publish_req(
                sign(&alice.account, &name, 4, vec![entry(1, &alice.device, true), entry(4, &d4, false)]),
                vec![],
            ),
            409,
            "device_list_conflict",
        ),
        (
            "no signed prekey",
            publish_req(
                sign(&alice.account, &name, 4, vec![entry(1, &alice.device, true), entry(4, &d4, false)]),
                vec![(4, api::PrekeyUploadRequest { signed_prekey: None, ..p4.clone() })],
            ),
            409,
            "device_list_conflict",
        ),
        // Prekeys signed by another device than the one listed.
        (
            "foreign prekeys",
            publish_req(
                sign(&alice.account, &name, 4, vec![entry(1, &alice.device, true), entry(4, &other, false)]),
                vec![(4, p4.clone())],
            ),
            400,
            "bad_request",
        ),
        (
            "prekeys for a device not added",
            publish_req(
                sign(&alice.account, &name, 4, vec![entry(1, &alice.device, true)]),
                vec![(5, p4.clone())],
            ),
            400,
            "bad_request",
        ),
        (
            "signed by a stranger",
            publish_req(sign(&bob.account, &name, 4, vec![entry(1, &alice.device, true)]), vec![]),
            409,
            "device_list_conflict",
        ),
        (
            "for another account",
            publish_req(sign(&alice.account, &bob.name, 4, vec![entry(1, &alice.device, true)]), vec![]),
            400,
            "bad_request",
        ),
        ("not a list", garbage, 400, "bad_request"),
    ];
    for (what, req, code, err) in cases {
        let got = publish(&http, &name, &alice.token, &req).await;
        assert_eq!(got.0.as_u16(), code, "{what}: {}", got.1);
        assert_eq!(got.1["code"], err, "{what}");
        assert_eq!((stored_list(&http, &name).await, status(&http, &alice.token).await), before, "{what}");
    }
    // Another account's device may not publish alice's list.
    let v4 = sign(&alice.account, &name, 4, vec![entry(1, &alice.device, true)]);
    assert_code(
        publish(&http, &name, &bob.token, &publish_req(v4.clone(), vec![])).await,
        403,
        "unauthorized",
    );
    assert_eq!(stored_list(&http, &name).await, before.0);
    // A positive control: the same list from alice's device is taken.
    assert_eq!(publish(&http, &name, &alice.token, &publish_req(v4.clone(), vec![])).await.0, 200);
    assert_eq!(stored_list(&http, &name).await, v4);
    server.finish().await;
}

async fn concurrent_publishes_one_wins(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let alice = User::register(&http, &unique("alice"), 1).await;
    let name = alice.name.clone();
    let mut version = 1;
    for round in 0..5u32 {
        // Both add device `id` under different identities, at versions v+1 and v+2: in
        // either order the second is refused (an identity change, or a version not newer),
        // and at once the compare-and-set on the version lets only one through.
        let id = round + 2;
        let (a, pa) = new_device();
        let (b, pb) = new_device();
        let la = sign(
            &alice.account,
            &name,
            version + 1,
            vec![entry(1, &alice.device, true), entry(id, &a, false)],
        );
        let lb = sign(
            &alice.account,
            &name,
            version + 2,
            vec![entry(1, &alice.device, true), entry(id, &b, false)],
        );
        let ra = publish_req(la.clone(), vec![(id, pa)]);
        let rb = publish_req(lb.clone(), vec![(id, pb)]);
        let (x, y) =
            tokio::join!(publish(&http, &name, &alice.token, &ra), publish(&http, &name, &alice.token, &rb));
        let statuses = [x.0.as_u16(), y.0.as_u16()];
        assert!(statuses == [200, 409] || statuses == [409, 200], "{statuses:?} {} {}", x.1, y.1);
        let winner = if x.0 == 200 { la } else { lb };
        assert_eq!(stored_list(&http, &name).await, winner);
        let st = status(&http, &alice.token).await;
        assert_eq!(st.devices.iter().map(|d| d.device).collect::<Vec<_>>(), vec![1, id]);
        // The next round starts above both versions, without the device.
        version += 3;
        let base = sign(&alice.account, &name, version, vec![entry(1, &alice.device, true)]);
        assert_eq!(publish(&http, &name, &alice.token, &publish_req(base, vec![])).await.0, 200);
    }

    // The store's compare-and-set itself: two updates checked against the same version,
    // applied at once; exactly one is stored.
    let store = server.state().store().clone();
    let account = store.account(&name).await.unwrap().unwrap().id;
    let state = store.list_state(account).await.unwrap().unwrap();
    let update = |v: u64| tacit_server::ListUpdate {
        account,
        previous_version: state.version,
        account_key: state.account_key.clone(),
        device_list: sign(&alice.account, &name, v, vec![entry(1, &alice.device, true)]),
        rotation_signature: None,
        version: v,
        max_device_id: state.max_device_id,
        added: vec![],
        removed: vec![],
        now_ms: 1,
    };
    for n in 0..5 {
        let v = state.version + 1 + 2 * n;
        let (x, y) =
            tokio::join!(store.publish_device_list(update(v)), store.publish_device_list(update(v + 1)));
        // Only the first round's checks were made against the stored version.
        if n == 0 {
            assert!(x.is_ok() != y.is_ok(), "{x:?} {y:?}");
        } else {
            assert!(matches!(
                (x, y),
                (Err(tacit_server::StoreError::Conflict), Err(tacit_server::StoreError::Conflict))
            ));
        }
    }
    server.finish().await;
}

async fn self_sends_and_logout(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let alice = User::register(&http, &unique("alice"), 1).await;
    let bob = User::register(&http, &unique("bob"), 1).await;
    let name = alice.name.clone();
    let (d2, p2) = new_device();
    let (d3, p3) = new_device();
    let list = sign(
        &alice.account,
        &name,
        2,
        vec![entry(1, &alice.device, true), entry(2, &d2, false), entry(3, &d3, false)],
    );
    assert_eq!(publish(&http, &name, &alice.token, &publish_req(list, vec![(2, p2), (3, p3)])).await.0, 200);
    let t2 = login(&http, &name, 2, &d2).await.unwrap();
    let t3 = login(&http, &name, 3, &d3).await.unwrap();

    // A self-send covers every other device, never the sender.
    mismatch(send_as(&http, &alice.token, &name, &[1, 2, 3]).await, &[], &[1]);
    mismatch(send_as(&http, &alice.token, &name, &[2]).await, &[3], &[]);
    assert_eq!(send_as(&http, &alice.token, &name, &[2, 3]).await.0, 200);
    assert_eq!(send_as(&http, &t2, &name, &[1, 3]).await.0, 200);
    assert_eq!(mailbox_len(&server, &name, 3).await, 2);

    // Only the device itself may log out.
    assert_code(
        http.call(Method::DELETE, &api::DEVICE.replace("{device}", "3"), Some(&alice.token), NONE).await,
        403,
        "unauthorized",
    );
    assert_eq!(
        http.call(Method::DELETE, &api::DEVICE.replace("{device}", "x"), Some(&t3), NONE).await.0,
        400
    );
    let mut ws3 = ws_connect(&server, Some(&t3)).await.unwrap();
    let (s, _) = http.call(Method::DELETE, &api::DEVICE.replace("{device}", "3"), Some(&t3), NONE).await;
    assert_eq!(s, 204);
    assert_eq!(close_code(&mut ws3).await, api::close::SESSION_ENDED);
    assert_eq!(http.call(Method::GET, api::MESSAGES, Some(&t3), NONE).await.0, 401);
    assert!(login(&http, &name, 3, &d3).await.is_err(), "a logged-out device cannot sign in");
    assert_eq!(mailbox_len(&server, &name, 3).await, 0);
    let st = status(&http, &alice.token).await;
    let flags: Vec<(u32, bool)> = st.devices.iter().map(|d| (d.device, d.logged_out)).collect();
    assert_eq!(flags, vec![(1, false), (2, false), (3, true)]);
    assert!(st.devices[0].last_seen_ms.is_some_and(|t| t % 60_000 == 0));

    // Sends no longer need (nor take) an envelope for it, HTTP and WebSocket alike.
    mismatch(send_as(&http, &alice.token, &name, &[2, 3]).await, &[], &[3]);
    assert_eq!(send_as(&http, &alice.token, &name, &[2]).await.0, 200);
    mismatch(bob.send(&http, &name, &[1, 2, 3], b"x").await, &[], &[3]);
    assert_eq!(bob.send(&http, &name, &[1, 2], b"x").await.0, 200);
    let mut ws = ws_connect(&server, bob.tok()).await.unwrap();
    assert_eq!(next_frame(&mut ws).await, api::ServerFrame::Drained);
    ws_send(&mut ws, 7, &name, &[1, 2, 3], b"x").await;
    match next_frame(&mut ws).await {
        api::ServerFrame::SendFailed { id: 7, missing, extra, .. } => {
            assert_eq!((missing, extra), (vec![], vec![3]))
        }
        other => panic!("{other:?}"),
    }
    ws_send(&mut ws, 8, &name, &[1, 2], b"x").await;
    assert!(matches!(next_frame(&mut ws).await, api::ServerFrame::Sent { id: 8, .. }));
    let (s, _) = http
        .call(Method::GET, &api::BUNDLE.replace("{name}", &name).replace("{device}", "3"), bob.tok(), NONE)
        .await;
    assert_eq!(s, 404, "a logged-out device hands out no bundle");
    server.finish().await;
}

fn slot_hex(slot: &[u8; 16]) -> String {
    slot.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_slot() -> [u8; 16] {
    let mut s = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut OsRng, &mut s);
    s
}

async fn link_slot_lifecycle(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let alice = User::register(&http, &unique("alice"), 1).await;
    let slot = random_slot();
    let hex = slot_hex(&slot);
    let path = api::LINK_SLOT.replace("{slot}", &hex);
    let answer_path = api::LINK_ANSWER.replace("{slot}", &hex);
    let offer = api::LinkOfferRequest { slot: slot.to_vec().into(), offer: b"offer".to_vec().into() };

    // Unknown before it is posted; answering it too.
    assert_code(http.call(Method::GET, &path, None, NONE).await, 404, "not_found");
    let answer = api::LinkAnswerRequest { answer: b"sealed".to_vec().into() };
    assert_code(http.call(Method::PUT, &answer_path, alice.tok(), Some(&answer)).await, 404, "not_found");
    let r: api::LinkOfferResponse = http.ok(Method::POST, api::LINK, None, Some(&offer)).await;
    assert!(r.expires_in_secs > 0);
    // The slot is taken: a second offer is refused and the first stays.
    let second = api::LinkOfferRequest { slot: slot.to_vec().into(), offer: b"other".to_vec().into() };
    assert_code(http.call(Method::POST, api::LINK, None, Some(&second)).await, 409, "already_used");
    let got: api::LinkOfferResponse = http.ok(Method::GET, &path, None, NONE).await;
    assert_eq!(got.offer.0, b"offer");

    // No answer yet: 204 after the wait (and at once with no wait).
    let started = std::time::Instant::now();
    let (s, _) = http.call(Method::GET, &format!("{answer_path}?wait_secs=1"), None, NONE).await;
    assert_eq!(s, 204);
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    assert_eq!(http.call(Method::GET, &answer_path, None, NONE).await.0, 204);

    // A waiting request gets the answer when it comes; only one answer is taken.
    let waiter = {
        let http = http.clone();
        let p = format!("{answer_path}?wait_secs=20");
        tokio::spawn(async move { http.call(Method::GET, &p, None, NONE).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        http.call(Method::PUT, &answer_path, None, Some(&answer)).await.0,
        401,
        "answering needs a session"
    );
    assert_eq!(http.call(Method::PUT, &answer_path, alice.tok(), Some(&answer)).await.0, 204);
    let (s, j) = waiter.await.unwrap();
    assert_eq!(s, 200);
    let a: api::LinkAnswerResponse = serde_json::from_value(j).unwrap();
    assert_eq!(a.answer.0, b"sealed");
    let again = api::LinkAnswerRequest { answer: b"forged".to_vec().into() };
    assert_code(http.call(Method::PUT, &answer_path, alice.tok(), Some(&again)).await, 409, "already_used");
    let a: api::LinkAnswerResponse = http.ok(Method::GET, &answer_path, None, NONE).await;
    assert_eq!(a.answer.0, b"sealed");
    assert_code(http.call(Method::GET, &path, None, NONE).await, 409, "already_used");

    // Deleted: gone.
    assert_eq!(http.call(Method::DELETE, &path, None, NONE).await.0, 204);
    assert_code(http.call(Method::GET, &path, None, NONE).await, 404, "not_found");
    assert_code(http.call(Method::GET, &answer_path, None, NONE).await, 404, "not_found");
    assert_eq!(http.call(Method::DELETE, &path, None, NONE).await.0, 404);

    // Bad slots: 404 in the path, 400 in a body, never a panic.
    for bad in
        ["00", "ZZ", &hex.to_uppercase(), &format!("{hex}00"), "%00%01", "%ff%fe", "..", "ééééééééééééééé"]
    {
        for p in [api::LINK_SLOT, api::LINK_ANSWER] {
            let p = p.replace("{slot}", bad);
            assert_code(http.call(Method::GET, &p, None, NONE).await, 404, "not_found");
        }
        let s = http.call(Method::DELETE, &api::LINK_SLOT.replace("{slot}", bad), None, NONE).await.0;
        assert_eq!(s, 404, "{bad}");
        assert_eq!(
            http.call(
                Method::GET,
                &api::LINK_SLOT.replace("{slot}", "0123456789abcdef0123456789abcdeF"),
                None,
                NONE
            )
            .await
            .0,
            404
        );
    }
    let short = api::LinkOfferRequest { slot: vec![1; 15].into(), offer: b"o".to_vec().into() };
    assert_code(http.call(Method::POST, api::LINK, None, Some(&short)).await, 400, "bad_request");
    let big = api::LinkOfferRequest {
        slot: random_slot().to_vec().into(),
        offer: vec![0; api::limits::MAX_LINK_MESSAGE_BYTES + 1].into(),
    };
    assert_code(http.call(Method::POST, api::LINK, None, Some(&big)).await, 413, "too_large");
    let full = api::LinkOfferRequest {
        slot: random_slot().to_vec().into(),
        offer: vec![0; api::limits::MAX_LINK_MESSAGE_BYTES].into(),
    };
    assert_eq!(
        http.call(Method::POST, api::LINK, None, Some(&full)).await.0,
        200,
        "the largest offer is taken"
    );

    // Expiry: a slot past its time is not found, can be taken again, and is swept.
    let old = random_slot();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    server.state().store().put_link_offer(old, b"stale".to_vec(), now - 2_000, now - 1_000).await.unwrap();
    let old_path = api::LINK_SLOT.replace("{slot}", &slot_hex(&old));
    assert_code(http.call(Method::GET, &old_path, None, NONE).await, 404, "not_found");
    let old_answer = api::LINK_ANSWER.replace("{slot}", &slot_hex(&old));
    assert_code(http.call(Method::PUT, &old_answer, alice.tok(), Some(&answer)).await, 404, "not_found");
    server.state().store().purge_expired(now).await.unwrap();
    assert_eq!(server.state().store().link_slot(old, 0).await.unwrap(), None, "swept");
    let fresh = api::LinkOfferRequest { slot: old.to_vec().into(), offer: b"fresh".to_vec().into() };
    assert_eq!(http.call(Method::POST, api::LINK, None, Some(&fresh)).await.0, 200);

    // The per-address offer budget (10 a minute; 3 taken above).
    let mut refused = 0;
    for _ in 0..10 {
        let o = api::LinkOfferRequest { slot: random_slot().to_vec().into(), offer: b"o".to_vec().into() };
        let got = http.call(Method::POST, api::LINK, None, Some(&o)).await;
        if got.0 == 429 {
            assert_eq!(got.1["code"], "rate_limited");
            refused += 1;
        }
    }
    assert!(refused > 0, "the per-address offer limit applies");

    // A wait ends promptly at shutdown.
    let waiting = api::LINK_ANSWER.replace("{slot}", &slot_hex(&old));
    let waiter = {
        let http = http.clone();
        tokio::spawn(async move {
            http.request(Method::GET, &format!("{waiting}?wait_secs=60"), None).send().await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    server.finish().await;
    let _ = waiter.await.unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
}

async fn blobs_upload_resume_and_limits(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let alice = User::register(&http, &unique("alice"), 1).await;
    let bob = User::register(&http, &unique("bob"), 1).await;
    const CHUNK: usize = api::limits::MAX_BLOB_CHUNK_BYTES;
    let size = 2 * CHUNK + 1000;
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let b: api::BlobStatus = http
        .ok(Method::POST, api::BLOBS, alice.tok(), Some(&api::CreateBlobRequest { size: size as u64 }))
        .await;
    assert_eq!((b.size, b.received, b.id.len()), (size as u64, 0, 32));
    let blob = api::BLOB.replace("{id}", &b.id);
    let status_path = api::BLOB_STATUS.replace("{id}", &b.id);
    let put = |offset: usize, chunk: Vec<u8>, token: String| {
        let http = http.clone();
        let blob = blob.clone();
        async move {
            let r = http
                .request(Method::PUT, &format!("{blob}?offset={offset}"), Some(&token))
                .header("content-type", "application/octet-stream")
                .body(chunk)
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            let j: serde_json::Value = r.json().await.unwrap_or(serde_json::Value::Null);
            (s, j)
        }
    };
    let get = |offset: usize, len: usize, token: String| {
        let http = http.clone();
        let blob = blob.clone();
        async move {
            let r = http
                .request(Method::GET, &format!("{blob}?offset={offset}&len={len}"), Some(&token))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
        }
    };
    // A full 1 MiB chunk goes through; one byte more does not.
    let (s, j) = put(0, data[..CHUNK].to_vec(), alice.token.clone()).await;
    assert_eq!(s, 200, "{j}");
    assert_eq!(j["received"], CHUNK as u64);
    let (s, _) = put(CHUNK, vec![0; CHUNK + 1], alice.token.clone()).await;
    assert_eq!(s, 413);
    // Wrong offsets: refused naming what was received; nothing stored.
    for offset in [0, CHUNK - 1, CHUNK + 1] {
        let (s, j) = put(offset, data[CHUNK..CHUNK + 10].to_vec(), alice.token.clone()).await;
        assert_eq!((s, j["code"].as_str()), (409, Some("already_used")), "{offset}: {j}");
        assert!(j["message"].as_str().unwrap().contains(&format!("received {CHUNK}")), "{j}");
    }
    // Incomplete: not readable yet.
    let (s, _) = get(0, 10, alice.token.clone()).await;
    assert_eq!(s, 409);
    // Resume from the status; small chunks then the end; never beyond the size.
    let st: api::BlobStatus = http.ok(Method::GET, &status_path, alice.tok(), NONE).await;
    assert_eq!(st.received, CHUNK as u64);
    let mut at = CHUNK;
    for len in [1, 999, CHUNK - 1000] {
        let (s, j) = put(at, data[at..at + len].to_vec(), alice.token.clone()).await;
        assert_eq!(s, 200, "{j}");
        at += len;
    }
    let (s, _) = put(at, data[at..].iter().copied().chain([0u8]).collect(), alice.token.clone()).await;
    assert_eq!(s, 409, "past the size");
    let (s, _) = put(at, data[at..].to_vec(), alice.token.clone()).await;
    assert_eq!(s, 200);
    let st: api::BlobStatus = http.ok(Method::GET, &status_path, alice.tok(), NONE).await;
    assert_eq!(st.received, size as u64);
    let (s, _) = put(size, vec![1], alice.token.clone()).await;
    assert_eq!(s, 409, "complete");
    // Read back in ranges crossing chunk rows.
    let mut back = Vec::new();
    let mut off = 0;
    for len in [10, CHUNK, CHUNK] {
        let (s, bytes) = get(off, len, alice.token.clone()).await;
        assert_eq!(s, 200);
        off += bytes.len();
        back.extend(bytes);
    }
    let (s, rest) = get(off, CHUNK, alice.token.clone()).await;
    assert_eq!(s, 200);
    back.extend(rest);
    assert_eq!(back.len(), size);
    assert!(back == data, "the blob reads back as written");
    let (s, bytes) = get(CHUNK - 5, 10, alice.token.clone()).await;
    assert_eq!((s, bytes.as_slice()), (200, &data[CHUNK - 5..CHUNK + 5]));
    let (s, _) = get(0, CHUNK + 1, alice.token.clone()).await;
    assert_eq!(s, 413);
    // A second device of the account reads it (same account).
    // Another account: not found, whatever it tries; nothing changes.
    let (s, _) = get(0, 10, bob.token.clone()).await;
    assert_eq!(s, 404);
    assert_eq!(http.call(Method::GET, &status_path, bob.tok(), NONE).await.0, 404);
    assert_eq!(put(size, vec![1], bob.token.clone()).await.0, 404);
    assert_eq!(http.call(Method::DELETE, &blob, bob.tok(), NONE).await.0, 404);
    let st: api::BlobStatus = http.ok(Method::GET, &status_path, alice.tok(), NONE).await;
    assert_eq!(st.received, size as u64);
    // Sizes and ids.
    for size in [0, api::limits::MAX_BLOB_BYTES + 1] {
        let got =
            http.call(Method::POST, api::BLOBS, alice.tok(), Some(&api::CreateBlobRequest { size })).await;
        assert!(got.0 == 400 || got.0 == 413, "{size}: {:?}", got);
    }
    for bad in ["00", "ZZZZ", "%ff%fe", &b.id.to_uppercase()] {
        let s = http.call(Method::GET, &api::BLOB_STATUS.replace("{id}", bad), alice.tok(), NONE).await.0;
        assert_eq!(s, 404, "{bad}");
    }
    // At most four live blobs per account (this is one): 429 beyond.
    for _ in 1..api::limits::MAX_BLOBS_PER_ACCOUNT {
        let _: api::BlobStatus =
            http.ok(Method::POST, api::BLOBS, alice.tok(), Some(&api::CreateBlobRequest { size: 1 })).await;
    }
    assert_code(
        http.call(Method::POST, api::BLOBS, alice.tok(), Some(&api::CreateBlobRequest { size: 1 })).await,
        429,
        "rate_limited",
    );
    let _: api::BlobStatus =
        http.ok(Method::POST, api::BLOBS, bob.tok(), Some(&api::CreateBlobRequest { size: 1 })).await;
    // Deleting one makes room.
    assert_eq!(http.call(Method::DELETE, &blob, alice.tok(), NONE).await.0, 204);
    assert_eq!(http.call(Method::GET, &status_path, alice.tok(), NONE).await.0, 404);
    assert_eq!(get(0, 10, alice.token.clone()).await.0, 404);
    let _: api::BlobStatus =
        http.ok(Method::POST, api::BLOBS, alice.tok(), Some(&api::CreateBlobRequest { size: 1 })).await;
    // Two uploads at the same offset at once: exactly one is stored.
    for _ in 0..3 {
        let race: api::BlobStatus =
            http.ok(Method::POST, api::BLOBS, bob.tok(), Some(&api::CreateBlobRequest { size: 10 })).await;
        let path = api::BLOB.replace("{id}", &race.id);
        let up = |byte: u8| {
            let http = http.clone();
            let path = path.clone();
            let token = bob.token.clone();
            async move {
                http.request(Method::PUT, &format!("{path}?offset=0"), Some(&token))
                    .body(vec![byte; 10])
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        };
        let (x, y) = tokio::join!(up(1), up(2));
        assert!([x, y] == [200, 409] || [x, y] == [409, 200], "{x} {y}");
        let r =
            http.request(Method::GET, &format!("{path}?offset=0&len=100"), bob.tok()).send().await.unwrap();
        assert_eq!(r.bytes().await.unwrap().to_vec(), vec![if x == 200 { 1 } else { 2 }; 10]);
        assert_eq!(http.call(Method::DELETE, &path, bob.tok(), NONE).await.0, 204);
    }
    // Expired blobs are gone and swept.
    let store = server.state().store().clone();
    let account = store.account(&bob.name).await.unwrap().unwrap().id;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let id = [7u8; 16];
    store.create_blob(account, id, 5, now - 2000, now - 1000, 4).await.unwrap();
    assert_eq!(store.blob(account, id, now).await.unwrap(), None);
    assert!(store.blob(account, id, now - 1500).await.unwrap().is_some(), "positive control");
    store.purge_expired(now).await.unwrap();
    assert_eq!(store.blob(account, id, 0).await.unwrap(), None, "swept");
    server.finish().await;
}

/// Below the storage watermark no blob is created and no chunk taken (`507`); the status
/// still answers, and the upload resumes once storage is back.
async fn blobs_are_refused_below_the_storage_watermark(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let alice = User::register(&http, &unique("alice"), 1).await;
    let b: api::BlobStatus =
        http.ok(Method::POST, api::BLOBS, alice.tok(), Some(&api::CreateBlobRequest { size: 20 })).await;
    let path = api::BLOB.replace("{id}", &b.id);
    let put = |http: Http, token: String, offset: u64| {
        let path = path.clone();
        async move {
            let r = http
                .request(Method::PUT, &format!("{path}?offset={offset}"), Some(&token))
                .body(vec![5u8; 10]);
            r.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(put(http.clone(), alice.token.clone(), 0).await, 200);
    let server = server
        .restart_with(|c| {
            c.min_free_bytes = u64::MAX;
            c.database_quota_bytes = Some(1);
        })
        .await;
    let http = server.http();
    assert_code(
        http.call(Method::POST, api::BLOBS, alice.tok(), Some(&api::CreateBlobRequest { size: 1 })).await,
        507,
        "storage_full",
    );
    assert_eq!(put(http.clone(), alice.token.clone(), 10).await, 507);
    let st: api::BlobStatus =
        http.ok(Method::GET, &api::BLOB_STATUS.replace("{id}", &b.id), alice.tok(), NONE).await;
    assert_eq!(st.received, 10, "nothing was taken");
    let server = server
        .restart_with(|c| {
            c.min_free_bytes = 0;
            c.database_quota_bytes = None;
        })
        .await;
    let http = server.http();
    assert_eq!(put(http.clone(), alice.token.clone(), 10).await, 200);
    server.finish().await;
}
