//! Revocation of long-lived connections when the policy changes: a raw
//! tunnel, or an upgraded session (WebSocket, other `101`) inside the
//! request loop, is re-authorized from scratch under each new generation
//! and ended when it is no longer allowed.

use std::net::IpAddr;

use crate::destination::check_pinned;
use crate::egress::EgressDecision;
use crate::relay::RelayContext;

/// Completes when a newer generation no longer allows this connection:
/// the intent is re-authorized from scratch and the connected address is
/// re-judged under the new destination plan (no new DNS lookup). A
/// generation published before this future first runs counts too.
pub(crate) async fn revoked(
    shared: &RelayContext,
    decision: &EgressDecision,
    upstream_ip: Option<IpAddr>,
) {
    let mut rx = shared.authorizer.subscribe();
    rx.mark_unchanged();
    let mut checked = decision.generation();
    loop {
        let current = shared.authorizer.generation();
        if current != checked {
            checked = current;
            let redo = shared.authorizer.authorize(decision.intent.clone());
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
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
