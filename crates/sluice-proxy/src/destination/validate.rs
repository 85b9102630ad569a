use std::net::{IpAddr, SocketAddr};

use super::connector::UpstreamConnector;
use super::resolve::Resolver;
use crate::addr_class::{self, CONTROL_PLANE_PORTS, METADATA_NAMES};
use crate::egress::{DestinationMode, DestinationPlan, Host, Target};

/// Which destination rule refused (facts §3.5 kinds, plus sluice's own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DenialKind {
    TrustedGateway,
    AllowedIps,
    DeclaredEndpoint,
    InternalAddress,
    CloudMetadata,
    ControlPlanePort,
    /// Resolution failed: not a policy verdict, rendered as 502.
    Dns,
}

/// A refused destination: the kind (what the client sees) and the specific
/// reason (what the audit log's `status_detail` carries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationDenial {
    pub kind: DenialKind,
    pub status_detail: String,
}

impl DestinationDenial {
    /// The short suffix used in client-facing `detail` strings.
    #[must_use]
    pub fn client_detail(&self) -> &'static str {
        match self.kind {
            DenialKind::TrustedGateway => "trusted-gateway check failed",
            DenialKind::AllowedIps => "allowed_ips check failed",
            DenialKind::DeclaredEndpoint => "declared endpoint check failed",
            DenialKind::InternalAddress => "internal address",
            DenialKind::CloudMetadata => "cloud metadata address",
            DenialKind::ControlPlanePort => "control-plane port",
            DenialKind::Dns => "DNS resolution failed",
        }
    }

    /// `true` when this is an SSRF refusal (403), `false` for DNS failure (502).
    #[must_use]
    pub fn is_policy(&self) -> bool {
        self.kind != DenialKind::Dns
    }
}

fn deny(kind: DenialKind, status_detail: String) -> DestinationDenial {
    DestinationDenial {
        kind,
        status_detail,
    }
}

/// Resolve and validate `target` under `plan`. Every address must pass
/// (all-or-nothing); the connector then dials only those addresses.
///
/// # Errors
/// [`DestinationDenial`] naming the rule that refused.
pub async fn validate(
    plan: &DestinationPlan,
    target: &Target,
    resolver: &Resolver,
) -> Result<UpstreamConnector, DestinationDenial> {
    precheck(target)?;
    let addrs = match &target.host {
        Host::Ip(ip) => vec![*ip],
        Host::Name(name) => resolver
            .resolve(name, target.port)
            .await
            .map_err(|e| deny(DenialKind::Dns, e.to_string()))?,
    };
    for ip in &addrs {
        check_address(plan, target, *ip)?;
    }
    let pinned = addrs
        .into_iter()
        .map(|ip| SocketAddr::new(ip, target.port))
        .collect();
    Ok(UpstreamConnector::new(target.clone(), pinned))
}

/// Re-judge an already connected address under a (possibly newer) plan,
/// without resolving again. Used when a live tunnel meets a new generation.
///
/// # Errors
/// [`DestinationDenial`] when the address is no longer acceptable.
pub fn check_pinned(
    plan: &DestinationPlan,
    target: &Target,
    ip: IpAddr,
) -> Result<(), DestinationDenial> {
    precheck(target)?;
    check_address(plan, target, ip)
}

fn precheck(target: &Target) -> Result<(), DestinationDenial> {
    if CONTROL_PLANE_PORTS.contains(&target.port) {
        return Err(deny(
            DenialKind::ControlPlanePort,
            format!(
                "port {} is a blocked control-plane port, connection rejected",
                target.port
            ),
        ));
    }
    if let Host::Name(name) = &target.host {
        if METADATA_NAMES.contains(&name.as_ref()) {
            return Err(deny(
                DenialKind::CloudMetadata,
                format!("{name} is a cloud metadata service name, connection rejected"),
            ));
        }
    }
    Ok(())
}

fn check_address(
    plan: &DestinationPlan,
    target: &Target,
    ip: IpAddr,
) -> Result<(), DestinationDenial> {
    let host = &target.host;
    if addr_class::is_cloud_metadata(ip) {
        return Err(deny(
            DenialKind::CloudMetadata,
            format!("{host} resolves to cloud metadata address {ip}, connection rejected"),
        ));
    }
    let blocked = addr_class::is_always_blocked(ip);
    match plan.mode {
        DestinationMode::TrustedGatewayAlias(gw) => {
            let link_local = match ip {
                IpAddr::V4(a) => a.is_link_local(),
                IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
            };
            if ip != gw || !link_local {
                return Err(deny(
                    DenialKind::TrustedGateway,
                    format!(
                        "{host} resolves to {ip} which does not match trusted host gateway {gw}"
                    ),
                ));
            }
        }
        DestinationMode::ExplicitAllowedIps => {
            if blocked
                || !plan
                    .allowed_ips
                    .iter()
                    .any(|net| net.contains(&canonical(ip)))
            {
                return Err(deny(
                    DenialKind::AllowedIps,
                    format!(
                        "{host} resolves to {ip} which is not in allowed_ips, connection rejected"
                    ),
                ));
            }
        }
        DestinationMode::ImplicitIpLiteral(lit) => {
            if blocked || canonical(ip) != canonical(lit) {
                return Err(deny(
                    DenialKind::DeclaredEndpoint,
                    format!("{host} resolves to {ip} which is not the declared address, connection rejected"),
                ));
            }
        }
        DestinationMode::ExactDeclaredHost => {
            if blocked {
                return Err(deny(
                    DenialKind::DeclaredEndpoint,
                    format!("{host} resolves to always-blocked address {ip}, connection rejected"),
                ));
            }
        }
        DestinationMode::DefaultPublicOnly => {
            if addr_class::is_internal(ip) {
                return Err(deny(
                    DenialKind::InternalAddress,
                    format!("{host} resolves to internal address {ip}, connection rejected"),
                ));
            }
        }
    }
    Ok(())
}

fn canonical(ip: IpAddr) -> IpAddr {
    crate::egress::canonical_ip(ip)
}

#[cfg(test)]
mod tests;
