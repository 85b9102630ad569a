//! `policy.local` (design §6.4, facts §8.2): the agent's view of its policy
//! and denials, and the proposal loop, answered by sluice itself on the
//! forward proxy (`http://policy.local/...`, port 80), before any policy
//! decision. Every answer is JSON and closes the connection; request bodies
//! are at most [`MAX_BODY`] bytes.
//!
//! - `GET /v1/policy/current`: the policy in force, secret sources redacted
//! - `GET /v1/denials?last=N`: the newest denials (default 10, 1..=100)
//! - `POST /v1/proposals`: queue `addRule` operations (validated first)
//! - `GET /v1/proposals/{id}` and `GET /v1/proposals/{id}/wait?timeout=S`

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Map, Value};
use sluice_proposals::{Origin, Proposal, ProposalId, Status};

use super::Shared;
use crate::egress::{Host, IdentityEvidence, Target};
use crate::proposals::{self, policy_hash, DecideError, ProposalService, SubmitError};
use crate::refusal::Refusal;
use crate::relay::http::RequestHead;

/// The name answered locally.
pub(crate) const POLICY_HOST: &str = "policy.local";
/// Largest request body.
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// Longest `wait`, and its default.
const MAX_WAIT: u64 = 300;
const DEFAULT_WAIT: u64 = 60;

/// Whether a forward-proxy target names `policy.local` (any port).
pub(super) fn names_policy_local(target: &Target) -> bool {
    matches!(&target.host, Host::Name(n) if &**n == POLICY_HOST)
}

/// The refusal for `policy.local` reached any other way than `http://policy.local/`.
pub(super) fn wrong_scheme() -> Refusal {
    Refusal::json(
        400,
        "invalid_policy_local_scheme",
        "policy.local is served at http://policy.local/ (port 80) through the forward proxy",
    )
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Answers one request to `policy.local`.
pub(super) async fn answer(
    shared: &Shared,
    req: &RequestHead,
    path_and_query: &str,
    body: Vec<u8>,
    peer: SocketAddr,
    identity: &IdentityEvidence,
) -> Refusal {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let path = path.trim_end_matches('/');
    let Some(service) = shared.proposals.as_deref() else {
        return Refusal::json(
            503,
            "feature_disabled",
            "policy.local is not available on this gateway",
        );
    };
    let response = match (req.method.as_str(), path) {
        ("GET", "/v1/policy/current") => current(service),
        ("GET", "/v1/denials") => denials(service, query),
        ("POST", "/v1/proposals") => submit(service, &body, peer, identity).await,
        ("GET", p) if p.starts_with("/v1/proposals/") => {
            let rest = &p["/v1/proposals/".len()..];
            match rest.split_once('/') {
                None => state(service, rest).await,
                Some((id, "wait")) => wait(service, id, query).await,
                Some(_) => Refusal::json(404, "not_found", "no such policy.local route"),
            }
        }
        _ => Refusal::json(404, "not_found", "no such policy.local route"),
    };
    tracing::debug!(client.addr = %peer, method = %req.method, path, status = response.status(), "policy.local");
    response
}

fn current(service: &ProposalService) -> Refusal {
    let snapshot = service.policy().snapshot();
    let profiles: Vec<Value> = snapshot
        .attached_profiles()
        .iter()
        .map(|p| {
            json!({
                "id": &*p.id,
                "policy_key": &*p.policy_key,
                "source": &*p.origin,
                "profile_yaml": &*p.yaml,
            })
        })
        .collect();
    let text = match service.policy().read_text() {
        Ok(t) => t,
        // Only profiles attached on the command line: the policy they were
        // composed into is empty.
        Err(crate::policy_store::ReloadError::NoFile) if !profiles.is_empty() => {
            sluice_policy::profile::PROFILES_ONLY_POLICY.to_owned()
        }
        Err(e) => return Refusal::json(404, "policy_unavailable", &e.to_string()),
    };
    match sluice_policy::redact::redact_secret_sources(&text) {
        Ok(redacted) => Refusal::object(
            200,
            object(json!({
                "format": "yaml",
                "policy_yaml": redacted,
                "generation": service.policy().generation(),
                "policy_hash": policy_hash(&text),
                // What this gateway enforces: an agent proposing a rule
                // learns whether, e.g., `binaries` or `protocol: tcp` can work here.
                "runtime_mode": service.policy().capabilities().map(|c| c.mode.as_str()),
                "capabilities": service.policy().capabilities().map(|c| c.names()),
                // Attached provider profiles: the entries they became and
                // their text (variable names only, never a value).
                "profiles": profiles,
            })),
        ),
        Err(_) => Refusal::json(
            500,
            "policy_serialize_failed",
            "the policy could not be shown",
        ),
    }
}

fn denials(service: &ProposalService, query: Option<&str>) -> Refusal {
    let last = query_param(query, "last")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(10)
        .clamp(1, 100);
    let records = service.denials().last(last);
    let lines: Vec<Value> = records.iter().map(|r| r.line.clone().into()).collect();
    Refusal::object(
        200,
        object(json!({
            "denials": lines,
            "entries": records,
            "log_available": true,
        })),
    )
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

async fn submit(
    service: &ProposalService,
    body: &[u8],
    peer: SocketAddr,
    identity: &IdentityEvidence,
) -> Refusal {
    let invalid = |detail: &str| Refusal::json(400, "invalid_proposal", detail);
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return invalid("the body must be a JSON object");
    };
    let parsed = match proposals::parse(&value) {
        Ok(p) => p,
        Err(e) => return invalid(&e.to_string()),
    };
    let process = identity.process();
    let origin = Origin {
        sandbox: format!("{} ({})", service.gateway(), peer.ip()),
        binary: process.map(|p| p.exe.clone()),
        pid: process.map(|p| p.sandbox_pid.unwrap_or(p.pid)),
    };
    // The denial it would fix: the newest one at a proposed endpoint.
    let hosts: Vec<String> = parsed
        .rules
        .iter()
        .filter_map(|r| r.rule.get("endpoints")?.as_array().cloned())
        .flatten()
        .filter_map(|e| {
            let host = e.get("host")?.as_str()?.to_ascii_lowercase();
            let port = e.get("port").and_then(Value::as_u64)?;
            Some(format!("{host}:{port}"))
        })
        .collect();
    let denial = service
        .denials()
        .last(100)
        .into_iter()
        .find(|d| hosts.contains(&d.destination))
        .map(|d| d.line);
    match service.submit(parsed, origin, denial).await {
        Ok(p) => Refusal::object(
            202,
            object(json!({
                "status": p.status.as_str(),
                "id": p.id.as_str(),
                "accepted_chunks": 1,
                "rejected_chunks": 0,
                "rejection_reasons": [],
                "accepted_chunk_ids": [p.id.as_str()],
            })),
        ),
        Err(SubmitError::Invalid {
            summary,
            errors,
            located_in,
        }) => {
            let mut r = invalid(&summary)
                .field("errors", errors)
                .field("accepted_chunks", 0)
                .field("rejected_chunks", 1);
            if let Some(text) = located_in {
                r = r.field("located_in", text);
            }
            r
        }
        Err(SubmitError::Store(e)) => Refusal::json(
            503,
            "store_unavailable",
            &format!("the proposal was not queued: {e}"),
        ),
    }
}

/// The proposal's state in OpenShell's chunk shape, plus `id` and `status`.
fn chunk(service: &ProposalService, p: &Proposal) -> Map<String, Value> {
    let rejection = p
        .history
        .iter()
        .rev()
        .find(|h| matches!(h.action, sluice_proposals::Action::Rejected))
        .and_then(|h| h.reason.clone());
    let apply_error = p
        .history
        .iter()
        .rev()
        .find(|h| {
            h.actor == service.gateway()
                && matches!(h.action, sluice_proposals::Action::ApplyFailed)
        })
        .and_then(|h| h.reason.clone());
    let current = service
        .policy()
        .read_text()
        .map(|t| policy_hash(&t))
        .unwrap_or_default();
    let mut m = object(json!({
        "chunk_id": p.id.as_str(),
        "id": p.id.as_str(),
        "status": p.status.as_str(),
        "rule_name": p.rule_name,
        "binary": p.origin.binary,
        "rejection_reason": rejection,
        "validation_result": "valid",
        "application_error": apply_error,
        "current_effective_policy_hash": current,
        "base_policy_hash": p.base_policy_hash,
        "change_yaml": p.change_yaml,
        "history": p.history,
    }));
    if p.status == Status::Approved {
        m.insert("policy_reloaded".into(), service.covers(p).into());
    }
    m
}

fn parse_id(raw: &str) -> Option<ProposalId> {
    raw.parse().ok()
}

async fn state(service: &ProposalService, raw_id: &str) -> Refusal {
    let Some(id) = parse_id(raw_id) else {
        return Refusal::json(404, "chunk_not_found", "no such proposal");
    };
    match service.store().get(&id).await {
        Ok(Some(p)) => Refusal::object(200, chunk(service, &p)),
        Ok(None) => Refusal::json(404, "chunk_not_found", "no such proposal"),
        Err(e) => Refusal::json(503, "store_unavailable", &e.to_string()),
    }
}

async fn wait(service: &ProposalService, raw_id: &str, query: Option<&str>) -> Refusal {
    let Some(id) = parse_id(raw_id) else {
        return Refusal::json(404, "chunk_not_found", "no such proposal");
    };
    let secs = query_param(query, "timeout")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(DEFAULT_WAIT)
        .clamp(1, MAX_WAIT);
    match service.wait(&id, Duration::from_secs(secs)).await {
        Ok(w) => {
            let mut m = chunk(service, &w.proposal);
            m.insert("timed_out".into(), w.timed_out.into());
            if w.proposal.status == Status::Approved {
                m.insert("policy_reloaded".into(), w.policy_reloaded.into());
            }
            Refusal::object(200, m)
        }
        Err(DecideError::NotFound) => Refusal::json(404, "chunk_not_found", "no such proposal"),
        Err(e) => Refusal::json(503, "store_unavailable", &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params() {
        assert_eq!(query_param(Some("last=5"), "last"), Some("5"));
        assert_eq!(query_param(Some("a=1&last=7"), "last"), Some("7"));
        assert_eq!(query_param(Some("lastx=7"), "last"), None);
        assert_eq!(query_param(None, "last"), None);
    }
}
