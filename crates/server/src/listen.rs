//! The accept loop: at most `max_connections` TCP connections at once (a WebSocket keeps
//! its connection's slot), TLS handshakes bounded in time and run concurrently, HTTP/1.1
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
    _permit: Arc<OwnedSemaphorePermit>,
}

/// Connection limits (from [`crate::ServerConfig`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Most connections open at once.
    pub max_connections: usize,
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Full: the connection is closed at once (dropped), and that is logged at most
            // once a minute.
            let now = now_ms();
            if now.saturating_sub(last_warning.load(Ordering::Relaxed)) > 60_000 {
                last_warning.store(now, Ordering::Relaxed);
                tracing::warn!(max_connections, "connection limit reached; refusing connections");
            }
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (tls, router, shutdown) = (tls.clone(), router.clone(), shutdown.clone());
        let slot = ConnectionSlot { _permit: Arc::new(slot) };
        connections.spawn(async move {
            match tls {
                None => serve_http(tcp, addr, router, slot, limits, shutdown).await,
                Some(acceptor) => {
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                    {
                        serve_http(stream, addr, router, slot, limits, shutdown).await;
                    }
                }
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Serves HTTP/1.1 (with upgrades) on one connection.
async fn serve_http<I>(
    io: I,
    addr: SocketAddr,
    router: Router,
    slot: ConnectionSlot,
    limits: Limits,
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
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
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
