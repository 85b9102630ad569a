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
//! When middleware stages are selected for the request's host, the last two
//! steps wait for the body: the request is admitted with
//! [`BodyPlan::Middleware`], the loop reads the body, and [`finish`] runs the
//! stages, re-parses and re-evaluates what they changed, then does
//! credentials and the head (invariant 7).
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
use crate::relay::middleware::chain::{self, ChainEnd, ChainRequest};
use crate::relay::middleware::stage::PLATFORM_MAX_PAYLOAD;
use crate::relay::middleware::{denied_refusal, failed_refusal};
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
    /// Stages still to run over the body ([`BodyPlan::Middleware`]).
    pub(crate) middleware: Option<Box<PendingMiddleware>>,
}

/// An admitted request whose middleware stages run once its body is read.
pub(crate) struct PendingMiddleware {
    plan: Arc<crate::relay::middleware::runtime::Plan>,
    /// Indexes into `plan.stages`, in order.
    stages: Vec<usize>,
    path_and_query: String,
}

/// What [`finish`] made of a request with middleware.
pub(crate) struct Finished {
    /// Without framing fields and the final blank line.
    pub(crate) head: Vec<u8>,
    pub(crate) body: Vec<u8>,
    pub(crate) upgrade: Upgrade,
    pub(crate) outcome: L7Outcome,
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
    if !decision.snapshot.middlewares().is_empty() {
        match pending_middleware(ctx, decision, req, &canonical.path, path_and_query) {
            Ok(None) => {}
            Ok(Some(pending)) => {
                let limit = pending.limit();
                return Step::Admitted(Box::new(AdmittedRequest {
                    key,
                    connector,
                    head: Vec::new(),
                    body: BodyPlan::Middleware { limit },
                    upgrade: Upgrade::No,
                    path: canonical.path,
                    outcome,
                    providers: Vec::new(),
                    middleware: Some(Box::new(pending)),
                }));
            }
            Err(refusal) => return Step::Refused(refusal),
        }
    }
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
        middleware: None,
    }))
}

impl PendingMiddleware {
    /// The largest body any of its stages takes.
    fn limit(&self) -> usize {
        self.stages
            .iter()
            .filter_map(|i| self.plan.stages[*i].http.as_ref())
            .map(|h| h.max_payload())
            .max()
            .unwrap_or(0)
            .min(PLATFORM_MAX_PAYLOAD)
    }
}

/// The HTTP stages selected for this request's host, if any.
fn pending_middleware(
    ctx: &RelayContext,
    decision: &Allowed,
    req: &RequestHead,
    path: &str,
    path_and_query: &str,
) -> Result<Option<PendingMiddleware>, Refusal> {
    let snapshot = &decision.snapshot;
    let host = decision.intent.target.host.as_host_ref();
    let Some(plan) = ctx.middleware.plan(snapshot) else {
        // Never prepared (cannot happen for a policy that loaded): a
        // fail_closed stage for this host refuses; fail_open ones skip.
        let closed = snapshot
            .middlewares()
            .iter()
            .find(|m| !m.fail_open && m.selects(host));
        return match closed {
            Some(m) => Err(failed_refusal(decision, &m.key)),
            None => Ok(None),
        };
    };
    let mut stages: Vec<usize> = plan
        .stages
        .iter()
        .enumerate()
        .filter(|(_, s)| s.http.is_some() && snapshot.middlewares()[s.index].selects(host))
        .map(|(i, _)| i)
        .collect();
    // A declared body over a stage's limit is that stage's failure before
    // anything is read: a fail_open stage is skipped (and if every one is,
    // the request streams as without middleware), a fail_closed one refuses.
    // A chunked body over the limit is refused once read (it cannot be
    // streamed on after part of it was consumed).
    if let super::BodyFraming::Length(n) = req.framing {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        let mut kept = Vec::with_capacity(stages.len());
        for i in stages {
            let s = &plan.stages[i];
            let limit = s
                .http
                .as_ref()
                .map_or(0, |h| h.max_payload())
                .min(PLATFORM_MAX_PAYLOAD);
            if n <= limit {
                kept.push(i);
                continue;
            }
            let report = chain::StageReport {
                key: Arc::clone(&s.key),
                middleware: Arc::clone(&s.middleware),
                outcome: if s.fail_open { "skipped" } else { "failed" },
                reason_code: None,
                failure: Some("payload_too_large"),
                latency: std::time::Duration::ZERO,
                findings: Vec::new(),
            };
            ctx.audit
                .middleware_stage(decision, &req.method, path, &report);
            if !s.fail_open {
                let r = failed_refusal(decision, &s.key);
                return Err(about_request(r, decision, &req.method, path));
            }
        }
        stages = kept;
    }
    if stages.is_empty() {
        return Ok(None);
    }
    Ok(Some(PendingMiddleware {
        plan,
        stages,
        path_and_query: path_and_query.to_owned(),
    }))
}

/// The request fields a middleware refusal names (never the body).
fn about_request(r: Refusal, decision: &Allowed, method: &str, path: &str) -> Refusal {
    let target = &decision.intent.target;
    let binary = decision
        .intent
        .identity
        .process()
        .map_or_else(String::new, |p| p.exe.clone());
    r.field("method", method)
        .field(
            "path",
            sluice_telemetry::redact_path(&sluice_policy::placeholder::scrub(path)),
        )
        .field("host", target.host.to_string())
        .field("port", target.port)
        .field("binary", binary)
}

/// The request as the stages see it.
fn chain_request(
    decision: &Allowed,
    req: &RequestHead,
    path: &str,
    query: Option<&str>,
    scheme: &'static str,
    body: Vec<u8>,
) -> ChainRequest {
    let target = &decision.intent.target;
    ChainRequest {
        scheme,
        host: target.host.to_string(),
        port: target.port,
        method: req.method.clone(),
        path: path.to_owned(),
        query: query.unwrap_or_default().to_owned(),
        headers: req.headers.clone(),
        body,
    }
}

/// The head `req` with `headers` instead of its own, parsed again (a stage's
/// header changes go through the same parser as the client's).
fn reparsed(
    decision: &Allowed,
    req: &RequestHead,
    headers: &[(String, Vec<u8>)],
) -> Result<RequestHead, Refusal> {
    let mut raw = format!("{} {} HTTP/1.{}\r\n", req.method, req.target, req.version).into_bytes();
    for (name, value) in headers {
        raw.extend_from_slice(name.as_bytes());
        raw.extend_from_slice(b": ");
        raw.extend_from_slice(value);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"\r\n");
    // Which stage's change broke the head is not known here: `*`.
    RequestHead::parse(&raw).map_err(|_| failed_refusal(decision, "*"))
}

/// Runs the pending stages over `body`, then the admission steps a request
/// without middleware took at once: request policy again on what the stages
/// left (REST on the head; GraphQL/JSON-RPC/MCP on the body through the
/// body plan), credentials, the head.
pub(crate) async fn finish<S: AdmissionSurface>(
    ctx: &RelayContext,
    decision: &Allowed,
    req: &RequestHead,
    pending: PendingMiddleware,
    body: Vec<u8>,
    scheme: &'static str,
    surface: &S,
) -> Result<Finished, Refusal> {
    let canonical = canonical_target(decision, &pending.path_and_query)
        .map_err(|detail| surface.bad_target(decision, req, &detail))?;
    let mut creq = chain_request(
        decision,
        req,
        &canonical.path,
        canonical.query,
        scheme,
        body,
    );
    let stages: Vec<_> = pending
        .stages
        .iter()
        .map(|i| &pending.plan.stages[*i])
        .collect();
    let context = crate::relay::middleware::request_context(decision);
    let mut reports = Vec::with_capacity(stages.len());
    let end = chain::run(&stages, &context, &mut creq, &mut reports).await;
    for r in &reports {
        ctx.audit
            .middleware_stage(decision, &req.method, &canonical.path, r);
    }
    let headers_changed = match end {
        ChainEnd::Denied { key, reason_code } => {
            let r = denied_refusal(decision, &key, reason_code.as_deref());
            return Err(about_request(r, decision, &req.method, &canonical.path));
        }
        ChainEnd::Failed { key } => {
            let r = failed_refusal(decision, &key);
            return Err(about_request(r, decision, &req.method, &canonical.path));
        }
        ChainEnd::Continue {
            headers_changed, ..
        } => headers_changed,
    };
    let req2 = if headers_changed {
        std::borrow::Cow::Owned(reparsed(decision, req, &creq.headers)?)
    } else {
        std::borrow::Cow::Borrowed(req)
    };
    let outcome = l7::evaluate(decision, &req2, &canonical);
    if let Some(refusal) = l7::refusal(
        &ctx.audit,
        decision,
        &req2.method,
        &canonical.path,
        &outcome,
    ) {
        return Err(refusal);
    }
    let (mut outbound, upgrade) = l7::admitted(ctx, decision, &req2, &canonical, &outcome).await?;
    let mut signature = Vec::new();
    let body = match std::mem::replace(&mut outbound.body, BodyPlan::Middleware { limit: 0 }) {
        BodyPlan::Buffer {
            limit,
            transform,
            on_error,
        } => {
            if creq.body.len() > limit {
                return Err(on_error.unwrap_or(crate::refusal::BAD_REQUEST));
            }
            match transform(&creq.body) {
                Ok(Some(b)) => b,
                Ok(None) => creq.body,
                Err(refusal) => return Err(refusal),
            }
        }
        BodyPlan::Stream { guard } => {
            if guard && sluice_policy::placeholder::contains_marker(&creq.body) {
                return Err(crate::refusal::json_error(
                    500,
                    "credential_injection_failed",
                    "reserved credential placeholder in request body",
                    None,
                    None,
                ));
            }
            creq.body
        }
        BodyPlan::Middleware { .. } => creq.body,
        BodyPlan::Sign { limit, sign } => {
            if creq.body.len() > limit {
                return Err(Refusal::json(
                    413,
                    "sigv4_body_too_large",
                    &format!("request body exceeds the SigV4 signing limit ({limit} bytes)"),
                ));
            }
            signature = sign(&creq.body)?;
            creq.body
        }
    };
    // The head is written without framing: the loop adds Content-Length.
    let mut head = surface.head(&req2, &outbound, &upgrade);
    super::append_fields(&mut head, &signature);
    Ok(Finished {
        head,
        body,
        upgrade,
        outcome,
        providers: outbound.providers,
    })
}
