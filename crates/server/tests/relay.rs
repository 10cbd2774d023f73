//! The relay over real sockets, on SQLite and on PostgreSQL: every test runs against both.
// A test harness: failing loudly on anything unexpected is the point (clippy.toml allows
// these inside #[test] functions; the shared helpers in common/ need the same).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[macro_use]
mod common;

use std::collections::HashSet;

use common::*;
use reqwest::Method;
use tacit_api as api;
use tacit_protocol::{AccountName, DeviceList, PrekeyBundle};

on_both!(
    conversation,
    racing_bundles_get_distinct_one_time_keys,
    restart_loses_no_acknowledged_message,
    hostile_input,
    shutdown_closes_websockets_going_away,
    acknowledged_envelopes_are_not_delivered_again,
    ack_frames_beyond_the_request_limit_keep_the_socket_open,
    sends_have_their_own_budget_and_get_429,
    fetch_and_resync_pages_are_bounded_by_bytes,
    fetch_pages_from_a_cursor,
    websocket_sends,
    websocket_send_frames_that_break_the_rules,
    healthz_follows_the_store,
    mailboxes_are_bounded_by_bytes,
    the_state_counter_keeps_the_largest_value_recorded_with_a_change,
);

/// The device's state counter as a new authentication answers it.
async fn counter_at_login(http: &Http, user: &User) -> Option<u64> {
    let c = user.challenge(http).await;
    let s: api::SessionResponse =
        http.ok(Method::POST, api::AUTH_SESSION, None, Some(&user.answer(&c))).await;
    s.state_counter
}

/// Issue 8, point 2: the server keeps, per device, the largest state counter reported with a
/// send, an acknowledgement that deleted something (HTTP or WebSocket) or a prekey upload,
/// in the same transaction (a refused send, an acknowledgement of nothing stored record
/// nothing), and answers it at authentication; a request without one changes nothing.
async fn the_state_counter_keeps_the_largest_value_recorded_with_a_change(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let alice = User::register(&http, &unique("alice"), 1).await;
    let bob = User::register(&http, &unique("bob"), 1).await;
    assert_eq!(counter_at_login(&http, &alice).await, Some(0));
    let send = |counter: Option<u64>, devices: Vec<u32>| api::SendRequest {
        recipient: bob.name.clone(),
        envelopes: devices
            .into_iter()
            .map(|device| api::OutgoingEnvelope { device, content: b"x".to_vec().into() })
            .collect(),
        idempotency_key: None,
        state_counter: counter,
    };
    for (counter, devices, status, expected) in [
        (Some(5), vec![1], 200, 5),
        (Some(3), vec![1], 200, 5),
        (None, vec![1], 200, 5),
        // Refused (no envelope for device 1): nothing stored, nothing recorded.
        (Some(50), vec![2], 409, 5),
        (Some(6), vec![1], 200, 6),
    ] {
        let (s, _) = http.call(Method::POST, api::MESSAGES, alice.tok(), Some(&send(counter, devices))).await;
        assert_eq!(s.as_u16(), status);
        assert_eq!(counter_at_login(&http, &alice).await, Some(expected), "after {counter:?}");
    }
    assert_eq!(counter_at_login(&http, &bob).await, Some(0), "per device");

    // Acknowledgements: only one that deleted something records its counter.
    let ack = |ids: Vec<u64>, counter: u64| api::AckRequest { ids, state_counter: Some(counter) };
    let (s, _) = http.call(Method::POST, api::ACK, bob.tok(), Some(&ack(vec![1_000_000], 9))).await;
    assert_eq!(s.as_u16(), 204);
    assert_eq!(counter_at_login(&http, &bob).await, Some(0), "nothing was deleted");
    let ids: Vec<u64> = bob.fetch(&http).await.envelopes.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 4);
    let (s, _) = http.call(Method::POST, api::ACK, bob.tok(), Some(&ack(ids[..1].to_vec(), 9))).await;
    assert_eq!(s.as_u16(), 204);
    assert_eq!(counter_at_login(&http, &bob).await, Some(9));
    // Over the socket (the deletion commits in the background).
    let mut ws = ws_connect(&server, bob.tok()).await.unwrap();
    for _ in 1..ids.len() {
        assert!(matches!(next_frame(&mut ws).await, api::ServerFrame::Envelope(_)));
    }
    assert_eq!(next_frame(&mut ws).await, api::ServerFrame::Drained);
    let frame = api::ClientFrame::Ack { ids: ids[1..].to_vec(), state_counter: Some(12) };
    let text = serde_json::to_string(&frame).unwrap();
    futures_util::SinkExt::send(&mut ws, tokio_tungstenite::tungstenite::Message::Text(text.into()))
        .await
        .unwrap();
    for _ in 0..500 {
        if bob.fetch(&http).await.envelopes.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(bob.fetch(&http).await.envelopes.is_empty());
    assert_eq!(counter_at_login(&http, &bob).await, Some(12));

    // A prekey upload (here of nothing new) records it too.
    let upload = api::PrekeyUploadRequest { state_counter: Some(8), ..api::PrekeyUploadRequest::default() };
    let _: api::PrekeyStatus = http.ok(Method::PUT, api::PREKEYS, alice.tok(), Some(&upload)).await;
    assert_eq!(counter_at_login(&http, &alice).await, Some(8));
    let upload = api::PrekeyUploadRequest { state_counter: Some(7), ..api::PrekeyUploadRequest::default() };
    let _: api::PrekeyStatus = http.ok(Method::PUT, api::PREKEYS, alice.tok(), Some(&upload)).await;
    assert_eq!(counter_at_login(&http, &alice).await, Some(8));

    // It survives a restart (it is stored, not held in memory).
    drop(ws);
    let server = server.restart().await;
    let http = server.http();
    assert_eq!(counter_at_login(&http, &alice).await, Some(8));
    assert_eq!(counter_at_login(&http, &bob).await, Some(12));
    server.finish().await;
}

/// A mailbox holds at most `max_mailbox_bytes` of ciphertext (here lowered to 200 KiB): a
/// send that would pass it is `507 mailbox_full` (over HTTP and the socket), the bound is
/// inclusive, acknowledgements free exactly what they delete, and the count survives a
/// restart.
async fn mailboxes_are_bounded_by_bytes(backend: Backend) {
    const QUOTA: usize = 200 * 1024;
    let big = vec![1u8; api::limits::MAX_ENVELOPE_BYTES];
    let server = TestServer::start_with(backend, |c| c.max_mailbox_bytes = QUOTA as u64).await;
    let http = server.http();
    let alice = User::register(&http, &unique("alice"), 1).await;
    let bob = User::register(&http, &unique("bob"), 1).await;
    for _ in 0..2 {
        assert!(alice.send(&http, &bob.name, &[1], &big).await.0.is_success());
    }
    assert_code(alice.send(&http, &bob.name, &[1], &big).await, 507, "mailbox_full");
    // Exactly up to the bound is allowed; one byte more is not.
    let fill = vec![2u8; QUOTA - 2 * big.len()];
    assert!(alice.send(&http, &bob.name, &[1], &fill).await.0.is_success());
    assert_code(alice.send(&http, &bob.name, &[1], b"x").await, 507, "mailbox_full");
    let mut ws = ws_connect(&server, alice.tok()).await.unwrap();
    assert_eq!(next_frame(&mut ws).await, api::ServerFrame::Drained);
    ws_send(&mut ws, 1, &bob.name, &[1], b"x").await;
    let api::ServerFrame::SendFailed { id: 1, code: api::ErrorCode::MailboxFull, .. } =
        next_frame(&mut ws).await
    else {
        panic!("mailbox_full over the socket")
    };
    // Other mailboxes are not affected.
    assert!(bob.send(&http, &alice.name, &[1], &big).await.0.is_success());
    // Acknowledging one large envelope frees its bytes, no more: one large one fits again.
    let page = bob.fetch(&http).await.envelopes;
    assert_eq!(page.len(), 3);
    let ack = |ids: Vec<u64>| {
        let http = http.clone();
        let tok = bob.token.clone();
        async move {
            let (s, _) = http
                .call(Method::POST, api::ACK, Some(&tok), Some(&api::AckRequest { ids, state_counter: None }))
                .await;
            assert_eq!(s.as_u16(), 204);
        }
    };
    ack(vec![page[0].id]).await;
    // Acknowledging it again, or an id that is not there, frees nothing.
    ack(vec![page[0].id, 999_999_999]).await;
    assert!(alice.send(&http, &bob.name, &[1], &big).await.0.is_success());
    assert_code(alice.send(&http, &bob.name, &[1], b"x").await, 507, "mailbox_full");
    // The count is stored: still full after a restart, empty once everything is acknowledged.
    drop(ws);
    let server = server.restart().await;
    let http = server.http();
    assert_code(alice.send(&http, &bob.name, &[1], b"x").await, 507, "mailbox_full");
    let ids: Vec<u64> = bob.fetch(&http).await.envelopes.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 3);
    let (s, _) = http
        .call(Method::POST, api::ACK, bob.tok(), Some(&api::AckRequest { ids, state_counter: None }))
        .await;
    assert_eq!(s.as_u16(), 204);
    for _ in 0..2 {
        assert!(alice.send(&http, &bob.name, &[1], &big).await.0.is_success());
    }
    assert_code(alice.send(&http, &bob.name, &[1], &big).await, 507, "mailbox_full");
    server.finish().await;
}

/// `/healthz` is 200 while the store takes writes and `503 unavailable` once it cannot (here:
/// the store closed under the running server; the SQLite writer thread has ended, the
/// PostgreSQL pool is closed).
async fn healthz_follows_the_store(backend: Backend) {
    let server = TestServer::start(backend).await;
    assert_eq!(server.healthz().await, (200, String::new()));
    assert!(server.state().store().healthy().await);
    server.state().store().close().await;
    assert!(!server.state().store().healthy().await);
    assert_eq!(server.healthz().await, (503, "unavailable".to_owned()));
    server.finish().await;
}

/// Sends over the socket: pipelined beyond the server's in-flight bound, each answered by
/// its id once stored, delivered live; a refused send leaves the socket open.
async fn websocket_sends(backend: Backend) {
    const N: u64 = 300;
    let server = TestServer::start(backend).await;
    let http = server.http();
    let alice = User::register(&http, &unique("alice"), 1).await;
    let bob = User::register(&http, &unique("bob"), 1).await;
    let mut to_bob = ws_connect(&server, bob.tok()).await.unwrap();
    assert_eq!(next_frame(&mut to_bob).await, api::ServerFrame::Drained);
    let mut from_alice = ws_connect(&server, alice.tok()).await.unwrap();
    assert_eq!(next_frame(&mut from_alice).await, api::ServerFrame::Drained);
    // Written without reading an answer: more than one socket may have in flight.
    for id in 0..N {
        ws_send(&mut from_alice, id, &bob.name, &[1], &id.to_be_bytes()).await;
    }
    let mut answered = HashSet::new();
    while answered.len() < N as usize {
        match next_frame(&mut from_alice).await {
            api::ServerFrame::Sent { id, server_time_ms } => {
                assert!(id < N && server_time_ms > 0);
                assert!(answered.insert(id), "send {id} answered twice");
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }
    // Stored means stored: every one reaches bob (live), each once.
    let mut got = HashSet::new();
    while got.len() < N as usize {
        let api::ServerFrame::Envelope(e) = next_frame(&mut to_bob).await else { panic!("envelope") };
        assert_eq!(e.sender, alice.name);
        let n = u64::from_be_bytes(e.content.as_slice().try_into().unwrap());
        assert!(got.insert(n), "envelope {n} delivered twice");
        ws_ack(&mut to_bob, vec![e.id]).await;
    }
    // Refusals carry the HTTP codes; the socket stays open for the next send.
    ws_send(&mut from_alice, 1000, "nobody-here", &[1], b"x").await;
    let api::ServerFrame::SendFailed { id: 1000, code: api::ErrorCode::NotFound, .. } =
        next_frame(&mut from_alice).await
    else {
        panic!("not_found")
    };
    ws_send(&mut from_alice, 1001, &bob.name, &[2], b"x").await;
    assert_eq!(
        next_frame(&mut from_alice).await,
        api::ServerFrame::SendFailed {
            id: 1001,
            code: api::ErrorCode::MismatchedDevices,
            message: "envelopes do not match the recipient's devices".into(),
            missing: vec![1],
            extra: vec![2],
        }
    );
    ws_send(&mut from_alice, 1002, &bob.name, &[1], b"").await;
    let api::ServerFrame::SendFailed { id: 1002, code: api::ErrorCode::BadRequest, .. } =
        next_frame(&mut from_alice).await
    else {
        panic!("bad_request")
    };
    ws_send(&mut from_alice, 1003, &bob.name, &[1], b"after refusals").await;
    assert!(matches!(next_frame(&mut from_alice).await, api::ServerFrame::Sent { id: 1003, .. }));
    let api::ServerFrame::Envelope(e) = next_frame(&mut to_bob).await else { panic!("envelope") };
    assert_eq!(e.content.as_slice(), b"after refusals");
    // Acknowledged over the socket: nothing is left to fetch.
    ws_ack(&mut to_bob, vec![e.id]).await;
    drop(to_bob);
    let mut left = bob.fetch(&http).await.envelopes;
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        left = bob.fetch(&http).await.envelopes;
    }
    assert!(left.is_empty(), "{} acknowledged envelopes still stored", left.len());
    drop(from_alice);
    server.finish().await;
}

/// Send frames that break the rules: over the send budget (`rate_limited`, socket open),
/// too many envelopes, malformed, oversized (socket closed with 1008, server goes on).
async fn websocket_send_frames_that_break_the_rules(backend: Backend) {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let server = TestServer::start_with(backend, |c| {
        c.limits.sends_per_second = 1;
        c.limits.send_burst = 2;
    })
    .await;
    let http = server.http();
    let alice = User::register(&http, &unique("alice"), 1).await;
    let bob = User::register(&http, &unique("bob"), 1).await;
    let mut ws = ws_connect(&server, alice.tok()).await.unwrap();
    assert_eq!(next_frame(&mut ws).await, api::ServerFrame::Drained);
    for id in 0..3 {
        ws_send(&mut ws, id, &bob.name, &[1], b"x").await;
    }
    let mut codes = Vec::new();
    for _ in 0..3 {
        codes.push(match next_frame(&mut ws).await {
            api::ServerFrame::Sent { .. } => None,
            api::ServerFrame::SendFailed { code, .. } => Some(code),
            other => panic!("unexpected {other:?}"),
        });
    }
    assert_eq!(codes.iter().filter(|c| c.is_none()).count(), 2, "{codes:?}");
    assert!(codes.contains(&Some(api::ErrorCode::RateLimited)), "{codes:?}");
    // Too many envelopes in one send (once the budget has refilled).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let devices: Vec<u32> = (1..=65).collect();
    ws_send(&mut ws, 7, &bob.name, &devices, b"x").await;
    let api::ServerFrame::SendFailed { id: 7, code: api::ErrorCode::TooLarge, .. } =
        next_frame(&mut ws).await
    else {
        panic!("too_large")
    };
    // Malformed: closed as a policy violation.
    ws.send(Message::Text(r#"{"type":"send","id":1,"recipient":"x"}"#.into())).await.unwrap();
    assert_eq!(close_code(&mut ws).await, 1008);
    // Over the frame limit: closed.
    let mut ws = ws_connect(&server, alice.tok()).await.unwrap();
    assert_eq!(next_frame(&mut ws).await, api::ServerFrame::Drained);
    let huge = "a".repeat(api::limits::MAX_REQUEST_BYTES + 1);
    let _ = ws.send(Message::Text(huge.into())).await;
    assert!(matches!(ws_closed(&mut ws).await, Some(1009) | None));
    let ok = http.client.get(format!("{}/healthz", server.base)).send().await.unwrap();
    assert!(ok.status().is_success());
    server.finish().await;
}

/// Fetch pages (and WebSocket resync pages) stop at MAX_FETCH_BYTES of ciphertext.
async fn fetch_and_resync_pages_are_bounded_by_bytes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let alice = User::register(&http, &unique("alice"), 1).await;
    let bob = User::register(&http, &unique("bob"), 1).await;
    let big = vec![7u8; api::limits::MAX_ENVELOPE_BYTES];
    let n = api::limits::MAX_FETCH_BYTES / big.len() + 6;
    for _ in 0..n {
        let (s, _) = alice.send(&http, &bob.name, &[1], &big).await;
        assert!(s.is_success());
    }
    let page = bob.fetch(&http).await;
    assert_eq!(page.envelopes.len(), api::limits::MAX_FETCH_BYTES / big.len());
    assert!(page.more);
    // The socket pages through all of them.
    let mut ws = ws_connect(&server, bob.tok()).await.unwrap();
    let mut ids = HashSet::new();
    while let api::ServerFrame::Envelope(e) = next_frame(&mut ws).await {
        assert!(ids.insert(e.id));
    }
    assert_eq!(ids.len(), n);
    drop(ws);
    server.finish().await;
}

/// `GET /v1/messages?after=ID` pages from a cursor: a client that acknowledges nothing (it
/// holds the envelopes back) still reaches every envelope, each once, by passing the last id
/// of each page; `after` past the end is an empty page; a malformed query is `400`.
async fn fetch_pages_from_a_cursor(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let alice = User::register(&http, &unique("alice"), 1).await;
    let bob = User::register(&http, &unique("bob"), 1).await;
    let big = vec![7u8; api::limits::MAX_ENVELOPE_BYTES];
    let n = api::limits::MAX_FETCH_BYTES / big.len() + 6;
    for _ in 0..n {
        assert!(alice.send(&http, &bob.name, &[1], &big).await.0.is_success());
    }
    let mut after = 0;
    let mut ids = Vec::new();
    let mut pages = 0;
    loop {
        let path = format!("{}?after={after}", api::MESSAGES);
        let page: api::FetchResponse = http.ok(Method::GET, &path, bob.tok(), NONE).await;
        assert!(page.envelopes.iter().all(|e| e.id > after));
        ids.extend(page.envelopes.iter().map(|e| e.id));
        pages += 1;
        if !page.more {
            break;
        }
        after = page.envelopes.last().unwrap().id;
    }
    assert_eq!(pages, 2);
    assert_eq!(ids.len(), n);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "each once, oldest first");
    // Without a cursor, the first page again (nothing was acknowledged).
    assert_eq!(bob.fetch(&http).await.envelopes.first().map(|e| e.id), ids.first().copied());
    let path = format!("{}?after={}", api::MESSAGES, ids.last().unwrap());
    let end: api::FetchResponse = http.ok(Method::GET, &path, bob.tok(), NONE).await;
    assert!(end.envelopes.is_empty() && !end.more);
    for bad in ["?after=-1", "?after=x", "?after=18446744073709551616"] {
        let path = format!("{}{bad}", api::MESSAGES);
        assert_code(http.call(Method::GET, &path, bob.tok(), NONE).await, 400, "bad_request");
    }
    server.finish().await;
}

/// A client acking envelope by envelope over its socket exceeds the general request rate;
/// the socket must stay open (slowed down at most).
async fn ack_frames_beyond_the_request_limit_keep_the_socket_open(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let alice = User::register(&http, &unique("alice"), 1).await;
    let bob = User::register(&http, &unique("bob"), 1).await;
    let mut ws = ws_connect(&server, bob.tok()).await.unwrap();
    assert_eq!(next_frame(&mut ws).await, api::ServerFrame::Drained);
    for i in 0..(api::limits::REQUESTS_PER_SECOND as u64 + 100) {
        ws_ack(&mut ws, vec![1_000_000 + i]).await;
    }
    let (s, _) = alice.send(&http, &bob.name, &[1], b"still open").await;
    assert!(s.is_success());
    let api::ServerFrame::Envelope(e) = next_frame(&mut ws).await else { panic!("envelope") };
    assert_eq!(e.content.as_slice(), b"still open");
    drop(ws);
    server.finish().await;
}

/// Sends count against their own budget (configurable); over it the answer is `429`,
/// other requests of the device go on, and its socket stays open.
async fn sends_have_their_own_budget_and_get_429(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.limits.sends_per_second = 1;
        c.limits.send_burst = 3;
    })
    .await;
    let http = server.http();
    let alice = User::register(&http, &unique("alice"), 1).await;
    let bob = User::register(&http, &unique("bob"), 1).await;
    let mut ws = ws_connect(&server, bob.tok()).await.unwrap();
    assert_eq!(next_frame(&mut ws).await, api::ServerFrame::Drained);
    for _ in 0..3 {
        let (s, _) = alice.send(&http, &bob.name, &[1], b"x").await;
        assert!(s.is_success());
    }
    assert_code(alice.send(&http, &bob.name, &[1], b"x").await, 429, "rate_limited");
    let _: api::PrekeyStatus = http.ok(Method::GET, api::PREKEYS, alice.tok(), NONE).await;
    for _ in 0..3 {
        assert!(matches!(next_frame(&mut ws).await, api::ServerFrame::Envelope(_)));
    }
    drop(ws);
    server.finish().await;
}

/// Envelopes committed while the socket pages through the mailbox are both in a page and
/// on the bus; once acknowledged, the queued copy must not be sent again.
async fn acknowledged_envelopes_are_not_delivered_again(backend: Backend) {
    use futures_util::StreamExt;
    const N: u32 = 120;
    let server = TestServer::start(backend).await;
    let http = server.http();
    let alice = User::register(&http, &unique("alice"), 1).await;
    let bob = User::register(&http, &unique("bob"), 1).await;
    for i in 0..N / 2 {
        let (s, _) = alice.send(&http, &bob.name, &[1], &i.to_be_bytes()).await;
        assert!(s.is_success());
    }
    // Sends keep committing while Bob connects and pages through the first half.
    let sender = {
        let http = http.clone();
        let tok = alice.token.clone();
        let to = bob.name.clone();
        tokio::spawn(async move {
            for i in N / 2..N {
                let req = api::SendRequest {
                    recipient: to.clone(),
                    envelopes: vec![api::OutgoingEnvelope {
                        device: 1,
                        content: i.to_be_bytes().to_vec().into(),
                    }],
                    idempotency_key: None,
                    state_counter: None,
                };
                let (s, _) = http.call(Method::POST, api::MESSAGES, Some(&tok), Some(&req)).await;
                assert!(s.is_success());
            }
        })
    };
    let mut ws = ws_connect(&server, bob.tok()).await.unwrap();
    let mut seen = HashSet::new();
    while seen.len() < N as usize {
        if let api::ServerFrame::Envelope(e) = next_frame(&mut ws).await {
            assert!(seen.insert(e.id), "envelope {} delivered twice", e.id);
            ws_ack(&mut ws, vec![e.id]).await;
        }
    }
    sender.await.unwrap();
    // Nothing more may arrive (a duplicate would come from the bus queue).
    while let Ok(Some(Ok(m))) = tokio::time::timeout(std::time::Duration::from_millis(500), ws.next()).await {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            let frame: api::ServerFrame = serde_json::from_str(t.as_str()).unwrap();
            assert!(
                !matches!(frame, api::ServerFrame::Envelope(_)),
                "extra envelope after all were acked: {frame:?}"
            );
        }
    }
    drop(ws);
    server.finish().await;
}

async fn shutdown_closes_websockets_going_away(backend: Backend) {
    use futures_util::StreamExt;
    let mut server = TestServer::start(backend).await;
    let http = server.http();
    let bob = User::register(&http, &unique("bob"), 1).await;
    let mut ws = ws_connect(&server, bob.tok()).await.unwrap();
    assert_eq!(next_frame(&mut ws).await, api::ServerFrame::Drained);
    let started = std::time::Instant::now();
    let (_, frame) = tokio::join!(server.shutdown(), async {
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await {
                Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f)))) => break f,
                Ok(Some(Ok(_))) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    });
    assert_eq!(frame.map(|f| u16::from(f.code)), Some(1001));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "shutdown waited out the grace period instead of closing sockets"
    );
    server.finish().await;
}

async fn conversation(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let (ok, _) = (http.client.get(format!("{}/healthz", server.base)).send().await.unwrap().status(), ());
    assert!(ok.is_success());

    let alice = User::register(&http, &unique("alice"), 3).await;
    let mut bob = User::register(&http, &unique("bob"), 3).await;

    // The device list comes back as signed, and verifies.
    let dl: api::DeviceListResponse =
        http.ok(Method::GET, &format!("/v1/accounts/{}/devices", bob.name), None, NONE).await;
    let name = AccountName::new(&bob.name).unwrap();
    let list =
        DeviceList::verify(dl.device_list.as_slice(), &name, Some(&bob.account.public()), None).unwrap();
    assert_eq!(list, bob.list);

    // Prekeys: 3 of each uploaded at creation, below the water mark: "low".
    let st: api::PrekeyStatus = http.ok(Method::GET, api::PREKEYS, bob.tok(), NONE).await;
    assert_eq!((st.one_time, st.kem_one_time, st.low), (3, 3, true));

    // A bundle verifies against Bob's identity and consumes one key of each kind.
    let b: api::BundleResponse =
        http.ok(Method::GET, &format!("/v1/keys/{}/1", bob.name), alice.tok(), NONE).await;
    let bundle = PrekeyBundle::from_bytes(b.bundle.as_slice()).unwrap();
    bundle.verify().unwrap();
    assert_eq!(&bundle.identity, bob.device.public());
    assert!(bundle.one_time_prekey.is_some());
    let st: api::PrekeyStatus = http.ok(Method::GET, api::PREKEYS, bob.tok(), NONE).await;
    assert_eq!((st.one_time, st.kem_one_time), (2, 2));

    // Refill: the upload is verified and counted.
    let now = tacit_protocol::UnixTime(1_700_000_000);
    let plan = bob.prekeys.plan(now, &policy(25), st.one_time, st.kem_one_time);
    let up = bob.prekeys.execute(&mut rand_core::OsRng, &bob.device, now, &plan).unwrap();
    let st: api::PrekeyStatus =
        http.ok(Method::PUT, api::PREKEYS, bob.tok(), Some(&upload_request(&up))).await;
    assert_eq!((st.one_time, st.kem_one_time, st.low), (25, 25, false));

    // A message stored before Bob connects, then one live.
    let (s, _) = alice.send(&http, &bob.name, &[1], b"stored").await;
    assert!(s.is_success());
    let mut ws = ws_connect(&server, bob.tok()).await.unwrap();
    let api::ServerFrame::Envelope(first) = next_frame(&mut ws).await else { panic!("envelope first") };
    assert_eq!(
        (first.content.as_slice(), first.sender.as_str(), first.sender_device),
        (&b"stored"[..], alice.name.as_str(), 1)
    );
    assert_eq!(next_frame(&mut ws).await, api::ServerFrame::Drained);
    let (s, body) = alice.send(&http, &bob.name, &[1], b"live").await;
    assert!(s.is_success(), "{body}");
    let api::ServerFrame::Envelope(second) = next_frame(&mut ws).await else { panic!("live envelope") };
    assert_eq!(second.content.as_slice(), b"live");
    assert!(second.id > first.id);

    // Until acknowledged, both stay stored; acks over the socket delete them.
    assert_eq!(bob.fetch(&http).await.envelopes.len(), 2);
    ws_ack(&mut ws, vec![first.id, second.id]).await;
    let mut empty = false;
    for _ in 0..50 {
        if bob.fetch(&http).await.envelopes.is_empty() {
            empty = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(empty, "ack over the socket deleted the envelopes");

    // HTTP fetch and ack; Alice cannot delete Bob's envelopes.
    let (s, _) = alice.send(&http, &bob.name, &[1], b"by http").await;
    assert!(s.is_success());
    let f = bob.fetch(&http).await;
    assert_eq!(f.envelopes.len(), 1);
    assert!(!f.more);
    let id = f.envelopes[0].id;
    let (s, _) = http
        .call(
            Method::POST,
            api::ACK,
            alice.tok(),
            Some(&api::AckRequest { ids: vec![id], state_counter: None }),
        )
        .await;
    assert_eq!(s.as_u16(), 204);
    assert_eq!(bob.fetch(&http).await.envelopes.len(), 1);
    let (s, _) = http
        .call(
            Method::POST,
            api::ACK,
            bob.tok(),
            Some(&api::AckRequest { ids: vec![id], state_counter: None }),
        )
        .await;
    assert_eq!(s.as_u16(), 204);
    assert!(bob.fetch(&http).await.envelopes.is_empty());

    // The device set must match exactly.
    let got = alice.send(&http, &bob.name, &[1, 2], b"x").await;
    assert_eq!(got.0.as_u16(), 409);
    assert_eq!(got.1, serde_json::json!({"code": "mismatched_devices", "missing": [], "extra": [2]}));
    let got = alice.send(&http, &bob.name, &[], b"x").await;
    assert_eq!(got.1, serde_json::json!({"code": "mismatched_devices", "missing": [1], "extra": []}));
    // Writing to one's own account needs no envelope for the sending device.
    let (s, _) = alice.send(&http, &alice.name, &[], b"x").await;
    assert!(s.is_success());

    // Account deletion: only by the account itself; afterwards its token is dead.
    assert_code(
        http.call(Method::DELETE, &format!("/v1/accounts/{}", bob.name), alice.tok(), NONE).await,
        403,
        "unauthorized",
    );
    let (s, _) = http.call(Method::DELETE, &format!("/v1/accounts/{}", bob.name), bob.tok(), NONE).await;
    assert_eq!(s.as_u16(), 204);
    assert_code(http.call(Method::GET, api::MESSAGES, bob.tok(), NONE).await, 401, "unauthorized");
    assert_code(alice.send(&http, &bob.name, &[1], b"x").await, 404, "not_found");
    drop(ws);
    server.finish().await;
}

async fn racing_bundles_get_distinct_one_time_keys(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let bob = User::register(&http, &unique("bob"), 6).await;
    let mut racers = Vec::new();
    for i in 0..4 {
        racers.push(User::register(&http, &unique(&format!("r{i}")), 1).await);
    }
    // Four clients fetch three bundles each at once: 12 fetches for 6 keys of each kind.
    let mut tasks = Vec::new();
    for r in &racers {
        for _ in 0..3 {
            let http = http.clone();
            let tok = r.token.clone();
            let path = format!("/v1/keys/{}/1", bob.name);
            tasks.push(tokio::spawn(async move {
                let b: api::BundleResponse = http.ok(Method::GET, &path, Some(&tok), NONE).await;
                PrekeyBundle::from_bytes(b.bundle.as_slice()).unwrap()
            }));
        }
    }
    let mut one_time = HashSet::new();
    let mut kem = HashSet::new();
    let mut last_resort = 0;
    for t in tasks {
        let b = t.await.unwrap();
        b.verify().unwrap();
        if let Some(k) = b.one_time_prekey {
            assert!(one_time.insert(k.id), "one-time key {} handed out twice", k.id);
        }
        match b.kem_prekey.kind {
            tacit_protocol::KemPrekeyKind::OneTime => {
                assert!(kem.insert(b.kem_prekey.id), "KEM key handed out twice")
            }
            tacit_protocol::KemPrekeyKind::LastResort => last_resort += 1,
        }
    }
    assert_eq!((one_time.len(), kem.len(), last_resort), (6, 6, 6));

    // The per-requester limit protects what is left.
    let r = &racers[0];
    let path = format!("/v1/keys/{}/1", bob.name);
    let mut limited = false;
    for _ in 0..api::limits::BUNDLE_FETCHES_PER_MINUTE {
        let (s, body) = http.call(Method::GET, &path, r.tok(), NONE).await;
        if s.as_u16() == 429 {
            assert_eq!(body["code"], "rate_limited");
            limited = true;
            break;
        }
        assert!(s.is_success());
    }
    assert!(limited);
    server.finish().await;
}

async fn restart_loses_no_acknowledged_message(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let alice = User::register(&http, &unique("alice"), 1).await;
    let bob = User::register(&http, &unique("bob"), 1).await;
    // Concurrent sends share group commits; every 200 must survive the restart.
    let mut tasks = Vec::new();
    for i in 0..40u32 {
        let http = http.clone();
        let tok = alice.token.clone();
        let to = bob.name.clone();
        tasks.push(tokio::spawn(async move {
            let req = api::SendRequest {
                recipient: to,
                envelopes: vec![api::OutgoingEnvelope {
                    device: 1,
                    content: i.to_be_bytes().to_vec().into(),
                }],
                idempotency_key: None,
                state_counter: None,
            };
            let (s, _) = http.call(Method::POST, api::MESSAGES, Some(&tok), Some(&req)).await;
            assert!(s.is_success());
            i
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let server = server.restart().await;
    let http = server.http();
    // Tokens survive too (stored as hashes).
    let got = bob.fetch(&http).await;
    let contents: HashSet<Vec<u8>> = got.envelopes.iter().map(|e| e.content.0.clone()).collect();
    assert_eq!(contents.len(), 40);
    // The conversation goes on.
    let (s, _) = bob.send(&http, &alice.name, &[1], b"after restart").await;
    assert!(s.is_success());
    assert_eq!(alice.fetch(&http).await.envelopes.len(), 1);
    server.finish().await;
}

async fn hostile_input(backend: Backend) {
    let server = TestServer::start_with(backend, |c| c.registration_token = Some("let-me-in".into())).await;
    let http = server.http();
    let raw = |m: Method, path: &str| http.request(m, path, None);

    // Registration token.
    // Missing and wrong say which (issue 8, point 8), under the same code for every client.
    let (_, mut req) = User::new_request(&unique("eve"), 1);
    let got = http.call(Method::POST, api::ACCOUNTS, None, Some(&req)).await;
    assert_eq!(got.1["message"], "this server requires a registration token");
    assert_code(got, 403, "registration_closed");
    req.registration_token = Some("wrong".into());
    let got = http.call(Method::POST, api::ACCOUNTS, None, Some(&req)).await;
    assert_eq!(got.1["message"], "wrong registration token");
    assert_code(got, 403, "registration_closed");
    req.registration_token = Some("let-me-in".into());
    let mut good = req.clone();
    // Bad names, keys, lists, prekeys.
    let mut r = good.clone();
    r.name = "Eve!".into();
    assert_code(http.call(Method::POST, api::ACCOUNTS, None, Some(&r)).await, 400, "bad_name");
    let mut r = good.clone();
    r.name = unique("mallory");
    assert_code(http.call(Method::POST, api::ACCOUNTS, None, Some(&r)).await, 400, "bad_request");
    let mut r = good.clone();
    r.account_key = vec![1; 31].into();
    assert_code(http.call(Method::POST, api::ACCOUNTS, None, Some(&r)).await, 400, "bad_request");
    let mut r = good.clone();
    let last = r.device_list.0.len() - 1;
    r.device_list.0[last] ^= 1;
    assert_code(http.call(Method::POST, api::ACCOUNTS, None, Some(&r)).await, 400, "bad_request");
    let mut r = good.clone();
    r.prekeys.signed_prekey.as_mut().unwrap().0[10] ^= 1;
    assert_code(http.call(Method::POST, api::ACCOUNTS, None, Some(&r)).await, 400, "bad_request");
    let mut r = good.clone();
    r.prekeys.signed_prekey = None;
    assert_code(http.call(Method::POST, api::ACCOUNTS, None, Some(&r)).await, 400, "bad_request");
    let mut r = good.clone();
    r.prekeys.kem_one_time.push(r.prekeys.last_resort.clone().unwrap());
    assert_code(http.call(Method::POST, api::ACCOUNTS, None, Some(&r)).await, 400, "bad_request");
    let mut r = good.clone();
    r.prekeys.one_time = vec![r.prekeys.one_time[0].clone(); 201];
    assert_code(http.call(Method::POST, api::ACCOUNTS, None, Some(&r)).await, 413, "too_large");

    // A good one, then the same name again.
    let created: api::CreateAccountResponse = http.ok(Method::POST, api::ACCOUNTS, None, Some(&good)).await;
    assert_eq!(created.device, 1);
    good.account_key = vec![9; 32].into();
    let (_, mut again) = User::new_request(&req.name, 1);
    again.registration_token = Some("let-me-in".into());
    assert_code(http.call(Method::POST, api::ACCOUNTS, None, Some(&again)).await, 409, "name_taken");

    // Malformed bodies, wrong content type, oversized bodies, unknown routes and methods.
    let s = raw(Method::POST, api::ACCOUNTS)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(s.status().as_u16(), 400);
    assert_eq!(s.json::<api::ApiError>().await.unwrap().code, api::ErrorCode::BadRequest);
    let s = raw(Method::POST, api::ACCOUNTS).body("{}").send().await.unwrap();
    assert_eq!(s.json::<api::ApiError>().await.unwrap().code, api::ErrorCode::BadRequest);
    let s = raw(Method::POST, api::ACCOUNTS)
        .header("content-type", "application/json")
        .body(vec![b' '; api::limits::MAX_REQUEST_BYTES + 10])
        .send()
        .await
        .unwrap();
    assert_eq!(s.status().as_u16(), 413);
    assert_eq!(s.json::<api::ApiError>().await.unwrap().code, api::ErrorCode::TooLarge);
    assert_code(http.call(Method::GET, "/v1/nothing", None, NONE).await, 404, "not_found");
    assert_code(http.call(Method::PATCH, api::MESSAGES, None, NONE).await, 405, "bad_request");
    assert_code(http.call(Method::GET, "/v1/keys/someone/notanumber", None, NONE).await, 401, "unauthorized");

    // Version header: missing, malformed, too old.
    let s = http.client.get(format!("{}{}", server.base, api::MESSAGES)).send().await.unwrap();
    assert_eq!(s.status().as_u16(), 400);
    let s = http
        .client
        .get(format!("{}{}", server.base, api::MESSAGES))
        .header(api::VERSION_HEADER, "x")
        .send()
        .await
        .unwrap();
    assert_eq!(s.status().as_u16(), 400);
    let s = http
        .client
        .get(format!("{}{}", server.base, api::MESSAGES))
        .header(api::VERSION_HEADER, "0")
        .send()
        .await
        .unwrap();
    assert_eq!(s.status().as_u16(), 426);
    let e = s.json::<api::ApiError>().await.unwrap();
    assert_eq!(e.code, api::ErrorCode::ClientTooOld);
    assert!(e.message.contains("upgrade"));

    // Authentication: unknown device, bad signature, replayed challenge, expired/unknown token.
    let (mut eve, mut req) = User::new_request(&unique("eve"), 1);
    req.registration_token = Some("let-me-in".into());
    let _: api::CreateAccountResponse = http.ok(Method::POST, api::ACCOUNTS, None, Some(&req)).await;
    assert_code(
        http.call(
            Method::POST,
            api::AUTH_CHALLENGE,
            None,
            Some(&api::ChallengeRequest { account: eve.name.clone(), device: 2 }),
        )
        .await,
        404,
        "not_found",
    );
    let c = eve.challenge(&http).await;
    let mut forged = eve.answer(&c);
    forged.signature.0[0] ^= 1;
    assert_code(
        http.call(Method::POST, api::AUTH_SESSION, None, Some(&forged)).await,
        401,
        "bad_authentication",
    );
    // The failed attempt used the challenge up: the genuine answer is now a replay.
    assert_code(
        http.call(Method::POST, api::AUTH_SESSION, None, Some(&eve.answer(&c))).await,
        401,
        "bad_authentication",
    );
    let c = eve.challenge(&http).await;
    let answer = eve.answer(&c);
    let s: api::SessionResponse = http.ok(Method::POST, api::AUTH_SESSION, None, Some(&answer)).await;
    assert_code(
        http.call(Method::POST, api::AUTH_SESSION, None, Some(&answer)).await,
        401,
        "bad_authentication",
    );
    let mut short = answer.clone();
    short.challenge = vec![0; 5].into();
    assert_code(http.call(Method::POST, api::AUTH_SESSION, None, Some(&short)).await, 400, "bad_request");
    eve.token = s.token;
    for bad in [
        "",
        "Bearer",
        "Bearer !!!",
        "Basic abc",
        &format!("Bearer {}", "A".repeat(43)),
        &format!("Bearer {}", "A".repeat(500)),
    ] {
        let r =
            http.request(Method::GET, api::MESSAGES, None).header("authorization", bad).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{bad}");
        assert_eq!(r.json::<api::ApiError>().await.unwrap().code, api::ErrorCode::Unauthorized);
    }
    for (m, p) in [
        (Method::GET, api::MESSAGES.to_string()),
        (Method::POST, api::MESSAGES.to_string()),
        (Method::POST, api::ACK.to_string()),
        (Method::GET, api::PREKEYS.to_string()),
        (Method::PUT, api::PREKEYS.to_string()),
        (Method::GET, format!("/v1/keys/{}/1", eve.name)),
        (Method::DELETE, format!("/v1/accounts/{}", eve.name)),
        (Method::GET, api::WEBSOCKET.to_string()),
    ] {
        assert_code(http.call(m, &p, None, NONE).await, 401, "unauthorized");
    }
    assert!(ws_connect(&server, None).await.is_err());
    assert!(ws_connect(&server, Some("nonsense")).await.is_err());

    // Authenticated but malformed.
    let t = eve.tok();
    assert_code(http.call(Method::GET, "/v1/keys/nobody-here/1", t, NONE).await, 404, "not_found");
    assert_code(http.call(Method::GET, &format!("/v1/keys/{}/0", eve.name), t, NONE).await, 404, "not_found");
    assert_code(
        http.call(Method::GET, &format!("/v1/keys/{}/-1", eve.name), t, NONE).await,
        400,
        "bad_request",
    );
    assert_code(eve.send(&http, "nobody-here", &[1], b"x").await, 404, "not_found");
    assert_code(eve.send(&http, "NOT A NAME", &[1], b"x").await, 404, "not_found");
    assert_code(eve.send(&http, &eve.name, &[1], b"").await, 400, "bad_request");
    assert_code(
        eve.send(&http, &eve.name, &[1], &vec![0; api::limits::MAX_ENVELOPE_BYTES + 1]).await,
        413,
        "too_large",
    );
    let devices: Vec<u32> = (1..=65).collect();
    assert_code(eve.send(&http, &eve.name, &devices, b"x").await, 413, "too_large");
    assert_code(eve.send(&http, &eve.name, &[2, 2], b"x").await, 400, "bad_request");
    assert_code(
        http.call(
            Method::POST,
            api::ACK,
            t,
            Some(&api::AckRequest { ids: vec![1; 2000], state_counter: None }),
        )
        .await,
        413,
        "too_large",
    );
    assert_code(
        http.call(Method::POST, api::ACK, t, Some(&serde_json::json!({"ids": [-1]}))).await,
        400,
        "bad_request",
    );
    let mut up = upload_request(&tacit_protocol::PrekeyUpload::default());
    up.one_time = vec![vec![1, 2, 3].into()];
    assert_code(http.call(Method::PUT, api::PREKEYS, t, Some(&up)).await, 400, "bad_request");
    // Another device's prekeys do not verify against this device.
    let (other, other_req) = User::new_request(&unique("zed"), 1);
    drop(other);
    assert_code(http.call(Method::PUT, api::PREKEYS, t, Some(&other_req.prekeys)).await, 400, "bad_request");

    // A WebSocket that sends garbage is closed, and the server goes on.
    {
        use futures_util::{SinkExt, StreamExt};
        let mut ws = ws_connect(&server, t).await.unwrap();
        assert_eq!(next_frame(&mut ws).await, api::ServerFrame::Drained);
        ws.send(tokio_tungstenite::tungstenite::Message::Text("garbage".into())).await.unwrap();
        let mut closed = false;
        while let Ok(Some(m)) = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await {
            match m {
                Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f))) => {
                    assert_eq!(u16::from(f.code), 1008);
                    closed = true;
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        assert!(closed);
    }
    let ok = http.client.get(format!("{}/healthz", server.base)).send().await.unwrap();
    assert!(ok.status().is_success());
    server.finish().await;
}
