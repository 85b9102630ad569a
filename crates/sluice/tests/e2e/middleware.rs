//! Supervisor middleware end to end (design §6.3, invariant 7): built-in
//! stages with real curl traffic, a gRPC middleware service built from our
//! `.proto` (allow, deny, mutate, timeout, unavailable under both
//! `on_error` values), re-evaluation after a mutation, WebSocket message
//! redaction and denial with a real WebSocket client, and policies that
//! name an unregistered or rejecting middleware refused at load.

use std::path::Path;

use sluice_test_support::{middleware::start_test_middleware, recorded, Netns, Python, TempDir};

use crate::harness::{curl, json_body, Sluice};

/// Bodies the upstream recorded, in order.
fn bodies(record: &Path) -> Vec<String> {
    recorded(record)
        .iter()
        .filter_map(|e| e["body"].as_str().map(str::to_owned))
        .collect()
}

fn header<'a>(event: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    event["headers"]
        .as_array()?
        .iter()
        .find_map(|h| (h[0].as_str()?.eq_ignore_ascii_case(name)).then(|| h[1].as_str())?)
}

/// `sluice/secrets` denies a body with a credential-shaped string,
/// `sluice/regex` redacts, `sluice/size` refuses a large body; each with a
/// real curl through the forward proxy, and the upstream never sees a
/// denied request.
#[test]
fn builtin_stages_deny_redact_and_limit_real_requests() {
    let dir = TempDir::new("mw-builtin");
    let ns = Netns::new();
    ns.start_upstream(8080, &dir.path("up.jsonl"));
    let policy = r#"version: 1
network_policies:
  api:
    endpoints:
      - { host: secrets.test, port: 8080, protocol: rest, enforcement: enforce, access: full }
      - { host: redact.test, port: 8080, protocol: rest, enforcement: enforce, access: full }
      - { host: size.test, port: 8080, protocol: rest, enforcement: enforce, access: full }
network_middlewares:
  no_secrets:
    middleware: sluice/secrets
    order: 1
    endpoints: { include: [secrets.test] }
  mask_ssn:
    middleware: sluice/regex
    order: 2
    config: { patterns: ["\\d{3}-\\d{2}-\\d{4}"], action: redact }
    endpoints: { include: [redact.test] }
  small:
    middleware: sluice/size
    order: 3
    config: { max_body_bytes: 64 }
    endpoints: { include: [size.test] }
"#;
    let hosts: Vec<String> = ["secrets.test", "redact.test", "size.test"]
        .iter()
        .map(|h| format!("{h}={}", ns.ns_ip))
        .collect();
    let mut args = vec!["--identity", "endpoint-only"];
    for h in &hosts {
        args.extend(["--add-host", h.as_str()]);
    }
    let s = Sluice::start(&dir, policy, &args);
    let proxy = s.proxy_url();
    let post = |url: &str, body: &str| {
        curl(
            &proxy,
            url,
            false,
            &[
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
            ],
        )
    };
    // A fake, shape-valid GitHub token.
    let token = format!("ghp_{}", "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8");
    let denied = post(
        "http://secrets.test:8080/v1",
        &format!("{{\"note\":\"{token}\"}}"),
    );
    assert_eq!(denied.status, 403, "{}", denied.body);
    let body = json_body(&format!("x\r\n\r\n{}", denied.body));
    assert_eq!(body["error"], "middleware_denied", "{body}");
    assert_eq!(body["middleware"], "no_secrets", "{body}");
    assert_eq!(body["reason_code"], "secret_detected", "{body}");
    assert!(!denied.body.contains(&token), "the secret is not echoed");
    let clean = post("http://secrets.test:8080/v1", "{\"note\":\"hello\"}");
    assert_eq!(clean.status, 200, "{}", clean.body);
    let placeholder = post(
        "http://secrets.test:8080/v1",
        "{\"k\":\"sluice:resolve:env:NOPE\"}",
    );
    assert!(
        !placeholder.body.contains("secret_detected"),
        "placeholders are not secrets"
    );

    let redacted = post(
        "http://redact.test:8080/v1",
        "{\"ssn\":\"123-45-6789\",\"x\":1}",
    );
    assert_eq!(redacted.status, 200, "{}", redacted.body);
    let big = post("http://size.test:8080/v1", &"x".repeat(200));
    assert_eq!(big.status, 403, "{}", big.body);
    let ok = post("http://size.test:8080/v1", "small");
    assert_eq!(ok.status, 200, "{}", ok.body);

    let seen = bodies(&dir.path("up.jsonl"));
    assert!(
        !seen.iter().any(|b| b.contains(&token)),
        "denied body never reached the upstream: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|b| b.contains("[REDACTED]") && !b.contains("123-45-6789")),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|b| b.len() == 200), "{seen:?}");
    let events = s.events();
    assert!(
        events
            .iter()
            .any(|e| e["unmapped"]["middleware.key"] == "no_secrets"
                && e["unmapped"]["middleware.decision"] == "deny"
                && e["unmapped"]["middleware.reason_code"] == "secret_detected"),
        "stage event: {events:#?}"
    );
    assert!(
        !std::fs::read_to_string(&s.audit)
            .unwrap_or_default()
            .contains(&token),
        "the audit log never holds the detected secret"
    );
}

/// A gRPC middleware service built from our `.proto`: allow, deny (with
/// its reason code), header mutation, body replacement, and failures
/// (timeout, unavailable, invalid result) under fail_closed and fail_open.
/// The service never sees a credential.
#[test]
fn grpc_stage_results_and_failures_follow_on_error() {
    let dir = TempDir::new("mw-grpc");
    let ns = Netns::new();
    ns.start_upstream(8080, &dir.path("up.jsonl"));
    let (_mw, mw_addr) = start_test_middleware(&dir.path("mw.jsonl"), &[]);
    let names = [
        "allow",
        "deny",
        "header",
        "body",
        "slow-closed",
        "slow-open",
        "error-closed",
        "error-open",
        "bad-closed",
    ];
    let mut policy = String::from("version: 1\nnetwork_policies:\n  api:\n    endpoints:\n");
    for n in names {
        policy.push_str(&format!(
            "      - {{ host: {n}.test, port: 8080, protocol: rest, enforcement: enforce, access: full }}\n"
        ));
    }
    policy.push_str(
        "providers:\n  svc:\n    credentials:\n      TOKEN: { env: MW_TEST_TOKEN }\n    endpoints: [ { host: allow.test, port: 8080 } ]\n",
    );
    policy.push_str("network_middlewares:\n");
    let stages: [(&str, &str, &str); 9] = [
        ("allow", "{ behavior: allow }", "fail_closed"),
        (
            "deny",
            "{ behavior: deny, reason_code: blocked_by_test }",
            "fail_closed",
        ),
        ("header", "{ behavior: mutate_header }", "fail_closed"),
        (
            "body",
            "{ behavior: replace_body, body: replaced }",
            "fail_closed",
        ),
        (
            "slow-closed",
            "{ behavior: sleep, ms: 2000 }",
            "fail_closed",
        ),
        ("slow-open", "{ behavior: sleep, ms: 2000 }", "fail_open"),
        ("error-closed", "{ behavior: error }", "fail_closed"),
        ("error-open", "{ behavior: error }", "fail_open"),
        ("bad-closed", "{ behavior: bad_result }", "fail_closed"),
    ];
    for (i, (name, config, on_error)) in stages.iter().enumerate() {
        policy.push_str(&format!(
            "  {name}:\n    middleware: testmw\n    order: {i}\n    on_error: {on_error}\n    config: {config}\n    endpoints: {{ include: [{name}.test] }}\n"
        ));
    }
    let registration = format!("testmw=http://{mw_addr},timeout=300ms");
    let hosts: Vec<String> = names
        .iter()
        .map(|n| format!("{n}.test={}", ns.ns_ip))
        .collect();
    let mut args = vec![
        "--identity",
        "endpoint-only",
        "--middleware",
        registration.as_str(),
    ];
    for h in &hosts {
        args.extend(["--add-host", h.as_str()]);
    }
    let s = Sluice::start_with_env(
        &dir,
        &policy,
        &args,
        &[("MW_TEST_TOKEN", "real-secret-value")],
    );
    let proxy = s.proxy_url();
    let post = |host: &str, extra: &[&str]| {
        let url = format!("http://{host}.test:8080/v1/items?q=1");
        let mut a = vec!["-X", "POST", "--data-binary", "original"];
        a.extend_from_slice(extra);
        curl(&proxy, &url, false, &a)
    };
    let expect: [(&str, u16, Option<&str>); 9] = [
        ("allow", 200, None),
        ("deny", 403, Some("middleware_denied")),
        ("header", 200, None),
        ("body", 200, None),
        ("slow-closed", 403, Some("middleware_failed")),
        ("slow-open", 200, None),
        ("error-closed", 403, Some("middleware_failed")),
        ("error-open", 200, None),
        ("bad-closed", 403, Some("middleware_failed")),
    ];
    for (host, status, error) in expect {
        let extra: &[&str] = if host == "allow" {
            &["-H", "Authorization: Bearer sluice:resolve:env:TOKEN"]
        } else {
            &[]
        };
        let r = post(host, extra);
        assert_eq!(r.status, status, "{host}: {}", r.body);
        if let Some(error) = error {
            let body = json_body(&format!("x\r\n\r\n{}", r.body));
            assert_eq!(body["error"], error, "{host}: {body}");
            assert_eq!(body["middleware"], host, "{host}: {body}");
            if host == "deny" {
                assert_eq!(body["reason_code"], "blocked_by_test");
            }
        }
    }
    // A declared body over the service's 1 MiB limit: a failure of that
    // stage before anything is read (fail_closed refuses, fail_open skips).
    let big = dir.path("big.bin");
    std::fs::write(&big, vec![b'x'; 2 * 1024 * 1024]).expect("big body");
    let big_arg = format!("@{}", big.display());
    for (host, status) in [("error-closed", 403), ("error-open", 200)] {
        let url = format!("http://{host}.test:8080/v1/big");
        let r = curl(
            &proxy,
            &url,
            false,
            &["-X", "POST", "--data-binary", &big_arg],
        );
        assert_eq!(r.status, status, "{host} with 2 MiB: {}", r.body);
    }
    let seen = recorded(&dir.path("up.jsonl"));
    let by_host = |h: &str| {
        seen.iter()
            .filter(|e| header(e, "host").is_some_and(|v| v.starts_with(&format!("{h}.test"))))
            .cloned()
            .collect::<Vec<_>>()
    };
    for h in ["deny", "slow-closed", "error-closed", "bad-closed"] {
        assert!(by_host(h).is_empty(), "{h}: nothing reached the upstream");
    }
    assert!(
        by_host("error-open").iter().any(|e| e["body"]
            .as_str()
            .is_some_and(|b| b.len() == 2 * 1024 * 1024)),
        "the skipped stage let the 2 MiB body through unchanged"
    );
    let header_req = &by_host("header")[0];
    assert_eq!(header(header_req, "x-openshell-middleware-test"), Some("1"));
    assert_eq!(by_host("body")[0]["body"], "replaced");
    let allow_req = &by_host("allow")[0];
    assert_eq!(
        header(allow_req, "authorization"),
        Some("Bearer real-secret-value"),
        "credentials are injected after the stages"
    );
    let calls = std::fs::read_to_string(dir.path("mw.jsonl")).unwrap_or_default();
    assert!(
        !calls.contains("real-secret-value"),
        "the service never sees a secret"
    );
    assert!(
        !calls.to_ascii_lowercase().contains("\"authorization\""),
        "nor the Authorization header"
    );
    let events = s.events();
    for (key, decision) in [
        ("deny", "deny"),
        ("slow-closed", "failed"),
        ("slow-open", "skipped"),
        ("header", "mutate"),
    ] {
        assert!(
            events.iter().any(|e| e["unmapped"]["middleware.key"] == key
                && e["unmapped"]["middleware.decision"] == decision
                && e["unmapped"]["middleware.latency_ms"].is_number()),
            "{key}: {decision} event"
        );
    }
}

/// A stage that rewrites an allowed MCP tool call into a denied one gets
/// it denied: the request is evaluated again after the mutation.
#[test]
fn a_mutated_request_is_evaluated_again() {
    let dir = TempDir::new("mw-reeval");
    let ns = Netns::new();
    ns.start_upstream(8080, &dir.path("up.jsonl"));
    let (_mw, mw_addr) = start_test_middleware(&dir.path("mw.jsonl"), &[]);
    let call = |tool: &str| {
        format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{{\"name\":\"{tool}\",\"arguments\":{{}}}}}}"
        )
    };
    let policy = format!(
        r#"version: 1
network_policies:
  mcp:
    endpoints:
      - host: mcp.test
        port: 8080
        protocol: mcp
        enforcement: enforce
        rules:
          - allow: {{ method: tools/call, tool: search }}
network_middlewares:
  swap:
    middleware: testmw
    config: {{ behavior: replace_body, body: '{}' }}
    endpoints: {{ include: [mcp.test] }}
"#,
        call("delete_everything")
    );
    let registration = format!("testmw=http://{mw_addr}");
    let host = format!("mcp.test={}", ns.ns_ip);
    let s = Sluice::start(
        &dir,
        &policy,
        &[
            "--identity",
            "endpoint-only",
            "--middleware",
            &registration,
            "--add-host",
            &host,
        ],
    );
    let r = curl(
        &s.proxy_url(),
        "http://mcp.test:8080/mcp",
        false,
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-H",
            "Accept: application/json, text/event-stream",
            "--data-binary",
            &call("search"),
        ],
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        recorded(&dir.path("up.jsonl")).is_empty(),
        "the rewritten call never reached the upstream"
    );
}

/// WebSocket messages through a gRPC stage: redacted text reaches the
/// upstream redacted; a denied message closes the session with 1008.
#[test]
fn websocket_messages_are_redacted_and_denied() {
    let dir = TempDir::new("mw-ws");
    let ns = Netns::new();
    ns.start_server("ws_server.py", 8765, &dir.path("ws.jsonl"));
    let (_mw, mw_addr) = start_test_middleware(&dir.path("mw.jsonl"), &[]);
    let policy = r#"version: 1
network_policies:
  ws:
    endpoints:
      - { host: ws.test, port: 8765, protocol: websocket, enforcement: enforce, access: read-write }
network_middlewares:
  redact:
    middleware: testmw
    order: 1
    config: { behavior: redact, pattern: "hunter2" }
    endpoints: { include: [ws.test] }
  guard:
    middleware: testmw
    order: 2
    config: { behavior: deny_if, pattern: "forbidden" }
    endpoints: { include: [ws.test] }
"#;
    let registration = format!("testmw=http://{mw_addr}");
    let host = format!("ws.test={}", ns.ns_ip);
    let s = Sluice::start(
        &dir,
        policy,
        &[
            "--identity",
            "endpoint-only",
            "--middleware",
            &registration,
            "--add-host",
            &host,
        ],
    );
    let client = r#"
import asyncio, os, sys
from websockets.asyncio.client import connect
async def main():
    async with connect("ws://ws.test:8765/chat", proxy=os.environ["PROXY"]) as ws:
        await ws.send("my password is hunter2")
        print("echo=" + await ws.recv())
        await ws.send("this is forbidden")
        try:
            await ws.recv()
            print("closed=no")
        except Exception as e:
            print("closed=%s" % getattr(getattr(e, "rcvd", None), "code", "?"))
asyncio.run(main())
"#;
    let out = Python::inline(client).env("PROXY", s.proxy_url()).lines();
    let value = |k: &str| {
        out.iter()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} not printed: {out:?}\n{}", s.stderr()))
            .to_owned()
    };
    assert_eq!(value("echo"), "my password is [REDACTED]");
    assert_eq!(value("closed"), "1008");
    let upstream = std::fs::read_to_string(dir.path("ws.jsonl")).unwrap_or_default();
    assert!(!upstream.contains("hunter2"), "{upstream}");
    assert!(!upstream.contains("forbidden"), "{upstream}");
}

/// A policy naming an unregistered middleware, or one whose config the
/// service rejects, does not load (at start, and on reload the last good
/// policy stays in force).
#[test]
fn unregistered_or_rejected_middleware_refuses_the_policy() {
    let dir = TempDir::new("mw-load");
    let (_mw, mw_addr) = start_test_middleware(&dir.path("mw.jsonl"), &[]);
    let base = "version: 1\nnetwork_policies:\n  p:\n    endpoints:\n      - { host: a.test, port: 8080, protocol: rest, enforcement: enforce, access: full }\n";
    let with = |middleware: &str, config: &str| {
        format!(
            "{base}network_middlewares:\n  m:\n    middleware: {middleware}\n    config: {config}\n    endpoints: {{ include: [a.test] }}\n"
        )
    };
    let policy = dir.path("policy.yaml");
    let registration = format!("testmw=http://{mw_addr}");
    for (yaml, needle) in [
        (
            with("nosuch", "{}"),
            // The capability contract, located at the `middleware:` value.
            "policy.yaml:8:17: network_middlewares.m.middleware: needs middleware `nosuch`, which `sluice serve` cannot enforce (register it with `--middleware nosuch=URL`; available: sluice/regex, sluice/secrets, sluice/size, testmw)",
        ),
        (
            with("testmw", "{ reject: true }"),
            "rejected by test server",
        ),
        (with("sluice/regex", "{ patterns: [\"(\"] }"), "patterns[0]"),
    ] {
        std::fs::write(&policy, &yaml).expect("policy");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--identity",
                "endpoint-only",
                "--middleware",
                &registration,
                "--policy",
            ])
            .arg(&policy)
            .arg("--state-dir")
            .arg(dir.path("state"))
            .output()
            .expect("sluice serve");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{yaml}");
        assert!(stderr.contains(needle), "{needle} in {stderr}");
    }
    // Reload: a rejected config keeps the last good policy.
    let s = Sluice::start(
        &dir,
        &with("testmw", "{ behavior: allow }"),
        &["--identity", "endpoint-only", "--middleware", &registration],
    );
    std::fs::write(&s.policy, with("testmw", "{ reject: true }")).expect("policy");
    s.signal("HUP");
    let refused = s.wait_event("Policy reload rejected");
    assert_eq!(refused["class_uid"], 5019, "{refused}");
    assert!(
        refused["status_detail"]
            .as_str()
            .is_some_and(|d| d.contains("rejected by test server")),
        "{refused}"
    );
}
