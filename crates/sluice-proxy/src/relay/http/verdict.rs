//! Request-level policy as a pure function: what the request loop would decide
//! about one HTTP request under an allowed decision — REST rules from the
//! method, path and query; for GraphQL, JSON-RPC and MCP endpoints the body
//! too — computed by the same code the loop runs, without I/O or events.
//! `sluice explain --method --path [--body]` calls it.

use sluice_policy::EndpointId;

use super::l7::{self, canonical_target, L7Outcome};
use super::request::RequestHead;
use crate::egress::Allowed;

/// The request-level verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestVerdict {
    /// `allow`, `deny`, `audit` (would be denied; the endpoint only records),
    /// `pass` (no request-level rules), or `needs_body` (the endpoint's rules
    /// read the body and none was given).
    pub verdict: &'static str,
    /// Why, for anything but an allow.
    pub reason: String,
    /// The deny rule that decided, when one did.
    pub rule: Option<String>,
    /// The endpoint whose rules governed the request.
    pub endpoint: Option<EndpointId>,
    /// The canonical path the rules saw.
    pub path: String,
    /// What the body evaluation recognised (operations, methods, tools).
    pub summary: String,
}

/// Evaluates `head` (a complete HTTP/1 request head) and, where the endpoint
/// inspects bodies, `body`, under `decision`.
///
/// # Errors
/// The head does not parse, or its target is not origin-form.
pub fn evaluate_request(
    decision: &Allowed,
    head: &[u8],
    body: Option<&[u8]>,
) -> Result<RequestVerdict, String> {
    let req = RequestHead::parse(head).map_err(|e| e.to_string())?;
    if !req.target.starts_with('/') {
        return Err("the request-target must be origin-form (/path?query)".into());
    }
    let canonical = canonical_target(decision, &req.target)?;
    let query = canonical.query;
    let path = canonical.path.clone();
    let outcome = l7::evaluate(decision, &req, &canonical);
    let (outcome, summary) = match (outcome, body) {
        (L7Outcome::Inspect { endpoint }, Some(body)) => l7::evaluate_body(
            &decision.snapshot,
            endpoint,
            &req.method,
            header(&req, "content-type"),
            header(&req, "accept"),
            query,
            body,
        ),
        (other, _) => (other, String::new()),
    };
    let v = |verdict, reason: String, rule, endpoint| RequestVerdict {
        verdict,
        reason,
        rule,
        endpoint,
        path: path.clone(),
        summary: summary.clone(),
    };
    Ok(match outcome {
        L7Outcome::Pass => v("pass", String::new(), None, None),
        L7Outcome::Allow { endpoint } => v("allow", String::new(), None, Some(endpoint)),
        L7Outcome::Audit { endpoint, reason } => v("audit", reason, None, Some(endpoint)),
        L7Outcome::Deny {
            endpoint,
            reason,
            rule,
        } => v("deny", reason, rule, endpoint),
        L7Outcome::Unsupported { detail } => v("deny", detail.to_owned(), None, None),
        L7Outcome::BadTarget { detail } => v("deny", detail, None, None),
        L7Outcome::Inspect { endpoint } => v(
            "needs_body",
            "the endpoint's rules read the request body".into(),
            None,
            Some(endpoint),
        ),
        L7Outcome::Uninspectable { protocol } => v(
            "deny",
            format!("protocol {} cannot be enforced", protocol.as_str()),
            None,
            None,
        ),
    })
}

fn header<'a>(req: &'a RequestHead, name: &str) -> Option<&'a str> {
    req.header(name).and_then(|v| std::str::from_utf8(v).ok())
}
