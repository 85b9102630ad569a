//! The connection to a route's backend: resolved and dialled as operator
//! configuration (no SSRF rules: the policy author chose the URL; plain
//! http only to loopback), TLS verified with the upstream trust, HTTP/1.1
//! framing by hyper. One connection is kept per client connection and
//! reused while the route and policy generation stay the same.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use sluice_policy::InferenceEndpoint;

use crate::destination::UpstreamConnector;
use crate::egress::{Host, Target};
use crate::relay::RelayContext;

/// Largest response head accepted from a backend.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Why a backend could not be reached.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendError {
    #[error("backend {0} did not resolve: {1}")]
    Resolve(String, String),
    #[error("backend {0} resolves to a non-loopback address over plain http")]
    PlainNotLoopback(String),
    #[error("cannot connect to backend {0}: {1}")]
    Connect(String, String),
    #[error("TLS with backend {0} failed: {1}")]
    Tls(String, String),
    #[error("HTTP with backend {0} failed: {1}")]
    Http(String, String),
}

/// A ready HTTP/1.1 sender to one backend.
pub(crate) struct Backend {
    /// Which route, under which generation, this connection serves.
    pub(crate) key: (Arc<str>, u64),
    pub(crate) sender: SendRequest<Full<Bytes>>,
}

/// The backend's `host:port` as a [`Target`].
pub(crate) fn target(ep: &InferenceEndpoint) -> Target {
    let host = match ep.host.parse::<IpAddr>() {
        Ok(ip) => Host::Ip(ip),
        Err(_) => Host::Name(Arc::clone(&ep.host)),
    };
    Target {
        host,
        port: ep.port,
    }
}

/// The `Host` header value for the backend (port omitted when default).
pub(crate) fn host_header(ep: &InferenceEndpoint) -> String {
    let host = if ep.host.contains(':') {
        format!("[{}]", ep.host)
    } else {
        ep.host.to_string()
    };
    let default = if ep.https { 443 } else { 80 };
    if ep.port == default {
        host
    } else {
        format!("{host}:{}", ep.port)
    }
}

/// Resolves, dials and handshakes (TCP, TLS, HTTP/1.1), all within `timeout`.
pub(crate) async fn connect(
    ctx: &RelayContext,
    ep: &InferenceEndpoint,
    timeout: Duration,
) -> Result<SendRequest<Full<Bytes>>, BackendError> {
    let target = target(ep);
    let name = target.to_string();
    let ips = match &target.host {
        Host::Ip(ip) => vec![*ip],
        Host::Name(n) => ctx
            .resolver
            .resolve(n, target.port)
            .await
            .map_err(|e| BackendError::Resolve(name.clone(), e.to_string()))?,
    };
    if !ep.https
        && !ips
            .iter()
            .all(|ip| crate::egress::canonical_ip(*ip).is_loopback())
    {
        return Err(BackendError::PlainNotLoopback(name));
    }
    let addrs: Vec<SocketAddr> = ips
        .into_iter()
        .map(|ip| SocketAddr::new(ip, target.port))
        .collect();
    let connector = UpstreamConnector::operator_configured(target.clone(), addrs);
    let tcp = connector
        .connect(timeout.min(ctx.dial_timeout))
        .await
        .map_err(|e| BackendError::Connect(name.clone(), e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let mut builder = http1::Builder::new();
    builder.max_buf_size(MAX_RESPONSE_HEAD.max(8192));
    if ep.https {
        let tls = ctx
            .upstream_tls
            .connect(&target.host, tcp, timeout)
            .await
            .map_err(|e| BackendError::Tls(name.clone(), e.to_string()))?;
        handshake(&builder, tls, &name).await
    } else {
        handshake(&builder, tcp, &name).await
    }
}

async fn handshake<T>(
    builder: &http1::Builder,
    io: T,
    name: &str,
) -> Result<SendRequest<Full<Bytes>>, BackendError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = builder
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| BackendError::Http(name.to_owned(), e.to_string()))?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the backend closes.
        let _ = conn.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_headers() {
        let ep = |https, host: &str, port| InferenceEndpoint {
            https,
            host: Arc::from(host),
            port,
            base_path: Arc::from(""),
        };
        assert_eq!(host_header(&ep(true, "llm.internal", 443)), "llm.internal");
        assert_eq!(
            host_header(&ep(true, "llm.internal", 8443)),
            "llm.internal:8443"
        );
        assert_eq!(host_header(&ep(false, "127.0.0.1", 80)), "127.0.0.1");
        assert_eq!(host_header(&ep(false, "::1", 9000)), "[::1]:9000");
        assert!(matches!(target(&ep(true, "::1", 1)).host, Host::Ip(_)));
        assert!(matches!(target(&ep(true, "a.b", 1)).host, Host::Name(_)));
    }
}
