//! `tacit bench relay`: N clients, each with its own account and WebSocket; M opaque
//! envelopes in total, client i sending to client i+1. Each client sends over its socket
//! (or, with `--http`, by `POST /v1/messages`) with up to `--window` sends waiting for the
//! server's "stored" answer, and acknowledges what it receives in one frame per burst. A
//! message counts as delivered when its recipient received it over the WebSocket and wrote
//! the acknowledgement; latency is from just before the send to that write (one process,
//! one clock). Every envelope carries its sender's sequence number: a recipient counts each
//! once, and a duplicate (the same sequence number or the same server id twice) or a missing
//! one fails the run. The clock stops only when every client's mailbox is empty on the
//! server (`GET /v1/messages` answers no envelope: every acknowledgement was applied).
//! `--abuse` runs the same load next to a flooder ([`crate::abuse`]).

use std::collections::HashSet;
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
/// Gives up when a client waits this long for anything (or for its mailbox to empty).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest pause between two looks at a mailbox that is not empty yet.
const EMPTY_POLL_MAX: Duration = Duration::from_millis(20);

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

/// Why one client's part failed.
enum PartError {
    /// A request or the socket failed, or the server refused a send.
    Client(ClientError),
    /// Something other than exactly the expected envelopes arrived.
    Count(String),
}

impl From<ClientError> for PartError {
    fn from(e: ClientError) -> Self {
        Self::Client(e)
    }
}

impl From<PartError> for CliError {
    fn from(e: PartError) -> Self {
        match e {
            PartError::Client(e) => net(e),
            PartError::Count(why) => CliError::Server(why),
        }
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
    /// Delivered so far, over all clients (each envelope once).
    delivered: Arc<AtomicU64>,
}

/// What one client's part measured.
struct PartResult {
    /// Latencies (µs) of what it received.
    latencies: Vec<u64>,
    /// When (µs on the run's clock) its mailbox was seen empty on the server.
    empty_at: u64,
}

/// Microseconds on the run's clock.
fn micros(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// An envelope of `size` (at least 16) bytes: the send time (µs on the run's clock), then the
/// sender's sequence number.
fn payload(size: usize, start: Instant, seq: u64) -> Vec<u8> {
    let mut content = vec![0u8; size.max(16)];
    if let Some(head) = content.first_chunk_mut::<16>() {
        let (time, number) = head.split_at_mut(8);
        time.copy_from_slice(&micros(start).to_be_bytes());
        number.copy_from_slice(&seq.to_be_bytes());
    }
    content
}

/// The send time and sequence number of a received envelope.
fn stamp(e: &tacit_client::api::Envelope) -> Option<(u64, u64)> {
    let head = e.content.as_slice().first_chunk::<16>()?;
    let (time, number) = head.split_at(8);
    Some((u64::from_be_bytes(time.try_into().ok()?), u64::from_be_bytes(number.try_into().ok()?)))
}

/// What a recipient has counted: each sequence number and each server id once.
struct Tally {
    seen: Vec<bool>,
    ids: HashSet<u64>,
    from: String,
}

impl Tally {
    fn new(receives: u64, from: String) -> Self {
        Self { seen: vec![false; usize::try_from(receives).unwrap_or(0)], ids: HashSet::new(), from }
    }

    /// Counts `e`; an error for a duplicate, a stranger or a malformed envelope.
    fn count(&mut self, e: &tacit_client::api::Envelope) -> Result<u64, PartError> {
        let Some((sent, seq)) = stamp(e) else {
            return Err(PartError::Count(format!("envelope {} is too short to be the benchmark's", e.id)));
        };
        if e.sender != self.from {
            return Err(PartError::Count(format!(
                "envelope {} from {}, expected {}",
                e.id, e.sender, self.from
            )));
        }
        if !self.ids.insert(e.id) {
            return Err(PartError::Count(format!("duplicate: envelope id {} delivered twice", e.id)));
        }
        match usize::try_from(seq).ok().and_then(|i| self.seen.get_mut(i)) {
            Some(slot) if !*slot => *slot = true,
            Some(_) => {
                return Err(PartError::Count(format!("duplicate: message {seq} of {} twice", self.from)));
            }
            None => return Err(PartError::Count(format!("message {seq} of {} was never sent", self.from))),
        }
        Ok(sent)
    }

    fn missing(&self) -> usize {
        self.seen.iter().filter(|s| !**s).count()
    }
}

/// Waits until `client`'s mailbox on the server is empty; when it was seen so.
async fn wait_empty(client: &RelayClient, start: Instant) -> Result<u64, PartError> {
    let deadline = Instant::now() + IDLE_TIMEOUT;
    let mut pause = Duration::from_millis(1);
    loop {
        let page = client.fetch().await?;
        if page.envelopes.is_empty() {
            return Ok(micros(start));
        }
        if Instant::now() > deadline {
            return Err(PartError::Count(format!(
                "{} envelope(s) still in {}'s mailbox 30 s after the last was delivered",
                page.envelopes.len(),
                client.name()
            )));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(EMPTY_POLL_MAX);
    }
}

/// With `--http`, sends go out as requests from their own task, `window` at a time.
fn http_sender(client: Arc<RelayClient>, part: &Part) -> tokio::task::JoinHandle<Result<(), ClientError>> {
    let (to, sends, window) = (part.to.clone(), part.sends, part.window);
    let (size, start) = (part.size, part.start);
    tokio::spawn(async move {
        let next = Arc::new(AtomicU64::new(0));
        let mut lanes = Vec::new();
        for _ in 0..window {
            let (client, to, next) = (client.clone(), to.clone(), next.clone());
            lanes.push(tokio::spawn(async move {
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    if seq >= sends {
                        return Ok::<_, ClientError>(());
                    }
                    client.send_opaque(&to, payload(size, start, seq)).await?;
                }
            }));
        }
        for lane in lanes {
            lane.await.map_err(|e| ClientError::Network(e.to_string()))??;
        }
        Ok(())
    })
}

/// Sends over the socket (or HTTP) and receives on it, then waits for its mailbox to empty.
async fn socket_client(
    mut stream: RelayStream,
    part: Part,
    client: Arc<RelayClient>,
    http: bool,
    from: String,
) -> Result<PartResult, PartError> {
    let mut latencies = Vec::with_capacity(usize::try_from(part.receives).unwrap_or(0));
    let mut tally = Tally::new(part.receives, from);
    let (mut sent, mut answered, mut received) = (0u64, 0u64, 0u64);
    let mut acks = Vec::new();
    let mut times = Vec::new();
    let sender = http.then(|| http_sender(client.clone(), &part));
    if sender.is_some() {
        answered = part.sends;
        sent = part.sends;
    }
    loop {
        while sent < part.sends && sent - answered < part.window {
            stream.queue_send(sent, &part.to, payload(part.size, part.start, sent)).await?;
            sent += 1;
        }
        if !acks.is_empty() {
            stream.queue_ack(std::mem::take(&mut acks)).await?;
        }
        stream.flush().await?;
        let now = micros(part.start);
        for t in times.drain(..) {
            latencies.push(now.saturating_sub(t));
        }
        if answered == part.sends && received == part.receives {
            break;
        }
        let Some(mut event) = stream.next(IDLE_TIMEOUT).await? else {
            return Err(PartError::Count(format!(
                "{} of {} messages never reached {} (nothing for 30 s)",
                tally.missing(),
                part.receives,
                client.name()
            )));
        };
        // Everything that has arrived already is handled before the next write.
        loop {
            match event {
                RelayEvent::Envelope(e) => {
                    times.push(tally.count(&e)?);
                    acks.push(e.id);
                    received += 1;
                    part.delivered.fetch_add(1, Ordering::Relaxed);
                }
                RelayEvent::Sent { .. } => answered += 1,
                RelayEvent::SendFailed { code, message, .. } => {
                    return Err(ClientError::Server { status: 0, code: Some(code), message }.into());
                }
            }
            match stream.try_next()? {
                Some(e) => event = e,
                None => break,
            }
        }
    }
    if let Some(sender) = sender {
        sender.await.map_err(|e| ClientError::Network(e.to_string()))??;
    }
    let empty_at = wait_empty(&client, part.start).await?;
    Ok(PartResult { latencies, empty_at })
}

/// Creates `n` accounts, a few at a time; client i reaches the server as `options(i)` say.
pub(crate) async fn register(
    args: &BenchRelayArgs,
    n: usize,
    prefix: &str,
    options: impl Fn(usize) -> ConnectOptions,
) -> Result<Vec<Arc<RelayClient>>, CliError> {
    let mut clients = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(16) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|i| {
                let name = format!("{prefix}-{i}");
                let server = args.server.clone();
                let token = args.registration_token.clone();
                let options = options(*i);
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
    Ok(clients)
}

/// A short id for this run's account names.
pub(crate) fn run_id() -> String {
    let t =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{:x}", (t as u64) & 0xff_ffff_ffff)
}

/// What one load run measured.
pub(crate) struct Load {
    /// Envelopes delivered (each counted once).
    pub delivered: u64,
    /// From the first send until every mailbox was empty on the server.
    pub seconds: f64,
    /// Median latency (ms).
    pub p50_ms: f64,
    /// 99th percentile latency (ms).
    pub p99_ms: f64,
    /// The sends each client kept in flight.
    pub window: u64,
    /// The first failure, if any: the run failed.
    pub failure: Option<CliError>,
}

impl Load {
    /// Nothing measured.
    pub fn empty() -> Self {
        Self { delivered: 0, seconds: 0.0, p50_ms: 0.0, p99_ms: 0.0, window: 0, failure: None }
    }

    /// Delivered envelopes per second.
    pub fn rate(&self) -> f64 {
        self.delivered as f64 / self.seconds.max(1e-9)
    }

    /// The measurements as JSON fields.
    pub fn fields(&self) -> serde_json::Value {
        json!({"delivered": self.delivered, "seconds": self.seconds, "delivered_per_s": self.rate(),
            "p50_ms": self.p50_ms, "p99_ms": self.p99_ms})
    }
}

/// Runs the load once over `clients` (each connects its socket now).
pub(crate) async fn load(args: &BenchRelayArgs, clients: &[Arc<RelayClient>]) -> Load {
    let n = clients.len();
    let size = args.size as usize;
    // A client writes its window of sends before it reads again; more than 1 MiB of them
    // would fill the socket both ways (the server stops reading at its in-flight bound).
    let window = u64::from(args.window).min((MAX_WINDOW_BYTES / size.max(1)).max(1) as u64);
    let mut result = Load { window, ..Load::empty() };
    let mut streams = Vec::with_capacity(n);
    for c in clients {
        match c.connect().await {
            Ok(s) => streams.push(s),
            Err(e) => {
                result.failure = Some(net(e));
                return result;
            }
        }
    }
    let total = args.messages;
    let share = |i: usize| total / n as u64 + u64::from((i as u64) < total % n as u64);
    let name = |i: usize| clients.get(i % n).map(|c| c.name().to_owned()).unwrap_or_default();
    let start = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(n);
    for (i, stream) in streams.into_iter().enumerate() {
        let part = Part {
            to: name(i + 1),
            sends: share(i),
            receives: share((i + n - 1) % n),
            window,
            size,
            start,
            delivered: delivered.clone(),
        };
        let Some(client) = clients.get(i).cloned() else { continue };
        tasks.push(tokio::spawn(socket_client(stream, part, client, args.http, name(i + n - 1))));
    }
    let mut latencies = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let mut end = 0u64;
    for t in tasks {
        match t.await {
            Ok(Ok(r)) => {
                latencies.extend(r.latencies);
                end = end.max(r.empty_at);
            }
            Ok(Err(e)) => result.failure = result.failure.or(Some(e.into())),
            Err(e) => result.failure = result.failure.or(Some(CliError::Local(e.to_string()))),
        }
    }
    result.seconds = if result.failure.is_none() { end as f64 / 1e6 } else { start.elapsed().as_secs_f64() };
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        let i = ((latencies.len() as f64 - 1.0) * p).round().max(0.0) as usize;
        latencies.get(i).map(|us| *us as f64 / 1000.0).unwrap_or(0.0)
    };
    (result.p50_ms, result.p99_ms) = (pct(0.50), pct(0.99));
    result.delivered = delivered.load(Ordering::Relaxed);
    if result.failure.is_none() && result.delivered != total {
        result.failure =
            Some(CliError::Server(format!("{} of {total} envelopes delivered", result.delivered)));
    }
    result
}

/// Deletes the bench's accounts (best effort).
pub(crate) async fn delete_all(clients: Vec<Arc<RelayClient>>) {
    for c in clients {
        if let Ok(c) = Arc::try_unwrap(c) {
            let _ = c.delete().await;
        }
    }
}

/// Runs the benchmark and prints one `bench_relay` line (`bench_relay_abuse` with `--abuse`).
pub async fn run(
    args: BenchRelayArgs,
    options: &ConnectOptions,
    out: &Out,
    json: bool,
) -> Result<(), CliError> {
    if args.abuse {
        return crate::abuse::run(args, options, out, json).await;
    }
    let n = args.clients as usize;
    let clients = register(&args, n, &format!("b{}", run_id()), |_| options.clone()).await?;
    let total = args.messages;
    let r = load(&args, &clients).await;
    let line = json!({"type": "bench_relay", "clients": n, "messages": total, "delivered": r.delivered,
        "size": args.size, "window": r.window, "transport": if args.http { "http" } else { "websocket" },
        "seconds": r.seconds, "delivered_per_s": r.rate(), "p50_ms": r.p50_ms, "p99_ms": r.p99_ms});
    if json {
        out.raw(line);
    } else {
        println!(
            "{}/{total} delivered in {:.2} s (until every mailbox was empty): {:.0} messages/s, p50 {:.2} ms, \
             p99 {:.2} ms",
            r.delivered,
            r.seconds,
            r.rate(),
            r.p50_ms,
            r.p99_ms
        );
    }
    delete_all(clients).await;
    match r.failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tacit_client::api;

    fn envelope(id: u64, sender: &str, seq: u64) -> api::Envelope {
        let content = payload(64, Instant::now(), seq);
        serde_json::from_value(json!({"id": id, "sender": sender, "sender_device": 1,
            "server_time_ms": 1, "content": api::Bytes(content)}))
        .unwrap()
    }

    #[test]
    fn each_envelope_counts_once_and_strangers_fail() {
        let mut t = Tally::new(3, "a".into());
        assert!(t.count(&envelope(10, "a", 0)).is_ok());
        assert!(
            matches!(t.count(&envelope(10, "a", 1)), Err(PartError::Count(m)) if m.contains("duplicate"))
        );
        assert!(
            matches!(t.count(&envelope(11, "a", 0)), Err(PartError::Count(m)) if m.contains("duplicate"))
        );
        assert!(
            matches!(t.count(&envelope(12, "a", 3)), Err(PartError::Count(m)) if m.contains("never sent"))
        );
        assert!(matches!(t.count(&envelope(13, "b", 1)), Err(PartError::Count(_))));
        assert!(t.count(&envelope(14, "a", 2)).is_ok());
        assert_eq!(t.missing(), 1);
    }
}
