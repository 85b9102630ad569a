//! `inference.local` (design §6.4): model calls answered by sluice itself.
//! The caller's TLS is terminated by the adapter; this loop reads each
//! request (bounded), recognises the API call, picks the policy's route for
//! its protocol, drops the caller's credentials, sets the route's, rewrites
//! `model` when the route says so, and relays the backend's answer
//! (streamed per chunk or buffered). Every call is one API Activity (6003)
//! event; anything not recognised is refused and nothing is sent.
//!
//! Unlike the other relays, this one is built without an egress decision:
//! the backend is operator configuration (the route's `endpoint`), never
//! a destination the sandbox named.

mod answer;
mod backend;
mod call;
mod outbound;
mod usage;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::Full;
use sluice_policy::request::canonicalize_path;
use sluice_policy::InferenceRoute;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::audit::InferenceCall;
use crate::refusal::{json_error, Refusal};
use crate::relay::http::{
    answer_and_close, read_body, read_head, BodyFraming, HeadError, HeadLimits, RequestHead,
};
use crate::relay::RelayContext;
use answer::{AnswerLimits, BodyEnd};
use backend::Backend;

/// Largest request body accepted (413 beyond).
const MAX_REQUEST_BODY: usize = 10 * 1024 * 1024;
/// Largest response body relayed, streamed or buffered.
const MAX_RESPONSE_BODY: usize = 32 * 1024 * 1024;

/// Bounds for one caller connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InferenceLimits {
    pub(crate) request_head: HeadLimits,
    /// Longest stall while reading a request body.
    pub(crate) body_idle: Duration,
}

/// Serves one caller connection (TLS already terminated) until it closes
/// or a request is refused.
pub(crate) async fn serve<C>(
    ctx: &RelayContext,
    client: &mut C,
    peer: SocketAddr,
    limits: InferenceLimits,
) where
    C: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut buf = BytesMut::with_capacity(4096);
    let mut backend: Option<Backend> = None;
    loop {
        let head = match read_head(client, &mut buf, limits.request_head).await {
            Ok(n) => buf.split_to(n),
            Err(HeadError::Closed) => return,
            Err(e) => {
                ctx.audit
                    .inference_denied(peer, &format!("request head: {e}"));
                let status = match e {
                    HeadError::TooLarge(_) => 431,
                    HeadError::Timeout => 408,
                    _ => 400,
                };
                let r = json_error(status, "bad_request", &e.to_string(), None, None);
                return answer_and_close(client, &r.http1()).await;
            }
        };
        let req = match RequestHead::parse(&head) {
            Ok(r) => r,
            Err(e) => {
                ctx.audit
                    .inference_denied(peer, &format!("request head: {e}"));
                let r = json_error(400, "bad_request", &e.to_string(), None, None);
                return answer_and_close(client, &r.http1()).await;
            }
        };
        match exchange(ctx, client, &mut buf, &req, peer, limits, &mut backend).await {
            Next::KeepAlive if !req.close && req.version == 1 => {}
            Next::KeepAlive | Next::Close => return,
            Next::Refuse(r) => return answer_and_close(client, &r.http1()).await,
        }
    }
}

/// What happens to the caller connection after one exchange.
enum Next {
    KeepAlive,
    Close,
    /// Answer locally and close.
    Refuse(Refusal),
}

#[allow(clippy::too_many_lines)]
async fn exchange<C>(
    ctx: &RelayContext,
    client: &mut C,
    buf: &mut BytesMut,
    req: &RequestHead,
    peer: SocketAddr,
    limits: InferenceLimits,
    cached: &mut Option<Backend>,
) -> Next
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
{
    let started = Instant::now();
    let (raw_path, query) = match req.target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (req.target.as_str(), None),
    };
    let call = canonicalize_path(raw_path, false)
        .ok()
        .and_then(|p| call::classify(&req.method, &p));
    let Some(call) = call else {
        let what = format!("{} {}", req.method, sluice_telemetry::redact_path(raw_path));
        ctx.audit
            .inference_denied(peer, &format!("{what} is not an inference API call"));
        return Next::Refuse(json_error(
            403,
            "inference_route_unknown",
            &format!("{what} is not an inference API call sluice routes"),
            None,
            None,
        ));
    };
    let snapshot = ctx.authorizer.snapshot();
    let routes = snapshot.inference_routes();
    if routes.is_empty() {
        ctx.audit
            .inference_denied(peer, "no inference routes are configured");
        return Next::Refuse(json_error(
            503,
            "inference_not_configured",
            "the policy has no inference routes",
            None,
            None,
        ));
    }
    let Some(route) = call::route_for(routes, call.protocol) else {
        let p = call.protocol.as_str();
        ctx.audit
            .inference_denied(peer, &format!("no inference route serves {p}"));
        return Next::Refuse(json_error(
            404,
            "inference_route_not_found",
            &format!("no inference route serves {p}"),
            None,
            None,
        ));
    };
    // The body, whole and bounded, before anything is dialled.
    if req
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"))
        && client
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .is_err()
    {
        return Next::Close;
    }
    let body = match req.framing {
        BodyFraming::None => Vec::new(),
        framing => {
            match read_body(framing, client, buf, MAX_REQUEST_BODY, limits.body_idle).await {
                Ok(b) => b,
                Err(e) => {
                    let too_large = matches!(e, crate::relay::http::BodyError::TooLarge(_));
                    ctx.audit
                        .inference_denied(peer, &format!("request body: {e}"));
                    let (status, code) = if too_large {
                        (413, "payload_too_large")
                    } else {
                        (400, "bad_request")
                    };
                    return Next::Refuse(json_error(status, code, &e.to_string(), None, None));
                }
            }
        }
    };
    let outbound = match outbound::build(route, req, body) {
        Ok(o) => o,
        Err(e) => {
            ctx.audit
                .inference_denied(peer, &format!("{}: {e}", call.protocol.as_str()));
            return Next::Refuse(json_error(
                400,
                "invalid_request_body",
                &e.to_string(),
                None,
                None,
            ));
        }
    };
    let mut record = InferenceCall {
        peer,
        route: Arc::clone(&route.name),
        protocol: call.protocol,
        backend: backend::target(&route.endpoint),
        model: outbound.model.clone(),
        status: None,
        latency: Duration::ZERO,
        first_byte: None,
        usage: (None, None),
        bytes: 0,
        error: None,
    };

    let request = match upstream_request(route, &call.backend_path, query, req, outbound) {
        Ok(r) => r,
        Err(detail) => {
            record.error = Some(detail.clone());
            ctx.audit.inference_call(&record);
            return Next::Refuse(json_error(400, "bad_request", &detail, None, None));
        }
    };
    let key = (Arc::clone(&route.name), snapshot.generation());
    let response = match send(ctx, route, key, request, cached).await {
        Ok(r) => r,
        Err((status, code, detail)) => {
            record.latency = started.elapsed();
            record.error = Some(detail.clone());
            ctx.audit.inference_call(&record);
            return Next::Refuse(json_error(status, code, &detail, None, None));
        }
    };
    let (parts, body) = response.into_parts();
    record.status = Some(parts.status.as_u16());
    let answer_limits = AnswerLimits {
        max_bytes: MAX_RESPONSE_BODY,
        idle: route.timeout,
    };
    let close = req.close || req.version == 0;
    let next = if call.protocol.may_stream() {
        let sse = answer::is_event_stream(&parts.headers);
        let chunked = req.version == 1;
        let framing = if chunked {
            "transfer-encoding: chunked\r\n"
        } else {
            ""
        };
        let head = answer::head(parts.status, &parts.headers, framing, close || !chunked);
        let a = answer::stream(body, client, &head, chunked, sse, answer_limits).await;
        record.first_byte = a.first_byte.map(|t| t.duration_since(started));
        record.usage = (a.usage.input, a.usage.output);
        record.bytes = a.bytes;
        if a.end == BodyEnd::Complete {
            Next::KeepAlive
        } else {
            record.error = Some(a.end.describe(answer_limits));
            *cached = None;
            Next::Close
        }
    } else {
        match answer::collect(body, answer_limits).await {
            Ok(bytes) => {
                let mut u = usage::Usage::default();
                u.observe_body(&bytes);
                record.usage = (u.input, u.output);
                record.bytes = bytes.len() as u64;
                let framing = format!("content-length: {}\r\n", bytes.len());
                let mut out = answer::head(parts.status, &parts.headers, &framing, close);
                out.extend_from_slice(&bytes);
                record.first_byte = Some(started.elapsed());
                if client.write_all(&out).await.is_err() || client.flush().await.is_err() {
                    record.error = Some("client closed the connection".into());
                    Next::Close
                } else {
                    Next::KeepAlive
                }
            }
            Err(end) => {
                let detail = end.describe(answer_limits);
                record.error = Some(detail.clone());
                *cached = None;
                Next::Refuse(json_error(
                    502,
                    "inference_upstream_error",
                    &detail,
                    None,
                    None,
                ))
            }
        }
    };
    record.latency = started.elapsed();
    ctx.audit.inference_call(&record);
    next
}

/// The request for the backend: `endpoint` base path + the call's path,
/// the caller's query, and the outbound headers.
fn upstream_request(
    route: &InferenceRoute,
    backend_path: &str,
    query: Option<&str>,
    req: &RequestHead,
    outbound: outbound::Outbound,
) -> Result<http::Request<Full<Bytes>>, String> {
    let mut uri = format!("{}{backend_path}", route.endpoint.base_path);
    if let Some(q) = query {
        uri.push('?');
        uri.push_str(q);
    }
    let method = if req.method == "GET" {
        http::Method::GET
    } else {
        http::Method::POST
    };
    let mut builder = http::Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::HOST, backend::host_header(&route.endpoint));
    for (name, value) in &outbound.headers {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| "invalid header name".to_owned())?;
        let mut value = http::HeaderValue::from_bytes(value)
            .map_err(|_| format!("invalid value for header {name}"))?;
        // The route's key: never shown by a Debug print of the request.
        value.set_sensitive(name == route.auth_style.header_name());
        builder = builder.header(name, value);
    }
    builder
        .body(Full::new(outbound.body))
        .map_err(|e| format!("cannot build the backend request: {e}"))
}

/// Sends on the cached connection when it is for the same route and
/// generation and still usable, else on a new one (kept for the next call).
/// A kept connection the backend closed meanwhile never took the request:
/// it is sent once more on a fresh connection.
async fn send(
    ctx: &RelayContext,
    route: &InferenceRoute,
    key: (Arc<str>, u64),
    request: http::Request<Full<Bytes>>,
    cached: &mut Option<Backend>,
) -> Result<http::Response<hyper::body::Incoming>, (u16, &'static str, String)> {
    let deadline = Instant::now() + route.timeout;
    let timed_out = || {
        (
            504,
            "inference_upstream_timeout",
            format!(
                "backend of route {} did not answer within {:?}",
                route.name, route.timeout
            ),
        )
    };
    if cached.as_ref().is_some_and(|b| b.key != key) {
        *cached = None;
    }
    if let Some(b) = cached.as_mut() {
        // The previous answer was read whole, so this is quick; a closed
        // connection fails here.
        let ready = tokio::time::timeout(Duration::from_secs(1), b.sender.ready()).await;
        if !matches!(ready, Ok(Ok(()))) {
            *cached = None;
        }
    }
    let mut retry = cached.is_some().then(|| clone_request(&request));
    let mut request = request;
    loop {
        let sender = match cached.take() {
            Some(b) => b.sender,
            None => tokio::time::timeout_at(
                deadline,
                backend::connect(ctx, &route.endpoint, route.timeout),
            )
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| (503, "inference_upstream_unavailable", e.to_string()))?,
        };
        let b = cached.insert(Backend {
            key: key.clone(),
            sender,
        });
        match tokio::time::timeout_at(deadline, b.sender.send_request(request)).await {
            Ok(Ok(r)) => return Ok(r),
            Ok(Err(e)) => {
                *cached = None;
                if let (true, Some(again)) = (e.is_canceled() || e.is_closed(), retry.take()) {
                    request = again;
                    continue;
                }
                return Err((
                    502,
                    "inference_upstream_error",
                    format!("backend of route {}: {e}", route.name),
                ));
            }
            Err(_) => {
                *cached = None;
                return Err(timed_out());
            }
        }
    }
}

/// A copy of a request whose body is already in memory.
fn clone_request(r: &http::Request<Full<Bytes>>) -> http::Request<Full<Bytes>> {
    let mut out = http::Request::new(r.body().clone());
    *out.method_mut() = r.method().clone();
    *out.uri_mut() = r.uri().clone();
    *out.headers_mut() = r.headers().clone();
    out
}
