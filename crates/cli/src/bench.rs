//! `tacit bench relay`: N clients, each with its own account and WebSocket; M opaque
//! envelopes in total, client i sending to client i+1. Each client sends over its socket
//! (or, with `--http`, by `POST /v1/messages`) with up to `--window` sends waiting for the
//! server's "stored" answer, and acknowledges what it receives in one frame per burst. A
//! message counts as delivered when its recipient received it over the WebSocket and wrote
//! the acknowledgement; latency is from just before the send to that write (one process,
//! one clock).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tacit_client::{ClientError, ConnectOptions, RelayClient, RelayEvent, RelayStream};

use crate::CliError;
use crate::args::BenchRelayArgs;
use crate::output::Out;

/// Most envelope bytes one client has in flight (the window shrinks for large envelopes).
const MAX_WINDOW_BYTES: usize = 1024 * 1024;
/// Gives up when a client waits this long for anything.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

fn net(e: ClientError) -> CliError {
    CliError::Client(e)
}

/// A failed account creation; over the server's per-address budget, says which setting to
/// raise (exit code 3 either way).
fn registration(e: ClientError) -> CliError {
    match e {
        ClientError::Server { code: Some(tacit_client::api::ErrorCode::RateLimited), .. } => CliError::Server(
            "the server refused to create more accounts from this address: raise `account_creation_burst` \
             under [limits] in its config file (default 200 at once), or use fewer --clients"
                .into(),
        ),
        other => net(other),
    }
}

/// One client's part of the run.
struct Part {
    /// Its account's recipient (the next client).
    to: String,
    /// Envelopes it sends.
    sends: u64,
    /// Envelopes it receives.
    receives: u64,
    window: u64,
    size: usize,
    /// The run's clock.
    start: Instant,
    /// Delivered so far, over all clients.
    delivered: Arc<AtomicU64>,
}

impl Part {
    fn payload(&self) -> Vec<u8> {
        payload(self.size, self.start)
    }

    fn micros(&self) -> u64 {
        micros(self.start)
    }
}

/// Microseconds on the run's clock.
fn micros(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// An envelope of `size` bytes whose first 8 are the send time (µs on the run's clock).
fn payload(size: usize, start: Instant) -> Vec<u8> {
    let mut content = vec![0u8; size];
    if let Some(head) = content.first_chunk_mut::<8>() {
        *head = micros(start).to_be_bytes();
    }
    content
}

fn sent_time(e: &tacit_client::api::Envelope) -> u64 {
    e.content.as_slice().first_chunk::<8>().map(|b| u64::from_be_bytes(*b)).unwrap_or(0)
}

/// Sends over the socket and receives on it; returns the latencies (µs) of what it received.
async fn socket_client(
    mut stream: RelayStream,
    part: Part,
    http: Option<Arc<RelayClient>>,
) -> Result<Vec<u64>, ClientError> {
    let mut lat = Vec::with_capacity(usize::try_from(part.receives).unwrap_or(0));
    let (mut sent, mut answered, mut received) = (0u64, 0u64, 0u64);
    let mut acks = Vec::new();
    let mut times = Vec::new();
    // With --http, sends go out as requests from their own task, `window` at a time.
    let http_sender = http.map(|client| {
        let (to, sends, window) = (part.to.clone(), part.sends, part.window);
        let (size, start) = (part.size, part.start);
        tokio::spawn(async move {
            let next = Arc::new(AtomicU64::new(0));
            let mut lanes = Vec::new();
            for _ in 0..window {
                let (client, to, next) = (client.clone(), to.clone(), next.clone());
                lanes.push(tokio::spawn(async move {
                    while next.fetch_add(1, Ordering::Relaxed) < sends {
                        client.send_opaque(&to, payload(size, start)).await?;
                    }
                    Ok::<_, ClientError>(())
                }));
            }
            for lane in lanes {
                lane.await.map_err(|e| ClientError::Network(e.to_string()))??;
            }
            Ok::<_, ClientError>(())
        })
    });
    if http_sender.is_some() {
        answered = part.sends;
        sent = part.sends;
    }
    loop {
        while sent < part.sends && sent - answered < part.window {
            stream.queue_send(sent, &part.to, part.payload()).await?;
            sent += 1;
        }
        if !acks.is_empty() {
            stream.queue_ack(std::mem::take(&mut acks)).await?;
        }
        stream.flush().await?;
        let now = part.micros();
        for t in times.drain(..) {
            lat.push(now.saturating_sub(t));
        }
        if answered == part.sends && received == part.receives {
            break;
        }
        let Some(mut event) = stream.next(IDLE_TIMEOUT).await? else {
            return Err(ClientError::Network("no envelope for 30 s".into()));
        };
        // Everything that has arrived already is handled before the next write.
        loop {
            match event {
                RelayEvent::Envelope(e) => {
                    times.push(sent_time(&e));
                    acks.push(e.id);
                    received += 1;
                    part.delivered.fetch_add(1, Ordering::Relaxed);
                }
                RelayEvent::Sent { .. } => answered += 1,
                RelayEvent::SendFailed { code, message, .. } => {
                    return Err(ClientError::Server { status: 0, code: Some(code), message });
                }
            }
            match stream.try_next()? {
                Some(e) => event = e,
                None => break,
            }
        }
    }
    if let Some(sender) = http_sender {
        sender.await.map_err(|e| ClientError::Network(e.to_string()))??;
    }
    Ok(lat)
}

/// Runs the benchmark and prints one `bench_relay` line.
pub async fn run(
    args: BenchRelayArgs,
    options: &ConnectOptions,
    out: &Out,
    json: bool,
) -> Result<(), CliError> {
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
                let options = options.clone();
                tokio::spawn(async move {
                    RelayClient::register_with(&server, &name, token.as_deref(), &options).await
                })
            })
            .collect();
        for t in tasks {
            let c = t.await.map_err(|e| CliError::Local(e.to_string()))?.map_err(registration)?;
            clients.push(Arc::new(c));
        }
    }
    let mut streams = Vec::with_capacity(n);
    for c in &clients {
        streams.push(c.connect().await.map_err(net)?);
    }
    let total = args.messages;
    // A client writes its window of sends before it reads again; more than 1 MiB of them
    // would fill the socket both ways (the server stops reading at its in-flight bound).
    let window = u64::from(args.window).min((MAX_WINDOW_BYTES / size.max(1)).max(1) as u64);
    let share = |i: usize| total / n as u64 + u64::from((i as u64) < total % n as u64);
    let start = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(n);
    for (i, stream) in streams.into_iter().enumerate() {
        let part = Part {
            to: clients.get((i + 1) % n).map(|c| c.name().to_owned()).unwrap_or_default(),
            sends: share(i),
            receives: share((i + n - 1) % n),
            window,
            size,
            start,
            delivered: delivered.clone(),
        };
        let http = args.http.then(|| clients.get(i).cloned()).flatten();
        tasks.push(tokio::spawn(socket_client(stream, part, http)));
    }
    let mut latencies = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let mut failure = None;
    for t in tasks {
        match t.await {
            Ok(Ok(l)) => latencies.extend(l),
            Ok(Err(e)) => failure = failure.or(Some(net(e))),
            Err(e) => failure = failure.or(Some(CliError::Local(e.to_string()))),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        let i = ((latencies.len() as f64 - 1.0) * p).round().max(0.0) as usize;
        latencies.get(i).map(|us| *us as f64 / 1000.0).unwrap_or(0.0)
    };
    let got = delivered.load(Ordering::Relaxed);
    let rate = got as f64 / elapsed.max(1e-9);
    let line = json!({"type": "bench_relay", "clients": n, "messages": total, "delivered": got, "size": size,
        "window": window, "transport": if args.http { "http" } else { "websocket" },
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
    if let Some(e) = failure {
        return Err(e);
    }
    if got < total {
        return Err(CliError::Server(format!("only {got} of {total} envelopes delivered")));
    }
    Ok(())
}
