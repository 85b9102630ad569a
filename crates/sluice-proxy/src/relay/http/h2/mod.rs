//! HTTP/2 inside an inspected TLS tunnel (ARCHITECTURE §6.6). The client
//! picked `h2` in ALPN; hyper's HTTP/2 server (explicit limits: concurrent
//! streams, header list size, windows, reset floods) owns the framing, and
//! each stream is one request admitted exactly like one of the HTTP/1.1
//! loop: its head is mapped to the loop's [`RequestHead`]
//! ([`map::request_head`]), then [`TunnelPolicy`] runs the authority check,
//! REST/GraphQL/JSON-RPC/MCP/gRPC policy, middleware, credentials and the
//! per-request events. A refused stream gets its own answer (a JSON `403`,
//! or a trailers-only gRPC status for gRPC calls) and never reaches the
//! upstream; the other streams go on. Admitted streams go to the upstream
//! over HTTP/2 or HTTP/1.1, whichever it picked ([`upstream`]).

pub mod map;
mod upstream;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Mutex;

use self::map::{grpc_message, grpc_status, is_grpc, CONNECTION_SPECIFIC};
use self::upstream::{Pool, Sender};
use super::exchange::{Admission, BodyPlan, RequestPolicy, Upgrade};
use super::guard::{MarkerScan, PREFETCH_LIMIT};
use super::request::RequestHead;
use super::tunnel::TunnelPolicy;
use crate::destination::UpstreamConnector;
use crate::egress::Allowed;
use crate::metrics::Metrics;
use crate::refusal::{json_error, Refusal, BAD_REQUEST};
use crate::relay::idle::Activity;
use crate::relay::RelayContext;

/// Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
pub(crate) const MAX_CONCURRENT_STREAMS: u32 = 100;
/// Largest request header list (as HTTP/1.1's head limit).
pub(crate) const MAX_HEADER_LIST: u32 = 16 * 1024;
/// Per-stream and per-connection flow-control windows (both directions).
pub(crate) const STREAM_WINDOW: u32 = 1024 * 1024;
pub(crate) const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;
/// Streams the client may reset before sluice accepted them (rapid reset,
/// CVE-2023-44487); past it the connection is closed with `GOAWAY`.
pub(crate) const MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams sluice may reset because of client errors before it closes the connection.
pub(crate) const MAX_LOCAL_ERROR_RESETS: usize = 256;
/// Longest `grpc-message` sent (bytes of text before encoding).
const MAX_GRPC_MESSAGE: usize = 1024;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A request body on its way upstream.
pub(crate) type ReqBody = BoxBody<Bytes, BoxError>;
/// A response body on its way to the client.
pub(crate) type RespBody = BoxBody<Bytes, BoxError>;

/// Time bounds of an HTTP/2 tunnel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct H2Limits {
    /// The connection closes (`GOAWAY`) after this long without a byte either way.
    pub(crate) idle: Duration,
    /// Longest wait for the next body frame of a request that is read whole.
    pub(crate) body_idle: Duration,
}

/// One HTTP/2 tunnel: the decision in force, its connector, the upstream.
struct Tunnel {
    ctx: Arc<RelayContext>,
    /// Refreshed by a stream whose admission re-authorized (generation moved).
    current: Mutex<(Allowed, UpstreamConnector)>,
    pool: Pool,
    streams: AtomicU64,
    limits: H2Limits,
}

/// Serve HTTP/2 on the client side of a terminated tunnel until the client
/// goes away, the connection is idle for `limits.idle`, or a reload revokes
/// the tunnel.
pub(crate) async fn serve<IO>(
    ctx: Arc<RelayContext>,
    decision: Allowed,
    connector: UpstreamConnector,
    io: IO,
    limits: H2Limits,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    let activity = Activity::new();
    let revoke_ctx = Arc::clone(&ctx);
    let revoke_decision = decision.clone();
    let tunnel = Arc::new(Tunnel {
        ctx,
        current: Mutex::new((decision, connector)),
        pool: Pool::default(),
        streams: AtomicU64::new(0),
        limits,
    });
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let tunnel = Arc::clone(&tunnel);
        async move { Ok::<_, Infallible>(tunnel.stream(req).await) }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESETS)
        .max_send_buf_size(256 * 1024);
    let conn = builder.serve_connection(TokioIo::new(activity.meter(io)), service);
    tokio::pin!(conn);
    let revoked = no_longer_allowed(&revoke_ctx, &revoke_decision);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "h2 tunnel ended");
            }
            return;
        }
        () = activity.idle_for(limits.idle) => {}
        () = revoked => {}
    }
    // Idle or revoked: GOAWAY, and let streams in flight finish briefly.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
}

/// Completes when a newer generation no longer allows the tunnel's intent
/// (re-authorized from scratch). Destinations are re-judged per stream:
/// every admission refreshes the decision and re-validates its connector.
async fn no_longer_allowed(ctx: &RelayContext, decision: &Allowed) {
    let mut rx = ctx.authorizer.subscribe();
    rx.mark_unchanged();
    let mut checked = decision.generation();
    loop {
        let current = ctx.authorizer.generation();
        if current != checked {
            checked = current;
            if let Err(denied) = ctx.authorizer.authorize(decision.intent.clone()) {
                ctx.audit
                    .tunnel_revoked(decision, denied.generation(), &denied.deny_reason());
                return;
            }
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Tunnel {
    /// One stream: map, admit, read what the plan needs, forward, relay back.
    async fn stream(&self, req: Request<Incoming>) -> Response<RespBody> {
        let n = self.streams.fetch_add(1, Ordering::Relaxed) + 1;
        let grpc = is_grpc(req.headers().get(CONTENT_TYPE).map(HeaderValue::as_bytes));
        let (parts, body) = req.into_parts();
        let (decision, connector) = self.current.lock().await.clone();
        let head = match map::request_head(
            parts.method.as_str(),
            parts.uri.scheme_str(),
            parts.uri.authority().map(http::uri::Authority::as_str),
            parts
                .uri
                .path_and_query()
                .map(http::uri::PathAndQuery::as_str),
            parts
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_bytes())),
            !body.is_end_stream(),
        ) {
            Ok(h) => h,
            Err(e) => {
                self.ctx.audit.tunnel_rejected(
                    &decision,
                    format!(
                        "HTTP/2 request rejected before policy evaluation for {}",
                        decision.intent.target
                    ),
                    e.to_string(),
                );
                let r = json_error(400, "invalid_request", &e.to_string(), None, None);
                return render(&r, grpc);
            }
        };
        let mut policy = TunnelPolicy {
            shared: &self.ctx,
            decision,
            connector,
            predialed: None,
            tls: true,
            request_num: n - 1,
            current: None,
            pending: None,
        };
        let admission = policy.admit(&head).await;
        self.keep_newer(&policy).await;
        let (key, connector, out, plan, upgrade) = match admission {
            Admission::Forward {
                key,
                connector,
                head,
                body,
                upgrade,
            } => (key, connector, head, body, upgrade),
            Admission::Respond { response } => return render(&response, grpc),
            Admission::Local { .. } => {
                return render(
                    &Refusal::json(404, "not_found", "no local service here"),
                    grpc,
                )
            }
        };
        if !matches!(upgrade, Upgrade::No) {
            let r = json_error(
                400,
                "unsupported_upgrade",
                "protocol upgrades are not supported on HTTP/2 streams",
                None,
                None,
            );
            return render(&r, grpc);
        }
        let (out, body) = match self.body(&mut policy, &head, out, plan, body).await {
            Ok(v) => v,
            Err(r) => return render(&r, grpc),
        };
        let sender = match self.pool.sender(&self.ctx, &key, &connector).await {
            Ok(s) => s,
            Err(f) => return render(&policy.unreachable(&head, &f), grpc),
        };
        let h2 = matches!(sender, Sender::H2(_));
        let request = match upstream_request(&out, &parts.headers, body, h2) {
            Ok(r) => r,
            Err(detail) => {
                policy.failed(&head, &detail);
                return render(&BAD_REQUEST, grpc);
            }
        };
        let sent = match sender {
            Sender::H2(mut s) => match s.ready().await {
                Ok(()) => s.send_request(request).await,
                Err(e) => Err(e),
            },
            Sender::H1(mut s) => {
                let r = s.send_request(request).await;
                if r.is_ok() {
                    self.pool.release(key, s);
                }
                r
            }
        };
        match sent {
            Ok(resp) => {
                policy.completed(&head, resp.status().as_u16());
                client_response(resp, h2, self.ctx.audit.metrics())
            }
            Err(e) => {
                policy.failed(&head, &format!("upstream exchange failed: {e}"));
                let r = json_error(
                    502,
                    "upstream_failed",
                    "the upstream failed the request",
                    None,
                    Some(policy.decision.policy_key()),
                );
                render(&r, grpc)
            }
        }
    }

    /// A stream whose admission re-authorized leaves the newer decision for the next ones.
    async fn keep_newer(&self, policy: &TunnelPolicy<'_>) {
        let mut current = self.current.lock().await;
        if policy.decision.generation() > current.0.generation() {
            *current = (policy.decision.clone(), policy.connector.clone());
        }
    }

    /// The head and body that go upstream, per the admitted body plan:
    /// streamed (with the marker guard), or read whole (bounded) and
    /// transformed, run through middleware, or signed.
    async fn body(
        &self,
        policy: &mut TunnelPolicy<'_>,
        req: &RequestHead,
        mut out: Vec<u8>,
        plan: BodyPlan,
        mut body: Incoming,
    ) -> Result<(RequestHead, ReqBody), Refusal> {
        let idle = self.limits.body_idle;
        let (out, bytes) = match plan {
            BodyPlan::Stream { guard } => {
                let mut scan = MarkerScan::new(guard);
                let mut prefix = VecDeque::new();
                if guard {
                    // Check what the client sent first before anything is dialled.
                    let mut seen = 0usize;
                    while seen < PREFETCH_LIMIT && !body.is_end_stream() {
                        let Some(frame) = next_frame(&mut body, idle).await? else {
                            break;
                        };
                        if let Some(d) = frame.data_ref() {
                            seen += d.len();
                            if scan.payload(d).is_err() {
                                return Err(marker_refusal());
                            }
                        }
                        prefix.push_back(frame);
                    }
                }
                let head = reparse(&out)?;
                let body = Guarded {
                    prefix,
                    rest: Some(body),
                    scan,
                };
                let counted = body.map_frame(count_frames(self.ctx.audit.metrics(), true));
                return Ok((head, counted.boxed()));
            }
            BodyPlan::Buffer {
                limit,
                transform,
                on_error,
            } => {
                let Ok(bytes) = collect(&mut body, limit, idle).await else {
                    return Err(on_error.unwrap_or(BAD_REQUEST));
                };
                let bytes = transform(&bytes)?.unwrap_or(bytes);
                (out, bytes)
            }
            BodyPlan::Middleware { limit } => {
                let bytes = collect(&mut body, limit, idle).await.map_err(|too_large| {
                    if too_large {
                        json_error(
                            403,
                            "middleware_failed",
                            &format!(
                                "request body exceeds the middleware payload limit ({limit} bytes)"
                            ),
                            None,
                            None,
                        )
                    } else {
                        BAD_REQUEST
                    }
                })?;
                let (head, bytes, upgrade) = policy.finish_middleware(req, bytes).await?;
                if !matches!(upgrade, Upgrade::No) {
                    return Err(BAD_REQUEST);
                }
                (head, bytes)
            }
            BodyPlan::Sign { limit, sign } => {
                let bytes = collect(&mut body, limit, idle).await.map_err(|too_large| {
                    if too_large {
                        Refusal::json(
                            413,
                            "sigv4_body_too_large",
                            &format!(
                                "request body exceeds the SigV4 signing limit ({limit} bytes)"
                            ),
                        )
                    } else {
                        BAD_REQUEST
                    }
                })?;
                let fields = sign(&bytes)?;
                super::append_fields(&mut out, &fields);
                (out, bytes)
            }
        };
        // Read-whole plans leave the head without its blank line (and framing).
        let mut head = out;
        head.extend_from_slice(format!("content-length: {}\r\n\r\n", bytes.len()).as_bytes());
        let head = reparse(&head)?;
        Ok((
            head,
            Full::new(Bytes::from(bytes))
                .map_err(|e| match e {})
                .map_frame(count_frames(self.ctx.audit.metrics(), true))
                .boxed(),
        ))
    }
}

fn marker_refusal() -> Refusal {
    json_error(
        500,
        "credential_injection_failed",
        "reserved credential placeholder in request body",
        None,
        None,
    )
}

/// The head admission wrote, as the parser sees it (it was built from a
/// parsed head, so a failure here is a bug: refused, never forwarded).
fn reparse(raw: &[u8]) -> Result<RequestHead, Refusal> {
    RequestHead::parse(raw).map_err(|_| BAD_REQUEST)
}

/// The next body frame within `idle`; `Ok(None)` at the end.
async fn next_frame(body: &mut Incoming, idle: Duration) -> Result<Option<Frame<Bytes>>, Refusal> {
    match tokio::time::timeout(idle, body.frame()).await {
        Ok(Some(Ok(f))) => Ok(Some(f)),
        Ok(None) => Ok(None),
        Ok(Some(Err(_))) | Err(_) => Err(BAD_REQUEST),
    }
}

/// The whole body, at most `limit` bytes (`Err(true)` past it, `Err(false)`
/// when broken or idle). Trailers are dropped, as for a re-framed HTTP/1.1 body.
async fn collect(body: &mut Incoming, limit: usize, idle: Duration) -> Result<Vec<u8>, bool> {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(idle, body.frame()).await {
            Ok(None) => return Ok(out),
            Ok(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    if out.len() + d.len() > limit {
                        return Err(true);
                    }
                    out.extend_from_slice(d);
                }
            }
            Ok(Some(Err(_))) | Err(_) => return Err(false),
        }
    }
}

/// The upstream request: the admitted head's method, target and fields
/// (credentials already injected), minus connection-specific fields. Fields
/// the client did not send as they are (injected credentials) are marked
/// sensitive, so HPACK never indexes them.
fn upstream_request(
    out: &RequestHead,
    client: &HeaderMap,
    body: ReqBody,
    h2: bool,
) -> Result<Request<ReqBody>, String> {
    let authority = out
        .header("host")
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| "request without authority".to_owned())?;
    let uri = if h2 {
        format!("https://{authority}{}", out.target)
    } else {
        out.target.clone()
    };
    let uri = Uri::try_from(uri).map_err(|e| format!("invalid request target: {e}"))?;
    let method = http::Method::from_bytes(out.method.as_bytes())
        .map_err(|e| format!("invalid method: {e}"))?;
    let mut req = Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = if h2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    let headers = req.headers_mut();
    for (name, value) in &out.headers {
        let lower = name.to_ascii_lowercase();
        let dropped = CONNECTION_SPECIFIC.contains(&lower.as_str())
            || out.connection_tokens.contains(&lower)
            || (h2 && lower == "host")
            || (lower == "te" && (!h2 || !value.eq_ignore_ascii_case(b"trailers")));
        if dropped {
            continue;
        }
        let name = HeaderName::from_bytes(lower.as_bytes())
            .map_err(|e| format!("invalid header name: {e}"))?;
        let mut v =
            HeaderValue::from_bytes(value).map_err(|e| format!("invalid header value: {e}"))?;
        if !client
            .get_all(&name)
            .iter()
            .any(|c| c.as_bytes() == value.as_slice())
        {
            v.set_sensitive(true);
        }
        headers.append(name, v);
    }
    Ok(req)
}

/// The upstream's response for the client: connection-specific fields of an
/// HTTP/1.1 upstream dropped, the body (and trailers) streamed as they come.
fn client_response(resp: Response<Incoming>, h2: bool, metrics: &Metrics) -> Response<RespBody> {
    let (mut parts, body) = resp.into_parts();
    if !h2 {
        let nominated: Vec<HeaderName> = parts
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in nominated {
            parts.headers.remove(name);
        }
        for name in CONNECTION_SPECIFIC {
            parts.headers.remove(name);
        }
    }
    parts.version = Version::HTTP_2;
    let body = body
        .map_err(BoxError::from)
        .map_frame(count_frames(metrics, false));
    Response::from_parts(parts, body.boxed())
}

/// Counts the data bytes of each frame that passes (`sluice_relayed_bytes_total`).
fn count_frames(
    metrics: &Metrics,
    to_upstream: bool,
) -> impl FnMut(Frame<Bytes>) -> Frame<Bytes> + Send + Sync + 'static {
    let metrics = metrics.clone();
    move |frame| {
        if let Some(d) = frame.data_ref() {
            let n = d.len() as u64;
            if to_upstream {
                metrics.relayed(n, 0);
            } else {
                metrics.relayed(0, n);
            }
        }
        frame
    }
}

/// A refusal on this stream only: JSON as on HTTP/1.1, or for a gRPC call a
/// trailers-only response (`200`, `grpc-status`, `grpc-message`).
fn render(refusal: &Refusal, grpc: bool) -> Response<RespBody> {
    let (content_type, body, policy) = refusal.rendered();
    let len = body.len();
    let (status, body) = if grpc {
        (StatusCode::OK, Empty::new().map_err(|e| match e {}).boxed())
    } else {
        let status =
            StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed(),
        )
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    if grpc {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(
            "grpc-status",
            HeaderValue::from(u16::from(grpc_status(refusal.status()))),
        );
        let code = refusal.code().unwrap_or("refused");
        let detail = refusal.detail();
        let text = if detail.is_empty() || detail == code {
            format!("sluice: {code}")
        } else {
            format!("sluice: {code}: {detail}")
        };
        if let Ok(v) = HeaderValue::from_str(&grpc_message(&text, MAX_GRPC_MESSAGE)) {
            headers.insert("grpc-message", v);
        }
    } else {
        if let Some(ct) = content_type {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    if let Some(p) = policy.and_then(|p| HeaderValue::from_str(p).ok()) {
        headers.insert("x-sluice-policy", p);
    }
    resp
}

/// A streamed request body: frames read ahead (already checked), then the
/// rest, each data frame checked for reserved credential markers when the
/// guard is on (a marker ends the body with an error: the upstream stream
/// is reset, never completed).
struct Guarded {
    prefix: VecDeque<Frame<Bytes>>,
    rest: Option<Incoming>,
    scan: MarkerScan,
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(f) = this.prefix.pop_front() {
            return Poll::Ready(Some(Ok(f)));
        }
        let Some(rest) = this.rest.as_mut() else {
            return Poll::Ready(None);
        };
        let next = ready!(Pin::new(rest).poll_frame(cx));
        match next {
            None => {
                this.rest = None;
                Poll::Ready(None)
            }
            Some(Err(e)) => {
                this.rest = None;
                Poll::Ready(Some(Err(e.into())))
            }
            Some(Ok(frame)) => {
                let marked = match (frame.data_ref(), frame.trailers_ref()) {
                    (Some(d), _) => this.scan.payload(d).is_err(),
                    (None, Some(t)) => t.values().any(|v| this.scan.line(v.as_bytes()).is_err()),
                    _ => false,
                };
                if marked {
                    this.rest = None;
                    return Poll::Ready(Some(Err(
                        "reserved credential marker in request body".into()
                    )));
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        // Read-ahead frames make the remaining size unknown (the forwarded
        // Content-Length, if any, still frames the request).
        match &self.rest {
            Some(r) if self.prefix.is_empty() => r.size_hint(),
            _ => SizeHint::new(),
        }
    }
}
