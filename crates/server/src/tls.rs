//! HTTPS: a rustls (AWS-LC) acceptor from PEM files. The accept loop (`listen.rs`) runs
//! each handshake in the connection's own task, bounded in time, so a slow handshake never
//! holds up other clients.
//!
//! The certificate is served through a resolver holding the current chain and key, so
//! [`TlsReloader::reload`] (`tacit server` calls it on SIGHUP) swaps in renewed files for new
//! handshakes without a restart; connections already open keep theirs. A reload that fails
//! (unreadable files, a key that does not match the certificate) keeps the old pair.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate or key file is unreadable or not PEM.
    #[error("cannot read the {what} file {}: {detail}", path.display())]
    Pem {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The parser's message.
        detail: String,
    },
    /// The certificate file holds no certificate.
    #[error("the certificate file {} holds no CERTIFICATE block", .0.display())]
    NoCertificate(PathBuf),
    /// rustls refused the certificate or key (a key that does not match the certificate
    /// included).
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The chain and key new handshakes get.
#[derive(Debug)]
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(PoisonError::into_inner).clone())
    }
}

/// Reloads the certificate and key from the files the server started with. Cheap to clone.
#[derive(Clone, Debug)]
pub struct TlsReloader {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Arc<CurrentCert>,
}

impl TlsReloader {
    /// Reads the files again and, if they hold a usable pair, serves it to new handshakes;
    /// otherwise keeps the current pair and says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load(&self.cert, &self.key, &self.provider)?;
        *self.current.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
        Ok(())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read_chain(cert: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Pem { what: "certificate", path: cert.to_owned(), detail: pem_cause(&e) })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_owned()));
    }
    Ok(certs)
}

/// Why a PEM file did not load, in words (an I/O error without its `(os error N)`).
fn pem_cause(e: &tokio_rustls::rustls::pki_types::pem::Error) -> String {
    match e {
        tokio_rustls::rustls::pki_types::pem::Error::Io(io) => crate::error::io_cause(io),
        other => other.to_string(),
    }
}

/// The chain and key in the files, checked to belong together.
fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let certs = read_chain(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
        what: "private key",
        path: key.to_owned(),
        detail: pem_cause(&e),
    })?;
    let certified = CertifiedKey::from_der(certs, key, provider)?;
    // `from_der` lets a key whose public half it cannot compute through; we require a match.
    certified.keys_match()?;
    Ok(certified)
}

/// Builds the acceptor (TLS 1.2 and 1.3, HTTP/1.1) and what reloads its certificate.
pub(crate) fn acceptor(cert: &Path, key: &Path) -> Result<(TlsAcceptor, TlsReloader), TlsError> {
    let provider = provider();
    let current = Arc::new(CurrentCert(RwLock::new(Arc::new(load(cert, key, &provider)?))));
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(current.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let reloader = TlsReloader { cert: cert.to_owned(), key: key.to_owned(), provider, current };
    Ok((TlsAcceptor::from(Arc::new(config)), reloader))
}

/// The DNS names (subject alternative names, wildcards excluded) of the end-entity
/// certificate in `cert`, in the certificate's order.
pub(crate) fn dns_names(cert: &Path) -> Result<Vec<String>, TlsError> {
    let chain = read_chain(cert)?;
    let first = chain.first().ok_or_else(|| TlsError::NoCertificate(cert.to_owned()))?;
    let parsed = webpki::EndEntityCert::try_from(first).map_err(|e| TlsError::Pem {
        what: "certificate",
        path: cert.to_owned(),
        detail: e.to_string(),
    })?;
    Ok(parsed.valid_dns_names().filter(|n| !n.starts_with('*')).map(str::to_ascii_lowercase).collect())
}
