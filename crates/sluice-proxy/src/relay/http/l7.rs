//! Per-request policy shared by every HTTP path (forward proxy, plaintext
//! tunnel, terminated TLS tunnel): canonical target, h2c refusal, and the
//! generation-pinned REST evaluation of the decision's routes.

use sluice_policy::request::{
    canonicalize_path, evaluate_rest, graphql, has_l7_routes, jsonrpc, mcp, ProtocolVerdict,
    QueryParams, RestRequest,
};
use sluice_policy::{EndpointId, Enforcement, PolicySnapshot, Protocol};
use sluice_telemetry::redact_path;

use super::request::RequestHead;
use crate::egress::Allowed;
use crate::refusal::Refusal;

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
    decision: &Allowed,
    path_and_query: &'a str,
) -> Result<CanonicalTarget<'a>, String> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let any_encoded_slash = decision
        .permit()
        .routes
        .iter()
        .any(|id| decision.snapshot.endpoint(*id).allow_encoded_slash);
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
    /// The body must be read and evaluated (GraphQL, JSON-RPC, MCP POST).
    Inspect {
        endpoint: EndpointId,
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
    /// The endpoint whose options govern this request (credential body
    /// rewrite, `credential_signing`): the matched L7 endpoint, else the
    /// connection's.
    pub(crate) fn governing_endpoint(&self, decision: &Allowed) -> EndpointId {
        match self {
            Self::Allow { endpoint } | Self::Audit { endpoint, .. } => *endpoint,
            _ => decision.permit().endpoint,
        }
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
    decision: &Allowed,
    req: &RequestHead,
    target: &CanonicalTarget<'_>,
) -> L7Outcome {
    let permit = decision.permit();
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
    if !selected.allow_encoded_slash && target.path.contains("%2F") {
        return L7Outcome::BadTarget {
            detail:
                "encoded slash (%2F) in path; set allow_encoded_slash on the endpoint to permit it"
                    .into(),
        };
    }
    let soften = |allowed: bool, hard: bool, reason: String, rule: Option<String>| match (
        allowed,
        hard,
        selected.enforcement,
    ) {
        (true, _, _) => L7Outcome::Allow { endpoint },
        (false, false, Enforcement::Audit) => L7Outcome::Audit { endpoint, reason },
        _ => L7Outcome::Deny {
            endpoint: Some(endpoint),
            reason,
            rule,
        },
    };
    match selected.protocol {
        Protocol::Rest | Protocol::Grpc => {
            soften(verdict.allowed, false, verdict.reason, verdict.rule)
        }
        Protocol::Websocket => {
            if !is_websocket_upgrade(req) {
                return L7Outcome::Deny {
                    endpoint: Some(endpoint),
                    reason: "websocket endpoint requires a valid WebSocket upgrade request".into(),
                    rule: None,
                };
            }
            soften(verdict.allowed, false, verdict.reason, verdict.rule)
        }
        Protocol::Graphql if req.method.eq_ignore_ascii_case("GET") => {
            let v = graphql::items_from_http(
                &req.method,
                content_type(req).as_deref(),
                target.query,
                b"",
            )
            .map_or_else(
                |e| {
                    ProtocolVerdict::hard_deny(
                        format!("GraphQL request rejected: {e}"),
                        String::new(),
                    )
                },
                |items| graphql::evaluate(selected, &items),
            );
            soften(v.allowed, v.hard, join_reason(&v), v.rule)
        }
        Protocol::Mcp if !req.method.eq_ignore_ascii_case("POST") => {
            let accept = req
                .header("accept")
                .and_then(|v| std::str::from_utf8(v).ok());
            let v = mcp::evaluate(selected, &req.method, accept, None);
            soften(v.allowed, v.hard, join_reason(&v), v.rule)
        }
        Protocol::JsonRpc if !req.method.eq_ignore_ascii_case("POST") => L7Outcome::Deny {
            endpoint: Some(endpoint),
            reason: format!("JSON-RPC endpoints accept POST only, not {}", req.method),
            rule: None,
        },
        Protocol::Graphql | Protocol::JsonRpc | Protocol::Mcp => L7Outcome::Inspect { endpoint },
        other => L7Outcome::Uninspectable { protocol: other },
    }
}

/// A deny or audit reason with the classification appended, for events.
fn join_reason(v: &ProtocolVerdict) -> String {
    match (v.reason.is_empty(), v.summary.is_empty()) {
        (_, true) => v.reason.clone(),
        (true, false) => format!("[{}]", v.summary),
        (false, false) => format!("{} [{}]", v.reason, v.summary),
    }
}

fn content_type(req: &RequestHead) -> Option<String> {
    req.header("content-type")
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_owned)
}

/// `GET` with `Connection: upgrade` and `Upgrade: websocket`.
pub(crate) fn is_websocket_upgrade(req: &RequestHead) -> bool {
    let has_token = |name: &str, token: &[u8]| {
        req.headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case(name)
                && v.split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
        })
    };
    req.method == "GET" && has_token("connection", b"upgrade") && has_token("upgrade", b"websocket")
}

/// Evaluate a buffered body for a body-inspecting protocol. Returns the
/// verdict already softened by the endpoint's enforcement (`Allow`, `Audit`
/// or `Deny`).
pub(crate) fn evaluate_body(
    snapshot: &PolicySnapshot,
    endpoint: EndpointId,
    method: &str,
    content_type: Option<&str>,
    accept: Option<&str>,
    raw_query: Option<&str>,
    body: &[u8],
) -> (L7Outcome, String) {
    let selected = snapshot.endpoint(endpoint);
    let v = match selected.protocol {
        Protocol::Graphql => graphql::items_from_http(method, content_type, raw_query, body)
            .map_or_else(
                |e| {
                    ProtocolVerdict::hard_deny(
                        format!("GraphQL request rejected: {e}"),
                        String::new(),
                    )
                },
                |items| graphql::evaluate(selected, &items),
            ),
        Protocol::JsonRpc => match jsonrpc::parse(body, selected.json_rpc_max_body_bytes) {
            Ok(batch) => jsonrpc::evaluate(selected, &batch),
            Err(e) => jsonrpc::rejected(&e),
        },
        Protocol::Mcp => mcp::evaluate_body(selected, method, accept, body),
        _ => ProtocolVerdict::hard_deny("no evaluator for this protocol".into(), String::new()),
    };
    let summary = v.summary.clone();
    let outcome = match (v.allowed, v.hard, selected.enforcement) {
        (true, _, _) => L7Outcome::Allow { endpoint },
        (false, false, Enforcement::Audit) => L7Outcome::Audit {
            endpoint,
            reason: join_reason(&v),
        },
        _ => L7Outcome::Deny {
            endpoint: Some(endpoint),
            reason: v.reason.clone(),
            rule: v.rule.clone(),
        },
    };
    (outcome, summary)
}

/// The body plan for a body-inspecting endpoint: buffer up to the
/// endpoint's limit, refuse reserved credential markers, evaluate, and
/// record the decision (the transform emits the L7 event itself).
pub(crate) fn inspect_plan(
    audit: &crate::audit::Audit,
    decision: &Allowed,
    req: &RequestHead,
    path: &str,
    raw_query: Option<&str>,
    endpoint: EndpointId,
) -> super::BodyPlan {
    let snapshot = std::sync::Arc::clone(&decision.snapshot);
    let protocol = snapshot.endpoint(endpoint).protocol;
    let limit = inspect_limit(&snapshot, endpoint);
    let (audit, d) = (audit.clone(), decision.clone());
    let method = req.method.clone();
    let path = path.to_owned();
    let query = raw_query.map(str::to_owned);
    let ct = content_type(req);
    let accept = req
        .header("accept")
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_owned);
    super::BodyPlan::Buffer {
        limit,
        on_error: Some(uninspectable_body(
            protocol,
            &format!("body unreadable or larger than {limit} bytes"),
        )),
        transform: Box::new(move |body: &[u8]| {
            if snapshot.has_credentials() && sluice_policy::placeholder::contains_marker(body) {
                return Err(crate::refusal::json_error(
                    500,
                    "credential_injection_failed",
                    "credential placeholder in a request body that is not opted in to rewriting",
                    None,
                    None,
                ));
            }
            let (outcome, summary) = evaluate_body(
                &snapshot,
                endpoint,
                &method,
                ct.as_deref(),
                accept.as_deref(),
                query.as_deref(),
                body,
            );
            match &outcome {
                L7Outcome::Allow { .. } => {
                    audit.l7_request(&d, "allow", &method, &path, &format!("[{summary}]"));
                    Ok(None)
                }
                L7Outcome::Audit { reason, .. } => {
                    audit.l7_request(&d, "audit", &method, &path, reason);
                    Ok(None)
                }
                L7Outcome::Deny { reason, .. } => {
                    audit.l7_request(&d, "deny", &method, &path, &format!("{reason} [{summary}]"));
                    Err(deny_response(&d, &method, &path, &outcome))
                }
                _ => Err(deny_response(&d, &method, &path, &outcome)),
            }
        }),
    }
}

/// The body limit for a body-inspecting endpoint.
pub(crate) fn inspect_limit(snapshot: &PolicySnapshot, endpoint: EndpointId) -> usize {
    let e = snapshot.endpoint(endpoint);
    match e.protocol {
        Protocol::Graphql => e.graphql_max_body_bytes,
        Protocol::JsonRpc => e.json_rpc_max_body_bytes,
        _ => e.mcp_max_body_bytes,
    }
}

/// The `400` for a body that cannot be inspected (too large, unreadable).
pub(crate) fn uninspectable_body(protocol: Protocol, detail: &str) -> Refusal {
    let (code, what) = match protocol {
        Protocol::Graphql => ("invalid_graphql_request", "GraphQL"),
        Protocol::JsonRpc => ("invalid_jsonrpc_request", "JSON-RPC"),
        _ => ("invalid_mcp_request", "MCP"),
    };
    crate::refusal::json_error(
        400,
        code,
        &format!("{what} request rejected before policy evaluation: {detail}"),
        None,
        None,
    )
}

/// The rich L7 403 (facts §4.9 shape; `protocol` is the endpoint's own).
pub(crate) fn deny_response(
    decision: &Allowed,
    method: &str,
    path: &str,
    outcome: &L7Outcome,
) -> Refusal {
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
    let error = if matches!(outcome, L7Outcome::Uninspectable { .. }) {
        "l7_inspection_unavailable"
    } else {
        "policy_denied"
    };
    let shown = redact_path(&sluice_policy::placeholder::scrub(&path));
    let hint = decision.denial_hint(&format!("{method} {target}{shown}"), &detail);
    let mut rule_missing = serde_json::json!({
        "type": format!("{protocol}_allow"),
        "layer": "l7",
        "method": method,
        "path": path,
        "host": host,
        "port": target.port,
    });
    let mut refusal = Refusal::json(403, error, &detail)
        .field("policy", decision.policy_key())
        .field("rule", rule.unwrap_or_else(|| format!("{method} {path}")))
        .field("layer", "l7")
        .field("protocol", protocol)
        .field("method", method)
        .field("path", path.as_str())
        .field("host", host.as_str())
        .field("port", target.port)
        .field("next_steps", policy_local_next_steps())
        .field("agent_guidance", AGENT_GUIDANCE)
        .hint(&hint)
        .policy(Some(decision.policy_key()));
    if let Some(b) = binary {
        rule_missing["binary"] = b.clone().into();
        refusal = refusal.field("binary", b);
    }
    refusal.field("rule_missing", rule_missing)
}

/// What a denied agent can do next: read its policy and recent denials, and
/// propose a rule (`policy.local`, answered by sluice itself).
const AGENT_GUIDANCE: &str = "This request is not allowed by the sandbox policy. Read the policy (GET http://policy.local/v1/policy/current) and recent denials (GET http://policy.local/v1/denials?last=5); if the access is needed, POST a proposal with addRule operations to http://policy.local/v1/proposals and wait for an operator's decision (GET http://policy.local/v1/proposals/{id}/wait?timeout=60).";

fn policy_local_next_steps() -> serde_json::Value {
    serde_json::json!([
        {"action": "inspect_policy", "method": "GET", "url": "http://policy.local/v1/policy/current"},
        {"action": "inspect_recent_denials", "method": "GET", "url": "http://policy.local/v1/denials?last=5"},
        {"action": "submit_proposal", "method": "POST", "url": "http://policy.local/v1/proposals", "body_type": "PolicyMergeOperation"},
        {"action": "wait_for_decision", "method": "GET", "url": "http://policy.local/v1/proposals/{id}/wait?timeout=60"},
    ])
}

/// The response for an outcome that must not be forwarded, with its event;
/// `None` when the request goes on.
pub(crate) fn refusal(
    audit: &crate::audit::Audit,
    d: &Allowed,
    method: &str,
    path: &str,
    outcome: &L7Outcome,
) -> Option<Refusal> {
    let policy = Some(d.policy_key());
    Some(match outcome {
        L7Outcome::Pass
        | L7Outcome::Allow { .. }
        | L7Outcome::Audit { .. }
        | L7Outcome::Inspect { .. } => return None,
        L7Outcome::BadTarget { detail } => {
            audit.l7_request(d, "deny", method, path, detail);
            crate::refusal::json_error(400, "invalid_request_target", detail, None, policy)
        }
        L7Outcome::Unsupported { detail } => {
            audit.l7_request(d, "deny", method, path, detail);
            crate::refusal::json_error(403, "unsupported_l7_protocol", detail, None, policy)
        }
        L7Outcome::Deny { reason, .. } => {
            audit.l7_request(d, "deny", method, path, reason);
            deny_response(d, method, path, outcome)
        }
        L7Outcome::Uninspectable { protocol } => {
            audit.l7_unavailable(d, protocol.as_str());
            deny_response(d, method, path, outcome)
        }
    })
}

/// The rest of an admitted request, shared by both adapters: credentials
/// (token grant, head slots, body plan), body inspection for GraphQL /
/// JSON-RPC / MCP, and what a `101` may switch to.
pub(crate) async fn admitted(
    shared: &crate::relay::RelayContext,
    decision: &Allowed,
    req: &RequestHead,
    target: &CanonicalTarget<'_>,
    outcome: &L7Outcome,
) -> Result<(crate::relay::credentials::Outbound, super::Upgrade), Refusal> {
    let endpoint = decision
        .snapshot
        .endpoint(outcome.governing_endpoint(decision));
    let mut outbound = crate::relay::credentials::prepare(
        shared,
        decision,
        req,
        &target.path,
        target.query,
        endpoint,
    )
    .await?;
    if let L7Outcome::Inspect { endpoint } = outcome {
        outbound.body = inspect_plan(
            &shared.audit,
            decision,
            req,
            &target.path,
            target.query,
            *endpoint,
        );
    }
    let upgrade = if is_websocket_upgrade(req) {
        let endpoint = match outcome {
            L7Outcome::Allow { endpoint } | L7Outcome::Audit { endpoint, .. } => Some(*endpoint),
            _ => None,
        };
        // Middleware stages preflight before the upstream is contacted.
        let subprotocols = req
            .header("sec-websocket-protocol")
            .map(|v| {
                String::from_utf8_lossy(v)
                    .split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let middleware = crate::relay::middleware::ws::preflight(
            shared,
            decision,
            &target.path,
            subprotocols,
            crate::relay::middleware::request_context(decision),
        )
        .await?;
        super::Upgrade::WebSocket(Box::new(
            super::WsTextPolicy::new(
                decision,
                endpoint,
                req,
                &target.path,
                target.query,
                &shared.audit,
            )
            .with_middleware(middleware),
        ))
    } else if req.header("upgrade").is_some() && decision.intent.surface.is_tunnel() {
        // Other upgrades (e.g. h2c on L4 endpoints; inspected ones refused it above) are copied raw.
        super::Upgrade::Raw
    } else {
        super::Upgrade::No
    };
    Ok((outbound, upgrade))
}
