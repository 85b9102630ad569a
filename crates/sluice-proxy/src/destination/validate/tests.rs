use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use super::*;

fn plan(mode: DestinationMode, cidrs: &[&str]) -> DestinationPlan {
    DestinationPlan {
        mode,
        allowed_ips: cidrs
            .iter()
            .map(|c| c.parse().unwrap())
            .collect::<Vec<_>>()
            .into(),
    }
}

fn resolver() -> Resolver {
    let mut m: HashMap<String, Vec<IpAddr>> = HashMap::new();
    let mut add = |n: &str, ips: &[&str]| {
        m.insert(n.into(), ips.iter().map(|i| i.parse().unwrap()).collect());
    };
    add("public.test", &["8.8.8.8"]);
    add("private.test", &["10.0.0.5"]);
    add("mixed.test", &["8.8.8.8", "10.0.0.5"]);
    add("loop.test", &["127.0.0.1"]);
    add("meta.test", &["169.254.169.254"]);
    add("mapped.test", &["::ffff:10.0.0.5"]);
    add("nat64.test", &["64:ff9b::a00:5"]);
    add("gw.test", &["169.254.1.1"]);
    Resolver::new(m, Duration::from_secs(1), false)
}

fn target(h: &str, port: u16) -> Target {
    Target::parse_authority(&format!("{h}:{port}")).unwrap()
}

/// (mode, allowed_ips, host, port, expected).
type Case = (
    DestinationMode,
    Vec<&'static str>,
    &'static str,
    u16,
    Result<(), DenialKind>,
);

#[tokio::test]
async fn mode_table() {
    use DenialKind::*;
    use DestinationMode::*;
    let gw: IpAddr = "169.254.1.1".parse().unwrap();
    let lit: IpAddr = "10.0.0.5".parse().unwrap();
    // (mode, allowed_ips, host, port, expected)
    let cases: Vec<Case> = vec![
        (DefaultPublicOnly, vec![], "public.test", 443, Ok(())),
        (
            DefaultPublicOnly,
            vec![],
            "private.test",
            443,
            Err(InternalAddress),
        ),
        (
            DefaultPublicOnly,
            vec![],
            "mixed.test",
            443,
            Err(InternalAddress),
        ),
        (
            DefaultPublicOnly,
            vec![],
            "mapped.test",
            443,
            Err(InternalAddress),
        ),
        (
            DefaultPublicOnly,
            vec![],
            "nat64.test",
            443,
            Err(InternalAddress),
        ),
        (
            DefaultPublicOnly,
            vec![],
            "loop.test",
            443,
            Err(InternalAddress),
        ),
        (
            DefaultPublicOnly,
            vec![],
            "meta.test",
            80,
            Err(CloudMetadata),
        ),
        (
            DefaultPublicOnly,
            vec![],
            "public.test",
            6443,
            Err(ControlPlanePort),
        ),
        (
            DefaultPublicOnly,
            vec![],
            "metadata.google.internal",
            80,
            Err(CloudMetadata),
        ),
        (DefaultPublicOnly, vec![], "unknown.test", 80, Err(Dns)),
        (ExactDeclaredHost, vec![], "private.test", 443, Ok(())),
        (ExactDeclaredHost, vec![], "mixed.test", 443, Ok(())),
        (
            ExactDeclaredHost,
            vec![],
            "loop.test",
            443,
            Err(DeclaredEndpoint),
        ),
        (
            ExactDeclaredHost,
            vec![],
            "meta.test",
            443,
            Err(CloudMetadata),
        ),
        (
            ExactDeclaredHost,
            vec![],
            "private.test",
            10250,
            Err(ControlPlanePort),
        ),
        (
            ExplicitAllowedIps,
            vec!["10.0.0.0/24"],
            "private.test",
            5432,
            Ok(()),
        ),
        (
            ExplicitAllowedIps,
            vec!["10.0.0.0/24"],
            "mapped.test",
            5432,
            Ok(()),
        ),
        (
            ExplicitAllowedIps,
            vec!["10.0.1.0/24"],
            "private.test",
            5432,
            Err(AllowedIps),
        ),
        (
            ExplicitAllowedIps,
            vec!["10.0.0.0/24"],
            "mixed.test",
            5432,
            Err(AllowedIps),
        ),
        (
            ExplicitAllowedIps,
            vec!["10.0.0.0/24"],
            "private.test",
            2379,
            Err(ControlPlanePort),
        ),
        (ImplicitIpLiteral(lit), vec![], "10.0.0.5", 9000, Ok(())),
        (
            ImplicitIpLiteral(lit),
            vec![],
            "[::ffff:10.0.0.5]",
            9000,
            Ok(()),
        ),
        (
            ImplicitIpLiteral(lit),
            vec![],
            "10.0.0.6",
            9000,
            Err(DeclaredEndpoint),
        ),
        (TrustedGatewayAlias(gw), vec![], "gw.test", 8080, Ok(())),
        (
            TrustedGatewayAlias(gw),
            vec![],
            "private.test",
            8080,
            Err(TrustedGateway),
        ),
        (
            TrustedGatewayAlias(gw),
            vec![],
            "meta.test",
            8080,
            Err(CloudMetadata),
        ),
    ];
    let r = resolver();
    for (mode, cidrs, host, port, want) in cases {
        let got = validate(&plan(mode, &cidrs), &target(host, port), &r)
            .await
            .map(|c| {
                assert!(!c.addrs().is_empty());
                assert!(c.addrs().iter().all(|a| a.port() == port));
            })
            .map_err(|d| d.kind);
        assert_eq!(got, want, "{mode:?} {host}:{port}");
    }
}

#[tokio::test]
async fn connector_pins_validated_addresses_only() {
    let c = validate(
        &plan(DestinationMode::ExactDeclaredHost, &[]),
        &target("mixed.test", 8443),
        &resolver(),
    )
    .await
    .unwrap();
    let got: Vec<String> = c.addrs().iter().map(ToString::to_string).collect();
    assert_eq!(got, ["8.8.8.8:8443", "10.0.0.5:8443"]);
}

#[test]
fn check_pinned_rejudges_without_dns() {
    let p = plan(DestinationMode::ExplicitAllowedIps, &["10.0.0.0/24"]);
    let t = target("private.test", 5432);
    assert!(check_pinned(&p, &t, "10.0.0.5".parse().unwrap()).is_ok());
    let narrower = plan(DestinationMode::ExplicitAllowedIps, &["10.0.9.0/24"]);
    assert_eq!(
        check_pinned(&narrower, &t, "10.0.0.5".parse().unwrap()).map_err(|d| d.kind),
        Err(DenialKind::AllowedIps)
    );
}
