//! Secrets stay outside the sandbox: placeholders are resolved only for
//! bound endpoints, only in the slots allowed, and no secret ever shows up
//! in anything sluice writes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::{curl, recorded, sluice_cmd, test_pki, Netns, Sluice, TempDir};

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
    let me = std::env::current_exe().unwrap();
    format!(
        r#"version: 1
network_policies:
  api:
    endpoints:
      - {{ host: secure.test, port: 8443, protocol: rest, enforcement: enforce, access: full, request_body_credential_rewrite: true }}
      - {{ host: plain.test, port: 8080, protocol: rest, enforcement: enforce, access: full, request_body_credential_rewrite: true }}
      - {{ host: norewrite.test, port: 8080, protocol: rest, enforcement: enforce, access: full }}
      - {{ host: granted.test, port: 8080, protocol: rest, enforcement: enforce, access: full }}
      - {{ host: unbound.test, port: 8080 }}
    binaries: [ {{ path: /usr/bin/curl }}, {{ path: "{me}" }} ]
providers:
  svc:
    credentials:
      API_TOKEN: {{ env: E2E_API_TOKEN }}
      API_PASS: {{ env: E2E_API_PASS }}
    endpoints:
      - {{ host: secure.test, port: 8443 }}
      - {{ host: plain.test, port: 8080, path: "/v1/**" }}
      - {{ host: norewrite.test, port: 8080 }}
  oauth:
    endpoints:
      - {{ host: granted.test, port: 8080 }}
    token_grant:
      token_endpoint: "http://127.0.0.1:{token_port}/token"
      grant: client_credentials
      client_id: {{ env: E2E_CLIENT_ID }}
      client_secret: {{ env: E2E_CLIENT_SECRET }}
"#,
        me = me.display()
    )
}

const P_TOKEN: &str = "sluice:resolve:env:API_TOKEN";

fn last_seen(record: &std::path::Path) -> serde_json::Value {
    recorded(record).pop().unwrap_or_default()
}

fn header<'a>(seen: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    seen["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .and_then(|h| h[1].as_str())
}

#[test]
fn placeholders_resolve_only_where_bound_and_never_leak() {
    let dir = TempDir::new("creds");
    let ns = Netns::new();
    let pki = test_pki(&dir, "upstream", &["secure.test"]);
    let tls_record = dir.path("tls.jsonl");
    let plain_record = dir.path("plain.jsonl");
    ns.start_tls_upstream(8443, &tls_record, &pki.cert, &pki.key);
    ns.start_upstream(8080, &plain_record);
    let tokens = TokenServer::start(31);
    let mut args: Vec<String> = vec![
        "--identity".into(),
        "endpoint-only".into(),
        "--upstream-ca".into(),
        pki.ca.display().to_string(),
    ];
    for name in [
        "secure.test",
        "plain.test",
        "norewrite.test",
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
    let proxy = sluice.proxy_url();
    let state = dir.path("state");
    let ca = dir.path("sluice-ca.pem");
    std::fs::write(
        &ca,
        sluice_cmd(&["ca", "show", "--state-dir", state.to_str().unwrap()]),
    )
    .unwrap();
    let ca = ca.to_str().unwrap();

    // Header through CONNECT with TLS terminated.
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

    // Basic auth: decoded, rewritten, re-encoded.
    let r = curl(
        &proxy,
        "https://secure.test:8443/basic",
        false,
        &["--cacert", ca, "-u", "user:sluice:resolve:env:API_PASS"],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let basic = header(&last_seen(&tls_record), "authorization")
        .unwrap_or_default()
        .to_owned();
    let want = format!("user:{API_PASS}");
    let decoded = String::from_utf8(
        std::process::Command::new("base64")
            .arg("-d")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map(|mut c| {
                c.stdin
                    .take()
                    .unwrap()
                    .write_all(basic.trim_start_matches("Basic ").as_bytes())
                    .unwrap();
                c.wait_with_output().unwrap().stdout
            })
            .unwrap(),
    )
    .unwrap();
    assert_eq!(decoded, want);

    // Path and query placeholders on the forward proxy (bound path /v1/**).
    let url = format!("http://plain.test:8080/v1/items/{P_TOKEN}?key={P_TOKEN}&keep=1");
    let r = curl(&proxy, &url, false, &["--path-as-is"]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        last_seen(&plain_record)["path"],
        format!("/v1/items/{API_TOKEN}?key={API_TOKEN}&keep=1")
    );

    // Opted-in JSON and form bodies, through the TLS tunnel and the forward proxy.
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

    // A body placeholder without opt-in is refused; nothing is forwarded.
    let before = recorded(&plain_record).len();
    let r = curl(
        &proxy,
        "http://norewrite.test:8080/nope",
        false,
        &["-d", &format!("token={P_TOKEN}")],
    );
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.body.contains("credential_injection_failed"), "{r:?}");
    // A placeholder sent to an unbound host, and to an unbound path on a bound host.
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
    assert_eq!(
        recorded(&plain_record).len(),
        before,
        "refused requests must not reach the upstream"
    );
    sluice.wait_event("Credential use denied: credential is not authorized for unbound.test:8080");

    // Token grant: fetched once, reused, refetched after expiry, 502 when the endpoint is down.
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

    // Allow events record the provider, never a value.
    let ev = sluice.wait_event("FORWARD allowed GET plain.test:8080/v1/items/[CREDENTIAL]");
    assert_eq!(ev["unmapped"]["credentials_injected"], true);
    assert_eq!(ev["unmapped"]["credential_providers"][0], "svc");

    // The redaction scan: no secret and no granted token in anything sluice wrote.
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
        audit.lines().count() > 10,
        "the scan looked at a real audit log"
    );
}
