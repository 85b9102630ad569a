//! `sluice test CASES --policy FILE`: decision test cases on real files,
//! through the real binary.

use std::process::Command;

use sluice_test_support::TempDir;

/// Runs sluice from the repository root: (exit code, stdout, stderr).
fn sluice(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .expect("run sluice");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const POLICY: &str = r#"version: 1
network_policies:
  github:
    endpoints:
      - { host: api.github.test, port: 443, protocol: rest, enforcement: enforce, access: read-only }
    binaries: [ { path: /usr/bin/curl } ]
  gql:
    endpoints:
      - host: gql.test
        port: 443
        path: /graphql
        protocol: graphql
        enforcement: enforce
        rules:
          - allow: { operation_type: query, fields: [viewer] }
    binaries: [ { path: /usr/bin/curl } ]
"#;

/// Writes the policy and a cases file; returns their paths.
fn files(dir: &TempDir, cases: &str) -> (String, String) {
    let policy = dir.path("policy.yaml");
    let file = dir.path("cases.yaml");
    std::fs::write(&policy, POLICY).expect("write policy");
    std::fs::write(&file, cases).expect("write cases");
    let s = |p: std::path::PathBuf| p.to_str().expect("utf-8 path").to_owned();
    (s(policy), s(file))
}

fn run_cases(tag: &str, cases: &str, extra: &[&str]) -> (i32, String, String) {
    let dir = TempDir::new(tag);
    let (policy, file) = files(&dir, cases);
    let mut args = vec!["test", file.as_str(), "--policy", policy.as_str()];
    args.extend_from_slice(extra);
    sluice(&args)
}

const PASSING: &str = r#"cases:
  - name: curl reads a repo
    host: api.github.test
    port: 443
    binary: /usr/bin/curl
    method: GET
    path: /repos/o/r
    expect: allow
    policy: github
  - name: curl cannot delete a repo
    host: api.github.test
    port: 443
    binary: /usr/bin/curl
    method: DELETE
    path: /repos/o/r
    expect: deny
    policy: github
  - name: wget is not allowed
    host: api.github.test
    port: 443
    binary: /usr/bin/wget
    expect: deny
  - name: an unlisted host
    host: example.com
    port: 443
    expect: deny
"#;

#[test]
fn policy_test_passing_file_exits_0_with_a_line_per_case() {
    let (code, out, err) = run_cases("ptest-pass", PASSING, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        "ok   curl reads a repo\nok   curl cannot delete a repo\nok   wget is not allowed\nok   an unlisted host\n4 passed, 0 failed\n"
    );
    assert_eq!(err, "");
}

#[test]
fn policy_test_failing_cases_are_named_with_decision_and_reason() {
    let cases = r#"cases:
  - name: wget reads a repo
    host: api.github.test
    port: 443
    binary: /usr/bin/wget
    expect: allow
  - name: curl reads a repo
    host: api.github.test
    port: 443
    binary: /usr/bin/curl
    expect: allow
  - name: curl deletes a repo
    host: api.github.test
    port: 443
    binary: /usr/bin/curl
    method: DELETE
    path: /repos/o/r
    expect: allow
  - name: example.com is open
    host: example.com
    port: 443
    expect: allow
  - name: reads are refused
    host: api.github.test
    port: 443
    method: GET
    path: /repos/o/r
    expect: deny
"#;
    let (code, out, _) = run_cases("ptest-fail", cases, &[]);
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "FAIL wget reads a repo: expected allow, got deny (reason: binary '/usr/bin/wget' not allowed in policy 'github' (ancestors: []))",
            "ok   curl reads a repo",
            "FAIL curl deletes a repo: expected allow, got deny (reason: DELETE /repos/o/r not permitted by policy; policy: github)",
            "FAIL example.com is open: expected allow, got deny (reason: endpoint example.com:443 is not allowed by any policy)",
            "FAIL reads are refused: expected deny, got allow (policy: github)",
            "1 passed, 4 failed",
        ],
        "{out}"
    );
}

#[test]
fn policy_test_policy_key_mismatch_names_both() {
    let cases = r#"cases:
  - name: graphql is github's
    host: gql.test
    port: 443
    expect: allow
    policy: github
  - name: a denied connection matches no policy
    host: example.com
    port: 443
    expect: deny
    policy: github
"#;
    let (code, out, _) = run_cases("ptest-key", cases, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL graphql is github's: expected policy github, got gql (allow)\n"),
        "{out}"
    );
    assert!(
        out.contains("FAIL a denied connection matches no policy: expected policy github, got none (deny; reason: endpoint example.com:443 is not allowed by any policy)\n"),
        "{out}"
    );
    assert!(out.ends_with("0 passed, 2 failed\n"), "{out}");
}

/// A GraphQL body is evaluated by the relay's own code: a query for an
/// allowed field passes, a mutation does not, and without a body the
/// request cannot be allowed.
#[test]
fn policy_test_graphql_bodies_decide() {
    let cases = r#"cases:
  - name: viewer query
    host: gql.test
    port: 443
    binary: /usr/bin/curl
    method: POST
    path: /graphql
    body: '{"query": "{ viewer { login } }"}'
    expect: allow
    policy: gql
  - name: a mutation
    host: gql.test
    port: 443
    binary: /usr/bin/curl
    path: /graphql
    body: '{"query": "mutation { deleteRepository(id: 1) { id } }"}'
    expect: deny
    policy: gql
  - name: no body
    host: gql.test
    port: 443
    binary: /usr/bin/curl
    method: POST
    path: /graphql
    expect: allow
"#;
    let (code, out, _) = run_cases("ptest-gql", cases, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("ok   viewer query\nok   a mutation\n"),
        "{out}"
    );
    assert!(
        out.contains("FAIL no body: expected allow, got deny (reason: the endpoint's rules read the request body; none was given; policy: gql)"),
        "{out}"
    );
}

#[test]
fn policy_test_json_output() {
    let cases = r#"cases:
  - name: curl deletes a repo
    host: api.github.test
    port: 443
    binary: /usr/bin/curl
    method: DELETE
    path: /repos/o/r
    expect: allow
  - name: an unlisted host
    host: example.com
    port: 443
    expect: deny
"#;
    let (code, out, _) = run_cases("ptest-json", cases, &["--format", "json"]);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let results = v.as_array().expect("array");
    assert_eq!(results.len(), 2);
    let first = &results[0];
    assert_eq!(first["name"], "curl deletes a repo");
    assert_eq!(first["passed"], false);
    assert_eq!(first["expect"], "allow");
    assert_eq!(first["decision"], "deny");
    assert_eq!(first["policy"], "github");
    assert_eq!(first["l7"]["verdict"], "deny");
    assert_eq!(first["reason"], "DELETE /repos/o/r not permitted by policy");
    assert!(first["failure"]
        .as_str()
        .is_some_and(|f| f.starts_with("expected allow, got deny")));
    assert_eq!(results[1]["passed"], true);
    assert_eq!(results[1]["failure"], serde_json::Value::Null);
}

/// A file that cannot be run is refused before any case, with
/// `FILE:LINE:COL: message` on stderr and exit 2.
#[test]
fn policy_test_reports_located_errors() {
    let table = [
        (
            "cases:\n  - name: a\n    host: example.com\n    port: 443\n    expect: deny\n    methd: GET\n",
            "6:5: cases[0]: unknown field `methd`",
        ),
        (
            "cases:\n  - name: a\n    host: example.com\n    port: 443\n",
            "2:5: case `a`: missing `expect`",
        ),
        (
            "cases:\n  - name: a\n    host: example.com\n    port: 99999\n    expect: deny\n",
            "4:11: cases[0].port: invalid value",
        ),
        (
            "cases:\n  - name: a\n    host: example.com\n    port: 443\n    expect: deny\n    policy: gihtub\n",
            "6:13: no policy `gihtub` in",
        ),
        (
            "cases:\n  - name: a\n    host: example.com\n    port: 443\n    expect: deny\n  - name: a\n    host: example.org\n    port: 443\n    expect: deny\n",
            "6:11: duplicate case name `a`",
        ),
    ];
    for (cases, needle) in table {
        let dir = TempDir::new("ptest-err");
        let (policy, file) = files(&dir, cases);
        let (code, out, err) = sluice(&["test", &file, "--policy", &policy]);
        assert_eq!(code, 2, "{needle}: {out}{err}");
        assert_eq!(out, "", "{needle}");
        assert!(
            err.starts_with(&format!("{file}:{needle}")),
            "{needle}: {err}"
        );
    }
    // An invalid policy prints the policy's own errors, also exit 2.
    let dir = TempDir::new("ptest-badpolicy");
    let (policy, file) = files(&dir, PASSING);
    std::fs::write(
        &policy,
        "version: 1\nnetwork_policies:\n  x:\n    endpointz: []\n",
    )
    .expect("write");
    let (code, _, err) = sluice(&["test", &file, "--policy", &policy]);
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with(&format!("{policy}:4:5: ")), "{err}");
}

/// The shipped example cases pass against the shipped example policy.
#[test]
fn policy_test_shipped_example_passes() {
    let (code, out, err) = sluice(&[
        "test",
        "examples/policy-tests.yaml",
        "--policy",
        "examples/policy.yaml",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("FAIL"), "{out}");
    let summary = out.lines().last().unwrap_or_default();
    assert!(summary.ends_with(" passed, 0 failed"), "{out}");
    // It covers both answers and a request-level deny.
    assert!(out.contains("ok   curl cannot delete a repo"), "{out}");
    assert!(out.contains("ok   wget is not a demo binary"), "{out}");
}
