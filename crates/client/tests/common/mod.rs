//! Test harness: the real server on loopback, on SQLite (a temporary folder) or PostgreSQL
//! (a schema of its own, dropped by [`Relay::stop`]). The integration tests include it as
//! `mod common`; the SDK's own tests that need its internals include it with `#[path]`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // test code

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

async fn pg_admin() -> tokio_postgres::Client {
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

/// A running server, restartable on the same storage and port.
pub struct Relay {
    /// `http://127.0.0.1:PORT`, or `https://` with TLS.
    pub url: String,
    config: ServerConfig,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ServeError>>>,
    schema: Option<String>,
    dir: tempfile::TempDir,
}

impl Relay {
    pub async fn start(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::default();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.data_dir = dir.path().join("server");
        config.shutdown_grace_secs = 2;
        let mut schema = None;
        if backend == Backend::Postgres {
            let name = format!("tacit_client_test_{}", random_hex());
            pg_admin().await.batch_execute(&format!("CREATE SCHEMA {name}")).await.unwrap();
            config.database_url =
                Some(format!("postgres://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{name}"));
            schema = Some(name);
        }
        let mut relay = Self { url: String::new(), config, stop: None, task: None, schema, dir };
        relay.launch().await;
        relay
    }

    /// Binds the configured address (the first time port 0, then the port it got).
    async fn launch(&mut self) {
        let server = Server::bind(self.config.clone()).await.unwrap();
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

    /// Stops the server and drops its PostgreSQL schema.
    pub async fn stop(mut self) {
        self.shutdown().await;
        if let Some(name) = self.schema.take() {
            pg_admin().await.batch_execute(&format!("DROP SCHEMA {name} CASCADE")).await.unwrap();
        }
    }
}
