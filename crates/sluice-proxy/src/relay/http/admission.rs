//! The request half of admission, the same on every surface (forward proxy,
//! inside a tunnel; later transparent capture and h2 streams). After the
//! surface has parsed the request and authorized it (each in its own way: the
//! forward proxy authorizes every absolute-form target, a tunnel checks that
//! the request names the tunnel's authority), [`admit`] runs the rest in
//! pipeline order:
//!
//! canonicalise the target → evaluate request policy (a refusal carries its
//! event) → the upstream the surface dials → credentials and the upgrade
//! choice → the head.
//!
//! A surface supplies what differs through [`AdmissionSurface`]: the event of
//! a non-canonical target, where the upstream comes from, and how the head is
//! written.

use std::future::Future;
use std::sync::Arc;

use super::exchange::{BodyPlan, Upgrade, UpstreamKey};
use super::l7::{self, canonical_target, L7Outcome};
use super::request::RequestHead;
use crate::destination::UpstreamConnector;
use crate::egress::Allowed;
use crate::refusal::Refusal;
use crate::relay::credentials::Outbound;
use crate::relay::RelayContext;

/// What a surface decides around the shared steps.
pub(crate) trait AdmissionSurface: Send {
    /// The refusal (with its event) for a request-target that is not canonical.
    fn bad_target(&self, decision: &Allowed, req: &RequestHead, detail: &str) -> Refusal;

    /// The upstream this request goes to: `Ok(Some)` with its reuse key,
    /// `Ok(None)` when the policy generation moved meanwhile (authorize again),
    /// `Err` to refuse.
    fn upstream(
        &mut self,
        decision: &Allowed,
        req: &RequestHead,
    ) -> impl Future<Output = Result<Option<(UpstreamKey, UpstreamConnector)>, Refusal>> + Send;

    /// The head written upstream, from what credentials made of the request.
    fn head(&self, req: &RequestHead, outbound: &Outbound, upgrade: &Upgrade) -> Vec<u8>;
}

/// An admitted request: what the loop sends, and what its completion event needs.
pub(crate) struct AdmittedRequest {
    pub(crate) key: UpstreamKey,
    pub(crate) connector: UpstreamConnector,
    pub(crate) head: Vec<u8>,
    pub(crate) body: BodyPlan,
    pub(crate) upgrade: Upgrade,
    /// The canonical path (for events).
    pub(crate) path: String,
    pub(crate) outcome: L7Outcome,
    /// Providers whose credentials were injected.
    pub(crate) providers: Vec<Arc<str>>,
}

/// How [`admit`] ended. The admitted request is boxed on purpose: unboxed, the
/// futures that hold a `Step` grow by its size and are moved on every poll
/// path; the forward 1 KiB benchmark fell from 49k to 36k requests/s.
pub(crate) enum Step {
    Admitted(Box<AdmittedRequest>),
    /// The policy generation moved before the upstream was settled.
    Reauthorize,
    Refused(Refusal),
}

/// The shared steps for `req` under the allowed `decision` (see the module docs).
pub(crate) async fn admit<S: AdmissionSurface>(
    ctx: &RelayContext,
    decision: &Allowed,
    req: &RequestHead,
    path_and_query: &str,
    surface: &mut S,
) -> Step {
    let canonical = match canonical_target(decision, path_and_query) {
        Ok(c) => c,
        Err(detail) => return Step::Refused(surface.bad_target(decision, req, &detail)),
    };
    let outcome = l7::evaluate(decision, req, &canonical);
    if let Some(refusal) = l7::refusal(&ctx.audit, decision, &req.method, &canonical.path, &outcome)
    {
        return Step::Refused(refusal);
    }
    let (key, connector) = match surface.upstream(decision, req).await {
        Ok(Some(u)) => u,
        Ok(None) => return Step::Reauthorize,
        Err(refusal) => return Step::Refused(refusal),
    };
    let (outbound, upgrade) = match l7::admitted(ctx, decision, req, &canonical, &outcome).await {
        Ok(v) => v,
        Err(refusal) => return Step::Refused(refusal),
    };
    let head = surface.head(req, &outbound, &upgrade);
    Step::Admitted(Box::new(AdmittedRequest {
        key,
        connector,
        head,
        body: outbound.body,
        upgrade,
        path: canonical.path,
        outcome,
        providers: outbound.providers,
    }))
}
