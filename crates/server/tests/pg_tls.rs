//! PostgreSQL over TLS (`sslmode=require`, `verify-ca`, `verify-full` with `sslrootcert`).
//!
//! The local PostgreSQL runs without TLS, and turning it on would change a server other
//! tests share (and survive them: `ALTER SYSTEM` persists). So a stub in front of it speaks
//! PostgreSQL's TLS opening (answers `SSLRequest` with `S`, then a rustls handshake with a
//! certificate from `scripts/test-certs`) and relays the decrypted bytes to the real server:
//! the store's connector, its certificate checks and every query go over real TLS to a real
//! PostgreSQL. The stub counts TLS sessions and refuses anything else.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a test file

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tacit_server::{PgStore, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

const PG_ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";
/// PostgreSQL's `SSLRequest`: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn make() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-certs");
        let out = std::process::Command::new("bash").arg(&script).arg(dir.path()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Self { dir }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A TLS-terminating relay to the local PostgreSQL.
struct Stub {
    port: u16,
    tls_sessions: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Stub {
    async fn start(certs: &Certs) -> Self {
        let chain = CertificateDer::pem_file_iter(certs.file("server.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(certs.file("server.key")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tls_sessions, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (t, r) = (tls_sessions.clone(), refused.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else { return };
                let (acceptor, t, r) = (acceptor.clone(), t.clone(), r.clone());
                tokio::spawn(async move {
                    let mut first = [0u8; 8];
                    if sock.read_exact(&mut first).await.is_err() || first != SSL_REQUEST {
                        r.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    sock.write_all(b"S").await.unwrap();
                    let Ok(mut tls) = acceptor.accept(sock).await else { return };
                    t.fetch_add(1, Ordering::SeqCst);
                    let mut upstream = TcpStream::connect("127.0.0.1:5432").await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                });
            }
        });
        Self { port, tls_sessions, refused, task }
    }
}

async fn pg_admin() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(PG_ADMIN, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

fn random_hex() -> String {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn escape(path: &Path) -> String {
    path.to_str().unwrap().replace('/', "%2F")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_speaks_tls_to_postgresql_and_checks_the_certificate_as_the_mode_says() {
    let certs = Certs::make();
    let stub = Stub::start(&certs).await;
    let schema = format!("tacit_pg_tls_{}", random_hex());
    pg_admin().await.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let url = |host: &str, extra: &str| {
        format!("postgres://postgres@{host}:{}/test?options=-csearch_path%3D{schema}&{extra}", stub.port)
    };
    let (ca, other) = (escape(&certs.file("ca.pem")), escape(&certs.file("other-ca.pem")));

    // verify-full with the CA that signed the certificate: migrations and queries over TLS.
    let store =
        PgStore::connect(&url("localhost", &format!("sslmode=verify-full&sslrootcert={ca}"))).await.unwrap();
    assert!(store.account("nobody").await.unwrap().is_none());
    assert!(store.healthy().await);
    store.close().await;
    let sessions = stub.tls_sessions.load(Ordering::SeqCst);
    assert!(sessions >= 1, "went through TLS");
    // verify-full with another CA, or for a name the certificate does not carry: refused.
    let err = PgStore::connect(&url("localhost", &format!("sslmode=verify-full&sslrootcert={other}")))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("certificate"), "{err}");
    let wrong_name =
        url("db.wrong.example", &format!("hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca}"));
    let err = PgStore::connect(&wrong_name).await.err().unwrap();
    assert!(err.to_string().contains("certificate"), "{err}");
    // verify-ca checks the chain only, so the wrong name passes and the other CA does not.
    let chain_only =
        url("db.wrong.example", &format!("hostaddr=127.0.0.1&sslmode=verify-ca&sslrootcert={ca}"));
    PgStore::connect(&chain_only).await.unwrap().close().await;
    let err = PgStore::connect(&url("localhost", &format!("sslmode=verify-ca&sslrootcert={other}")))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("certificate"), "{err}");
    // require: encrypted, certificate unchecked (libpq's meaning).
    let before = stub.tls_sessions.load(Ordering::SeqCst);
    PgStore::connect(&url("localhost", "sslmode=require")).await.unwrap().close().await;
    assert!(stub.tls_sessions.load(Ordering::SeqCst) > before);
    assert_eq!(stub.refused.load(Ordering::SeqCst), 0, "nothing reached the stub in plain text");

    // Straight to the real server: with TLS on there, `require` talks TLS to PostgreSQL
    // itself and `verify-full` refuses its certificate (not from our CA); with TLS off,
    // `require` never falls back to plain text.
    let ssl: String = pg_admin().await.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    let direct = |extra: &str| {
        format!("postgres://postgres@localhost:5432/test?options=-csearch_path%3D{schema}&{extra}")
    };
    let required = PgStore::connect(&direct("sslmode=require")).await;
    if ssl == "on" {
        required.unwrap().close().await;
        let err =
            PgStore::connect(&direct(&format!("sslmode=verify-full&sslrootcert={ca}"))).await.err().unwrap();
        assert!(err.to_string().contains("certificate"), "{err}");
    } else {
        assert!(required.is_err(), "sslmode=require connected without TLS");
    }
    stub.task.abort();
    pg_admin().await.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
}
