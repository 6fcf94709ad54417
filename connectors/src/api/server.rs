//! The HTTPS listener of the member API.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::middleware::from_fn_with_state;
use axum::{Extension, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::throttle::Throttle;

use super::body_time::{self, BodyTime};
use super::client::ClientAddr;
use super::stall::WriteDeadline;

/// How long in-flight requests may run on after shutdown is asked for.
const DRAIN: Duration = Duration::from_secs(10);
/// How long a client may take for the TLS handshake and request headers (also the
/// longest a kept-alive connection waits idle for its next request).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// The pause after a failed `accept` (e.g. out of file descriptors), so that the
/// loop does not spin and flood the log.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Limits of an HTTPS listener, so that clients cannot exhaust it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Most connections at once; a connection beyond them is closed before the TLS
    /// handshake (which would cost more than the refusal is worth).
    pub max_connections: usize,
    /// How long a request body may take to arrive (408 beyond it).
    pub body: BodyTime,
    /// How long a write of a response may wait for a client that does not read
    /// before the connection is dropped.
    pub write_timeout: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_connections: 1000,
            body: BodyTime {
                timeout: Duration::from_secs(60),
                min_rate: 16 * 1024,
            },
            write_timeout: Duration::from_secs(60),
        }
    }
}

/// Serves `router` over TLS on `listener` within `limits` until `shutdown` turns true,
/// then lets in-flight requests finish for up to ten seconds.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    limits: ListenerLimits,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    // Logged once in ten seconds at most, with the count of those not logged.
    static FULL: Throttle = Throttle::new(Duration::from_secs(10));
    let acceptor = TlsAcceptor::from(tls);
    let router = router.layer(from_fn_with_state(limits.body, body_time::bounded));
    let room = Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "API accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let Ok(permit) = room.clone().try_acquire_owned() else {
                    if let Some(also_refused) = FULL.occur() {
                        tracing::warn!(%peer, limit = limits.max_connections, also_refused, "API connection limit reached; closing a new connection");
                    }
                    continue;
                };
                crate::tcp::no_delay(&tcp);
                let acceptor = acceptor.clone();
                let service = TowerToHyperService::new(
                    router.clone().layer(Extension(ClientAddr(peer.ip()))),
                );
                let mut stop = shutdown.clone();
                connections.spawn(async move {
                    let _permit = permit;
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "API TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let io = WriteDeadline::new(tls, limits.write_timeout);
                    let connection = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HANDSHAKE_TIMEOUT)
                        .serve_connection(TokioIo::new(io), service);
                    tokio::pin!(connection);
                    tokio::select! {
                        result = connection.as_mut() => {
                            if let Err(e) = result {
                                tracing::debug!(%peer, error = %e, "API connection ended with an error");
                            }
                        }
                        _ = stopped(&mut stop) => {
                            connection.as_mut().graceful_shutdown();
                            let _ = connection.await;
                        }
                    }
                });
            }
        }
    }
    let drained = tokio::time::timeout(DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = connections.len(),
            "API connections still open after the drain period; closing them"
        );
        connections.abort_all();
    }
    Ok(())
}

/// Resolves once shutdown is asked for (or the sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
