//! Credential- and GraphQL-registry-related endpoint fields: rewrite flags,
//! `credential_signing`, `credential_binding`, persisted queries.

use std::sync::Arc;

use crate::dto::EndpointDto;
use crate::error::Ctx;
use crate::location::join;
use crate::model::{
    CredentialSigning, Endpoint, PersistedQueries, PersistedQuery, Protocol, Provider,
};
use crate::overlap::ports_intersect;

/// The credentials a provider needs to sign for a `credential_signing` endpoint.
pub(crate) const SIGNING_CREDENTIALS: [&str; 2] = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];

/// Every endpoint with `credential_signing` needs a provider that can sign
/// for it: one holding [`SIGNING_CREDENTIALS`] whose `endpoints` overlap it
/// (the same overlap test as the binding rule). Providers live in the same
/// file, so this is checked at load: an error when the file has a
/// `providers` section. A file without one (an OpenShell policy, whose
/// providers are attached outside the file) still loads, with a warning:
/// its signing endpoints refuse requests (`403 sigv4_credentials_unavailable`).
pub(crate) fn check_signing_providers(
    ctx: &mut Ctx,
    endpoints: &[Endpoint],
    names: &[String],
    providers: Option<&[Provider]>,
) {
    for (e, name) in endpoints.iter().zip(names) {
        if e.credential_signing.is_none() {
            continue;
        }
        let at = join(name, "credential_signing");
        let Some(providers) = providers else {
            ctx.warn(
                &at,
                "`credential_signing` has no provider in this file: requests to this endpoint are refused until a provider with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY is bound to it",
            );
            continue;
        };
        let signs = providers.iter().any(|p| {
            SIGNING_CREDENTIALS
                .iter()
                .all(|c| p.credentials.iter().any(|have| &*have.name == *c))
                && p.endpoints
                    .iter()
                    .any(|pe| ports_intersect(&pe.ports, &e.ports) && pe.host.overlaps(&e.host))
        });
        if !signs {
            ctx.err(
                &at,
                "`credential_signing` needs a provider with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY bound to this endpoint (`providers.<key>.endpoints`)",
            );
        }
    }
}

/// The compiled credential-related fields of one endpoint.
pub(crate) struct Credentials {
    pub(crate) ws_rewrite: bool,
    pub(crate) body_rewrite: bool,
    pub(crate) credential_signing: Option<CredentialSigning>,
    pub(crate) credential_binding: Option<Arc<str>>,
    pub(crate) persisted_queries: PersistedQueries,
    pub(crate) registered: Vec<(Arc<str>, PersistedQuery)>,
}

/// Validates the credential-related fields of the endpoint at `path`.
pub(crate) fn compile_credentials(
    ctx: &mut Ctx,
    path: &str,
    e: &EndpointDto,
    protocol: Protocol,
) -> Credentials {
    let at = |f: &str| join(path, f);
    let ws_rewrite = e.websocket_credential_rewrite.unwrap_or(false);
    let body_rewrite = e.request_body_credential_rewrite.unwrap_or(false);
    if ws_rewrite && !matches!(protocol, Protocol::Rest | Protocol::Websocket) {
        ctx.err(
            &at("websocket_credential_rewrite"),
            "`websocket_credential_rewrite` requires `protocol: rest` or `websocket`",
        );
    }
    if body_rewrite && protocol != Protocol::Rest {
        ctx.err(
            &at("request_body_credential_rewrite"),
            "`request_body_credential_rewrite` requires `protocol: rest`",
        );
    }
    let credential_signing = match e.credential_signing.as_deref() {
        None => None,
        Some(s) => {
            let v = match s.to_ascii_lowercase().as_str() {
                "sigv4" => Some(CredentialSigning::Sigv4),
                "sigv4:body" => Some(CredentialSigning::Sigv4Body),
                "sigv4:no_body" => Some(CredentialSigning::Sigv4NoBody),
                _ => None,
            };
            if v.is_none() {
                ctx.err(&at("credential_signing"), format!("unknown credential_signing `{s}`; expected sigv4, sigv4:body or sigv4:no_body"));
            } else if e.signing_service.as_deref().is_none_or(str::is_empty) {
                ctx.err(
                    &at("credential_signing"),
                    "`credential_signing` requires `signing_service`",
                );
            } else if !matches!(protocol, Protocol::Rest | Protocol::Websocket) {
                // GraphQL/JSON-RPC/MCP inspection reads the body its own way;
                // signing it as well is not supported (yet).
                ctx.err(
                    &at("credential_signing"),
                    "`credential_signing` requires `protocol: rest` or `websocket`",
                );
            }
            if body_rewrite {
                ctx.err(&at("request_body_credential_rewrite"), "`request_body_credential_rewrite` and `credential_signing` are mutually exclusive");
            }
            v
        }
    };
    if e.credential_signing.is_none() {
        for f in ["signing_service", "signing_region"] {
            let set = if f == "signing_service" {
                e.signing_service.is_some()
            } else {
                e.signing_region.is_some()
            };
            if set {
                ctx.err_key(&at(f), format!("`{f}` requires `credential_signing`"));
            }
        }
    }
    let credential_binding = e.credential_binding.as_ref().map(|b| {
        if b.provider.is_empty() {
            ctx.err(
                &at("credential_binding.provider"),
                "`credential_binding.provider` must not be empty",
            );
        } else {
            ctx.warn(
                &at("credential_binding"),
                "`credential_binding` is inactive in sluice; bind credentials with `providers.<key>.endpoints`",
            );
        }
        Arc::from(b.provider.as_str())
    });
    let persisted_queries = match e.persisted_queries.as_deref() {
        None | Some("deny") => PersistedQueries::Deny,
        Some("allow_registered") => PersistedQueries::AllowRegistered,
        Some(o) => {
            ctx.err(
                &at("persisted_queries"),
                format!("unknown persisted_queries `{o}`; expected deny or allow_registered"),
            );
            PersistedQueries::Deny
        }
    };
    let mut registered = Vec::new();
    for (qid, q) in e.graphql_persisted_queries.iter().flatten() {
        let op = q.operation_type.to_ascii_lowercase();
        if !matches!(op.as_str(), "query" | "mutation" | "subscription") {
            ctx.err(
                &join(
                    &join(&at("graphql_persisted_queries"), qid),
                    "operation_type",
                ),
                format!(
                    "operation_type `{}` must be query, mutation or subscription",
                    q.operation_type
                ),
            );
        }
        registered.push((
            Arc::from(qid.as_str()),
            PersistedQuery {
                operation_type: Arc::from(op),
                operation_name: q.operation_name.as_deref().map(Arc::from),
                fields: q.fields.iter().map(|f| Arc::from(f.as_str())).collect(),
            },
        ));
    }

    Credentials {
        ws_rewrite,
        body_rewrite,
        credential_signing,
        credential_binding,
        persisted_queries,
        registered,
    }
}
