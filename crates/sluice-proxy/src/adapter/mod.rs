//! Adapters: one module per way userland reaches the network. Each parses
//! its surface into an [`crate::egress::EgressIntent`], calls the shared
//! authorization, and renders refusals in its own protocol.

mod connect;
mod forward_http;
mod inference;
mod listener;
pub mod metadata;
pub mod policy_dns;
mod policy_local;
mod shared;

mod transparent;
mod tunnel;

pub use listener::{HttpProxyListener, Listener, PolicyDnsListener};
pub use metadata::MetadataListener;
pub use shared::Limits;
pub use shared::Shared;
pub use transparent::{OriginalDst, TransparentListener};

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use sluice_telemetry::{Activity, EventClass};
use tokio::net::TcpStream;

use crate::egress::{IdentityEvidence, IdentityMode};
use crate::refusal;
use crate::relay::http::{answer_and_close, read_head, HeadError, RequestHead};

/// Serve one accepted client connection: read the first head, then hand
/// over to the CONNECT or forward HTTP adapter.
pub(crate) async fn serve_connection(
    shared: Arc<Shared>,
    mut client: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
) {
    let mut buf = BytesMut::with_capacity(1024);
    let head_len = match read_head(&mut client, &mut buf, shared.limits.initial_head).await {
        Ok(n) => n,
        Err(HeadError::TooLarge(_)) => {
            shared.relay.audit.request_rejected(
                EventClass::NetworkActivity,
                peer,
                Activity::Fail,
                "Proxy connection error: request head too large".into(),
                format!(
                    "initial head exceeds {} bytes",
                    shared.limits.initial_head.max_bytes
                ),
            );
            Box::pin(answer_and_close(
                &mut client,
                &refusal::HEAD_TOO_LARGE.http1(),
            ))
            .await;
            return;
        }
        Err(HeadError::Closed) => return,
        Err(e) => {
            tracing::debug!(client.addr = %peer, error = %e, "Head read failed");
            match e {
                HeadError::Timeout => {
                    Box::pin(answer_and_close(
                        &mut client,
                        &refusal::REQUEST_TIMEOUT.http1(),
                    ))
                    .await;
                }
                HeadError::Truncated | HeadError::BareLineEnding => {
                    Box::pin(answer_and_close(&mut client, &refusal::BAD_REQUEST.http1())).await;
                }
                _ => {}
            }
            return;
        }
    };
    let raw = buf.split_to(head_len);
    let head = match RequestHead::parse(&raw) {
        Ok(h) => h,
        Err(e) => {
            shared.relay.audit.request_rejected(
                EventClass::NetworkActivity,
                peer,
                Activity::Fail,
                "Proxy connection error: malformed request head".into(),
                e.to_string(),
            );
            Box::pin(answer_and_close(&mut client, &refusal::BAD_REQUEST.http1())).await;
            return;
        }
    };
    let identity = resolve_identity(&shared, peer, local).await;
    if head.method == "CONNECT" {
        connect::handle(&shared, client, buf, head, peer, identity).await;
    } else {
        // Boxed: a CONNECT tunnel's task must not carry the forward path's
        // state (see `tunnel::serve` on task size).
        Box::pin(forward_http::handle(
            &shared, client, buf, head, peer, identity,
        ))
        .await;
    }
}

/// Identity is resolved once per client connection, off the async workers.
async fn resolve_identity(
    shared: &Shared,
    peer: SocketAddr,
    local: SocketAddr,
) -> IdentityEvidence {
    if shared.identity_mode == IdentityMode::EndpointOnly {
        return IdentityEvidence::EndpointOnly;
    }
    let Some(resolver) = shared.identity.clone() else {
        return IdentityEvidence::Failed(
            "identity resolution is not available on this platform".into(),
        );
    };
    if let Some(p) = resolver.resolve_cached(peer, local) {
        return IdentityEvidence::Resolved(Arc::new(p));
    }
    match tokio::task::spawn_blocking(move || resolver.resolve(peer, local)).await {
        Ok(Ok(p)) => IdentityEvidence::Resolved(Arc::new(p)),
        Ok(Err(reason)) => IdentityEvidence::Failed(reason.into()),
        Err(_) => IdentityEvidence::Failed("identity lookup task failed".into()),
    }
}
