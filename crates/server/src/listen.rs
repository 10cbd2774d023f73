//! The accept loop: at most `max_connections` TCP connections at once, and
//! `max_connections_per_address` from one client address (a WebSocket keeps its
//! connection's slot), TLS handshakes bounded in time and run concurrently, HTTP/1.1
//! with a header-read timeout (a client that trickles its headers, or a keep-alive
//! connection that sends nothing, is closed), and graceful shutdown. `axum::serve` offers
//! neither the cap nor the timeout (it sets no timer, so hyper's own timeout never runs).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::routes::extract::PeerAddr;
use crate::state::now_ms;

/// A TLS handshake must finish within this long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection's slot under the connection cap, carried in each request's extensions so a
/// WebSocket upgrade keeps it for as long as the socket lives.
#[derive(Clone)]
pub(crate) struct ConnectionSlot {
    _held: Arc<Held>,
}

/// A connection's place under both caps; released when the last clone drops.
struct Held {
    _permit: OwnedSemaphorePermit,
    /// The per-address count this connection is in (none for a trusted proxy).
    per_address: Option<Arc<PerAddress>>,
    key: IpAddr,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(per_address) = &self.per_address
            && let Ok(mut open) = per_address.open.lock()
            && let Some(n) = open.get_mut(&self.key)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Open connections per client address (IPv6 per /64).
struct PerAddress {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerAddress {
    /// Counts a connection from `key`; false (nothing counted) if it has `max` already.
    fn enter(&self, key: IpAddr) -> bool {
        let Ok(mut open) = self.open.lock() else { return false };
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            return false;
        }
        *n += 1;
        true
    }
}

/// Connection limits (from [`crate::ServerConfig`]).
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    /// Proxies exempt from the per-address count (they carry many clients).
    pub trusted_proxies: Arc<Vec<crate::proxy::IpNet>>,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one client address (IPv6: one /64).
    pub max_connections_per_address: usize,
    /// A client must send a request's headers within this long (and an idle keep-alive
    /// connection is closed after it).
    pub header_read_timeout: Duration,
}

/// Accepts and serves connections until `shutdown` is cancelled; then stops accepting and
/// asks open connections to finish their current request. Returns once every connection
/// task has ended (the caller bounds the wait).
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let max_connections = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max_connections));
    let per_address =
        Arc::new(PerAddress { max: limits.max_connections_per_address.max(1), open: Mutex::default() });
    let connections = TaskTracker::new();
    let last_warning = AtomicU64::new(0);
    loop {
        let (tcp, addr) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(_) => {
                    // Out of file descriptors and the like: back off, as axum does.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Over either cap the connection is closed at once (dropped); that is logged at
        // most once a minute, without the address.
        let key = crate::limiter::client_of(addr.ip());
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn_once_a_minute(&last_warning, "connection limit reached; refusing connections");
            continue;
        };
        let counted = !crate::proxy::trusted(&limits.trusted_proxies, addr.ip());
        if counted && !per_address.enter(key) {
            warn_once_a_minute(&last_warning, "an address reached its connection limit; refusing it");
            continue;
        }
        let per_address = counted.then(|| per_address.clone());
        let slot = ConnectionSlot { _held: Arc::new(Held { _permit: permit, per_address, key }) };
        let _ = tcp.set_nodelay(true);
        let (tls, router, shutdown) = (tls.clone(), router.clone(), shutdown.clone());
        let header_timeout = limits.header_read_timeout;
        connections.spawn(async move {
            match tls {
                None => serve_http(tcp, addr, router, slot, header_timeout, shutdown).await,
                Some(acceptor) => {
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                    {
                        serve_http(stream, addr, router, slot, header_timeout, shutdown).await;
                    }
                }
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

fn warn_once_a_minute(last: &AtomicU64, what: &'static str) {
    let now = now_ms();
    if now.saturating_sub(last.load(Ordering::Relaxed)) > 60_000 {
        last.store(now, Ordering::Relaxed);
        tracing::warn!("{what}");
    }
}

/// Serves HTTP/1.1 (with upgrades) on one connection.
async fn serve_http<I>(
    io: I,
    addr: SocketAddr,
    router: Router,
    slot: ConnectionSlot,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(PeerAddr(addr)));
        req.extensions_mut().insert(slot.clone());
        let mut router = router.clone();
        async move {
            let response = tower_service::Service::call(&mut router, req.map(axum::body::Body::new)).await;
            Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), service).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
