//! Tacit's relay server: accounts created from public keys, challenge-response device
//! authentication, a prekey directory that hands out each one-time key once, durable
//! per-device mailboxes, and live delivery over WebSockets. It stores and sees only public
//! keys, signed data, ciphertext and metadata (`docs/THREAT_MODEL.md`).
//!
//! ```no_run
//! # async fn run() -> Result<(), tacit_server::ServeError> {
//! let mut config = tacit_server::ServerConfig::default();
//! config.data_dir = "/var/lib/tacit".into();
//! tacit_server::serve(config, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
//!
//! Layout: [`routes`](app) (one thin handler per endpoint) → `service` (what a request
//! means) → [`Store`] (SQLite with group commit, or PostgreSQL) and [`Bus`] (wake-ups).

mod bus;
mod config;
mod crypto;
mod error;
mod hexstr;
pub mod kt;
mod limiter;
mod listen;
pub mod mls_frame;
mod proxy;
mod routes;
mod serve;
mod service;
mod slots;
mod state;
mod store;
mod tls;

pub use bus::{Bus, Live, LocalBus, SUBSCRIBER_QUEUE, Subscription};
pub use config::{ConfigError, DEFAULT_MIN_FREE_BYTES, RateLimits, ServerConfig};
pub use error::Failure;
pub use proxy::IpNet;
pub use routes::app;
pub use routes::extract::PeerAddr;
pub use serve::{ServeError, Server, serve};
pub use state::{AppState, DEFAULT_MAX_PENDING_STORE_BYTES, Settings};
pub use store::{
    AccountId, AccountRecord, Authed, BlobRecord, BundleParts, DEFAULT_MAILBOX_BYTES, DeviceKey,
    DeviceRecord, GroupMemberName, GroupSent, GroupStored, KeyRecord, KtEpoch, KtStore, KtWrite, LinkSlot,
    ListState, ListUpdate, NewAccount, NewCommit, NewDevice, NewEnvelope, PgStore, PrekeyCounts, PrekeySet,
    STALL_AFTER, Sent, SqliteStore, Store, StoreConfig, StoreError, StoredEnvelope,
};
pub use tls::{TlsError, TlsReloader};
