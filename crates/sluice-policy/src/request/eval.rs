//! REST request evaluation against the L7 routes of a connection decision.

use std::fmt::Write as _;

use crate::model::{Endpoint, EndpointId, L7Rule, QueryMatcher};
use crate::snapshot::PolicySnapshot;

use super::path::MAX_PATH_LEN;
use super::query::QueryParams;

/// Longest request method considered; longer methods match no rule.
pub const MAX_METHOD_LEN: usize = 32;

/// One HTTP request as request-level policy sees it.
#[derive(Clone, Copy, Debug)]
pub struct RestRequest<'a> {
    /// The request method as sent (compared case-insensitively).
    pub method: &'a str,
    /// The canonical path ([`super::canonicalize_path`]), without the query.
    pub path: &'a str,
    /// The parsed query ([`QueryParams::parse`]).
    pub query: &'a QueryParams,
}

/// Which rule decided a verdict: a cheap handle, rendered on demand by
/// [`RuleRef::describe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleRef {
    /// The endpoint carrying the rule.
    pub endpoint: EndpointId,
    /// `true` for an entry of `deny_rules`, `false` for an allow rule.
    pub deny: bool,
    /// Position in the endpoint's (preset-expanded) `rules` or `deny_rules`.
    pub index: usize,
}

impl RuleRef {
    /// The rule as text, e.g. `allow GET /repos/**` or
    /// `deny GET /repos/*/*/tarball/** query ref=any(refs/heads/main, main)`.
    /// `None` if the handle does not belong to `snapshot`.
    #[must_use]
    pub fn describe(&self, snapshot: &PolicySnapshot) -> Option<String> {
        let ep = snapshot.endpoints().get(self.endpoint.0 as usize)?;
        let rules = if self.deny { &ep.deny_rules } else { &ep.rules };
        let rule = rules.get(self.index)?;
        let mut s = String::from(if self.deny { "deny " } else { "allow " });
        s.push_str(rule.method.as_deref().unwrap_or("*"));
        s.push(' ');
        s.push_str(rule.path.as_ref().map_or("**", |g| &g.pattern));
        for (i, (name, m)) in rule.query.iter().enumerate() {
            s.push_str(if i == 0 { " query " } else { ", " });
            match m {
                QueryMatcher::One(g) => {
                    let _ = write!(s, "{name}={}", g.pattern);
                }
                QueryMatcher::Any(gs) => {
                    let _ = write!(s, "{name}=any(");
                    for (j, g) in gs.iter().enumerate() {
                        s.push_str(if j == 0 { "" } else { ", " });
                        s.push_str(&g.pattern);
                    }
                    s.push(')');
                }
            }
        }
        Some(s)
    }
}

/// The request-level verdict, before the caller applies `enforce`/`audit`
/// (read it from the [`L7Verdict::endpoint`]'s `enforcement`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L7Verdict {
    /// Whether policy permits the request.
    pub allowed: bool,
    /// The endpoint whose config governs this request: the highest endpoint
    /// `path` specificity among the path-matching L7 routes (an absent path
    /// counts as specificity 0); ties go to the smallest [`EndpointId`].
    /// `None` when no L7 route's path matched.
    pub endpoint: Option<EndpointId>,
    /// facts §2.4 wording: `<METHOD> <path> not permitted by policy`,
    /// `<METHOD> <path> blocked by deny rule`, `no L7 endpoint path matched
    /// request`; empty when allowed.
    pub reason: String,
    /// The deciding rule as text, **only for denials by a deny rule** (e.g.
    /// `deny * /repos/*/*/rulesets`). Always `None` when allowed, so the
    /// allow path does not allocate: render the allowing rule lazily with
    /// `decided_by.and_then(|r| r.describe(snapshot))`.
    pub rule: Option<String>,
    /// The deny rule that blocked (the first in route order), or the allow
    /// rule that allowed (the governing endpoint's first allowing rule if it
    /// has one, else the first in route order); `None` when nothing matched.
    pub decided_by: Option<RuleRef>,
}

impl L7Verdict {
    fn deny(endpoint: Option<EndpointId>, reason: String) -> Self {
        Self {
            allowed: false,
            endpoint,
            reason,
            rule: None,
            decided_by: None,
        }
    }
}

/// `s` cut to at most `max` bytes (at a char boundary), so that messages
/// stay bounded whatever the caller passes.
fn shown(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

fn method_matches(rule: &str, method: &str) -> bool {
    rule == "*"
        || rule.eq_ignore_ascii_case(method)
        || (rule.eq_ignore_ascii_case("GET") && method.eq_ignore_ascii_case("HEAD"))
}

fn matcher_matches(m: &QueryMatcher, value: &str) -> bool {
    match m {
        QueryMatcher::One(g) => g.matches(value),
        QueryMatcher::Any(gs) => gs.iter().any(|g| g.matches(value)),
    }
}

/// Method and path of an HTTP-shaped rule (`rest`, or the upgrade/text rules
/// of `websocket`). Rules of other shapes (GraphQL, JSON-RPC, MCP, SQL) have
/// no path and never match here.
fn method_path_match(rule: &L7Rule, req: &RestRequest<'_>) -> bool {
    match (&rule.method, &rule.path) {
        (Some(m), Some(p)) => method_matches(m, req.method) && p.matches(req.path),
        _ => false,
    }
}

/// Allow semantics: every configured key present and every value matching.
fn allow_matches(rule: &L7Rule, req: &RestRequest<'_>) -> bool {
    method_path_match(rule, req)
        && rule.query.iter().all(|(name, m)| {
            let mut values = req.query.values(name).peekable();
            values.peek().is_some() && values.all(|v| matcher_matches(m, v))
        })
}

/// Deny semantics: every configured key present with at least one matching
/// value; no query means the rule applies unconditionally.
fn deny_matches(rule: &L7Rule, req: &RestRequest<'_>) -> bool {
    method_path_match(rule, req)
        && rule
            .query
            .iter()
            .all(|(name, m)| req.query.values(name).any(|v| matcher_matches(m, v)))
}

fn l7_route(snapshot: &PolicySnapshot, id: EndpointId) -> Option<&Endpoint> {
    snapshot
        .endpoints()
        .get(id.0 as usize)
        .filter(|e| e.id == id && e.protocol.is_l7())
}

/// Evaluates a REST request against `routes`: the endpoint ids of the
/// connection's decision, already matched by host/port and binaries, in
/// precedence order. Ids not in `snapshot` are ignored.
///
/// Only routes with an L7 protocol ([`crate::Protocol::is_l7`]) take part.
/// Candidates are the L7 routes whose endpoint `path` glob matches
/// `req.path` (no `path` = every path). The request is allowed iff some
/// candidate's `rules` allow it **and** no candidate's `deny_rules` match
/// (deny wins, across policies). A rule matches when:
///
/// * method: case-insensitive; `*` matches any method; `GET` also matches `HEAD`;
/// * path: `/`-delimited glob (`*` does not cross `/`, `**` does);
/// * allow `query`: every configured key is present and **every** value of it
///   matches (one glob, or any of `{any: [...]}`);
/// * deny `query`: every configured key is present and **any** value of it
///   matches; a deny rule without `query` applies unconditionally.
///
/// Only HTTP-shaped rules (with `method` and `path`: `rest`, `websocket`)
/// can match; an endpoint of another protocol can still be the governing
/// [`L7Verdict::endpoint`], and the caller dispatches on its protocol.
/// A method longer than [`MAX_METHOD_LEN`] or empty, or a path that is
/// longer than 4096 bytes or does not start with `/`, matches no rule.
#[must_use]
pub fn evaluate_rest(
    snapshot: &PolicySnapshot,
    routes: &[EndpointId],
    req: &RestRequest<'_>,
) -> L7Verdict {
    let sane = !req.method.is_empty()
        && req.method.len() <= MAX_METHOD_LEN
        && req.path.starts_with('/')
        && req.path.len() <= MAX_PATH_LEN;
    let mut governing: Option<(usize, EndpointId)> = None;
    // The first allowing rule in route order, and the governing endpoint's own.
    let mut allow: Option<RuleRef> = None;
    let mut governing_allow: Option<RuleRef> = None;
    let mut deny: Option<RuleRef> = None;
    for ep in routes.iter().filter_map(|&id| l7_route(snapshot, id)) {
        if !ep.path.as_ref().is_none_or(|g| g.matches(req.path)) {
            continue;
        }
        let spec = ep.path.as_ref().map_or(0, |g| g.specificity());
        let better = governing.is_none_or(|(s, id)| spec > s || (spec == s && ep.id < id));
        if better {
            governing = Some((spec, ep.id));
            governing_allow = None;
        }
        if !sane || deny.is_some() {
            continue;
        }
        if let Some(index) = ep.deny_rules.iter().position(|r| deny_matches(r, req)) {
            deny = Some(RuleRef {
                endpoint: ep.id,
                deny: true,
                index,
            });
            continue;
        }
        if allow.is_none() || better {
            let found = ep.rules.iter().position(|r| allow_matches(r, req));
            let found = found.map(|index| RuleRef {
                endpoint: ep.id,
                deny: false,
                index,
            });
            allow = allow.or(found);
            if better {
                governing_allow = found;
            }
        }
    }
    let Some((_, endpoint)) = governing else {
        return L7Verdict::deny(None, "no L7 endpoint path matched request".to_owned());
    };
    if let Some(d) = deny {
        return L7Verdict {
            allowed: false,
            endpoint: Some(endpoint),
            reason: format!(
                "{} {} blocked by deny rule",
                shown(req.method, MAX_METHOD_LEN),
                shown(req.path, MAX_PATH_LEN)
            ),
            rule: d.describe(snapshot),
            decided_by: Some(d),
        };
    }
    match governing_allow.or(allow) {
        Some(a) => L7Verdict {
            allowed: true,
            endpoint: Some(endpoint),
            reason: String::new(),
            rule: None,
            decided_by: Some(a),
        },
        None => L7Verdict::deny(
            Some(endpoint),
            format!(
                "{} {} not permitted by policy",
                shown(req.method, MAX_METHOD_LEN),
                shown(req.path, MAX_PATH_LEN)
            ),
        ),
    }
}

/// Whether any of `routes` carries request-level policy (an L7 protocol).
/// Ids not in `snapshot` are ignored.
#[must_use]
pub fn has_l7_routes(snapshot: &PolicySnapshot, routes: &[EndpointId]) -> bool {
    routes.iter().any(|&id| l7_route(snapshot, id).is_some())
}
