//! Live group delivery (issue 11), `scripts/bench_delivery`: the real relay on loopback
//! (SQLite), one group of N member devices (argument; default 1000), every recipient
//! connected over its own WebSocket. A 100-byte group message is posted over HTTP; the
//! clock runs from just before the post to the moment each recipient's socket received
//! its envelope (one process, one clock); each recipient acknowledges it. Prints one JSON
//! line: the post's answer time, and over the messages the median of the median, 99th
//! percentile and last arrival.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, missing_docs)]

use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use tacit_api as api;
mod common;

use common::{account, frame};
use tacit_server::{NewCommit, Server, ServerConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const MESSAGES: usize = 10;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::default();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.data_dir = dir.path().join("data");
    config.max_connections = n + 100;
    config.max_connections_per_address = n + 100;
    config.limits.address_requests_per_second = 1_000_000;
    config.limits.address_request_burst = 1_000_000;
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr();
    let store = server.state().store().clone();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));

    // N accounts of one device each, made in the store, each with a session token.
    let mut members = Vec::with_capacity(n);
    for i in 0..n {
        let member = account(store.as_ref(), format!("d{i:06}")).await;
        let key = member.key;
        let raw = (i as u64).to_be_bytes().repeat(4);
        let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &raw);
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        store.put_token(key, hash.as_ref(), now, now + 3_600_000).await.unwrap();
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
        members.push((member, token));
    }
    let group = vec![0xcd; 16];
    store
        .group_commit(
            &members[0].0,
            NewCommit {
                group_id: group.clone(),
                epoch: 0,
                commit: frame(&group, 0, 3, 2000),
                welcome: Some(vec![7; 2000]),
                added: members[1..].iter().map(|(m, _)| (m.account.clone(), 1)).collect(),
                removed: Vec::new(),
                state_counter: None,
            },
            2,
            None,
        )
        .await
        .unwrap();

    // Every recipient connects and takes what waits (the Welcome); then each socket task
    // reports, per message, when its envelope arrived.
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let (ready_tx, mut ready) = tokio::sync::mpsc::unbounded_channel::<()>();
    for (_, token) in &members[1..] {
        let mut req = format!("ws://{addr}{}", api::WEBSOCKET).into_client_request().unwrap();
        req.headers_mut().insert(api::VERSION_HEADER, "1".parse().unwrap());
        req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let (arrived_tx, ready_tx) = (arrived_tx.clone(), ready_tx.clone());
        tokio::spawn(async move {
            let mut seen = 0usize;
            while let Some(Ok(msg)) = ws.next().await {
                let Message::Text(t) = msg else { continue };
                let at = Instant::now();
                match serde_json::from_str::<api::ServerFrame>(t.as_str()).unwrap() {
                    api::ServerFrame::Envelope(e) => {
                        if e.group.as_ref().is_some_and(|g| g.kind == api::GroupKind::Message) {
                            arrived_tx.send((seen, at)).unwrap();
                            seen += 1;
                        }
                        let ack = api::ClientFrame::Ack { ids: vec![e.id], state_counter: None };
                        ws.send(Message::Text(serde_json::to_string(&ack).unwrap().into())).await.unwrap();
                    }
                    api::ServerFrame::Drained => {
                        let _ = ready_tx.send(());
                    }
                    _ => {}
                }
            }
        });
    }
    for _ in 1..n {
        ready.recv().await.unwrap();
    }
    let http = reqwest::Client::new();
    let url = format!("http://{addr}{}", api::GROUP_MESSAGES.replace("{group}", &hex(&group)));
    let (mut post_ms, mut p50, mut p99, mut last) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..MESSAGES {
        let req = api::GroupMessageRequest {
            content: frame(&group, 1, 1, 100 + i % 2).into(),
            idempotency_key: None,
            state_counter: None,
        };
        let t = Instant::now();
        let r = http
            .post(&url)
            .header(api::VERSION_HEADER, "1")
            .bearer_auth(&members[0].1)
            .json(&req)
            .send()
            .await
            .unwrap();
        post_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        let mut times = Vec::with_capacity(n - 1);
        while times.len() < n - 1 {
            let (k, at) =
                tokio::time::timeout(Duration::from_secs(60), arrived.recv()).await.unwrap().unwrap();
            assert_eq!(k, i, "every recipient gets each message once, in order");
            times.push(at.duration_since(t).as_secs_f64() * 1000.0);
        }
        p50.push(percentile(&mut times, 0.5));
        p99.push(percentile(&mut times, 0.99));
        last.push(percentile(&mut times, 1.0));
    }
    println!(
        "{}",
        serde_json::json!({
            "devices": n, "connected": n - 1, "messages": MESSAGES,
            "post_ms": percentile(&mut post_ms, 0.5),
            "p50_ms": percentile(&mut p50, 0.5), "p99_ms": percentile(&mut p99, 0.5),
            "last_ms": percentile(&mut last, 0.5),
        })
    );
    let _ = stop.send(());
    let _ = task.await;
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
