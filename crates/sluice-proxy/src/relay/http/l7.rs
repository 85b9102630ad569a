//! Per-request policy shared by every HTTP path (forward proxy, plaintext
//! tunnel, terminated TLS tunnel): canonical target, h2c refusal, and the
//! generation-pinned REST evaluation of the decision's routes.

use std::fmt::Write as _;

use sluice_policy::request::{
    canonicalize_path, evaluate_rest, has_l7_routes, QueryParams, RestRequest,
};
use sluice_policy::{EndpointId, Enforcement, Protocol};
use sluice_telemetry::redact_path;

use super::request::RequestHead;
use crate::egress::EgressDecision;

/// The request target split and canonicalized (the form used for policy and on the wire).
#[derive(Debug)]
pub(crate) struct CanonicalTarget<'a> {
    pub(crate) path: String,
    /// Raw query after `?`, preserved byte for byte.
    pub(crate) query: Option<&'a str>,
}

/// Canonicalize an origin-form `path?query`. `%2F` survives only when some
/// route of the decision opted in; the selected route is re-checked later.
pub(crate) fn canonical_target<'a>(
    decision: &EgressDecision,
    path_and_query: &'a str,
) -> Result<CanonicalTarget<'a>, String> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let any_encoded_slash = decision.permit().is_some_and(|p| {
        p.routes
            .iter()
            .any(|id| decision.snapshot.endpoint(*id).allow_encoded_slash)
    });
    canonicalize_path(path, any_encoded_slash)
        .map(|path| CanonicalTarget { path, query })
        .map_err(|e| e.to_string())
}

/// The request-level outcome.
#[derive(Debug)]
pub(crate) enum L7Outcome {
    /// No route carries request-level rules (L4 endpoint): forward as is.
    Pass,
    Allow {
        endpoint: EndpointId,
    },
    /// Would be denied, but the endpoint is in `audit` mode: forward and record.
    Audit {
        endpoint: EndpointId,
        reason: String,
    },
    /// Refused: the rich L7 403.
    Deny {
        endpoint: Option<EndpointId>,
        reason: String,
        rule: Option<String>,
    },
    /// A request shape inspected endpoints never accept (h2c upgrade).
    Unsupported {
        detail: &'static str,
    },
    /// The selected endpoint's protocol has no evaluator in this build yet.
    Uninspectable {
        protocol: Protocol,
    },
    /// The target is not acceptable for the selected endpoint (encoded slash, bad query).
    BadTarget {
        detail: String,
    },
}

impl L7Outcome {
    /// Whether the governing endpoint (or, for L4 routes, the matched one)
    /// opted in to request-body credential rewriting.
    pub(crate) fn body_rewrite(&self, decision: &EgressDecision) -> bool {
        let endpoint = match self {
            Self::Allow { endpoint } | Self::Audit { endpoint, .. } => Some(*endpoint),
            _ => decision.permit().map(|p| p.endpoint),
        };
        endpoint.is_some_and(|id| {
            decision
                .snapshot
                .endpoint(id)
                .request_body_credential_rewrite
        })
    }

    /// The word used in events (`allow`, `audit`, `deny`).
    pub(crate) fn word(&self) -> &'static str {
        match self {
            Self::Pass | Self::Allow { .. } => "allow",
            Self::Audit { .. } => "audit",
            _ => "deny",
        }
    }
}

fn wants_h2c(req: &RequestHead) -> bool {
    req.headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("upgrade")
            && v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"h2c"))
    })
}

/// Evaluate one request under the decision's pinned snapshot.
pub(crate) fn evaluate(
    decision: &EgressDecision,
    req: &RequestHead,
    target: &CanonicalTarget<'_>,
) -> L7Outcome {
    let Some(permit) = decision.permit() else {
        return L7Outcome::Deny {
            endpoint: None,
            reason: decision.deny_reason(),
            rule: None,
        };
    };
    let snapshot = &decision.snapshot;
    if !has_l7_routes(snapshot, &permit.routes) {
        return L7Outcome::Pass;
    }
    if wants_h2c(req) {
        return L7Outcome::Unsupported {
            detail: "HTTP/2 cleartext upgrade (h2c) is not supported for L7-inspected endpoints",
        };
    }
    let query = match QueryParams::parse(target.query.unwrap_or_default()) {
        Ok(q) => q,
        Err(e) => {
            return L7Outcome::BadTarget {
                detail: e.to_string(),
            }
        }
    };
    let verdict = evaluate_rest(
        snapshot,
        &permit.routes,
        &RestRequest {
            method: &req.method,
            path: &target.path,
            query: &query,
        },
    );
    let Some(endpoint) = verdict.endpoint else {
        return L7Outcome::Deny {
            endpoint: None,
            reason: verdict.reason,
            rule: verdict.rule,
        };
    };
    let selected = snapshot.endpoint(endpoint);
    if selected.protocol != Protocol::Rest {
        return L7Outcome::Uninspectable {
            protocol: selected.protocol,
        };
    }
    if !selected.allow_encoded_slash && target.path.contains("%2F") {
        return L7Outcome::BadTarget {
            detail:
                "encoded slash (%2F) in path; set allow_encoded_slash on the endpoint to permit it"
                    .into(),
        };
    }
    match (verdict.allowed, selected.enforcement) {
        (true, _) => L7Outcome::Allow { endpoint },
        (false, Enforcement::Audit) => L7Outcome::Audit {
            endpoint,
            reason: verdict.reason,
        },
        (false, Enforcement::Enforce) => L7Outcome::Deny {
            endpoint: Some(endpoint),
            reason: verdict.reason,
            rule: verdict.rule,
        },
    }
}

/// The rich L7 403 (facts §4.9 shape; `protocol` is the endpoint's own).
pub(crate) fn deny_response(
    decision: &EgressDecision,
    req: &RequestHead,
    path: &str,
    outcome: &L7Outcome,
) -> Vec<u8> {
    let target = &decision.intent.target;
    let path = redact_path(path);
    let (detail, protocol, endpoint, rule) = match outcome {
        L7Outcome::Deny { reason, endpoint, rule } => (reason.clone(), "rest", *endpoint, rule.clone()),
        L7Outcome::Uninspectable { protocol } => (
            format!("request-level policy for protocol {} cannot be enforced by this build; refusing uninspected traffic", protocol.as_str()),
            protocol.as_str(),
            None,
            None,
        ),
        _ => (String::new(), "rest", None, None),
    };
    let protocol = endpoint
        .map(|id| decision.snapshot.endpoint(id).protocol.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or(protocol);
    let binary = decision.intent.identity.process().map(|p| p.exe.clone());
    let host = target.host.to_string();
    let mut body = serde_json::json!({
        "error": if matches!(outcome, L7Outcome::Uninspectable { .. }) { "l7_inspection_unavailable" } else { "policy_denied" },
        "policy": decision.policy_key(),
        "rule": rule.unwrap_or_else(|| format!("{} {path}", req.method)),
        "detail": detail,
        "layer": "l7",
        "protocol": protocol,
        "method": req.method,
        "path": path,
        "host": host,
        "port": target.port,
        "rule_missing": {
            "type": format!("{protocol}_allow"),
            "layer": "l7",
            "method": req.method,
            "path": path,
            "host": host,
            "port": target.port,
        },
        "next_steps": [],
    });
    if let Some(b) = binary {
        body["binary"] = b.clone().into();
        body["rule_missing"]["binary"] = b.into();
    }
    let body = body.to_string();
    let mut out = String::with_capacity(200 + body.len());
    let _ = write!(
        out,
        "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(p) = crate::adapter::response::policy_header_value(decision.policy_key()) {
        let _ = write!(out, "X-Sluice-Policy: {p}\r\n");
    }
    let _ = write!(out, "Connection: close\r\n\r\n{body}");
    out.into_bytes()
}
