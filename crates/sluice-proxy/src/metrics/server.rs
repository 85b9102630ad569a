//! The `--metrics ADDR` HTTP/1.1 endpoint: `GET /metrics` (Prometheus
//! text), `GET /healthz` (liveness: answered while the runtime runs),
//! `GET /readyz` (readiness: 200 once the policy is loaded and the proxy
//! listener bound, 503 before). No authentication and nothing secret: every
//! label is a closed enum. Bounded: a few connections at once (more are
//! closed at accept), a small request head, a head deadline and a lifetime
//! per connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use tokio::net::TcpListener;

use super::{Metrics, CONTENT_TYPE};
use crate::local_http::{self, Http1Bounds};

/// Connections served at once; further ones are closed at accept.
pub const MAX_CONNECTIONS: usize = 16;
/// Time to send a request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection (kept alive by a scraper) is served.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
/// Largest request head (hyper's read buffer; its minimum).
const MAX_HEAD: usize = 8 * 1024;
/// Most request header fields.
const MAX_HEADERS: usize = 32;

/// Binds the metrics listener on `addr` (port 0 picks a free port).
///
/// # Errors
/// The bind error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `metrics` on `listener` until the runtime stops.
pub async fn serve(listener: TcpListener, metrics: Metrics) {
    let bounds = Http1Bounds {
        name: "metrics",
        max_connections: MAX_CONNECTIONS,
        header_timeout: HEADER_TIMEOUT,
        max_head: MAX_HEAD,
        max_headers: MAX_HEADERS,
        lifetime: Some(CONNECTION_LIFETIME),
    };
    local_http::serve(listener, bounds, move || {
        let metrics = metrics.clone();
        service_fn(move |req| {
            let answer = handle(&metrics, &req);
            async move { Ok::<_, Infallible>(answer) }
        })
    })
    .await;
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The answer to one request (the body is never read).
fn handle<B>(metrics: &Metrics, req: &Request<B>) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let path = req.uri().path();
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return respond(StatusCode::NOT_FOUND, TEXT, "not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = respond(StatusCode::METHOD_NOT_ALLOWED, TEXT, "method not allowed\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/metrics" => respond(StatusCode::OK, CONTENT_TYPE, metrics.encode()),
        "/healthz" => respond(StatusCode::OK, TEXT, "ok\n"),
        _ if metrics.is_ready() => respond(StatusCode::OK, TEXT, "ready\n"),
        _ => respond(StatusCode::SERVICE_UNAVAILABLE, TEXT, "not ready\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(metrics: &Metrics, method: Method, path: &str) -> (StatusCode, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        let r = handle(metrics, &req);
        let status = r.status();
        let ct = r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        (status, ct)
    }

    #[test]
    fn routes() {
        let m = Metrics::enabled();
        assert_eq!(
            get(&m, Method::GET, "/metrics"),
            (StatusCode::OK, CONTENT_TYPE.into())
        );
        assert_eq!(get(&m, Method::GET, "/healthz").0, StatusCode::OK);
        assert_eq!(
            get(&m, Method::GET, "/readyz").0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        m.set_ready();
        assert_eq!(get(&m, Method::GET, "/readyz").0, StatusCode::OK);
        assert_eq!(get(&m, Method::HEAD, "/readyz?x=1").0, StatusCode::OK);
        assert_eq!(
            get(&m, Method::POST, "/metrics").0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(get(&m, Method::GET, "/").0, StatusCode::NOT_FOUND);
        assert_eq!(get(&m, Method::DELETE, "/nope").0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn serves_over_tcp_and_caps_connections() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let m = Metrics::enabled();
        m.set_ready();
        tokio::spawn(serve(listener, m));
        // Hold every slot with a connection that sends nothing.
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            held.push(
                tokio::net::TcpSocket::new_v4()
                    .unwrap()
                    .connect(addr)
                    .await
                    .unwrap(),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // One more is closed at once.
        let mut extra = tokio::net::TcpSocket::new_v4()
            .unwrap()
            .connect(addr)
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = extra
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let n = tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut buf)).await;
        assert!(
            matches!(n, Ok(Ok(0)) | Ok(Err(_))),
            "{:?}",
            String::from_utf8_lossy(&buf)
        );
        drop(held);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut s = tokio::net::TcpSocket::new_v4()
            .unwrap()
            .connect(addr)
            .await
            .unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(
            out.contains("content-type: text/plain; version=0.0.4"),
            "{out}"
        );
        assert!(out.contains("\nsluice_ready 1\n"), "{out}");
    }
}
