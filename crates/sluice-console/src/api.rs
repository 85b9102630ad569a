//! The JSON API the page uses: the state, decisions, and proposals made
//! from a denial.

use std::str::FromStr;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{json, Value};
use sluice_policy::suggest::{policy_key, Denied};
use sluice_proposals::{Action, Origin, Proposal, ProposalId, Status, MAX_REASON};
use sluice_proxy::denials::DenialRecord;
use sluice_proxy::proposals::{DecideError, SubmitError};

use crate::server::{error, json, Body, State};

/// Pending proposals listed.
const MAX_PENDING: usize = 200;
/// Decided proposals listed.
const MAX_DECIDED: usize = 20;
/// Denials listed.
const MAX_DENIALS: usize = 50;
/// Longest operator name.
const MAX_ACTOR: usize = 64;
/// The actor when the operator gave no name.
const DEFAULT_ACTOR: &str = "console";

/// A denial as the page gets it: the record and whether a rule can be
/// proposed from it.
pub(crate) fn denial_json(d: &DenialRecord) -> Value {
    let mut v = serde_json::to_value(d).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("proposable".into(), Value::Bool(d.suggestion.is_some()));
    }
    v
}

/// `GET /api/state`.
pub(crate) async fn state(s: &State) -> Response<Body> {
    let store = s.service.store();
    let pending = match store.list(Some(Status::Pending), MAX_PENDING).await {
        Ok(p) => p,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let decided: Vec<Proposal> = match store.list(None, MAX_PENDING).await {
        Ok(all) => all
            .into_iter()
            .filter(|p| p.status != Status::Pending)
            .take(MAX_DECIDED)
            .collect(),
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let revision = store.revision().await.ok();
    let policy = s.service.policy();
    let generation = policy.generation();
    let text = match policy.read_text() {
        Ok(t) => sluice_policy::redact::redact_secret_sources(&t).unwrap_or_else(|_| {
            "# the policy file is not valid YAML now; it is not shown\n".to_owned()
        }),
        Err(e) => format!("# the policy file cannot be read: {e}\n"),
    };
    let denials: Vec<Value> = s
        .service
        .denials()
        .last(MAX_DENIALS)
        .iter()
        .map(denial_json)
        .collect();
    json(
        StatusCode::OK,
        &json!({
            "gateway": s.service.gateway(),
            "revision": revision,
            "policy": { "generation": generation, "text": text },
            "pending": pending,
            "decided": decided,
            "denials": denials,
        }),
    )
}

/// The JSON object of a request body (an empty body is `{}`).
fn body_object(body: &Bytes) -> Result<serde_json::Map<String, Value>, Response<Body>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(error(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object",
        )),
    }
}

/// The optional string field `key`, trimmed; `Err` when it is not a string
/// or longer than `max` bytes.
fn field(
    m: &serde_json::Map<String, Value>,
    key: &str,
    max: usize,
) -> Result<Option<String>, Response<Body>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.len() > max {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    &format!("`{key}` is longer than {max} bytes"),
                ));
            }
            if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    &format!("`{key}` contains control characters"),
                ));
            }
            Ok((!s.is_empty()).then(|| s.to_owned()))
        }
        Some(_) => Err(error(
            StatusCode::BAD_REQUEST,
            &format!("`{key}` must be a string"),
        )),
    }
}

/// The operator's name as typed (one line), or `console`.
fn actor(m: &serde_json::Map<String, Value>) -> Result<String, Response<Body>> {
    let name = field(m, "actor", MAX_ACTOR)?;
    if name.as_deref().is_some_and(|n| n.contains('\n')) {
        return Err(error(StatusCode::BAD_REQUEST, "`actor` is one line"));
    }
    Ok(name.unwrap_or_else(|| DEFAULT_ACTOR.to_owned()))
}

/// `POST /api/proposals/{id}/approve|reject` with `{"reason", "actor"}`.
pub(crate) async fn decide(s: &State, id: &str, approve: bool, body: &Bytes) -> Response<Body> {
    let Ok(id) = ProposalId::from_str(id) else {
        return error(StatusCode::NOT_FOUND, "no such proposal");
    };
    let m = match body_object(body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let (reason, actor) = match (field(&m, "reason", MAX_REASON), actor(&m)) {
        (Ok(r), Ok(a)) => (r, a),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    if !approve && reason.is_none() {
        return error(StatusCode::BAD_REQUEST, "a rejection needs a reason");
    }
    match s.service.decide(&id, &actor, approve, reason).await {
        Ok(p) => {
            let last = p
                .history
                .iter()
                .rev()
                .find(|h| matches!(h.action, Action::Applied | Action::ApplyFailed));
            let (outcome, detail) = match (approve, last) {
                (false, _) => ("rejected", None),
                (true, Some(h)) if h.action == Action::Applied => ("applied", h.reason.clone()),
                (true, Some(h)) => ("apply_failed", h.reason.clone()),
                (true, None) => ("approved", None),
            };
            json(
                StatusCode::OK,
                &json!({ "proposal": p, "outcome": outcome, "detail": detail }),
            )
        }
        Err(e @ DecideError::NotFound) => error(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e @ DecideError::Conflict(_)) => error(StatusCode::CONFLICT, &e.to_string()),
        Err(e @ DecideError::Invalid(_)) => error(StatusCode::BAD_REQUEST, &e.to_string()),
        Err(e @ DecideError::Store(_)) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// The `addRule` body that allows what `d` denied: a new entry for the
/// destination (and the binary, when identified); for a request denied
/// by an endpoint's rules, a new `rest` entry allowing that method and path.
pub(crate) fn rule_body(d: &Denied, line: &str) -> Value {
    let binary = d.binary.clone().unwrap_or_else(|| "/**".to_owned());
    let key = policy_key(&d.host, d.port);
    let summary: String = format!("proposed from the console for: {line}")
        .chars()
        .take(400)
        .collect();
    let (name, endpoint) = match &d.request {
        None => (key, json!({ "host": d.host, "port": d.port })),
        Some(r) => {
            let mut name = format!("{key}_{}", r.method.to_ascii_lowercase());
            name.retain(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
            name.truncate(64);
            (
                name,
                json!({
                    "host": d.host,
                    "port": d.port,
                    "protocol": "rest",
                    "enforcement": "enforce",
                    "rules": [ { "allow": { "method": r.method, "path": r.path } } ],
                }),
            )
        }
    };
    json!({
        "intent_summary": summary,
        "operations": [ { "addRule": {
            "ruleName": name,
            "rule": { "endpoints": [endpoint], "binaries": [ { "path": binary } ] },
        } } ],
    })
}

/// `POST /api/denials/{seq}/propose` with `{"actor"}`: queues the rule that
/// would have allowed the denial, validated like an agent's proposal.
pub(crate) async fn propose(s: &State, seq: &str, body: &Bytes) -> Response<Body> {
    let Ok(seq) = seq.parse::<u64>() else {
        return error(StatusCode::NOT_FOUND, "no such denial");
    };
    let m = match body_object(body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let actor = match actor(&m) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let Some(record) = s.service.denials().get(seq) else {
        return error(
            StatusCode::NOT_FOUND,
            "that denial is no longer in the recent log",
        );
    };
    let Some(denied) = record.suggestion.as_ref() else {
        return error(
            StatusCode::BAD_REQUEST,
            "no policy change would allow this denial",
        );
    };
    let parsed = match sluice_proxy::proposals::parse(&rule_body(denied, &record.line)) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let origin = Origin {
        sandbox: DEFAULT_ACTOR.to_owned(),
        binary: Some(actor),
        pid: None,
    };
    match s
        .service
        .submit(parsed, origin, Some(record.line.clone()))
        .await
    {
        Ok(p) => json(StatusCode::CREATED, &json!({ "proposal": p })),
        Err(SubmitError::Invalid {
            summary, errors, ..
        }) => json(
            StatusCode::BAD_REQUEST,
            &json!({ "error": summary, "errors": errors }),
        ),
        Err(e @ SubmitError::Store(_)) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}
