//! The body of `POST http://policy.local/v1/proposals` (OpenShell's
//! shape): `{"intent_summary"?, "operations": [{"addRule": {"ruleName"?,
//! "rule": {...}}}]}`. Only `addRule` is accepted; each names a new
//! `network_policies` entry. The rule itself is validated later, exactly
//! like a policy file.

use serde_json::Value;
use sluice_policy::amend::valid_rule_name;

/// Most operations in one proposal.
pub const MAX_OPERATIONS: usize = 8;

/// Why a proposal body is refused (answered `400 invalid_proposal`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpsError {
    #[error("the body is not a JSON object")]
    NotObject,
    #[error("`operations` must be a non-empty list of at most {MAX_OPERATIONS} operations")]
    Operations,
    #[error("operations[{0}]: only `addRule` operations are accepted")]
    NotAddRule(usize),
    #[error("operations[{0}].addRule.rule must be an object")]
    Rule(usize),
    #[error("operations[{0}]: rule name `{1}` must be 1-64 characters of [A-Za-z0-9_.-]")]
    Name(usize, String),
    #[error("operations[{0}]: allow path `{1}` must not contain `?` (queries are matched by `query` rules)")]
    QueryInPath(usize, String),
    #[error("operations[{0}]: rule `{1}` is added twice")]
    Duplicate(usize, String),
    #[error("`intent_summary` must be a string")]
    Summary,
}

/// One rule to add.
#[derive(Debug, Clone, PartialEq)]
pub struct AddRule {
    /// The `network_policies` key.
    pub name: String,
    /// The entry, as submitted.
    pub rule: Value,
}

/// A parsed proposal body.
#[derive(Debug, Clone, PartialEq)]
pub struct ProposalBody {
    pub intent_summary: Option<String>,
    pub rules: Vec<AddRule>,
    /// `operations` exactly as submitted.
    pub operations: Value,
}

/// Parses a proposal body.
///
/// # Errors
/// [`OpsError`] naming the first problem.
pub fn parse(body: &Value) -> Result<ProposalBody, OpsError> {
    let obj = body.as_object().ok_or(OpsError::NotObject)?;
    let intent_summary = match obj.get("intent_summary") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(OpsError::Summary),
    };
    let ops = obj
        .get("operations")
        .and_then(Value::as_array)
        .filter(|o| !o.is_empty() && o.len() <= MAX_OPERATIONS)
        .ok_or(OpsError::Operations)?;
    let mut rules: Vec<AddRule> = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let add = op
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.get("addRule"))
            .and_then(Value::as_object)
            .ok_or(OpsError::NotAddRule(i))?;
        let rule = add
            .get("rule")
            .filter(|r| r.is_object())
            .ok_or(OpsError::Rule(i))?
            .clone();
        let name = add
            .get("ruleName")
            .and_then(Value::as_str)
            .or_else(|| rule.get("name").and_then(Value::as_str))
            .map(str::to_owned)
            .or_else(|| default_name(&rule))
            .unwrap_or_default();
        if !valid_rule_name(&name) {
            return Err(OpsError::Name(i, name));
        }
        if rules.iter().any(|r| r.name == name) {
            return Err(OpsError::Duplicate(i, name));
        }
        if let Some(path) = query_in_allow_path(&rule) {
            return Err(OpsError::QueryInPath(i, path));
        }
        rules.push(AddRule { name, rule });
    }
    Ok(ProposalBody {
        intent_summary,
        rules,
        operations: Value::Array(ops.clone()),
    })
}

/// `host_port` of the rule's first endpoint, the key `sluice run` suggests.
fn default_name(rule: &Value) -> Option<String> {
    let e = rule.get("endpoints")?.as_array()?.first()?;
    let host = e.get("host")?.as_str()?;
    let port = e
        .get("port")
        .and_then(Value::as_u64)
        .or_else(|| e.get("ports")?.as_array()?.first()?.as_u64())?;
    Some(sluice_policy::suggest::policy_key(
        host,
        u16::try_from(port).ok()?,
    ))
}

/// The first `rules[].allow.path` holding a `?`.
fn query_in_allow_path(rule: &Value) -> Option<String> {
    rule.get("endpoints")?
        .as_array()?
        .iter()
        .filter_map(|e| e.get("rules")?.as_array())
        .flatten()
        .filter_map(|r| r.get("allow")?.get("path")?.as_str())
        .find(|p| p.contains('?'))
        .map(str::to_owned)
}

/// The entries as they go under `network_policies:` (for people).
#[must_use]
pub fn change_yaml(rules: &[AddRule]) -> String {
    let mut map = serde_json::Map::new();
    for r in rules {
        map.insert(r.name.clone(), r.rule.clone());
    }
    let mut doc = serde_json::Map::new();
    doc.insert("network_policies".into(), Value::Object(map));
    serde_yaml::to_string(&Value::Object(doc)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rule() -> Value {
        json!({"endpoints": [{"host": "api.example.test", "port": 443}], "binaries": [{"path": "/usr/bin/curl"}]})
    }

    #[test]
    fn accepted_shapes() {
        let b = parse(&json!({"intent_summary": "fetch docs", "operations": [{"addRule": {"ruleName": "docs", "rule": rule()}}]}))
            .expect("valid");
        assert_eq!(b.intent_summary.as_deref(), Some("fetch docs"));
        assert_eq!(b.rules[0].name, "docs");
        let b = parse(&json!({"operations": [{"addRule": {"rule": rule()}}]})).expect("valid");
        assert_eq!(b.rules[0].name, "allow_api_example_test_443");
        assert!(
            change_yaml(&b.rules).starts_with("network_policies:\n  allow_api_example_test_443:\n")
        );
    }

    #[test]
    fn refusals() {
        let cases = [
            (json!([1]), OpsError::NotObject),
            (json!({"operations": []}), OpsError::Operations),
            (
                json!({"operations": [{"removeRule": {}}]}),
                OpsError::NotAddRule(0),
            ),
            (
                json!({"operations": [{"addRule": {"rule": []}}]}),
                OpsError::Rule(0),
            ),
            (
                json!({"operations": [{"addRule": {"ruleName": "a b", "rule": rule()}}]}),
                OpsError::Name(0, "a b".into()),
            ),
            (
                json!({"operations": [{"addRule": {"ruleName": "_provider_x", "rule": rule()}}]}),
                OpsError::Name(0, "_provider_x".into()),
            ),
            (
                json!({"operations": [{"addRule": {"ruleName": "a", "rule": rule()}}, {"addRule": {"ruleName": "a", "rule": rule()}}]}),
                OpsError::Duplicate(1, "a".into()),
            ),
            (
                json!({"operations": [{"addRule": {"ruleName": "a", "rule": {"endpoints": [{"host": "h", "port": 1, "rules": [{"allow": {"method": "GET", "path": "/x?y=1"}}]}]}}}]}),
                OpsError::QueryInPath(0, "/x?y=1".into()),
            ),
            (
                json!({"intent_summary": 3, "operations": [{"addRule": {"rule": rule()}}]}),
                OpsError::Summary,
            ),
        ];
        for (body, want) in cases {
            assert_eq!(parse(&body), Err(want), "{body}");
        }
        let many: Vec<Value> = (0..9)
            .map(|i| json!({"addRule": {"ruleName": format!("r{i}"), "rule": rule()}}))
            .collect();
        assert_eq!(
            parse(&json!({"operations": many})),
            Err(OpsError::Operations)
        );
    }
}
