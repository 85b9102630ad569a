//! Revocation of long-lived connections when the policy changes: a raw
//! tunnel, or an upgraded session (WebSocket, other `101`) inside the
//! request loop, is re-authorized from scratch under each new generation
//! and ended when it is no longer allowed.

use std::net::IpAddr;

use crate::destination::check_pinned;
use crate::egress::Allowed;
use crate::relay::RelayContext;

/// Completes when a newer generation no longer allows this connection:
/// the intent is re-authorized from scratch and the connected address is
/// re-judged under the new destination plan (no new DNS lookup). A
/// generation published before this future first runs counts too.
pub(crate) async fn revoked(
    shared: &RelayContext,
    decision: &Allowed,
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
            let reason = match (&redo, upstream_ip) {
                (Err(denied), _) => Some(denied.deny_reason()),
                (Ok(allowed), Some(ip)) => {
                    check_pinned(&allowed.permit().destination, &allowed.intent.target, ip)
                        .err()
                        .map(|d| d.status_detail)
                }
                (Ok(_), None) => Some("upstream address unknown".to_owned()),
            };
            if let Some(reason) = reason {
                let generation = redo
                    .as_ref()
                    .map_or_else(|d| d.generation(), |a| a.generation());
                shared.audit.tunnel_revoked(decision, generation, &reason);
                return;
            }
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
