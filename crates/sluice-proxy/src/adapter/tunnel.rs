//! What a CONNECT tunnel and a captured (transparent) connection share: one
//! authorized target per client byte stream. [`open`] authorizes and
//! validates (re-deciding when the generation moves); [`serve`] classifies the
//! client's first bytes: TLS is terminated and HTTP goes through the shared
//! request loop; other bytes are relayed raw for L4 endpoints and refused for
//! inspected ones.

use std::time::Duration;

use bytes::BytesMut;
use sluice_policy::request::has_l7_routes;
use sluice_policy::{Protocol, TlsMode};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::rustls::server::{Acceptor, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

use super::Shared;
use crate::destination::{self, UpstreamConnector};
use crate::egress::{Allowed, EgressIntent, Surface};
use crate::metrics::{OpenGuard, Outcome, TunnelSurface};
use crate::refusal::{destination_refused, json_error, Refusal};
use crate::relay::http::h2::{self as http2, H2Limits};
use crate::relay::http::tunnel::TunnelPolicy;
use crate::relay::http::{
    answer_and_close, read_head, request_loop, HeadError, RejectCause, RequestHead, RequestPolicy,
};
use crate::relay::processor::{self, ProcessorLimits, ProcessorSession};
use crate::relay::revoke::revoked;
use crate::relay::stream::ClientStream;
use crate::relay::tcp::{self, TunnelEnd};
use crate::relay::tls::{peek_classify, TunnelProtocol, ALPN_H2};

/// How many times a decision is re-made when the generation moves under it.
const MAX_REAUTHORIZE: usize = 4;
/// How long an L4 tunnel waits for the client's first bytes before relaying raw
/// (server-speaks-first protocols send nothing).
const L4_PEEK_WAIT: Duration = Duration::from_millis(100);
/// TLS handshake with the client.
const CLIENT_HANDSHAKE: Duration = Duration::from_secs(10);

/// An authorized, validated tunnel before the client may send (CONNECT's `200`).
pub(super) struct Opened {
    pub(super) decision: Allowed,
    connector: UpstreamConnector,
    /// Dialled before `200` for L4 routes (so a dead upstream gets a `502`).
    upstream: Option<TcpStream>,
    pub(super) inspected: bool,
}

/// Authorize and validate, re-deciding from scratch whenever the generation
/// moved before the tunnel starts. A refusal is audited here; the caller
/// renders it in its own protocol.
///
/// Each call counts one decision in the metrics (re-deciding after the
/// generation moved counts once), timed over authorize and validation only.
pub(super) async fn open(shared: &Shared, intent: EgressIntent) -> Result<Opened, Refusal> {
    let metrics = shared.relay.audit.metrics();
    let surface = intent.surface.metric();
    for _ in 0..MAX_REAUTHORIZE {
        let clock = metrics.stopwatch();
        let decision = match shared.relay.authorizer.authorize(intent.clone()) {
            Ok(allowed) => allowed,
            Err(denied) => {
                metrics.decision(surface, Outcome::Deny, clock.elapsed());
                shared.relay.audit.connect_denied(&denied);
                let target = &denied.intent.target;
                let what = format!("{} {target}", denied.intent.surface.label());
                let detail = format!("{what} not permitted by policy");
                let reason = denied.deny_reason();
                let hint = denied.denial_hint(&what, &reason);
                return Err(
                    json_error(403, "policy_denied", &detail, Some(&reason), None).hint(&hint),
                );
            }
        };
        let target = &decision.intent.target;
        let permit = decision.permit();
        let connector = match destination::validate(
            &permit.destination,
            target,
            &shared.relay.resolver,
        )
        .await
        {
            Ok(c) => c,
            Err(denial) => {
                metrics.decision(surface, Outcome::Deny, clock.elapsed());
                shared
                    .relay
                    .audit
                    .destination_denied(&decision, &denial, None);
                let what = format!("{} {target}", decision.intent.surface.label());
                return Err(destination_refused(
                    &denial,
                    &what,
                    target,
                    decision.policy_key(),
                ));
            }
        };
        if shared.relay.authorizer.generation() != decision.generation() {
            continue;
        }
        let took = clock.elapsed();
        let inspected = has_l7_routes(&decision.snapshot, &permit.routes);
        // Inspected routes dial on the first admitted request; L4 routes dial now.
        let upstream = if inspected {
            None
        } else {
            match connector.connect(shared.limits.dial_timeout).await {
                Ok(s) => Some(s),
                Err(e) => {
                    metrics.decision(surface, Outcome::Allow, took);
                    shared.relay.audit.upstream_unreachable(&decision, &e);
                    let detail = format!("connection to {target} failed");
                    return Err(json_error(
                        502,
                        "upstream_unreachable",
                        &detail,
                        None,
                        Some(decision.policy_key()),
                    ));
                }
            }
        };
        if shared.relay.authorizer.generation() != decision.generation() {
            continue;
        }
        metrics.decision(surface, Outcome::Allow, took);
        return Ok(Opened {
            decision,
            connector,
            upstream,
            inspected,
        });
    }
    metrics.decision(surface, Outcome::Deny, None);
    let detail = format!(
        "{} {} not permitted because policy changed",
        intent.surface.label(),
        intent.target
    );
    Err(json_error(403, "policy_denied", &detail, None, None))
}

/// The tunnel once the client may send: `leftover` are bytes already read
/// (relayed only for `tls: skip`). With `expect_sni`, a TLS client must name
/// exactly that host in its ClientHello (a captured connection: the name its
/// synthetic address was issued for).
///
/// Memory: a connection's task is allocated once, at the size of its largest
/// state, and every idle tunnel pays for it. The branches a raw tunnel never
/// takes (TLS termination, the HTTP/1 and h2 request loops, native
/// processors, refusals) are boxed, so their state is allocated only by the
/// connections that enter them (one allocation per connection): an idle
/// raw tunnel holds 11.9 KiB instead of 18.0 (`bench/idle-tunnels`).
pub(super) async fn serve(
    shared: &Shared,
    mut client: TcpStream,
    opened: Opened,
    leftover: &[u8],
    expect_sni: Option<&str>,
) {
    let _open = tunnel_gauge(shared, &opened);
    // `tls: skip` and `protocol: tcp` endpoints: bytes are copied, never read.
    let permit = opened.decision.permit();
    let skip = permit.tls == TlsMode::Skip || permit.protocol == Protocol::Tcp;
    if permit.protocol.is_native() {
        return Box::pin(native(shared, client, opened)).await;
    }
    if skip {
        return raw(shared, client, opened, leftover).await;
    }
    let wait = if opened.inspected {
        shared.limits.initial_head.timeout
    } else {
        L4_PEEK_WAIT
    };
    match peek_classify(&client, wait).await {
        TunnelProtocol::Tls => {
            // Inspected tunnels offer `h2` too: every stream is admitted
            // like an HTTP/1.1 request (`relay::http::h2`).
            let host = &opened.decision.intent.target.host;
            let config = if opened.inspected {
                shared.leaf_cache.server_config_h2(host)
            } else {
                shared.leaf_cache.server_config(host)
            };
            let Ok(config) = config else {
                shared.relay.audit.tunnel_rejected(
                    &opened.decision,
                    format!(
                        "CONNECT refused for {}: TLS termination unavailable",
                        opened.decision.intent.target
                    ),
                    "leaf certificate could not be issued".into(),
                );
                return;
            };
            let accept = accept_tls(client, config, expect_sni);
            match tokio::time::timeout(CLIENT_HANDSHAKE, Box::pin(accept)).await {
                Ok(Ok(tls)) if tls.get_ref().1.alpn_protocol() == Some(ALPN_H2) => {
                    Box::pin(h2(shared, tls, opened)).await;
                }
                Ok(Ok(tls)) => {
                    Box::pin(http(shared, ClientStream::Tls(Box::new(tls)), opened, true)).await;
                }
                Ok(Err(e)) => shared.relay.audit.tunnel_rejected(
                    &opened.decision,
                    format!(
                        "TLS handshake with client failed for {}",
                        opened.decision.intent.target
                    ),
                    e.to_string(),
                ),
                Err(_) => shared.relay.audit.tunnel_rejected(
                    &opened.decision,
                    format!(
                        "TLS handshake with client timed out for {}",
                        opened.decision.intent.target
                    ),
                    String::new(),
                ),
            }
        }
        TunnelProtocol::Http1 => {
            Box::pin(http(shared, ClientStream::Plain(client), opened, false)).await;
        }
        other if opened.inspected => {
            let detail = if other == TunnelProtocol::Http2Preface {
                "HTTP/2 prior-knowledge (h2c) is not supported for L7-inspected endpoints"
            } else {
                "Unsupported tunnel protocol for L7-inspected endpoint"
            };
            shared.relay.audit.tunnel_rejected(
                &opened.decision,
                format!(
                    "CONNECT_L7 blocked unsupported tunnel protocol for {}",
                    opened.decision.intent.target
                ),
                detail.into(),
            );
            let response = json_error(
                403,
                "unsupported_l7_protocol",
                detail,
                None,
                Some(opened.decision.policy_key()),
            );
            Box::pin(answer_and_close(&mut client, &response.http1())).await;
        }
        _ => raw(shared, client, opened, &[]).await,
    }
}

/// Counts the tunnel in `sluice_open_tunnels` until the guard drops.
fn tunnel_gauge(shared: &Shared, opened: &Opened) -> Option<OpenGuard> {
    let surface = match opened.decision.intent.surface {
        Surface::Connect => TunnelSurface::Connect,
        Surface::Transparent { .. } => TunnelSurface::Transparent,
        Surface::ForwardHttp => return None,
    };
    Some(shared.relay.audit.metrics().tunnel(surface))
}

/// The client's TLS handshake with our leaf; with `expect_sni`, refused
/// before any certificate is sent unless the ClientHello names that host.
async fn accept_tls(
    client: TcpStream,
    config: std::sync::Arc<ServerConfig>,
    expect_sni: Option<&str>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let Some(expected) = expect_sni else {
        return tokio_rustls::TlsAcceptor::from(config).accept(client).await;
    };
    let start = LazyConfigAcceptor::new(Acceptor::default(), client).await?;
    let sni = start
        .client_hello()
        .server_name()
        .map(str::to_ascii_lowercase);
    if sni.as_deref() != Some(expected) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "sni_mismatch: ClientHello named {}, the address was issued for {expected}",
                sni.as_deref().unwrap_or("no server")
            ),
        ));
    }
    start.into_stream(config).await
}

/// A native protocol processor owns the session (chosen by the endpoint's
/// protocol, never by the bytes).
async fn native(shared: &Shared, client: TcpStream, opened: Opened) {
    let protocol = opened.decision.permit().protocol;
    let Some(processor) = processor::for_protocol(protocol) else {
        shared.relay.audit.tunnel_rejected(
            &opened.decision,
            format!(
                "{} refused for {}: no {} processor in this build",
                opened.decision.intent.surface.label(),
                opened.decision.intent.target,
                protocol.as_str()
            ),
            String::new(),
        );
        return;
    };
    debug_assert_eq!(processor.protocol(), protocol);
    let client_tls = shared
        .leaf_cache
        .server_config(&opened.decision.intent.target.host)
        .ok();
    let session = ProcessorSession {
        relay: &shared.relay,
        decision: opened.decision,
        connector: opened.connector,
        client_tls,
        limits: ProcessorLimits {
            dial_timeout: shared.limits.dial_timeout,
            idle: shared.limits.tunnel_idle,
            max_message: processor::DEFAULT_MAX_MESSAGE,
        },
    };
    processor.serve(client, session).await;
}

/// Raw byte relay (L4 endpoints, `tls: skip`), closed if a reload revokes it.
async fn raw(shared: &Shared, client: TcpStream, opened: Opened, initial: &[u8]) {
    let Opened {
        decision,
        connector,
        upstream,
        ..
    } = opened;
    let upstream = match upstream {
        Some(u) => u,
        None => match connector.connect(shared.limits.dial_timeout).await {
            Ok(u) => u,
            Err(e) => {
                shared.relay.audit.upstream_unreachable(&decision, &e);
                return;
            }
        },
    };
    let upstream_ip = upstream.peer_addr().map(|a| a.ip()).ok();
    let stop = revoked(&shared.relay, &decision, upstream_ip);
    let stats = tcp::relay(client, upstream, initial, shared.limits.tunnel_idle, stop).await;
    let reason = match stats.end {
        TunnelEnd::Closed => "closed",
        TunnelEnd::Idle => "idle timeout",
        TunnelEnd::Stopped => "policy no longer allows this tunnel",
    };
    shared
        .relay
        .audit
        .tunnel_closed(&decision, stats.to_upstream, stats.to_client, reason);
}

/// HTTP/2 inside a terminated tunnel: each stream admitted like a request
/// of the HTTP/1.1 loop.
async fn h2(shared: &Shared, tls: TlsStream<TcpStream>, opened: Opened) {
    let limits = H2Limits {
        idle: shared.limits.tunnel_idle,
        body_idle: shared.limits.body_idle,
    };
    let Opened {
        decision,
        connector,
        ..
    } = opened;
    http2::serve(
        std::sync::Arc::clone(&shared.relay),
        decision,
        connector,
        tls,
        limits,
    )
    .await;
}

/// HTTP inside the tunnel: the shared request loop with tunnel admission.
async fn http(shared: &Shared, mut client: ClientStream, opened: Opened, tls: bool) {
    let mut policy = TunnelPolicy {
        shared: &shared.relay,
        decision: opened.decision,
        connector: opened.connector,
        predialed: opened.upstream,
        tls,
        request_num: 0,
        current: None,
        pending: None,
    };
    let limits = shared.limits.loop_limits();
    let mut buf = BytesMut::with_capacity(4096);
    let first = match read_head(&mut client, &mut buf, limits.request_head).await {
        Ok(n) => {
            let raw = buf.split_to(n);
            match RequestHead::parse(&raw) {
                Ok(r) => r,
                Err(e) => {
                    if let Some(response) = policy.rejected(&RejectCause::Parse(e)) {
                        answer_and_close(&mut client, &response.http1()).await;
                    }
                    return;
                }
            }
        }
        Err(HeadError::Closed) => return,
        Err(e) => {
            if let Some(response) = policy.rejected(&RejectCause::Head(e)) {
                answer_and_close(&mut client, &response.http1()).await;
            }
            return;
        }
    };
    request_loop(&mut client, &mut buf, first, &mut policy, &limits).await;
    let _ = client.shutdown().await;
}
