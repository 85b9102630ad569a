//! What the adapters run with: the relays' handles plus what only the
//! adapters use (identity lookup, the initial-head and connection bounds, the
//! TLS terminator's leaf cache), assembled once by the server.

use std::sync::Arc;
use std::time::Duration;

use crate::egress::{IdentityMode, IdentityResolver};
use crate::relay::http::{HeadLimits, LoopLimits};
use crate::relay::tls::LeafCache;
use crate::relay::RelayContext;

/// Bounds on time and size, owned by the boundary that enforces them.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Initial proxy request head (adapter): 8 KiB ⇒ 431.
    pub initial_head: HeadLimits,
    /// Later request heads on a kept-alive connection (relay).
    pub request_head: HeadLimits,
    /// Upstream response heads (relay).
    pub response_head: HeadLimits,
    /// Longest stall inside a body (relay).
    pub body_idle: Duration,
    /// Upstream dial (destination connector).
    pub dial_timeout: Duration,
    /// Raw tunnel idle timeout (relay); also for a raw copy after a
    /// non-WebSocket `101`.
    pub tunnel_idle: Duration,
    /// Concurrent client connections; further accepts wait.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            initial_head: HeadLimits {
                max_bytes: 8 * 1024,
                timeout: Duration::from_secs(30),
            },
            request_head: HeadLimits {
                max_bytes: 16 * 1024,
                timeout: Duration::from_secs(120),
            },
            response_head: HeadLimits {
                max_bytes: 16 * 1024,
                timeout: Duration::from_secs(120),
            },
            body_idle: Duration::from_secs(60),
            dial_timeout: Duration::from_secs(10),
            tunnel_idle: Duration::from_secs(600),
            max_connections: 16_384,
        }
    }
}

impl Limits {
    pub(crate) fn loop_limits(&self) -> LoopLimits {
        LoopLimits {
            request_head: self.request_head,
            response_head: self.response_head,
            body_idle: self.body_idle,
            dial_timeout: self.dial_timeout,
            upgrade_idle: self.tunnel_idle,
        }
    }
}

/// State shared by every connection: the stage handles, opaque outside the
/// crate (a [`Listener`](super::Listener) only passes it on).
pub struct Shared {
    /// Everything the relays need (authorizer, resolver, audit, dialer, TLS
    /// trust, token grants).
    pub(crate) relay: Arc<RelayContext>,
    pub(crate) identity_mode: IdentityMode,
    pub(crate) identity: Option<Arc<dyn IdentityResolver>>,
    pub(crate) limits: Limits,
    pub(crate) leaf_cache: Arc<LeafCache>,
    /// The proposal loop behind `policy.local`.
    pub(crate) proposals: Option<Arc<crate::proposals::ProposalService>>,
}
