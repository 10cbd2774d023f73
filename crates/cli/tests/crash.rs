//! A crash with a real kill: `tacit server` (the binary) as a separate process, many
//! concurrent senders (HTTP and WebSocket), `SIGKILL` in the middle of the load, a restart
//! on the same storage, and then every send the server had answered as stored must be in a
//! mailbox. On SQLite and on PostgreSQL (a schema of its own).
//!
//! A killed process loses nothing the kernel already has, so this shows that "stored" is
//! answered only after the commit; that the commit reaches the disk (SQLite's
//! `synchronous=FULL`) is checked by `store::sqlite::durability_tests` in tacit-server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)] // a test file

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tacit_client::{RelayClient, RelayEvent};

/// Sender accounts; each has HTTP lanes and one WebSocket sending at once.
const SENDERS: usize = 12;
/// Concurrent `POST /v1/messages` per sender.
const HTTP_LANES: usize = 3;
/// Sends in flight on each sender's WebSocket.
const WS_WINDOW: u64 = 4;
/// Recipients (sender i sends to recipient i % RECIPIENTS).
const RECIPIENTS: usize = 4;
/// The kill comes once this many sends were answered as stored (and the load goes on).
const KILL_AFTER: usize = 1_500;
/// An envelope's size; its first 8 bytes are its unique id.
const SIZE: usize = 256;

const PG_ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `tacit server` in its own process.
struct ServerProcess {
    child: Child,
    port: u16,
}

impl ServerProcess {
    fn start(dir: &Path, port: u16, database: Option<&str>) -> Self {
        let config = dir.join("tacit.toml");
        std::fs::write(
            &config,
            "[limits]\naccount_creation_burst = 1000\nsends_per_second = 100000\nsend_burst = 100000\n",
        )
        .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tacit"));
        cmd.args(["server", "--listen", &format!("127.0.0.1:{port}"), "--config"])
            .arg(&config)
            .arg("--data")
            .arg(dir.join("data"))
            .env_remove("TACIT_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::options().create(true).append(true).open(dir.join("server.log")).unwrap());
        if let Some(url) = database {
            cmd.args(["--database", url]);
        }
        let child = cmd.spawn().unwrap();
        let mut s = Self { child, port };
        s.wait_healthy();
        s
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Polls `/healthz` until it answers 200 (at most 20 s).
    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            assert!(self.child.try_wait().unwrap().is_none(), "tacit server exited at start-up");
            if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut answer = String::new();
                let _ = c.read_to_string(&mut answer);
                if answer.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("tacit server not healthy after 20 s");
    }

    /// SIGKILL: no shutdown, no flush, no checkpoint.
    fn kill(mut self) {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert!(!status.success(), "killed, not exited: {status:?}");
    }

    /// A graceful stop (SIGTERM), which must succeed.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "tacit server did not stop cleanly: {status:?}");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn payload(id: u64) -> Vec<u8> {
    let mut v = vec![0x5a; SIZE];
    v[..8].copy_from_slice(&id.to_be_bytes());
    v
}

/// A unique envelope id: sender, lane (the WebSocket is lane `HTTP_LANES`), sequence.
fn envelope_id(sender: usize, lane: usize, seq: u64) -> u64 {
    ((sender as u64) << 48) | ((lane as u64) << 40) | seq
}

/// Sends until `stop`, recording the id of every send answered as stored.
async fn http_lane(
    client: Arc<RelayClient>,
    to: String,
    sender: usize,
    lane: usize,
    stored: Arc<Mutex<HashSet<u64>>>,
    stop: Arc<AtomicBool>,
) {
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        let id = envelope_id(sender, lane, seq);
        seq += 1;
        match client.send_opaque(&to, payload(id)).await {
            Ok(_) => {
                stored.lock().unwrap().insert(id);
            }
            // The server is gone: nothing more can be answered.
            Err(_) => return,
        }
    }
}

/// Sends over the WebSocket, `WS_WINDOW` in flight, until `stop` or the socket breaks.
async fn ws_lane(
    client: Arc<RelayClient>,
    to: String,
    sender: usize,
    stored: Arc<Mutex<HashSet<u64>>>,
    stop: Arc<AtomicBool>,
) {
    let Ok(mut stream) = client.connect().await else { return };
    let (mut sent, mut answered) = (0u64, 0u64);
    loop {
        while !stop.load(Ordering::Relaxed) && sent - answered < WS_WINDOW {
            let id = envelope_id(sender, HTTP_LANES, sent);
            if stream.queue_send(id, &to, payload(id)).await.is_err() {
                return;
            }
            sent += 1;
        }
        if stream.flush().await.is_err() {
            return;
        }
        match stream.next(Duration::from_secs(5)).await {
            Ok(Some(RelayEvent::Sent { id, .. })) => {
                stored.lock().unwrap().insert(id);
                answered += 1;
            }
            Ok(Some(RelayEvent::SendFailed { code, message, .. })) => {
                panic!("a send was refused before the kill: {code:?} {message}")
            }
            Ok(Some(RelayEvent::Envelope(_))) => {}
            Ok(None) | Err(_) => return,
        }
        if stop.load(Ordering::Relaxed) && sent == answered {
            return;
        }
    }
}

/// Everything in `client`'s mailbox, acknowledged page by page.
async fn drain(client: &RelayClient) -> Vec<u64> {
    let mut ids = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "mailbox not drained in 20 s");
        let page = match client.fetch().await {
            Ok(p) => p,
            // A pooled connection to the killed process: retry on a new one.
            Err(tacit_client::ClientError::Network(_)) => continue,
            Err(e) => panic!("fetch after restart: {e}"),
        };
        if page.envelopes.is_empty() {
            return ids;
        }
        let acks: Vec<u64> = page.envelopes.iter().map(|e| e.id).collect();
        for e in &page.envelopes {
            let head: [u8; 8] = e.content.as_slice()[..8].try_into().unwrap();
            ids.push(u64::from_be_bytes(head));
        }
        client.ack_http(acks).await.unwrap();
    }
}

/// The whole scenario against a server whose storage is `database` (SQLite in `dir` if none).
async fn kill_mid_load(database: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = ServerProcess::start(dir.path(), port, database.as_deref());
    let url = server.url();
    let run = format!("{:x}", std::process::id());
    let mut recipients = Vec::new();
    for r in 0..RECIPIENTS {
        recipients.push(RelayClient::register(&url, &format!("crash-r{r}-{run}"), None).await.unwrap());
    }
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        senders
            .push(Arc::new(RelayClient::register(&url, &format!("crash-s{s}-{run}"), None).await.unwrap()));
    }

    let stored = Arc::new(Mutex::new(HashSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut lanes = Vec::new();
    for (s, client) in senders.iter().enumerate() {
        let to = recipients[s % RECIPIENTS].name().to_owned();
        for lane in 0..HTTP_LANES {
            let (c, to, st, stop) = (client.clone(), to.clone(), stored.clone(), stop.clone());
            lanes.push(tokio::spawn(http_lane(c, to, s, lane, st, stop)));
        }
        let (c, to, st, stop) = (client.clone(), to.clone(), stored.clone(), stop.clone());
        lanes.push(tokio::spawn(ws_lane(c, to, s, st, stop)));
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while stored.lock().unwrap().len() < KILL_AFTER {
        assert!(Instant::now() < deadline, "load too slow: {} stored", stored.lock().unwrap().len());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Mid-load: every lane is sending or waiting for an answer.
    server.kill();
    let answered_before_kill = stored.lock().unwrap().len();
    stop.store(true, Ordering::Relaxed);
    for lane in lanes {
        lane.await.unwrap();
    }
    let stored = stored.lock().unwrap().clone();
    assert!(stored.len() >= answered_before_kill);

    let server = ServerProcess::start(dir.path(), port, database.as_deref());
    let mut delivered = HashSet::new();
    for r in &recipients {
        delivered.extend(drain(r).await);
    }
    let lost: Vec<_> = stored.difference(&delivered).collect();
    assert!(
        lost.is_empty(),
        "{} of {} sends answered as stored were lost: {lost:?}",
        lost.len(),
        stored.len()
    );
    // The load really was concurrent, over both transports.
    let ws = stored.iter().filter(|id| (*id >> 40) & 0xff == HTTP_LANES as u64).count();
    assert!(ws > 0 && ws < stored.len(), "{ws} of {} over the WebSocket", stored.len());
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_loses_no_stored_send_on_sqlite() {
    kill_mid_load(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_loses_no_stored_send_on_postgres() {
    let (admin, conn) = tokio_postgres::connect(PG_ADMIN, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let schema = format!("tacit_crash_{:x}_{:x}", std::process::id(), nanos & 0xffff_ffff_ffff);
    admin.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let url = format!("postgres://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}");
    kill_mid_load(Some(url)).await;
    admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
}
