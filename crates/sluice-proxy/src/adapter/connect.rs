//! `CONNECT host:port`: authorize, validate, dial, `200`, raw relay.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use sluice_telemetry::{Activity, EventClass};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::response::json_error;
use crate::destination::{self, check_pinned};
use crate::egress::{authorize, EgressDecision, EgressIntent, IdentityEvidence, Surface, Target};
use crate::relay::http::{answer_and_close, RequestHead};
use crate::relay::tcp::{self, TunnelEnd};
use crate::server::Shared;

/// Why an L7 route is refused (until the inspecting relay exists).
pub(super) const L7_DETAIL: &str =
    "request-level policy for this endpoint cannot be enforced yet; refusing uninspected traffic";

/// How many times a decision is re-made when the generation moves under it.
const MAX_REAUTHORIZE: usize = 4;

pub(super) async fn handle(
    shared: &Arc<Shared>,
    mut client: TcpStream,
    leftover: BytesMut,
    head: RequestHead,
    peer: SocketAddr,
    identity: IdentityEvidence,
) {
    let target = match Target::parse_authority(&head.target) {
        Ok(t) => t,
        Err(e) => {
            shared.audit.request_rejected(
                EventClass::NetworkActivity,
                peer,
                Activity::Fail,
                "Proxy connection error: invalid CONNECT target".into(),
                e.to_string(),
            );
            let detail = format!("CONNECT target rejected: {e}");
            answer_and_close(
                &mut client,
                &json_error(400, "invalid_connect_target", &detail, None, None),
            )
            .await;
            return;
        }
    };
    let intent = EgressIntent {
        surface: Surface::Connect,
        target,
        client: peer,
        identity,
    };
    let Some((decision, upstream)) = open(shared, &mut client, intent).await else {
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    shared.audit.connect_allowed(&decision);
    let upstream_ip = upstream.peer_addr().map(|a| a.ip()).ok();
    let stop = revoked(shared, &decision, upstream_ip);
    let stats = tcp::relay(client, upstream, &leftover, shared.limits.tunnel_idle, stop).await;
    let reason = match stats.end {
        TunnelEnd::Closed => "closed",
        TunnelEnd::Idle => "idle timeout",
        TunnelEnd::Stopped => "policy no longer allows this tunnel",
    };
    shared.audit.tunnel_closed(&decision, &stats, reason);
}

/// Authorize, validate and dial, re-deciding from scratch whenever the
/// generation moved before the tunnel starts. Writes the refusal itself.
async fn open(
    shared: &Shared,
    client: &mut TcpStream,
    intent: EgressIntent,
) -> Option<(EgressDecision, TcpStream)> {
    for _ in 0..MAX_REAUTHORIZE {
        let decision = authorize(
            &shared.store.snapshot(),
            intent.clone(),
            &shared.authorize_ctx(),
        );
        let target = &decision.intent.target;
        let Some(permit) = decision.permit() else {
            shared.audit.connect_denied(&decision);
            let detail = format!("CONNECT {target} not permitted by policy");
            let reason = decision.deny_reason();
            answer_and_close(
                client,
                &json_error(403, "policy_denied", &detail, Some(&reason), None),
            )
            .await;
            return None;
        };
        if let Some(protocol) = decision.uninspectable_l7() {
            shared.audit.l7_unavailable(&decision, protocol.as_str());
            let policy = Some(decision.policy_key());
            let response = json_error(403, "l7_inspection_unavailable", L7_DETAIL, None, policy);
            answer_and_close(client, &response).await;
            return None;
        }
        let connector = match destination::validate(&permit.destination, target, &shared.resolver)
            .await
        {
            Ok(c) => c,
            Err(denial) => {
                shared.audit.destination_denied(&decision, &denial, None);
                let response = if denial.is_policy() {
                    let detail = format!("CONNECT {target} blocked: {}", denial.client_detail());
                    json_error(
                        403,
                        "ssrf_denied",
                        &detail,
                        None,
                        Some(decision.policy_key()),
                    )
                } else {
                    let detail = format!("DNS resolution failed for {target}");
                    json_error(
                        502,
                        "upstream_unreachable",
                        &detail,
                        None,
                        Some(decision.policy_key()),
                    )
                };
                answer_and_close(client, &response).await;
                return None;
            }
        };
        if shared.store.generation() != decision.generation() {
            continue;
        }
        let upstream = match connector.connect(shared.limits.dial_timeout).await {
            Ok(s) => s,
            Err(e) => {
                shared.audit.upstream_unreachable(&decision, &e);
                let detail = format!("connection to {target} failed");
                answer_and_close(
                    client,
                    &json_error(
                        502,
                        "upstream_unreachable",
                        &detail,
                        None,
                        Some(decision.policy_key()),
                    ),
                )
                .await;
                return None;
            }
        };
        if shared.store.generation() != decision.generation() {
            continue;
        }
        return Some((decision, upstream));
    }
    let detail = format!(
        "CONNECT {} not permitted because policy changed",
        intent.target
    );
    answer_and_close(
        client,
        &json_error(403, "policy_denied", &detail, None, None),
    )
    .await;
    None
}

/// Completes when a newer generation no longer allows this tunnel: the
/// intent is re-authorized from scratch and the connected address is
/// re-judged under the new destination plan (no new DNS lookup).
async fn revoked(
    shared: &Shared,
    decision: &EgressDecision,
    upstream_ip: Option<std::net::IpAddr>,
) {
    let mut rx = shared.store.subscribe();
    rx.mark_unchanged();
    loop {
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        let redo = authorize(
            &shared.store.snapshot(),
            decision.intent.clone(),
            &shared.authorize_ctx(),
        );
        let reason = match (redo.permit(), upstream_ip) {
            (None, _) => Some(redo.deny_reason()),
            (Some(p), Some(ip)) => check_pinned(&p.destination, &redo.intent.target, ip)
                .err()
                .map(|d| d.status_detail),
            (Some(_), None) => Some("upstream address unknown".to_owned()),
        };
        if let Some(reason) = reason {
            shared
                .audit
                .tunnel_revoked(decision, redo.generation(), &reason);
            return;
        }
    }
}
