//! Evaluation of classified GraphQL operations against one endpoint's rules.

use std::fmt::Write as _;

use crate::model::{Endpoint, L7Rule, PersistedQueries, PersistedQuery};
use crate::request::ProtocolVerdict;

use super::{classify, ClassifiedOperation, GraphqlError, GraphqlItem, OperationType};
use super::{MAX_BATCH, MAX_SUMMARY_LEN};

/// An item resolved for evaluation.
enum Resolved {
    Op(ClassifiedOperation),
    /// Hash-only and not usable: `persisted_queries: deny`, or not in the registry.
    Unregistered(Option<String>),
}

fn registered(endpoint: &Endpoint, id: &str) -> Option<ClassifiedOperation> {
    if endpoint.persisted_queries != PersistedQueries::AllowRegistered {
        return None;
    }
    let reg = &endpoint.graphql_persisted_queries;
    let i = reg
        .binary_search_by(|(k, _)| (**k).cmp(id))
        .ok()
        .or_else(|| {
            // Fall back to a scan in case the registry is not sorted.
            reg.iter().position(|(k, _)| &**k == id)
        })?;
    Some(from_registry(&reg[i].1))
}

fn from_registry(q: &PersistedQuery) -> ClassifiedOperation {
    let mut root_fields: Vec<String> = q.fields.iter().map(|f| f.to_string()).collect();
    root_fields.sort_unstable();
    root_fields.dedup();
    ClassifiedOperation {
        // The loader only accepts the three types; anything else fails closed
        // as the most privileged type.
        op_type: OperationType::parse(&q.operation_type).unwrap_or(OperationType::Mutation),
        name: q.operation_name.as_deref().map(str::to_owned),
        root_fields,
    }
}

fn resolve(endpoint: &Endpoint, item: &GraphqlItem) -> Result<Resolved, GraphqlError> {
    match (
        item.query.as_deref().filter(|q| !q.is_empty()),
        &item.persisted_id,
    ) {
        (Some(q), _) => {
            if q.len() > endpoint.graphql_max_body_bytes {
                return Err(GraphqlError::DocumentTooLarge);
            }
            classify(q, item.operation_name.as_deref()).map(Resolved::Op)
        }
        (None, Some(id)) => Ok(match registered(endpoint, id) {
            Some(op) => Resolved::Op(op),
            None => Resolved::Unregistered(Some(id.clone())),
        }),
        (None, None) => Err(GraphqlError::MissingQuery),
    }
}

/// Whether `rule` is a GraphQL rule (websocket endpoints also carry
/// method/path rules).
fn is_graphql_rule(rule: &L7Rule) -> bool {
    rule.operation_type.is_some()
}

fn type_and_name_match(rule: &L7Rule, op: &ClassifiedOperation) -> bool {
    let type_ok = match rule.operation_type.as_deref() {
        Some("*") => true,
        Some(t) => t.eq_ignore_ascii_case(op.op_type.as_str()),
        None => false,
    };
    // An anonymous operation's name is "" (as in OpenShell's Rego).
    type_ok
        && rule
            .operation_name
            .as_ref()
            .is_none_or(|g| g.pattern.is_empty() || g.matches(op.name.as_deref().unwrap_or("")))
}

/// Allow: every root field matches some glob (no globs = any fields).
fn allow_matches(rule: &L7Rule, op: &ClassifiedOperation) -> bool {
    type_and_name_match(rule, op)
        && (rule.fields.is_empty()
            || (!op.root_fields.is_empty()
                && op
                    .root_fields
                    .iter()
                    .all(|f| rule.fields.iter().any(|g| g.matches(f)))))
}

/// Deny: any root field matches any glob (no globs = matches).
fn deny_matches(rule: &L7Rule, op: &ClassifiedOperation) -> bool {
    type_and_name_match(rule, op)
        && (rule.fields.is_empty()
            || op
                .root_fields
                .iter()
                .any(|f| rule.fields.iter().any(|g| g.matches(f))))
}

/// A rule as text, e.g. `deny mutation fields=deleteRepository` or
/// `allow mutation name=Issue* fields=createIssue`.
fn describe(rule: &L7Rule, deny: bool) -> String {
    let mut s = String::from(if deny { "deny " } else { "allow " });
    s.push_str(rule.operation_type.as_deref().unwrap_or("*"));
    if let Some(g) = &rule.operation_name {
        let _ = write!(s, " name={}", g.pattern);
    }
    for (i, g) in rule.fields.iter().enumerate() {
        s.push_str(if i == 0 { " fields=" } else { "," });
        s.push_str(&g.pattern);
    }
    bounded(s)
}

fn bounded(mut s: String) -> String {
    if s.len() > MAX_SUMMARY_LEN {
        let mut cut = MAX_SUMMARY_LEN - 3;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

fn summarize_op(s: &mut String, op: &ClassifiedOperation) {
    s.push_str(op.op_type.as_str());
    if let Some(n) = &op.name {
        s.push(' ');
        s.push_str(n);
    }
    s.push_str(" fields=");
    for (i, f) in op.root_fields.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(f);
        if s.len() > MAX_SUMMARY_LEN {
            break;
        }
    }
}

fn summarize(items: &[Resolved]) -> String {
    let mut s = String::new();
    for (i, r) in items.iter().enumerate() {
        if i > 0 {
            s.push_str("; ");
        }
        match r {
            Resolved::Op(op) => summarize_op(&mut s, op),
            Resolved::Unregistered(id) => {
                s.push_str("persisted");
                // Client-supplied: only show a plain id.
                if let Some(id) = id.as_deref().filter(|id| {
                    id.len() <= 128
                        && id
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                }) {
                    let _ = write!(s, " id={id}");
                }
            }
        }
        if s.len() > MAX_SUMMARY_LEN {
            break;
        }
    }
    bounded(s)
}

fn rejected(err: &GraphqlError) -> String {
    format!("GraphQL request rejected: {err}")
}

fn decide(endpoint: &Endpoint, resolved: &[Resolved]) -> ProtocolVerdict {
    let summary = summarize(resolved);
    if resolved
        .iter()
        .any(|r| matches!(r, Resolved::Unregistered(_)))
    {
        return ProtocolVerdict::hard_deny(
            "GraphQL persisted query is not registered".to_owned(),
            summary,
        );
    }
    let ops = || {
        resolved.iter().filter_map(|r| match r {
            Resolved::Op(op) => Some(op),
            Resolved::Unregistered(_) => None,
        })
    };
    // Deny rules win: one denied operation denies the batch.
    for rule in endpoint.deny_rules.iter().filter(|r| is_graphql_rule(r)) {
        if ops().any(|op| deny_matches(rule, op)) {
            return ProtocolVerdict::deny(
                "GraphQL operation blocked by endpoint policy".to_owned(),
                Some(describe(rule, true)),
                summary,
            );
        }
    }
    let mut first_allow = None;
    for op in ops() {
        let allow = endpoint
            .rules
            .iter()
            .filter(|r| is_graphql_rule(r))
            .find(|r| allow_matches(r, op));
        match allow {
            Some(rule) => {
                first_allow.get_or_insert(rule);
            }
            None => {
                return ProtocolVerdict::deny(
                    "GraphQL operation not permitted by policy".to_owned(),
                    None,
                    summary,
                )
            }
        }
    }
    let mut v = ProtocolVerdict::allow(summary);
    if resolved.len() == 1 {
        v.rule = first_allow.map(|r| describe(r, false));
    }
    v
}

/// Evaluates request items against one endpoint's GraphQL rules (the
/// caller picked the governing endpoint). Allowed iff every item's
/// operation is allowed by some allow rule and no deny rule matches any
/// item. Errors (unparseable documents, empty or oversized batches,
/// ambiguous operations, documents over `graphql_max_body_bytes`...) and
/// hash-only persisted queries that are not usable (`persisted_queries:
/// deny`, or not in `graphql_persisted_queries`) are hard denials; a
/// registered hash-only query is evaluated by its stored classification.
#[must_use]
pub fn evaluate(endpoint: &Endpoint, items: &[GraphqlItem]) -> ProtocolVerdict {
    if items.is_empty() {
        return ProtocolVerdict::hard_deny(rejected(&GraphqlError::EmptyBatch), String::new());
    }
    if items.len() > MAX_BATCH {
        return ProtocolVerdict::hard_deny(rejected(&GraphqlError::BatchTooLarge), String::new());
    }
    let mut resolved = Vec::with_capacity(items.len());
    for item in items {
        match resolve(endpoint, item) {
            Ok(r) => resolved.push(r),
            Err(e) => return ProtocolVerdict::hard_deny(rejected(&e), summarize(&resolved)),
        }
    }
    decide(endpoint, &resolved)
}

/// Evaluates one already-classified operation (GraphQL-over-WebSocket
/// `subscribe`/`start` payloads).
#[must_use]
pub fn evaluate_operation(endpoint: &Endpoint, op: &ClassifiedOperation) -> ProtocolVerdict {
    decide(endpoint, &[Resolved::Op(op.clone())])
}
