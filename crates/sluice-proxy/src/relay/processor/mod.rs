//! Native protocol processors (design §2 `relay/processor`, §6.2): for an
//! endpoint whose `protocol` names one (`redis`, `postgres`; chosen by the
//! endpoint, never sniffed from the bytes), the processor owns the client
//! connection's message loop after the connection decision. It parses each
//! client message, evaluates it with the evaluator pinned to the decision's
//! generation (`sluice_policy::request::native`), forwards what is allowed,
//! answers what is denied in the protocol's own error shape (the upstream
//! never sees it), and dials the upstream only through the decision's
//! connector and only when the protocol state allows. The same processor runs
//! on CONNECT tunnels and on transparent connections.

pub mod postgres;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sluice_policy::Protocol;
use tokio::net::TcpStream;
use tokio_rustls::rustls::ServerConfig;

use super::RelayContext;
use crate::destination::UpstreamConnector;
use crate::egress::Allowed;

/// Bounds a processor enforces (the relay owns idle time; processors own
/// message limits).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProcessorLimits {
    /// Upstream dial deadline.
    pub(crate) dial_timeout: Duration,
    /// Longest silence on both sides before the session is closed.
    pub(crate) idle: Duration,
    /// Largest single client message (a RESP command with its arguments, a
    /// Postgres message); larger ones are refused and the session closed.
    pub(crate) max_message: usize,
}

/// Default [`ProcessorLimits::max_message`]: 16 MiB (Redis' own default
/// bulk-string cap is 512 MiB; an agent's commands are far smaller).
pub(crate) const DEFAULT_MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// One authorized session handed to a processor.
pub(crate) struct ProcessorSession<'a> {
    /// Audit, re-authorization, token grants, upstream TLS trust.
    pub(crate) relay: &'a RelayContext,
    /// The pinned decision: `decision.snapshot` is the generation every
    /// message is evaluated under; `decision.permit().endpoint` the endpoint
    /// whose rules apply.
    pub(crate) decision: Allowed,
    /// The only way to the upstream (validated, pinned addresses).
    pub(crate) connector: UpstreamConnector,
    /// TLS toward the client, with a leaf for the target host minted by the
    /// sandbox CA, for protocols where the client asks for TLS in-band
    /// (Postgres `SSLRequest`). `None` when no leaf could be issued.
    pub(crate) client_tls: Option<Arc<ServerConfig>>,
    pub(crate) limits: ProcessorLimits,
}

/// A native protocol processor.
pub(crate) trait Processor: Send + Sync {
    /// The endpoint protocol it serves.
    fn protocol(&self) -> Protocol;

    /// Runs the session until either side closes, the idle bound passes, a
    /// reload revokes the decision, or the client breaks the protocol.
    /// Writes its own events (one per denied message; one per allowed
    /// message under `enforcement: audit`) and never logs values or secrets.
    fn serve<'a>(
        &'a self,
        client: TcpStream,
        session: ProcessorSession<'a>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

/// The processor for `protocol`, if this build has one. Every protocol the
/// policy loader accepts as native has one (tested below), so a policy can
/// never name a processor that is missing.
pub(crate) fn for_protocol(protocol: Protocol) -> Option<&'static dyn Processor> {
    match protocol {
        Protocol::Postgres => Some(&postgres::POSTGRES),
        Protocol::Redis => Some(&redis::RedisProcessor),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_native_protocol_has_a_processor() {
        for p in [Protocol::Redis, Protocol::Postgres] {
            assert!(p.is_native());
            let processor = for_protocol(p);
            assert!(processor.is_some(), "{p:?} has no processor");
            assert_eq!(processor.map(|x| x.protocol()), Some(p));
        }
    }
}
