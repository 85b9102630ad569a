//! JSON-RPC 2.0 request bodies (`protocol: json-rpc`, and the transport of
//! `protocol: mcp`): bounded parsing into frames, and method rule evaluation.
//!
//! Rules (facts §1.5): an allow or deny rule names an exact method, or `*`
//! (any method). Every call of a batch (requests and notifications) must be
//! allowed and none may match a deny rule: one denied call denies the whole
//! batch. Response frames (`result`/`error`) sent by the client are a hard
//! denial, as is any body [`parse`] rejects.
//!
//! Bodies are read with the shared strict reader ([`super::json`]): a key
//! repeated in any object (`{"method":"a","method":"b"}`, two `name`s in
//! `params`) is refused, because upstream parsers disagree on which one
//! counts (first-wins vs last-wins).

use std::fmt::Write as _;

use serde_json::Value;
use thiserror::Error;

use crate::model::{Endpoint, L7Rule};

use super::json::{self, JsonError};
use super::verdict::ProtocolVerdict;

/// Most frames accepted in one batch.
pub const MAX_BATCH_FRAMES: usize = 256;
/// Longest method or tool name shown in a reason or summary, in bytes.
pub(crate) const MAX_SHOWN_NAME: usize = 128;
/// Longest [`ProtocolVerdict::summary`], in bytes.
pub(crate) const MAX_SUMMARY: usize = 512;

/// One JSON-RPC 2.0 message of a request body.
#[derive(Clone, Debug)]
pub enum Frame {
    /// A call with an `id` (string, number or null): expects a response.
    Request {
        id: Value,
        method: String,
        params: Option<Value>,
    },
    /// A call without `id`.
    Notification {
        method: String,
        params: Option<Value>,
    },
    /// A `result` or `error` message: a response to a server-initiated request.
    Response { id: Value },
}

impl Frame {
    /// The method of a request or notification; `None` for a response.
    #[must_use]
    pub fn method(&self) -> Option<&str> {
        match self {
            Self::Request { method, .. } | Self::Notification { method, .. } => Some(method),
            Self::Response { .. } => None,
        }
    }

    /// The `params` of a request or notification, if present.
    #[must_use]
    pub fn params(&self) -> Option<&Value> {
        match self {
            Self::Request { params, .. } | Self::Notification { params, .. } => params.as_ref(),
            Self::Response { .. } => None,
        }
    }
}

/// A parsed request body: one frame, or a batch (a JSON array).
#[derive(Clone, Debug)]
pub struct Batch {
    /// Never empty; at most [`MAX_BATCH_FRAMES`].
    pub frames: Vec<Frame>,
    /// Whether the body was a JSON array (even with one element).
    pub is_batch: bool,
}

/// Why [`parse`] rejected a body. Callers must deny (hard, even in audit):
/// see [`rejected`].
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum JsonRpcError {
    /// The body is longer than the endpoint's `max_body_bytes`.
    #[error("body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// Not JSON, a number outside what JSON-RPC values can hold (`1e400`),
    /// or nested deeper than 128 levels.
    #[error("invalid JSON")]
    InvalidJson,
    /// A key occurs twice in one object, anywhere in the body.
    #[error("duplicate key in a JSON object")]
    DuplicateKey,
    /// `[]`.
    #[error("empty batch")]
    EmptyBatch,
    /// More than [`MAX_BATCH_FRAMES`] frames.
    #[error("batch has more than 256 frames")]
    TooManyFrames,
    /// A frame is not a valid JSON-RPC 2.0 message; `index` is its position
    /// in a batch.
    #[error("{}{reason}", index.map(|i| format!("batch item {i} invalid: ")).unwrap_or_default())]
    InvalidFrame {
        index: Option<usize>,
        reason: &'static str,
    },
}

fn frame(v: &Value) -> Result<Frame, &'static str> {
    let Value::Object(o) = v else {
        return Err("frame is not a JSON object");
    };
    match o.get("jsonrpc") {
        Some(Value::String(s)) if s == "2.0" => {}
        Some(Value::String(_)) => return Err("unsupported JSON-RPC version (expected \"2.0\")"),
        _ => return Err("missing or non-string 'jsonrpc' field"),
    }
    let id = o.get("id");
    if id.is_some_and(|id| !(id.is_string() || id.is_number() || id.is_null())) {
        return Err("'id' must be a string, number or null");
    }
    let has_result = o.contains_key("result");
    let has_error = o.contains_key("error");
    if let Some(m) = o.get("method") {
        if has_result || has_error {
            return Err("message has both 'method' and 'result'/'error'");
        }
        let Value::String(method) = m else {
            return Err("non-string 'method' field");
        };
        let params = o.get("params");
        if params.is_some_and(|p| !(p.is_object() || p.is_array())) {
            return Err("'params' must be an object or an array");
        }
        let (method, params) = (method.clone(), params.cloned());
        return Ok(match id {
            Some(id) => Frame::Request {
                id: id.clone(),
                method,
                params,
            },
            None => Frame::Notification { method, params },
        });
    }
    match (has_result, has_error) {
        (false, false) => Err("missing or non-string 'method' field"),
        (true, true) => Err("response has both 'result' and 'error'"),
        _ => {
            if o.get("error").is_some_and(|e| !e.is_object()) {
                return Err("response 'error' must be an object");
            }
            let id = id.ok_or("response has no 'id'")?;
            Ok(Frame::Response { id: id.clone() })
        }
    }
}

/// Parses a JSON-RPC 2.0 request body (one message or a batch).
///
/// # Errors
/// The body is longer than `max_bytes`, is not JSON (or nests deeper than
/// 128 levels), repeats a key in any object, is an empty batch or one of
/// more than [`MAX_BATCH_FRAMES`]
/// frames, or any frame is not a JSON-RPC 2.0 request, notification or
/// response (`jsonrpc` must be `"2.0"`; `method` a string; `params` an
/// object or array; `id` a string, number or null).
pub fn parse(body: &[u8], max_bytes: usize) -> Result<Batch, JsonRpcError> {
    if body.len() > max_bytes {
        return Err(JsonRpcError::TooLarge { limit: max_bytes });
    }
    let value: Value = match json::parse_unique(body) {
        Ok(v) => v.to_serde().ok_or(JsonRpcError::InvalidJson)?,
        Err(JsonError::DuplicateKey) => return Err(JsonRpcError::DuplicateKey),
        Err(_) => return Err(JsonRpcError::InvalidJson),
    };
    match &value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(JsonRpcError::EmptyBatch);
            }
            if items.len() > MAX_BATCH_FRAMES {
                return Err(JsonRpcError::TooManyFrames);
            }
            let frames = items
                .iter()
                .enumerate()
                .map(|(i, it)| {
                    frame(it).map_err(|reason| JsonRpcError::InvalidFrame {
                        index: Some(i),
                        reason,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Batch {
                frames,
                is_batch: true,
            })
        }
        v => {
            let f = frame(v).map_err(|reason| JsonRpcError::InvalidFrame {
                index: None,
                reason,
            })?;
            Ok(Batch {
                frames: vec![f],
                is_batch: false,
            })
        }
    }
}

/// The hard denial for a body [`parse`] rejected:
/// `JSON-RPC request rejected: <error>`.
#[must_use]
pub fn rejected(err: &JsonRpcError) -> ProtocolVerdict {
    ProtocolVerdict::hard_deny(
        format!("JSON-RPC request rejected: {err}"),
        "invalid".to_owned(),
    )
}

/// `s` cut to at most `max` bytes at a char boundary, control characters
/// replaced by `?`, so that names stay printable and bounded.
pub(crate) fn shown(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        if out.len() + c.len_utf8() > max {
            out.push_str("...");
            break;
        }
        out.push(if c.is_control() { '?' } else { c });
    }
    out
}

/// Appends `name` to a `,`-joined list unless already present.
pub(crate) fn push_unique(list: &mut Vec<String>, name: &str) {
    let name = shown(name, MAX_SHOWN_NAME);
    if !list.contains(&name) && list.len() < MAX_BATCH_FRAMES {
        list.push(name);
    }
}

/// `key=a,b` parts joined by spaces, bounded to [`MAX_SUMMARY`] bytes.
pub(crate) fn summary(parts: &[(&str, &[String])], responses: usize) -> String {
    let mut s = String::new();
    for (key, items) in parts {
        if items.is_empty() {
            continue;
        }
        if !s.is_empty() {
            s.push(' ');
        }
        let _ = write!(s, "{key}={}", items.join(","));
    }
    if responses > 0 {
        if !s.is_empty() {
            s.push(' ');
        }
        let _ = write!(s, "responses={responses}");
    }
    if s.len() > MAX_SUMMARY {
        s = shown(&s, MAX_SUMMARY);
    }
    s
}

fn rule_matches(rule: &L7Rule, method: &str) -> bool {
    rule.method
        .as_deref()
        .is_some_and(|m| m == "*" || m == method)
}

/// Evaluates a parsed body against a `json-rpc` endpoint's rules. Only
/// request and notification methods are matched (exact, case-sensitive; a
/// rule method `*` matches any). The body is allowed iff every call is
/// allowed by some rule and no call matches a deny rule. A response frame
/// anywhere in the body is a hard denial.
///
/// Reasons: `JSON-RPC response frames are not permitted from client to
/// server`, `JSON-RPC method <m> blocked by deny rule`, `JSON-RPC method <m>
/// not permitted by policy` (the first offending call; deny rules are checked
/// across all calls first). Summary: `methods=a,b` (deduplicated).
#[must_use]
pub fn evaluate(endpoint: &Endpoint, batch: &Batch) -> ProtocolVerdict {
    let mut methods = Vec::new();
    let mut responses = 0;
    for f in &batch.frames {
        match f.method() {
            Some(m) => push_unique(&mut methods, m),
            None => responses += 1,
        }
    }
    let summary = summary(&[("methods", &methods)], responses);
    if responses > 0 {
        return ProtocolVerdict::hard_deny(
            "JSON-RPC response frames are not permitted from client to server".to_owned(),
            summary,
        );
    }
    let calls = || batch.frames.iter().filter_map(Frame::method);
    for m in calls() {
        if let Some(rule) = endpoint.deny_rules.iter().find(|r| rule_matches(r, m)) {
            return ProtocolVerdict::deny(
                format!(
                    "JSON-RPC method {} blocked by deny rule",
                    shown(m, MAX_SHOWN_NAME)
                ),
                Some(format!("deny {}", rule.method.as_deref().unwrap_or("*"))),
                summary,
            );
        }
    }
    for m in calls() {
        if !endpoint.rules.iter().any(|r| rule_matches(r, m)) {
            return ProtocolVerdict::deny(
                format!(
                    "JSON-RPC method {} not permitted by policy",
                    shown(m, MAX_SHOWN_NAME)
                ),
                None,
                summary,
            );
        }
    }
    ProtocolVerdict::allow(summary)
}
