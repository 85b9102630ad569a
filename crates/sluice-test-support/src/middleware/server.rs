//! The test service itself: config-driven answers, a JSON-lines record of
//! every call, plaintext or TLS.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status, Streaming};

use super::proto::supervisor_middleware_server::{
    SupervisorMiddleware, SupervisorMiddlewareServer,
};
use super::proto::{
    header_mutation, web_socket_message, web_socket_message_result, web_socket_session_event,
    web_socket_session_event_result, HeaderMutation, HttpRequestEvaluation, HttpRequestResult,
    MiddlewareBinding, MiddlewareManifest, ValidateConfigRequest, ValidateConfigResponse,
    WebSocketMessage, WebSocketMessageResult, WebSocketPreflightDecision, WebSocketSessionEvent,
    WebSocketSessionEventResult, WriteHeader,
};
use super::TestMiddlewareOptions;

/// gRPC message cap both ways: a 4 MiB payload plus the rest of the message.
const MAX_MESSAGE: usize = 4 * 1024 * 1024 + 512 * 1024;

/// The header `mutate_header` writes.
const TEST_HEADER: &str = "x-openshell-middleware-test";

const BEHAVIORS: &[&str] = &[
    "allow",
    "deny",
    "mutate_header",
    "replace_body",
    "sleep",
    "error",
    "bad_result",
    "redact",
    "deny_if",
    "wrong_sequence",
];

const DECISION_UNSPECIFIED: i32 = 0;
const DECISION_ALLOW: i32 = 1;
const DECISION_DENY: i32 = 2;

/// Serves the test service on `listener` until the future is dropped.
///
/// # Errors
/// An unwritable record file, unusable TLS files, or a server failure.
pub async fn serve_test_middleware(
    listener: TcpListener,
    opts: TestMiddlewareOptions,
) -> Result<(), String> {
    serve_until(listener, opts, std::future::pending()).await
}

/// Serves until `shutdown` completes, then closes every connection (after
/// the calls in flight) and returns.
pub(crate) async fn serve_until(
    listener: TcpListener,
    opts: TestMiddlewareOptions,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), String> {
    let record = match &opts.record {
        Some(p) => Some(Arc::new(Mutex::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| format!("record file {}: {e}", p.display()))?,
        ))),
        None => None,
    };
    let tls = opts
        .tls
        .as_ref()
        .map(|(cert, key)| tls_acceptor(cert, key))
        .transpose()?;
    let service = SupervisorMiddlewareServer::new(TestService {
        opts: Arc::new(opts),
        record,
    })
    .max_decoding_message_size(MAX_MESSAGE)
    .max_encoding_message_size(MAX_MESSAGE);
    let router = tonic::transport::Server::builder().add_service(service);
    let Some(acceptor) = tls else {
        // TCP_NODELAY on every accepted connection (tonic sets it only in
        // `serve(addr)`): without it, small HTTP/2 writes wait for the
        // peer's delayed ACK and calls take ~40 ms at p99.
        let incoming = tokio_stream::StreamExt::map(TcpListenerStream::new(listener), |conn| {
            conn.inspect(|tcp| {
                let _ = tcp.set_nodelay(true);
            })
        });
        return router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(|e| format!("test middleware: {e}"));
    };
    let (tx, rx) = mpsc::channel(16);
    let accept = async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = tx.send(Ok::<_, std::io::Error>(TlsIo(tls))).await;
                }
            });
        }
    };
    tokio::select! {
        r = router.serve_with_incoming_shutdown(ReceiverStream::new(rx), shutdown) => {
            r.map_err(|e| format!("test middleware: {e}"))
        }
        () = accept => Ok(()),
    }
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("tls cert {}: {e}", cert.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("tls key {}: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("tls: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A server-side TLS stream tonic can serve (it needs [`Connected`]).
struct TlsIo(tokio_rustls::server::TlsStream<TcpStream>);

impl Connected for TlsIo {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[derive(Clone)]
struct TestService {
    opts: Arc<TestMiddlewareOptions>,
    record: Option<Arc<Mutex<File>>>,
}

impl TestService {
    fn record(&self, line: &serde_json::Value) {
        if let Some(file) = &self.record {
            let mut text = line.to_string();
            text.push('\n');
            let mut f = file
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let _ = f.write_all(text.as_bytes());
        }
    }
}

#[tonic::async_trait]
impl SupervisorMiddleware for TestService {
    async fn describe(&self, _: Request<()>) -> Result<Response<MiddlewareManifest>, Status> {
        self.record(&json!({ "rpc": "Describe" }));
        if let Some(delay) = self.opts.describe_delay {
            tokio::time::sleep(delay).await;
        }
        Ok(Response::new(MiddlewareManifest {
            name: "sluice-test-middleware".into(),
            service_version: "0.0.0".into(),
            bindings: self
                .opts
                .advertised()
                .into_iter()
                .map(|b| MiddlewareBinding {
                    operation: b.operation,
                    phase: b.phase,
                    max_payload_bytes: b.max_payload_bytes,
                    timeout: b.timeout,
                })
                .collect(),
            expected_audience: String::new(),
        }))
    }

    async fn validate_config(
        &self,
        request: Request<ValidateConfigRequest>,
    ) -> Result<Response<ValidateConfigResponse>, Status> {
        let req = request.into_inner();
        let config = Config(req.config.as_ref());
        let mut keys: Vec<&String> = req.config.iter().flat_map(|c| c.fields.keys()).collect();
        keys.sort();
        self.record(&json!({
            "rpc": "ValidateConfig",
            "middleware_name": req.middleware_name,
            "config_keys": keys,
        }));
        let reason = if config.bool("reject") {
            Some("rejected by test server".to_owned())
        } else {
            config
                .str("behavior")
                .filter(|b| !BEHAVIORS.contains(b))
                .map(|b| format!("unknown behavior `{b}`"))
        };
        Ok(Response::new(ValidateConfigResponse {
            valid: reason.is_none(),
            reason: reason.unwrap_or_default(),
        }))
    }

    async fn evaluate_http_request(
        &self,
        request: Request<HttpRequestEvaluation>,
    ) -> Result<Response<HttpRequestResult>, Status> {
        let eval = request.into_inner();
        let config = Config(eval.config.as_ref());
        let target = eval.target.clone().unwrap_or_default();
        let behavior = config.str("behavior").unwrap_or("allow");
        self.record(&json!({
            "rpc": "EvaluateHttpRequest",
            "middleware_name": eval.middleware_name,
            "phase": eval.phase,
            "scheme": target.scheme,
            "host": target.host,
            "port": target.port,
            "method": target.method,
            "path": target.path,
            "query": target.query,
            "headers": eval.headers.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
            "body_len": eval.body.len(),
            "behavior": behavior,
        }));
        let allow = HttpRequestResult {
            decision: DECISION_ALLOW,
            ..HttpRequestResult::default()
        };
        let deny = HttpRequestResult {
            decision: DECISION_DENY,
            reason: "denied by test server".into(),
            reason_code: config.str("reason_code").unwrap_or("test_denied").into(),
            ..HttpRequestResult::default()
        };
        let pattern = config.str("pattern").unwrap_or_default().as_bytes();
        let result = match behavior {
            "allow" | "wrong_sequence" => allow,
            "deny" => deny,
            "deny_if" if contains(&eval.body, pattern) => deny,
            "deny_if" => allow,
            "mutate_header" => HttpRequestResult {
                header_mutations: vec![HeaderMutation {
                    operation: Some(header_mutation::Operation::Write(WriteHeader {
                        name: TEST_HEADER.into(),
                        value: "1".into(),
                        on_existing: 2, // OVERWRITE
                    })),
                }],
                ..allow
            },
            "replace_body" => HttpRequestResult {
                body: config.str("body").unwrap_or_default().into(),
                has_body: true,
                ..allow
            },
            "redact" => match replace_all(&eval.body, pattern, b"[REDACTED]") {
                Some(body) => HttpRequestResult {
                    body,
                    has_body: true,
                    ..allow
                },
                None => allow,
            },
            "sleep" => {
                tokio::time::sleep(config.millis()).await;
                allow
            }
            "error" => return Err(Status::unavailable("test server error")),
            "bad_result" => HttpRequestResult {
                decision: DECISION_UNSPECIFIED,
                ..allow
            },
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown behavior `{other}`"
                )))
            }
        };
        Ok(Response::new(result))
    }

    type EvaluateWebSocketSessionStream =
        ReceiverStream<Result<WebSocketSessionEventResult, Status>>;

    async fn evaluate_web_socket_session(
        &self,
        request: Request<Streaming<WebSocketSessionEvent>>,
    ) -> Result<Response<Self::EvaluateWebSocketSessionStream>, Status> {
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(self.clone().websocket_session(inbound, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

type ResultTx = mpsc::Sender<Result<WebSocketSessionEventResult, Status>>;

impl TestService {
    async fn websocket_session(self, mut inbound: Streaming<WebSocketSessionEvent>, tx: ResultTx) {
        use web_socket_session_event::Event;
        use web_socket_session_event_result::Result as Out;
        let mut config = None;
        let mut name = String::new();
        while let Ok(Some(event)) = inbound.message().await {
            let out = match event.event {
                Some(Event::Preflight(p)) => {
                    let target = p.target.clone().unwrap_or_default();
                    config = p.config.clone();
                    name.clone_from(&p.middleware_name);
                    let cfg = Config(config.as_ref());
                    self.record(&json!({
                        "rpc": "EvaluateWebSocketSession",
                        "event": "preflight",
                        "middleware_name": name,
                        "session_id": p.session_id,
                        "phase": p.phase,
                        "host": target.host,
                        "path": target.path,
                        "subprotocols": p.requested_subprotocols,
                    }));
                    if cfg.str("behavior") == Some("error") {
                        let _ = tx.send(Err(Status::unavailable("test server error"))).await;
                        return;
                    }
                    let action = match cfg.str("preflight").unwrap_or("inspect") {
                        "skip" => 2,
                        "deny" => 3,
                        "unspecified" => 0,
                        _ => 1,
                    };
                    Some(Out::PreflightDecision(WebSocketPreflightDecision {
                        action,
                        reason_code: if action == 3 {
                            cfg.str("reason_code").unwrap_or("test_denied").into()
                        } else {
                            String::new()
                        },
                        ..WebSocketPreflightDecision::default()
                    }))
                }
                Some(Event::SessionStart(s)) => {
                    self.record(&json!({
                        "rpc": "EvaluateWebSocketSession",
                        "event": "session_start",
                        "middleware_name": name,
                        "selected_subprotocol": s.selected_subprotocol,
                    }));
                    None
                }
                Some(Event::Message(m)) => {
                    let cfg = Config(config.as_ref());
                    self.record(&json!({
                        "rpc": "EvaluateWebSocketSession",
                        "event": "message",
                        "middleware_name": name,
                        "sequence": m.sequence,
                        "kind": match m.payload {
                            Some(web_socket_message::Payload::Text(_)) => "text",
                            Some(web_socket_message::Payload::Binary(_)) => "binary",
                            None => "none",
                        },
                        "len": payload(&m).len(),
                    }));
                    match message_result(&cfg, &m).await {
                        Ok(r) => Some(Out::MessageResult(r)),
                        Err(status) => {
                            let _ = tx.send(Err(status)).await;
                            return;
                        }
                    }
                }
                Some(Event::SessionEnd(e)) => {
                    self.record(&json!({
                        "rpc": "EvaluateWebSocketSession",
                        "event": "session_end",
                        "middleware_name": name,
                        "reason": e.reason,
                    }));
                    None
                }
                None => None,
            };
            if let Some(out) = out {
                let result = WebSocketSessionEventResult { result: Some(out) };
                if tx.send(Ok(result)).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn message_result(
    cfg: &Config<'_>,
    m: &WebSocketMessage,
) -> Result<WebSocketMessageResult, Status> {
    let allow = WebSocketMessageResult {
        sequence: m.sequence,
        decision: DECISION_ALLOW,
        ..WebSocketMessageResult::default()
    };
    let deny = WebSocketMessageResult {
        decision: DECISION_DENY,
        reason: "denied by test server".into(),
        reason_code: cfg.str("reason_code").unwrap_or("test_denied").into(),
        ..allow.clone()
    };
    let pattern = cfg.str("pattern").unwrap_or_default().as_bytes();
    let replacement = |bytes: Vec<u8>| match &m.payload {
        Some(web_socket_message::Payload::Binary(_)) => {
            web_socket_message_result::Replacement::Binary(bytes)
        }
        _ => web_socket_message_result::Replacement::Text(
            String::from_utf8_lossy(&bytes).into_owned(),
        ),
    };
    Ok(match cfg.str("behavior").unwrap_or("allow") {
        "allow" | "mutate_header" => allow,
        "deny" => deny,
        "deny_if" if contains(payload(m), pattern) => deny,
        "deny_if" => allow,
        "replace_body" => WebSocketMessageResult {
            replacement: Some(replacement(cfg.str("body").unwrap_or_default().into())),
            ..allow
        },
        "redact" => match replace_all(payload(m), pattern, b"[REDACTED]") {
            Some(new) => WebSocketMessageResult {
                replacement: Some(replacement(new)),
                ..allow
            },
            None => allow,
        },
        "sleep" => {
            tokio::time::sleep(cfg.millis()).await;
            allow
        }
        "error" => return Err(Status::unavailable("test server error")),
        "bad_result" => WebSocketMessageResult {
            decision: DECISION_UNSPECIFIED,
            ..allow
        },
        "wrong_sequence" => WebSocketMessageResult {
            sequence: m.sequence + 1,
            ..allow
        },
        other => {
            return Err(Status::invalid_argument(format!(
                "unknown behavior `{other}`"
            )))
        }
    })
}

fn payload(m: &WebSocketMessage) -> &[u8] {
    match &m.payload {
        Some(web_socket_message::Payload::Text(t)) => t.as_bytes(),
        Some(web_socket_message::Payload::Binary(b)) => b,
        None => &[],
    }
}

/// Reads the policy `config` of a call.
struct Config<'a>(Option<&'a prost_types::Struct>);

impl Config<'_> {
    fn kind(&self, key: &str) -> Option<&prost_types::value::Kind> {
        self.0?.fields.get(key)?.kind.as_ref()
    }

    fn str(&self, key: &str) -> Option<&str> {
        match self.kind(key)? {
            prost_types::value::Kind::StringValue(s) => Some(s),
            _ => None,
        }
    }

    fn bool(&self, key: &str) -> bool {
        matches!(
            self.kind(key),
            Some(prost_types::value::Kind::BoolValue(true))
        )
    }

    /// `ms` (a number), 0 when absent.
    fn millis(&self) -> std::time::Duration {
        match self.kind("ms") {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Some(prost_types::value::Kind::NumberValue(n)) if *n >= 0.0 => {
                std::time::Duration::from_millis(*n as u64)
            }
            _ => std::time::Duration::ZERO,
        }
    }
}

fn contains(hay: &[u8], pattern: &[u8]) -> bool {
    !pattern.is_empty() && hay.windows(pattern.len()).any(|w| w == pattern)
}

/// `hay` with every `pattern` replaced; `None` when there is none.
fn replace_all(hay: &[u8], pattern: &[u8], with: &[u8]) -> Option<Vec<u8>> {
    if !contains(hay, pattern) {
        return None;
    }
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(pattern) {
            out.extend_from_slice(with);
            i += pattern.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_every_occurrence() {
        assert_eq!(
            replace_all(b"a-xx-b-xx", b"xx", b"[R]").as_deref(),
            Some(&b"a-[R]-b-[R]"[..])
        );
        assert_eq!(replace_all(b"abc", b"zz", b"[R]"), None);
        assert_eq!(replace_all(b"abc", b"", b"[R]"), None);
        assert!(contains(b"hello", b"ll") && !contains(b"hello", b""));
    }
}
