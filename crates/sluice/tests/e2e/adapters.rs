//! Allow and deny through both adapters, and each adapter's refusals.

use std::time::Duration;

use crate::harness::{curl, json_body, raw_exchange, Sluice};
use sluice_test_support::{recorded, Netns, TempDir};

/// A policy allowing `exact.test:8080` (and a closed port) for curl and this test binary.
pub(crate) fn basic_policy() -> String {
    let me = std::env::current_exe().unwrap();
    format!(
        r#"version: 1
network_policies:
  demo:
    endpoints:
      - {{ host: exact.test, port: 8080 }}
      - {{ host: exact.test, port: 8099 }}
      - {{ host: exact.test, port: 9000 }}
    binaries:
      - {{ path: /usr/bin/curl }}
      - {{ path: "{me}" }}
"#,
        me = me.display()
    )
}

pub(crate) fn add_hosts(ns: &Netns) -> Vec<String> {
    vec![
        "--add-host".into(),
        format!("exact.test={}", ns.ns_ip),
        "--add-host".into(),
        format!("other.test={}", ns.ns_ip),
    ]
}

/// The common fixture: a namespace running the HTTP upstream on 8080 (every
/// request it sees recorded to `record`) and sluice on a policy with the
/// test hosts pinned to it. Fields drop in order: sluice, namespace, files.
pub(crate) struct WithUpstream {
    pub(crate) sluice: Sluice,
    pub(crate) record: std::path::PathBuf,
    /// Kept alive for the test: the upstream's namespace and the state dir.
    _ns: Netns,
    _dir: TempDir,
}

pub(crate) fn with_upstream(name: &str, policy_yaml: &str) -> WithUpstream {
    let dir = TempDir::new(name);
    let ns = Netns::new();
    let record = dir.path("upstream.jsonl");
    ns.start_upstream(8080, &record);
    let args = add_hosts(&ns);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sluice = Sluice::start(&dir, policy_yaml, &args);
    WithUpstream {
        sluice,
        record,
        _ns: ns,
        _dir: dir,
    }
}

#[test]
fn allow_and_policy_deny_through_both_adapters() {
    let up = with_upstream("adapters", &basic_policy());
    let (record, sluice) = (&up.record, &up.sluice);
    let proxy = sluice.proxy_url();

    // Forward HTTP: allowed, origin-form on the wire, proxy headers stripped, Via added.
    let r = curl(
        &proxy,
        "http://exact.test:8080/fwd?x=1",
        false,
        &["-H", "Proxy-Authorization: Basic c2VjcmV0"],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let seen: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(seen["path"], "/fwd?x=1");
    let headers = seen["headers"].to_string().to_lowercase();
    assert!(
        headers.contains(r#"["host","exact.test:8080"]"#),
        "{headers}"
    );
    assert!(headers.contains(r#"["via","1.1 sluice"]"#), "{headers}");
    assert!(!headers.contains("proxy-authorization"), "{headers}");

    // CONNECT: allowed, raw tunnel.
    let r = curl(&proxy, "http://exact.test:8080/tunnel", true, &[]);
    assert_eq!((r.connect_status, r.status), (200, 200), "{r:?}");

    // Policy denials on both adapters: nothing reaches the upstream.
    let r = curl(&proxy, "http://other.test:8080/denied-fwd", false, &[]);
    assert_eq!(r.status, 403);
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["error"], "policy_denied");
    assert_eq!(
        body["detail"],
        "GET other.test:8080/denied-fwd not permitted by policy"
    );
    let r = curl(&proxy, "http://other.test:8080/denied-connect", true, &[]);
    assert_eq!(r.connect_status, 403);
    let resp = raw_exchange(
        sluice.addr,
        b"CONNECT other.test:8080 HTTP/1.1\r\nHost: other.test:8080\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(resp.starts_with("HTTP/1.1 403 "), "{resp}");
    let body = json_body(&resp);
    assert_eq!(body["error"], "policy_denied");
    assert_eq!(
        body["reason"],
        "endpoint other.test:8080 is not allowed by any policy"
    );

    let paths: Vec<String> = recorded(record)
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(paths, ["/fwd?x=1", "/tunnel"]);

    // OCSF: allow and deny events for both adapters, with the generation.
    let allow = sluice.wait_event("FORWARD allowed GET exact.test:8080/fwd");
    assert_eq!(allow["class_uid"], 4002);
    assert_eq!(allow["firewall_rule"]["name"], "demo");
    assert_eq!(allow["unmapped"]["policy_generation"], 1);
    assert!(
        !allow.to_string().contains("x=1"),
        "query strings never reach events"
    );
    let allow = sluice.wait_event("CONNECT allowed exact.test:8080");
    assert_eq!(allow["class_uid"], 4001);
    assert_eq!(allow["actor"]["process"]["name"], "/usr/bin/curl");
    let deny = sluice.wait_event("CONNECT denied other.test:8080");
    assert_eq!(deny["action"], "Denied");
    assert_eq!(
        deny["status_detail"],
        "endpoint other.test:8080 is not allowed by any policy"
    );
    sluice.wait_event("FORWARD denied GET other.test:8080/denied-fwd");
    assert!(!std::fs::read_to_string(&sluice.audit)
        .unwrap()
        .contains("c2VjcmV0"));
    assert!(!sluice.stderr().contains("c2VjcmV0"));
}

#[test]
fn adapter_refusals_have_their_own_shapes() {
    let up = with_upstream("refusals", &basic_policy());
    let (record, sluice) = (&up.record, &up.sluice);
    let wait = Duration::from_secs(5);

    // https:// on the forward proxy: the fixed 400.
    let resp = raw_exchange(
        sluice.addr,
        b"GET https://exact.test:8080/ HTTP/1.1\r\nHost: exact.test\r\n\r\n",
        wait,
    );
    // OpenShell sends `Content-Length: 27` for this 26-byte body; sluice sends the true length.
    assert_eq!(resp, "HTTP/1.1 400 Bad Request\r\nContent-Length: 26\r\nConnection: close\r\n\r\nUse CONNECT for HTTPS URLs");
    // Other schemes.
    let resp = raw_exchange(
        sluice.addr,
        b"GET ftp://exact.test/ HTTP/1.1\r\nHost: exact.test\r\n\r\n",
        wait,
    );
    assert_eq!(json_body(&resp)["error"], "unsupported_proxy_scheme");
    // Origin-form on the forward proxy.
    let resp = raw_exchange(
        sluice.addr,
        b"GET / HTTP/1.1\r\nHost: exact.test\r\n\r\n",
        wait,
    );
    assert!(resp.starts_with("HTTP/1.1 400 "), "{resp}");
    // Oversized initial head: 431.
    let mut big = b"GET http://exact.test:8080/ HTTP/1.1\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 9000));
    big.extend_from_slice(b"\r\n\r\n");
    let resp = raw_exchange(sluice.addr, &big, wait);
    assert!(resp.starts_with("HTTP/1.1 431 "), "{resp}");
    // Smuggling shapes are refused before policy.
    for bad in [
        &b"POST http://exact.test:8080/ HTTP/1.1\r\nHost: exact.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        b"POST http://exact.test:8080/ HTTP/1.1\r\nHost: exact.test\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        b"GET http://exact.test:8080/ HTTP/1.1\nHost: exact.test\n\n",
        b"GET http://exact.test:8080/ HTTP/1.1\r\nHost: exact.test\r\nX: a\r\n b\r\n\r\n",
    ] {
        let resp = raw_exchange(sluice.addr, bad, wait);
        assert!(resp.starts_with("HTTP/1.1 400 "), "{resp}");
    }
    // Bad CONNECT target: a status, not a silent close.
    let resp = raw_exchange(sluice.addr, b"CONNECT exact.test HTTP/1.1\r\n\r\n", wait);
    assert!(resp.starts_with("HTTP/1.1 400 "), "{resp}");
    assert_eq!(json_body(&resp)["error"], "invalid_connect_target");
    // Dial failure: 502 on both adapters.
    let resp = raw_exchange(
        sluice.addr,
        b"CONNECT exact.test:8099 HTTP/1.1\r\n\r\n",
        wait,
    );
    assert!(resp.starts_with("HTTP/1.1 502 "), "{resp}");
    assert_eq!(json_body(&resp)["error"], "upstream_unreachable");
    let r = curl(&sluice.proxy_url(), "http://exact.test:8099/", false, &[]);
    assert_eq!(r.status, 502);
    assert!(
        recorded(record).is_empty(),
        "nothing refused may reach the upstream"
    );
}

#[test]
fn chunked_and_length_bodies_are_relayed_intact() {
    let up = with_upstream("bodies", &basic_policy());
    let (record, sluice) = (&up.record, &up.sluice);
    let proxy = sluice.proxy_url();
    let r = curl(
        &proxy,
        "http://exact.test:8080/len",
        false,
        &["--data-binary", "hello=world"],
    );
    assert_eq!(r.status, 200);
    let r = curl(
        &proxy,
        "http://exact.test:8080/chunked",
        false,
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            "chunky body",
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let seen = recorded(record);
    assert_eq!(seen[0]["body"], "hello=world");
    assert_eq!(seen[1]["body"], "chunky body");
    assert!(seen[1]["headers"]
        .to_string()
        .to_lowercase()
        .contains("chunked"));
}
