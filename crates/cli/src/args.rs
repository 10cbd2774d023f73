//! The command line (docs/CLI.md is the contract).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The longest `receive --wait` (a day): every duration from a flag is bounded (issue 8,
/// point 9; an unbounded one overflowed the clock).
pub const MAX_WAIT_SECS: u64 = 86_400;

/// Tacit: end-to-end encrypted messaging.
#[derive(Debug, Parser)]
#[command(name = "tacit", version, about, propagate_version = true)]
pub struct Cli {
    /// The account's folder (default: the platform's data directory, e.g. ~/.local/share/tacit).
    #[arg(long, global = true, env = "TACIT_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// PEM file of certificate authorities to trust besides the system's, for a server whose
    /// certificate comes from a private CA.
    #[arg(long, global = true, env = "TACIT_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Allow plain http:// to a server that is not on this machine (loopback needs no flag):
    /// anyone on the path can then read and alter the traffic, the session token included.
    #[arg(long, global = true, env = "TACIT_INSECURE_HTTP")]
    pub insecure_http: bool,
    /// The server's key transparency key (64 hex characters), known out of band: the device
    /// refuses a server or a pinned key that differs.
    #[arg(long, global = true, env = "TACIT_KT_KEY", value_name = "HEX", value_parser = parse_key_hex)]
    pub kt_key: Option<[u8; 32]>,
    /// An auditor (its Ed25519 key, 64 hex characters) whose cosignature the root of every
    /// lookup of another account's keys must carry before anything is encrypted to them;
    /// repeat for several (TACIT_REQUIRE_AUDITOR: comma-separated).
    #[arg(long = "require-auditor", global = true, env = "TACIT_REQUIRE_AUDITOR", value_name = "HEX",
          value_parser = parse_key_hex, value_delimiter = ',')]
    pub require_auditor: Vec<[u8; 32]>,
    /// How many of the required auditors must have cosigned (default: all).
    #[arg(
        long,
        global = true,
        env = "TACIT_AUDITOR_THRESHOLD",
        value_name = "N",
        requires = "require_auditor"
    )]
    pub auditor_threshold: Option<usize>,
    /// Print one JSON object per line, each with a "type" field.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or delete this device's account.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Send a text message to every device of NAME.
    Send {
        /// The recipient's account name.
        name: String,
        /// The text.
        text: String,
    },
    /// Print pending messages (waiting up to SECONDS for at least one).
    Receive {
        /// Wait up to this many seconds for at least one message (0: only what is stored; at
        /// most 86400, a day).
        #[arg(long, value_name = "SECONDS", default_value_t = 0,
              value_parser = clap::value_parser!(u64).range(0..=MAX_WAIT_SECS))]
        wait: u64,
    },
    /// Print the conversation with NAME (or, with --group, a group's).
    History {
        /// The contact's account name.
        #[arg(required_unless_present = "group", conflicts_with = "group")]
        name: Option<String>,
        /// A group's conversation instead (its name, or its id or the start of it).
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
    },
    /// Print the safety number with NAME (12 groups of 5 digits).
    SafetyNumber {
        /// The contact's account name.
        name: String,
        /// Also show the scannable payload as a QR code (and its text, for `verify --scan`).
        #[arg(long)]
        qr: bool,
    },
    /// Mark NAME verified if DIGITS equal the safety number (spaces ignored), or if the
    /// payload scanned from NAME's screen (--scan) matches.
    Verify {
        /// The contact's account name.
        name: String,
        /// The safety number as read from the other device.
        #[arg(num_args = 1.., required_unless_present = "scan", conflicts_with = "scan")]
        digits: Vec<String>,
        /// The payload scanned from the contact's `safety-number --qr` (its text form).
        #[arg(long, value_name = "PAYLOAD")]
        scan: Option<String>,
    },
    /// This account's devices: link a new one, approve it, list and revoke them.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Groups (end-to-end encrypted with MLS, every device a member): create, add, remove,
    /// leave, list, members, send.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Local store maintenance.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Sessions with a contact.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Key transparency: what this device has checked, and an account's key history.
    #[command(subcommand)]
    Kt(KtCommand),
    /// Audit a server's key transparency log: every epoch's signed root and append-only
    /// proof from the last one audited (kept in --state) to the newest. Exit 4 on a
    /// violation, 3 when the server cannot be reached.
    Audit(AuditArgs),
    /// Run a relay server (flags, TACIT_* environment variables, or a TOML config file).
    Server(ServerArgs),
    /// Load generators for operators.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run an embedded server and a conversation between alice and bob, then show that the
    /// server holds none of the plaintext.
    Demo,
}

/// `tacit bench ...`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Relay throughput and latency: N connected clients exchange M opaque envelopes.
    Relay(BenchRelayArgs),
}

/// `tacit bench relay` flags.
#[derive(Clone, Debug, Args)]
pub struct BenchRelayArgs {
    /// The server's URL.
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// Connected clients (each an account it creates).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(2..=10_000))]
    pub clients: u32,
    /// Envelopes to send in total.
    #[arg(long, value_name = "M", value_parser = clap::value_parser!(u64).range(1..))]
    pub messages: u64,
    /// Envelope size in bytes (at least 16).
    #[arg(long, value_name = "BYTES", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(16..=65_536))]
    pub size: u32,
    /// The server's registration token, if it requires one.
    #[arg(long, value_name = "T", env = "TACIT_REGISTRATION_TOKEN")]
    pub registration_token: Option<String>,
    /// Sends each client keeps in flight (waiting for the server's "stored").
    #[arg(long, value_name = "W", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub window: u32,
    /// Send with `POST /v1/messages` (one request per envelope) instead of over the WebSocket.
    #[arg(long)]
    pub http: bool,
    /// Run the load twice, quiet and then while one address floods the server at its limits
    /// (connections, account creations, device-list reads, acknowledgements of made-up ids).
    #[arg(long)]
    pub abuse: bool,
    /// With --abuse: the server's TOML config file, whose limits the flooder reaches for
    /// (default: the server's default limits).
    #[arg(long, value_name = "FILE", requires = "abuse")]
    pub server_config: Option<PathBuf>,
    /// With --abuse: the local addresses the honest clients connect from, in turn.
    #[arg(long, value_name = "ADDR,...", value_delimiter = ',', default_value = "127.0.0.1")]
    pub honest_from: Vec<std::net::IpAddr>,
    /// With --abuse: the local address the flooder connects from.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.2")]
    pub flood_from: std::net::IpAddr,
    /// With --abuse: accounts that flood acknowledgements, one WebSocket each.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(0..=1_000))]
    pub flood_accounts: u32,
}

/// `tacit server` flags; each overrides the config file, which overrides the defaults.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on (default 127.0.0.1:7878).
    #[arg(long, env = "TACIT_LISTEN", value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Folder of the embedded SQLite database (default ./tacit-data).
    #[arg(long, env = "TACIT_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// postgres://... to use PostgreSQL instead of SQLite.
    #[arg(long, env = "TACIT_DATABASE_URL", value_name = "URL")]
    pub database: Option<String>,
    /// Only callers presenting this token may create accounts.
    #[arg(long, env = "TACIT_REGISTRATION_TOKEN", value_name = "T")]
    pub registration_token: Option<String>,
    /// PEM certificate chain (HTTPS; needs --tls-key).
    #[arg(long, env = "TACIT_TLS_CERT", value_name = "F", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "TACIT_TLS_KEY", value_name = "F", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The origin clients sign in to (https://chat.example): needed on a wildcard address
    /// without a certificate naming the server.
    #[arg(long, env = "TACIT_ORIGIN", value_name = "URL")]
    pub origin: Option<String>,
    /// A TOML configuration file (see docs/CLI.md).
    #[arg(long, env = "TACIT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Key transparency: publish pending key changes at most this often (`250ms`, `1s`,
    /// `2.5s`; a plain number is seconds; 50 ms to 60 s; default 1s).
    #[arg(long, env = "TACIT_KT_EPOCH_INTERVAL", value_name = "DURATION", value_parser = parse_interval_ms)]
    pub kt_epoch_interval: Option<u64>,
    /// Key transparency: the log's name in signed roots (default `tacit.<origin host>.v1`,
    /// kept from the first start).
    #[arg(long, env = "TACIT_KT_NAMESPACE", value_name = "NAME")]
    pub kt_namespace: Option<String>,
    /// Key transparency: an auditor (Ed25519 key, 64 hex characters) whose cosignatures of
    /// epoch roots the server keeps and serves with each root, for clients that require it;
    /// repeat for several, at most 16 (TACIT_KT_AUDITORS: comma-separated).
    #[arg(long = "kt-auditor", env = "TACIT_KT_AUDITORS", value_name = "HEX", value_delimiter = ',')]
    pub kt_auditor: Vec<String>,
    /// Key transparency: start a new log if the directory's key is this one (64 hex
    /// characters), after restoring the data folder or database from an older copy (which
    /// the clients that saw later epochs refuse as a rollback or a fork). Users then confirm
    /// the new key with `tacit kt trust-new-log --key HEX`. Under any other key, nothing
    /// happens, so the flag left in place never starts a second new log.
    #[arg(long, value_name = "HEX")]
    pub kt_new_log: Option<String>,
}

/// `250ms`, `1s`, `2.5s` or a plain number of seconds, as milliseconds.
fn parse_interval_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (number, scale) = match s.strip_suffix("ms") {
        Some(n) => (n, 1.0),
        None => (s.strip_suffix('s').unwrap_or(s), 1000.0),
    };
    let v: f64 = number.trim().parse().map_err(|_| format!("{s:?} is not a duration (250ms, 1s, 2.5s)"))?;
    if !v.is_finite() || v < 0.0 || v * scale > 1e12 {
        return Err(format!("{s:?} is out of range"));
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok((v * scale).round() as u64)
}

/// `tacit account ...`.
#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Create an account on a server, with this device as its first device.
    Create(CreateArgs),
    /// Delete the account from the server and this device.
    Delete,
    /// Remove the account from this device only, without asking the server (for a server
    /// that no longer knows it, or a store that cannot be opened). Asks on a terminal.
    Forget(ForgetArgs),
}

/// `tacit account forget` flags.
#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Do not ask: remove the account's keys and history from this device.
    #[arg(long)]
    pub yes: bool,
}

/// `tacit account create` flags.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The server's URL, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// The account name: 3 to 32 of a-z 0-9 . _ -
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// The server's registration token, if it requires one.
    #[arg(long, value_name = "T", env = "TACIT_REGISTRATION_TOKEN")]
    pub registration_token: Option<String>,
}

/// `tacit kt ...`.
#[derive(Debug, Subcommand)]
pub enum KtCommand {
    /// The directory's pinned key and namespace, the newest epoch seen, and the check of
    /// this account's own key history (exit 4 when it holds keys this account did not make).
    Status,
    /// Every version of NAME's keys in the directory, with the epoch that published it.
    History {
        /// The account name.
        name: String,
    },
    /// Write epoch E's append-only proof (proof.bin), signed root (signature.json, plexi's
    /// format) and the log's key (verifying_key.hex) into DIR, for `plexi local-audit`.
    Export {
        /// The epoch.
        #[arg(long, value_name = "E")]
        epoch: u64,
        /// The folder to write (made if needed).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Trust the server's new log after its operator started one (`tacit server
    /// --kt-new-log`, after putting the server back from an older copy): the server must
    /// show exactly KEY, which you confirm with the operator out of band. The old log is
    /// kept in `tacit kt status`.
    TrustNewLog {
        /// The new log's key, 64 hex characters.
        #[arg(long, value_name = "HEX", value_parser = parse_key_hex)]
        key: [u8; 32],
    },
}

/// `tacit audit` flags.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// The server whose log to audit (http(s)://host[:port]); with --serve, audited again
    /// every 10 seconds.
    #[arg(long, value_name = "URL", required_unless_present_any = ["serve", "log_dir"])]
    pub server: Option<String>,
    /// Audit an akd log published as audit blobs (`EPOCH/PREVIOUS/CURRENT`, as akd's API
    /// writes them) in a folder, or at an http(s) URL listed as S3 buckets list
    /// (`?list-type=2`), instead of a server; with --verifying-key, the plexi signatures in
    /// signatures/ are checked too.
    #[arg(long, value_name = "DIR_OR_URL", conflicts_with_all = ["server", "serve"])]
    pub log_dir: Option<PathBuf>,
    /// The log's Ed25519 key (64 hex characters), for --log-dir.
    #[arg(long, value_name = "HEX", value_parser = parse_key_hex, requires = "log_dir")]
    pub verifying_key: Option<[u8; 32]>,
    /// Serve the countersignatures over plexi's auditor API on ADDR (`plexi audit
    /// --remote-url http://ADDR` verifies them and the log's proofs); needs --cosign.
    #[arg(long, value_name = "ADDR", requires = "cosign")]
    pub serve: Option<std::net::SocketAddr>,
    /// Where the auditor keeps the last epoch audited and its root (JSON; made on the first
    /// run, which audits from the first epoch).
    #[arg(long, value_name = "FILE", required_unless_present = "log_dir")]
    pub state: Option<PathBuf>,
    /// Countersign each verified root with this Ed25519 key (64 hex characters of seed; made
    /// if the file does not exist), as plexi signatures in FILE.d/audits/ next to --state.
    #[arg(long, value_name = "KEYFILE")]
    pub cosign: Option<PathBuf>,
}

/// 64 hex characters as 32 bytes.
pub fn parse_key_hex(s: &str) -> Result<[u8; 32], String> {
    let s = s.trim();
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("expected 64 hex characters".into());
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        let pair = s.get(2 * i..2 * i + 2).ok_or("expected 64 hex characters")?;
        *o = u8::from_str_radix(pair, 16).map_err(|_| "expected 64 hex characters".to_string())?;
    }
    Ok(out)
}

/// `tacit session ...`.
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Start a new session with every device of NAME (when messages with NAME no longer
    /// decrypt): the old sessions are no longer used, and the next message in each direction
    /// goes over the new one.
    Reset {
        /// The contact's account name.
        name: String,
    },
}

/// `tacit group ...`. A group is named by its name, or by its id (or the start of it, 4
/// hex digits at least) when names clash; members are account names (all their devices).
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group named NAME with the accounts of --members (and this account's other
    /// devices).
    Create {
        /// The group's name (at most 128 bytes; kept in the encrypted group state).
        name: String,
        /// Account names, comma-separated.
        #[arg(long, value_delimiter = ',', value_name = "A,B,...")]
        members: Vec<String>,
    },
    /// Add every device of each MEMBER to the group.
    Add {
        /// The group.
        name: String,
        /// Account names.
        #[arg(required = true)]
        members: Vec<String>,
    },
    /// Remove every device of each MEMBER from the group.
    Remove {
        /// The group.
        name: String,
        /// Account names.
        #[arg(required = true)]
        members: Vec<String>,
    },
    /// Rename the group (for every member; the name stays in the encrypted group state).
    Rename {
        /// The group.
        name: String,
        /// Its new name.
        new_name: String,
    },
    /// Replace this device's keys in the group now (done on its own every 7 days or so;
    /// by hand after this device may have been exposed).
    Update {
        /// The group.
        name: String,
    },
    /// Leave the group (this device).
    Leave {
        /// The group.
        name: String,
    },
    /// The groups this device is in.
    List,
    /// A group's member devices.
    Members {
        /// The group.
        name: String,
    },
    /// Send a text to every member device of the group.
    Send {
        /// The group.
        name: String,
        /// The text.
        text: String,
    },
}

/// `tacit device ...`.
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// On a NEW device: ask to join an existing account. Prints a link code (and a QR code of
    /// it on a terminal) and waits up to 10 minutes for a device of the account to approve it.
    Link(LinkArgs),
    /// On a device holding the account key: approve the device showing CODE (its label and
    /// fingerprint are shown first), send it what it needs and the history.
    Approve(ApproveArgs),
    /// List this account's devices.
    List,
    /// Revoke device ID (this device's own id logs it out and removes the account here).
    Revoke(RevokeArgs),
}

/// `tacit device link` flags.
#[derive(Debug, Args)]
pub struct LinkArgs {
    /// The server's URL, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// A name for this device, shown to your other devices and your contacts (at most 64 bytes).
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub label: String,
    /// Decline the history the approving device sends (also skips an interrupted import
    /// when re-run).
    #[arg(long)]
    pub no_history: bool,
}

/// `tacit device approve` flags.
#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The code the new device shows (spaces and dashes ignored).
    #[arg(num_args = 1.., required = true)]
    pub code: Vec<String>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Give the new device the account key too: it can then approve and revoke devices.
    #[arg(long)]
    pub approver: bool,
    /// Do not send the history.
    #[arg(long)]
    pub no_history: bool,
}

/// `tacit device revoke` flags.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The device's id (see `tacit device list`).
    pub id: u32,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

/// `tacit store ...`.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Change the store's passphrase (TACIT_NEW_PASSPHRASE, or asked; empty for none).
    Rekey,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_contract() {
        let c = Cli::try_parse_from([
            "tacit", "--home", "/h", "account", "create", "--server", "http://x", "--name", "alice",
        ])
        .unwrap();
        assert_eq!(c.home.as_deref(), Some(std::path::Path::new("/h")));
        assert!(
            matches!(c.command, Command::Account(AccountCommand::Create(ref a)) if a.name == "alice" && a.registration_token.is_none())
        );
        let c = Cli::try_parse_from(["tacit", "send", "bob", "hello there", "--json"]).unwrap();
        assert!(c.json);
        assert!(
            matches!(c.command, Command::Send { ref name, ref text } if name == "bob" && text == "hello there")
        );
        let c = Cli::try_parse_from(["tacit", "receive", "--wait", "5"]).unwrap();
        assert!(matches!(c.command, Command::Receive { wait: 5 }));
        let c = Cli::try_parse_from(["tacit", "verify", "bob", "12345", "67890"]).unwrap();
        assert!(matches!(c.command, Command::Verify { ref digits, .. } if digits.len() == 2));
        assert!(Cli::try_parse_from(["tacit", "safety-number", "bob"]).is_ok());
        assert!(Cli::try_parse_from(["tacit", "history", "bob"]).is_ok());
        assert!(Cli::try_parse_from(["tacit", "store", "rekey"]).is_ok());
        let c = Cli::try_parse_from(["tacit", "session", "reset", "bob", "--json"]).unwrap();
        assert!(c.json);
        assert!(matches!(c.command, Command::Session(SessionCommand::Reset { ref name }) if name == "bob"));
        assert!(Cli::try_parse_from(["tacit", "session", "reset"]).is_err());
        assert!(Cli::try_parse_from(["tacit", "account", "delete"]).is_ok());
        let c = Cli::try_parse_from(["tacit", "account", "forget", "--yes"]).unwrap();
        assert!(matches!(c.command, Command::Account(AccountCommand::Forget(ref f)) if f.yes));
        assert!(Cli::try_parse_from(["tacit", "demo"]).is_ok());
        let c = Cli::try_parse_from([
            "tacit",
            "bench",
            "relay",
            "--server",
            "http://x",
            "--clients",
            "100",
            "--messages",
            "5",
        ])
        .unwrap();
        assert!(
            matches!(c.command, Command::Bench(BenchCommand::Relay(ref b)) if b.size == 1024 && b.clients == 100)
        );
        let c = Cli::try_parse_from([
            "tacit",
            "bench",
            "relay",
            "--server",
            "http://x",
            "--clients",
            "100",
            "--messages",
            "5",
            "--abuse",
            "--server-config",
            "tacit.toml",
            "--honest-from",
            "127.0.0.1,127.0.1.1",
        ])
        .unwrap();
        assert!(matches!(c.command, Command::Bench(BenchCommand::Relay(ref b))
            if b.abuse && b.honest_from.len() == 2 && b.flood_from.to_string() == "127.0.0.2"
                && b.server_config.is_some()));
        assert!(
            Cli::try_parse_from([
                "tacit",
                "bench",
                "relay",
                "--server",
                "u",
                "--clients",
                "1",
                "--messages",
                "5"
            ])
            .is_err()
        );
        let c = Cli::try_parse_from([
            "tacit",
            "server",
            "--listen",
            "0.0.0.0:8443",
            "--data",
            "/d",
            "--registration-token",
            "t",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ])
        .unwrap();
        assert!(
            matches!(c.command, Command::Server(ref s) if s.listen.unwrap().port() == 8443 && s.data.is_some())
        );
        assert!(Cli::try_parse_from(["tacit", "server", "--tls-cert", "c.pem"]).is_err(), "cert needs key");
        let c = Cli::try_parse_from(["tacit", "--insecure-http", "server", "--origin", "https://c.example"])
            .unwrap();
        assert!(c.insecure_http);
        assert!(
            matches!(c.command, Command::Server(ref s) if s.origin.as_deref() == Some("https://c.example"))
        );
        assert!(
            Cli::try_parse_from(["tacit", "send", "bob", "hi", "--insecure-http"]).unwrap().insecure_http
        );
        assert!(Cli::try_parse_from(["tacit", "server", "--listen", "nowhere"]).is_err());
    }

    #[test]
    fn refuses_bad_usage() {
        assert!(Cli::try_parse_from(["tacit"]).is_err());
        assert!(Cli::try_parse_from(["tacit", "send", "bob"]).is_err());
        assert!(Cli::try_parse_from(["tacit", "receive", "--wait", "soon"]).is_err());
        assert!(Cli::try_parse_from(["tacit", "receive", "--wait", "86400"]).is_ok());
        assert!(Cli::try_parse_from(["tacit", "receive", "--wait", "86401"]).is_err());
        assert!(Cli::try_parse_from(["tacit", "account", "create", "--name", "alice"]).is_err());
        assert!(Cli::try_parse_from(["tacit", "verify", "bob"]).is_err());
        assert!(Cli::try_parse_from(["tacit", "frobnicate"]).is_err());
    }
}
