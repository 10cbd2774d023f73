//! Shared server state handed to every handler.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::Bus;
use crate::error::Failure;
use crate::limiter::{LimitKey, RateLimiter, RateLimits};
use crate::store::Store;

/// Settings the services need (the rest of [`crate::ServerConfig`] is for start-up).
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct Settings {
    /// The origin clients sign in [`tacit_api::auth_message`].
    pub origin: String,
    /// When set, `origin` is ignored: the origin is this scheme and each request's `Host`
    /// header (a wildcard listener with no configured origin; see `serve.rs`).
    pub origin_from_host: Option<&'static str>,
    /// When set, account creation requires this token.
    pub registration_token: Option<String>,
    /// Log client addresses.
    pub log_ip_addresses: bool,
    /// Rate limits.
    pub limits: RateLimits,
    /// Most WebSockets per device (0 means the default, 4).
    pub max_sockets_per_device: usize,
    /// Reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<crate::proxy::IpNet>,
    // Store protection (issue 7, points 15 and 16).
    /// Below this many free bytes in the store, sends are refused (`507 storage_full`);
    /// acknowledgements never are. 0: no watermark.
    pub min_free_bytes: u64,
    /// Most envelope bytes of sends waiting for the store, server-wide (0 means the
    /// default, [`DEFAULT_MAX_PENDING_STORE_BYTES`]).
    pub max_pending_store_bytes: usize,
}

/// The default of [`Settings::max_pending_store_bytes`]: 64 MiB, 64 full-size requests or
/// about 65,000 one-KiB envelopes waiting for the store at once.
pub const DEFAULT_MAX_PENDING_STORE_BYTES: usize = 64 * 1024 * 1024;

impl Settings {
    /// Settings with an origin and no registration token.
    pub fn new(origin: impl Into<String>) -> Self {
        Self { origin: origin.into(), ..Self::default() }
    }
}

impl core::fmt::Debug for Settings {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Settings")
            .field("origin", &self.origin)
            .field("origin_from_host", &self.origin_from_host)
            .field("registration_token", &self.registration_token.as_ref().map(|_| "***"))
            .field("log_ip_addresses", &self.log_ip_addresses)
            .field("limits", &self.limits)
            .field("max_sockets_per_device", &self.max_sockets_per_device)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("min_free_bytes", &self.min_free_bytes)
            .field("max_pending_store_bytes", &self.max_pending_store_bytes)
            .finish()
    }
}

/// The state behind every handler: storage, the wake-up bus, settings, rate limits and
/// the shutdown signal. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) origin: String,
    /// [`Settings::origin_from_host`].
    pub(crate) origin_from_host: Option<&'static str>,
    /// SHA-256 of the registration token (compared in constant time).
    pub(crate) registration_token_hash: Option<[u8; 32]>,
    pub(crate) log_ip_addresses: bool,
    pub(crate) limiter: RateLimiter,
    pub(crate) limits: RateLimits,
    /// Cancelled when shutdown begins: WebSockets close.
    pub(crate) shutdown: CancellationToken,
    /// Open WebSocket tasks, awaited on shutdown.
    pub(crate) sockets: TaskTracker,
    /// Open WebSockets by device.
    pub(crate) open_sockets: crate::service::sockets::Sockets,
    /// Reverse proxies whose `X-Forwarded-For` is believed.
    pub(crate) trusted_proxies: Vec<crate::proxy::IpNet>,
    /// [`Settings::min_free_bytes`].
    pub(crate) min_free_bytes: u64,
    /// Set while the store's free space is below `min_free_bytes`: sends are refused.
    pub(crate) storage_low: AtomicBool,
    /// Envelope bytes that may wait for the store, server-wide (one permit per byte).
    pub(crate) pending_bytes: Arc<tokio::sync::Semaphore>,
    /// [`Inner::pending_bytes`]' size.
    pub(crate) max_pending_bytes: usize,
    /// The key transparency directory (set by [`crate::Server::bind`]; a state built
    /// without one answers the transparency routes `503 unavailable`).
    pub(crate) kt: std::sync::OnceLock<Arc<crate::kt::Transparency>>,
    /// A lying directory installed by a test (feature `malicious` only).
    #[cfg(feature = "malicious")]
    pub(crate) malice: std::sync::RwLock<Option<Arc<dyn crate::kt::malice::Malice>>>,
}

impl AppState {
    /// Assembles the state.
    pub fn new(store: Arc<dyn Store>, bus: Arc<dyn Bus>, settings: Settings) -> Self {
        Self(Arc::new(Inner {
            store,
            bus,
            origin: settings.origin,
            origin_from_host: settings.origin_from_host,
            registration_token_hash: settings
                .registration_token
                .as_deref()
                .map(|t| crate::crypto::sha256(t.as_bytes())),
            log_ip_addresses: settings.log_ip_addresses,
            limiter: RateLimiter::new(settings.limits),
            limits: settings.limits,
            shutdown: CancellationToken::new(),
            sockets: TaskTracker::new(),
            open_sockets: crate::service::sockets::Sockets::new(match settings.max_sockets_per_device {
                0 => 4,
                n => n,
            }),
            trusted_proxies: settings.trusted_proxies,
            min_free_bytes: settings.min_free_bytes,
            storage_low: AtomicBool::new(false),
            pending_bytes: Arc::new(tokio::sync::Semaphore::new(pending_bytes(
                settings.max_pending_store_bytes,
            ))),
            max_pending_bytes: pending_bytes(settings.max_pending_store_bytes),
            kt: std::sync::OnceLock::new(),
            #[cfg(feature = "malicious")]
            malice: std::sync::RwLock::new(None),
        }))
    }

    /// Serves this key transparency directory (once; a second call is ignored).
    pub fn set_transparency(&self, kt: Arc<crate::kt::Transparency>) {
        let _ = self.0.kt.set(kt);
    }

    /// Installs a lying directory (`None`: honest again). Tests only: feature `malicious`.
    #[cfg(feature = "malicious")]
    pub fn set_malice(&self, malice: Option<Arc<dyn crate::kt::malice::Malice>>) {
        if let Some(kt) = self.transparency()
            && let Ok(mut g) = kt.malice.write()
        {
            g.clone_from(&malice);
        }
        if let Ok(mut g) = self.0.malice.write() {
            *g = malice;
        }
    }

    /// The lie installed for `request`, if any.
    #[cfg(feature = "malicious")]
    pub(crate) fn malice(
        &self,
        who: Option<&str>,
        request: crate::kt::malice::KtRequest<'_>,
    ) -> Option<crate::kt::malice::KtLie> {
        let m = self.0.malice.read().ok()?.clone()?;
        m.answer(who, request)
    }

    /// The key transparency directory, if this state has one.
    pub fn transparency(&self) -> Option<&Arc<crate::kt::Transparency>> {
        self.0.kt.get()
    }

    /// Samples the store's free space against the watermark; true while it is below it.
    pub async fn check_storage(&self) -> bool {
        let inner = &self.0;
        if inner.min_free_bytes == 0 {
            return false;
        }
        let low = match inner.store.free_bytes().await {
            Ok(Some(free)) => free < inner.min_free_bytes,
            Ok(None) => false,
            // Unknown is not low: a failing probe must not stop every send.
            Err(e) => {
                tracing::warn!(error = %e, "free space unknown");
                inner.storage_low.load(Ordering::Acquire)
            }
        };
        if inner.storage_low.swap(low, Ordering::AcqRel) != low {
            if low {
                tracing::warn!(
                    min_free_bytes = inner.min_free_bytes,
                    "store below its free-space watermark: refusing sends"
                );
            } else {
                tracing::info!("store above its free-space watermark again: taking sends");
            }
        }
        low
    }

    /// Whether sends are refused for want of storage.
    pub(crate) fn storage_low(&self) -> bool {
        self.0.storage_low.load(Ordering::Acquire)
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.0
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.0.store
    }

    /// Starts shutdown: open WebSockets are told to close.
    pub fn begin_shutdown(&self) {
        self.0.shutdown.cancel();
    }

    /// Counts an unauthenticated request from `peer` against its per-address limit.
    pub(crate) fn limit_address(&self, peer: Option<IpAddr>) -> Result<(), Failure> {
        let Some(ip) = peer else { return Ok(()) };
        self.limit(crate::limiter::address_key(ip))
    }

    /// Counts an account creation from `peer` against its per-address limit.
    pub(crate) fn limit_account_creation(&self, peer: Option<IpAddr>) -> Result<(), Failure> {
        let Some(ip) = peer else { return Ok(()) };
        self.limit(crate::limiter::account_key(ip))
    }

    /// Forgets rate-limit buckets that are full again.
    pub(crate) fn sweep_limits(&self) {
        self.0.limiter.sweep(now_ms());
    }

    /// Counts one event against `key`'s budget: `429 rate_limited` when over it.
    pub(crate) fn limit(&self, key: LimitKey) -> Result<(), Failure> {
        self.limit_wait(key).map_err(|_| Failure::RateLimited)
    }

    /// Counts one event against `key`'s budget; `Err(ms)` until a token is back.
    pub(crate) fn limit_wait(&self, key: LimitKey) -> Result<(), u64> {
        self.limit_wait_n(key, 1)
    }

    /// Counts an event worth `n` tokens against `key`'s budget; `Err(ms)` until they are back.
    pub(crate) fn limit_wait_n(&self, key: LimitKey, n: u32) -> Result<(), u64> {
        self.0.limiter.check_n(key, self.0.limits.budget(&key), now_ms(), n)
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// [`Settings::max_pending_store_bytes`] with its default, as semaphore permits.
fn pending_bytes(setting: usize) -> usize {
    match setting {
        0 => DEFAULT_MAX_PENDING_STORE_BYTES,
        n => n.min(tokio::sync::Semaphore::MAX_PERMITS),
    }
}
