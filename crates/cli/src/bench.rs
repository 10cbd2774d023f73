//! `tacit bench relay`: N clients, each with its own account and WebSocket; M opaque
//! envelopes in total, client i sending to client i+1. A message counts as delivered when its
//! recipient received it over the WebSocket and acknowledged it; latency is from just before
//! the send request to that acknowledgement (one process, one clock).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tacit_client::{ClientError, RelayClient};

use crate::CliError;
use crate::args::BenchRelayArgs;
use crate::output::Out;

/// Gives up when no envelope arrives for this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

fn net(e: ClientError) -> CliError {
    CliError::Client(e)
}

/// Runs the benchmark and prints one `bench_relay` line.
pub async fn run(args: BenchRelayArgs, out: &Out, json: bool) -> Result<(), CliError> {
    let n = args.clients as usize;
    let size = args.size as usize;
    let run_id = {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("{:x}", (t as u64) & 0xff_ffff_ffff)
    };
    // Accounts, created a few at a time.
    let mut clients = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(16) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|i| {
                let name = format!("b{run_id}-{i}");
                let server = args.server.clone();
                let token = args.registration_token.clone();
                tokio::spawn(async move { RelayClient::register(&server, &name, token.as_deref()).await })
            })
            .collect();
        for t in tasks {
            let c = t.await.map_err(|e| CliError::Local(e.to_string()))?.map_err(net)?;
            clients.push(Arc::new(c));
        }
    }
    let start = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let total = args.messages;
    // Receivers.
    let mut receivers = Vec::with_capacity(n);
    for c in &clients {
        let mut stream = c.connect().await.map_err(net)?;
        let delivered = delivered.clone();
        receivers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while delivered.load(Ordering::Relaxed) < total {
                let e = match stream.next(Duration::from_millis(200)).await? {
                    Some(e) => e,
                    None if start.elapsed() > IDLE_TIMEOUT && lat.is_empty() => break,
                    None => continue,
                };
                stream.ack(vec![e.id]).await?;
                let sent =
                    e.content.as_slice().first_chunk::<8>().map(|b| u64::from_be_bytes(*b)).unwrap_or(0);
                let now = start.elapsed().as_micros() as u64;
                lat.push(now.saturating_sub(sent));
                delivered.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, ClientError>(lat)
        }));
    }
    // Senders: client i sends its share to client i+1.
    let send_start = Instant::now();
    let mut senders = Vec::with_capacity(n);
    for (i, c) in clients.iter().enumerate() {
        let share = total / n as u64 + u64::from((i as u64) < total % n as u64);
        let to = clients.get((i + 1) % n).map(|c| c.name().to_owned()).unwrap_or_default();
        let c = c.clone();
        senders.push(tokio::spawn(async move {
            for _ in 0..share {
                let mut content = vec![0u8; size];
                let t = (start.elapsed().as_micros() as u64).to_be_bytes();
                if let Some(head) = content.first_chunk_mut::<8>() {
                    *head = t;
                }
                c.send_opaque(&to, content).await?;
            }
            Ok::<_, ClientError>(())
        }));
    }
    for s in senders {
        s.await.map_err(|e| CliError::Local(e.to_string()))?.map_err(net)?;
    }
    let mut latencies = Vec::with_capacity(total as usize);
    let deadline = Instant::now() + IDLE_TIMEOUT;
    while delivered.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = send_start.elapsed().as_secs_f64();
    for r in receivers {
        match tokio::time::timeout(Duration::from_secs(1), r).await {
            Ok(Ok(Ok(l))) => latencies.extend(l),
            Ok(Ok(Err(e))) => return Err(net(e)),
            _ => {}
        }
    }
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        let i = ((latencies.len() as f64 - 1.0) * p).round().max(0.0) as usize;
        latencies.get(i).map(|us| *us as f64 / 1000.0).unwrap_or(0.0)
    };
    let got = delivered.load(Ordering::Relaxed);
    let rate = got as f64 / elapsed.max(1e-9);
    let line = json!({"type": "bench_relay", "clients": n, "messages": total, "delivered": got, "size": size,
        "seconds": elapsed, "delivered_per_s": rate, "p50_ms": pct(0.50), "p99_ms": pct(0.99)});
    if json {
        out.raw(line);
    } else {
        println!(
            "{got}/{total} delivered in {elapsed:.2} s: {rate:.0} messages/s, p50 {:.2} ms, p99 {:.2} ms",
            pct(0.50),
            pct(0.99)
        );
    }
    for c in clients {
        if let Ok(c) = Arc::try_unwrap(c) {
            let _ = c.delete().await;
        }
    }
    if got < total {
        return Err(CliError::Server(format!("only {got} of {total} envelopes delivered")));
    }
    Ok(())
}
