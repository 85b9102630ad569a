//! The console over real HTTP on loopback, with a proposal service built
//! in-process (SQLite store in a temp dir, a policy file, a memory audit).

// The tests are the console's clients: they dial it directly on loopback.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_console::{start, ConsoleConfig};
use sluice_proposals::{Origin, SqliteStore, Status, SQLITE_FILE_NAME};
use sluice_proxy::audit::Audit;
use sluice_proxy::denials::DenialLog;
use sluice_proxy::policy_store::PolicyStore;
use sluice_proxy::proposals::{parse, ProposalService};
use sluice_telemetry::{
    Action, Activity, AuditSink, Disposition, EventClass, OcsfEvent, ProcessInfo,
};
use sluice_test_support::TempDir;

const POLICY: &str = "version: 1
network_policies:
  demo:
    endpoints:
      - { host: allowed.test, port: 443 }
    binaries:
      - { path: /usr/bin/curl }
providers:
  svc:
    credentials:
      API_TOKEN: { file: TOKEN_FILE }
    endpoints:
      - { host: secure.test, port: 443 }
";

struct Fixture {
    _dir: TempDir,
    rt: tokio::runtime::Runtime,
    service: Arc<ProposalService>,
    policy: PathBuf,
    addr: SocketAddr,
    url: String,
}

fn fixture(tag: &str) -> Fixture {
    let dir = TempDir::new(tag);
    let secret = dir.path("api-token");
    std::fs::write(&secret, "s3cr3t-VALUE-never-shown\n").unwrap();
    let policy = dir.path("policy.yaml");
    std::fs::write(
        &policy,
        POLICY.replace("TOKEN_FILE", &secret.display().to_string()),
    )
    .unwrap();
    let loaded = sluice_policy::load_file(&policy, 1).expect("policy loads");
    let store = PolicyStore::new(loaded.snapshot, Some(policy.clone()));
    let proposals = SqliteStore::open(&dir.path(SQLITE_FILE_NAME)).unwrap();
    let (sink, _handle) = AuditSink::memory();
    let service = ProposalService::new(
        Arc::new(proposals),
        store,
        Audit::new(sink),
        DenialLog::new(),
        "gw-test".into(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let console = rt
        .block_on(start(
            ConsoleConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                token_file: None,
            },
            Arc::clone(&service),
        ))
        .expect("console starts");
    Fixture {
        _dir: dir,
        rt,
        service,
        policy,
        addr: console.addr,
        url: console.url,
    }
}

/// One request (`Connection: close`): status, head, body.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Signs in with the token: `(Cookie header value, csrf token)`.
fn sign_in(f: &Fixture) -> (String, String) {
    let path = f.url.split_once(&f.addr.to_string()).unwrap().1;
    let (status, head, _) = request(f.addr, "GET", path, &[], "");
    assert_eq!(status, 303, "{head}");
    assert_eq!(header(&head, "location"), Some("/"));
    let set = header(&head, "set-cookie").expect("a session cookie");
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Strict"), "{set}");
    assert!(set.contains("Path=/"), "{set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    let (status, head, page) = request(f.addr, "GET", "/", &[("Cookie", &cookie)], "");
    assert_eq!(status, 200);
    assert_eq!(
        header(&head, "content-security-policy").map(|c| c.starts_with("default-src 'self'")),
        Some(true)
    );
    assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&head, "referrer-policy"), Some("no-referrer"));
    assert_eq!(header(&head, "cache-control"), Some("no-store"));
    let csrf = page
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("csrf meta")
        .to_owned();
    assert_eq!(csrf.len(), 64);
    (cookie, csrf)
}

fn get_json(f: &Fixture, cookie: &str, path: &str) -> (u16, Value) {
    let (status, _, body) = request(f.addr, "GET", path, &[("Cookie", cookie)], "");
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn post(
    f: &Fixture,
    cookie: &str,
    csrf: Option<&str>,
    origin: Option<&str>,
    path: &str,
    body: &Value,
) -> (u16, Value) {
    let mut headers = vec![("Cookie", cookie), ("Content-Type", "application/json")];
    if let Some(c) = csrf {
        headers.push(("X-CSRF-Token", c));
    }
    if let Some(o) = origin {
        headers.push(("Origin", o));
    }
    let (status, _, body) = request(f.addr, "POST", path, &headers, &body.to_string());
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn submit(f: &Fixture, host: &str) -> String {
    let body = parse(&json!({"intent_summary": format!("reach {host}"), "operations": [{"addRule": {"rule": {"endpoints": [{"host": host, "port": 443}], "binaries": [{"path": "/usr/bin/curl"}]}}}]})).unwrap();
    let origin = Origin {
        sandbox: "agent-1".into(),
        binary: Some("/usr/bin/python3".into()),
        pid: Some(42),
    };
    let p =
        f.rt.block_on(f.service.submit(body, origin, None))
            .expect("valid proposal");
    p.id.as_str().to_owned()
}

fn denial(host: &str) -> OcsfEvent {
    OcsfEvent::new(EventClass::NetworkActivity, Activity::Open)
        .action(Action::Denied)
        .disposition(Disposition::Blocked)
        .dst_endpoint(host, 443)
        .firewall_rule("-", "opa")
        .actor_process(ProcessInfo {
            path: "/usr/bin/curl".into(),
            pid: 7,
            ancestors: vec![],
        })
        .status_detail("no policy matches")
}

#[test]
fn access_needs_the_token() {
    let f = fixture("console-auth");
    assert!(f.url.contains("/?token="), "{}", f.url);
    let (status, _, page) = request(f.addr, "GET", "/", &[], "");
    assert_eq!(status, 401);
    assert!(page.contains("token is required"), "{page}");
    let (status, _, _) = request(f.addr, "GET", "/?token=wrong", &[], "");
    assert_eq!(status, 401);
    let (status, _, _) = request(f.addr, "GET", "/api/state", &[], "");
    assert_eq!(status, 401);
    let (status, _, _) = request(
        f.addr,
        "GET",
        "/api/state",
        &[("Cookie", "sluice_console_1=forged")],
        "",
    );
    assert_eq!(status, 401);
    let (status, _, _) = request(f.addr, "POST", "/api/denials/1/propose", &[], "{}");
    assert_eq!(status, 401);
    // A rebound name (DNS rebinding) is not this console.
    let mut s = TcpStream::connect(f.addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 421"), "{out}");

    let (cookie, _) = sign_in(&f);
    let (status, state) = get_json(&f, &cookie, "/api/state");
    assert_eq!(status, 200);
    assert_eq!(state["policy"]["generation"], 1);
    assert_eq!(state["gateway"], "gw-test");
}

#[test]
fn csrf_and_origin_are_checked_and_approval_applies() {
    let f = fixture("console-csrf");
    let (cookie, csrf) = sign_in(&f);
    let id = submit(&f, "new.test");
    let path = format!("/api/proposals/{id}/approve");
    let reason = json!({"reason": "ok"});
    assert_eq!(post(&f, &cookie, None, None, &path, &reason).0, 403);
    assert_eq!(
        post(&f, &cookie, Some("wrong"), None, &path, &reason).0,
        403
    );
    assert_eq!(
        post(
            &f,
            &cookie,
            Some(&csrf),
            Some("http://evil.test"),
            &path,
            &reason
        )
        .0,
        403
    );
    let still =
        f.rt.block_on(f.service.store().get(&id.parse().unwrap()))
            .unwrap()
            .unwrap();
    assert_eq!(
        still.status,
        Status::Pending,
        "refused requests change nothing"
    );
    assert_eq!(f.service.policy().generation(), 1);

    let origin = format!("http://{}", f.addr);
    let (status, out) = post(
        &f,
        &cookie,
        Some(&csrf),
        Some(&origin),
        &path,
        &json!({"reason": "needed", "actor": "alice"}),
    );
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["outcome"], "applied", "{out}");
    assert_eq!(out["proposal"]["status"], "approved");
    assert_eq!(f.service.policy().generation(), 2);
    let text = std::fs::read_to_string(&f.policy).unwrap();
    assert!(text.contains("new.test"), "{text}");
    let history: Vec<&str> = out["proposal"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["proposed", "approved", "applied"]);
    assert_eq!(out["proposal"]["history"][1]["actor"], "alice");
    // Decided once.
    assert_eq!(post(&f, &cookie, Some(&csrf), None, &path, &reason).0, 409);
}

#[test]
fn reject_and_state() {
    let f = fixture("console-reject");
    let (cookie, csrf) = sign_in(&f);
    let id = submit(&f, "nope.test");
    let path = format!("/api/proposals/{id}/reject");
    let (status, _) = post(&f, &cookie, Some(&csrf), None, &path, &json!({}));
    assert_eq!(status, 400, "a rejection needs a reason");
    let (status, out) = post(
        &f,
        &cookie,
        Some(&csrf),
        None,
        &path,
        &json!({"reason": "not needed"}),
    );
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["outcome"], "rejected");
    assert_eq!(f.service.policy().generation(), 1);
    assert!(!std::fs::read_to_string(&f.policy)
        .unwrap()
        .contains("nope.test"));
    let (_, state) = get_json(&f, &cookie, "/api/state");
    assert_eq!(state["pending"].as_array().unwrap().len(), 0);
    assert_eq!(state["decided"][0]["id"], id.as_str());
    assert_eq!(state["decided"][0]["history"][1]["reason"], "not needed");
    assert_eq!(
        post(
            &f,
            &cookie,
            Some(&csrf),
            None,
            "/api/proposals/p-0000/approve",
            &json!({})
        )
        .0,
        404
    );
    let big = json!({"reason": "x".repeat(70 * 1024)});
    assert_eq!(
        post(&f, &cookie, Some(&csrf), None, &path, &big).0,
        413,
        "bodies are bounded"
    );
}

#[test]
fn state_redacts_secret_sources() {
    let f = fixture("console-redact");
    let (cookie, _) = sign_in(&f);
    let (status, state) = get_json(&f, &cookie, "/api/state");
    assert_eq!(status, 200);
    let text = state["policy"]["text"].as_str().unwrap();
    assert!(text.contains("[redacted]"), "{text}");
    assert!(text.contains("API_TOKEN"), "{text}");
    assert!(
        !text.contains("api-token"),
        "the file source is hidden: {text}"
    );
    let raw = state.to_string();
    assert!(!raw.contains("s3cr3t"), "{raw}");
}

#[test]
fn denials_stream_live_and_become_proposals() {
    let f = fixture("console-sse");
    let (cookie, csrf) = sign_in(&f);
    let mut s = TcpStream::connect(f.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /api/events HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\n\r\n",
        f.addr
    )
    .unwrap();
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    // Wait until the stream is open (its first comment) before the denial.
    let mut seen = String::new();
    while !seen.contains(": connected") {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0);
        seen.push_str(&line);
    }
    assert!(seen.contains("text/event-stream"), "{seen}");
    f.service.denials().observe(&denial("blocked.test"));
    let mut data = None;
    while data.is_none() {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "stream ended");
        if line.starts_with("event: denial") {
            line.clear();
            reader.read_line(&mut line).unwrap();
            data = line.strip_prefix("data: ").map(str::to_owned);
        }
    }
    let d: Value = serde_json::from_str(data.as_deref().unwrap().trim()).unwrap();
    assert_eq!(d["destination"], "blocked.test:443");
    assert_eq!(d["proposable"], true);
    let seq = d["seq"].as_u64().unwrap();

    let path = format!("/api/denials/{seq}/propose");
    assert_eq!(post(&f, &cookie, None, None, &path, &json!({})).0, 403);
    let (status, out) = post(
        &f,
        &cookie,
        Some(&csrf),
        None,
        &path,
        &json!({"actor": "bob"}),
    );
    assert_eq!(status, 201, "{out}");
    let p = &out["proposal"];
    assert_eq!(p["status"], "pending");
    assert_eq!(p["origin"]["sandbox"], "console");
    assert_eq!(p["origin"]["binary"], "bob");
    assert_eq!(p["rule_name"], "allow_blocked_test_443");
    assert!(p["denial"].as_str().unwrap().contains("blocked.test"));
    assert!(p["change_yaml"].as_str().unwrap().contains("/usr/bin/curl"));

    // The store changed: the stream says so.
    let mut got = false;
    for _ in 0..50 {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if line.starts_with("event: proposals") {
            got = true;
            break;
        }
    }
    assert!(got, "a proposals event after the submission");
    // A denial no longer (or never) in the log.
    assert_eq!(
        post(
            &f,
            &cookie,
            Some(&csrf),
            None,
            "/api/denials/999/propose",
            &json!({})
        )
        .0,
        404
    );
}
