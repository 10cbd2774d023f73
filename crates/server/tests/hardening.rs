//! Issue 7 (points 5, 12, 14, 15, 16): acknowledgements within their budget, one-time
//! prekeys that cannot be drained and are refilled when low, uploads that replace the
//! one-time set, the storage watermark, the global bound on bytes waiting for the store, a
//! stalled writer seen by `/healthz`, and sends that a retry never stores twice. Real server
//! on loopback; every test runs on SQLite and on PostgreSQL.
// A test harness: failing loudly on anything unexpected is the point (clippy.toml allows
// these inside #[test] functions; the shared helpers in common/ need the same).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::*;
use rand_core::OsRng;
use reqwest::Method;
use tacit_api as api;
use tacit_protocol::{DevicePrekeys, KemPrekeyKind, PrekeyBundle, UnixTime};

on_both!(
    acks_over_budget_wait_for_their_tokens,
    one_time_keys_have_a_per_target_budget_and_low_devices_are_told,
    a_prekey_upload_replaces_the_one_time_set,
    below_the_storage_watermark_sends_are_refused_and_acks_are_not,
    a_retried_send_is_stored_once,
    a_stalled_store_bounds_waiting_bytes_and_fails_healthz,
);

/// Every envelope in bob's mailbox (HTTP fetch, first page).
async fn mailbox(http: &Http, user: &User) -> Vec<api::Envelope> {
    user.fetch(http).await.envelopes
}

/// Point 12: with a budget of one acknowledgement a second, six ack frames take five
/// seconds to go through, one per token. (Before: an ack over budget slept at most the
/// wait and then went ahead without a token, so the next one found the refilled token and
/// two went through per second: three seconds.)
async fn acks_over_budget_wait_for_their_tokens(backend: Backend) {
    const N: usize = 6;
    let server = TestServer::start_with(backend, |c| {
        c.limits.acks_per_second = 1;
        c.limits.ack_burst = 1;
    })
    .await;
    let http = server.http();
    let alice = User::register(&http, &unique("alice"), 1).await;
    let bob = User::register(&http, &unique("bob"), 1).await;
    for i in 0..N {
        assert!(alice.send(&http, &bob.name, &[1], &[i as u8 + 1]).await.0.is_success());
    }
    let mut ws = ws_connect(&server, bob.tok()).await.unwrap();
    let mut ids = Vec::new();
    loop {
        match next_frame(&mut ws).await {
            api::ServerFrame::Envelope(e) => ids.push(e.id),
            api::ServerFrame::Drained => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ids.len(), N);
    let started = Instant::now();
    for id in &ids {
        ws_ack(&mut ws, vec![*id]).await;
    }
    // Made-up ids cost tokens too, but no store work: the frame is accepted, nothing fails.
    let deadline = started + Duration::from_secs(15);
    let mut left = N;
    while left > 0 {
        assert!(Instant::now() < deadline, "acks never went through");
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = mailbox(&http, &bob).await.len();
        let elapsed = started.elapsed();
        // At most one token a second after the first (a little slack for the poll).
        let allowed = 1 + elapsed.as_secs() as usize;
        assert!(N - left <= allowed, "{} acks through after {elapsed:?}", N - left);
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(4_800), "six acks at one a second took {took:?}");
    // The socket was slowed, never closed: it still delivers.
    assert!(alice.send(&http, &bob.name, &[1], b"still open").await.0.is_success());
    let api::ServerFrame::Envelope(e) = next_frame(&mut ws).await else { panic!("envelope") };
    assert_eq!(e.content.as_slice(), b"still open");
    drop(ws);
    server.finish().await;
}

/// Point 14: however many requesters ask, a device hands out at most its per-target budget
/// of one-time keys a minute (then bundles come with the last-resort KEM key and no
/// one-time key); a fetch that leaves it low tells its open socket.
async fn one_time_keys_have_a_per_target_budget_and_low_devices_are_told(backend: Backend) {
    let server =
        TestServer::start_with(backend, |c| c.limits.one_time_fetches_per_target_per_minute = 3).await;
    let http = server.http();
    let low = api::limits::LOW_PREKEY_WATER;
    let bob = User::register(&http, &unique("bob"), low + 2).await;
    let mut ws = ws_connect(&server, bob.tok()).await.unwrap();
    assert_eq!(next_frame(&mut ws).await, api::ServerFrame::Drained);
    let mut takers = Vec::new();
    for _ in 0..5 {
        takers.push(User::register(&http, &unique("eve"), 1).await);
    }
    let path = api::BUNDLE.replace("{name}", &bob.name).replace("{device}", "1");
    let mut with_one_time = 0;
    for (n, t) in takers.iter().enumerate() {
        let r: api::BundleResponse = http.ok(Method::GET, &path, t.tok(), NONE).await;
        let b = PrekeyBundle::from_bytes(r.bundle.as_slice()).unwrap();
        match b.one_time_prekey {
            Some(_) => {
                assert_eq!(b.kem_prekey.kind, KemPrekeyKind::OneTime);
                with_one_time += 1;
            }
            None => assert_eq!(b.kem_prekey.kind, KemPrekeyKind::LastResort, "fetch {n}"),
        }
    }
    assert_eq!(with_one_time, 3, "five requesters together took more than the target's budget");
    let status: api::PrekeyStatus = http.ok(Method::GET, api::PREKEYS, bob.tok(), NONE).await;
    assert_eq!((status.one_time, status.kem_one_time), (low - 1, low - 1));
    // The third fetch left bob below the water: his socket was told, once.
    assert_eq!(
        next_frame(&mut ws).await,
        api::ServerFrame::PrekeysLow { one_time: low - 1, kem_one_time: low - 1 }
    );
    drop(ws);
    server.finish().await;
}

/// Point 5 (server): an upload that names the one-time set replaces it. Bob's store is
/// restored from before his keys were made (a fresh `DevicePrekeys`): its new keys reuse the
/// old ids with new bytes. After the upload, every bundle hands out one of the new keys,
/// never one whose private half is gone. (Before: `INSERT OR IGNORE` kept the old bytes
/// under the reused ids, and the old keys the client no longer names stayed.)
async fn a_prekey_upload_replaces_the_one_time_set(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let bob = User::register(&http, &unique("bob"), 6).await;
    let mut restored = DevicePrekeys::new();
    let now = UnixTime(1_700_000_100);
    let plan = restored.plan(now, &policy(3), 0, 0);
    let upload = restored.execute(&mut OsRng, &bob.device, now, &plan).unwrap();
    let mut req = upload_request(&upload);
    req.one_time_ids = Some(Vec::new());
    req.kem_one_time_ids = Some(Vec::new());
    let status: api::PrekeyStatus = http.ok(Method::PUT, api::PREKEYS, bob.tok(), Some(&req)).await;
    assert_eq!((status.one_time, status.kem_one_time), (3, 3));
    let new_x: Vec<Vec<u8>> = upload.one_time.iter().map(|k| k.to_bytes()).collect();
    let new_kem: Vec<Vec<u8>> = upload.kem_one_time.iter().map(|k| k.to_bytes()).collect();
    let alice = User::register(&http, &unique("alice"), 1).await;
    let path = api::BUNDLE.replace("{name}", &bob.name).replace("{device}", "1");
    for _ in 0..3 {
        let r: api::BundleResponse = http.ok(Method::GET, &path, alice.tok(), NONE).await;
        let b = PrekeyBundle::from_bytes(r.bundle.as_slice()).unwrap();
        assert!(
            new_x.contains(&b.one_time_prekey.unwrap().to_bytes()),
            "a one-time key the client no longer has"
        );
        assert!(new_kem.contains(&b.kem_prekey.to_bytes()), "a KEM key the client no longer has");
    }
    // More keys, as the whole set: held. Sent again (a retry): nothing changes, and its
    // ML-KEM keys, stored already, are not verified again.
    let plan = restored.plan(now, &policy(5), 0, 0);
    let more = restored.execute(&mut OsRng, &bob.device, now, &plan).unwrap();
    assert_eq!((more.one_time.len(), more.kem_one_time.len()), (5, 5));
    let mut req = upload_request(&more);
    req.one_time_ids = Some(Vec::new());
    req.kem_one_time_ids = Some(Vec::new());
    for _ in 0..2 {
        let status: api::PrekeyStatus = http.ok(Method::PUT, api::PREKEYS, bob.tok(), Some(&req)).await;
        assert_eq!((status.one_time, status.kem_one_time), (5, 5));
    }
    // An upload with no new keys naming one of each: the other four of each go.
    let keep = api::PrekeyUploadRequest {
        one_time_ids: Some(vec![more.one_time[2].id]),
        kem_one_time_ids: Some(vec![more.kem_one_time[3].id]),
        ..api::PrekeyUploadRequest::default()
    };
    let status: api::PrekeyStatus = http.ok(Method::PUT, api::PREKEYS, bob.tok(), Some(&keep)).await;
    assert_eq!((status.one_time, status.kem_one_time), (1, 1));
    let r: api::BundleResponse = http.ok(Method::GET, &path, alice.tok(), NONE).await;
    let b = PrekeyBundle::from_bytes(r.bundle.as_slice()).unwrap();
    assert_eq!(b.one_time_prekey.unwrap().to_bytes(), more.one_time[2].to_bytes());
    assert_eq!(b.kem_prekey.to_bytes(), more.kem_one_time[3].to_bytes());
    // Without the lists an upload only adds (and replaces keys under the same ids).
    let mut add = upload_request(&more);
    add.kem_one_time.clear();
    let status: api::PrekeyStatus = http.ok(Method::PUT, api::PREKEYS, bob.tok(), Some(&add)).await;
    assert_eq!((status.one_time, status.kem_one_time), (5, 0));
    req.one_time_ids = Some((0..=api::limits::MAX_STORED_PREKEYS as u32).collect());
    assert_code(http.call(Method::PUT, api::PREKEYS, bob.tok(), Some(&req)).await, 413, "too_large");
    server.finish().await;
}

/// Point 15: below the free-space watermark sends are `507 storage_full` (HTTP and
/// socket), while acknowledgements still delete, so mailboxes drain; above it again, sends
/// are taken. (SQLite: a watermark above any disk; PostgreSQL: a 1-byte database quota.)
async fn below_the_storage_watermark_sends_are_refused_and_acks_are_not(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let alice = User::register(&http, &unique("alice"), 1).await;
    let bob = User::register(&http, &unique("bob"), 1).await;
    for _ in 0..3 {
        assert!(alice.send(&http, &bob.name, &[1], b"before").await.0.is_success());
    }
    let server = server
        .restart_with(|c| {
            c.min_free_bytes = u64::MAX;
            c.database_quota_bytes = Some(1);
        })
        .await;
    let http = server.http();
    assert_code(alice.send(&http, &bob.name, &[1], b"refused").await, 507, "storage_full");
    let mut ws = ws_connect(&server, alice.tok()).await.unwrap();
    assert_eq!(next_frame(&mut ws).await, api::ServerFrame::Drained);
    ws_send(&mut ws, 1, &bob.name, &[1], b"refused").await;
    let api::ServerFrame::SendFailed { id: 1, code: api::ErrorCode::StorageFull, .. } =
        next_frame(&mut ws).await
    else {
        panic!("storage_full over the socket")
    };
    drop(ws);
    // Bob still drains his mailbox, over HTTP and over his socket.
    let page = mailbox(&http, &bob).await;
    assert_eq!(page.len(), 3);
    let (s, _) = http
        .call(
            Method::POST,
            api::ACK,
            bob.tok(),
            Some(&api::AckRequest { ids: vec![page[0].id], state_counter: None }),
        )
        .await;
    assert_eq!(s.as_u16(), 204);
    let mut to_bob = ws_connect(&server, bob.tok()).await.unwrap();
    let mut ids = Vec::new();
    while let api::ServerFrame::Envelope(e) = next_frame(&mut to_bob).await {
        ids.push(e.id);
    }
    assert_eq!(ids.len(), 2);
    ws_ack(&mut to_bob, ids).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !mailbox(&http, &bob).await.is_empty() {
        assert!(Instant::now() < deadline, "acks below the watermark did not delete");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(to_bob);
    let server = server
        .restart_with(|c| {
            c.min_free_bytes = 0;
            c.database_quota_bytes = None;
        })
        .await;
    let http = server.http();
    assert!(alice.send(&http, &bob.name, &[1], b"after").await.0.is_success());
    server.finish().await;
}

fn key(b: u8) -> Option<api::Bytes> {
    Some(api::Bytes(vec![b; api::limits::IDEMPOTENCY_KEY_BYTES]))
}

fn request(to: &str, content: &[u8], idempotency_key: Option<api::Bytes>) -> api::SendRequest {
    api::SendRequest {
        recipient: to.into(),
        envelopes: vec![api::OutgoingEnvelope { device: 1, content: content.to_vec().into() }],
        idempotency_key,
        state_counter: None,
    }
}

/// Point 16: a send repeated with its idempotency key (over HTTP or the socket) is answered
/// as the first was and stored once; keys are per sending device; a malformed key is `400`.
async fn a_retried_send_is_stored_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let alice = User::register(&http, &unique("alice"), 1).await;
    let carol = User::register(&http, &unique("carol"), 1).await;
    let bob = User::register(&http, &unique("bob"), 1).await;
    let first: api::SendResponse =
        http.ok(Method::POST, api::MESSAGES, alice.tok(), Some(&request(&bob.name, b"one", key(1)))).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let retry: api::SendResponse =
        http.ok(Method::POST, api::MESSAGES, alice.tok(), Some(&request(&bob.name, b"one", key(1)))).await;
    assert_eq!(retry, first, "a retry is answered as the first send");
    // The same key from another device is another message.
    let _: api::SendResponse =
        http.ok(Method::POST, api::MESSAGES, carol.tok(), Some(&request(&bob.name, b"two", key(1)))).await;
    // Over the socket: the same key again (a retry across transports), and a new key.
    let mut ws = ws_connect(&server, alice.tok()).await.unwrap();
    assert_eq!(next_frame(&mut ws).await, api::ServerFrame::Drained);
    for (id, k) in [(1u64, 1u8), (2, 3), (3, 3)] {
        let frame = api::ClientFrame::Send {
            id,
            recipient: bob.name.clone(),
            envelopes: vec![api::OutgoingEnvelope { device: 1, content: vec![k].into() }],
            idempotency_key: key(k),
            state_counter: None,
        };
        ws_send_frame(&mut ws, &frame).await;
        match next_frame(&mut ws).await {
            api::ServerFrame::Sent { id: got, server_time_ms } => {
                assert_eq!(got, id);
                if k == 1 {
                    assert_eq!(server_time_ms, first.server_time_ms);
                }
            }
            other => panic!("{other:?}"),
        }
    }
    drop(ws);
    let contents: Vec<Vec<u8>> = mailbox(&http, &bob).await.iter().map(|e| e.content.0.clone()).collect();
    assert_eq!(contents, vec![b"one".to_vec(), b"two".to_vec(), vec![3]]);
    let mut bad = request(&bob.name, b"x", key(1));
    bad.idempotency_key = Some(api::Bytes(vec![1; 15]));
    assert_code(http.call(Method::POST, api::MESSAGES, alice.tok(), Some(&bad)).await, 400, "bad_request");
    server.finish().await;
}

/// Writes any client frame.
async fn ws_send_frame(ws: &mut Ws, frame: &api::ClientFrame) {
    use futures_util::SinkExt;
    let text = serde_json::to_string(frame).unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::Text(text.into())).await.unwrap();
}

/// Holds the store's write lock from outside (SQLite: another connection's write
/// transaction; PostgreSQL: bob's device row locked), so writes hang as behind a hung fsync.
enum Stall {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

impl Stall {
    async fn start(server: &TestServer, bob: &str) -> Self {
        match server.schema() {
            None => {
                let c = rusqlite::Connection::open(server.data_dir().join("tacit.db")).unwrap();
                c.execute_batch("BEGIN IMMEDIATE").unwrap();
                Self::Sqlite(c)
            }
            Some(schema) => {
                let c = pg_admin().await;
                c.batch_execute(&format!(
                    "BEGIN; SELECT 1 FROM {schema}.devices WHERE account_id = \
                     (SELECT id FROM {schema}.accounts WHERE name = '{bob}') FOR UPDATE"
                ))
                .await
                .unwrap();
                Self::Postgres(c)
            }
        }
    }

    async fn end(self) {
        match self {
            Self::Sqlite(c) => c.execute_batch("ROLLBACK").unwrap(),
            Self::Postgres(c) => c.batch_execute("ROLLBACK").await.unwrap(),
        }
    }
}

/// Point 16: while the store hangs with writes waiting, (a) `/healthz` turns `503` within a
/// few seconds ([`tacit_server::STALL_AFTER`]), (b) a send that finds no room under the
/// server-wide bound on bytes waiting for the store is `503` within about a second instead
/// of queueing more memory, (c) on PostgreSQL, a send waiting longer than the store deadline
/// is answered `503`, commits once the store moves (its detached task went on), and its
/// retry with the same key is answered as stored, not stored again, (d) an HTTP
/// acknowledgement of made-up ids is answered without the writer. Once the store moves
/// again, everything is back.
async fn a_stalled_store_bounds_waiting_bytes_and_fails_healthz(backend: Backend) {
    let big = vec![7u8; api::limits::MAX_ENVELOPE_BYTES];
    let server = TestServer::start_with(backend, |c| c.max_pending_store_bytes = 100 * 1024).await;
    let http = server.http();
    let alice = User::register(&http, &unique("alice"), 1).await;
    let bob = User::register(&http, &unique("bob"), 1).await;
    assert_eq!(server.healthz().await, (200, String::new()));
    let stall = Stall::start(&server, &bob.name).await;
    let stalled_at = Instant::now();
    let first = {
        let (http, tok, req) = (http.clone(), alice.token.clone(), request(&bob.name, &big, key(9)));
        tokio::spawn(async move { http.call(Method::POST, api::MESSAGES, Some(&tok), Some(&req)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // (b) No room for a second large send while the first waits.
    let t = Instant::now();
    assert_code(alice.send(&http, &bob.name, &[1], &big).await, 503, "unavailable");
    assert!(t.elapsed() < Duration::from_secs(3), "waited {:?} for room", t.elapsed());
    // An acknowledgement of made-up ids never reaches the (stalled) writer: answered at once.
    let t = Instant::now();
    let made_up =
        api::AckRequest { ids: (1_000_000_000..1_000_000_000 + 1024).collect(), state_counter: None };
    let (s, _) = http.call(Method::POST, api::ACK, bob.tok(), Some(&made_up)).await;
    assert_eq!(s.as_u16(), 204);
    assert!(t.elapsed() < Duration::from_secs(1), "made-up ids waited {:?} for the writer", t.elapsed());
    // (a) The stall shows in /healthz within a few seconds.
    loop {
        let (status, _) = server.healthz().await;
        if status == 503 {
            break;
        }
        assert!(
            stalled_at.elapsed() < tacit_server::STALL_AFTER + Duration::from_millis(1500),
            "/healthz still 200 after {:?} of a stalled store",
            stalled_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stalled_at.elapsed() >= tacit_server::STALL_AFTER - Duration::from_millis(400));
    if backend == Backend::Postgres {
        // (c) The waiting send is answered 503 at its deadline, not left waiting; its write
        // goes on and commits once the row is free, and the retry does not store it twice.
        let (status, body) = first.await.unwrap();
        assert_eq!((status.as_u16(), body["code"].as_str()), (503, Some("unavailable")));
        stall.end().await;
        let retry = alice_retry(&http, &alice, &bob.name, &big).await;
        assert!(retry.0.is_success(), "{retry:?}");
        // A second retry is answered as stored, not stored again.
        assert!(alice_retry(&http, &alice, &bob.name, &big).await.0.is_success());
    } else {
        stall.end().await;
        let (status, _) = first.await.unwrap();
        assert!(status.is_success(), "{status}");
        assert!(alice_retry(&http, &alice, &bob.name, &big).await.0.is_success());
    }
    assert_eq!(mailbox(&http, &bob).await.len(), 1, "the send and its retries are one message");
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.healthz().await.0 != 200 {
        assert!(Instant::now() < deadline, "/healthz did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.finish().await;
}

/// The stalled test's first send again, with its key.
async fn alice_retry(
    http: &Http,
    alice: &User,
    to: &str,
    big: &[u8],
) -> (reqwest::StatusCode, serde_json::Value) {
    http.call(Method::POST, api::MESSAGES, alice.tok(), Some(&request(to, big, key(9)))).await
}
