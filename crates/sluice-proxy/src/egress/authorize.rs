use std::net::IpAddr;
use std::sync::Arc;

use sluice_policy::{EndpointId, PolicyId, PolicySnapshot};

use super::decision::{
    Allowed, Denied, DenyReason, DestinationMode, DestinationPlan, EgressDecision, Permit, Verdict,
};
use super::identity::{IdentityEvidence, IdentityFieldsUsed, IdentityMode};
use super::intent::EgressIntent;
use super::target::Host;
use crate::addr_class;

/// Host names that reach the container host through a gateway alias.
const HOST_GATEWAY_ALIASES: [&str; 3] = [
    "host.openshell.internal",
    "host.containers.internal",
    "host.docker.internal",
];

/// Runtime facts authorization needs besides the policy.
#[derive(Clone, Copy, Debug, Default)]
pub struct AuthorizeContext {
    pub identity_mode: IdentityMode,
    /// A link-local host-gateway address detected at start, if any.
    pub trusted_gateway: Option<IpAddr>,
}

/// The one authorization step every adapter calls.
///
/// One index lookup for host:port, binaries checked per matching policy,
/// the matched policy is the smallest matching key and the matched endpoint
/// the first of that policy in list order; the destination mode follows the
/// documented precedence. Deterministic for a given snapshot and intent.
pub fn authorize(
    snapshot: &Arc<PolicySnapshot>,
    intent: EgressIntent,
    ctx: &AuthorizeContext,
) -> Result<Allowed, Denied> {
    let mut fields = IdentityFieldsUsed::default();
    let verdict = decide(snapshot, &intent, ctx, &mut fields);
    Allowed::new(EgressDecision {
        snapshot: Arc::clone(snapshot),
        intent,
        verdict,
        identity_fields_used: fields,
    })
}

fn decide(
    snapshot: &PolicySnapshot,
    intent: &EgressIntent,
    ctx: &AuthorizeContext,
    fields: &mut IdentityFieldsUsed,
) -> Verdict {
    if snapshot.policies().is_empty() {
        return Verdict::Deny(DenyReason::NoPolicies);
    }
    let mut matched: Vec<EndpointId> = snapshot
        .matching_endpoints(intent.target.host.as_host_ref(), intent.target.port)
        .map(|e| e.id)
        .collect();
    if matched.is_empty() {
        return Verdict::Deny(DenyReason::NoEndpoint);
    }
    matched.sort_unstable();
    matched.dedup();

    let identity = match (ctx.identity_mode, &intent.identity) {
        (IdentityMode::EndpointOnly, _) | (_, IdentityEvidence::EndpointOnly) => None,
        (IdentityMode::Required, IdentityEvidence::Resolved(p)) => Some(Ok(p.as_ref())),
        (IdentityMode::Required, IdentityEvidence::Failed(reason)) => Some(Err(reason)),
    };
    if let Some(Err(reason)) = identity {
        return Verdict::Deny(DenyReason::IdentityUnavailable(Arc::clone(reason)));
    }
    let process = identity.and_then(Result::ok);

    // Check binaries once per policy (ids are sorted, so a policy's endpoints are adjacent).
    let mut routes: Vec<EndpointId> = Vec::with_capacity(matched.len());
    let mut refused: Vec<PolicyId> = Vec::new();
    let mut last: Option<(PolicyId, bool)> = None;
    let mut ancestor_refs: Vec<&str> = Vec::new();
    if let Some(p) = process {
        ancestor_refs.extend(p.ancestors.iter().map(String::as_str));
    }
    for id in matched {
        let policy_id = snapshot.endpoint(id).policy;
        let allowed = match last {
            Some((pid, ok)) if pid == policy_id => ok,
            _ => {
                let ok = match process {
                    None => true,
                    Some(p) => {
                        fields.exe = true;
                        fields.ancestors = true;
                        snapshot
                            .policy(policy_id)
                            .binary_allows(&p.exe, &ancestor_refs)
                    }
                };
                if !ok {
                    refused.push(policy_id);
                }
                last = Some((policy_id, ok));
                ok
            }
        };
        if allowed {
            routes.push(id);
        }
    }
    let Some(&primary_id) = routes.first() else {
        return Verdict::Deny(DenyReason::BinaryNotAllowed(binary_clauses(
            snapshot, process, &refused,
        )));
    };
    let primary = snapshot.endpoint(primary_id);
    let destination = destination_plan(snapshot, intent, ctx, &routes);
    Verdict::Allow(Permit {
        policy: primary.policy,
        endpoint: primary_id,
        routes: routes.into(),
        destination,
        tls: primary.tls,
        protocol: primary.protocol,
        enforcement: primary.enforcement,
    })
}

fn destination_plan(
    snapshot: &PolicySnapshot,
    intent: &EgressIntent,
    ctx: &AuthorizeContext,
    routes: &[EndpointId],
) -> DestinationPlan {
    let allowed_ips = routes
        .iter()
        .map(|id| &snapshot.endpoint(*id).allowed_ips)
        .find(|ips| !ips.is_empty())
        .cloned()
        .unwrap_or_else(|| Arc::from(Vec::new()));
    let mode = match (&intent.target.host, ctx.trusted_gateway) {
        (Host::Name(n), Some(gw)) if HOST_GATEWAY_ALIASES.contains(&n.as_ref()) => {
            DestinationMode::TrustedGatewayAlias(gw)
        }
        _ if !allowed_ips.is_empty() => DestinationMode::ExplicitAllowedIps,
        (Host::Ip(ip), _) if !addr_class::is_always_blocked(*ip) => {
            DestinationMode::ImplicitIpLiteral(*ip)
        }
        _ if routes
            .iter()
            .any(|id| snapshot.endpoint(*id).is_exact_host()) =>
        {
            DestinationMode::ExactDeclaredHost
        }
        _ => DestinationMode::DefaultPublicOnly,
    };
    DestinationPlan { mode, allowed_ips }
}

fn binary_clauses(
    snapshot: &PolicySnapshot,
    process: Option<&super::identity::ProcessIdentity>,
    refused: &[PolicyId],
) -> String {
    let (exe, ancestors) = process.map_or(("", String::new()), |p| {
        (p.exe.as_str(), p.ancestors.join(" -> "))
    });
    refused
        .iter()
        .map(|id| {
            format!(
                "binary '{exe}' not allowed in policy '{}' (ancestors: [{ancestors}])",
                snapshot.policy(*id).key
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}
