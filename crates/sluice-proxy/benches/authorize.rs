//! `authorize()` cost against generated policies of 100, 1,000 and 10,000
//! endpoints: an exact-host hit, a `*.domain` glob hit and a miss, with
//! identity required and a resolved caller (`/usr/bin/curl`, two ancestors).
//!
//! Run: `cargo bench -p sluice-proxy --bench authorize`. Sample counts are
//! small so the whole run stays under a minute; criterion writes the median
//! of each benchmark to `target/criterion/authorize/<id>/new/estimates.json`.

use std::fmt::Write as _;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use sluice_policy::PolicySnapshot;
use sluice_proxy::egress::{
    authorize, AuthorizeContext, EgressIntent, IdentityEvidence, IdentityMode, ProcessIdentity,
    Surface, Target,
};

/// Endpoints per generated policy.
const PER_POLICY: usize = 10;

/// A policy YAML with `n` endpoints spread over `n / 10` policies.
///
/// Per policy: 7 exact hosts (`svc<j>.p<i>.example.com`), 3 globs
/// (`*.g<j>.p<i>.example.net`), ports 443 or 443+8080. Binaries: every
/// policy allows `/usr/bin/curl`; every third also has `/usr/lib/tool<i>/*`
/// and `/opt/p<i>/bin/**` globs (listed first, so the matcher walks them).
fn policy_yaml(n: usize) -> String {
    let mut y = String::from("version: 1\nnetwork_policies:\n");
    for p in 0..n / PER_POLICY {
        let _ = writeln!(y, "  p{p:05}:\n    endpoints:");
        for j in 0..PER_POLICY {
            if j < 7 {
                let _ = writeln!(y, "      - host: svc{j}.p{p}.example.com");
            } else {
                let _ = writeln!(y, "      - host: \"*.g{j}.p{p}.example.net\"");
            }
            if j % 2 == 0 {
                let _ = writeln!(y, "        port: 443");
            } else {
                let _ = writeln!(y, "        ports: [443, 8080]");
            }
        }
        y.push_str("    binaries:\n");
        if p % 3 == 0 {
            let _ = writeln!(y, "      - path: \"/usr/lib/tool{p}/*\"");
            let _ = writeln!(y, "      - path: \"/opt/p{p}/bin/**\"");
        }
        y.push_str("      - path: /usr/bin/curl\n");
    }
    y
}

fn snapshot(n: usize) -> Arc<PolicySnapshot> {
    let src = policy_yaml(n);
    let loaded = sluice_policy::load_str(&src, "bench.yaml", 1)
        .unwrap_or_else(|e| panic!("generated policy does not load: {e:?}"));
    assert_eq!(loaded.snapshot.endpoints().len(), n);
    Arc::new(loaded.snapshot)
}

fn intent(authority: &str) -> EgressIntent {
    let process = ProcessIdentity {
        pid: 4242,
        exe: "/usr/bin/curl".into(),
        exe_sha256: "0".repeat(64),
        ancestors: vec!["/usr/bin/bash".into(), "/usr/sbin/sshd".into()],
        cmdline_paths: Vec::new(),
    };
    EgressIntent {
        surface: Surface::Connect,
        target: Target::parse_authority(authority).expect("valid authority"),
        client: SocketAddr::from(([127, 0, 0, 1], 40000)),
        identity: IdentityEvidence::Resolved(Arc::new(process)),
    }
}

fn bench_authorize(c: &mut Criterion) {
    let ctx = AuthorizeContext {
        identity_mode: IdentityMode::Required,
        trusted_gateway: None,
    };
    let mut group = c.benchmark_group("authorize");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1200));
    for n in [100usize, 1_000, 10_000] {
        let snap = snapshot(n);
        // Targets in the middle of the policy list (a policy with binary globs).
        let mid = (n / PER_POLICY / 2) / 3 * 3;
        let cases = [
            (
                "exact_hit",
                intent(&format!("svc3.p{mid}.example.com:443")),
                true,
            ),
            (
                "glob_hit",
                intent(&format!("api.g8.p{mid}.example.net:443")),
                true,
            ),
            ("miss", intent("nothing.example.org:443"), false),
        ];
        for (name, it, allowed) in cases {
            assert_eq!(
                authorize(&snap, it.clone(), &ctx).is_allowed(),
                allowed,
                "{name} at {n}"
            );
            group.bench_with_input(BenchmarkId::new(name, n), &it, |b, it| {
                b.iter(|| black_box(authorize(&snap, black_box(it).clone(), &ctx)));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_authorize);
criterion_main!(benches);
