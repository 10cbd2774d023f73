//! A send with an idempotency key is sent again, unchanged (the same key), after a `503`;
//! one without a key is not. Against a scripted HTTP server on loopback that answers `503`
//! first and records each request body.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)] // test code

use std::sync::{Arc, Mutex};

use tacit_api as api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::net::{Api, ConnectOptions, SendOutcome};

/// Serves `answers` (status line, JSON body) in order, one per request, recording bodies.
async fn scripted(answers: Vec<(&'static str, &'static str)>) -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    tokio::spawn(async move {
        let mut answers = answers.into_iter();
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            let mut buf = Vec::new();
            // Requests on this connection, one after another (keep-alive).
            loop {
                let end = loop {
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break Some(p + 4);
                    }
                    let mut chunk = [0u8; 4096];
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => break None,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let Some(end) = end else { break };
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                while buf.len() < end + len {
                    let mut chunk = [0u8; 4096];
                    let n = conn.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "request body cut short");
                    buf.extend_from_slice(&chunk[..n]);
                }
                seen.lock().unwrap().push(buf[end..end + len].to_vec());
                buf.drain(..end + len);
                let (status, body) = answers.next().expect("no more scripted answers");
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                conn.write_all(reply.as_bytes()).await.unwrap();
            }
        }
    });
    (base, bodies)
}

fn request(key: Option<Vec<u8>>) -> api::SendRequest {
    api::SendRequest {
        recipient: "bob".into(),
        envelopes: vec![api::OutgoingEnvelope { device: 1, content: api::Bytes(vec![1, 2, 3]) }],
        idempotency_key: key.map(api::Bytes),
        state_counter: None,
    }
}

const UNAVAILABLE: (&str, &str) = ("503 Service Unavailable", r#"{"code":"unavailable","message":"busy"}"#);

#[tokio::test]
async fn a_send_with_a_key_is_retried_with_the_same_key_after_a_503() {
    let (base, bodies) = scripted(vec![UNAVAILABLE, ("200 OK", r#"{"server_time_ms":7}"#)]).await;
    let api = Api::new(&base, &ConnectOptions::default()).unwrap();
    let req = request(Some(vec![5; api::limits::IDEMPOTENCY_KEY_BYTES]));
    let SendOutcome::Sent(r) = api.send(&req).await.unwrap() else { panic!("sent") };
    assert_eq!(r.server_time_ms, 7);
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "one retry");
    let sent: Vec<api::SendRequest> = bodies.iter().map(|b| serde_json::from_slice(b).unwrap()).collect();
    assert_eq!(sent[0], req);
    assert_eq!(sent[1], req, "the retry is the same request, key included");
}

#[tokio::test]
async fn a_send_without_a_key_is_not_retried() {
    let (base, bodies) = scripted(vec![UNAVAILABLE]).await;
    let api = Api::new(&base, &ConnectOptions::default()).unwrap();
    let got = api.send(&request(None)).await;
    assert!(matches!(got, Err(crate::error::ClientError::Server { status: 503, .. })));
    assert_eq!(bodies.lock().unwrap().len(), 1);
}
