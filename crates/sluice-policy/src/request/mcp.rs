//! MCP Streamable-HTTP request policy (`protocol: mcp`).
//!
//! Per HTTP request:
//!
//! * `POST` carries a JSON-RPC body (one frame or a batch, parsed with
//!   [`jsonrpc::parse`] using the endpoint's `mcp_max_body_bytes`). Every
//!   request/notification must be allowed; one denied call denies the whole
//!   body. Response frames (answers to server-initiated requests such as
//!   `elicitation/create`) are permitted.
//! * `GET` with `Accept: text/event-stream` and no body opens the receive
//!   stream: allowed once the endpoint matched.
//! * `DELETE` without a body terminates the session: allowed.
//!
//! A call is matched against rules as follows (facts §1.5, §1.6):
//!
//! * rule `method`: exact name, or a `.`-delimited glob in the `tools/`
//!   family (`tools/*`); a rule without `method` (only with `tool`) means
//!   `tools/call`;
//! * rule `tool`: glob (`.` delimiter) or `{any: [...]}` against the
//!   `tools/call` `params.name`;
//! * rule `arguments` (sluice extension): JSON pointer → matcher against
//!   string values in `tools/call` `params.arguments`. Allow: every listed
//!   argument present, a string, and matching. Deny: the rule applies when
//!   every listed argument is present, a string, and matching.
//!
//! With `allow_all_known_mcp_methods`, every method of the MCP specification
//! ([`is_known_method`]) is allowed (deny rules still apply); any other method
//! needs a rule that names it. With `strict_tool_names` (the default) a
//! `tools/call` name must match `^[A-Za-z0-9_.-]{1,128}$`, else the body is
//! hard-denied, as is a `tools/call` without a string `params.name`.

use serde_json::Value;

use crate::model::{Endpoint, Glob, L7Rule, QueryMatcher};

use super::jsonrpc::{self, push_unique, shown, summary, Batch, Frame, MAX_SHOWN_NAME};
use super::verdict::ProtocolVerdict;

/// Methods of the MCP specification (besides every `notifications/...`).
const KNOWN_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "sampling/createMessage",
    "elicitation/create",
    "roots/list",
];

/// Whether `method` is defined by the MCP specification: one of
/// `initialize`, `ping`, `tools/list`, `tools/call`, `resources/list`,
/// `resources/templates/list`, `resources/read`, `resources/subscribe`,
/// `resources/unsubscribe`, `prompts/list`, `prompts/get`,
/// `completion/complete`, `logging/setLevel`, `sampling/createMessage`,
/// `elicitation/create`, `roots/list`, or any `notifications/...`.
#[must_use]
pub fn is_known_method(method: &str) -> bool {
    KNOWN_METHODS.contains(&method)
        || method
            .strip_prefix("notifications/")
            .is_some_and(|rest| !rest.is_empty())
}

/// `^[A-Za-z0-9_.-]{1,128}$`.
#[must_use]
pub fn is_strict_tool_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn accepts_event_stream(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|part| {
            part.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
        })
    })
}

/// A rule method pattern against a call method: exact, or a `.`-delimited
/// glob (validation only admits globs in the `tools/` family).
fn method_matches(pattern: &str, method: &str) -> bool {
    if pattern.contains(['*', '?']) {
        Glob::new(pattern, b'.').matches(method)
    } else {
        pattern == method
    }
}

fn matcher_matches(m: &QueryMatcher, value: &str) -> bool {
    match m {
        QueryMatcher::One(g) => g.matches(value),
        QueryMatcher::Any(gs) => gs.iter().any(|g| g.matches(value)),
    }
}

/// One call as rules see it.
struct Call<'a> {
    method: &'a str,
    /// `params.name` of a `tools/call`.
    tool: Option<&'a str>,
    /// `params.arguments` of a `tools/call`.
    arguments: Option<&'a Value>,
}

/// Method, tool and arguments of `rule` all match `call`. Argument matchers
/// need every listed pointer to resolve to a matching string, which is both
/// the allow semantics and the "deny applies" condition.
fn rule_matches(rule: &L7Rule, call: &Call<'_>) -> bool {
    let method_ok = match rule.method.as_deref() {
        Some(p) => method_matches(p, call.method),
        None => call.method == "tools/call",
    };
    if !method_ok {
        return false;
    }
    if let Some(t) = &rule.tool {
        if !call.tool.is_some_and(|name| matcher_matches(t, name)) {
            return false;
        }
    }
    rule.arguments.iter().all(|(pointer, m)| {
        call.arguments
            .and_then(|a| a.pointer(pointer))
            .and_then(Value::as_str)
            .is_some_and(|v| matcher_matches(m, v))
    })
}

fn describe_matcher(s: &mut String, m: &QueryMatcher) {
    match m {
        QueryMatcher::One(g) => s.push_str(&g.pattern),
        QueryMatcher::Any(gs) => {
            s.push_str("any(");
            for (i, g) in gs.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                s.push_str(&g.pattern);
            }
            s.push(')');
        }
    }
}

/// A rule as text, e.g. `deny tools/call tool=exec* arguments /path=/etc/**`.
fn describe(rule: &L7Rule, deny: bool) -> String {
    let mut s = String::from(if deny { "deny " } else { "allow " });
    s.push_str(rule.method.as_deref().unwrap_or("tools/call"));
    if let Some(t) = &rule.tool {
        s.push_str(" tool=");
        describe_matcher(&mut s, t);
    }
    for (i, (p, m)) in rule.arguments.iter().enumerate() {
        s.push_str(if i == 0 { " arguments " } else { ", " });
        s.push_str(p);
        s.push('=');
        describe_matcher(&mut s, m);
    }
    s
}

fn subject(call: &Call<'_>) -> String {
    match call.tool {
        Some(t) => format!("MCP tool {}", shown(t, MAX_SHOWN_NAME)),
        None => format!("MCP method {}", shown(call.method, MAX_SHOWN_NAME)),
    }
}

/// Evaluates one MCP Streamable-HTTP request against `endpoint` (see the
/// module docs). `http_method` is compared case-insensitively; `accept` is
/// the `Accept` header; `batch` is the parsed body (`None` when the request
/// has no body). A body that failed [`jsonrpc::parse`] must be denied with
/// [`jsonrpc::rejected`] instead.
///
/// Reasons: `MCP tool <t> blocked by deny rule`, `MCP method <m> blocked by
/// deny rule`, `MCP tool <t> not permitted by policy`, `MCP method <m> not
/// permitted by policy`; hard: `MCP tool name <t> is not allowed by
/// strict_tool_names`, `MCP tools/call requires a string params.name`,
/// `MCP POST requires a JSON-RPC body`, `MCP GET/DELETE requests must not
/// carry a body`; policy: `MCP GET without Accept: text/event-stream is not
/// permitted`, `MCP <METHOD> requests are not permitted`. Summary:
/// `methods=tools/call tools=search_web`, `receive-stream`,
/// `session-delete`.
#[must_use]
pub fn evaluate(
    endpoint: &Endpoint,
    http_method: &str,
    accept: Option<&str>,
    batch: Option<&Batch>,
) -> ProtocolVerdict {
    if http_method.eq_ignore_ascii_case("GET") || http_method.eq_ignore_ascii_case("DELETE") {
        let get = http_method.eq_ignore_ascii_case("GET");
        if batch.is_some() {
            return ProtocolVerdict::hard_deny(
                format!(
                    "MCP {} requests must not carry a body",
                    if get { "GET" } else { "DELETE" }
                ),
                "invalid".to_owned(),
            );
        }
        if !get {
            return ProtocolVerdict::allow("session-delete".to_owned());
        }
        if accepts_event_stream(accept) {
            return ProtocolVerdict::allow("receive-stream".to_owned());
        }
        return ProtocolVerdict::deny(
            "MCP GET without Accept: text/event-stream is not permitted".to_owned(),
            None,
            "get".to_owned(),
        );
    }
    if !http_method.eq_ignore_ascii_case("POST") {
        return ProtocolVerdict::deny(
            format!(
                "MCP {} requests are not permitted",
                shown(http_method, super::MAX_METHOD_LEN)
            ),
            None,
            String::new(),
        );
    }
    let Some(batch) = batch else {
        return ProtocolVerdict::hard_deny(
            "MCP POST requires a JSON-RPC body".to_owned(),
            "invalid".to_owned(),
        );
    };
    evaluate_batch(endpoint, batch)
}

fn evaluate_batch(endpoint: &Endpoint, batch: &Batch) -> ProtocolVerdict {
    let mut methods = Vec::new();
    let mut tools = Vec::new();
    let mut responses = 0;
    let mut calls = Vec::with_capacity(batch.frames.len());
    // Shape checks first (hard), collecting the summary as we go.
    let mut hard: Option<String> = None;
    for f in &batch.frames {
        let (Frame::Request { method, params, .. } | Frame::Notification { method, params }) = f
        else {
            responses += 1;
            continue;
        };
        push_unique(&mut methods, method);
        let mut call = Call {
            method,
            tool: None,
            arguments: None,
        };
        if method == "tools/call" {
            match params.as_ref().and_then(|p| p.get("name")) {
                Some(Value::String(name)) => {
                    push_unique(&mut tools, name);
                    if endpoint.mcp_strict_tool_names && !is_strict_tool_name(name) {
                        hard.get_or_insert_with(|| {
                            format!(
                                "MCP tool name {} is not allowed by strict_tool_names",
                                shown(name, MAX_SHOWN_NAME)
                            )
                        });
                    }
                    call.tool = Some(name);
                }
                _ => {
                    hard.get_or_insert_with(|| {
                        "MCP tools/call requires a string params.name".to_owned()
                    });
                }
            }
            call.arguments = params.as_ref().and_then(|p| p.get("arguments"));
        }
        calls.push(call);
    }
    let summary = summary(&[("methods", &methods), ("tools", &tools)], responses);
    if let Some(reason) = hard {
        return ProtocolVerdict::hard_deny(reason, summary);
    }
    for call in &calls {
        if let Some(rule) = endpoint.deny_rules.iter().find(|r| rule_matches(r, call)) {
            return ProtocolVerdict::deny(
                format!("{} blocked by deny rule", subject(call)),
                Some(describe(rule, true)),
                summary,
            );
        }
    }
    for call in &calls {
        let allowed = (endpoint.mcp_allow_all_known_mcp_methods && is_known_method(call.method))
            || endpoint.rules.iter().any(|r| rule_matches(r, call));
        if !allowed {
            return ProtocolVerdict::deny(
                format!("{} not permitted by policy", subject(call)),
                None,
                summary,
            );
        }
    }
    ProtocolVerdict::allow(summary)
}

/// Convenience for callers holding the raw body: parses it with the
/// endpoint's `mcp_max_body_bytes` (an empty body counts as no body) and
/// evaluates; a body that does not parse is a hard denial.
#[must_use]
pub fn evaluate_body(
    endpoint: &Endpoint,
    http_method: &str,
    accept: Option<&str>,
    body: &[u8],
) -> ProtocolVerdict {
    if body.is_empty() {
        return evaluate(endpoint, http_method, accept, None);
    }
    match jsonrpc::parse(body, endpoint.mcp_max_body_bytes) {
        Ok(batch) => evaluate(endpoint, http_method, accept, Some(&batch)),
        Err(e) => jsonrpc::rejected(&e),
    }
}
