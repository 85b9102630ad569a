//! The generated policies shared by the `authorize` and `regorus` benches:
//! one list of endpoints, rendered as sluice policy YAML and as the Rego
//! data document of the equivalent OpenShell-style program.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use sluice_policy::PolicySnapshot;
use sluice_proxy::egress::{EgressIntent, IdentityEvidence, ProcessIdentity, Surface, Target};

/// Endpoints per generated policy.
pub(crate) const PER_POLICY: usize = 10;

/// One generated policy: key, endpoints (host, ports), binary paths.
pub(crate) struct GenPolicy {
    pub(crate) key: String,
    pub(crate) endpoints: Vec<(String, Vec<u16>)>,
    pub(crate) binaries: Vec<String>,
}

/// `n` endpoints spread over `n / 10` policies.
///
/// Per policy: 7 exact hosts (`svc<j>.p<i>.example.com`), 3 globs
/// (`*.g<j>.p<i>.example.net`), ports 443 or 443+8080. Binaries: every
/// policy allows `/usr/bin/curl`; every third also has `/usr/lib/tool<i>/*`
/// and `/opt/p<i>/bin/**` globs (listed first, so the matcher walks them).
pub(crate) fn generate(n: usize) -> Vec<GenPolicy> {
    (0..n / PER_POLICY)
        .map(|p| {
            let endpoints = (0..PER_POLICY)
                .map(|j| {
                    let host = if j < 7 {
                        format!("svc{j}.p{p}.example.com")
                    } else {
                        format!("*.g{j}.p{p}.example.net")
                    };
                    let ports = if j % 2 == 0 {
                        vec![443]
                    } else {
                        vec![443, 8080]
                    };
                    (host, ports)
                })
                .collect();
            let mut binaries = Vec::new();
            if p % 3 == 0 {
                binaries.push(format!("/usr/lib/tool{p}/*"));
                binaries.push(format!("/opt/p{p}/bin/**"));
            }
            binaries.push("/usr/bin/curl".to_owned());
            GenPolicy {
                key: format!("p{p:05}"),
                endpoints,
                binaries,
            }
        })
        .collect()
}

/// The sluice policy YAML of `generate(n)`.
pub(crate) fn policy_yaml(n: usize) -> String {
    let mut y = String::from("version: 1\nnetwork_policies:\n");
    for p in generate(n) {
        let _ = writeln!(y, "  {}:\n    endpoints:", p.key);
        for (host, ports) in &p.endpoints {
            let _ = writeln!(y, "      - host: \"{host}\"");
            if let [port] = ports.as_slice() {
                let _ = writeln!(y, "        port: {port}");
            } else {
                let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
                let _ = writeln!(y, "        ports: [{}]", ports.join(", "));
            }
        }
        y.push_str("    binaries:\n");
        for b in &p.binaries {
            let _ = writeln!(y, "      - path: \"{b}\"");
        }
    }
    y
}

/// The loaded snapshot of `policy_yaml(n)`.
pub(crate) fn snapshot(n: usize) -> Arc<PolicySnapshot> {
    let src = policy_yaml(n);
    let loaded = sluice_policy::load_str(&src, "bench.yaml", 1)
        .unwrap_or_else(|e| panic!("generated policy does not load: {e:?}"));
    assert_eq!(loaded.snapshot.endpoints().len(), n);
    Arc::new(loaded.snapshot)
}

/// A CONNECT intent for `authority` from `/usr/bin/curl` (two ancestors).
pub(crate) fn intent(authority: &str) -> EgressIntent {
    let process = ProcessIdentity {
        pid: 4242,
        exe: CALLER_EXE.into(),
        exe_sha256: "0".repeat(64),
        ancestors: CALLER_ANCESTORS.iter().map(|a| (*a).into()).collect(),
        cmdline_paths: Vec::new(),
        sandbox_pid: None,
    };
    EgressIntent {
        surface: Surface::Connect,
        target: Target::parse_authority(authority).expect("valid authority"),
        client: SocketAddr::from(([127, 0, 0, 1], 40000)),
        identity: IdentityEvidence::Resolved(Arc::new(process)),
    }
}

/// The resolved caller of every case.
pub(crate) const CALLER_EXE: &str = "/usr/bin/curl";
pub(crate) const CALLER_ANCESTORS: [&str; 2] = ["/usr/bin/bash", "/usr/sbin/sshd"];

/// The three cases at `n` endpoints: (name, host, port, allowed). Targets in
/// the middle of the policy list (a policy with binary globs).
pub(crate) fn cases(n: usize) -> [(&'static str, String, u16, bool); 3] {
    let mid = (n / PER_POLICY / 2) / 3 * 3;
    [
        ("exact_hit", format!("svc3.p{mid}.example.com"), 443, true),
        ("glob_hit", format!("api.g8.p{mid}.example.net"), 443, true),
        ("miss", "nothing.example.org".to_owned(), 443, false),
    ]
}
