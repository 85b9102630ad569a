//! The credential step of the request loop, shared by both adapters: SigV4
//! re-signing (its fields are taken out first and signed last), token
//! grant, head slots, and the body plan (rewrite, backstop, sign, or stream).

use std::sync::Arc;

use super::body::{media_type, rewrite_body, BODY_LIMIT};
use super::inject::{inject_head, CredentialError};
use super::resign;
use crate::egress::EgressDecision;
use crate::refusal::{json_error, Refusal};
use crate::relay::http::{BodyFraming, BodyPlan, RequestHead};
use crate::relay::RelayContext;

/// What the adapter writes upstream after credentials were applied.
#[derive(Debug)]
pub(crate) struct Outbound {
    /// Origin-form target (`path?query`), rewritten when it held placeholders.
    pub(crate) origin: String,
    /// Header fields to send (placeholders resolved, grant header set).
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    /// Keys of the providers that supplied a credential (for events).
    pub(crate) providers: Vec<Arc<str>>,
    pub(crate) body: BodyPlan,
}

fn credential_response(
    shared: &RelayContext,
    d: &EgressDecision,
    err: &CredentialError,
) -> Refusal {
    match err {
        CredentialError::Mismatch { name } => {
            shared.audit.credential_denied(d, name);
            Refusal::json(
                403,
                "credential_endpoint_mismatch",
                &format!("credential {name} is not bound to {}", d.intent.target),
            )
            .field("message", "credential is not authorized for this endpoint")
        }
        CredentialError::Unknown { name } => {
            shared.audit.credential_denied(d, name);
            json_error(
                500,
                "credential_unavailable",
                "Credential placeholder could not be resolved",
                None,
                None,
            )
        }
        CredentialError::BadSlot | CredentialError::Leftover => json_error(
            500,
            "credential_injection_failed",
            "unresolved credential placeholder in request",
            None,
            None,
        ),
    }
}

/// Apply credentials to one admitted request. `path` is canonical (no
/// query), `endpoint` the governing endpoint (its body-rewrite opt-in and
/// `credential_signing`).
pub(crate) async fn prepare(
    shared: &RelayContext,
    decision: &EgressDecision,
    req: &RequestHead,
    path: &str,
    query: Option<&str>,
    endpoint: &sluice_policy::Endpoint,
) -> Result<Outbound, Refusal> {
    let snapshot = &decision.snapshot;
    let target = &decision.intent.target;
    let mut providers: Vec<Arc<str>> = Vec::new();
    // SigV4: the client's signature fields leave the head before injection
    // (their placeholders are consumed by re-signing) and the head is
    // signed once final, below.
    let resign = resign::begin(shared, decision, endpoint, req, path, query)?;
    let (query, in_headers) = match &resign {
        Some(r) => (r.query.as_deref(), &r.headers),
        None => (query, &req.headers),
    };
    let (new_origin, new_headers, injected) =
        inject_head(snapshot, target, path, query, in_headers)
            .map_err(|e| credential_response(shared, decision, &e))?;
    for id in &injected.providers {
        providers.push(Arc::clone(&snapshot.provider(*id).key));
    }
    let mut headers = new_headers.unwrap_or_else(|| in_headers.clone());
    // A token grant bound to this request sets its header (replacing any the client sent).
    let grant = snapshot
        .token_grants_for(target.host.as_host_ref(), target.port, path)
        .next();
    if let Some(provider) = grant {
        match shared.tokens.header(provider).await {
            Ok((name, value)) => {
                headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
                headers.push((name.to_string(), value.expose().as_bytes().to_vec()));
                providers.push(Arc::clone(&provider.key));
                shared.audit.token_grant(decision, &provider.key, None);
            }
            Err(e) => {
                shared
                    .audit
                    .token_grant(decision, &provider.key, Some(&e.to_string()));
                return Err(json_error(
                    502,
                    "token_grant_failed",
                    "dynamic token grant failed",
                    None,
                    None,
                ));
            }
        }
    }
    let mut origin = new_origin.unwrap_or_else(|| match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    });
    let opt_in = endpoint.request_body_credential_rewrite;
    let mut body = body_plan(shared, decision, req, path, opt_in);
    if let Some(r) = resign {
        let provider = r.provider_key();
        r.finish(shared, decision, req, &mut origin, &mut headers, &mut body)?;
        if !providers.contains(&provider) {
            providers.push(provider);
        }
    }
    Ok(Outbound {
        origin,
        headers,
        providers,
        body,
    })
}

fn body_plan(
    shared: &RelayContext,
    decision: &EgressDecision,
    req: &RequestHead,
    path: &str,
    opt_in: bool,
) -> BodyPlan {
    let snapshot = &decision.snapshot;
    if req.framing == BodyFraming::None || !snapshot.has_credentials() {
        return BodyPlan::Stream { guard: false };
    }
    if opt_in {
        let (snapshot, target, path) = (
            Arc::clone(snapshot),
            decision.intent.target.clone(),
            path.to_owned(),
        );
        let media = media_type(req.header("content-type"));
        let audit = shared.audit.clone();
        let d = decision.clone();
        return BodyPlan::Buffer {
            limit: BODY_LIMIT,
            on_error: None,
            transform: Box::new(move |body: &[u8]| {
                rewrite_body(&snapshot, &target, &path, &media, body).map_err(|e| {
                    if let CredentialError::Mismatch { name } | CredentialError::Unknown { name } =
                        &e
                    {
                        audit.credential_denied(&d, name);
                    }
                    match e {
                        CredentialError::Mismatch { .. } => json_error(
                            403,
                            "credential_endpoint_mismatch",
                            "credential is not authorized for this endpoint",
                            None,
                            None,
                        ),
                        _ => json_error(
                            500,
                            "credential_injection_failed",
                            "unresolved credential placeholder in request",
                            None,
                            None,
                        ),
                    }
                })
            }),
        };
    }
    // Not opted in: a body that still carries a placeholder is refused.
    // The loop reads up to 256 KiB ahead and checks it before anything of
    // the request is forwarded; the rest of a longer body is checked as it
    // streams (across reads and chunk boundaries, any framing).
    BodyPlan::Stream { guard: true }
}
