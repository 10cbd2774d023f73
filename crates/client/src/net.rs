//! HTTP (reqwest, rustls) and WebSocket (tokio-tungstenite) access to a Tacit server,
//! speaking `tacit-api` exactly. Every request carries the protocol version header. HTTPS and
//! WSS verify the server with the platform verifier, trusting the system's roots and the
//! [`ConnectOptions`]' extra ones.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tacit_api as api;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use zeroize::Zeroizing;

use crate::error::{ClientError, Result};

/// Most characters of a refused origin shown in an error.
const MAX_SHOWN_ORIGIN: usize = 200;

/// How long one HTTP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts at a send that carries an idempotency key, when the server answers `503` or
/// the answer is lost (the same request again: the server stores it at most once).
const SEND_ATTEMPTS: u32 = 3;
/// The wait before the second attempt (doubled before each further one).
const SEND_RETRY_WAIT: Duration = Duration::from_millis(250);

/// How to reach a server, beyond its URL.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct ConnectOptions {
    extra_roots: Vec<CertificateDer<'static>>,
    /// Plain `http://` to a host other than this machine is allowed.
    remote_plain_http: bool,
    local_address: Option<std::net::IpAddr>,
    /// The server's key transparency key as the user knows it out of band (`--kt-key`).
    transparency_key: Option<[u8; 32]>,
    /// Auditors whose cosignatures lookups must carry (`--require-auditor`), validated.
    required_auditors: Option<crate::transparency::RequiredAuditors>,
}

impl ConnectOptions {
    /// Also trusts the certificate authorities in `pem` (one or more `CERTIFICATE` blocks),
    /// besides the system's: for a server whose certificate comes from a private CA. Applies
    /// to HTTPS and to the WebSocket alike.
    pub fn with_extra_roots_pem(mut self, pem: &[u8]) -> Result<Self> {
        let bad = |why: String| ClientError::BadCertificate(why);
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no CERTIFICATE block in the PEM text".into()));
        }
        // Refuse what cannot be a trust anchor now rather than at the first connection.
        let mut check = rustls::RootCertStore::empty();
        for c in &certs {
            check.add(c.clone()).map_err(|e| bad(e.to_string()))?;
        }
        self.extra_roots.extend(certs);
        Ok(self)
    }

    /// Allows plain `http://` to a host that is not this machine (refused by default with
    /// [`ClientError::InsecureHttp`]: a session token on that wire lets anyone on the path act
    /// as the device, delete the account included). Loopback needs no permission.
    pub fn allow_remote_plain_http(mut self, allow: bool) -> Self {
        self.remote_plain_http = allow;
        self
    }

    /// Connects from `address` (HTTP and the WebSocket alike) instead of letting the system
    /// choose: for load generators that must appear as distinct clients on loopback
    /// (`tacit bench relay --abuse` binds its flooder to 127.0.0.2).
    pub fn with_local_address(mut self, address: std::net::IpAddr) -> Self {
        self.local_address = Some(address);
        self
    }

    /// Requires the server's key transparency key to be `key` (given out of band): a device
    /// refuses a server, or a pinned key, that differs ([`ClientError::Transparency`]).
    pub fn with_transparency_key(mut self, key: [u8; 32]) -> Self {
        self.transparency_key = Some(key);
        self
    }

    /// Requires, before anything is encrypted to another account's keys, cosignatures of
    /// the root its lookup proof verifies against from at least `threshold` of `auditors`
    /// (`--require-auditor HEX`, repeatable, and `--auditor-threshold N`; default: all of
    /// them): see [`crate::Client::require_auditors`]. A root not cosigned yet is asked for
    /// again for up to 10 s. [`ClientError::BadAuditors`] for a key that is not one or a
    /// threshold of none or more than the keys.
    pub fn with_required_auditors(mut self, auditors: &[[u8; 32]], threshold: Option<usize>) -> Result<Self> {
        let threshold = threshold.unwrap_or(auditors.len());
        self.required_auditors = Some(crate::transparency::RequiredAuditors::new(
            auditors,
            threshold,
            crate::transparency::AUDITOR_WAIT,
        )?);
        Ok(self)
    }

    /// [`Self::with_required_auditors`]'s auditors.
    pub(crate) fn required_auditors(&self) -> Option<crate::transparency::RequiredAuditors> {
        self.required_auditors.clone()
    }

    /// [`Self::with_transparency_key`]'s key.
    pub(crate) fn transparency_key(&self) -> Option<[u8; 32]> {
        self.transparency_key
    }
}

impl core::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("extra_roots", &self.extra_roots.len())
            .field("remote_plain_http", &self.remote_plain_http)
            .field("local_address", &self.local_address)
            .field("transparency_key", &self.transparency_key.is_some())
            .field("required_auditors", &self.required_auditors.as_ref().map(|a| a.threshold))
            .finish()
    }
}

/// A link slot id as its path form (32 lowercase hex characters).
fn hex16(b: &[u8; 16]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A bearer token (secret to this server). Never printed.
struct Token(Zeroizing<String>);

/// The outcome of a send.
pub(crate) enum SendOutcome {
    /// Stored in every recipient mailbox.
    Sent(api::SendResponse),
    /// `409`: the device set changed.
    Mismatched(api::MismatchedDevices),
    /// `410`: devices were re-registered.
    Stale(api::StaleDevices),
}

/// A connection to one server.
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<Token>,
    extra_roots: Vec<CertificateDer<'static>>,
    /// The host of a remote `http://` base the caller did not allow: every request fails
    /// before anything is sent (offline commands still work).
    refused_plain_http: Option<String>,
    local_address: Option<std::net::IpAddr>,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A live WebSocket receiving envelopes.
pub(crate) struct Live {
    ws: Ws,
}

/// What the WebSocket delivered to the caller: an envelope or the answer to a send made over
/// the socket. The socket's own type (`Incoming` wraps it), re-exported by
/// [`crate::relay`] for the bench client.
#[derive(Debug)]
pub enum RelayEvent {
    /// An envelope for this device (acknowledge it once handled).
    Envelope(api::Envelope),
    /// A send queued on this socket is stored.
    Sent {
        /// Its request id.
        id: u64,
        /// The server's acceptance time, milliseconds since the Unix epoch.
        server_time_ms: u64,
    },
    /// A send queued on this socket was refused.
    SendFailed {
        /// Its request id.
        id: u64,
        /// The stable code (`rate_limited` may be retried later).
        code: api::ErrorCode,
        /// The server's explanation.
        message: String,
    },
}

/// What the WebSocket delivered.
pub(crate) enum Incoming {
    /// An envelope, or the answer to a send made over the socket.
    Event(RelayEvent),
    /// Everything stored at connection time has been sent.
    Drained,
    /// The server says this device is running low on one-time prekeys: refill.
    PrekeysLow,
    /// The server closed the connection.
    Closed,
}

impl Api {
    /// A client for the server at `base` (`http://` or `https://`, no trailing slash needed).
    pub(crate) fn new(base: &str, options: &ConnectOptions) -> Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        crate::origin::check_server_url(&base)?;
        let extra = options.extra_roots.iter().map(|c| reqwest::Certificate::from_der(c));
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            // Below the server's 20 s idle cut-off, so a pooled connection is not reused just
            // as the server closes it.
            .pool_idle_timeout(Duration::from_secs(15))
            .user_agent(concat!("tacit-client/", env!("CARGO_PKG_VERSION")))
            .tls_certs_merge(extra.collect::<Result<Vec<_>, _>>()?)
            .local_address(options.local_address)
            .build()?;
        let refused_plain_http =
            if options.remote_plain_http { None } else { crate::origin::remote_plain_http_host(&base) };
        Ok(Self {
            http,
            base,
            token: None,
            extra_roots: options.extra_roots.clone(),
            refused_plain_http,
            local_address: options.local_address,
        })
    }

    /// An HTTP client for public data outside a Tacit server's API (an akd log published at
    /// a URL): the same TLS roots and timeouts, no token ever.
    pub(crate) fn plain_client(options: &ConnectOptions) -> Result<reqwest::Client> {
        let extra = options.extra_roots.iter().map(|c| reqwest::Certificate::from_der(c));
        Ok(reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("tacit-client/", env!("CARGO_PKG_VERSION")))
            .tls_certs_merge(extra.collect::<Result<Vec<_>, _>>()?)
            .local_address(options.local_address)
            .build()?)
    }

    /// Refuses to send anything over plain HTTP to a remote host the caller did not allow.
    pub(crate) fn check_transport(&self) -> Result<()> {
        match &self.refused_plain_http {
            Some(host) => Err(ClientError::InsecureHttp(host.clone())),
            None => Ok(()),
        }
    }

    /// The TLS configuration of `wss://`: what reqwest does for HTTPS (rustls with AWS-LC,
    /// the platform verifier with the extra roots). Built per connection, as
    /// tokio-tungstenite would, since it loads the system's roots.
    fn websocket_tls(&self) -> Result<Arc<rustls::ClientConfig>> {
        let tls = |e: rustls::Error| ClientError::Network(format!("TLS setup: {e}"));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(
            self.extra_roots.clone(),
            provider.clone(),
        )
        .map_err(tls)?;
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls)?
            // Not a way around verification: the platform verifier is the verification.
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(Arc::new(config))
    }

    /// The server's base URL.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// Drops the session token: the next call signs in again.
    pub(crate) fn forget_token(&mut self) {
        self.token = None;
    }

    /// Whether a session token is held.
    pub(crate) fn is_authenticated(&self) -> bool {
        self.token.is_some()
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(api::VERSION_HEADER, api::PROTOCOL_VERSION.to_string());
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t.0.as_str());
        }
        rb
    }

    async fn error(resp: reqwest::Response) -> ClientError {
        let status = resp.status();
        let body = resp.bytes().await.unwrap_or_default();
        let parsed: Option<api::ApiError> = serde_json::from_slice(&body).ok();
        let (code, message) = match parsed {
            Some(e) => (Some(e.code), e.message),
            None => match serde_json::from_slice::<api::GroupEpochConflict>(&body) {
                Ok(c) => (Some(c.code), format!("the group is in epoch {} at the server", c.epoch)),
                Err(_) => (None, String::from_utf8_lossy(body.get(..200).unwrap_or(&body)).into_owned()),
            },
        };
        if status == StatusCode::NOT_FOUND || code == Some(api::ErrorCode::NotFound) {
            return ClientError::NotFound(message);
        }
        ClientError::Server { status: status.as_u16(), code, message }
    }

    /// Sends a request with an optional JSON body; a non-success status becomes the
    /// server's typed error.
    async fn send_checked<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<reqwest::Response> {
        self.check_transport()?;
        let mut rb = self.request(method, path);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = rb.send().await?;
        if !resp.status().is_success() {
            return Err(Self::error(resp).await);
        }
        Ok(resp)
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        Ok(self.send_checked(method, path, body).await?.json().await?)
    }

    async fn call_empty<B: Serialize>(&self, method: Method, path: &str, body: Option<&B>) -> Result<()> {
        self.send_checked(method, path, body).await.map(drop)
    }

    /// `POST /v1/accounts`.
    pub(crate) async fn create_account(
        &self,
        req: &api::CreateAccountRequest,
    ) -> Result<api::CreateAccountResponse> {
        self.call(Method::POST, api::ACCOUNTS, Some(req)).await
    }

    /// `DELETE /v1/accounts/{name}`.
    pub(crate) async fn delete_account(&self, name: &str) -> Result<()> {
        self.call_empty::<()>(Method::DELETE, &api::ACCOUNT.replace("{name}", name), None).await
    }

    /// `GET /v1/accounts/{name}/devices`.
    pub(crate) async fn device_list(&self, name: &str) -> Result<Vec<u8>> {
        let r: api::DeviceListResponse =
            self.call::<(), _>(Method::GET, &api::DEVICE_LIST.replace("{name}", name), None).await?;
        Ok(r.device_list.0)
    }

    /// `GET /v1/kt`: the key transparency directory's keys and newest epoch.
    pub(crate) async fn kt_info(&self) -> Result<api::KtInfo> {
        self.call::<(), _>(Method::GET, api::KT, None).await
    }

    /// `GET /v1/kt/lookup/{name}`: `None` when the account is not in the directory yet.
    pub(crate) async fn kt_lookup(&self, name: &str) -> Result<Option<api::KtProofResponse>> {
        match self.call::<(), _>(Method::GET, &api::KT_LOOKUP.replace("{name}", name), None).await {
            Err(ClientError::NotFound(_)) => Ok(None),
            r => r.map(Some),
        }
    }

    /// `GET /v1/kt/epochs/{epoch}`: one signed root (`None`: no such epoch).
    pub(crate) async fn kt_epoch(&self, epoch: u64) -> Result<Option<api::SignedRootWire>> {
        match self
            .call::<(), _>(Method::GET, &api::KT_EPOCH.replace("{epoch}", &epoch.to_string()), None)
            .await
        {
            Err(ClientError::NotFound(_)) => Ok(None),
            r => r.map(Some),
        }
    }

    /// `GET /v1/kt/epochs/{epoch}/audit`: the append-only proof into `epoch` (`None`: none).
    pub(crate) async fn kt_audit(&self, epoch: u64) -> Result<Option<Vec<u8>>> {
        let path = api::KT_AUDIT.replace("{epoch}", &epoch.to_string());
        match self.send_checked::<()>(Method::GET, &path, None).await {
            Err(ClientError::NotFound(_)) => Ok(None),
            r => Ok(Some(r?.bytes().await?.to_vec())),
        }
    }

    /// `PUT /v1/kt/epochs/{epoch}/cosignatures`: an auditor's cosignature of the root.
    pub(crate) async fn kt_cosign(&self, epoch: u64, c: &api::KtCosignatureWire) -> Result<()> {
        let path = api::KT_COSIGNATURES.replace("{epoch}", &epoch.to_string());
        self.call_empty(Method::PUT, &path, Some(c)).await
    }

    /// `GET /v1/kt/history/{name}`.
    pub(crate) async fn kt_history(&self, name: &str) -> Result<api::KtProofResponse> {
        self.call::<(), _>(Method::GET, &api::KT_HISTORY.replace("{name}", name), None).await
    }

    /// `GET /v1/accounts/{name}/rotations?after=VERSION`: a page of the account's key
    /// rotations.
    pub(crate) async fn rotations(&self, name: &str, after: u64) -> Result<api::RotationsResponse> {
        let path = format!("{}?after={after}", api::ROTATIONS.replace("{name}", name));
        self.call::<(), _>(Method::GET, &path, None).await
    }

    /// Challenge, sign, session: holds the token afterwards, and returns the device's state
    /// counter as the server recorded it (`None` from a server that keeps none). The origin
    /// the server asks us to sign must be the one we dialled, or a server could relay
    /// another server's challenge and sign in there as us ([`ClientError::WrongOrigin`]).
    pub(crate) async fn authenticate(
        &mut self,
        account: &str,
        device: u32,
        sign: impl FnOnce(&[u8]) -> Result<Vec<u8>>,
    ) -> Result<Option<u64>> {
        let ch: api::ChallengeResponse = self
            .call(
                Method::POST,
                api::AUTH_CHALLENGE,
                Some(&api::ChallengeRequest { account: account.into(), device }),
            )
            .await?;
        if !crate::origin::same(&self.base, &ch.origin) {
            return Err(ClientError::WrongOrigin {
                dialled: crate::origin::normalized(&self.base).unwrap_or_else(|| self.base.clone()),
                // Bounded and without control characters: the server's text is shown to the user.
                signed: ch.origin.chars().filter(|c| !c.is_control()).take(MAX_SHOWN_ORIGIN).collect(),
            });
        }
        let message = api::auth_message(&ch.origin, account, device, ch.challenge.as_slice());
        let signature = sign(&message)?;
        let req = api::SessionRequest {
            account: account.into(),
            device,
            challenge: ch.challenge,
            signature: api::Bytes(signature),
        };
        let s: api::SessionResponse = self.call(Method::POST, api::AUTH_SESSION, Some(&req)).await?;
        self.token = Some(Token(Zeroizing::new(s.token)));
        Ok(s.state_counter)
    }

    /// `GET /v1/keys`.
    pub(crate) async fn prekey_status(&self) -> Result<api::PrekeyStatus> {
        self.call::<(), _>(Method::GET, api::PREKEYS, None).await
    }

    /// `PUT /v1/keys`.
    pub(crate) async fn upload_prekeys(&self, req: &api::PrekeyUploadRequest) -> Result<api::PrekeyStatus> {
        self.call(Method::PUT, api::PREKEYS, Some(req)).await
    }

    /// `GET /v1/keys/{name}/{device}`.
    pub(crate) async fn bundle(&self, name: &str, device: u32) -> Result<Vec<u8>> {
        let path = api::BUNDLE.replace("{name}", name).replace("{device}", &device.to_string());
        let r: api::BundleResponse = self.call::<(), _>(Method::GET, &path, None).await?;
        Ok(r.bundle.0)
    }

    /// `GET /v1/key-packages`.
    pub(crate) async fn key_package_status(&self) -> Result<api::KeyPackageStatus> {
        self.call::<(), _>(Method::GET, api::KEY_PACKAGES, None).await
    }

    /// `PUT /v1/key-packages`.
    pub(crate) async fn upload_key_packages(
        &self,
        req: &api::KeyPackageUpload,
    ) -> Result<api::KeyPackageStatus> {
        self.call(Method::PUT, api::KEY_PACKAGES, Some(req)).await
    }

    /// `GET /v1/key-packages/{name}/{device}`.
    pub(crate) async fn take_key_package(&self, name: &str, device: u32) -> Result<api::KeyPackageResponse> {
        let path = api::KEY_PACKAGE.replace("{name}", name).replace("{device}", &device.to_string());
        self.call::<(), _>(Method::GET, &path, None).await
    }

    /// `POST /v1/key-packages/claim`.
    pub(crate) async fn claim_key_packages(
        &self,
        req: &api::KeyPackageClaim,
    ) -> Result<api::KeyPackageClaimResponse> {
        self.call(Method::POST, api::KEY_PACKAGE_CLAIM, Some(req)).await
    }

    /// `GET /v1/groups/{group}`: the group's epoch and member devices as the relay keeps them.
    pub(crate) async fn group_status(&self, group: &[u8]) -> Result<api::GroupStatus> {
        self.call::<(), _>(Method::GET, &api::GROUP.replace("{group}", &hex(group)), None).await
    }

    /// `POST /v1/groups/{group}/commits`.
    pub(crate) async fn group_commit(
        &self,
        group: &[u8],
        req: &api::GroupCommitRequest,
    ) -> Result<api::SendResponse> {
        self.call(Method::POST, &api::GROUP_COMMITS.replace("{group}", &hex(group)), Some(req)).await
    }

    /// `POST /v1/groups/{group}/messages`.
    pub(crate) async fn group_message(
        &self,
        group: &[u8],
        req: &api::GroupMessageRequest,
    ) -> Result<api::SendResponse> {
        self.call(Method::POST, &api::GROUP_MESSAGES.replace("{group}", &hex(group)), Some(req)).await
    }

    /// `DELETE /v1/groups/{group}/membership`.
    pub(crate) async fn group_leave(&self, group: &[u8]) -> Result<()> {
        self.call_empty::<()>(Method::DELETE, &api::GROUP_MEMBERSHIP.replace("{group}", &hex(group)), None)
            .await
    }

    /// `POST /v1/messages`, with 409 and 410 as outcomes rather than errors. A request with
    /// an idempotency key is sent again, unchanged, after a `503` or a lost answer.
    pub(crate) async fn send(&self, req: &api::SendRequest) -> Result<SendOutcome> {
        self.check_transport()?;
        let attempts = if req.idempotency_key.is_some() { SEND_ATTEMPTS } else { 1 };
        let mut wait = SEND_RETRY_WAIT;
        for _ in 1..attempts {
            match self.send_once(req).await {
                Err(ClientError::Server { status: 503, .. } | ClientError::Network(_)) => {
                    tokio::time::sleep(wait).await;
                    wait = wait.saturating_mul(2);
                }
                other => return other,
            }
        }
        self.send_once(req).await
    }

    async fn send_once(&self, req: &api::SendRequest) -> Result<SendOutcome> {
        let resp = self.request(Method::POST, api::MESSAGES).json(req).send().await?;
        match resp.status() {
            s if s.is_success() => Ok(SendOutcome::Sent(resp.json().await?)),
            StatusCode::CONFLICT => match resp.json::<api::MismatchedDevices>().await {
                Ok(m) => Ok(SendOutcome::Mismatched(m)),
                Err(e) => Err(e.into()),
            },
            StatusCode::GONE => match resp.json::<api::StaleDevices>().await {
                Ok(m) => Ok(SendOutcome::Stale(m)),
                Err(e) => Err(e.into()),
            },
            _ => Err(Self::error(resp).await),
        }
    }

    /// `GET /v1/messages?after=ID`: the envelopes with ids above `after`.
    pub(crate) async fn fetch(&self, after: u64) -> Result<api::FetchResponse> {
        let path =
            if after == 0 { api::MESSAGES.to_owned() } else { format!("{}?after={after}", api::MESSAGES) };
        self.call::<(), _>(Method::GET, &path, None).await
    }

    /// `POST /v1/messages/ack`, reporting the device's state counter (`None`: not kept).
    pub(crate) async fn ack(&self, ids: Vec<u64>, state_counter: Option<u64>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.call_empty(Method::POST, api::ACK, Some(&api::AckRequest { ids, state_counter })).await
    }

    /// `PUT /v1/accounts/{name}/devices`: publishes a newer signed list of the own account.
    pub(crate) async fn publish_device_list(
        &self,
        name: &str,
        req: &api::PublishDeviceListRequest,
    ) -> Result<api::DeviceListPublished> {
        self.call(Method::PUT, &api::DEVICE_LIST.replace("{name}", name), Some(req)).await
    }

    /// `GET /v1/devices`: when each own device was added and last seen.
    pub(crate) async fn device_status(&self) -> Result<api::DeviceStatusResponse> {
        self.call::<(), _>(Method::GET, api::DEVICES, None).await
    }

    /// `DELETE /v1/devices/{device}`: this device logs itself out.
    pub(crate) async fn logout_device(&self, device: u32) -> Result<()> {
        self.call_empty::<()>(Method::DELETE, &api::DEVICE.replace("{device}", &device.to_string()), None)
            .await
    }

    /// `POST /v1/link`: publishes a new device's link offer (no session needed).
    pub(crate) async fn link_offer_post(
        &self,
        req: &api::LinkOfferRequest,
    ) -> Result<api::LinkOfferResponse> {
        self.call(Method::POST, api::LINK, Some(req)).await
    }

    /// `GET /v1/link/{slot}`: the offer in a slot (`slot`: 16 bytes).
    pub(crate) async fn link_offer_get(&self, slot: &[u8; 16]) -> Result<api::LinkOfferResponse> {
        self.call::<(), _>(Method::GET, &api::LINK_SLOT.replace("{slot}", &hex16(slot)), None).await
    }

    /// `PUT /v1/link/{slot}/answer`: the approver's sealed answer (once).
    pub(crate) async fn link_answer_put(&self, slot: &[u8; 16], req: &api::LinkAnswerRequest) -> Result<()> {
        self.call_empty(Method::PUT, &api::LINK_ANSWER.replace("{slot}", &hex16(slot)), Some(req)).await
    }

    /// `GET /v1/link/{slot}/answer?wait_secs=N`: the answer, or `None` when none came within
    /// the wait (at most [`api::limits::MAX_LINK_WAIT_SECS`]).
    pub(crate) async fn link_answer_wait(
        &self,
        slot: &[u8; 16],
        wait_secs: u64,
    ) -> Result<Option<api::LinkAnswerResponse>> {
        self.check_transport()?;
        let wait_secs = wait_secs.min(api::limits::MAX_LINK_WAIT_SECS);
        let path = format!("{}?wait_secs={wait_secs}", api::LINK_ANSWER.replace("{slot}", &hex16(slot)));
        let resp = self
            .request(Method::GET, &path)
            .timeout(REQUEST_TIMEOUT + Duration::from_secs(wait_secs))
            .send()
            .await?;
        match resp.status() {
            StatusCode::NO_CONTENT => Ok(None),
            s if s.is_success() => Ok(Some(resp.json().await?)),
            _ => Err(Self::error(resp).await),
        }
    }

    /// `DELETE /v1/link/{slot}`: the new device is done with its slot.
    pub(crate) async fn link_delete(&self, slot: &[u8; 16]) -> Result<()> {
        self.call_empty::<()>(Method::DELETE, &api::LINK_SLOT.replace("{slot}", &hex16(slot)), None).await
    }

    /// `POST /v1/blobs`: a blob of `size` bytes of the own account.
    pub(crate) async fn blob_create(&self, size: u64) -> Result<api::BlobStatus> {
        self.call(Method::POST, api::BLOBS, Some(&api::CreateBlobRequest { size })).await
    }

    /// `PUT /v1/blobs/{id}?offset=N`: uploads `data` (at most
    /// [`api::limits::MAX_BLOB_CHUNK_BYTES`]) at `offset`, which must be the bytes received
    /// so far.
    pub(crate) async fn blob_put(&self, id: &str, offset: u64, data: Vec<u8>) -> Result<api::BlobStatus> {
        self.check_transport()?;
        let path = format!("{}?offset={offset}", api::BLOB.replace("{id}", id));
        let resp = self
            .request(Method::PUT, &path)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(data)
            .send()
            .await?;
        if !resp.status().is_success() {
            return Err(Self::error(resp).await);
        }
        Ok(resp.json().await?)
    }

    /// `GET /v1/blobs/{id}/status`: how much was uploaded (to resume).
    pub(crate) async fn blob_status(&self, id: &str) -> Result<api::BlobStatus> {
        self.call::<(), _>(Method::GET, &api::BLOB_STATUS.replace("{id}", id), None).await
    }

    /// `GET /v1/blobs/{id}?offset=N&len=M`: up to `len` bytes (at most
    /// [`api::limits::MAX_BLOB_CHUNK_BYTES`]) of a complete blob; fewer at its end.
    pub(crate) async fn blob_get(&self, id: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let path = format!("{}?offset={offset}&len={len}", api::BLOB.replace("{id}", id));
        let resp = self.send_checked::<()>(Method::GET, &path, None).await?;
        Ok(resp.bytes().await?.to_vec())
    }

    /// `DELETE /v1/blobs/{id}`.
    pub(crate) async fn blob_delete(&self, id: &str) -> Result<()> {
        self.call_empty::<()>(Method::DELETE, &api::BLOB.replace("{id}", id), None).await
    }

    /// Opens the WebSocket (`GET /v1/ws`, authenticated).
    pub(crate) async fn connect(&self) -> Result<Live> {
        self.check_transport()?;
        let (url, connector) = if let Some(rest) = self.base.strip_prefix("https://") {
            let tls = tokio_tungstenite::Connector::Rustls(self.websocket_tls()?);
            (format!("wss://{rest}{}", api::WEBSOCKET), tls)
        } else if let Some(rest) = self.base.strip_prefix("http://") {
            (format!("ws://{rest}{}", api::WEBSOCKET), tokio_tungstenite::Connector::Plain)
        } else {
            return Err(ClientError::Internal("base URL scheme"));
        };
        let mut req = url.as_str().into_client_request()?;
        let headers = req.headers_mut();
        let version =
            api::PROTOCOL_VERSION.to_string().parse().map_err(|_| ClientError::Internal("version header"))?;
        headers.insert(api::VERSION_HEADER, version);
        if let Some(t) = &self.token {
            let value = format!("Bearer {}", t.0.as_str())
                .parse()
                .map_err(|_| ClientError::Internal("token header"))?;
            headers.insert("authorization", value);
        }
        // tungstenite zero-fills its read buffer before every read: 8 KiB instead of the
        // 128 KiB default, which cost more CPU than the rest of a small frame's path.
        let config =
            tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(8 * 1024);
        let connecting = match self.local_address {
            None => {
                tokio_tungstenite::connect_async_tls_with_config(req, Some(config), false, Some(connector))
                    .await
            }
            Some(local) => {
                let stream = Self::tcp_from(local, &url).await?;
                tokio_tungstenite::client_async_tls_with_config(req, stream, Some(config), Some(connector))
                    .await
            }
        };
        let (ws, _resp) = connecting.map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(resp) => ClientError::Server {
                status: resp.status().as_u16(),
                code: resp
                    .body()
                    .as_ref()
                    .and_then(|b| serde_json::from_slice::<api::ApiError>(b).ok())
                    .map(|e| e.code),
                message: "WebSocket upgrade refused".into(),
            },
            other => other.into(),
        })?;
        Ok(Live { ws })
    }
}

impl Api {
    /// A TCP connection from `local` to the host and port of the WebSocket URL `url`.
    async fn tcp_from(local: std::net::IpAddr, url: &str) -> Result<tokio::net::TcpStream> {
        let network = |e: std::io::Error| ClientError::Network(format!("connecting from {local}: {e}"));
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or(rest);
        let host_port = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
            authority.to_owned()
        } else {
            format!("{authority}:{}", if url.starts_with("wss://") { 443 } else { 80 })
        };
        let target = tokio::net::lookup_host(host_port.as_str())
            .await
            .map_err(network)?
            .find(|a| a.is_ipv4() == local.is_ipv4())
            .ok_or_else(|| ClientError::Network(format!("{authority} has no address of {local}'s family")))?;
        let socket =
            if local.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
                .map_err(network)?;
        socket.bind(std::net::SocketAddr::new(local, 0)).map_err(network)?;
        socket.connect(target).await.map_err(network)
    }
}

impl Live {
    /// The next frame, or `None` when `timeout` passes first.
    pub(crate) async fn next(&mut self, timeout: Duration) -> Result<Option<Incoming>> {
        // One deadline for the whole wait: pings and other control frames do not extend it.
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Ok(None),
                Ok(None) => return Ok(Some(Incoming::Closed)),
                Ok(Some(f)) => f?,
            };
            if let Some(incoming) = Self::decode(frame)? {
                return Ok(Some(incoming));
            }
        }
    }

    /// The next frame if one has arrived already, without waiting.
    pub(crate) fn try_next(&mut self) -> Result<Option<Incoming>> {
        use futures_util::FutureExt;
        loop {
            let frame = match self.ws.next().now_or_never() {
                None => return Ok(None),
                Some(None) => return Ok(Some(Incoming::Closed)),
                Some(Some(f)) => f?,
            };
            if let Some(incoming) = Self::decode(frame)? {
                return Ok(Some(incoming));
            }
        }
    }

    fn decode(frame: WsMessage) -> Result<Option<Incoming>> {
        match frame {
            WsMessage::Text(t) => {
                let f: api::ServerFrame = serde_json::from_str(t.as_str())
                    .map_err(|e| ClientError::Network(format!("malformed frame: {e}")))?;
                Ok(Some(match f {
                    api::ServerFrame::Envelope(e) => Incoming::Event(RelayEvent::Envelope(e)),
                    api::ServerFrame::Drained => Incoming::Drained,
                    api::ServerFrame::Sent { id, server_time_ms } => {
                        Incoming::Event(RelayEvent::Sent { id, server_time_ms })
                    }
                    api::ServerFrame::SendFailed { id, code, message, .. } => {
                        Incoming::Event(RelayEvent::SendFailed { id, code, message })
                    }
                    api::ServerFrame::PrekeysLow { .. } => Incoming::PrekeysLow,
                }))
            }
            WsMessage::Close(_) => Ok(Some(Incoming::Closed)),
            // Pings are answered by tungstenite; binary frames are not part of v1.
            _ => Ok(None),
        }
    }

    /// Queues a frame; it is written by the next [`Live::flush`] (or when the buffer fills).
    pub(crate) async fn queue(&mut self, frame: &api::ClientFrame) -> Result<()> {
        let text = serde_json::to_string(frame).map_err(|_| ClientError::Internal("client frame"))?;
        self.ws.feed(WsMessage::Text(text.into())).await?;
        Ok(())
    }

    /// Writes the queued frames.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        self.ws.flush().await?;
        Ok(())
    }

    /// Acknowledges stored envelopes, reporting the device's state counter.
    pub(crate) async fn ack(&mut self, ids: Vec<u64>, state_counter: Option<u64>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.queue(&api::ClientFrame::Ack { ids, state_counter }).await?;
        self.flush().await
    }

    /// Closes politely.
    pub(crate) async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

#[cfg(test)]
#[path = "net_tests.rs"]
mod net_tests;

/// Bytes as lowercase hex (group ids in paths).
fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
