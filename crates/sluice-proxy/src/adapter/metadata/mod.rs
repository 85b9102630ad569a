//! The metadata loopback (ARCHITECTURE §6.4): a GCE metadata server subset
//! ([`gce`]) and an AWS IMDSv2 subset ([`imds`]) that `sluice run` serves on
//! the sandbox namespace's loopback for a provider with `metadata: gce|aws`.
//! They hand out placeholders only; the real values go on the wire only to the
//! provider's bound endpoints, through the relay's placeholder injection.
//!
//! HTTP/1.1, one request per connection (`Connection: close`), head at most
//! 4096 bytes (`413`), 5 s to read it (`408`), at most 32 connections at a
//! time (further accepts wait), no request body (`400`). Every answer reads
//! the current policy snapshot, so values follow reloads; every request is one
//! audit event.

pub mod gce;
pub mod imds;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use sluice_policy::{MetadataKind, PolicySnapshot};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::listener::accept_forever;
use super::{Listener, Shared};
use crate::audit::Audit;
use crate::policy_store::PolicyStore;
use crate::relay::http::{read_head, HeadError, HeadLimits, RequestHead};

/// Where `sluice run` serves the GCE subset in the sandbox (OpenShell's port).
pub const GCE_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8174);
/// Where `sluice run` serves the IMDSv2 subset in the sandbox.
pub const IMDS_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8175);

/// Request head bound (request line + headers + blank line).
pub const MAX_HEAD_BYTES: usize = 4096;
/// Time allowed to read the head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed to write the answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at a time.
pub const MAX_CONNECTIONS: usize = 32;

/// One answer: status, content type, body and extra headers. `reason` names
/// the outcome for the audit event (never a value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    pub headers: Vec<(&'static str, String)>,
    pub reason: &'static str,
}

impl Reply {
    pub(crate) fn text(body: impl Into<String>) -> Self {
        Self {
            status: 200,
            content_type: "application/text",
            body: body.into(),
            headers: Vec::new(),
            reason: "served",
        }
    }

    pub(crate) fn json(body: &serde_json::Value) -> Self {
        Self {
            status: 200,
            content_type: "application/json",
            body: body.to_string(),
            headers: Vec::new(),
            reason: "served",
        }
    }

    /// An error: `{"error": reason}` as JSON.
    pub(crate) fn error(status: u16, reason: &'static str) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: serde_json::json!({ "error": reason }).to_string(),
            headers: Vec::new(),
            reason,
        }
    }

    pub(crate) fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The HTTP/1.1 bytes, with `Content-Length` and `Connection: close`.
    #[must_use]
    pub fn http1(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n",
            self.status,
            status_text(self.status),
            self.content_type,
            self.body.len()
        );
        for (k, v) in &self.headers {
            out.push_str(k);
            out.push_str(": ");
            out.push_str(v);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.push_str(&self.body);
        out.into_bytes()
    }
}

fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// The request-target split into its path and whether `recursive=true` is in
/// the query. `None` unless origin-form (`/...`).
pub(crate) fn split_target(target: &str) -> Option<(&str, bool)> {
    if !target.starts_with('/') {
        return None;
    }
    let target = target.split_once('#').map_or(target, |(t, _)| t);
    Some(match target.split_once('?') {
        Some((path, query)) => (
            path,
            query
                .split('&')
                .any(|kv| kv.eq_ignore_ascii_case("recursive=true")),
        ),
        None => (target, false),
    })
}

/// The per-service part: answers one parsed request from the current snapshot.
enum Service {
    Gce,
    Imds(Arc<imds::TokenTable>),
}

impl Service {
    fn answer(&self, head: &RequestHead, snapshot: &PolicySnapshot) -> Reply {
        match self {
            Self::Gce => gce::answer(head, snapshot),
            Self::Imds(tokens) => {
                imds::answer(head, snapshot, tokens, SystemTime::now(), Instant::now())
            }
        }
    }

    /// Headers every answer carries.
    fn decorate(&self, reply: Reply) -> Reply {
        match self {
            Self::Gce => reply.with_header("Metadata-Flavor", "Google"),
            Self::Imds(_) => reply,
        }
    }
}

/// A metadata loopback bound inside the sandbox namespace: a [`Listener`]
/// the proxy runs with its other surfaces (so it stops with the run).
pub struct MetadataListener {
    kind: MetadataKind,
    listener: TcpListener,
    store: Arc<PolicyStore>,
    audit: Audit,
}

impl MetadataListener {
    /// Serves `kind` on `listener` (already bound where the sandbox reaches it),
    /// answering from `store`'s current snapshot.
    #[must_use]
    pub fn new(
        kind: MetadataKind,
        listener: TcpListener,
        store: Arc<PolicyStore>,
        audit: Audit,
    ) -> Self {
        Self {
            kind,
            listener,
            store,
            audit,
        }
    }
}

impl Listener for MetadataListener {
    fn surface(&self) -> &'static str {
        match self.kind {
            MetadataKind::Gce => "metadata-gce",
            MetadataKind::Aws => "metadata-aws",
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    fn serve(self: Box<Self>, _shared: Arc<Shared>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(self.run())
    }
}

impl MetadataListener {
    /// Accepts and serves connections until the runtime stops.
    pub async fn run(self) {
        let Self {
            kind,
            listener,
            store,
            audit,
        } = self;
        let service = Arc::new(match kind {
            MetadataKind::Gce => Service::Gce,
            MetadataKind::Aws => Service::Imds(Arc::new(imds::TokenTable::default())),
        });
        let fallback = listener.local_addr().unwrap_or(match kind {
            MetadataKind::Gce => GCE_ADDR,
            MetadataKind::Aws => IMDS_ADDR,
        });
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        accept_forever(&listener, permits, |stream, peer, permit| {
            let local = stream.local_addr().unwrap_or(fallback);
            let (service, store, audit) = (Arc::clone(&service), Arc::clone(&store), audit.clone());
            let open = audit
                .metrics()
                .connection(crate::metrics::ConnectionSurface::Metadata);
            tokio::spawn(async move {
                let conn = Conn {
                    kind,
                    peer,
                    local,
                    store: &store,
                    audit: &audit,
                };
                conn.serve(&service, stream).await;
                drop((permit, open));
            });
        })
        .await;
    }
}

struct Conn<'a> {
    kind: MetadataKind,
    peer: SocketAddr,
    local: SocketAddr,
    store: &'a PolicyStore,
    audit: &'a Audit,
}

impl Conn<'_> {
    async fn serve(&self, service: &Service, mut stream: TcpStream) {
        let limits = HeadLimits {
            max_bytes: MAX_HEAD_BYTES,
            timeout: READ_TIMEOUT,
        };
        let mut buf = BytesMut::with_capacity(1024);
        let parsed = match read_head(&mut stream, &mut buf, limits).await {
            Ok(n) => RequestHead::parse(&buf[..n]).map_err(|_| Reply::error(400, "bad_request")),
            Err(HeadError::Closed) => return,
            Err(HeadError::TooLarge(_)) => Err(Reply::error(413, "head_too_large")),
            Err(HeadError::Timeout) => Err(Reply::error(408, "timeout")),
            Err(HeadError::Io(_)) => return,
            Err(_) => Err(Reply::error(400, "bad_request")),
        };
        let snapshot = self.store.snapshot();
        let (method, target, reply) = match parsed {
            Ok(head) if head.framing != crate::relay::http::BodyFraming::None => (
                head.method,
                head.target,
                Reply::error(400, "body_not_allowed"),
            ),
            Ok(head) => {
                let reply = service.answer(&head, &snapshot);
                (head.method, head.target, reply)
            }
            Err(reply) => (String::from("-"), String::from("-"), reply),
        };
        let reply = service.decorate(reply);
        self.audit.metadata_request(
            self.peer,
            self.local,
            self.kind.as_str(),
            &method,
            &target,
            reply.status,
            reply.reason,
            snapshot.generation(),
        );
        let bytes = reply.http1();
        let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
            stream.write_all(&bytes).await?;
            stream.shutdown().await
        })
        .await;
    }
}

#[cfg(test)]
mod tests;
