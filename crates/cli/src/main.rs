//! `tacit`: the command-line client (and, later, server and demo). The contract — commands,
//! flags, `--json` lines and exit codes — is docs/CLI.md.

mod abuse;
mod args;
mod audit_serve;
mod bench;
mod demo;
mod devices;
mod groups;
mod output;
mod server;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tacit_client::{Client, ClientError, ConnectOptions, ErrorKind, ReceiveEvent, StoreSecret};
use zeroize::Zeroizing;

use args::{AccountCommand, BenchCommand, Cli, Command, KtCommand, SessionCommand, StoreCommand};
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
        Err(e) => return argument_error(&e),
    };
    let out = Out::new(cli.json);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            out.error("failure", &format!("cannot start the runtime: {e}"));
            return ExitCode::from(exit::FAILURE);
        }
    };
    let home_dir = home(cli.home.clone()).ok();
    match runtime.block_on(run(cli, &out)) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            // A disk or permission failure of the database in the middle of a command (a full
            // disk at a commit) names the file too (issue 8, point 10).
            let e = match (e, home_dir) {
                (CliError::Client(e), Some(h)) => CliError::Client(e.in_home(&h)),
                (e, _) => e,
            };
            match &e {
                // A key transparency check names itself (`"violation": "rollback"`, …).
                CliError::Client(c) if out.is_json() && c.kt_violation().is_some() => {
                    out.raw(serde_json::json!({"type": "error", "kind": e.kind(), "message": e.to_string(),
                        "violation": c.kt_violation().map(tacit_client::KtViolation::name)}));
                }
                _ => out.error(e.kind(), &e.to_string()),
            }
            ExitCode::from(e.code())
        }
    }
}

/// A command line clap refused (or `--help`, `--version`, which clap reports the same way).
/// With `--json` every error is a JSON line like any other (issue 8, point 7); help and
/// version print as they are.
fn argument_error(e: &clap::Error) -> ExitCode {
    if !e.use_stderr() {
        let _ = e.print();
        return ExitCode::from(exit::OK);
    }
    if json_requested(std::env::args_os().skip(1)) {
        Out::new(true).error("usage", &argument_error_message(e));
    } else {
        let _ = e.print();
    }
    ExitCode::from(exit::USAGE)
}

/// Whether `--json` is among the raw arguments (before a `--`, after which everything is a
/// value): the parse failed, so there is no `Cli` to ask, and an argument may not even be
/// UTF-8.
fn json_requested(args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    args.take_while(|a| a != "--").any(|a| a == "--json")
}

/// clap's error as one line: its first paragraph (without the `error: ` prefix) and the usage
/// line, without styles, tips or the pointer to `--help`.
fn argument_error_message(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let paragraphs: Vec<String> = rendered
        .split("\n\n")
        .map(|p| p.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect();
    let usage = paragraphs.iter().find(|p| p.starts_with("Usage:"));
    let first = if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // clap printed the whole help: say what is missing instead.
        "a command is required".to_owned()
    } else {
        paragraphs.first().map(|p| p.strip_prefix("error: ").unwrap_or(p).to_owned()).unwrap_or_default()
    };
    match usage {
        Some(u) if !first.starts_with("Usage:") => format!("{first} ({u}; see --help)"),
        _ => format!("{first} (see --help)"),
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

/// `tacit audit --server URL --state FILE [--cosign KEYFILE] [--serve ADDR]`.
async fn audit(args: args::AuditArgs, options: &ConnectOptions, out: &Out) -> Result<(), CliError> {
    if let Some(dir) = &args.log_dir {
        let report =
            tacit_client::audit::audit_log_at(&dir.to_string_lossy(), options, args.verifying_key).await?;
        out.audit_log_dir(dir, &report);
        return Ok(());
    }
    let state = args.state.clone().ok_or_else(|| CliError::Usage("--state FILE is needed".into()))?;
    let signer = match &args.cosign {
        Some(path) => Some(tacit_client::audit::load_or_make_cosign_key(path)?),
        None => None,
    };
    if let Some(server) = &args.server {
        let report =
            tacit_client::audit::audit_server(server, &state, options, signer.as_ref(), |done, total| {
                out.progress("audited", done, total);
            })
            .await?;
        out.audit(server, &state, &report, signer.as_ref().map(|s| s.public()));
    }
    let (Some(addr), Some(signer)) = (args.serve, signer) else { return Ok(()) };
    let router = audit_serve::router(&state, signer.public());
    if let Some(server) = args.server.clone() {
        // Audit again every 10 seconds while serving; a violation is said and stops the audit.
        let (state, options, out2) = (state.clone(), options.clone(), Out::new(out.is_json()));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                match tacit_client::audit::audit_server(&server, &state, &options, Some(&signer), |_, _| {})
                    .await
                {
                    Ok(r) if r.epochs > 0 => out2.audit(&server, &state, &r, Some(signer.public())),
                    Ok(_) => {}
                    Err(e) => out2.warnings(vec![format!("audit of {server}: {e}")]),
                }
            }
        });
    }
    let json = out.is_json();
    audit_serve::serve(addr, router, |bound| Out::new(json).serving_audits(bound), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .map_err(|e| CliError::Server(format!("cannot serve on {addr}: {e}")))
}

/// The global flags that say how to reach the server and what to trust.
struct Connect {
    ca_file: Option<PathBuf>,
    insecure_http: bool,
    kt_key: Option<[u8; 32]>,
    require_auditor: Vec<[u8; 32]>,
    auditor_threshold: Option<usize>,
}

/// The extra trusted CAs of `--ca-file` (none without it), whether `--insecure-http`
/// allows plain HTTP to a remote host, the transparency key and the required auditors.
fn connect_options(c: &Connect) -> Result<ConnectOptions, CliError> {
    let mut base = ConnectOptions::default().allow_remote_plain_http(c.insecure_http);
    if let Some(key) = c.kt_key {
        base = base.with_transparency_key(key);
    }
    if !c.require_auditor.is_empty() {
        base = base.with_required_auditors(&c.require_auditor, c.auditor_threshold)?;
    }
    let Some(path) = c.ca_file.as_deref() else { return Ok(base) };
    let pem = std::fs::read(path)
        .map_err(|e| CliError::Usage(format!("cannot read the CA file {}: {e}", path.display())))?;
    Ok(base.with_extra_roots_pem(&pem)?)
}

/// Runs `f` with the store's passphrase: none for a store without one, else from
/// `TACIT_PASSPHRASE` or asked on a terminal. A rekey interrupted between a passphrase and a
/// key file leaves both kinds of file: when the key file does not open the store, it is the
/// passphrase's, so `f` runs again with it.
fn with_passphrase<T>(
    home: &Path,
    f: impl Fn(Option<&Zeroizing<String>>) -> Result<T, ClientError>,
) -> Result<T, CliError> {
    if !Client::exists(home) {
        return Err(ClientError::NoAccount.into());
    }
    let ask = || match env_secret("TACIT_PASSPHRASE") {
        Some(p) => Ok(p),
        None if std::io::stdin().is_terminal() => prompt("Passphrase: "),
        None => Err(CliError::from(ClientError::PassphraseRequired)),
    };
    let pass = if Client::needs_passphrase(home) { Some(ask()?) } else { None };
    match f(pass.as_ref()) {
        Err(ClientError::PassphraseRequired) if pass.is_none() => Ok(f(Some(&ask()?))?),
        other => Ok(other?),
    }
}

fn open(home: &Path, options: &ConnectOptions, json: bool) -> Result<Client, CliError> {
    // Another process using this home (a `receive --wait` in another terminal, a script's
    // parallel sends) holds its lock while it changes protocol state: say so while waiting.
    let notice: tacit_client::LockNotice = std::sync::Arc::new(move |m: &str| Out::new(json).notice(m));
    with_passphrase(home, |pass| Client::open_with_notice(home, pass, options, Some(notice.clone())))
}

/// The name of the account `account forget` would remove (`None`: its key file is missing, so
/// the store cannot be opened to read it; forgetting is the way out). A wrong passphrase is
/// refused: whoever cannot open the store removes the folder by hand.
fn forget_name(home: &Path) -> Result<Option<String>, CliError> {
    match with_passphrase(home, |pass| Client::local_account_name(home, pass)) {
        Ok(n) => Ok(Some(n)),
        Err(CliError::Client(ClientError::KeyFileMissing { .. })) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `account forget` removes keys and history for good: `--yes`, or the account's name typed
/// on a terminal (`y` when the name cannot be read). Without a terminal, `--yes` is needed.
fn confirm_forget(home: &Path, name: Option<&str>, yes: bool) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(
            "account forget removes this device's keys and history for good: pass --yes to confirm \
             (there is no terminal to ask on)"
                .into(),
        ));
    }
    let expected = name.unwrap_or("y");
    eprint!(
        "This removes {} from this device ({}): its keys and its history, for good. The server is not \
         told. Type {} to confirm: ",
        name.map_or_else(|| "the account".to_owned(), |n| format!("the account {n}")),
        home.display(),
        if name.is_some() { "the account's name" } else { "y" }
    );
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| CliError::Local(format!("cannot read the answer: {e}")))?;
    if answer.trim() != expected {
        return Err(CliError::Local("not confirmed: nothing was removed".into()));
    }
    Ok(())
}

async fn run(cli: Cli, out: &Out) -> Result<(), CliError> {
    let connect = Connect {
        ca_file: cli.ca_file.clone(),
        insecure_http: cli.insecure_http,
        kt_key: cli.kt_key,
        require_auditor: cli.require_auditor.clone(),
        auditor_threshold: cli.auditor_threshold,
    };
    let command = match cli.command {
        Command::Server(args) => return server::run(args).await,
        Command::Demo => return demo::run(out, cli.json).await,
        Command::Audit(args) => {
            let options = connect_options(&connect)?;
            return audit(args, &options, out).await;
        }
        Command::Bench(BenchCommand::Relay(args)) => {
            let options = connect_options(&connect)?;
            return bench::run(args, &options, out, cli.json).await;
        }
        other => other,
    };
    let home = home(cli.home)?;
    let options = connect_options(&connect)?;
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
            let c = open(&home, &options, cli.json)?;
            let name = c.account_name().to_owned();
            c.delete_account().await?;
            out.account_deleted(&name);
        }
        Command::Account(AccountCommand::Forget(a)) => {
            let name = forget_name(&home)?;
            confirm_forget(&home, name.as_deref(), a.yes)?;
            Client::forget(&home)?;
            out.account_forgotten(name.as_deref(), &home);
        }
        Command::Send { name, text } => {
            let mut c = open(&home, &options, cli.json)?;
            let r = c.send_text(&name, &text).await;
            out.warnings(c.take_warnings());
            out.sent(&name, &r?);
        }
        Command::Receive { wait } => {
            let mut c = open(&home, &options, cli.json)?;
            // Each message is printed the moment it is stored, before its ack: an error later
            // (the server gone, a failed prekey refill) loses nothing from the output.
            let r = c
                .receive_each(Duration::from_secs(wait), |event| match event {
                    ReceiveEvent::Message(m) => out.message(m),
                    ReceiveEvent::Warning(w) => out.warnings(vec![w]),
                    ReceiveEvent::Group(ev) => out.group_event(ev),
                    _ => {}
                })
                .await;
            out.warnings(c.take_warnings());
            r?;
        }
        Command::History { group: Some(group), .. } => {
            let c = open(&home, &options, cli.json)?;
            for e in c.group_history(&group)? {
                out.group_history(&group, &e);
            }
        }
        Command::History { name: None, .. } => {
            return Err(CliError::Usage("name a contact, or a group with --group".into()));
        }
        Command::History { name: Some(name), group: None } => {
            let mut c = open(&home, &options, cli.json)?;
            out.warnings(c.take_warnings());
            // Notices (devices added and removed) among the messages, by time.
            let mut notices = c.notices(&name)?.into_iter().peekable();
            for e in c.history(&name)? {
                let at = e.server_time_ms.unwrap_or(e.sent_time_ms);
                while let Some((t, text)) = notices.next_if(|(t, _)| *t <= at) {
                    out.notice_line(&name, t, &text);
                }
                out.history(&e);
            }
            for (t, text) in notices {
                out.notice_line(&name, t, &text);
            }
        }
        Command::SafetyNumber { name, qr } => {
            let mut c = open(&home, &options, cli.json)?;
            let r = c.safety_number(&name).await;
            out.warnings(c.take_warnings());
            let verified = c.is_verified(&name)?;
            out.safety_number(&name, &r?, verified);
            if qr {
                let payload = c.safety_number_payload(&name).await?;
                devices::print_qr(out, &name, &payload);
            }
        }
        Command::Verify { name, digits, scan } => {
            let mut c = open(&home, &options, cli.json)?;
            let r = match scan {
                Some(payload) => c.verify_scanned(&name, &payload).await,
                None => c.verify(&name, &digits.join(" ")).await,
            };
            out.warnings(c.take_warnings());
            r?;
            out.verified(&name);
        }
        Command::Device(cmd) => devices::run(cmd, &home, &options, out, cli.json).await?,
        Command::Group(cmd) => groups::run(cmd, &home, &options, out, cli.json).await?,
        Command::Kt(KtCommand::Status) => {
            let mut c = open(&home, &options, cli.json)?;
            let r = c.kt_status().await;
            out.warnings(c.take_warnings());
            let status = r?;
            out.kt_status(&status);
            if !status.forks.is_empty() {
                return Err(CliError::Security(format!(
                    "key transparency: {} fork(s) found by comparing roots with contacts (see above): the \
                     server shows different people different logs",
                    status.forks.len()
                )));
            }
            if let Some(own) = status.own_history.as_ref().filter(|o| !o.alarms.is_empty()) {
                return Err(CliError::Security(format!(
                    "key transparency: {} version(s) of this account's keys were not made by it (see above); \
                     the server, or whoever holds its database, may be impersonating you",
                    own.alarms.len()
                )));
            }
        }
        Command::Kt(KtCommand::Export { epoch, out: dir }) => {
            let mut c = open(&home, &options, cli.json)?;
            let r = c.kt_export(epoch, &dir).await;
            out.warnings(c.take_warnings());
            r?;
            out.kt_exported(epoch, &dir);
        }
        Command::Kt(KtCommand::TrustNewLog { key }) => {
            let mut c = open(&home, &options, cli.json)?;
            let r = c.kt_trust_new_log(key).await;
            out.warnings(c.take_warnings());
            out.kt_new_log(&key, r?.as_ref());
        }
        Command::Kt(KtCommand::History { name }) => {
            let mut c = open(&home, &options, cli.json)?;
            let r = c.kt_history(&name).await;
            out.warnings(c.take_warnings());
            out.kt_history(&name, &r?);
        }
        Command::Session(SessionCommand::Reset { name }) => {
            let mut c = open(&home, &options, cli.json)?;
            let r = c.reset_session(&name).await;
            out.warnings(c.take_warnings());
            out.session_reset(&name, &r?);
        }
        Command::Store(StoreCommand::Rekey) => {
            let mut c = open(&home, &options, cli.json)?;
            let secret = new_secret("TACIT_NEW_PASSPHRASE", true)?;
            let with_passphrase = matches!(&secret, StoreSecret::Passphrase(p) if !p.is_empty());
            c.rekey(secret)?;
            out.rekeyed(with_passphrase);
        }
        Command::Server(_) | Command::Demo | Command::Bench(_) | Command::Audit(_) => {}
    }
    Ok(())
}
