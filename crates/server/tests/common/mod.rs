//! Test harness: the real server on loopback, on SQLite (a temporary folder) or PostgreSQL
//! (a schema of its own, dropped at the end), and a client made of real `tacit-protocol`
//! keys driving it with reqwest and tokio-tungstenite.
#![allow(dead_code)]

use std::sync::Arc;

use rand_core::OsRng;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tacit_api as api;
use tacit_protocol::{
    AccountIdentity, AccountName, DeviceEntry, DeviceId, DeviceIdentity, DeviceList, DevicePrekeys,
    PrekeyPolicy, PrekeyUpload, UnixTime,
};
use tacit_server::{AppState, ServeError, Server, ServerConfig};

/// Defines, for each `async fn NAME(backend: Backend)` in the including test file, a module
/// `NAME` with the tests `sqlite` and `postgres`: every store test runs on both.
#[allow(unused_macros)]
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

/// Which store a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

const PG_ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

/// A running server and what is needed to restart it on the same storage.
pub struct TestServer {
    pub base: String,
    pub ws_base: String,
    state: AppState,
    config: ServerConfig,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ServeError>>>,
    dir: Arc<tempfile::TempDir>,
    schema: Option<String>,
}

fn random_hex() -> String {
    let mut b = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut OsRng, &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub async fn pg_admin() -> tokio_postgres::Client {
    let (client, conn) =
        tokio_postgres::connect(PG_ADMIN, tokio_postgres::NoTls).await.expect("PostgreSQL at 127.0.0.1:5432");
    tokio::spawn(conn);
    client
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let mut config = ServerConfig::default();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.data_dir = dir.path().join("data");
        config.shutdown_grace_secs = 2;
        let mut schema = None;
        if backend == Backend::Postgres {
            let name = format!("tacit_test_{}", random_hex());
            pg_admin().await.batch_execute(&format!("CREATE SCHEMA {name}")).await.unwrap();
            config.database_url =
                Some(format!("postgres://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{name}"));
            schema = Some(name);
        }
        tweak(&mut config);
        Self::launch(config, dir, schema).await
    }

    async fn launch(config: ServerConfig, dir: Arc<tempfile::TempDir>, schema: Option<String>) -> Self {
        let server = Server::bind(config.clone()).await.unwrap();
        let addr = server.local_addr();
        let state = server.state().clone();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        Self {
            base: format!("http://{addr}"),
            ws_base: format!("ws://{addr}"),
            state,
            config,
            stop: Some(stop),
            task: Some(task),
            dir,
            schema,
        }
    }

    /// Graceful shutdown; waits until the store is closed.
    pub async fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }

    /// Stops and starts a new server on the same storage (new port).
    pub async fn restart(mut self) -> Self {
        self.shutdown().await;
        let config = self.config.clone();
        let dir = self.dir.clone();
        let schema = self.schema.take();
        Self::launch(config, dir, schema).await
    }

    /// Stops and starts a new server on the same storage with `tweak` applied to its
    /// configuration.
    pub async fn restart_with(mut self, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        self.shutdown().await;
        let mut config = self.config.clone();
        tweak(&mut config);
        let dir = self.dir.clone();
        let schema = self.schema.take();
        Self::launch(config, dir, schema).await
    }

    /// The SQLite data folder.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.config.data_dir.clone()
    }

    /// The PostgreSQL schema of this server (PostgreSQL only).
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Stops the server and drops its PostgreSQL schema.
    pub async fn finish(mut self) {
        self.shutdown().await;
        if let Some(name) = self.schema.take() {
            pg_admin().await.batch_execute(&format!("DROP SCHEMA {name} CASCADE")).await.unwrap();
        }
    }

    /// The running server's state (its store, for tests that break it on purpose).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// `GET /healthz`: the status and the stable code of an error body (empty when 200).
    pub async fn healthz(&self) -> (u16, String) {
        let r = reqwest::get(format!("{}{}", self.base, api::HEALTHZ)).await.unwrap();
        let status = r.status().as_u16();
        let code = if status == 200 {
            String::new()
        } else {
            r.json::<serde_json::Value>().await.unwrap()["code"].as_str().unwrap_or_default().to_owned()
        };
        (status, code)
    }

    pub fn http(&self) -> Http {
        Http { base: self.base.clone(), client: reqwest::Client::new() }
    }
}

/// A thin JSON client that sets the version header.
#[derive(Clone)]
pub struct Http {
    pub base: String,
    pub client: reqwest::Client,
}

impl Http {
    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let mut r =
            self.client.request(method, format!("{}{}", self.base, path)).header(api::VERSION_HEADER, "1");
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r
    }

    /// Sends `body` and returns the status and the body as JSON (Null when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&impl Serialize>,
    ) -> (StatusCode, serde_json::Value) {
        let mut r = self.request(method, path, token);
        if let Some(b) = body {
            r = r.json(b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap();
        let json =
            if bytes.is_empty() { serde_json::Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        (status, json)
    }

    pub async fn ok<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&impl Serialize>,
    ) -> T {
        let (status, json) = self.call(method, path, token, body).await;
        assert!(status.is_success(), "{path}: {status} {json}");
        serde_json::from_value(json).unwrap()
    }
}

/// Asserts a failure with a stable code.
pub fn assert_code(got: (StatusCode, serde_json::Value), status: u16, code: &str) {
    assert_eq!(got.0.as_u16(), status, "{}", got.1);
    assert_eq!(got.1["code"], code, "{}", got.1);
}

pub const NONE: Option<&()> = None;

/// One account with one device, made of real keys.
pub struct User {
    pub name: String,
    pub account: AccountIdentity,
    pub device: DeviceIdentity,
    pub list: DeviceList,
    pub prekeys: DevicePrekeys,
    pub token: String,
}

pub fn policy(one_time: u32) -> PrekeyPolicy {
    PrekeyPolicy { one_time_target: one_time, one_time_low_water: one_time, ..PrekeyPolicy::default() }
}

pub fn upload_request(u: &PrekeyUpload) -> api::PrekeyUploadRequest {
    api::PrekeyUploadRequest {
        signed_prekey: u.signed_prekey.as_ref().map(|k| k.to_bytes().into()),
        last_resort: u.last_resort.as_ref().map(|k| k.to_bytes().into()),
        one_time: u.one_time.iter().map(|k| k.to_bytes().into()).collect(),
        kem_one_time: u.kem_one_time.iter().map(|k| k.to_bytes().into()).collect(),
        one_time_ids: None,
        kem_one_time_ids: None,
        state_counter: None,
    }
}

/// Signs with the device's Ed25519 key. `tacit-protocol` keeps the signing key private, so
/// the test reads the seed from the documented state encoding (14-byte header, then the
/// 32-byte seed) and signs with AWS-LC.
pub fn device_sign(device: &DeviceIdentity, message: &[u8]) -> Vec<u8> {
    let bytes = device.to_bytes();
    let seed = &bytes[14..46];
    let pair = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(seed).unwrap();
    pair.sign(message).as_ref().to_vec()
}

impl User {
    /// Makes keys and the account creation request (not sent).
    pub fn new_request(name: &str, one_time: u32) -> (Self, api::CreateAccountRequest) {
        let account = AccountIdentity::generate(&mut OsRng).unwrap();
        let device = DeviceIdentity::generate(&mut OsRng).unwrap();
        let an = AccountName::new(name).unwrap();
        let list = DeviceList::sign(
            &account,
            an,
            1,
            vec![DeviceEntry {
                approver: true,
                ..DeviceEntry::new(DeviceId::new(1).unwrap(), device.public().clone())
            }],
        )
        .unwrap();
        let mut prekeys = DevicePrekeys::new();
        let now = UnixTime(1_700_000_000);
        let plan = prekeys.plan(now, &policy(one_time), 0, 0);
        let upload = prekeys.execute(&mut OsRng, &device, now, &plan).unwrap();
        let req = api::CreateAccountRequest {
            name: name.into(),
            account_key: account.public().as_bytes().to_vec().into(),
            device_list: list.to_bytes().into(),
            registration_token: None,
            prekeys: upload_request(&upload),
        };
        (Self { name: name.into(), account, device, list, prekeys, token: String::new() }, req)
    }

    /// Creates the account and logs in.
    pub async fn register(http: &Http, name: &str, one_time: u32) -> Self {
        let (mut u, req) = Self::new_request(name, one_time);
        let r: api::CreateAccountResponse = http.ok(Method::POST, api::ACCOUNTS, None, Some(&req)).await;
        assert_eq!(r.device, 1);
        u.token = u.login(http).await;
        u
    }

    pub async fn challenge(&self, http: &Http) -> api::ChallengeResponse {
        http.ok(
            Method::POST,
            api::AUTH_CHALLENGE,
            None,
            Some(&api::ChallengeRequest { account: self.name.clone(), device: 1 }),
        )
        .await
    }

    pub fn answer(&self, c: &api::ChallengeResponse) -> api::SessionRequest {
        let msg = api::auth_message(&c.origin, &self.name, 1, c.challenge.as_slice());
        api::SessionRequest {
            account: self.name.clone(),
            device: 1,
            challenge: c.challenge.clone(),
            signature: device_sign(&self.device, &msg).into(),
        }
    }

    pub async fn login(&self, http: &Http) -> String {
        let c = self.challenge(http).await;
        let s: api::SessionResponse =
            http.ok(Method::POST, api::AUTH_SESSION, None, Some(&self.answer(&c))).await;
        s.token
    }

    pub fn tok(&self) -> Option<&str> {
        Some(&self.token)
    }

    pub async fn send(
        &self,
        http: &Http,
        to: &str,
        devices: &[u32],
        content: &[u8],
    ) -> (StatusCode, serde_json::Value) {
        let req = api::SendRequest {
            recipient: to.into(),
            envelopes: devices
                .iter()
                .map(|&d| api::OutgoingEnvelope { device: d, content: content.to_vec().into() })
                .collect(),
            idempotency_key: None,
            state_counter: None,
        };
        http.call(Method::POST, api::MESSAGES, self.tok(), Some(&req)).await
    }

    pub async fn fetch(&self, http: &Http) -> api::FetchResponse {
        http.ok(Method::GET, api::MESSAGES, self.tok(), NONE).await
    }
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", &random_hex()[..6])
}

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the WebSocket with a bearer token.
pub async fn ws_connect(
    server: &TestServer,
    token: Option<&str>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("{}{}", server.ws_base, api::WEBSOCKET).into_client_request().unwrap();
    req.headers_mut().insert(api::VERSION_HEADER, "1".parse().unwrap());
    if let Some(t) = token {
        req.headers_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(req).await.map(|(ws, _)| ws)
}

/// The next server frame (fails the test after 5 s).
pub async fn next_frame(ws: &mut Ws) -> api::ServerFrame {
    use futures_util::StreamExt;
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .expect("frame within 5 s")
            .expect("socket open")
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

pub async fn ws_ack(ws: &mut Ws, ids: Vec<u64>) {
    use futures_util::SinkExt;
    let text = serde_json::to_string(&api::ClientFrame::Ack { ids, state_counter: None }).unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::Text(text.into())).await.unwrap();
}

/// Writes a `send` frame (not flushed answers: read them with [`next_frame`]).
pub async fn ws_send(ws: &mut Ws, id: u64, to: &str, devices: &[u32], content: &[u8]) {
    use futures_util::SinkExt;
    let frame = api::ClientFrame::Send {
        id,
        recipient: to.into(),
        envelopes: devices
            .iter()
            .map(|&d| api::OutgoingEnvelope { device: d, content: content.to_vec().into() })
            .collect(),
        idempotency_key: None,
        state_counter: None,
    };
    let text = serde_json::to_string(&frame).unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::Text(text.into())).await.unwrap();
}

/// The close code the server ends the socket with (fails the test after 5 s without one).
pub async fn close_code(ws: &mut Ws) -> u16 {
    use futures_util::StreamExt;
    while let Ok(Some(m)) = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await {
        match m {
            Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f))) => return u16::from(f.code),
            Ok(_) => {}
            Err(e) => panic!("socket failed before a close frame: {e}"),
        }
    }
    panic!("no close frame within 5 s");
}

/// Waits for the socket to end: the close code, or `None` when it ended without one.
pub async fn ws_closed(ws: &mut Ws) -> Option<u16> {
    use futures_util::StreamExt;
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .expect("closed within 5 s")
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f))) => {
                return f.map(|f| u16::from(f.code));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}
