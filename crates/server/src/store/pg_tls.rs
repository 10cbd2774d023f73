//! PostgreSQL over TLS with rustls (AWS-LC), as the rest of the tree. tokio-postgres parses
//! only `sslmode=disable|prefer|require`, so the store reads `sslmode` and `sslrootcert` from
//! the URL itself ([`split`]) and hands tokio-postgres the rest with `require` when TLS is
//! wanted; the connector here is the glue between tokio-postgres's TLS traits and
//! tokio-rustls (both already in the tree, so no other crate is needed for it).
//!
//! Modes, as libpq names them:
//! - `disable`, `allow`, `prefer` or none: no TLS (as before; say `require` or `verify-full`
//!   to get it).
//! - `require`: TLS or no connection; the certificate is not checked (protects against
//!   passive eavesdropping only), unless `sslrootcert` is given, as in libpq, when the chain
//!   is checked as with `verify-ca`.
//! - `verify-ca`: TLS, the chain checked against `sslrootcert`, not the host name.
//! - `verify-full`: TLS, the chain and the host name checked, against the CAs of
//!   `sslrootcert` (a PEM file), or the system's (`sslrootcert=system`, the default here:
//!   libpq's default `~/.postgresql/root.crt` means nothing for a service).
//!
//! Channel binding (`SCRAM-SHA-256-PLUS`) is not offered: password authentication uses
//! plain SCRAM, which the server's verified certificate already binds to the right server.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use super::StoreError;

/// Longest connection string considered (it is configuration, but parsed by hand here).
const MAX_URL_LEN: usize = 8192;

/// What the URL asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PgTlsMode {
    /// No TLS.
    Plain,
    /// TLS, no certificate check.
    Require,
    /// TLS, the chain checked against these roots, not the host name.
    VerifyCa(Roots),
    /// TLS, the chain and the host name checked.
    VerifyFull(Roots),
}

/// Which certificate authorities a verified mode trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Roots {
    /// The system's (the platform verifier).
    System,
    /// The `CERTIFICATE` blocks of this PEM file.
    File(PathBuf),
}

fn bad(why: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("postgres TLS: {why}"))
}

/// Decodes `%XX` escapes of a URL query value.
fn percent_decode(v: &str) -> Result<String, StoreError> {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(|| bad("bad %-escape"))?;
            let hex = std::str::from_utf8(hex).map_err(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(bad)?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(bad)
}

/// Takes `sslmode` and `sslrootcert` out of a `postgres://` URL or a `key=value` string: the
/// string left for tokio-postgres, and the mode.
pub(crate) fn split(url: &str) -> Result<(String, PgTlsMode), StoreError> {
    if url.len() > MAX_URL_LEN {
        return Err(bad("connection string too long"));
    }
    let mut mode = None;
    let mut root = None;
    let mut take = |key: &str, value: String| match key {
        "sslmode" => mode = Some(value),
        _ => root = Some(value),
    };
    let ours = |key: &str| key == "sslmode" || key == "sslrootcert";
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_owned(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&') {
                    match pair.split_once('=') {
                        Some((k, v)) if ours(k) => take(k, percent_decode(v)?),
                        _ => kept.push(pair),
                    }
                }
                if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) }
            }
        }
    } else {
        let mut kept = Vec::new();
        for token in url.split_whitespace() {
            match token.split_once('=') {
                Some((k, v)) if ours(k.trim()) => take(k.trim(), v.trim_matches('\'').to_owned()),
                _ => kept.push(token),
            }
        }
        if mode.is_none() && root.is_none() { url.to_owned() } else { kept.join(" ") }
    };
    let roots = match root.as_deref() {
        None | Some("system") => Roots::System,
        Some(path) => Roots::File(PathBuf::from(path)),
    };
    let mode = match mode.as_deref() {
        None | Some("disable" | "allow" | "prefer") => PgTlsMode::Plain,
        Some("require") if root.is_some() => PgTlsMode::VerifyCa(roots),
        Some("require") => PgTlsMode::Require,
        Some("verify-ca") => PgTlsMode::VerifyCa(roots),
        Some("verify-full") => PgTlsMode::VerifyFull(roots),
        Some(other) => return Err(bad(format!("unknown sslmode {other:?}"))),
    };
    Ok((rest, mode))
}

/// Accepts any certificate (`sslmode=require`) but still checks that the server holds the
/// certificate's key (the handshake signature), so the session is at least encrypted to
/// whoever answered.
#[derive(Debug)]
struct NoChainCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoChainCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the full check, except that a certificate for another host name
/// passes.
#[derive(Debug)]
struct ChainOnly(Arc<dyn ServerCertVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The full check (chain and name) against `roots`.
fn full_check(
    roots: &Roots,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, StoreError> {
    match roots {
        Roots::System => {
            Ok(Arc::new(rustls_platform_verifier::Verifier::new(provider.clone()).map_err(bad)?))
        }
        Roots::File(path) => {
            let mut store = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| bad(format!("sslrootcert {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(bad(format!("sslrootcert {}: no CERTIFICATE block", path.display())));
            }
            for c in certs {
                store.add(c).map_err(bad)?;
            }
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(store),
                provider.clone(),
            )
            .build()
            .map_err(bad)?;
            Ok(verifier)
        }
    }
}

/// The connector for a TLS mode (`None` for [`PgTlsMode::Plain`]).
pub(crate) fn connector(mode: &PgTlsMode) -> Result<Option<RustlsConnect>, StoreError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        PgTlsMode::Plain => return Ok(None),
        PgTlsMode::Require => Arc::new(NoChainCheck(provider.clone())),
        PgTlsMode::VerifyCa(roots) => Arc::new(ChainOnly(full_check(roots, &provider)?)),
        PgTlsMode::VerifyFull(roots) => full_check(roots, &provider)?,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(bad)?
        // The verifier is chosen by the mode above; for verify-full it is the full check.
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(RustlsConnect(Arc::new(config))))
}

/// tokio-postgres's TLS factory, one per pool.
#[derive(Clone)]
pub(crate) struct RustlsConnect(Arc<rustls::ClientConfig>);

/// One connection's handshake, for the host tokio-postgres dials.
pub(crate) struct RustlsHandshake {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

/// A TLS connection to PostgreSQL.
pub(crate) struct RustlsStream(tokio_rustls::client::TlsStream<tokio_postgres::Socket>);

impl MakeTlsConnect<tokio_postgres::Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type TlsConnect = RustlsHandshake;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsHandshake, Self::Error> {
        Ok(RustlsHandshake { config: self.0.clone(), name: ServerName::try_from(domain)?.to_owned() })
    }
}

impl TlsConnect<tokio_postgres::Socket> for RustlsHandshake {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: tokio_postgres::Socket) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config);
        Box::pin(async move { connector.connect(self.name, stream).await.map(RustlsStream) })
    }
}

impl TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_our_parameters_out_of_both_forms() {
        let (rest, mode) =
            split("postgres://u@h:5432/db?options=-csearch_path%3Dx&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem")
                .unwrap();
        assert_eq!(rest, "postgres://u@h:5432/db?options=-csearch_path%3Dx");
        assert_eq!(mode, PgTlsMode::VerifyFull(Roots::File("/etc/ca.pem".into())));
        assert_eq!(
            split("postgres://h/db?sslmode=require").unwrap(),
            ("postgres://h/db".into(), PgTlsMode::Require)
        );
        assert_eq!(split("postgres://h/db").unwrap(), ("postgres://h/db".into(), PgTlsMode::Plain));
        assert_eq!(split("postgres://h/db?sslmode=prefer").unwrap().1, PgTlsMode::Plain);
        assert_eq!(
            split("postgres://h/db?sslmode=require&sslrootcert=/ca.pem").unwrap().1,
            PgTlsMode::VerifyCa(Roots::File("/ca.pem".into()))
        );
        assert_eq!(
            split("postgres://h/db?sslmode=verify-full").unwrap().1,
            PgTlsMode::VerifyFull(Roots::System)
        );
        let (rest, mode) = split("host=h dbname=test sslmode=verify-full sslrootcert=/ca.pem").unwrap();
        assert_eq!(rest, "host=h dbname=test");
        assert_eq!(mode, PgTlsMode::VerifyFull(Roots::File("/ca.pem".into())));
        assert!(split("postgres://h/db?sslmode=paranoid").is_err());
        assert!(split("postgres://h/db?sslrootcert=%zz").is_err());
    }
}
