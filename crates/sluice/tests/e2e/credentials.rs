//! Secrets stay outside the sandbox: placeholders are resolved only for
//! bound endpoints, only in the slots allowed, and no secret ever shows up
//! in anything sluice writes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::{
    connect, curl, json_body, raw_exchange, read_response, sluice_cmd, tunnel, Sluice,
};
use sluice_test_support::{recorded, test_pki, Netns, Python, TempDir};

const API_TOKEN: &str = "s3cr3t-api-token-9f1c";
const API_PASS: &str = "pa55-w0rd-7c2e";
const CLIENT_SECRET: &str = "client-secret-41aa";

/// A tiny OAuth2 token endpoint on loopback: counts calls, hands out
/// `tok-N` valid for `expires_in` seconds; `down` makes it answer 503.
struct TokenServer {
    port: u16,
    calls: Arc<AtomicU32>,
    down: Arc<std::sync::atomic::AtomicBool>,
}

impl TokenServer {
    fn start(expires_in: u32) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let calls = Arc::new(AtomicU32::new(0));
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, d) = (Arc::clone(&calls), Arc::clone(&down));
        std::thread::spawn(move || {
            for stream in listener.incoming().take(64) {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut len = 0usize;
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                let body = String::from_utf8_lossy(&body).into_owned();
                let resp = if d.load(Ordering::SeqCst) {
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
                } else if body.contains("grant_type=client_credentials")
                    && body.contains(CLIENT_SECRET)
                {
                    let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                    let json = format!(
                        r#"{{"access_token":"tok-{n}-zz","token_type":"Bearer","expires_in":{expires_in}}}"#
                    );
                    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}", json.len())
                } else {
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_owned()
                };
                let _ = stream.write_all(resp.as_bytes());
            }
        });
        Self { port, calls, down }
    }
}

fn policy(token_port: u16) -> String {
    format!(
        r#"version: 1
network_policies:
  api:
    endpoints:
      - {{ host: secure.test, port: 8443, protocol: rest, enforcement: enforce, access: full, request_body_credential_rewrite: true }}
      - {{ host: secure.test, port: 443, protocol: rest, enforcement: enforce, access: full }}
      - {{ host: vault.test, port: 8443, protocol: rest, enforcement: enforce, access: full }}
      - {{ host: plain.test, port: 8080, protocol: rest, enforcement: enforce, access: full, request_body_credential_rewrite: true }}
      - {{ host: norewrite.test, port: 8080, protocol: rest, enforcement: enforce, access: full }}
      - {{ host: rec.test, port: 9000, protocol: rest, enforcement: enforce, access: full }}
      - {{ host: granted.test, port: 8080, protocol: rest, enforcement: enforce, access: full }}
      - {{ host: unbound.test, port: 8080 }}
providers:
  svc:
    credentials:
      API_TOKEN: {{ env: E2E_API_TOKEN }}
      API_PASS: {{ env: E2E_API_PASS }}
    endpoints:
      - {{ host: secure.test, ports: [443, 8443] }}
      - {{ host: vault.test, port: 8443 }}
      - {{ host: plain.test, port: 8080, path: "/v1/**" }}
      - {{ host: norewrite.test, port: 8080 }}
      - {{ host: rec.test, port: 9000 }}
  oauth:
    endpoints:
      - {{ host: granted.test, port: 8080 }}
    token_grant:
      token_endpoint: "http://127.0.0.1:{token_port}/token"
      grant: client_credentials
      client_id: {{ env: E2E_CLIENT_ID }}
      client_secret: {{ env: E2E_CLIENT_SECRET }}
"#,
    )
}

/// Upstreams in a namespace (HTTPS on 8443 and 443, the HTTP echo on 8080,
/// the raw recorder on 9000), a token endpoint, and sluice with the
/// provider secrets. Fields drop in order: sluice, servers, files.
struct Setup {
    sluice: Sluice,
    tokens: TokenServer,
    _ns: Netns,
    dir: TempDir,
    /// The sandbox CA (PEM file), for clients inside TLS tunnels.
    ca: std::path::PathBuf,
    /// System roots and the sandbox CA, for Python requests.
    bundle: std::path::PathBuf,
}

impl Setup {
    fn record(&self, name: &str) -> std::path::PathBuf {
        self.dir.path(name)
    }
}

fn setup(tag: &str) -> Setup {
    let dir = TempDir::new(tag);
    let ns = Netns::new();
    let pki = test_pki(&dir, "upstream", &["secure.test", "vault.test"]);
    ns.start_tls_upstream(8443, &dir.path("tls.jsonl"), &pki.cert, &pki.key);
    ns.start_tls_upstream(443, &dir.path("tls443.jsonl"), &pki.cert, &pki.key);
    ns.start_upstream(8080, &dir.path("plain.jsonl"));
    ns.start_recorder(9000, &dir.path("raw.bin"));
    let tokens = TokenServer::start(31);
    let mut args: Vec<String> = vec![
        "--identity".into(),
        "endpoint-only".into(),
        "--upstream-ca".into(),
        pki.ca.display().to_string(),
    ];
    for name in [
        "secure.test",
        "vault.test",
        "plain.test",
        "norewrite.test",
        "rec.test",
        "granted.test",
        "unbound.test",
    ] {
        args.extend(["--add-host".to_owned(), format!("{name}={}", ns.ns_ip)]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env = [
        ("E2E_API_TOKEN", API_TOKEN),
        ("E2E_API_PASS", API_PASS),
        ("E2E_CLIENT_ID", "client-1"),
        ("E2E_CLIENT_SECRET", CLIENT_SECRET),
    ];
    let sluice = Sluice::start_with_env(&dir, &policy(tokens.port), &args, &env);
    let state = dir.path("state");
    let state = state.to_str().unwrap();
    let ca = dir.path("sluice-ca.pem");
    std::fs::write(&ca, sluice_cmd(&["ca", "show", "--state-dir", state])).unwrap();
    let bundle = dir.path("bundle.pem");
    std::fs::write(
        &bundle,
        sluice_cmd(&["ca", "show", "--bundle", "--state-dir", state]),
    )
    .unwrap();
    Setup {
        sluice,
        tokens,
        _ns: ns,
        dir,
        ca,
        bundle,
    }
}

/// Nothing sluice wrote (audit log, stderr) holds a secret or a placeholder.
fn assert_no_secret_written(sluice: &Sluice) {
    sluice.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    let audit = std::fs::read_to_string(&sluice.audit).unwrap_or_default();
    let written = format!("{audit}\n{}", sluice.stderr());
    for secret in [API_TOKEN, API_PASS, CLIENT_SECRET, "tok-1-zz", "tok-2-zz"] {
        assert!(
            !written.contains(secret),
            "{secret} leaked into sluice's output"
        );
    }
    assert!(
        !written.contains(P_TOKEN),
        "placeholders are scrubbed from events"
    );
    assert!(
        audit.lines().count() > 5,
        "the scan looked at a real audit log"
    );
}

const P_TOKEN: &str = "sluice:resolve:env:API_TOKEN";

fn last_seen(record: &std::path::Path) -> serde_json::Value {
    recorded(record).pop().unwrap_or_default()
}

/// A header's value as the recording upstream saw it.
pub(crate) fn header<'a>(seen: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    seen["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .and_then(|h| h[1].as_str())
}

/// A header placeholder through CONNECT with TLS terminated; `Basic`
/// credentials decoded, rewritten and re-encoded.
#[test]
fn header_and_basic_placeholders_resolve_inside_terminated_tls() {
    let s = setup("creds-header");
    let tls_record = s.record("tls.jsonl");
    let proxy = s.sluice.proxy_url();
    let ca = s.ca.to_str().unwrap();

    let r = curl(
        &proxy,
        "https://secure.test:8443/h",
        false,
        &[
            "--cacert",
            ca,
            "-H",
            &format!("Authorization: Bearer {P_TOKEN}"),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        header(&last_seen(&tls_record), "authorization"),
        Some(format!("Bearer {API_TOKEN}").as_str())
    );

    let r = curl(
        &proxy,
        "https://secure.test:8443/basic",
        false,
        &["--cacert", ca, "-u", "user:sluice:resolve:env:API_PASS"],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let want = format!("Basic {}", b64(&format!("user:{API_PASS}")));
    assert_eq!(
        header(&last_seen(&tls_record), "authorization"),
        Some(want.as_str())
    );
    assert_no_secret_written(&s.sluice);
}

/// Path and query placeholders on the forward proxy (bound path `/v1/**`),
/// and JSON and form bodies where rewriting is opted in, through the TLS
/// tunnel and the forward proxy. The allow events name the provider,
/// never a value.
#[test]
fn path_query_and_opted_in_body_placeholders_resolve() {
    let s = setup("creds-path-body");
    let tls_record = s.record("tls.jsonl");
    let plain_record = s.record("plain.jsonl");
    let proxy = s.sluice.proxy_url();
    let ca = s.ca.to_str().unwrap();

    let url = format!("http://plain.test:8080/v1/items/{P_TOKEN}?key={P_TOKEN}&keep=1");
    let r = curl(&proxy, &url, false, &["--path-as-is"]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        last_seen(&plain_record)["path"],
        format!("/v1/items/{API_TOKEN}?key={API_TOKEN}&keep=1")
    );

    let r = curl(
        &proxy,
        "https://secure.test:8443/json",
        false,
        &[
            "--cacert",
            ca,
            "-H",
            "Content-Type: application/json",
            "-d",
            &format!(r#"{{"token":"{P_TOKEN}"}}"#),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        last_seen(&tls_record)["body"],
        format!(r#"{{"token":"{API_TOKEN}"}}"#)
    );
    let r = curl(
        &proxy,
        "http://plain.test:8080/v1/form",
        false,
        &["-d", &format!("a=1&token={P_TOKEN}")],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        last_seen(&plain_record)["body"],
        format!("a=1&token={API_TOKEN}")
    );

    let ev = s
        .sluice
        .wait_event("FORWARD allowed GET plain.test:8080/v1/items/[CREDENTIAL]");
    assert_eq!(ev["unmapped"]["credentials_injected"], true);
    assert_eq!(ev["unmapped"]["credential_providers"][0], "svc");
    assert_no_secret_written(&s.sluice);
}

/// A body placeholder where rewriting is not opted in (500), and a
/// placeholder sent to an unbound host or an unbound path on a bound host
/// (403): refused, and nothing reaches the upstream.
#[test]
fn placeholders_off_their_binding_or_without_body_opt_in_are_refused() {
    let s = setup("creds-refused");
    let plain_record = s.record("plain.jsonl");
    let proxy = s.sluice.proxy_url();

    let r = curl(
        &proxy,
        "http://norewrite.test:8080/nope",
        false,
        &["-d", &format!("token={P_TOKEN}")],
    );
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.body.contains("credential_injection_failed"), "{r:?}");
    let r = curl(
        &proxy,
        "http://unbound.test:8080/leak",
        false,
        &["-H", &format!("X-Key: {P_TOKEN}")],
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("credential_endpoint_mismatch"), "{r:?}");
    let r = curl(
        &proxy,
        "http://plain.test:8080/v2/leak",
        false,
        &["-H", &format!("X-Key: {P_TOKEN}")],
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("credential_endpoint_mismatch"), "{r:?}");
    let reached = recorded(&plain_record);
    assert!(
        reached.is_empty(),
        "refused requests must not reach the upstream: {reached:?}"
    );
    s.sluice
        .wait_event("Credential use denied: credential is not authorized for unbound.test:8080");
    assert_no_secret_written(&s.sluice);
}

/// Token grant: fetched once, reused, fetched again after expiry (the
/// endpoint's `expires_in: 31` is kept for 1 s), and `502 token_grant_failed`
/// with nothing forwarded once it has expired while the endpoint is down.
/// The real binary keeps wall-clock time: this test waits out the TTL twice.
#[test]
fn granted_token_is_reused_refetched_after_expiry_and_502_when_the_endpoint_is_down() {
    let s = setup("creds-grant");
    let tokens = &s.tokens;
    let plain_record = s.record("plain.jsonl");
    let proxy = s.sluice.proxy_url();

    for _ in 0..2 {
        let r = curl(&proxy, "http://granted.test:8080/g", false, &[]);
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_eq!(tokens.calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        header(&last_seen(&plain_record), "authorization"),
        Some("Bearer tok-1-zz")
    );
    std::thread::sleep(Duration::from_millis(1500));
    let r = curl(&proxy, "http://granted.test:8080/g", false, &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(tokens.calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        header(&last_seen(&plain_record), "authorization"),
        Some("Bearer tok-2-zz")
    );
    tokens.down.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1500));
    let before = recorded(&plain_record).len();
    let r = curl(&proxy, "http://granted.test:8080/g", false, &[]);
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.body.contains("token_grant_failed"), "{r:?}");
    assert_eq!(recorded(&plain_record).len(), before);
    assert_no_secret_written(&s.sluice);
}

/// Standard base64 with padding (test helper).
fn b64(data: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.as_bytes().chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn hosts_seen(record: &std::path::Path) -> Vec<String> {
    recorded(record)
        .iter()
        .map(|r| header(r, "host").unwrap_or_default().to_owned())
        .collect()
}

/// Issue 12, class 1: inside a tunnel (TLS-terminated or plaintext) every
/// request must name the tunnel's authority in its `Host` header and, when
/// absolute-form, in its request-target; a request naming another site in
/// either place is refused (`403 request_authority_mismatch`) before any
/// credential is applied or any byte is sent. The forward adapter
/// regenerates `Host` from the checked target instead.
#[test]
fn fronting_inside_tunnels_is_refused_before_credentials() {
    let s = setup("creds-front");
    let addr = s.sluice.addr;
    let tls443 = s.record("tls443.jsonl");
    let tls = s.record("tls.jsonl");
    let plain = s.record("plain.jsonl");

    // What curl and requests send through CONNECT is admitted: Host with or
    // without the default port, and the secret injected on the bound host.
    for host in ["secure.test", "secure.test:443", "SECURE.test"] {
        let resp = tunnel(
            addr,
            "secure.test",
            443,
            Some(&s.ca),
            format!("GET /ok HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {P_TOKEN}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
        assert!(resp.starts_with("HTTP/1.1 200 "), "{host}: {resp}");
        let seen = last_seen(&tls443);
        assert_eq!(header(&seen, "host"), Some(host));
        let want = format!("Bearer {API_TOKEN}");
        assert_eq!(header(&seen, "authorization"), Some(want.as_str()));
    }
    let r = curl(
        &s.sluice.proxy_url(),
        "https://secure.test/curl",
        false,
        &[
            "--cacert",
            s.ca.to_str().unwrap(),
            "-H",
            &format!("Authorization: Bearer {P_TOKEN}"),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let admitted = recorded(&tls443).len();
    assert_eq!(admitted, 4);

    // The reported shape and its variants, in TLS and plaintext tunnels.
    let refused: &[(&str, u16, bool, String)] = &[
        ("secure.test", 443, true, format!("GET https://secure.test/x HTTP/1.1\r\nHost: other.test\r\nAuthorization: Bearer {P_TOKEN}\r\n\r\n")),
        ("secure.test", 443, true, format!("GET https://secure.test:443/x HTTP/1.1\r\nHost: other.test:443\r\nAuthorization: Bearer {P_TOKEN}\r\n\r\n")),
        ("secure.test", 443, true, format!("GET https://other.test/x HTTP/1.1\r\nHost: secure.test\r\nAuthorization: Bearer {P_TOKEN}\r\n\r\n")),
        ("secure.test", 443, true, format!("GET /x HTTP/1.1\r\nHost: secure.test:8443\r\nAuthorization: Bearer {P_TOKEN}\r\n\r\n")),
        ("secure.test", 443, true, format!("GET https://secure.test/x HTTP/1.1\r\nAuthorization: Bearer {P_TOKEN}\r\n\r\n")),
        ("secure.test", 8443, true, format!("GET https://secure.test:8443/x HTTP/1.1\r\nHost: other.test:8443\r\nAuthorization: Bearer {P_TOKEN}\r\n\r\n")),
        ("plain.test", 8080, false, format!("GET http://plain.test:8080/v1/x HTTP/1.1\r\nHost: other.test:8080\r\nX-Key: {P_TOKEN}\r\n\r\n")),
        ("plain.test", 8080, false, format!("GET http://plain.test:8080/v1/x HTTP/1.0\r\nHost: other.test:8080\r\nX-Key: {P_TOKEN}\r\n\r\n")),
        ("plain.test", 8080, false, format!("GET /v1/x HTTP/1.1\r\nHost: plain.test\r\nX-Key: {P_TOKEN}\r\n\r\n")),
    ];
    for (host, port, tls_inside, payload) in refused {
        let ca = tls_inside.then_some(s.ca.as_path());
        let resp = tunnel(addr, host, *port, ca, payload.as_bytes()).unwrap();
        assert!(resp.starts_with("HTTP/1.1 403 "), "{payload:?} → {resp}");
        assert_eq!(
            json_body(&resp)["error"],
            "request_authority_mismatch",
            "{resp}"
        );
    }
    // A repeated Host is refused as malformed.
    let resp = tunnel(
        addr,
        "plain.test",
        8080,
        None,
        b"GET /v1/x HTTP/1.1\r\nHost: plain.test:8080\r\nHost: other.test:8080\r\n\r\n",
    )
    .unwrap();
    assert!(resp.starts_with("HTTP/1.1 400 "), "{resp}");
    assert_eq!(
        recorded(&tls443).len(),
        admitted,
        "a refused request reached the upstream"
    );
    assert!(
        recorded(&tls).is_empty(),
        "a refused request reached the upstream"
    );
    assert!(
        recorded(&plain).is_empty(),
        "a refused request reached the upstream"
    );
    s.sluice.wait_event(
        "HTTP request authority does not match authorized tunnel endpoint secure.test:443",
    );
    s.sluice.wait_event(
        "HTTP request authority does not match authorized tunnel endpoint plain.test:8080",
    );

    // HTTP/1.0 without Host in a tunnel: the tunnel's authority is sent.
    let resp = tunnel(
        addr,
        "plain.test",
        8080,
        None,
        b"GET /v1/old HTTP/1.0\r\n\r\n",
    )
    .unwrap();
    assert!(
        resp.starts_with("HTTP/1.0 200 ") || resp.starts_with("HTTP/1.1 200 "),
        "{resp}"
    );
    assert_eq!(hosts_seen(&plain), ["plain.test:8080"]);

    // The forward adapter names the checked target, whatever Host says.
    let resp = raw_exchange(
        addr,
        format!("GET http://plain.test:8080/v1/fwd HTTP/1.1\r\nHost: other.test\r\nX-Key: {P_TOKEN}\r\nConnection: close\r\n\r\n").as_bytes(),
        Duration::from_secs(5),
    );
    assert!(resp.starts_with("HTTP/1.1 200 "), "{resp}");
    let seen = last_seen(&plain);
    assert_eq!(header(&seen, "host"), Some("plain.test:8080"));
    assert_eq!(header(&seen, "x-key"), Some(API_TOKEN));

    // No upstream ever saw a request naming another site.
    for record in [&tls443, &tls, &plain] {
        assert!(
            !hosts_seen(record).iter().any(|h| h.contains("other")),
            "{:?}",
            hosts_seen(record)
        );
    }
    assert_no_secret_written(&s.sluice);
}

/// Issue 12, class 2: auth schemes are case-insensitive. `BASIC`, `basic`
/// and friends (and unpadded base64) are decoded like `Basic`: the secret
/// is injected on a bound host, and the placeholder is refused
/// (`403 credential_endpoint_mismatch`) on an unbound one, through both
/// adapters.
#[test]
fn basic_credentials_in_any_case_are_bound() {
    let s = setup("creds-basic");
    let proxy = s.sluice.proxy_url();
    let ca = s.ca.to_str().unwrap();
    let token = b64("user:sluice:resolve:env:API_PASS");
    let unpadded = token.trim_end_matches('=').to_owned();
    let want = format!("Basic {}", b64(&format!("user:{API_PASS}")));
    for value in [
        format!("BASIC {token}"),
        format!("basic {token}"),
        format!("bAsIc  {token}"),
        format!("Basic {unpadded}"),
    ] {
        let auth = format!("Authorization: {value}");
        // CONNECT with TLS terminated.
        let r = curl(
            &proxy,
            "https://secure.test:8443/b",
            false,
            &["--cacert", ca, "-H", &auth],
        );
        assert_eq!(r.status, 200, "{value}: {r:?}");
        let seen = last_seen(&s.record("tls.jsonl"));
        assert_eq!(
            header(&seen, "authorization"),
            Some(want.as_str()),
            "{value}"
        );
        // Forward proxy.
        let r = curl(&proxy, "http://plain.test:8080/v1/b", false, &["-H", &auth]);
        assert_eq!(r.status, 200, "{value}: {r:?}");
        let seen = last_seen(&s.record("plain.jsonl"));
        assert_eq!(
            header(&seen, "authorization"),
            Some(want.as_str()),
            "{value}"
        );
        // Unbound: refused on both adapters, nothing forwarded.
        let before = recorded(&s.record("plain.jsonl")).len();
        let r = curl(
            &proxy,
            "http://unbound.test:8080/leak",
            false,
            &["-H", &auth],
        );
        assert_eq!(r.status, 403, "{value}: {r:?}");
        assert!(r.body.contains("credential_endpoint_mismatch"), "{r:?}");
        let resp = tunnel(
            s.sluice.addr,
            "plain.test",
            8080,
            None,
            format!("GET /v2/leak HTTP/1.1\r\nHost: plain.test:8080\r\n{auth}\r\n\r\n").as_bytes(),
        )
        .unwrap();
        assert!(resp.starts_with("HTTP/1.1 403 "), "{value}: {resp}");
        assert_eq!(json_body(&resp)["error"], "credential_endpoint_mismatch");
        assert_eq!(recorded(&s.record("plain.jsonl")).len(), before, "{value}");
    }
    assert_no_secret_written(&s.sluice);
}

/// Python `requests` posting a generator: one chunk per item.
const CHUNKED_POST: &str = r#"
import json, sys, requests
proxy, bundle, url = sys.argv[1], sys.argv[2], sys.argv[3]
pieces = json.loads(sys.argv[4])
def body():
    for p in pieces:
        yield p.encode()
r = requests.post(url, data=body(), proxies={"http": proxy, "https": proxy}, verify=bundle, timeout=10,
                  headers={"Content-Type": "application/json"})
print(r.status_code, r.json().get("error", "") if r.headers.get("content-type", "").startswith("application/json") else "")
"#;

/// Issue 12, class 3: a placeholder split across chunks of a chunked body
/// is refused where body rewriting is off, before anything of the request
/// reaches the upstream (bodies up to 256 KiB); a split beyond 256 KiB is
/// refused as it streams and the upstream never gets the marker or a
/// complete request. Through the forward proxy, plaintext and TLS tunnels.
#[test]
fn a_placeholder_split_across_chunks_is_refused() {
    let s = setup("creds-chunks");
    let proxy = s.sluice.proxy_url();
    let bundle = s.bundle.to_str().unwrap();
    let raw = s.record("raw.bin");
    let vault = s.record("tls.jsonl");
    let split = serde_json::json!([r#"{"t": "sluice:res"#, r#"olve:env:API_TOKEN"}"#]).to_string();
    let three =
        serde_json::json!([r#"{"t": "slu"#, "ice:resolve:e", r#"nv:API_TOKEN"}"#]).to_string();
    for pieces in [&split, &three] {
        // Forward proxy and TLS tunnel, with Python requests.
        for url in [
            "http://rec.test:9000/upload",
            "https://vault.test:8443/upload",
        ] {
            let got = Python::inline(CHUNKED_POST)
                .args([proxy.as_str(), bundle, url, pieces])
                .lines();
            assert_eq!(got, ["500 credential_injection_failed"], "{url} {pieces}");
        }
        // Plaintext tunnel, raw.
        let payload = format!(
            "POST /upload HTTP/1.1\r\nHost: rec.test:9000\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n",
            serde_json::from_str::<Vec<String>>(pieces)
                .unwrap()
                .iter()
                .map(|p| format!("{:x}\r\n{p}\r\n", p.len()))
                .collect::<String>()
        );
        let resp = tunnel(s.sluice.addr, "rec.test", 9000, None, payload.as_bytes()).unwrap();
        assert!(resp.starts_with("HTTP/1.1 500 "), "{resp}");
        assert_eq!(json_body(&resp)["error"], "credential_injection_failed");
    }
    assert_eq!(
        std::fs::read(&raw).unwrap_or_default(),
        b"",
        "a refused body reached the upstream"
    );
    assert!(
        recorded(&vault).is_empty(),
        "a refused body reached the upstream"
    );
    // The same pieces without a placeholder pass, chunked as sent.
    let clean = serde_json::json!([r#"{"t": "sluice:res"#, r#"t"}"#]).to_string();
    let got = Python::inline(CHUNKED_POST)
        .args([proxy.as_str(), bundle, "https://vault.test:8443/ok", &clean])
        .lines();
    assert_eq!(got, ["200 "]);
    assert_eq!(last_seen(&vault)["body"], r#"{"t": "sluice:rest"}"#);

    // Beyond 256 KiB: the split marker is caught as it streams (to the
    // echo upstream, which answers only a complete request).
    let plain = s.record("plain.jsonl");
    let mut conn = connect(s.sluice.addr);
    let big = "x".repeat(300 * 1024);
    let head = "POST http://norewrite.test:8080/big HTTP/1.1\r\nHost: norewrite.test:8080\r\nTransfer-Encoding: chunked\r\n\r\n";
    let body = format!(
        "{:x}\r\n{big}sluice:reso\r\n{:x}\r\nlve:env:API_TOKEN\r\n0\r\n\r\n",
        big.len() + 11,
        17
    );
    conn.write_all(format!("{head}{body}").as_bytes()).unwrap();
    let (status, _, resp) = read_response(&mut conn).expect("an answer");
    assert_eq!(status, 500, "{resp}");
    assert!(resp.contains("credential_injection_failed"), "{resp}");
    assert!(
        recorded(&plain).is_empty(),
        "the upstream got a complete request"
    );
    s.sluice
        .wait_event("exchange failed for POST norewrite.test:8080/big");
    assert_no_secret_written(&s.sluice);
}
