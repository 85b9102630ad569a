use std::net::IpAddr;
use std::sync::Arc;

use sluice_policy::{
    Endpoint, EndpointId, Enforcement, NetworkPolicy, PolicyId, PolicySnapshot, Protocol, TlsMode,
};

use super::identity::{IdentityEvidence, IdentityFieldsUsed};
use super::intent::EgressIntent;

/// How the destination validator must judge the resolved addresses.
/// Exactly one mode per decision (facts §3.2 precedence).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestinationMode {
    /// The requested name is a host-gateway alias and a trusted link-local gateway was detected.
    TrustedGatewayAlias(IpAddr),
    /// The endpoint lists `allowed_ips`: every address must fall inside one.
    ExplicitAllowedIps,
    /// The request named an IP literal that an endpoint declared: only that address.
    ImplicitIpLiteral(IpAddr),
    /// An exact (non-wildcard) declared host: private answers allowed.
    ExactDeclaredHost,
    /// Everything else: public addresses only.
    DefaultPublicOnly,
}

impl DestinationMode {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TrustedGatewayAlias(_) => "trusted_gateway_alias",
            Self::ExplicitAllowedIps => "explicit_allowed_ips",
            Self::ImplicitIpLiteral(_) => "implicit_ip_literal",
            Self::ExactDeclaredHost => "exact_declared_host",
            Self::DefaultPublicOnly => "default_public_only",
        }
    }
}

/// The destination part of a permit: the mode and the CIDRs it needs.
#[derive(Clone, Debug)]
pub struct DestinationPlan {
    pub mode: DestinationMode,
    pub allowed_ips: Arc<[ipnet::IpNet]>,
}

/// What an allowed decision grants. Built only by [`super::authorize`].
#[derive(Clone, Debug)]
pub struct Permit {
    /// The matched policy (smallest matching key).
    pub policy: PolicyId,
    /// The matched endpoint (first in precedence order within that policy).
    pub endpoint: EndpointId,
    /// Every endpoint for this host:port in policies whose binaries matched,
    /// in precedence order: the request-level routes (selected by path later).
    pub routes: Arc<[EndpointId]>,
    pub destination: DestinationPlan,
    pub tls: TlsMode,
    pub protocol: Protocol,
    pub enforcement: Enforcement,
}

/// Why a decision denies.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DenyReason {
    /// The policy has no network policies at all.
    NoPolicies,
    /// No endpoint matches host:port.
    NoEndpoint,
    /// Endpoints matched but no policy's binaries matched the caller; one clause per policy.
    BinaryNotAllowed(String),
    /// Identity was required and could not be established.
    IdentityUnavailable(Arc<str>),
}

/// Allow with a permit, or deny with a reason.
#[derive(Clone, Debug)]
pub enum Verdict {
    Allow(Permit),
    Deny(DenyReason),
}

/// The record of one authorization for one intent, pinned to one snapshot:
/// what events and `explain` read. Authorization hands it out as [`Allowed`]
/// or [`Denied`]; relays only ever hold an [`Allowed`].
#[derive(Clone, Debug)]
pub struct EgressDecision {
    /// The snapshot this decision was made under (its generation is the pin).
    pub snapshot: Arc<PolicySnapshot>,
    pub intent: EgressIntent,
    pub verdict: Verdict,
    pub identity_fields_used: IdentityFieldsUsed,
}

impl EgressDecision {
    /// The policy generation this decision is pinned to.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.snapshot.generation()
    }

    #[must_use]
    pub fn permit(&self) -> Option<&Permit> {
        match &self.verdict {
            Verdict::Allow(p) => Some(p),
            Verdict::Deny(_) => None,
        }
    }

    #[must_use]
    pub fn is_allowed(&self) -> bool {
        self.permit().is_some()
    }

    /// The matched policy entry, if allowed.
    #[must_use]
    pub fn policy(&self) -> Option<&NetworkPolicy> {
        self.permit().map(|p| self.snapshot.policy(p.policy))
    }

    /// The matched endpoint, if allowed.
    #[must_use]
    pub fn endpoint(&self) -> Option<&Endpoint> {
        self.permit().map(|p| self.snapshot.endpoint(p.endpoint))
    }

    /// The policy key for logs and `X-Sluice-Policy` (`-` when denied).
    #[must_use]
    pub fn policy_key(&self) -> &str {
        self.policy().map_or("-", |p| &p.key)
    }

    /// The one-line `hint` of a denial body, worded as `sluice run` prints the
    /// denial on the terminal: `denied WHAT (BINARY, pid N): REASON`, with the
    /// pid the client sees (its sandbox's) when known.
    #[must_use]
    pub fn denial_hint(&self, what: &str, reason: &str) -> String {
        let who = self.intent.identity.process().map(|p| {
            let name = p.exe.rsplit('/').next().unwrap_or(&p.exe);
            (name, u64::from(p.sandbox_pid.unwrap_or(p.pid)))
        });
        sluice_telemetry::denial_line(what, who, Some(reason))
    }

    /// The human reason for a deny (facts §2.4 wording), empty when allowed.
    #[must_use]
    pub fn deny_reason(&self) -> String {
        match &self.verdict {
            Verdict::Allow(_) => String::new(),
            Verdict::Deny(DenyReason::NoPolicies) => {
                "network connections not allowed by policy".to_owned()
            }
            Verdict::Deny(DenyReason::NoEndpoint) => {
                format!(
                    "endpoint {} is not allowed by any policy",
                    self.intent.target
                )
            }
            Verdict::Deny(DenyReason::BinaryNotAllowed(s)) => s.clone(),
            Verdict::Deny(DenyReason::IdentityUnavailable(s)) => s.to_string(),
        }
    }

    /// The identity evidence the decision used.
    #[must_use]
    pub fn identity(&self) -> &IdentityEvidence {
        &self.intent.identity
    }
}

/// An allowed decision: the permit is always there, so no relay handles a
/// denied case. Built only by [`super::authorize`]; reads as its
/// [`EgressDecision`] record (for events) through `Deref`.
#[derive(Clone, Debug)]
pub struct Allowed {
    decision: EgressDecision,
    permit: Permit,
}

impl Allowed {
    /// `Err` unless `decision` allows.
    pub(super) fn new(decision: EgressDecision) -> Result<Self, Denied> {
        match &decision.verdict {
            Verdict::Allow(p) => {
                let permit = p.clone();
                Ok(Self { decision, permit })
            }
            Verdict::Deny(_) => Err(Denied(decision)),
        }
    }

    /// What the decision grants: matched policy and endpoint, routes,
    /// destination plan, TLS mode, protocol, enforcement.
    #[must_use]
    pub fn permit(&self) -> &Permit {
        &self.permit
    }

    /// The matched policy entry.
    #[must_use]
    pub fn policy(&self) -> &NetworkPolicy {
        self.decision.snapshot.policy(self.permit.policy)
    }

    /// The matched endpoint.
    #[must_use]
    pub fn endpoint(&self) -> &Endpoint {
        self.decision.snapshot.endpoint(self.permit.endpoint)
    }

    /// The record, for events.
    #[must_use]
    pub fn record(&self) -> &EgressDecision {
        &self.decision
    }
}

impl std::ops::Deref for Allowed {
    type Target = EgressDecision;
    fn deref(&self) -> &EgressDecision {
        &self.decision
    }
}

/// A denied decision (why: [`EgressDecision::deny_reason`]).
#[derive(Clone, Debug)]
pub struct Denied(EgressDecision);

impl Denied {
    /// The record, for events.
    #[must_use]
    pub fn record(&self) -> &EgressDecision {
        &self.0
    }
}

impl std::ops::Deref for Denied {
    type Target = EgressDecision;
    fn deref(&self) -> &EgressDecision {
        &self.0
    }
}
