use std::future::Future;
use std::time::Duration;

use bytes::BytesMut;
use sluice_policy::EndpointId;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::body::{check_first_chunk, copy_body, prefetch, read_body, BodyError};
use super::guard::{MarkerScan, PREFETCH_LIMIT};
use super::head::{read_head, HeadError, HeadLimits};
use super::request::{ParseError, RequestHead};
use super::response::{parse_response, ResponseError, ResponseHead};
use crate::destination::UpstreamConnector;
use crate::egress::Target;
use crate::refusal::Refusal;
use crate::relay::idle::Activity;
use crate::relay::stream::UpstreamStream;
use crate::relay::websocket::{self, parse_deflate_extension, TextPolicy, WsLimits};

/// Identity of an upstream connection for reuse: same generation, same
/// authorized endpoint, same target. Anything else dials anew.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamKey {
    pub generation: u64,
    pub endpoint: EndpointId,
    pub target: Target,
}

/// The per-request verdict of the loop's owner.
#[derive(Debug)]
pub enum Admission {
    /// Write `head` (already rewritten) and the body to the upstream.
    /// What a `101` answer may switch the connection to.
    Forward {
        key: UpstreamKey,
        connector: UpstreamConnector,
        head: Vec<u8>,
        body: BodyPlan,
        upgrade: Upgrade,
    },
    /// Answer locally with `response` and close the client connection.
    Respond { response: Refusal },
    /// A local service (`policy.local`): read the whole body (at most
    /// `limit` bytes; more is `413`), then answer with
    /// [`RequestPolicy::answer_locally`] and close. Nothing is dialled.
    Local { limit: usize },
}

/// What an admitted request may upgrade to.
pub enum Upgrade {
    /// Not an upgrade: a `101` from the upstream is a protocol error.
    No,
    /// A raw byte copy after `101` (non-WebSocket upgrades on L4 endpoints).
    Raw,
    /// The frame-level WebSocket relay, with this policy for client text messages.
    WebSocket(Box<dyn TextPolicy>),
}

impl std::fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::No => "No",
            Self::Raw => "Raw",
            Self::WebSocket(_) => "WebSocket",
        })
    }
}

/// How the request body travels.
pub enum BodyPlan {
    /// Stream with the original framing. With `guard`, a reserved
    /// credential marker in the body is refused (`500
    /// credential_injection_failed`): the loop reads up to 256 KiB of the
    /// body ahead and checks it before dialling, and checks the rest as it
    /// streams, across reads and chunk boundaries. The loop answers
    /// `Expect: 100-continue` itself then, so the head must not carry it
    /// ([`BodyPlan::answers_continue`]).
    Stream { guard: bool },
    /// Read the whole body first (at most `limit` bytes), then `transform`
    /// it. `head` then carries no framing fields and no final blank line;
    /// the loop adds `Content-Length` itself. Nothing is dialled or written
    /// before the transform accepted the body.
    Buffer {
        limit: usize,
        transform: BodyTransform,
        /// The answer when the body cannot be read within `limit` (default: a bare 400).
        on_error: Option<Refusal>,
    },
    /// Middleware stages run over this request: read the whole body first
    /// (at most `limit` bytes; more is refused, `403 middleware_failed`),
    /// then [`RequestPolicy::finish_middleware`] runs the stages and
    /// credentials and returns the head (no framing fields, no final blank
    /// line) and the body to send. Nothing is dialled or written before.
    Middleware { limit: usize },
    /// SigV4 over the body (`credential_signing`): read the whole body
    /// first (at most `limit` bytes; more is refused, `413
    /// sigv4_body_too_large`), then `sign` it. `head` carries no framing
    /// fields and no final blank line, as for [`BodyPlan::Buffer`]; the
    /// fields `sign` returns (the signature) are appended to it, then
    /// `Content-Length`. Nothing is dialled or written before.
    Sign { limit: usize, sign: BodySigner },
}

impl BodyPlan {
    /// Whether the loop answers `Expect: 100-continue` itself (it reads
    /// the body before the upstream sees the head), so the upstream head
    /// must drop `Expect`.
    #[must_use]
    pub fn answers_continue(&self) -> bool {
        matches!(
            self,
            Self::Buffer { .. }
                | Self::Middleware { .. }
                | Self::Sign { .. }
                | Self::Stream { guard: true }
        )
    }

    /// Whether the loop reads the whole body before the head goes out (the
    /// head then carries no framing fields and no final blank line).
    #[must_use]
    pub fn buffers(&self) -> bool {
        matches!(
            self,
            Self::Buffer { .. } | Self::Middleware { .. } | Self::Sign { .. }
        )
    }
}

impl std::fmt::Debug for BodyPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stream { guard } => f.debug_struct("Stream").field("guard", guard).finish(),
            Self::Buffer { limit, .. } => f
                .debug_struct("Buffer")
                .field("limit", limit)
                .finish_non_exhaustive(),
            Self::Middleware { limit } => {
                f.debug_struct("Middleware").field("limit", limit).finish()
            }
            Self::Sign { limit, .. } => f
                .debug_struct("Sign")
                .field("limit", limit)
                .finish_non_exhaustive(),
        }
    }
}

/// Rewrites or checks a buffered body: `Ok(None)` keeps it, `Ok(Some)`
/// replaces it, `Err(response)` refuses the request with that response.
pub type BodyTransform = Box<dyn FnOnce(&[u8]) -> Result<Option<Vec<u8>>, Refusal> + Send>;

/// Signs a buffered body: the header fields to append to the head, or
/// `Err(response)` to refuse the request with that response.
pub type BodySigner = Box<dyn FnOnce(&[u8]) -> Result<Vec<(String, Vec<u8>)>, Refusal> + Send>;

/// How one request loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum LoopEnd {
    /// The client closed between requests or asked to close.
    ClientDone,
    /// A request was answered locally (denial or error) and the connection closed.
    Answered,
    /// Transport or framing failure mid-exchange.
    Broken,
    /// A `101 Switching Protocols` turned the connection into a raw copy, now ended.
    Upgraded,
}

/// Why the upstream of an admitted request could not be opened.
#[derive(Debug)]
pub enum DialFailure {
    /// TCP connect to every pinned address failed.
    Connect {
        target: Target,
        error: std::io::Error,
    },
    /// The upstream TLS handshake or certificate verification failed.
    Tls { target: Target, detail: String },
}

/// What the loop asks its owner (an adapter) for each request.
pub trait RequestPolicy: Send {
    /// Decide one request. Called once per request, before any of its
    /// bytes are written upstream.
    fn admit(&mut self, req: &RequestHead) -> impl Future<Output = Admission> + Send;
    /// Open the upstream for an admitted request (TCP to pinned addresses, TLS when needed).
    fn dial(
        &mut self,
        connector: &UpstreamConnector,
    ) -> impl Future<Output = Result<UpstreamStream, DialFailure>> + Send;
    /// The upstream could not be opened: the response to send.
    fn unreachable(&mut self, req: &RequestHead, failure: &DialFailure) -> Refusal;
    /// A request head was refused or the head could not be read: the response, if any.
    fn rejected(&mut self, err: &RejectCause) -> Option<Refusal>;
    /// An exchange finished with `status` from the upstream.
    fn completed(&mut self, req: &RequestHead, status: u16);
    /// An admitted exchange broke mid-way (upstream or client I/O, bad response).
    fn failed(&mut self, req: &RequestHead, detail: &str);
    /// Completes when a newer policy generation no longer allows the
    /// upgraded session (after `101`) of the request last completed, whose
    /// upstream was dialled to `upstream_ip`; the session is then closed.
    fn revoked(
        &self,
        upstream_ip: Option<std::net::IpAddr>,
    ) -> impl Future<Output = ()> + Send + '_;
    /// For a request admitted with [`Admission::Local`]: the answer of the
    /// local service to `req` with its whole `body`.
    fn answer_locally(
        &mut self,
        req: &RequestHead,
        body: Vec<u8>,
    ) -> impl Future<Output = Refusal> + Send {
        let _ = (req, body);
        async { Refusal::json(404, "not_found", "no local service here") }
    }
    /// For a request admitted with [`BodyPlan::Middleware`]: run the
    /// middleware stages over `body`, then credentials, and return the head
    /// (no framing, no final blank line), the body to send and the upgrade
    /// choice; or the refusal to answer.
    fn finish_middleware(
        &mut self,
        req: &RequestHead,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<(Vec<u8>, Vec<u8>, Upgrade), Refusal>> + Send;
    /// Where the loop counts the bytes of completed exchanges.
    fn metrics(&self) -> &crate::metrics::Metrics;
}

/// Why a request never reached policy.
#[derive(Debug)]
pub enum RejectCause {
    Head(HeadError),
    Parse(ParseError),
    /// The request body's framing is malformed (found before anything was forwarded).
    Body(String),
}

/// Bounds for the loop.
#[derive(Clone, Copy, Debug)]
pub struct LoopLimits {
    pub request_head: HeadLimits,
    pub response_head: HeadLimits,
    pub body_idle: Duration,
    pub dial_timeout: Duration,
    /// A raw upgraded connection (a non-WebSocket `101`) with no byte
    /// either way for this long is closed (the tunnel idle timeout).
    pub upgrade_idle: Duration,
}

struct Upstream {
    key: UpstreamKey,
    stream: UpstreamStream,
    buf: BytesMut,
}

/// How one exchange ended.
enum Exchanged {
    /// The response, and the bytes written (to the upstream, to the client).
    Done(ResponseHead, (u64, u64)),
    /// `101` relayed; the connection now belongs to an upgraded relay.
    Upgraded {
        extensions: Option<String>,
        /// `Sec-WebSocket-Protocol` of the `101`.
        subprotocol: Option<String>,
    },
}

/// Answers `Expect: 100-continue` (when `expected`) before the loop reads
/// a body itself; flushed, since the client may send the body only once it
/// has this.
async fn answer_continue<C: AsyncWrite + Unpin>(client: &mut C, expected: bool) {
    if expected {
        let _ = client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
        let _ = client.flush().await;
    }
}

/// Run the request loop on a client connection whose first request has
/// already been parsed (and consumed from `buf`).
pub async fn request_loop<C, P>(
    client: &mut C,
    buf: &mut BytesMut,
    first: RequestHead,
    policy: &mut P,
    limits: &LoopLimits,
) -> LoopEnd
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    P: RequestPolicy,
{
    let mut upstream: Option<Upstream> = None;
    let mut req = first;
    loop {
        let (key, connector, mut head, body, mut upgrade) = match policy.admit(&req).await {
            Admission::Respond { response } => {
                super::answer_and_close(client, &response.http1()).await;
                return LoopEnd::Answered;
            }
            Admission::Local { limit } => {
                let expects = req.framing != super::BodyFraming::None
                    && req
                        .header("expect")
                        .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"));
                answer_continue(client, expects).await;
                let response =
                    match read_body(req.framing, client, buf, limit, limits.body_idle).await {
                        Ok(body) => policy.answer_locally(&req, body).await,
                        Err(BodyError::TooLarge(_)) => Refusal::json(
                            413,
                            "payload_too_large",
                            &format!("request body exceeds {limit} bytes"),
                        ),
                        Err(e) => Refusal::json(400, "bad_request", &e.to_string()),
                    };
                super::answer_and_close(client, &response.http1()).await;
                return LoopEnd::Answered;
            }
            Admission::Forward {
                key,
                connector,
                head,
                body,
                upgrade,
            } => (key, connector, head, body, upgrade),
        };
        let continue_expected = req.framing != super::BodyFraming::None
            && req
                .header("expect")
                .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"));
        let (buffered, guard) = match body {
            BodyPlan::Stream { guard } => (None, guard),
            BodyPlan::Buffer {
                limit,
                transform,
                on_error,
            } => {
                answer_continue(client, continue_expected).await;
                let raw = match read_body(req.framing, client, buf, limit, limits.body_idle).await {
                    Ok(b) => b,
                    Err(e) => match on_error {
                        Some(response) => {
                            tracing::debug!(error = %e, "Body not inspectable");
                            super::answer_and_close(client, &response.http1()).await;
                            return LoopEnd::Answered;
                        }
                        None => {
                            return reject(client, policy, RejectCause::Body(e.to_string())).await
                        }
                    },
                };
                let body = match transform(&raw) {
                    Ok(Some(b)) => b,
                    Ok(None) => raw,
                    Err(response) => {
                        super::answer_and_close(client, &response.http1()).await;
                        return LoopEnd::Answered;
                    }
                };
                head.extend_from_slice(
                    format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
                );
                (Some(body), false)
            }
            BodyPlan::Middleware { limit } => {
                answer_continue(client, continue_expected).await;
                let raw = match read_body(req.framing, client, buf, limit, limits.body_idle).await {
                    Ok(b) => b,
                    Err(BodyError::TooLarge(_)) => {
                        let response = crate::refusal::json_error(
                            403,
                            "middleware_failed",
                            &format!(
                                "request body exceeds the middleware payload limit ({limit} bytes)"
                            ),
                            None,
                            None,
                        );
                        super::answer_and_close(client, &response.http1()).await;
                        return LoopEnd::Answered;
                    }
                    Err(e) => {
                        return reject(client, policy, RejectCause::Body(e.to_string())).await
                    }
                };
                match policy.finish_middleware(&req, raw).await {
                    Ok((finished_head, body, finished_upgrade)) => {
                        head = finished_head;
                        upgrade = finished_upgrade;
                        head.extend_from_slice(
                            format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
                        );
                        (Some(body), false)
                    }
                    Err(response) => {
                        super::answer_and_close(client, &response.http1()).await;
                        return LoopEnd::Answered;
                    }
                }
            }
            BodyPlan::Sign { limit, sign } => {
                answer_continue(client, continue_expected).await;
                let body = match read_body(req.framing, client, buf, limit, limits.body_idle).await
                {
                    Ok(b) => b,
                    Err(BodyError::TooLarge(_)) => {
                        let response = Refusal::json(
                            413,
                            "sigv4_body_too_large",
                            &format!(
                                "request body exceeds the SigV4 signing limit ({limit} bytes)"
                            ),
                        );
                        super::answer_and_close(client, &response.http1()).await;
                        return LoopEnd::Answered;
                    }
                    Err(e) => {
                        return reject(client, policy, RejectCause::Body(e.to_string())).await
                    }
                };
                match sign(&body) {
                    Ok(fields) => {
                        append_fields(&mut head, &fields);
                        head.extend_from_slice(
                            format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
                        );
                        (Some(body), false)
                    }
                    Err(response) => {
                        super::answer_and_close(client, &response.http1()).await;
                        return LoopEnd::Answered;
                    }
                }
            }
        };
        if buffered.is_none() && guard && req.framing != super::BodyFraming::None {
            // Read the body ahead (up to 256 KiB, nothing consumed): a marker
            // or malformed framing in it is refused before the upstream is
            // dialled. A longer body is checked further as it streams.
            answer_continue(client, continue_expected).await;
            match prefetch(req.framing, client, buf, PREFETCH_LIMIT, limits.body_idle).await {
                Ok(_) => {}
                Err(BodyError::Marker) => return refuse_marker(client, policy, &req).await,
                Err(e) => return reject(client, policy, RejectCause::Body(e.to_string())).await,
            }
        } else if buffered.is_none() && req.framing == super::BodyFraming::Chunked {
            if let Err(e) = check_first_chunk(client, buf, limits.body_idle).await {
                return reject(client, policy, RejectCause::Body(e.to_string())).await;
            }
        }
        if upstream.as_ref().is_some_and(|u| u.key != key) {
            upstream = None;
        }
        let up = match upstream.take() {
            Some(u) => u,
            None => match policy.dial(&connector).await {
                Ok(stream) => Upstream {
                    key,
                    stream,
                    buf: BytesMut::new(),
                },
                Err(failure) => {
                    let response = policy.unreachable(&req, &failure);
                    super::answer_and_close(client, &response.http1()).await;
                    return LoopEnd::Answered;
                }
            },
        };
        let mut up = up;
        let outgoing = Outgoing {
            head,
            body: buffered,
            guard,
            upgrade: !matches!(upgrade, Upgrade::No),
        };
        let resp = match exchange(client, buf, &mut up, &req, outgoing, limits).await {
            Ok(Exchanged::Done(r, (to_upstream, to_client))) => {
                policy.metrics().relayed(to_upstream, to_client);
                r
            }
            Ok(Exchanged::Upgraded {
                extensions,
                subprotocol,
            }) => {
                policy.completed(&req, 101);
                // The session outlives its request: a reload that no longer
                // allows it ends it (WebSocket: close 1012 both ways).
                let stop = policy.revoked(up.stream.peer_ip());
                match upgrade {
                    Upgrade::WebSocket(mut text_policy) => {
                        let deflate = extensions.as_deref().and_then(parse_deflate_extension);
                        text_policy.on_start(subprotocol.as_deref());
                        let client_buf = buf.split();
                        let end = websocket::relay_with_stop(
                            &mut *client,
                            client_buf,
                            up.stream,
                            up.buf,
                            deflate,
                            WsLimits {
                                session_idle: Some(limits.upgrade_idle),
                                ..WsLimits::default()
                            },
                            text_policy.as_mut(),
                            stop,
                        )
                        .await;
                        text_policy.on_end(&end);
                        tracing::debug!(?end, "WebSocket session ended");
                    }
                    _ => {
                        let end =
                            raw_copy(client, buf, up.stream, &up.buf, limits.upgrade_idle, stop)
                                .await;
                        tracing::debug!(?end, "Upgraded connection ended");
                    }
                }
                return LoopEnd::Upgraded;
            }
            Err(ExchangeError::BadResponse(e)) => {
                policy.failed(&req, &e.to_string());
                let _ = client.write_all(&bad_gateway().http1()).await;
                let _ = client.shutdown().await;
                return LoopEnd::Broken;
            }
            Err(ExchangeError::RequestBody(BodyError::Marker)) => {
                // Part of this request already went upstream; that connection is
                // dropped (never reused), so the upstream sees a truncated request.
                return refuse_marker(client, policy, &req).await;
            }
            Err(ExchangeError::RequestBody(e)) => {
                return reject(client, policy, RejectCause::Body(e.to_string())).await;
            }
            Err(ExchangeError::RequestBodyAfterResponse(e)) => {
                // The upstream answered early and its head was relayed: no
                // second answer can follow; the connection just ends.
                policy.failed(&req, &format!("request body: {e}"));
                let _ = client.shutdown().await;
                return LoopEnd::Broken;
            }
            Err(e) => {
                tracing::debug!(error = %e, "Exchange failed");
                policy.failed(&req, &e.to_string());
                return LoopEnd::Broken;
            }
        };
        policy.completed(&req, resp.status);
        let reusable = !resp.close && resp.framing != super::BodyFraming::UntilClose;
        if req.close || !reusable && resp.framing == super::BodyFraming::UntilClose {
            let _ = client.shutdown().await;
            return LoopEnd::ClientDone;
        }
        if reusable {
            upstream = Some(up);
        }
        // The next request is read only now: pipelined bytes wait in `buf`.
        req = match read_head(client, buf, limits.request_head).await {
            Ok(n) => {
                let head = buf.split_to(n);
                match RequestHead::parse(&head) {
                    Ok(r) => r,
                    Err(e) => return reject(client, policy, RejectCause::Parse(e)).await,
                }
            }
            Err(HeadError::Closed) => return LoopEnd::ClientDone,
            Err(e) => return reject(client, policy, RejectCause::Head(e)).await,
        };
    }
}

/// Appends `name: value` lines to a head that has no final blank line yet.
pub(crate) fn append_fields(head: &mut Vec<u8>, fields: &[(String, Vec<u8>)]) {
    for (name, value) in fields {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
}

fn bad_gateway() -> Refusal {
    Refusal::json(502, "upstream_protocol_error", "invalid upstream reply")
}

/// A reserved credential marker in a streamed (guarded) body: the request
/// is refused, never completed upstream.
async fn refuse_marker<C, P>(client: &mut C, policy: &mut P, req: &RequestHead) -> LoopEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    P: RequestPolicy,
{
    const DETAIL: &str =
        "credential placeholder in a request body that is not opted in to rewriting";
    policy.failed(req, &format!("credential_injection_failed: {DETAIL}"));
    let response =
        crate::refusal::json_error(500, "credential_injection_failed", DETAIL, None, None);
    super::answer_and_close(client, &response.http1()).await;
    LoopEnd::Answered
}

async fn reject<C, P>(client: &mut C, policy: &mut P, cause: RejectCause) -> LoopEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    P: RequestPolicy,
{
    match policy.rejected(&cause) {
        Some(response) => super::answer_and_close(client, &response.http1()).await,
        None => {
            let _ = client.shutdown().await;
        }
    }
    LoopEnd::Answered
}

#[derive(Debug, thiserror::Error)]
enum ExchangeError {
    #[error("request body: {0}")]
    RequestBody(BodyError),
    #[error("request body after the response began: {0}")]
    RequestBodyAfterResponse(BodyError),
    #[error("response body: {0}")]
    ResponseBody(BodyError),
    #[error("response head: {0}")]
    ResponseHead(HeadError),
    #[error("bad response: {0}")]
    BadResponse(ResponseError),
    #[error("write: {0}")]
    Io(std::io::Error),
}

/// One request/response exchange. The request body streams while the
/// response head is awaited, so `Expect: 100-continue` and early answers work.
/// What goes upstream for one request.
struct Outgoing {
    head: Vec<u8>,
    /// A buffered (and possibly rewritten) body; `None` streams from the client.
    body: Option<Vec<u8>>,
    guard: bool,
    upgrade: bool,
}

async fn exchange<C>(
    client: &mut C,
    buf: &mut BytesMut,
    up: &mut Upstream,
    req: &RequestHead,
    out: Outgoing,
    limits: &LoopLimits,
) -> Result<Exchanged, ExchangeError>
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
{
    let upgrade = out.upgrade;
    let head_len = out.head.len() as u64;
    let (mut ur, mut uw) = tokio::io::split(&mut up.stream);
    uw.write_all(&out.head).await.map_err(ExchangeError::Io)?;
    let (mut cr, mut cw) = tokio::io::split(&mut *client);
    let ubuf = &mut up.buf;
    // The request is sent only once `uw` is flushed: over TLS, a completed
    // write may still sit in the session (see `copy_body`), and the upstream
    // cannot answer a request whose end it never got. `copy_body` flushes
    // (for no body too, which sends the head); a buffered body is flushed here.
    let mut scan = MarkerScan::new(out.guard);
    let send_body = async {
        match &out.body {
            Some(b) => {
                uw.write_all(b).await.map_err(ExchangeError::Io)?;
                uw.flush().await.map_err(ExchangeError::Io)?;
                Ok(b.len() as u64)
            }
            None => copy_body(
                req.framing,
                &mut cr,
                buf,
                &mut uw,
                limits.body_idle,
                &mut scan,
            )
            .await
            .map_err(ExchangeError::RequestBody),
        }
    };
    let mut ws_extensions: Option<String> = None;
    let mut ws_subprotocol: Option<String> = None;
    let (extensions, subprotocol) = (&mut ws_extensions, &mut ws_subprotocol);
    let relayed = std::sync::atomic::AtomicBool::new(false);
    let mut response_heads = 0u64;
    let heads = &mut response_heads;
    let read_response = async {
        loop {
            let n = read_head(&mut ur, ubuf, limits.response_head)
                .await
                .map_err(ExchangeError::ResponseHead)?;
            *heads += n as u64;
            let raw = ubuf.split_to(n);
            let parsed = parse_response(&raw, &req.method).map_err(ExchangeError::BadResponse)?;
            if parsed.status == 101 && !upgrade {
                // Only a request the admission marked as an upgrade may switch protocols.
                return Err(ExchangeError::BadResponse(ResponseError::Framing));
            }
            relayed.store(true, std::sync::atomic::Ordering::Relaxed);
            cw.write_all(&raw).await.map_err(ExchangeError::Io)?;
            if parsed.status == 101 {
                cw.flush().await.map_err(ExchangeError::Io)?;
                *extensions = header_value(&raw, "sec-websocket-extensions");
                *subprotocol = header_value(&raw, "sec-websocket-protocol");
                return Ok(parsed);
            }
            // Interim 1xx (not 101) responses are relayed at once (a client
            // may wait for `100 Continue` before its body) and the final one awaited.
            if (100..200).contains(&parsed.status) {
                cw.flush().await.map_err(ExchangeError::Io)?;
                continue;
            }
            // The final head is flushed with its body by `copy_body`.
            return Ok(parsed);
        }
    };
    // A request body that fails (a refused marker, bad framing, a stall)
    // ends the exchange at once: the upstream, still waiting for the rest
    // of the body, is not waited for.
    let (sent, resp) = {
        tokio::pin!(send_body, read_response);
        tokio::select! {
            sent = &mut send_body => match sent {
                Err(ExchangeError::RequestBody(e))
                    if relayed.load(std::sync::atomic::Ordering::Relaxed) =>
                {
                    return Err(ExchangeError::RequestBodyAfterResponse(e));
                }
                Err(e) => return Err(e),
                Ok(n) => (Ok(n), read_response.await),
            },
            resp = &mut read_response => (send_body.await, resp),
        }
    };
    if let Err(ExchangeError::RequestBody(e)) = sent {
        return Err(ExchangeError::RequestBodyAfterResponse(e));
    }
    let sent = sent?;
    let resp = resp?;
    if resp.status == 101 {
        return Ok(Exchanged::Upgraded {
            extensions: ws_extensions,
            subprotocol: ws_subprotocol,
        });
    }
    let received = copy_body(
        resp.framing,
        &mut ur,
        ubuf,
        &mut cw,
        limits.body_idle,
        &mut MarkerScan::off(),
    )
    .await
    .map_err(ExchangeError::ResponseBody)?;
    cw.flush().await.map_err(ExchangeError::Io)?;
    Ok(Exchanged::Done(
        resp,
        (head_len + sent, response_heads + received),
    ))
}

/// The value of a header in a raw response head (first occurrence).
fn header_value(raw: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    text.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// How a raw upgraded connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RawEnd {
    /// Both directions finished, or one failed.
    Closed,
    /// No byte moved either way for the idle timeout.
    Idle,
    /// The stop future fired (the policy no longer allows it).
    Revoked,
}

/// After a `101` that is not a WebSocket session: bytes already buffered on
/// either side go first, then a bidirectional copy until both sides finish,
/// no byte moves for `idle`, or `stop` completes.
async fn raw_copy<C, U, S>(
    client: &mut C,
    buf: &mut BytesMut,
    mut upstream: U,
    upstream_buf: &[u8],
    idle: Duration,
    stop: S,
) -> RawEnd
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    U: AsyncRead + AsyncWrite + Unpin + Send,
    S: Future<Output = ()>,
{
    // Flushed: `copy_bidirectional` flushes only what it wrote itself.
    if !buf.is_empty()
        && (upstream.write_all(buf).await.is_err() || upstream.flush().await.is_err())
    {
        return RawEnd::Closed;
    }
    buf.clear();
    if !upstream_buf.is_empty()
        && (client.write_all(upstream_buf).await.is_err() || client.flush().await.is_err())
    {
        return RawEnd::Closed;
    }
    let activity = Activity::new();
    let mut client = activity.meter(client);
    let mut upstream = activity.meter(&mut upstream);
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::select! {
        _ = copy => RawEnd::Closed,
        () = activity.idle_for(idle) => RawEnd::Idle,
        () = stop => RawEnd::Revoked,
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// The raw copy after a non-WebSocket `101`: buffered bytes first, then
    /// both ways; it ends after `idle` without traffic, and at once when
    /// the policy revokes it.
    #[tokio::test(start_paused = true)]
    async fn raw_upgrade_copy_is_idle_bounded_and_revocable() {
        let idle = Duration::from_secs(60);
        // Traffic keeps it open; silence for `idle` ends it.
        let (mut client, mut proxy_client) = tokio::io::duplex(1024);
        let (proxy_up, mut upstream) = tokio::io::duplex(1024);
        let mut buf = BytesMut::from(&b"early"[..]);
        let copy = tokio::spawn(async move {
            let never = std::future::pending::<()>();
            let started = tokio::time::Instant::now();
            let end = raw_copy(&mut proxy_client, &mut buf, proxy_up, b"hi", idle, never).await;
            (end, started.elapsed())
        });
        let mut got = [0u8; 5];
        upstream.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"early");
        let mut got = [0u8; 2];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hi");
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(50)).await;
            client.write_all(b"ping").await.unwrap();
            let mut got = [0u8; 4];
            upstream.read_exact(&mut got).await.unwrap();
        }
        let (end, elapsed) = copy.await.unwrap();
        assert_eq!(end, RawEnd::Idle);
        assert!(elapsed >= Duration::from_secs(150 + 60), "{elapsed:?}");

        // A revocation ends a busy connection.
        let (_client, mut proxy_client) = tokio::io::duplex(1024);
        let (proxy_up, _upstream) = tokio::io::duplex(1024);
        let mut buf = BytesMut::new();
        let stop = tokio::time::sleep(Duration::from_secs(5));
        let end = raw_copy(&mut proxy_client, &mut buf, proxy_up, b"", idle, stop).await;
        assert_eq!(end, RawEnd::Revoked);
    }
}
