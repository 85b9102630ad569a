//! The surfaces the server runs: each is a [`Listener`] (a bound socket and
//! the adapter that serves it). The server holds a list of them and runs each
//! in its own task, so adding a surface is a new module with its listener,
//! not an edit of the accept loop.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::policy_dns::{DnsService, PolicyDns, QueryObserver, Synthetic};
use super::Shared;
use crate::metrics::ConnectionSurface;

/// A bound surface and the adapter that serves it.
pub trait Listener: Send + 'static {
    /// What it is, for logs (`http-proxy`, `policy-dns`, ...).
    fn surface(&self) -> &'static str;
    /// Where it listens.
    fn local_addr(&self) -> std::io::Result<SocketAddr>;
    /// Serves until the process ends.
    #[doc(hidden)]
    fn serve(self: Box<Self>, shared: Arc<Shared>) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// The explicit proxy: CONNECT and forward HTTP on one TCP listener.
pub struct HttpProxyListener {
    listener: TcpListener,
}

impl HttpProxyListener {
    /// Wraps a bound TCP listener.
    #[must_use]
    pub fn new(listener: TcpListener) -> Self {
        Self { listener }
    }
}

impl Listener for HttpProxyListener {
    fn surface(&self) -> &'static str {
        "http-proxy"
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections forever. Resource exhaustion (EMFILE and friends)
    /// backs off instead of spinning; each connection runs in its own task,
    /// at most `max_connections` at a time.
    fn serve(self: Box<Self>, shared: Arc<Shared>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let listener = self.listener;
            if let Ok(addr) = listener.local_addr() {
                shared.relay.audit.listening(addr);
            }
            let permits = Arc::new(Semaphore::new(shared.limits.max_connections));
            let fallback = listener
                .local_addr()
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
            accept_forever(&listener, permits, |stream, peer, permit| {
                let local = stream.local_addr().unwrap_or(fallback);
                let shared = Arc::clone(&shared);
                let open = shared
                    .relay
                    .audit
                    .metrics()
                    .connection(ConnectionSurface::HttpProxy);
                tokio::spawn(async move {
                    super::serve_connection(shared, stream, peer, local).await;
                    drop((permit, open));
                });
            })
            .await;
        })
    }
}

/// Accepts connections until the semaphore closes, each holding one of
/// `permits` (so further accepts wait at the bound). Resource exhaustion
/// (EMFILE and friends) backs off, 5 ms doubling to 5 s, instead of spinning.
pub(super) async fn accept_forever(
    listener: &TcpListener,
    permits: Arc<Semaphore>,
    mut on_accept: impl FnMut(tokio::net::TcpStream, SocketAddr, OwnedSemaphorePermit),
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                let _ = stream.set_nodelay(true);
                on_accept(stream, peer, permit);
            }
            Err(e) => {
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "Accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Policy DNS for a sandbox (see [`super::policy_dns`]).
pub struct PolicyDnsListener {
    dns: PolicyDns,
    observer: QueryObserver,
    synthetic: Option<Synthetic>,
}

impl PolicyDnsListener {
    /// `dns` refusing every query, each reported to `observer`.
    #[must_use]
    pub fn new(dns: PolicyDns, observer: QueryObserver) -> Self {
        Self {
            dns,
            observer,
            synthetic: None,
        }
    }

    /// Also answering eligible names with synthetic addresses.
    #[must_use]
    pub fn with_synthetic(mut self, synthetic: Synthetic) -> Self {
        self.synthetic = Some(synthetic);
        self
    }
}

impl Listener for PolicyDnsListener {
    fn surface(&self) -> &'static str {
        "policy-dns"
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.dns.local_addr())
    }

    fn serve(self: Box<Self>, shared: Arc<Shared>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let synthetic = self.synthetic.map(|s| {
            (
                s,
                shared.relay.authorizer.clone(),
                shared.relay.audit.clone(),
            )
        });
        let metrics = shared.relay.audit.metrics().clone();
        let service = Arc::new(DnsService::new(self.observer, synthetic, metrics));
        Box::pin(self.dns.serve(service))
    }
}
