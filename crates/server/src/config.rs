//! Server configuration: a TOML file, or filled in by the `tacit` CLI from flags and
//! environment variables.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::limiter::RateLimits;

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file: {0}")]
    Read(#[from] std::io::Error),
    /// The file is not valid TOML for [`ServerConfig`].
    #[error("invalid config file: {0}")]
    Parse(#[from] toml::de::Error),
    /// A duration setting is outside its range (issue 8, point 9: an unbounded one overflowed
    /// the clock and panicked).
    #[error("config: {key} = {value} is out of range: {min} to {max} seconds")]
    OutOfRange {
        /// The setting.
        key: &'static str,
        /// Its value.
        value: u64,
        /// The least allowed.
        min: u64,
        /// The most allowed.
        max: u64,
    },
    /// `kt_epoch_interval_ms` is outside its range.
    #[error("config: kt_epoch_interval_ms = {value} is out of range: {min} to {max} milliseconds")]
    EpochIntervalOutOfRange {
        /// Its value.
        value: u64,
        /// The least allowed.
        min: u64,
        /// The most allowed.
        max: u64,
    },
    /// `kt_auditors` holds a key that is not 64 hex digits, or too many.
    #[error("config: kt_auditors: {0}")]
    BadAuditor(String),
    /// `kt_namespace` has a character or length a log name cannot have.
    #[error("config: kt_namespace {0:?} must be 1 to 128 of A-Z a-z 0-9 . _ : -")]
    BadNamespace(String),
    /// `--kt-new-log` is not a key.
    #[error(
        "--kt-new-log {0:?}: give the retiring transparency key, 64 hex digits (the server logs its key at start; clients show it in `tacit kt status`)"
    )]
    BadNewLogKey(String),
}

/// The longest `shutdown_grace_secs` and `header_read_timeout_secs`: an hour.
pub const MAX_DURATION_SECS: u64 = 3_600;

/// Everything `tacit server` can be told. Every field has a default, so an empty file is a
/// valid configuration (SQLite in `./tacit-data`, plain HTTP on `127.0.0.1:7878`).
///
/// ```toml
/// listen = "0.0.0.0:443"
/// data_dir = "/var/lib/tacit"
/// # database_url = "postgres://tacit@db/tacit"
/// registration_token = "only-friends"
/// tls_cert = "/etc/tacit/cert.pem"
/// tls_key = "/etc/tacit/key.pem"
/// max_mailbox_bytes = 8388608 # 8 MiB; at most tacit_api::limits::MAX_MAILBOX_BYTES
/// min_free_bytes = 2147483648 # refuse sends below 2 GiB free
///
/// [limits]
/// sends_per_second = 1000
/// send_burst = 2000
/// ```
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Address to listen on (port 0 picks a free port; see [`crate::Server::local_addr`]).
    pub listen: SocketAddr,
    /// Folder of the embedded SQLite database (ignored when `database_url` is set).
    pub data_dir: PathBuf,
    /// `postgres://...`: use PostgreSQL instead of the embedded SQLite database (empty: the
    /// embedded database, as unset).
    pub database_url: Option<String>,
    /// When set, accounts can only be created by callers who present this token.
    pub registration_token: Option<String>,
    /// PEM certificate chain; with `tls_key`, the server speaks HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// The origin clients sign in their authentication message (`https://chat.example`);
    /// defaults to `http(s)://` and the bound address, or on a wildcard address to the TLS
    /// certificate's first DNS name, or with neither to each request's `Host` header (with
    /// a start-up warning).
    pub origin: Option<String>,
    /// Log the client IP address of each request (off by default).
    pub log_ip_addresses: bool,
    /// Seconds that shutdown waits for open requests and WebSockets to finish.
    pub shutdown_grace_secs: u64,
    /// Most TCP connections open at once (WebSockets included). When full, a new connection
    /// takes the slot of a slow-header one, else of an address holding at least two more
    /// than its own; otherwise it is closed at once.
    pub max_connections: usize,
    /// Most TCP connections open at once from one client address (IPv4 address, IPv4-mapped
    /// included; IPv6 /64); trusted proxies are exempt.
    pub max_connections_per_address: usize,
    /// Reverse proxies (addresses or CIDR blocks) whose `X-Forwarded-For` names the client
    /// for per-address limits and logs. Empty: every connection is its own client.
    pub trusted_proxies: Vec<crate::proxy::IpNet>,
    /// Seconds a client has to send a request's headers (an idle keep-alive connection is
    /// closed after as long).
    pub header_read_timeout_secs: u64,
    /// Most WebSockets one device may have open; a new one beyond this closes its oldest.
    pub max_sockets_per_device: usize,
    /// Rate limits (`[limits]`; every field has a default).
    pub limits: RateLimits,
    /// Most ciphertext bytes held for one device (default
    /// [`crate::DEFAULT_MAILBOX_BYTES`], most [`tacit_api::limits::MAX_MAILBOX_BYTES`], least
    /// one envelope; see [`crate::StoreConfig`]).
    pub max_mailbox_bytes: u64,
    // Store protection (issue 7, points 15 and 16).
    /// The storage watermark: below this many free bytes in the store (the data folder's file
    /// system; PostgreSQL: what is left of `database_quota_bytes`) sends are refused with
    /// `507 storage_full`, acknowledgements never are. 0 turns it off.
    pub min_free_bytes: u64,
    /// PostgreSQL only: the bytes the database may take, for the storage watermark (unset:
    /// no watermark on PostgreSQL, whose disk the server cannot see).
    pub database_quota_bytes: Option<u64>,
    /// Most envelope bytes of sends waiting for the store at once, server-wide; a send
    /// that finds no room within a second is answered `503 unavailable`.
    pub max_pending_store_bytes: usize,
    // Key transparency (issue 10).
    /// Pending key changes are published as one epoch at most this often (milliseconds,
    /// [`MIN_KT_EPOCH_INTERVAL_MS`] to [`MAX_KT_EPOCH_INTERVAL_MS`]; default 1,000).
    pub kt_epoch_interval_ms: u64,
    /// The log's name in signed epoch roots (plexi's namespace), at most 128 bytes of
    /// `A-Z a-z 0-9 . _ : -`; default `tacit.<origin host>.v1`.
    pub kt_namespace: Option<String>,
    /// Auditors whose cosignatures of epoch roots the server keeps and serves with each
    /// root (Ed25519 public keys, 64 hex digits; at most
    /// [`tacit_api::limits::MAX_KT_AUDITORS`]). Clients may require them
    /// (`--require-auditor`).
    pub kt_auditors: Vec<String>,
    /// Start a new key transparency log if the directory's root signing key is this one
    /// (64 hex digits; `tacit server --kt-new-log`, never from a file): after the data was
    /// restored from an older copy. A no-op under any other key.
    #[serde(skip)]
    pub kt_new_log: Option<String>,
}

/// The shortest [`ServerConfig::kt_epoch_interval_ms`].
pub const MIN_KT_EPOCH_INTERVAL_MS: u64 = 50;
/// The longest [`ServerConfig::kt_epoch_interval_ms`]: a minute (clients wait for an epoch
/// before they see a new device).
pub const MAX_KT_EPOCH_INTERVAL_MS: u64 = 60_000;

/// The default of [`ServerConfig::min_free_bytes`]: 1 GiB, room for the WAL, checkpoints
/// and acknowledgements once sends stop.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 1024 * 1024 * 1024;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            data_dir: PathBuf::from("tacit-data"),
            database_url: None,
            registration_token: None,
            tls_cert: None,
            tls_key: None,
            origin: None,
            log_ip_addresses: false,
            shutdown_grace_secs: 10,
            max_connections: 10_000,
            max_connections_per_address: 256,
            trusted_proxies: Vec::new(),
            header_read_timeout_secs: 20,
            max_sockets_per_device: 4,
            limits: RateLimits::default(),
            max_mailbox_bytes: crate::StoreConfig::default().max_mailbox_bytes,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            database_quota_bytes: None,
            max_pending_store_bytes: crate::state::DEFAULT_MAX_PENDING_STORE_BYTES,
            kt_epoch_interval_ms: 1_000,
            kt_namespace: None,
            kt_auditors: Vec::new(),
            kt_new_log: None,
        }
    }
}

impl core::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // The token and the database URL (which may hold a password) are never printed.
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_ref().map(|_| "***"))
            .field("registration_token", &self.registration_token.as_ref().map(|_| "***"))
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("origin", &self.origin)
            .field("log_ip_addresses", &self.log_ip_addresses)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_address", &self.max_connections_per_address)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("header_read_timeout_secs", &self.header_read_timeout_secs)
            .field("max_sockets_per_device", &self.max_sockets_per_device)
            .field("limits", &self.limits)
            .field("max_mailbox_bytes", &self.max_mailbox_bytes)
            .field("min_free_bytes", &self.min_free_bytes)
            .field("database_quota_bytes", &self.database_quota_bytes)
            .field("max_pending_store_bytes", &self.max_pending_store_bytes)
            .field("kt_epoch_interval_ms", &self.kt_epoch_interval_ms)
            .field("kt_namespace", &self.kt_namespace)
            .field("kt_auditors", &self.kt_auditors)
            .field("kt_new_log", &self.kt_new_log)
            .finish()
    }
}

impl ServerConfig {
    /// Parses a TOML configuration and checks its ranges ([`Self::check`]).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let c: Self = toml::from_str(text)?;
        c.check()?;
        Ok(c)
    }

    /// Refuses a duration outside its range (`shutdown_grace_secs` and
    /// `header_read_timeout_secs`: 0 to [`MAX_DURATION_SECS`]; a header timeout of 0 counts
    /// as 1). [`crate::Server::bind`] checks too, so no configuration starts a server whose
    /// clock arithmetic could overflow.
    pub fn check(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("shutdown_grace_secs", self.shutdown_grace_secs),
            ("header_read_timeout_secs", self.header_read_timeout_secs),
        ] {
            if value > MAX_DURATION_SECS {
                return Err(ConfigError::OutOfRange { key, value, min: 0, max: MAX_DURATION_SECS });
            }
        }
        if !(MIN_KT_EPOCH_INTERVAL_MS..=MAX_KT_EPOCH_INTERVAL_MS).contains(&self.kt_epoch_interval_ms) {
            return Err(ConfigError::EpochIntervalOutOfRange {
                value: self.kt_epoch_interval_ms,
                min: MIN_KT_EPOCH_INTERVAL_MS,
                max: MAX_KT_EPOCH_INTERVAL_MS,
            });
        }
        if let Some(ns) = &self.kt_namespace
            && !valid_namespace(ns)
        {
            return Err(ConfigError::BadNamespace(ns.clone()));
        }
        if self.kt_auditors.len() > tacit_api::limits::MAX_KT_AUDITORS {
            return Err(ConfigError::BadAuditor(format!(
                "{} auditors, at most {}",
                self.kt_auditors.len(),
                tacit_api::limits::MAX_KT_AUDITORS
            )));
        }
        if let Some(bad) = self.kt_auditors.iter().find(|a| auditor_key(a).is_none()) {
            return Err(ConfigError::BadAuditor(format!("{bad:?} is not 64 hex digits")));
        }
        if let Some(bad) = self.kt_new_log.as_ref().filter(|k| auditor_key(k).is_none()) {
            return Err(ConfigError::BadNewLogKey(bad.clone()));
        }
        Ok(())
    }

    /// Reads and parses a TOML configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_toml(&std::fs::read_to_string(path)?)
    }
}

/// A namespace a URL path and a log line can carry as it is.
pub(crate) fn valid_namespace(ns: &str) -> bool {
    !ns.is_empty()
        && ns.len() <= tacit_transparency::MAX_NAMESPACE_BYTES
        && ns.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// An auditor key of [`ServerConfig::kt_auditors`]: 64 hex digits.
pub(crate) fn auditor_key(hex: &str) -> Option<[u8; 32]> {
    crate::hexstr::decode32(hex.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_toml_and_redacts_secrets() {
        let c = ServerConfig::from_toml(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"/tmp/x\"\nregistration_token = \"sekrit\"\n\
             database_url = \"postgres://u:pw@h/db\"\n",
        )
        .unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.registration_token.as_deref(), Some("sekrit"));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("sekrit") && !dbg.contains("pw"), "{dbg}");
        assert!(ServerConfig::from_toml("nonsense = 1").is_err());
        assert_eq!(ServerConfig::from_toml("").unwrap().shutdown_grace_secs, 10);
        let c = ServerConfig::from_toml("[limits]\nsends_per_second = 5\n").unwrap();
        assert_eq!((c.limits.sends_per_second, c.limits.send_burst), (5, RateLimits::default().send_burst));
        assert!(ServerConfig::from_toml("[limits]\nnonsense = 1\n").is_err());
        let c = ServerConfig::from_toml("trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n").unwrap();
        assert_eq!(c.trusted_proxies.len(), 2);
        assert!(ServerConfig::from_toml("trusted_proxies = [\"10.0.0.0/40\"]\n").is_err());
        assert_eq!(ServerConfig::from_toml("").unwrap().max_mailbox_bytes, crate::DEFAULT_MAILBOX_BYTES);
        let c = ServerConfig::from_toml(
            "min_free_bytes = 5\ndatabase_quota_bytes = 6\nmax_pending_store_bytes = 7\n",
        )
        .unwrap();
        assert_eq!((c.min_free_bytes, c.database_quota_bytes, c.max_pending_store_bytes), (5, Some(6), 7));
        assert_eq!(
            ServerConfig::from_toml("max_mailbox_bytes = 1000000\n").unwrap().max_mailbox_bytes,
            1_000_000
        );
    }

    #[test]
    fn durations_are_bounded() {
        for key in ["shutdown_grace_secs", "header_read_timeout_secs"] {
            assert!(ServerConfig::from_toml(&format!("{key} = 3600\n")).is_ok());
            let e = ServerConfig::from_toml(&format!("{key} = 18446744073709551615\n")).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("config: {key} = 18446744073709551615 is out of range: 0 to 3600 seconds")
            );
        }
    }

    #[test]
    fn auditors_are_keys_and_bounded() {
        let key = "ab".repeat(32);
        let c = ServerConfig::from_toml(&format!("kt_auditors = [\"{key}\"]\n")).unwrap();
        assert_eq!(c.kt_auditors, vec![key.clone()]);
        assert_eq!(auditor_key(&key), Some([0xab; 32]));
        for bad in ["ab", "zz".repeat(32).as_str(), &"ab".repeat(33)] {
            let e = ServerConfig::from_toml(&format!("kt_auditors = [\"{bad}\"]\n")).unwrap_err();
            assert!(e.to_string().contains("is not 64 hex digits"), "{e}");
        }
        let many: Vec<String> = (0..17).map(|i| format!("\"{:064x}\"", i)).collect();
        let e = ServerConfig::from_toml(&format!("kt_auditors = [{}]\n", many.join(","))).unwrap_err();
        assert!(e.to_string().contains("17 auditors, at most 16"), "{e}");
    }
}
