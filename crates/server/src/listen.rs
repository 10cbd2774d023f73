//! The accept loop: at most `max_connections` TCP connections at once, and
//! `max_connections_per_address` from one client address (a WebSocket keeps its
//! connection's slot; a full server evicts slow-header connections and then the biggest
//! holder's before it refuses anyone: [`crate::slots`]), TLS handshakes bounded in time and
//! run concurrently, HTTP/1.1
//! with a header-read timeout (a client that trickles its headers, or a keep-alive
//! connection that sends nothing, is closed), and graceful shutdown. `axum::serve` offers
//! neither the cap nor the timeout (it sets no timer, so hyper's own timeout never runs).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::routes::extract::PeerAddr;
use crate::state::now_ms;

/// A TLS handshake must finish within this long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection's slot under the connection caps (see [`crate::slots`]).
pub(crate) type ConnectionSlot = crate::slots::Slot;

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
    let slots = crate::slots::Slots::new(limits.max_connections, limits.max_connections_per_address);
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
        // Refused connections are closed at once (dropped); that is logged at most once a
        // minute, without the address.
        let counted = !crate::proxy::trusted(&limits.trusted_proxies, addr.ip());
        let slot = match slots.admit(crate::limiter::client_of(addr.ip()), counted) {
            Ok(slot) => slot,
            Err(crate::slots::Refused::ServerFull) => {
                warn_once_a_minute(&last_warning, "connection limit reached; refusing connections");
                continue;
            }
            Err(crate::slots::Refused::AddressFull) => {
                warn_once_a_minute(&last_warning, "an address reached its connection limit; refusing it");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (tls, router, shutdown) = (tls.clone(), router.clone(), shutdown.clone());
        let header_timeout = limits.header_read_timeout;
        connections.spawn(async move {
            let evicted = slot.clone();
            let serve = async move {
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
            };
            // An evicted connection is dropped where it is (its slot went to a newcomer).
            tokio::select! {
                () = serve => {}
                () = evicted.evicted() => {}
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
        slot.serving();
        req.extensions_mut().insert(ConnectInfo(PeerAddr(addr)));
        req.extensions_mut().insert(slot.clone());
        let mut router = router.clone();
        let slot = slot.clone();
        async move {
            let response = tower_service::Service::call(&mut router, req.map(axum::body::Body::new)).await;
            let response = response.unwrap_or_else(|never| match never {});
            slot.answered(response.status() == hyper::StatusCode::SWITCHING_PROTOCOLS);
            Ok::<_, Infallible>(response)
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
