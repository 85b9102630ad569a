use std::future::Future;
use std::time::Duration;

use bytes::BytesMut;
use sluice_policy::EndpointId;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::body::{check_first_chunk, copy_body, read_body, BodyError};
use super::guard::MarkerGuard;
use super::head::{read_head, HeadError, HeadLimits};
use super::request::{ParseError, RequestHead};
use super::response::{parse_response, ResponseError, ResponseHead};
use crate::destination::UpstreamConnector;
use crate::egress::Target;
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
    Respond { response: Vec<u8> },
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
    /// Stream with the original framing; `guard` refuses a reserved
    /// credential marker before its bytes are written upstream.
    Stream { guard: bool },
    /// Read the whole body first (at most `limit` bytes), then `transform`
    /// it. `head` then carries no framing fields and no final blank line;
    /// the loop adds `Content-Length` itself. Nothing is dialled or written
    /// before the transform accepted the body.
    Buffer {
        limit: usize,
        transform: BodyTransform,
        /// The answer when the body cannot be read within `limit` (default: a bare 400).
        on_error: Option<Vec<u8>>,
    },
}

impl std::fmt::Debug for BodyPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stream { guard } => f.debug_struct("Stream").field("guard", guard).finish(),
            Self::Buffer { limit, .. } => f
                .debug_struct("Buffer")
                .field("limit", limit)
                .finish_non_exhaustive(),
        }
    }
}

/// Rewrites or checks a buffered body: `Ok(None)` keeps it, `Ok(Some)`
/// replaces it, `Err(response)` refuses the request with that response.
pub type BodyTransform = Box<dyn FnOnce(&[u8]) -> Result<Option<Vec<u8>>, Vec<u8>> + Send>;

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
    fn unreachable(&mut self, req: &RequestHead, failure: &DialFailure) -> Vec<u8>;
    /// A request head was refused or the head could not be read: the response, if any.
    fn rejected(&mut self, err: &RejectCause) -> Option<Vec<u8>>;
    /// An exchange finished with `status` from the upstream.
    fn completed(&mut self, req: &RequestHead, status: u16);
    /// An admitted exchange broke mid-way (upstream or client I/O, bad response).
    fn failed(&mut self, req: &RequestHead, detail: &str);
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
}

struct Upstream {
    key: UpstreamKey,
    stream: UpstreamStream,
    buf: BytesMut,
}

/// How one exchange ended.
enum Exchanged {
    Done(ResponseHead),
    /// `101` relayed; the connection now belongs to an upgraded relay.
    Upgraded {
        extensions: Option<String>,
    },
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
        let (key, connector, mut head, body, upgrade) = match policy.admit(&req).await {
            Admission::Respond { response } => {
                super::answer_and_close(client, &response).await;
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
        let (buffered, guard) = match body {
            BodyPlan::Stream { guard } => (None, guard),
            BodyPlan::Buffer {
                limit,
                transform,
                on_error,
            } => {
                if req
                    .header("expect")
                    .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"))
                {
                    // Flushed: the client may send the body only once it has this.
                    let _ = client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
                    let _ = client.flush().await;
                }
                let raw = match read_body(req.framing, client, buf, limit, limits.body_idle).await {
                    Ok(b) => b,
                    Err(e) => match on_error {
                        Some(response) => {
                            tracing::debug!(error = %e, "Body not inspectable");
                            super::answer_and_close(client, &response).await;
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
                        super::answer_and_close(client, &response).await;
                        return LoopEnd::Answered;
                    }
                };
                head.extend_from_slice(
                    format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
                );
                (Some(body), false)
            }
        };
        if buffered.is_none() && req.framing == super::BodyFraming::Chunked {
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
                    super::answer_and_close(client, &response).await;
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
            Ok(Exchanged::Done(r)) => r,
            Ok(Exchanged::Upgraded { extensions }) => {
                policy.completed(&req, 101);
                match upgrade {
                    Upgrade::WebSocket(mut text_policy) => {
                        let deflate = extensions.as_deref().and_then(parse_deflate_extension);
                        let client_buf = buf.split();
                        let end = websocket::relay(
                            &mut *client,
                            client_buf,
                            up.stream,
                            up.buf,
                            deflate,
                            WsLimits::default(),
                            text_policy.as_mut(),
                        )
                        .await;
                        tracing::debug!(?end, "WebSocket session ended");
                    }
                    _ => raw_copy(client, buf, up).await,
                }
                return LoopEnd::Upgraded;
            }
            Err(ExchangeError::BadResponse(e)) => {
                policy.failed(&req, &e.to_string());
                let _ = client.write_all(BAD_GATEWAY).await;
                let _ = client.shutdown().await;
                return LoopEnd::Broken;
            }
            Err(ExchangeError::RequestBody(e)) => {
                // Part of this request already went upstream; that connection is
                // dropped (never reused), so the upstream sees a truncated request.
                return reject(client, policy, RejectCause::Body(e.to_string())).await;
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

const BAD_GATEWAY: &[u8] = b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\nContent-Length: 68\r\nConnection: close\r\n\r\n{\"error\":\"upstream_protocol_error\",\"detail\":\"invalid upstream reply\"}";

async fn reject<C, P>(client: &mut C, policy: &mut P, cause: RejectCause) -> LoopEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    P: RequestPolicy,
{
    match policy.rejected(&cause) {
        Some(response) => super::answer_and_close(client, &response).await,
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
    let (mut ur, uw) = tokio::io::split(&mut up.stream);
    let mut uw = MarkerGuard::new(uw, out.guard);
    uw.write_all(&out.head).await.map_err(ExchangeError::Io)?;
    let (mut cr, mut cw) = tokio::io::split(&mut *client);
    let ubuf = &mut up.buf;
    // The request is sent only once `uw` is flushed: over TLS, a completed
    // write may still sit in the session (see `copy_body`), and the upstream
    // cannot answer a request whose end it never got. `copy_body` flushes
    // (for no body too, which sends the head); a buffered body is flushed here.
    let send_body = async {
        match &out.body {
            Some(b) => {
                uw.write_all(b).await.map_err(ExchangeError::Io)?;
                uw.flush().await.map_err(ExchangeError::Io)?;
                Ok(b.len() as u64)
            }
            None => copy_body(req.framing, &mut cr, buf, &mut uw, limits.body_idle)
                .await
                .map_err(ExchangeError::RequestBody),
        }
    };
    let mut ws_extensions: Option<String> = None;
    let extensions = &mut ws_extensions;
    let read_response = async {
        loop {
            let n = read_head(&mut ur, ubuf, limits.response_head)
                .await
                .map_err(ExchangeError::ResponseHead)?;
            let raw = ubuf.split_to(n);
            let parsed = parse_response(&raw, &req.method).map_err(ExchangeError::BadResponse)?;
            if parsed.status == 101 && !upgrade {
                // Only a request the admission marked as an upgrade may switch protocols.
                return Err(ExchangeError::BadResponse(ResponseError::Framing));
            }
            cw.write_all(&raw).await.map_err(ExchangeError::Io)?;
            if parsed.status == 101 {
                cw.flush().await.map_err(ExchangeError::Io)?;
                *extensions = header_value(&raw, "sec-websocket-extensions");
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
    let (sent, resp) = tokio::join!(send_body, read_response);
    sent?;
    let resp = resp?;
    if resp.status == 101 {
        return Ok(Exchanged::Upgraded {
            extensions: ws_extensions,
        });
    }
    copy_body(resp.framing, &mut ur, ubuf, &mut cw, limits.body_idle)
        .await
        .map_err(ExchangeError::ResponseBody)?;
    Ok(Exchanged::Done(resp))
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

/// After a `101`: bytes already buffered on either side go first, then a
/// plain bidirectional copy until both sides finish.
async fn raw_copy<C>(client: &mut C, buf: &mut BytesMut, mut up: Upstream)
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
{
    // Flushed: `copy_bidirectional` flushes only what it wrote itself.
    if !buf.is_empty()
        && (up.stream.write_all(buf).await.is_err() || up.stream.flush().await.is_err())
    {
        return;
    }
    buf.clear();
    if !up.buf.is_empty()
        && (client.write_all(&up.buf).await.is_err() || client.flush().await.is_err())
    {
        return;
    }
    let _ = tokio::io::copy_bidirectional(client, &mut up.stream).await;
}
