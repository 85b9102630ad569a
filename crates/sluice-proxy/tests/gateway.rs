//! The library API end to end: a [`Gateway`] embedded in this test, real
//! curl through it to a real upstream in a network namespace, the embedding
//! program's identity provider and audit sink, and policy replacement under
//! the capability contract. Needs root (CI is root).

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sluice_proxy::egress::{IdentityResolver, ProcessIdentity};
use sluice_proxy::gateway::{Gateway, GatewayError, PolicySource};
use sluice_proxy::metrics::Metrics;
use sluice_telemetry::AuditSink;
use sluice_test_support::{recorded, Netns, TempDir};

/// The embedding supervisor's view: every connection comes from curl.
/// Counts its lookups, to show the gateway asked it.
struct Supervisor(AtomicUsize);

impl IdentityResolver for Supervisor {
    fn resolve(&self, _peer: SocketAddr, _local: SocketAddr) -> Result<ProcessIdentity, String> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(ProcessIdentity {
            pid: 7,
            exe: "/usr/bin/curl".into(),
            exe_sha256: String::new(),
            ancestors: Vec::new(),
            cmdline_paths: Vec::new(),
            sandbox_pid: None,
        })
    }
}

fn policy(host: &str) -> String {
    format!(
        "version: 1\nnetwork_policies:\n  api:\n    endpoints:\n      - {{ host: {host}, port: 8080 }}\n    binaries:\n      - {{ path: /usr/bin/curl }}\n"
    )
}

/// `curl -x PROXY URL`: the status code.
async fn curl(proxy: SocketAddr, url: &str) -> String {
    let (proxy, url) = (format!("http://{proxy}"), url.to_owned());
    tokio::task::spawn_blocking(move || {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
            ])
            .args(["-x", &proxy, &url])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .expect("curl task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_gateway_enforces_and_replaces_its_policy() {
    let dir = TempDir::new("gateway");
    let ns = Netns::new();
    let record = dir.path("upstream.jsonl");
    ns.start_upstream(8080, &record);
    let ip = ns.ns_ip.parse().expect("ns ip");

    let (sink, events) = AuditSink::memory();
    let supervisor = Arc::new(Supervisor(AtomicUsize::new(0)));
    let metrics = Metrics::enabled();
    let gateway = Gateway::builder(
        PolicySource::text(policy("api.test"), "embedded.yaml"),
        dir.path("state"),
    )
    .listen("127.0.0.1:0".parse().expect("addr"))
    .audit(sink)
    .identity(supervisor.clone())
    .metrics(metrics.clone())
    .add_host("api.test", ip)
    .add_host("other.test", ip)
    .system_dns(false)
    .build()
    .await
    .expect("gateway");
    let (proxy, handle) = (gateway.local_addr(), gateway.handle());
    assert!(gateway.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    // A replacement that needs transparent capture is refused, located.
    let tcp = policy("api.test").replace("port: 8080 }", "port: 8080, protocol: tcp }");
    match handle.replace_policy(&tcp, "replacement.yaml") {
        Err(GatewayError::Reload(e)) => assert!(
            e.to_string().contains(
                "replacement.yaml:5:49: network_policies.api.endpoints[0].protocol: needs transparent capture, which an embedded gateway cannot enforce"
            ),
            "{e}"
        ),
        other => panic!("expected a located refusal, got {other:?}"),
    }
    assert_eq!(handle.policy().generation(), 1);

    let served = tokio::spawn(gateway.serve());
    assert_eq!(curl(proxy, "http://api.test:8080/embedded").await, "200");
    assert_eq!(curl(proxy, "http://other.test:8080/denied").await, "403");

    // Another host instead, while serving: generation 2 decides at once.
    let next = handle
        .replace_policy(&policy("other.test"), "replacement.yaml")
        .expect("replaced");
    assert_eq!(next, 2);
    assert_eq!(curl(proxy, "http://other.test:8080/second").await, "200");
    assert_eq!(curl(proxy, "http://api.test:8080/denied").await, "403");
    let paths: Vec<String> = recorded(&record)
        .iter()
        .filter_map(|r| r["path"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        paths,
        ["/embedded", "/second"],
        "only the allowed requests arrived"
    );
    assert!(
        supervisor.0.load(Ordering::Relaxed) >= 4,
        "identity asked per connection"
    );

    let messages: Vec<String> = events
        .events()
        .iter()
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("api.test:8080/embedded")),
        "{messages:#?}"
    );
    let loaded = events
        .events()
        .into_iter()
        .find(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Policy loaded"))
        })
        .expect("policy loaded event");
    assert_eq!(loaded["unmapped"]["runtime_mode"], "library");
    // The embedder's counters: two allowed and two denied forward requests.
    let text = metrics.encode();
    for line in [
        "sluice_decisions_total{surface=\"forward_http\",outcome=\"allow\"} 2",
        "sluice_decisions_total{surface=\"forward_http\",outcome=\"deny\"} 2",
        "sluice_policy_generation 2",
        "sluice_ready 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    assert_eq!(loaded["unmapped"]["capabilities"][0], "process-identity");
    served.abort();
}

#[tokio::test]
async fn binaries_without_an_identity_provider_are_refused() {
    let dir = TempDir::new("gateway-noid");
    let err = Gateway::builder(
        PolicySource::text(policy("api.test"), "embedded.yaml"),
        dir.path("state"),
    )
    .listen("127.0.0.1:0".parse().expect("addr"))
    .build()
    .await
    .expect_err("refused");
    assert!(matches!(err, GatewayError::Capability(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "embedded.yaml:6:5: network_policies.api.binaries: needs process identity, which an embedded gateway cannot enforce (give the gateway an identity provider, or remove `binaries`)"
    );
    // Endpoint-only with a policy that has no binaries builds.
    let open = policy("api.test").replace("    binaries:\n      - { path: /usr/bin/curl }\n", "");
    let gateway = Gateway::builder(PolicySource::text(open, "open.yaml"), dir.path("state"))
        .listen("127.0.0.1:0".parse().expect("addr"))
        .build()
        .await
        .expect("builds");
    assert_ne!(gateway.local_addr().port(), 0);
}
