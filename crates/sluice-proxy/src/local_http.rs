//! The bounded HTTP/1.1 accept loop of sluice's own small endpoints (the
//! operator console, `--metrics`): at most a fixed number of connections at
//! once (more are closed at accept), a request-head deadline, a head size and
//! header count, and optionally a lifetime per connection. One place, so both
//! endpoints are bounded the same way.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The bounds of one endpoint.
#[derive(Clone, Copy, Debug)]
pub struct Http1Bounds {
    /// The endpoint's name in log lines.
    pub name: &'static str,
    /// Connections served at once; further ones are closed at accept.
    pub max_connections: usize,
    /// Time to send a request head.
    pub header_timeout: Duration,
    /// Largest request head (hyper's read buffer; at least 8 KiB).
    pub max_head: usize,
    /// Most request header fields.
    pub max_headers: usize,
    /// Longest a connection is served (`None`: as long as it is used, e.g.
    /// the console's event streams).
    pub lifetime: Option<Duration>,
}

/// Serves `listener` until the runtime stops: each accepted connection (up
/// to the bound) gets the service `make()` returns, under `bounds`.
pub async fn serve<F, S>(listener: TcpListener, bounds: Http1Bounds, make: F)
where
    F: Fn() -> S,
    S: HttpService<Incoming> + Send + 'static,
    S::Future: Send + 'static,
    S::ResBody: Body + Send + 'static,
    <S::ResBody as Body>::Data: Send,
    <S::ResBody as Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connections = Arc::new(Semaphore::new(bounds.max_connections));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(endpoint = bounds.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let svc = make();
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(bounds.header_timeout)
                .max_buf_size(bounds.max_head)
                .max_headers(bounds.max_headers)
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            match bounds.lifetime {
                Some(limit) => {
                    let _ = tokio::time::timeout(limit, conn).await;
                }
                None => {
                    let _ = conn.await;
                }
            }
        });
    }
}
