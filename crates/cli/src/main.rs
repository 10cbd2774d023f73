//! `tacit`: the command-line client (and, later, server and demo). The contract — commands,
//! flags, `--json` lines and exit codes — is docs/CLI.md.

mod abuse;
mod args;
mod bench;
mod demo;
mod output;
mod server;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tacit_client::{Client, ClientError, ConnectOptions, ErrorKind, StoreSecret};
use zeroize::Zeroizing;

use args::{AccountCommand, BenchCommand, Cli, Command, SessionCommand, StoreCommand};
use output::Out;

/// Exit codes (docs/CLI.md).
mod exit {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NETWORK: u8 = 3;
    pub const SECURITY: u8 = 4;
    pub const NOT_FOUND: u8 = 5;
}

/// A command failure: the SDK's error, or a usage problem found by the CLI itself.
#[derive(Debug, thiserror::Error)]
enum CliError {
    /// From the SDK.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Bad usage detected after parsing.
    #[error("{0}")]
    Usage(String),
    /// A local failure outside the SDK.
    #[error("{0}")]
    Local(String),
    /// The embedded or standalone server failed.
    #[error("server: {0}")]
    Server(String),
    /// A check that guards a security property failed.
    #[error("{0}")]
    Security(String),
}

impl CliError {
    fn code(&self) -> u8 {
        match self {
            Self::Usage(_) => exit::USAGE,
            Self::Local(_) => exit::FAILURE,
            Self::Server(_) => exit::NETWORK,
            Self::Security(_) => exit::SECURITY,
            Self::Client(e) => match e.kind() {
                ErrorKind::Usage => exit::USAGE,
                ErrorKind::Network => exit::NETWORK,
                ErrorKind::Security => exit::SECURITY,
                ErrorKind::NotFound => exit::NOT_FOUND,
                _ => exit::FAILURE,
            },
        }
    }

    fn kind(&self) -> &'static str {
        match self.code() {
            exit::USAGE => "usage",
            exit::NETWORK => "network",
            exit::SECURITY => "security",
            exit::NOT_FOUND => "not_found",
            _ => "failure",
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { exit::OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let out = Out::new(cli.json);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            out.error("failure", &format!("cannot start the runtime: {e}"));
            return ExitCode::from(exit::FAILURE);
        }
    };
    match runtime.block_on(run(cli, &out)) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            out.error(e.kind(), &e.to_string());
            ExitCode::from(e.code())
        }
    }
}

/// The platform's data directory (XDG on Linux and other Unix, Application Support on
/// macOS, %APPDATA% on Windows), without a dependency for a few lines.
fn data_dir() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if cfg!(windows) {
        return env("APPDATA");
    }
    if cfg!(target_os = "macos") {
        return env("HOME").map(|h| h.join("Library/Application Support"));
    }
    env("XDG_DATA_HOME").filter(|p| p.is_absolute()).or_else(|| env("HOME").map(|h| h.join(".local/share")))
}

fn home(cli_home: Option<PathBuf>) -> Result<PathBuf, CliError> {
    match cli_home {
        Some(h) => Ok(h),
        None => data_dir().map(|d| d.join("tacit")).ok_or_else(|| {
            CliError::Usage("no platform data directory: pass --home or set TACIT_HOME".into())
        }),
    }
}

fn env_secret(var: &str) -> Option<Zeroizing<String>> {
    std::env::var(var).ok().map(Zeroizing::new)
}

fn prompt(label: &str) -> Result<Zeroizing<String>, CliError> {
    rpassword::prompt_password(label)
        .map(Zeroizing::new)
        .map_err(|e| CliError::Local(format!("cannot read the passphrase: {e}")))
}

/// A new passphrase from `var`, or asked twice on a terminal; empty means none.
fn new_secret(var: &str, required: bool) -> Result<StoreSecret, CliError> {
    if let Some(p) = env_secret(var) {
        return Ok(StoreSecret::Passphrase(p));
    }
    if !std::io::stdin().is_terminal() {
        if required {
            return Err(CliError::Usage(format!("set {var} (empty for no passphrase) or run interactively")));
        }
        return Ok(StoreSecret::NoPassphrase);
    }
    let first = prompt("New passphrase for the local store (empty: none, a private key file is used): ")?;
    if first.is_empty() {
        return Ok(StoreSecret::NoPassphrase);
    }
    let again = prompt("Repeat it: ")?;
    if *first != *again {
        return Err(CliError::Usage("the passphrases differ".into()));
    }
    Ok(StoreSecret::Passphrase(first))
}

/// The extra trusted CAs of `--ca-file` (none without it), and whether `--insecure-http`
/// allows plain HTTP to a remote host.
fn connect_options(ca_file: Option<&Path>, insecure_http: bool) -> Result<ConnectOptions, CliError> {
    let base = ConnectOptions::default().allow_remote_plain_http(insecure_http);
    let Some(path) = ca_file else { return Ok(base) };
    let pem = std::fs::read(path)
        .map_err(|e| CliError::Usage(format!("cannot read the CA file {}: {e}", path.display())))?;
    Ok(base.with_extra_roots_pem(&pem)?)
}

fn open(home: &Path, options: &ConnectOptions) -> Result<Client, CliError> {
    if !Client::exists(home) {
        return Err(ClientError::NoAccount.into());
    }
    let ask = || match env_secret("TACIT_PASSPHRASE") {
        Some(p) => Ok(p),
        None if std::io::stdin().is_terminal() => prompt("Passphrase: "),
        None => Err(CliError::from(ClientError::PassphraseRequired)),
    };
    let pass = if Client::needs_passphrase(home) { Some(ask()?) } else { None };
    match Client::open_with(home, pass.as_ref(), options) {
        // A rekey interrupted between a passphrase and a key file leaves both kinds of file:
        // the key file did not open the store, so it is the passphrase's.
        Err(ClientError::PassphraseRequired) if pass.is_none() => {
            Ok(Client::open_with(home, Some(&ask()?), options)?)
        }
        other => Ok(other?),
    }
}

async fn run(cli: Cli, out: &Out) -> Result<(), CliError> {
    let command = match cli.command {
        Command::Server(args) => return server::run(args).await,
        Command::Demo => return demo::run(out, cli.json).await,
        Command::Bench(BenchCommand::Relay(args)) => {
            let options = connect_options(cli.ca_file.as_deref(), cli.insecure_http)?;
            return bench::run(args, &options, out, cli.json).await;
        }
        other => other,
    };
    let home = home(cli.home)?;
    let options = connect_options(cli.ca_file.as_deref(), cli.insecure_http)?;
    match command {
        Command::Account(AccountCommand::Create(a)) => {
            let secret = new_secret("TACIT_PASSPHRASE", false)?;
            let token = a.registration_token.as_deref();
            let mut c =
                Client::create_account_with(&home, secret, &a.server, &a.name, token, &options).await?;
            out.warnings(c.take_warnings());
            out.account_created(c.account_name(), c.device_id(), c.server(), &home);
        }
        Command::Account(AccountCommand::Delete) => {
            let c = open(&home, &options)?;
            let name = c.account_name().to_owned();
            c.delete_account().await?;
            out.account_deleted(&name);
        }
        Command::Send { name, text } => {
            let mut c = open(&home, &options)?;
            let r = c.send_text(&name, &text).await;
            out.warnings(c.take_warnings());
            out.sent(&name, &r?);
        }
        Command::Receive { wait } => {
            let mut c = open(&home, &options)?;
            let r = c.receive(Duration::from_secs(wait)).await;
            out.warnings(c.take_warnings());
            for m in r? {
                out.message(&m);
            }
        }
        Command::History { name } => {
            let c = open(&home, &options)?;
            for e in c.history(&name)? {
                out.history(&e);
            }
        }
        Command::SafetyNumber { name } => {
            let mut c = open(&home, &options)?;
            let r = c.safety_number(&name).await;
            out.warnings(c.take_warnings());
            let verified = c.is_verified(&name)?;
            out.safety_number(&name, &r?, verified);
        }
        Command::Verify { name, digits } => {
            let mut c = open(&home, &options)?;
            let r = c.verify(&name, &digits.join(" ")).await;
            out.warnings(c.take_warnings());
            r?;
            out.verified(&name);
        }
        Command::Session(SessionCommand::Reset { name }) => {
            let mut c = open(&home, &options)?;
            let r = c.reset_session(&name).await;
            out.warnings(c.take_warnings());
            out.session_reset(&name, &r?);
        }
        Command::Store(StoreCommand::Rekey) => {
            let mut c = open(&home, &options)?;
            let secret = new_secret("TACIT_NEW_PASSPHRASE", true)?;
            let with_passphrase = matches!(&secret, StoreSecret::Passphrase(p) if !p.is_empty());
            c.rekey(secret)?;
            out.rekeyed(with_passphrase);
        }
        Command::Server(_) | Command::Demo | Command::Bench(_) => {}
    }
    Ok(())
}
