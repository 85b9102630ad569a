//! The Redis processor (design §6.2, `protocol: redis`): every client
//! command, RESP2 or RESP3, is parsed and evaluated under the endpoint's
//! `command`/`key` rules of the pinned policy generation before the
//! upstream sees it.
//!
//! * [`resp`]: client commands on the wire (multibulk and inline).
//! * `command`, `table`: the command table (policy name, key positions).
//! * `gate`: the decision per command, transactions, `AUTH` placeholders.
//! * [`reply`]: upstream replies on the wire (streaming framer).
//! * `flow`: which reply answers which command (pipelines, Pub/Sub,
//!   `MONITOR`), and where local answers go between them.
//! * `session`: the two-direction loop.
//!
//! A denied command is answered `-ERR sluice: <reason>` in its place in the
//! reply order and never reaches the upstream; the upstream is dialled on
//! the first command that is forwarded (a session of denied commands opens
//! no upstream socket). One event per denied command, and per command
//! forwarded only because the endpoint is `enforcement: audit`. Malformed
//! input gets `-ERR Protocol error: ...` and the connection is closed:
//! unparsed bytes are never forwarded.

mod command;
mod flow;
mod gate;
pub mod reply;
pub mod resp;
mod session;
mod table;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use sluice_policy::request::ProtocolVerdict;
use sluice_policy::{Enforcement, Protocol};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{Processor, ProcessorSession};
use crate::egress::Allowed;
use crate::relay::revoke::revoked;
use crate::relay::RelayContext;

/// Why a session ended (the `closed` event says it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The client left or quit, or the upstream closed.
    Closed,
    Idle,
    /// A reload no longer allows the connection.
    Revoked,
    /// The client broke the protocol.
    ClientProtocol,
    /// The upstream broke the protocol.
    UpstreamProtocol,
    /// The upstream could not be dialled.
    Unreachable,
}

impl End {
    fn reason(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Idle => "idle timeout",
            Self::Revoked => "policy no longer allows this tunnel",
            Self::ClientProtocol => "client protocol error",
            Self::UpstreamProtocol => "upstream protocol error",
            Self::Unreachable => "upstream unreachable",
        }
    }
}

/// `protocol: redis`.
pub(crate) struct RedisProcessor;

impl Processor for RedisProcessor {
    fn protocol(&self) -> Protocol {
        Protocol::Redis
    }

    fn serve<'a>(
        &'a self,
        client: TcpStream,
        session: ProcessorSession<'a>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(serve(client, session))
    }
}

async fn serve(client: TcpStream, session: ProcessorSession<'_>) {
    let ProcessorSession {
        relay,
        decision,
        connector,
        limits,
        client_tls,
    } = session;
    // RESP has no in-band TLS upgrade (a `rediss://` client speaks TLS from
    // its first byte and is refused as malformed RESP): no leaf is needed.
    drop(client_tls);
    let permit = decision.permit();
    let endpoint = decision.snapshot.endpoint(permit.endpoint);
    let gate = gate::Gate::new(
        &decision.snapshot,
        endpoint,
        &decision.intent.target,
        permit.enforcement == Enforcement::Audit,
    );
    // Revocation re-judges the address the session is connected to; before
    // the dial, the first address it would dial.
    let (ip_tx, ip_rx) = watch::channel(connector.addrs().first().map(|a| a.ip()));
    let (connector, ip_tx, decision_ref) = (&connector, &ip_tx, &decision);
    let dial = move || async move {
        match connector.connect(limits.dial_timeout).await {
            Ok(stream) => {
                ip_tx.send_replace(stream.peer_addr().ok().map(|a| a.ip()));
                Ok(stream)
            }
            Err(e) => {
                relay.audit.upstream_unreachable(decision_ref, &e);
                Err(e)
            }
        }
    };
    let events = |verdict: &ProtocolVerdict, audit_only: bool| {
        relay
            .audit
            .processor_message(decision_ref, "redis", verdict, audit_only);
    };
    let stop = stop_when_revoked(relay, decision_ref, ip_rx);
    let stats = session::run(client, dial, gate, events, stop, limits).await;
    tracing::debug!(
        target = %decision.intent.target,
        end = stats.end.reason(),
        "redis session closed"
    );
    relay.audit.tunnel_closed(
        &decision,
        stats.to_upstream,
        stats.to_client,
        stats.end.reason(),
    );
}

/// Completes when a reload no longer allows the session: re-authorized from
/// scratch, the address re-judged (the one dialled, once it is).
async fn stop_when_revoked(
    relay: &RelayContext,
    decision: &Allowed,
    mut ip: watch::Receiver<Option<IpAddr>>,
) {
    loop {
        let current = *ip.borrow_and_update();
        tokio::select! {
            () = revoked(relay, decision, current) => return,
            changed = ip.changed() => {
                if changed.is_err() {
                    return revoked(relay, decision, current).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod prop;
