//! `sluice check` and `sluice explain` on real files.

use std::process::Command;

fn sluice(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .expect("run sluice");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

const FIXTURES: &str = "crates/sluice-policy/tests/fixtures";

#[test]
fn check_accepts_valid_files_including_openshell_shapes() {
    let files = [
        "examples/policy.yaml".to_owned(),
        format!("{FIXTURES}/openshell-example.yaml"),
        format!("{FIXTURES}/valid-openshell-typical.yaml"),
    ];
    let args: Vec<&str> = std::iter::once("check")
        .chain(files.iter().map(String::as_str))
        .collect();
    let (code, out) = sluice(&args);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("examples/policy.yaml: ok"), "{out}");
    assert!(out.contains("static section `filesystem_policy`"), "{out}");
}

#[test]
fn check_reports_file_line_col_and_exits_1() {
    let cases = [
        ("invalid-bad-indent.yaml", "invalid-bad-indent.yaml:"),
        (
            "invalid-ambiguity-protocol.yaml",
            "overlaps network_policies.",
        ),
        ("invalid-unknown-key.yaml", "unknown field"),
        (
            "invalid-allowed-ips-loopback.yaml",
            "invalid-allowed-ips-loopback.yaml:",
        ),
    ];
    for (file, needle) in cases {
        let path = format!("{FIXTURES}/{file}");
        let (code, out) = sluice(&["check", &path]);
        assert_eq!(code, 1, "{file}: {out}");
        assert!(out.contains(needle), "{file}: {out}");
        // FILE:LINE:COL: message
        let first = out.lines().next().unwrap_or_default();
        let mut parts = first.splitn(4, ':');
        assert_eq!(parts.next(), Some(path.as_str()), "{first}");
        assert!(
            parts.next().unwrap_or_default().parse::<u32>().is_ok(),
            "line in {first}"
        );
        assert!(
            parts.next().unwrap_or_default().parse::<u32>().is_ok(),
            "col in {first}"
        );
    }
}

#[test]
fn explain_prints_the_decision() {
    let (code, out) = sluice(&[
        "explain",
        "--policy",
        "examples/policy.yaml",
        "--binary",
        "/usr/bin/curl",
        "api.demo.internal",
        "8080",
    ]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["policy"], "demo");
    assert_eq!(v["destination_mode"], "exact_declared_host");
    assert_eq!(v["tls"], "auto");
    assert_eq!(v["generation"], 1);
    let (_, out) = sluice(&[
        "explain",
        "--policy",
        "examples/policy.yaml",
        "--binary",
        "/usr/bin/wget",
        "api.demo.internal",
        "8080",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["decision"], "deny");
    assert_eq!(
        v["reason"],
        "binary '/usr/bin/wget' not allowed in policy 'demo' (ancestors: [])"
    );
    let (_, out) = sluice(&[
        "explain",
        "--policy",
        "examples/policy.yaml",
        "--method",
        "GET",
        "--path",
        "/repos/a/b",
        "api.github.com",
        "443",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["protocol"], "rest");
    assert_eq!(v["l7"]["verdict"], "allow", "{v}");
}

/// A deny comes with the snippet that would allow it, and the snippet does:
/// appended to the policy (which ends in `network_policies`), the same
/// question is answered `allow`. The same for a REST rule.
#[test]
fn explain_suggests_the_change_that_allows() {
    let dir = sluice_test_support::TempDir::new("explain-suggest");
    let policy = dir.path("p.yaml");
    let base = "version: 1\nnetwork_policies:\n  demo:\n    endpoints:\n      - { host: api.test, port: 443, protocol: rest, enforcement: enforce, access: read-only }\n    binaries:\n      - { path: /usr/bin/curl }\n";
    std::fs::write(&policy, base).unwrap();
    let p = policy.to_str().unwrap();
    let ask = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["explain", "--policy", p];
        all.extend_from_slice(args);
        let (code, out) = sluice(&all);
        assert_eq!(code, 0, "{out}");
        serde_json::from_str(&out).unwrap()
    };
    let v = ask(&["--binary", "/usr/bin/wget", "other.test", "443"]);
    assert_eq!(v["decision"], "deny");
    let snippet = v["suggestion"].as_str().expect("suggestion");
    std::fs::write(&policy, format!("{base}{snippet}")).unwrap();
    let v = ask(&["--binary", "/usr/bin/wget", "other.test", "443"]);
    assert_eq!(v["decision"], "allow", "{snippet}");

    let v = ask(&[
        "--binary",
        "/usr/bin/curl",
        "--method",
        "DELETE",
        "--path",
        "/repos/x?y=1",
        "api.test",
        "443",
    ]);
    assert_eq!(v["l7"]["verdict"], "deny", "{v}");
    assert_eq!(v["l7"]["reason"], "DELETE /repos/x not permitted by policy");
    assert!(
        v["l7"]["suggestion"]
            .as_str()
            .is_some_and(|s| s.contains("- allow: { method: DELETE, path: \"/repos/x\" }")),
        "{v}"
    );
}

/// `explain --body` runs the relay's own request evaluation: a JSON-RPC
/// endpoint's verdict depends on the body's method, a body with a repeated key
/// is refused, and without a body the answer says the rules need it.
#[test]
fn explain_evaluates_bodies_like_the_relay() {
    let dir = sluice_test_support::TempDir::new("explain-body");
    let policy = dir.path("p.yaml");
    std::fs::write(
        &policy,
        "version: 1\nnetwork_policies:\n  rpc:\n    endpoints:\n      - { host: rpc.test, port: 8545, protocol: json-rpc, enforcement: enforce, rules: [ { allow: { method: reports.list } } ] }\n    binaries:\n      - { path: /usr/bin/curl }\n",
    )
    .unwrap();
    let p = policy.to_str().unwrap();
    let l7 = |body: Option<&str>| -> serde_json::Value {
        let mut args = vec![
            "explain",
            "--policy",
            p,
            "--binary",
            "/usr/bin/curl",
            "--path",
            "/",
        ];
        match body {
            Some(b) => args.extend(["--body", b]),
            None => args.extend(["--method", "POST"]),
        }
        args.extend(["rpc.test", "8545"]);
        let (code, out) = sluice(&args);
        assert_eq!(code, 0, "{out}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["l7"].clone()
    };
    let allowed = l7(Some(r#"{"jsonrpc":"2.0","id":1,"method":"reports.list"}"#));
    assert_eq!(allowed["verdict"], "allow", "{allowed}");
    let denied = l7(Some(
        r#"{"jsonrpc":"2.0","id":1,"method":"reports.delete"}"#,
    ));
    assert_eq!(denied["verdict"], "deny", "{denied}");
    let twice = l7(Some(
        r#"{"jsonrpc":"2.0","id":1,"method":"reports.delete","method":"reports.list"}"#,
    ));
    assert_eq!(twice["verdict"], "deny", "{twice}");
    assert!(
        twice["reason"]
            .as_str()
            .is_some_and(|r| r.contains("duplicate key")),
        "{twice}"
    );
    assert_eq!(l7(None)["verdict"], "needs_body");
    let (_, get) = sluice(&[
        "explain",
        "--policy",
        p,
        "--binary",
        "/usr/bin/curl",
        "--method",
        "GET",
        "--path",
        "/",
        "rpc.test",
        "8545",
    ]);
    assert!(get.contains("accept POST only"), "{get}");
}

/// A policy with one of each thing a runtime mode may not be able to
/// enforce: `binaries` (line 6), `protocol: tcp` (line 5), a middleware
/// (line 10) and a metadata provider (line 15).
const NEEDY: &str = "version: 1
network_policies:
  tools:
    endpoints:
      - { host: cache.example.com, port: 6379, protocol: tcp }
    binaries: [ { path: /usr/bin/redis-cli } ]
network_middlewares:
  dlp:
    order: 1
    middleware: acme/dlp
    endpoints: { include: [cache.example.com] }
providers:
  gcp:
    credentials: { GCP_ADC_ACCESS_TOKEN: { env: E2E_CAPS_TOKEN } }
    metadata: gce
    endpoints: [ { host: storage.example.com, port: 443 } ]
";

fn sluice_with_token(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env("E2E_CAPS_TOKEN", "ya29.caps-test")
        .output()
        .expect("run sluice");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// The capability contract offline (`check --mode`) and at `serve`'s start:
/// each mode refuses, located, what it cannot enforce.
#[test]
fn each_mode_refuses_what_it_cannot_enforce() {
    let dir = sluice_test_support::TempDir::new("caps");
    let file = dir.path("needy.yaml");
    std::fs::write(&file, NEEDY).expect("policy");
    let f = file.to_str().expect("utf-8 path");

    let (code, out) = sluice_with_token(&["check", f]);
    assert_eq!(code, 0, "valid without --mode: {out}");
    let (code, out) = sluice_with_token(&["check", "--mode", "run", "--middleware", "acme/dlp", f]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("enforceable by run"), "{out}");

    // (args, the located lines expected, lines that must not appear)
    let cases: [(&[&str], &[&str], &[&str]); 3] = [
        (
            &["--mode", "run"],
            &["needy.yaml:10:17: network_middlewares.dlp.middleware: needs middleware `acme/dlp`, which `sluice run` cannot enforce (register it with `--middleware acme/dlp=URL`; available: sluice/regex, sluice/secrets, sluice/size)"],
            &["needs process identity", "needs transparent capture"],
        ),
        (
            &["--mode", "serve", "--middleware", "acme/dlp"],
            &[
                "needy.yaml:5:58: network_policies.tools.endpoints[0].protocol: needs transparent capture, which `sluice serve` cannot enforce",
                "needy.yaml:15:15: providers.gcp.metadata: needs the gce metadata loopback",
            ],
            &["needs process identity", "needs middleware"],
        ),
        (
            &["--mode", "sidecar", "--identity", "endpoint-only", "--middleware", "acme/dlp"],
            &[
                "needy.yaml:6:5: network_policies.tools.binaries: needs process identity, which the sidecar cannot enforce (run with `--identity required`, or remove `binaries`)",
                "needy.yaml:15:15: providers.gcp.metadata",
            ],
            &["needs transparent capture"],
        ),
    ];
    for (args, expected, absent) in cases {
        let all: Vec<&str> = std::iter::once("check")
            .chain(args.iter().copied())
            .chain([f])
            .collect();
        let (code, out) = sluice_with_token(&all);
        assert_eq!(code, 1, "{args:?}: {out}");
        for e in expected {
            assert!(out.contains(e), "{args:?}: {e}\n{out}");
        }
        for a in absent {
            assert!(!out.contains(a), "{args:?}: {a}\n{out}");
        }
    }

    // `serve` itself refuses to start on it, with the same located errors.
    let (code, out) = sluice_with_token(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--middleware",
        "acme/dlp=http://127.0.0.1:9",
        "--state-dir",
        dir.path("state").to_str().expect("utf-8"),
        "--policy",
        f,
    ]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("needy.yaml:5:58: network_policies.tools.endpoints[0].protocol: needs transparent capture"),
        "{out}"
    );
    assert!(!out.contains("listening on"), "{out}");
}
