//! `tacit server`: flags and `TACIT_*` variables override the config file, which overrides
//! the defaults (`tacit_server::ServerConfig`).

use tacit_server::ServerConfig;

use crate::CliError;
use crate::args::ServerArgs;

/// The configuration `args` describe.
pub fn config(args: ServerArgs) -> Result<ServerConfig, CliError> {
    let mut c = match &args.config {
        Some(path) => ServerConfig::load(path).map_err(|e| CliError::Usage(e.to_string()))?,
        None => ServerConfig::default(),
    };
    if let Some(v) = args.listen {
        c.listen = v;
    }
    if let Some(v) = args.data {
        c.data_dir = v;
    }
    if let Some(url) = args.database {
        // Empty (`--database ""`, `TACIT_DATABASE_URL=`) means the embedded SQLite database,
        // also over a file's database_url (issue 8, point 14).
        c.database_url = Some(url);
    }
    c.database_url = c.database_url.filter(|u| !u.trim().is_empty());
    if args.registration_token.is_some() {
        c.registration_token = args.registration_token;
    }
    if args.tls_cert.is_some() {
        c.tls_cert = args.tls_cert;
        c.tls_key = args.tls_key;
    }
    if args.origin.is_some() {
        c.origin = args.origin;
    }
    if let Some(ms) = args.kt_epoch_interval {
        c.kt_epoch_interval_ms = ms;
    }
    if args.kt_namespace.is_some() {
        c.kt_namespace = args.kt_namespace;
    }
    if !args.kt_auditor.is_empty() {
        c.kt_auditors = args.kt_auditor;
    }
    c.kt_new_log = args.kt_new_log;
    // The flags' ranges, as for a file's values (exit 2 naming the setting).
    c.check().map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(c)
}

/// Serves until Ctrl-C or SIGTERM; SIGHUP reloads the TLS certificate and key.
pub async fn run(args: ServerArgs) -> Result<(), CliError> {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let config = config(args)?;
    let server = tacit_server::Server::bind(config).await.map_err(|e| CliError::Server(e.to_string()))?;
    #[cfg(unix)]
    reload_on_hangup(server.tls_reloader())?;
    server.run(shutdown_signal()).await.map_err(|e| CliError::Server(e.to_string()))
}

/// On each SIGHUP, reloads the certificate and key from their files (a failed reload keeps
/// serving the old pair and says why). Installed before the server listens, so a SIGHUP
/// never ends it; without TLS it is logged and ignored.
#[cfg(unix)]
fn reload_on_hangup(reloader: Option<tacit_server::TlsReloader>) -> Result<(), CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())
        .map_err(|e| CliError::Server(format!("cannot listen for SIGHUP: {e}")))?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match &reloader {
                None => tracing::info!("SIGHUP: no TLS certificate to reload"),
                Some(r) => match r.reload() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                    Err(e) => {
                        tracing::warn!(error = %e, "SIGHUP: TLS certificate not reloaded; serving the old one")
                    }
                },
            }
        }
    });
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn flags_override_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tacit.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\ndata_dir = \"/from-file\"\nregistration_token = \"f\"\n",
        )
        .unwrap();
        let cli = crate::args::Cli::try_parse_from([
            "tacit",
            "server",
            "--config",
            file.to_str().unwrap(),
            "--data",
            "/from-flag",
        ])
        .unwrap();
        let crate::args::Command::Server(args) = cli.command else { panic!("not server") };
        let c = config(args).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.data_dir, std::path::PathBuf::from("/from-flag"));
        assert_eq!(c.registration_token.as_deref(), Some("f"));
    }

    #[test]
    fn an_empty_database_url_means_the_embedded_database() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tacit.toml");
        std::fs::write(&file, "database_url = \"postgres://db/tacit\"\n").unwrap();
        let parse = |args: &[&str]| {
            let cli = crate::args::Cli::try_parse_from([&["tacit", "server"][..], args].concat()).unwrap();
            let crate::args::Command::Server(args) = cli.command else { panic!("not server") };
            config(args).unwrap().database_url
        };
        let file = file.to_str().unwrap();
        assert_eq!(parse(&["--config", file]).as_deref(), Some("postgres://db/tacit"));
        assert_eq!(parse(&["--config", file, "--database", ""]), None);
        assert_eq!(parse(&["--database", ""]), None);
        assert_eq!(parse(&["--database", "postgres://x/y"]).as_deref(), Some("postgres://x/y"));
    }
}
