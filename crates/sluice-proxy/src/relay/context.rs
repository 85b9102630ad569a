//! What a relay needs from the rest of the proxy, and nothing more: the
//! authorization handle (re-authorize after a reload, revoke), the destination
//! resolver (re-validate), the audit log, the upstream dial bound, upstream TLS
//! trust and the token grants of the credential injector.

use std::sync::Arc;
use std::time::Duration;

use crate::audit::Audit;
use crate::destination::Resolver;
use crate::egress::Authorizer;
use crate::relay::credentials::token_grant::TokenGrants;
use crate::relay::middleware::MiddlewareRuntime;
use crate::relay::tls::UpstreamTls;

/// The handles relays run with, built once by the server.
pub(crate) struct RelayContext {
    pub(crate) authorizer: Authorizer,
    pub(crate) resolver: Resolver,
    pub(crate) audit: Audit,
    /// Upstream dial deadline (per address).
    pub(crate) dial_timeout: Duration,
    pub(crate) upstream_tls: Arc<UpstreamTls>,
    pub(crate) tokens: TokenGrants,
    /// Registered middleware services and the per-generation stage plans.
    pub(crate) middleware: Arc<MiddlewareRuntime>,
}
