//! Supervisor middleware (design §6.3, invariant 7): stages that see an
//! allowed request before credentials are injected, in the policy's
//! `order`, each allowing, denying or rewriting it. Wire-compatible with
//! OpenShell's `openshell.middleware.v1.SupervisorMiddleware` service.
//!
//! - [`proto`]: the wire types, generated from our `.proto`;
//! - `stage`: the interface the chain drives (an HTTP stage, a WebSocket
//!   stage and its session), implemented by `grpc` (registered services)
//!   and `builtin` (`sluice/regex`, `sluice/secrets`, `sluice/size`);
//! - [`MiddlewareRuntime`]: the registrations and the per-generation plan.

pub(crate) mod builtin;
pub(crate) mod chain;
pub mod grpc;
pub mod proto;
pub(crate) mod runtime;
pub(crate) mod stage;
pub(crate) mod ws;

pub use runtime::{available as available_middleware, MiddlewareRuntime};

/// Who is asking, as the stages see it (no secrets: ids and paths only).
pub(crate) fn request_context(decision: &crate::egress::Allowed) -> proto::RequestContext {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let process = decision.intent.identity.process().map(|p| proto::Process {
        binary: p.exe.clone(),
        pid: p.sandbox_pid.unwrap_or(p.pid),
        // Nearest parent first, as identity records them.
        ancestors: p.ancestors.clone(),
    });
    proto::RequestContext {
        request_id: format!("{}-{id}", std::process::id()),
        sandbox_id: format!("sluice-{}", std::process::id()),
        originating_process: process,
        sandbox_name: String::new(),
        workspace: String::new(),
    }
}

/// `403 middleware_denied`: stage `key` denied (with its reason code, never
/// its free-form reason). Requests and WebSocket upgrades alike.
pub(crate) fn denied_refusal(
    decision: &crate::egress::Allowed,
    key: &str,
    reason_code: Option<&str>,
) -> crate::refusal::Refusal {
    let r = refusal_of(
        decision,
        key,
        "middleware_denied",
        "Request rejected by configured middleware",
    );
    match reason_code {
        Some(code) => r.field("reason_code", code),
        None => r,
    }
}

/// `403 middleware_failed`: a `fail_closed` stage `key` could not decide.
pub(crate) fn failed_refusal(
    decision: &crate::egress::Allowed,
    key: &str,
) -> crate::refusal::Refusal {
    refusal_of(
        decision,
        key,
        "middleware_failed",
        "Request could not be processed by configured middleware",
    )
}

fn refusal_of(
    decision: &crate::egress::Allowed,
    key: &str,
    code: &str,
    detail: &str,
) -> crate::refusal::Refusal {
    crate::refusal::Refusal::json(403, code, detail)
        .policy(Some(decision.policy_key()))
        .field("policy", decision.policy_key())
        .field("middleware", key)
        .field("layer", "l7")
}
