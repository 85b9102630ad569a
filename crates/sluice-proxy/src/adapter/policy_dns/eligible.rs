//! Which names policy DNS answers with a synthetic address: the
//! `--transparent` mode applied to the policy in force.

use std::str::FromStr;
use std::sync::Arc;

use sluice_policy::{EndpointId, HostPattern, HostRef, PolicySnapshot, Protocol};

use super::answer::Eligibility;

/// `--transparent tcp|all|off`: which endpoint names get synthetic addresses
/// (and so which connections the transparent listener captures).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TransparentMode {
    /// Names of endpoints of the native TCP protocols: `protocol: tcp`
    /// (OpenShell's rule; a captured connection is copied raw) and the
    /// protocols a processor serves, `redis` and `postgres` (clients such as
    /// `redis-cli` and `psql` ignore proxy variables).
    #[default]
    Tcp,
    /// Every endpoint name; captured connections are handled like a CONNECT
    /// to the name (TLS terminated where the endpoint is inspected).
    All,
    /// None: every query is refused.
    Off,
}

impl FromStr for TransparentMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tcp" => Ok(Self::Tcp),
            "all" => Ok(Self::All),
            "off" => Ok(Self::Off),
            other => Err(format!("`{other}`: expected tcp, all or off")),
        }
    }
}

impl TransparentMode {
    /// Whether `protocol` endpoints get synthetic addresses in this mode.
    #[must_use]
    pub fn covers(self, protocol: Protocol) -> bool {
        match self {
            Self::Tcp => protocol == Protocol::Tcp || protocol.is_native(),
            Self::All => true,
            Self::Off => false,
        }
    }
}

/// [`Eligibility`] over one policy snapshot: a name is eligible when an
/// endpoint the mode covers names it (exactly or by a DNS glob). Endpoints
/// without a name (`allowed_ips` only, IP literals) never make a name
/// eligible: a label that only some address range would allow must not get
/// an answer. The ports are the union over every such endpoint.
#[derive(Debug)]
pub struct PolicyEligibility<'a> {
    snapshot: &'a PolicySnapshot,
    mode: TransparentMode,
}

impl<'a> PolicyEligibility<'a> {
    /// Names of `snapshot` under `mode`.
    #[must_use]
    pub fn new(snapshot: &'a PolicySnapshot, mode: TransparentMode) -> Self {
        Self { snapshot, mode }
    }
}

impl Eligibility for PolicyEligibility<'_> {
    fn eligible(&self, name: &str) -> Option<(EndpointId, Arc<[u16]>, u64)> {
        if self.mode == TransparentMode::Off
            || name.is_empty()
            || name.parse::<std::net::IpAddr>().is_ok()
        {
            return None;
        }
        let mut first = None;
        let mut ports: Vec<u16> = Vec::new();
        for e in self.snapshot.endpoints() {
            if matches!(e.host, HostPattern::Ip(_) | HostPattern::Any)
                || !self.mode.covers(e.protocol)
                || !e.host.matches(HostRef::Name(name))
            {
                continue;
            }
            first.get_or_insert(e.id);
            ports.extend_from_slice(&e.ports);
        }
        let endpoint = first?;
        ports.sort_unstable();
        ports.dedup();
        Some((endpoint, ports.into(), self.snapshot.generation()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
version: 1
network_policies:
  cache:
    endpoints:
      - { host: cache.internal, port: 6379, protocol: tcp }
      - { host: pg.db.internal, port: 5432, protocol: tcp }
      - { host: cache.internal, port: 6380, protocol: tcp }
  native:
    endpoints:
      - host: redis.internal
        port: 6379
        protocol: redis
        enforcement: enforce
        rules: [ { allow: { command: PING } } ]
      - host: pg.internal
        port: 5432
        protocol: postgres
        enforcement: enforce
        rules: [ { allow: { statement: select } } ]
      - host: api.internal
        port: 8080
        protocol: rest
        enforcement: enforce
        access: read-only
  web:
    endpoints:
      - { host: api.example.com, port: 443 }
      - { host: "*.svc.internal", port: 8443 }
      - { port: 9443, allowed_ips: ["10.0.0.0/8"] }
"#;

    fn snapshot() -> PolicySnapshot {
        sluice_policy::load_str(POLICY, "test.yaml", 1)
            .expect("policy")
            .snapshot
    }

    #[test]
    fn modes_pick_names_and_ports() {
        let s = snapshot();
        let cases: &[(TransparentMode, &str, Option<&[u16]>)] = &[
            (TransparentMode::Tcp, "cache.internal", Some(&[6379, 6380])),
            (TransparentMode::Tcp, "pg.db.internal", Some(&[5432])),
            (TransparentMode::Tcp, "db.internal", None),
            (TransparentMode::Tcp, "redis.internal", Some(&[6379])),
            (TransparentMode::Tcp, "pg.internal", Some(&[5432])),
            (TransparentMode::Tcp, "api.internal", None),
            (TransparentMode::All, "api.internal", Some(&[8080])),
            (TransparentMode::Off, "redis.internal", None),
            (TransparentMode::Tcp, "api.example.com", None),
            (TransparentMode::All, "api.example.com", Some(&[443])),
            (TransparentMode::All, "cache.internal", Some(&[6379, 6380])),
            (TransparentMode::All, "other.example.com", None),
            (TransparentMode::All, "a.svc.internal", Some(&[8443])),
            (TransparentMode::Tcp, "a.svc.internal", None),
            (TransparentMode::All, "a.b.svc.internal", None),
            (TransparentMode::All, "10.1.2.3", None),
            (TransparentMode::All, "", None),
            (TransparentMode::Off, "cache.internal", None),
        ];
        for (mode, name, want) in cases {
            let got = PolicyEligibility::new(&s, *mode).eligible(name);
            assert_eq!(
                got.as_ref().map(|(_, p, _)| &p[..]),
                *want,
                "{mode:?} {name}"
            );
            if let Some((_, _, generation)) = got {
                assert_eq!(generation, s.generation());
            }
        }
    }

    #[test]
    fn mode_parses() {
        assert_eq!("tcp".parse(), Ok(TransparentMode::Tcp));
        assert_eq!("all".parse(), Ok(TransparentMode::All));
        assert_eq!("off".parse(), Ok(TransparentMode::Off));
        assert!("TCP".parse::<TransparentMode>().is_err());
    }
}
