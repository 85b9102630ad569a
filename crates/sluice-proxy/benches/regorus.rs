//! sluice's `authorize()` against the Rego engine OpenShell embeds
//! (`regorus` 0.9), on the same generated 1,000-endpoint policy.
//!
//! The Rego program below follows the matching rules OpenShell's
//! `sandbox-policy.rego` applies to an L4 decision (design facts §2.3): a
//! policy grants when one of its endpoints matches (exact host,
//! case-insensitive, or a `.`-delimited `glob.match`, plus port ∈ `ports`)
//! and one of its binaries matches (exact path == exe, exact path ∈
//! ancestors, or a `/`-delimited glob over `[exe] + ancestors`); the decision
//! names the lexicographically smallest granting policy. The data document
//! (`network_policies`, `port` already normalised to `ports`) is generated
//! from the same endpoint list as the sluice YAML. Per evaluation: build
//! the input document (exec + network), `set_input`, `eval_rule` of the
//! decision, as OpenShell does per connection (one query; it makes four on
//! the full path, so this favours regorus).
//!
//! Run: `cargo bench -p sluice-proxy --bench regorus`. Medians go to
//! `target/criterion/vs_regorus/{sluice,regorus}_<case>/1000/new/estimates.json`.

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use regorus::{Engine, Value};
use serde_json::json;
use sluice_proxy::egress::{authorize, AuthorizeContext, IdentityMode};

/// Endpoints in the compared policy.
const N: usize = 1_000;

const POLICY: &str = r#"
package sluice.bench

import rego.v1

endpoint_allowed(policy) if {
	some ep in policy.endpoints
	not contains(ep.host, "*")
	lower(ep.host) == input.network.host
	input.network.port in ep.ports
}

endpoint_allowed(policy) if {
	some ep in policy.endpoints
	contains(ep.host, "*")
	glob.match(lower(ep.host), ["."], input.network.host)
	input.network.port in ep.ports
}

binary_allowed(policy) if {
	some b in policy.binaries
	not contains(b.path, "*")
	b.path == input.exec.path
}

binary_allowed(policy) if {
	some b in policy.binaries
	not contains(b.path, "*")
	b.path in input.exec.ancestors
}

binary_allowed(policy) if {
	some b in policy.binaries
	contains(b.path, "*")
	some p in array.concat([input.exec.path], input.exec.ancestors)
	glob.match(b.path, ["/"], p)
}

granting_policies contains name if {
	some name, policy in data.network_policies
	endpoint_allowed(policy)
	binary_allowed(policy)
}

default decision := {"action": "deny", "matched_policy": ""}

decision := {"action": "allow", "matched_policy": min(granting_policies)} if {
	count(granting_policies) > 0
}
"#;

fn data_document(n: usize) -> String {
    let mut policies = serde_json::Map::new();
    for p in common::generate(n) {
        let endpoints: Vec<_> = p
            .endpoints
            .iter()
            .map(|(host, ports)| json!({ "host": host, "ports": ports }))
            .collect();
        let binaries: Vec<_> = p.binaries.iter().map(|b| json!({ "path": b })).collect();
        policies.insert(
            p.key.clone(),
            json!({ "name": p.key, "endpoints": endpoints, "binaries": binaries }),
        );
    }
    json!({ "network_policies": policies }).to_string()
}

fn input(host: &str, port: u16) -> Value {
    // Built per evaluation from the connection's facts, like OpenShell's
    // input document (host lower-cased by the adapter).
    let doc = json!({
        "exec": {
            "path": common::CALLER_EXE,
            "ancestors": common::CALLER_ANCESTORS,
            "cmdline_paths": [],
        },
        "network": { "host": host.to_ascii_lowercase(), "port": port },
    });
    Value::from_json_str(&doc.to_string()).expect("input document")
}

fn decide(engine: &mut Engine, host: &str, port: u16) -> Value {
    engine.set_input(input(host, port));
    engine
        .eval_rule("data.sluice.bench.decision".to_owned())
        .expect("rego evaluation")
}

fn bench_vs_regorus(c: &mut Criterion) {
    let snap = common::snapshot(N);
    let ctx = AuthorizeContext {
        identity_mode: IdentityMode::Required,
        trusted_gateway: None,
    };
    let mut engine = Engine::new();
    engine
        .add_policy("bench.rego".to_owned(), POLICY.to_owned())
        .expect("rego policy compiles");
    engine
        .add_data(Value::from_json_str(&data_document(N)).expect("data document"))
        .expect("data document loads");

    let mut group = c.benchmark_group("vs_regorus");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500));
    for (name, host, port, allowed) in common::cases(N) {
        // Both engines reach the same verdict (and the same policy) first.
        let it = common::intent(&format!("{host}:{port}"));
        assert_eq!(
            authorize(&snap, it.clone(), &ctx).is_ok(),
            allowed,
            "sluice {name}"
        );
        let d = decide(&mut engine, &host, port);
        let action = d["action"].as_string().expect("action").to_string();
        assert_eq!(action == "allow", allowed, "regorus {name}: {d}");
        if allowed {
            let key = d["matched_policy"].as_string().expect("policy").to_string();
            let mid = (N / common::PER_POLICY / 2) / 3 * 3;
            assert_eq!(key, format!("p{mid:05}"), "regorus {name}");
        }
        group.bench_with_input(
            BenchmarkId::new(format!("sluice_{name}"), N),
            &it,
            |b, it| {
                b.iter(|| black_box(authorize(&snap, black_box(it).clone(), &ctx)));
            },
        );
        group.bench_with_input(
            BenchmarkId::new(format!("regorus_{name}"), N),
            &(host, port),
            |b, (host, port)| b.iter(|| black_box(decide(&mut engine, black_box(host), *port))),
        );
    }
    group.finish();
}

criterion_group!(benches, bench_vs_regorus);
criterion_main!(benches);
