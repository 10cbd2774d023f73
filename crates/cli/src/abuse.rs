//! `tacit bench relay --abuse`: the load of `tacit bench relay` twice on the same accounts,
//! first quiet, then while one address (`--flood-from`, 127.0.0.2 by default: Linux routes
//! all of 127/8 to the loopback interface) floods the server at its limits:
//!
//! - connections: it holds as many TCP connections as the server allows one address (each
//!   sends half a request and then nothing), reopening each one the server closes;
//! - account creations, at twice the server's sustained rate after its whole burst;
//! - device-list reads (real and made-up names), likewise;
//! - WebSocket acknowledgement frames of 1,024 made-up ids, from `--flood-accounts`
//!   accounts, as fast as the server reads them.
//!
//! An unmeasured pass of 10 messages per client comes first, so neither run pays for a cold
//! server. The limits come from the server's configuration file (`--server-config`, the file the
//! server runs with) or, without one, from the server's own defaults: nothing here knows
//! today's numbers. The honest clients connect from `--honest-from`. The run fails unless
//! every honest message is delivered and no honest request is refused, in both phases.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use tacit_client::{ClientError, ConnectOptions, RelayClient, RelayProbe};
use tacit_server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::CliError;
use crate::args::BenchRelayArgs;
use crate::bench::{self, Load};
use crate::output::Out;

/// How long the flood runs before the honest load starts, so it is at its limits by then.
const WARM_UP: Duration = Duration::from_secs(2);
/// Messages per honest client in the unmeasured pass before the quiet run.
const WARM_UP_MESSAGES_PER_CLIENT: u64 = 10;
/// Unauthenticated floods go at this many times the server's sustained rate.
const OVER_RATE: f64 = 2.0;
/// Concurrent requests of each unauthenticated flood.
const LANES: usize = 4;
/// Made-up ids in one acknowledgement frame.
const ACK_IDS: usize = 1024;
/// Connections the flooder keeps for its own requests and sockets, besides the idle ones.
const SPARE: usize = 2 * LANES + 8;
/// Idle connections tried beyond the per-address cap (the server must refuse them).
const OVER_CAP: usize = 8;
/// Pause before reopening a connection the server closed.
const REOPEN: Duration = Duration::from_millis(200);
/// Unauthenticated floods try at least this often once their burst is spent, so refusals
/// show even where the sustained rate is tiny (account creations: 60 an hour by default).
const MIN_ATTEMPTS_PER_SECOND: f64 = 1.0;
/// Under abuse the honest load may take this many times as long as the quiet one (and at
/// least [`MIN_DEADLINE`]) before the run fails, so a server that stalls fails the run
/// instead of hanging it.
const SLOWDOWN_LIMIT: f64 = 10.0;
/// See [`SLOWDOWN_LIMIT`].
const MIN_DEADLINE: Duration = Duration::from_secs(60);

/// What the flooder did, counted as it goes.
#[derive(Default)]
struct Counters {
    conns_open: AtomicU64,
    conns_peak: AtomicU64,
    conns_opened: AtomicU64,
    conns_closed: AtomicU64,
    conns_failed: AtomicU64,
    accounts_ok: AtomicU64,
    accounts_refused: AtomicU64,
    accounts_failed: AtomicU64,
    reads_ok: AtomicU64,
    reads_not_found: AtomicU64,
    reads_refused: AtomicU64,
    reads_failed: AtomicU64,
    ack_frames: AtomicU64,
    ack_reconnects: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// A schedule of attempts: `burst` at once, then `per_second`.
struct Pace {
    start: tokio::time::Instant,
    burst: u64,
    per_second: f64,
    next: AtomicU64,
}

impl Pace {
    fn new(burst: u32, per_second: f64) -> Self {
        Self {
            start: tokio::time::Instant::now(),
            burst: u64::from(burst),
            per_second: per_second.max(MIN_ATTEMPTS_PER_SECOND),
            next: AtomicU64::new(0),
        }
    }

    /// Waits for the next attempt's turn; its number.
    async fn turn(&self) -> u64 {
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        if k >= self.burst {
            let after = Duration::from_secs_f64(((k - self.burst + 1) as f64 / self.per_second).min(1e6));
            tokio::time::sleep_until(self.start + after).await;
        }
        k
    }
}

/// How a refused request looks.
fn refused(e: &ClientError) -> bool {
    matches!(e, ClientError::Server { status: 429 | 503, .. })
}

/// A TCP connection from `from` to `to`.
async fn tcp(from: IpAddr, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket =
        if from.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// One idle connection slot: half a request, then wait for the server to close it; again.
async fn hold(from: IpAddr, to: SocketAddr, c: Arc<Counters>) {
    loop {
        match tcp(from, to).await {
            Ok(mut s) => {
                bump(&c.conns_opened);
                let open = c.conns_open.fetch_add(1, Ordering::Relaxed) + 1;
                c.conns_peak.fetch_max(open, Ordering::Relaxed);
                let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: flood\r\n").await;
                let mut sink = [0u8; 512];
                while let Ok(n) = s.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
                c.conns_open.fetch_sub(1, Ordering::Relaxed);
                bump(&c.conns_closed);
            }
            Err(_) => bump(&c.conns_failed),
        }
        tokio::time::sleep(REOPEN).await;
    }
}

/// Account creations on `pace`.
async fn create_accounts(
    probe: Arc<RelayProbe>,
    pace: Arc<Pace>,
    prefix: String,
    token: Option<String>,
    c: Arc<Counters>,
) {
    loop {
        let k = pace.turn().await;
        match probe.create_account(&format!("{prefix}-{k}"), token.as_deref()).await {
            Ok(()) => bump(&c.accounts_ok),
            Err(e) if refused(&e) => bump(&c.accounts_refused),
            Err(_) => bump(&c.accounts_failed),
        }
    }
}

/// Device-list reads on `pace`, of honest names and made-up ones in turn.
async fn read_lists(probe: Arc<RelayProbe>, pace: Arc<Pace>, names: Arc<Vec<String>>, c: Arc<Counters>) {
    loop {
        let k = pace.turn().await;
        let name = match names.get(usize::try_from(k).unwrap_or(0) % (2 * names.len().max(1))) {
            Some(n) => n.clone(),
            None => format!("nobody-{k:x}"),
        };
        match probe.device_list(&name).await {
            Ok(()) => bump(&c.reads_ok),
            Err(ClientError::NotFound(_)) => bump(&c.reads_not_found),
            Err(e) if refused(&e) => bump(&c.reads_refused),
            Err(_) => bump(&c.reads_failed),
        }
    }
}

/// Acknowledgement frames of made-up ids on `client`'s WebSocket, as fast as it takes them.
async fn ack_flood(client: Arc<RelayClient>, seed: u64, c: Arc<Counters>) {
    let mut x = seed | 1;
    loop {
        let Ok(mut stream) = client.connect().await else {
            bump(&c.ack_reconnects);
            tokio::time::sleep(REOPEN).await;
            continue;
        };
        loop {
            let ids: Vec<u64> = (0..ACK_IDS)
                .map(|_| {
                    // xorshift64: made-up ids, none of them the flooder's.
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x >> 16
                })
                .collect();
            if stream.queue_ack(ids).await.is_err() || stream.flush().await.is_err() {
                break;
            }
            bump(&c.ack_frames);
            // Reading answers the server's pings; nothing else comes to an empty mailbox.
            if stream.try_next().is_err() {
                break;
            }
        }
        bump(&c.ack_reconnects);
        tokio::time::sleep(REOPEN).await;
    }
}

/// The running flood.
struct Flood {
    tasks: Vec<JoinHandle<()>>,
    counters: Arc<Counters>,
    config: ServerConfig,
    from: IpAddr,
    ack_sockets: usize,
    held: usize,
}

impl Flood {
    async fn start(
        args: &BenchRelayArgs,
        config: ServerConfig,
        honest: Vec<String>,
        options: &ConnectOptions,
    ) -> Result<Self, CliError> {
        let from = args.flood_from;
        let options = options.clone().with_local_address(from);
        let target = server_addr(&args.server).await?;
        let counters = Arc::new(Counters::default());
        let limits = config.limits;
        let prefix = format!("f{}", bench::run_id());
        // The ack flooders' accounts first (they count against the address's budget too).
        let accounts = usize::try_from(args.flood_accounts).unwrap_or(0);
        let ackers = bench::register(args, accounts, &format!("{prefix}a"), |_| options.clone()).await?;
        let mut tasks = Vec::new();
        for (i, a) in ackers.into_iter().enumerate() {
            tasks.push(tokio::spawn(ack_flood(a, 0x9e37_79b9_7f4a_7c15 ^ i as u64, counters.clone())));
        }
        let probe = Arc::new(RelayProbe::new(&args.server, &options).map_err(CliError::Client)?);
        let creations = Arc::new(Pace::new(
            limits.account_creation_burst,
            OVER_RATE * f64::from(limits.account_creations_per_hour) / 3600.0,
        ));
        let reads = Arc::new(Pace::new(
            limits.address_request_burst,
            OVER_RATE * f64::from(limits.address_requests_per_second),
        ));
        let names = Arc::new(honest);
        for _ in 0..LANES {
            let (p, pace, c) = (probe.clone(), creations.clone(), counters.clone());
            tasks.push(tokio::spawn(create_accounts(
                p,
                pace,
                prefix.clone(),
                args.registration_token.clone(),
                c,
            )));
            let (p, pace, n, c) = (probe.clone(), reads.clone(), names.clone(), counters.clone());
            tasks.push(tokio::spawn(read_lists(p, pace, n, c)));
        }
        let held = config.max_connections_per_address.saturating_sub(accounts + SPARE) + OVER_CAP;
        for _ in 0..held {
            tasks.push(tokio::spawn(hold(from, target, counters.clone())));
        }
        Ok(Self { tasks, counters, config, from, ack_sockets: accounts, held })
    }

    /// Stops every flood task; what they did.
    async fn stop(self) -> serde_json::Value {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        let c = &self.counters;
        let l = self.config.limits;
        json!({
            "from": self.from.to_string(),
            "connections": {"tried_at_once": self.held, "peak_open": get(&c.conns_peak),
                "opened": get(&c.conns_opened), "closed_by_server": get(&c.conns_closed),
                "failed": get(&c.conns_failed), "cap_per_address": self.config.max_connections_per_address},
            "account_creations": {"ok": get(&c.accounts_ok), "refused": get(&c.accounts_refused),
                "failed": get(&c.accounts_failed), "burst": l.account_creation_burst,
                "per_hour": l.account_creations_per_hour},
            "device_list_reads": {"ok": get(&c.reads_ok), "not_found": get(&c.reads_not_found),
                "refused": get(&c.reads_refused), "failed": get(&c.reads_failed),
                "burst": l.address_request_burst, "per_second": l.address_requests_per_second},
            "ack_frames": {"sockets": self.ack_sockets, "frames": get(&c.ack_frames),
                "ids_per_frame": ACK_IDS, "reconnects": get(&c.ack_reconnects)},
        })
    }
}

/// The socket address of the server's URL (`http://HOST:PORT`).
async fn server_addr(url: &str) -> Result<SocketAddr, CliError> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let bad = || CliError::Usage(format!("--server {url}: expected http(s)://HOST:PORT"));
    let mut addrs = tokio::net::lookup_host(authority).await.map_err(|_| bad())?;
    addrs.next().ok_or_else(bad)
}

/// Runs the quiet and the abused load and prints one `bench_relay_abuse` line.
pub async fn run(
    args: BenchRelayArgs,
    options: &ConnectOptions,
    out: &Out,
    json: bool,
) -> Result<(), CliError> {
    let config = match &args.server_config {
        Some(path) => ServerConfig::load(path).map_err(|e| CliError::Usage(e.to_string()))?,
        None => ServerConfig::default(),
    };
    let honest = args.honest_from.clone();
    if honest.contains(&args.flood_from) {
        return Err(CliError::Usage("--flood-from must differ from every --honest-from address".into()));
    }
    let n = args.clients as usize;
    // Each honest client holds its socket and a pooled HTTP connection or two.
    let per_address = n.div_ceil(honest.len().max(1));
    if 3 * per_address > config.max_connections_per_address {
        return Err(CliError::Usage(format!(
            "{per_address} honest clients per address need up to {} connections, over the server's \
             max_connections_per_address ({}): give more --honest-from addresses",
            3 * per_address,
            config.max_connections_per_address
        )));
    }
    let honest_options = |i: usize| match honest.get(i % honest.len().max(1)) {
        Some(ip) => options.clone().with_local_address(*ip),
        None => options.clone(),
    };
    let clients = bench::register(&args, n, &format!("h{}", bench::run_id()), honest_options).await?;
    let names: Vec<String> = clients.iter().map(|c| c.name().to_owned()).collect();
    // A short unmeasured pass first, so the quiet run does not pay for a cold server.
    let warm = BenchRelayArgs { messages: WARM_UP_MESSAGES_PER_CLIENT * n as u64, ..args.clone() };
    let quiet = match bench::load(&warm, &clients).await.failure {
        Some(e) => Load { failure: Some(e), ..Load::empty() },
        None => bench::load(&args, &clients).await,
    };
    let (abused, flood) = if quiet.failure.is_none() {
        let flood = Flood::start(&args, config, names, options).await?;
        tokio::time::sleep(WARM_UP).await;
        let deadline = Duration::from_secs_f64(quiet.seconds * SLOWDOWN_LIMIT).max(MIN_DEADLINE);
        let abused = match tokio::time::timeout(deadline, bench::load(&args, &clients)).await {
            Ok(load) => load,
            Err(_) => Load {
                failure: Some(CliError::Server(format!(
                    "under abuse the honest clients had not delivered every message after {:.0} s",
                    deadline.as_secs_f64()
                ))),
                ..Load::empty()
            },
        };
        (abused, flood.stop().await)
    } else {
        (Load::empty(), json!(null))
    };
    let line = json!({"type": "bench_relay_abuse", "clients": n, "messages": args.messages, "size": args.size,
        "window": quiet.window, "honest_from": honest.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "quiet": quiet.fields(), "abuse": abused.fields(), "flood": flood});
    if json {
        out.raw(line);
    } else {
        println!(
            "quiet: {:.0} messages/s, p99 {:.2} ms; under abuse from {}: {:.0} messages/s, p99 {:.2} ms \
             ({} and {} of {} delivered)",
            quiet.rate(),
            quiet.p99_ms,
            args.flood_from,
            abused.rate(),
            abused.p99_ms,
            quiet.delivered,
            abused.delivered,
            args.messages
        );
        println!("flood: {flood}");
    }
    bench::delete_all(clients).await;
    match quiet.failure.or(abused.failure) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
