//! REST policy on the shared request loop: TLS terminated inside CONNECT
//! (curl and Python requests trusting the sluice CA), plaintext tunnels and
//! forward HTTP give the same verdicts; refused requests never reach the
//! upstream; h2c, HTTP/2 prior knowledge, `tls: skip`, upstream TLS failures.

use std::path::Path;

use crate::harness::{curl, sluice_cmd, tunnel, Sluice};
use sluice_test_support::{recorded, test_pki, Netns, Python, TempDir};

fn policy() -> String {
    r#"version: 1
network_policies:
  secure:
    endpoints:
      - host: secure.test
        port: 8443
        protocol: rest
        enforcement: enforce
        rules:
          - allow: { method: GET, path: "/allowed/**" }
          - allow: { method: POST, path: /post-ok }
        deny_rules:
          - { method: GET, path: /allowed/secret }
      - host: plain.test
        port: 8080
        protocol: rest
        enforcement: enforce
        rules:
          - allow: { method: GET, path: "/allowed/**" }
          - allow: { method: POST, path: /post-ok }
        deny_rules:
          - { method: GET, path: /allowed/secret }
      - { host: audited.test, port: 8443, protocol: rest, enforcement: audit, access: read-only }
      - { host: badname.test, port: 8443 }
      - { host: rec.test, port: 9000 }
      - { host: rec-l7.test, port: 9000, protocol: rest, enforcement: enforce, access: full }
      - { host: skip.test, port: 9000, tls: skip }
"#
    .to_owned()
}

struct Setup {
    dir: TempDir,
    ns: Netns,
    sluice: Sluice,
    sluice_ca: std::path::PathBuf,
    bundle: std::path::PathBuf,
}

fn setup(tag: &str, with_upstream_ca: bool) -> Setup {
    let dir = TempDir::new(tag);
    let ns = Netns::new();
    let pki = test_pki(&dir, "upstream", &["secure.test", "audited.test"]);
    ns.start_tls_upstream(8443, &dir.path("tls.jsonl"), &pki.cert, &pki.key);
    ns.start_upstream(8080, &dir.path("plain.jsonl"));
    ns.start_recorder(9000, &dir.path("raw.bin"));
    let mut args: Vec<String> = Vec::new();
    for name in [
        "secure.test",
        "plain.test",
        "audited.test",
        "badname.test",
        "rec.test",
        "rec-l7.test",
        "skip.test",
    ] {
        args.push("--add-host".into());
        args.push(format!("{name}={}", ns.ns_ip));
    }
    args.push("--identity".into());
    args.push("endpoint-only".into());
    if with_upstream_ca {
        args.push("--upstream-ca".into());
        args.push(pki.ca.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sluice = Sluice::start(&dir, &policy(), &args);
    let state = dir.path("state");
    let state = state.to_str().unwrap();
    let sluice_ca = dir.path("sluice-ca.pem");
    std::fs::write(
        &sluice_ca,
        sluice_cmd(&["ca", "show", "--state-dir", state]),
    )
    .unwrap();
    let bundle = dir.path("bundle.pem");
    std::fs::write(
        &bundle,
        sluice_cmd(&["ca", "show", "--bundle", "--state-dir", state]),
    )
    .unwrap();
    Setup {
        dir,
        ns,
        sluice,
        sluice_ca,
        bundle,
    }
}

fn paths(record: &Path) -> Vec<String> {
    recorded(record)
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["method"].as_str().unwrap(),
                r["path"].as_str().unwrap()
            )
        })
        .collect()
}

/// The JSON body after the last header block (curl -D - also prints the CONNECT answer).
fn body_json(r: &str) -> serde_json::Value {
    let body = r.rsplit_once("\r\n\r\n").map_or(r, |(_, b)| b);
    serde_json::from_str(body).unwrap_or_default()
}

/// curl trusting the sluice CA: allowed, denied (the rich L7 body), a deny
/// rule over an allow rule, and paths canonicalized before policy and on
/// the wire; only the allowed requests reach the upstream.
#[test]
fn rest_verdicts_through_terminated_tls_with_curl() {
    let s = setup("l7-tls", true);
    let proxy = s.sluice.proxy_url();
    let ca = s.sluice_ca.to_str().unwrap();

    let r = curl(
        &proxy,
        "https://secure.test:8443/allowed/a?x=1",
        false,
        &["--cacert", ca],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let seen: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(seen["path"], "/allowed/a?x=1");

    // Denied POST: the rich L7 body; the upstream sees nothing.
    let r = curl(
        &proxy,
        "https://secure.test:8443/denied",
        false,
        &["--cacert", ca, "-X", "POST", "-d", "x", "-D", "-"],
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        r.body
            .to_ascii_lowercase()
            .contains("x-sluice-policy: secure"),
        "{r:?}"
    );
    let body = body_json(&r.body);
    assert_eq!(body["error"], "policy_denied");
    assert_eq!(body["layer"], "l7");
    assert_eq!(body["protocol"], "rest");
    assert_eq!(body["detail"], "POST /denied not permitted by policy");
    assert_eq!(body["host"], "secure.test");
    assert_eq!(body["port"], 8443);

    // Deny rules win over allow rules.
    let r = curl(
        &proxy,
        "https://secure.test:8443/allowed/secret",
        false,
        &["--cacert", ca],
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("blocked by deny rule"), "{r:?}");

    // Path canonicalization before policy and on the wire.
    let r = curl(
        &proxy,
        "https://secure.test:8443/x/../allowed/./b",
        false,
        &["--cacert", ca, "--path-as-is"],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = curl(
        &proxy,
        "https://secure.test:8443/allowed/../secret",
        false,
        &["--cacert", ca, "--path-as-is"],
    );
    assert_eq!(r.status, 403, "{r:?}");

    assert_eq!(
        paths(&s.dir.path("tls.jsonl")),
        ["GET /allowed/a?x=1", "GET /allowed/b"]
    );
    let ev = s
        .sluice
        .wait_event("L7_REQUEST deny POST secure.test:8443/denied");
    assert_eq!(ev["class_uid"], 4002);
    assert_eq!(ev["firewall_rule"]["type"], "l7");
    s.sluice
        .wait_event("L7_REQUEST allow GET secure.test:8443/allowed/a");
}

/// Python `requests` with the CA bundle on one keep-alive session: a
/// denied request in the middle is answered 403 and the session goes on.
#[test]
fn python_requests_keep_alive_survives_a_denial_in_the_middle() {
    let s = setup("l7-requests", true);
    let script = r#"
import sys, requests
proxy, bundle = sys.argv[1], sys.argv[2]
s = requests.Session()
s.proxies = {"https": proxy}
# verify per request: a session-level verify loses to REQUESTS_CA_BUNDLE in the environment
codes = [s.get(f"https://secure.test:8443{p}", timeout=10, verify=bundle).status_code for p in ["/allowed/1", "/allowed/secret", "/allowed/2"]]
print(",".join(map(str, codes)))
"#;
    let codes = Python::inline(script)
        .args([s.sluice.proxy_url().as_str(), s.bundle.to_str().unwrap()])
        .stdout();
    assert_eq!(codes.trim(), "200,403,200");
    assert_eq!(
        paths(&s.dir.path("tls.jsonl")),
        ["GET /allowed/1", "GET /allowed/2"]
    );
}

/// Pipelined inside the TLS tunnel: allowed, denied, allowed → 200, 403,
/// then closed; the request after the denial is never sent.
#[test]
fn pipelined_requests_in_a_tls_tunnel_stop_after_a_denial() {
    let s = setup("l7-pipelined", true);
    let resp = tunnel(
        s.sluice.addr,
        "secure.test",
        8443,
        Some(&s.sluice_ca),
        b"GET /allowed/p1 HTTP/1.1\r\nHost: secure.test:8443\r\n\r\n\
          GET /allowed/secret HTTP/1.1\r\nHost: secure.test:8443\r\n\r\n\
          GET /allowed/p3 HTTP/1.1\r\nHost: secure.test:8443\r\n\r\n",
    )
    .unwrap();
    assert_eq!(resp.matches("HTTP/1.1 ").count(), 2, "{resp}");
    assert!(
        resp.find("HTTP/1.1 200").unwrap() < resp.find("HTTP/1.1 403").unwrap(),
        "{resp}"
    );
    assert_eq!(paths(&s.dir.path("tls.jsonl")), ["GET /allowed/p1"]);
}

/// A request inside the TLS tunnel must name the tunnel's authority.
#[test]
fn tls_tunnel_request_naming_another_host_is_refused() {
    let s = setup("l7-authority", true);
    let resp = tunnel(
        s.sluice.addr,
        "secure.test",
        8443,
        Some(&s.sluice_ca),
        b"GET /allowed/x HTTP/1.1\r\nHost: evil.test\r\n\r\n",
    )
    .unwrap();
    assert_eq!(
        body_json(&resp)["error"],
        "request_authority_mismatch",
        "{resp}"
    );
    s.sluice.wait_event(
        "HTTP request authority does not match authorized tunnel endpoint secure.test:8443",
    );
    assert!(paths(&s.dir.path("tls.jsonl")).is_empty());
}

#[test]
fn audit_mode_forwards_and_records_the_would_be_denial() {
    let s = setup("l7-audit", true);
    let ca = s.sluice_ca.to_str().unwrap();
    let r = curl(
        &s.sluice.proxy_url(),
        "https://audited.test:8443/write",
        false,
        &["--cacert", ca, "-X", "POST", "-d", "x"],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(paths(&s.dir.path("tls.jsonl")), ["POST /write"]);
    s.sluice
        .wait_event("L7_REQUEST audit POST audited.test:8443/write");
}

#[test]
fn forward_and_plaintext_tunnel_give_the_same_verdicts() {
    let s = setup("l7-forward", true);
    let proxy = s.sluice.proxy_url();
    for tunnel_mode in [false, true] {
        let get = |p: &str| {
            curl(
                &proxy,
                &format!("http://plain.test:8080{p}"),
                tunnel_mode,
                &[],
            )
            .status
        };
        assert_eq!(get("/allowed/a"), 200, "tunnel={tunnel_mode}");
        assert_eq!(get("/allowed/secret"), 403, "tunnel={tunnel_mode}");
        assert_eq!(get("/other"), 403, "tunnel={tunnel_mode}");
        let post = curl(
            &proxy,
            "http://plain.test:8080/post-ok",
            tunnel_mode,
            &["-d", "x"],
        )
        .status;
        assert_eq!(post, 200, "tunnel={tunnel_mode}");
    }
    let r = curl(
        &proxy,
        "http://plain.test:8080/denied",
        false,
        &["-X", "DELETE"],
    );
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["layer"], "l7");
    assert_eq!(body["policy"], "secure");
    assert_eq!(
        paths(&s.dir.path("plain.jsonl")),
        [
            "GET /allowed/a",
            "POST /post-ok",
            "GET /allowed/a",
            "POST /post-ok"
        ]
    );
    s.sluice
        .wait_event("FORWARD_L7 deny GET plain.test:8080/allowed/secret");
}

#[test]
fn smuggling_shapes_never_reach_the_upstream() {
    let s = setup("l7-smuggle", true);
    let cases: &[&[u8]] = &[
        b"POST /a HTTP/1.1\r\nHost: HOST\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: HOST\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        b"POST /a HTTP/1.1\r\nHost: HOST\r\nContent-Length: +4\r\n\r\nabcd",
        b"POST /a HTTP/1.1\r\nHost: HOST\r\nContent-Length: 4 \r\nContent-Length: 4\r\n\r\nabcd",
        b"POST /a HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding:\tchunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nx\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nx\r\n0\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: HOST\r\nX-Folded: a\r\n b\r\n\r\n",
        b"GET /a HTTP/1.1\nHost: HOST\n\n",
        b"GET /a HTTP/1.1\r\nHost: HOST\r\nX: a\rb\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost : HOST\r\n\r\n",
        b"GET /a\x00 HTTP/1.1\r\nHost: HOST\r\n\r\n",
    ];
    let raw = s.dir.path("raw.bin");
    for case in cases {
        let text = String::from_utf8_lossy(case);
        // Plaintext tunnel to the inspected endpoint.
        let payload = text.replace("HOST", "rec-l7.test:9000");
        let resp = tunnel(s.sluice.addr, "rec-l7.test", 9000, None, payload.as_bytes()).unwrap();
        assert!(
            resp.starts_with("HTTP/1.1 400 ") || resp.is_empty(),
            "{text:?} → {resp}"
        );
        // Forward proxy.
        let payload = text
            .replacen("/a", "http://rec-l7.test:9000/a", 1)
            .replace("HOST", "rec-l7.test:9000");
        let resp = crate::harness::raw_exchange(
            s.sluice.addr,
            payload.as_bytes(),
            std::time::Duration::from_secs(3),
        );
        assert!(resp.starts_with("HTTP/1.1 400 "), "{text:?} → {resp}");
        assert_eq!(
            std::fs::read(&raw).unwrap_or_default(),
            b"",
            "{text:?} reached the upstream"
        );
    }
}

#[test]
fn h2c_prior_knowledge_and_tls_skip() {
    let s = setup("l7-h2c", true);
    let raw = s.dir.path("raw.bin");
    let h2c = b"GET /up HTTP/1.1\r\nHost: HOST\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
    let preface: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    // Inspected endpoint: refused, nothing relayed.
    let resp = tunnel(
        s.sluice.addr,
        "rec-l7.test",
        9000,
        None,
        &String::from_utf8_lossy(h2c)
            .replace("HOST", "rec-l7.test:9000")
            .into_bytes(),
    )
    .unwrap();
    assert_eq!(
        body_json(&resp)["error"],
        "unsupported_l7_protocol",
        "{resp}"
    );
    let resp = tunnel(s.sluice.addr, "rec-l7.test", 9000, None, preface).unwrap();
    assert_eq!(
        body_json(&resp)["error"],
        "unsupported_l7_protocol",
        "{resp}"
    );
    assert_eq!(std::fs::read(&raw).unwrap_or_default(), b"");

    // L4 endpoint: relayed.
    let resp = tunnel(
        s.sluice.addr,
        "rec.test",
        9000,
        None,
        &String::from_utf8_lossy(h2c)
            .replace("HOST", "rec.test:9000")
            .into_bytes(),
    )
    .unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let _ = tunnel(s.sluice.addr, "rec.test", 9000, None, preface).unwrap();
    let got = std::fs::read(&raw).unwrap_or_default();
    assert!(String::from_utf8_lossy(&got).contains("Upgrade: h2c"));
    assert!(
        got.ends_with(preface),
        "{:?}",
        String::from_utf8_lossy(&got)
    );

    // tls: skip passes opaque bytes unchanged.
    let opaque: Vec<u8> = (0u8..=255)
        .chain(b"GET / HTTP/1.1\r\n\r\n".iter().copied())
        .collect();
    let _ = tunnel(s.sluice.addr, "skip.test", 9000, None, &opaque).unwrap();
    assert!(std::fs::read(&raw).unwrap_or_default().ends_with(&opaque));
}

#[test]
fn upstream_tls_failures_answer_502() {
    // Without --upstream-ca the test upstream's CA is unknown.
    let s = setup("l7-badca", false);
    let ca = s.sluice_ca.to_str().unwrap();
    let r = curl(
        &s.sluice.proxy_url(),
        "https://secure.test:8443/allowed/a",
        false,
        &["--cacert", ca],
    );
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.body.contains("certificate verification failed"), "{r:?}");
    s.sluice
        .wait_event("upstream connect failed for secure.test:8443");
    drop(s);
    // With the right CA but a name the upstream certificate does not cover.
    let s = setup("l7-badname", true);
    let ca = s.sluice_ca.to_str().unwrap();
    let r = curl(
        &s.sluice.proxy_url(),
        "https://badname.test:8443/",
        false,
        &["--cacert", ca],
    );
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.body.contains("certificate verification failed"), "{r:?}");
    assert!(recorded(&s.dir.path("tls.jsonl")).is_empty());
    let _ = &s.ns;
}
