//! `CONNECT host:port`: authorize, validate, `200`, then the tunnel (see
//! [`super::tunnel`]): TLS is terminated and HTTP goes through the shared
//! request loop; other bytes are relayed raw for L4 endpoints and refused for
//! inspected ones.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use sluice_policy::TlsMode;
use sluice_telemetry::{Activity, EventClass};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{inference, tunnel, Shared};
use crate::egress::{EgressIntent, IdentityEvidence, Surface, Target};
use crate::refusal::json_error;
use crate::relay::http::{answer_and_close, RequestHead};

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
            shared.relay.audit.request_rejected(
                EventClass::NetworkActivity,
                peer,
                Activity::Fail,
                "Proxy connection error: invalid CONNECT target".into(),
                e.to_string(),
            );
            let detail = format!("CONNECT target rejected: {e}");
            let response = json_error(400, "invalid_connect_target", &detail, None, None);
            Box::pin(answer_and_close(&mut client, &response.http1())).await;
            return;
        }
    };
    if inference::intercepts(&target) {
        return Box::pin(inference::handle(
            shared,
            client,
            !leftover.is_empty(),
            peer,
        ))
        .await;
    }
    let intent = EgressIntent {
        surface: Surface::Connect,
        target,
        client: peer,
        identity,
    };
    let opened = match tunnel::open(shared, intent).await {
        Ok(o) => o,
        Err(refusal) => return Box::pin(answer_and_close(&mut client, &refusal.http1())).await,
    };
    let skip = opened.decision.permit().tls == TlsMode::Skip;
    if !leftover.is_empty() && !skip {
        // Bytes before the `200` cannot be classified or inspected.
        let response = crate::refusal::early_tunnel_data();
        Box::pin(answer_and_close(&mut client, &response.http1())).await;
        return;
    }
    if client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    shared
        .relay
        .audit
        .connect_allowed(&opened.decision, opened.inspected);
    tunnel::serve(shared, client, opened, &leftover, None).await;
}
