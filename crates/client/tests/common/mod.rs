//! Test harness: the real server on loopback, on SQLite (a temporary folder) or PostgreSQL
//! (a schema of its own, dropped by [`Relay::stop`]), in plain HTTP or in HTTPS with a
//! throwaway CA made by `scripts/test-certs`. The integration tests include it as `mod
//! common`; the SDK's own tests that need its internals include it with `#[path]`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // test code

use std::path::{Path, PathBuf};

use tacit_client::{Client, StoreSecret};
use tacit_server::{ServeError, Server, ServerConfig};
use tokio::sync::oneshot;

/// Which store the server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Defines, for each `async fn NAME(backend: Backend)` in the including module, a module
/// `NAME` with the tests `sqlite` and `postgres` (as the server's tests do).
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::Backend::Postgres).await
            }
        }
    )*};
}

const PG_ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

pub async fn pg_admin() -> tokio_postgres::Client {
    let (client, conn) =
        tokio_postgres::connect(PG_ADMIN, tokio_postgres::NoTls).await.expect("PostgreSQL at 127.0.0.1:5432");
    tokio::spawn(conn);
    client
}

fn random_hex() -> String {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// PEM files of a throwaway PKI (`scripts/test-certs`): a CA, a server certificate it
/// signed for `127.0.0.1` and `localhost`, and an unrelated CA.
pub struct Certs {
    /// The CA that signed the server's certificate.
    pub ca: PathBuf,
    /// A CA that signed nothing the server presents.
    pub other_ca: PathBuf,
    /// The server's certificate chain and key.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl Certs {
    /// Makes the files in `dir` with the `openssl` command.
    pub fn make(dir: &Path) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-certs");
        let out = std::process::Command::new("bash").arg(&script).arg(dir).output().unwrap();
        assert!(out.status.success(), "{}: {}", script.display(), String::from_utf8_lossy(&out.stderr));
        Self {
            ca: dir.join("ca.pem"),
            other_ca: dir.join("other-ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        }
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(&self.ca).unwrap()
    }

    pub fn other_ca_pem(&self) -> Vec<u8> {
        std::fs::read(&self.other_ca).unwrap()
    }
}

/// A running server, restartable on the same storage and port.
pub struct Relay {
    /// `http://127.0.0.1:PORT`, or `https://` with TLS.
    pub url: String,
    config: ServerConfig,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ServeError>>>,
    schema: Option<String>,
    certs: Option<Certs>,
    dir: tempfile::TempDir,
    state: Option<tacit_server::AppState>,
}

impl Relay {
    /// Plain HTTP.
    pub async fn start(backend: Backend) -> Self {
        Self::start_inner(backend, false, |_| {}).await
    }

    /// Plain HTTP or HTTPS, with a configuration tweak (applied last).
    pub async fn start_with(backend: Backend, tls: bool, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        Self::start_inner(backend, tls, tweak).await
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.config.listen.port()
    }

    /// HTTPS with a certificate from a fresh throwaway CA ([`Self::certs`]).
    pub async fn start_tls(backend: Backend) -> Self {
        Self::start_inner(backend, true, |_| {}).await
    }

    async fn start_inner(backend: Backend, tls: bool, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::default();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.data_dir = dir.path().join("server");
        config.shutdown_grace_secs = 2;
        // Key transparency epochs every 50 ms: a new account or device is visible at once.
        config.kt_epoch_interval_ms = 50;
        let mut schema = None;
        if backend == Backend::Postgres {
            let name = format!("tacit_client_test_{}", random_hex());
            pg_admin().await.batch_execute(&format!("CREATE SCHEMA {name}")).await.unwrap();
            config.database_url =
                Some(format!("postgres://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{name}"));
            schema = Some(name);
        }
        let certs = tls.then(|| {
            let certs = Certs::make(&dir.path().join("tls"));
            config.tls_cert = Some(certs.server_cert.clone());
            config.tls_key = Some(certs.server_key.clone());
            certs
        });
        tweak(&mut config);
        let mut relay =
            Self { url: String::new(), config, stop: None, task: None, schema, certs, dir, state: None };
        relay.launch().await;
        relay
    }

    /// Binds the configured address (the first time port 0, then the port it got).
    async fn launch(&mut self) {
        let server = Server::bind(self.config.clone()).await.unwrap();
        self.state = Some(server.state().clone());
        let addr = server.local_addr();
        self.config.listen = addr;
        let scheme = if self.config.tls_cert.is_some() { "https" } else { "http" };
        self.url = format!("{scheme}://{addr}");
        let (stop, stopped) = oneshot::channel::<()>();
        self.stop = Some(stop);
        self.task = Some(tokio::spawn(server.run(async move {
            let _ = stopped.await;
        })));
    }

    /// The throwaway PKI of a TLS server.
    pub fn certs(&self) -> &Certs {
        self.certs.as_ref().expect("a TLS relay")
    }

    /// Graceful shutdown (WebSockets are closed "going away"); waits for the store to close.
    async fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }

    /// Stops the server and starts a new one on the same storage and the same port, so
    /// clients keep their server URL.
    pub async fn restart(&mut self) {
        self.shutdown().await;
        self.launch().await;
    }

    /// Stops the server, keeping its storage (see [`Self::resume`]).
    pub async fn pause(&mut self) {
        self.shutdown().await;
    }

    /// Starts the server again after [`Self::pause`], on the same storage and port.
    pub async fn resume(&mut self) {
        self.launch().await;
    }

    /// The running server's state (its key transparency directory, the lying directory of
    /// the malicious-server tests).
    pub fn state(&self) -> &tacit_server::AppState {
        self.state.as_ref().expect("a running relay")
    }

    /// The SQLite data folder of the server.
    pub fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }

    /// The server's PostgreSQL schema (PostgreSQL only).
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Stops the server and drops its PostgreSQL schema.
    pub async fn stop(mut self) {
        self.shutdown().await;
        if let Some(name) = self.schema.take() {
            pg_admin().await.batch_execute(&format!("DROP SCHEMA {name} CASCADE")).await.unwrap();
        }
    }
}

/// Creates account `name` on `relay`, its store in `home` (no passphrase).
pub async fn account(relay: &Relay, home: &Path, name: &str) -> Client {
    Client::create_account(home, StoreSecret::NoPassphrase, &relay.url, name, None).await.unwrap()
}

/// The texts of the conversation with `peer`, oldest first.
pub fn texts(c: &Client, peer: &str) -> Vec<String> {
    c.history(peer).unwrap().into_iter().map(|e| e.text).collect()
}

/// Links a second device into `primary`'s account.
pub async fn link(relay: &Relay, primary: &mut Client, home: &std::path::Path) -> Client {
    let (tx, rx) = tokio::sync::oneshot::channel::<String>();
    let mut tx = Some(tx);
    let mut events = move |e: tacit_client::LinkEvent| {
        if let tacit_client::LinkEvent::Code { code, .. } = e
            && let Some(tx) = tx.take()
        {
            let _ = tx.send(code);
        }
    };
    let url = relay.url.clone();
    let options = tacit_client::ConnectOptions::default();
    let linking = Client::link_device(
        home,
        tacit_client::StoreSecret::NoPassphrase,
        &url,
        "laptop",
        false,
        &options,
        &mut events,
    );
    let approving = async {
        let code = rx.await.unwrap();
        primary
            .approve_device(
                &code,
                tacit_client::ApproveOptions { approver: false, history: false },
                &mut |_: &tacit_client::NewDevice| true,
                &mut |_: u64, _: u64| {},
            )
            .await
    };
    let (linked, approved) = tokio::join!(linking, approving);
    approved.unwrap();
    linked.unwrap()
}
