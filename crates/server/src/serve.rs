//! Start-up and shutdown: open the store, bind, serve HTTP or HTTPS, and on shutdown stop
//! accepting, close WebSockets with "going away", wait (bounded) for open requests and
//! sockets, then flush and close the store.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::bus::LocalBus;
use crate::config::ServerConfig;
use crate::routes::app;
use crate::state::{AppState, Settings, now_ms};
use crate::store::{PgStore, SqliteStore, Store, StoreConfig, StoreError};
use crate::tls::{TlsError, TlsReloader};

/// How often expired challenges and tokens are deleted and full rate-limit buckets
/// forgotten.
const PURGE_EVERY: Duration = Duration::from_secs(60);
/// How often the store's free space is compared with the storage watermark.
const WATERMARK_EVERY: Duration = Duration::from_secs(2);

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The store could not be opened.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Only one of `tls_cert` and `tls_key` was given.
    #[error("tls_cert and tls_key go together")]
    TlsHalfConfigured,
    /// The listening address could not be bound.
    #[error("cannot listen on {addr}: {}", crate::error::io_cause(source))]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration is refused (a value out of its range).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Binding or serving failed.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    /// The key transparency directory could not be opened.
    #[error("key transparency: {0}")]
    Transparency(String),
}

/// A bound server, not yet serving (so callers can learn the port first).
pub struct Server {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    tls_reloader: Option<TlsReloader>,
    state: AppState,
    local_addr: SocketAddr,
    grace: Duration,
    max_connections: usize,
    max_connections_per_address: usize,
    header_read_timeout: Duration,
}

impl Server {
    /// Opens the store (SQLite in `data_dir`, or PostgreSQL at `database_url`), sets up TLS
    /// if configured and binds `listen`.
    pub async fn bind(config: ServerConfig) -> Result<Self, ServeError> {
        config.check()?;
        let (tls, tls_reloader) = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => {
                let (acceptor, reloader) = crate::tls::acceptor(cert, key)?;
                (Some(acceptor), Some(reloader))
            }
            (None, None) => (None, None),
            _ => return Err(ServeError::TlsHalfConfigured),
        };
        let store_config = StoreConfig::with_max_mailbox_bytes(config.max_mailbox_bytes)
            .with_database_quota_bytes(config.database_quota_bytes);
        // An empty URL means the embedded database (issue 8, point 14).
        let store: Arc<dyn Store> = match config.database_url.as_deref().filter(|u| !u.trim().is_empty()) {
            Some(url) => Arc::new(PgStore::connect_with(url, &store_config).await?),
            None => Arc::new(SqliteStore::open_with(&config.data_dir, &store_config)?),
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServeError::Listen { addr: config.listen, source })?;
        let local_addr = listener.local_addr()?;
        if tls.is_none() && !local_addr.ip().is_loopback() {
            tracing::warn!(
                %local_addr,
                "serving plain HTTP on an address other hosts can reach: session tokens and \
                 metadata cross the network readable (configure tls_cert and tls_key, or listen \
                 on loopback behind a TLS proxy)"
            );
        }
        let origin = origin(&config, local_addr)?;
        let settings = Settings {
            origin: origin.fixed.unwrap_or_default(),
            origin_from_host: origin.from_host,
            registration_token: config.registration_token.clone(),
            log_ip_addresses: config.log_ip_addresses,
            limits: config.limits,
            max_sockets_per_device: config.max_sockets_per_device,
            trusted_proxies: config.trusted_proxies.clone(),
            min_free_bytes: config.min_free_bytes,
            max_pending_store_bytes: config.max_pending_store_bytes,
        };
        let namespace = match &config.kt_namespace {
            Some(ns) => ns.clone(),
            None => default_namespace(settings.origin.as_str(), local_addr),
        };
        let kt_settings = crate::kt::KtSettings {
            namespace,
            epoch_interval: Duration::from_millis(config.kt_epoch_interval_ms),
            explicit_namespace: config.kt_namespace.is_some(),
            auditors: config.kt_auditors.iter().filter_map(|a| crate::config::auditor_key(a)).collect(),
        };
        let kt_store: Arc<dyn crate::store::KtStore> = store.clone();
        if let Some(retiring) = config.kt_new_log.as_deref().and_then(crate::config::auditor_key) {
            let fresh = crate::kt::start_new_log(&*kt_store, retiring)
                .await
                .map_err(|e| ServeError::Transparency(e.to_string()))?;
            if fresh {
                tracing::warn!(
                    retired_key = %crate::hexstr::encode(&retiring),
                    "key transparency: started a new log; the log under the retired key ends here. Give every \
                     user the new key (logged below) to confirm with `tacit kt trust-new-log --key HEX`, and \
                     every auditor a fresh --state file; remove --kt-new-log"
                );
            } else {
                tracing::info!(
                    "--kt-new-log: the log's key is not {}, so no new log was started (one was already, or \
                     the key is another log's); remove the flag",
                    crate::hexstr::encode(&retiring)
                );
            }
        }
        let kt = crate::kt::Transparency::open(kt_store, kt_settings, now_ms())
            .await
            .map_err(|e| ServeError::Transparency(e.to_string()))?;
        tracing::info!(
            namespace = %kt.settings().namespace,
            key = %crate::hexstr::encode(&kt.public_key()),
            epoch = kt.latest().map_or(0, |e| e.epoch),
            "key transparency log"
        );
        let state = AppState::new(store, Arc::new(LocalBus::new()), settings);
        state.set_transparency(Arc::new(kt));
        // Before the first request: a server started on a full disk refuses sends at once.
        state.check_storage().await;
        Ok(Self {
            listener,
            tls,
            tls_reloader,
            state,
            local_addr,
            grace: Duration::from_secs(config.shutdown_grace_secs),
            max_connections: config.max_connections,
            max_connections_per_address: config.max_connections_per_address,
            header_read_timeout: Duration::from_secs(config.header_read_timeout_secs.max(1)),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What reloads the TLS certificate and key from their files (`None` without TLS).
    pub fn tls_reloader(&self) -> Option<TlsReloader> {
        self.tls_reloader.clone()
    }

    /// The shared state (for embedding).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then drains and closes.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        let Self {
            listener,
            tls,
            tls_reloader: _,
            state,
            local_addr,
            grace,
            max_connections,
            max_connections_per_address,
            header_read_timeout,
        } = self;
        tracing::info!(%local_addr, tls = tls.is_some(), "tacit server listening");
        let purge = {
            let state = state.clone();
            let store = state.store().clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(PURGE_EVERY);
                loop {
                    tick.tick().await;
                    if let Err(e) = store.purge_expired(now_ms()).await {
                        tracing::warn!(error = %e, "purging expired tokens failed");
                    }
                    state.sweep_limits();
                }
            })
        };
        let watermark = {
            let state = state.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(WATERMARK_EVERY);
                loop {
                    tick.tick().await;
                    state.check_storage().await;
                }
            })
        };
        let stop = state.inner().shutdown.clone();
        let publisher = state.transparency().cloned().map(|kt| tokio::spawn(kt.run(stop.clone())));
        let signal = {
            let state = state.clone();
            tokio::spawn(async move {
                shutdown.await;
                tracing::info!("shutting down");
                state.begin_shutdown();
            })
        };
        let limits = crate::listen::Limits {
            max_connections,
            max_connections_per_address,
            header_read_timeout,
            trusted_proxies: std::sync::Arc::new(state.inner().trusted_proxies.clone()),
        };
        let served = crate::listen::serve(listener, tls, app(state.clone()), limits, stop.clone());
        tokio::select! {
            () = served => {}
            () = async { stop.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!("shutdown grace period over; dropping open connections");
            }
        }
        signal.abort();
        state.inner().sockets.close();
        if tokio::time::timeout(grace, state.inner().sockets.wait()).await.is_err() {
            tracing::warn!("websockets still open after the grace period");
        }
        purge.abort();
        watermark.abort();
        // An epoch being published finishes (it is one transaction, so a kill loses nothing
        // either) before the store closes.
        if let Some(publisher) = publisher
            && tokio::time::timeout(grace, publisher).await.is_err()
        {
            tracing::warn!("key transparency publisher still busy after the grace period");
        }
        state.store().close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Where the origin clients sign comes from (exactly one field is set).
struct OriginChoice {
    /// One origin for every request.
    fixed: Option<String>,
    /// The request's `Host` header with this scheme.
    from_host: Option<&'static str>,
}

/// The origin clients sign (`tacit_api::auth_message`): the `origin` setting; on a specific
/// address, `http(s)://` and that address; on a wildcard address (`0.0.0.0`, `[::]`), which
/// every such deployment shares, the first DNS name of the TLS certificate; with neither, the
/// `Host` header of each request, with a warning (a signature then binds nothing a relaying
/// server could not choose).
fn origin(config: &ServerConfig, local_addr: SocketAddr) -> Result<OriginChoice, ServeError> {
    let scheme = if config.tls_cert.is_some() { "https" } else { "http" };
    if let Some(o) = &config.origin {
        return Ok(OriginChoice { fixed: Some(o.clone()), from_host: None });
    }
    if !local_addr.ip().is_unspecified() {
        return Ok(OriginChoice { fixed: Some(format!("{scheme}://{local_addr}")), from_host: None });
    }
    if let Some(cert) = &config.tls_cert
        && let Some(name) = crate::tls::dns_names(cert)?.into_iter().next()
    {
        let fixed = match local_addr.port() {
            443 => format!("https://{name}"),
            port => format!("https://{name}:{port}"),
        };
        tracing::info!(origin = %fixed, "origin taken from the TLS certificate");
        return Ok(OriginChoice { fixed: Some(fixed), from_host: None });
    }
    tracing::warn!(
        %local_addr,
        "listening on a wildcard address with neither an `origin` setting nor a certificate \
         DNS name: the origin clients sign is taken from each request's Host header, so it does \
         not tell this server from another; set `origin` (e.g. https://chat.example)"
    );
    Ok(OriginChoice { fixed: None, from_host: Some(scheme) })
}

/// Binds and serves `config` until `shutdown` completes (the `tacit server` entry point).
pub async fn serve(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    Server::bind(config).await?.run(shutdown).await
}

/// `tacit.<host>.v1` for the origin's host (or the bound address when the origin comes from
/// each request's `Host`), with anything a namespace cannot hold left out.
fn default_namespace(origin: &str, local_addr: SocketAddr) -> String {
    let host = origin.split("://").nth(1).unwrap_or(origin);
    let host = if host.is_empty() { local_addr.ip().to_string() } else { host.to_owned() };
    let host: String = host
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-') { c } else { '-' })
        .take(96)
        .collect();
    format!("tacit.{host}.v1")
}
