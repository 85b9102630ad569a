//! Table tests of both services' answers, the token table, the date format,
//! and the listener end to end on loopback (limits, audit, reload).

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use sluice_policy::{load_str_with, MemorySecrets, PolicySnapshot};
use sluice_telemetry::AuditSink;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;

/// Dials the listener under test.
#[allow(clippy::disallowed_methods)] // test: dials its own local listener
async fn dial(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

const REAL: &str = "REAL_secret_value_never_served";

fn snapshot(providers: &str) -> PolicySnapshot {
    let src = format!(
        "version: 1
network_policies:
  cloud:
    endpoints:
      - {{ host: storage.googleapis.com, port: 443, protocol: rest, access: full }}
      - {{ host: \"*.s3.amazonaws.com\", port: 443, protocol: rest, access: full }}
    binaries:
      - path: /usr/bin/curl
providers:
{providers}"
    );
    let secrets = MemorySecrets::new().with_env("REAL", REAL);
    match load_str_with(&src, "t.yaml", 1, &secrets) {
        Ok(l) => l.snapshot,
        Err(e) => panic!("{e}"),
    }
}

const GCE: &str = "  gcp:
    metadata: gce
    metadata_email: agent@proj.iam.gserviceaccount.com
    metadata_project_id: proj-1
    credentials: { GCP_ADC_ACCESS_TOKEN: { env: REAL } }
    endpoints: [ { host: storage.googleapis.com, port: 443 } ]
";
const AWS: &str = "  aws:
    metadata: aws
    metadata_role: agent
    metadata_region: eu-west-1
    credentials: { AWS_ACCESS_KEY_ID: { env: REAL }, AWS_SECRET_ACCESS_KEY: { env: REAL } }
    endpoints: [ { host: \"*.s3.amazonaws.com\", port: 443 } ]
";
const NONE: &str = "  other:
    credentials: { OTHER: { env: REAL } }
    endpoints: [ { host: storage.googleapis.com, port: 443 } ]
";

fn head(method: &str, target: &str, headers: &[(&str, &str)]) -> RequestHead {
    let mut raw = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    RequestHead::parse(raw.as_bytes()).expect("head")
}

const FLAVOR: (&str, &str) = ("Metadata-Flavor", "Google");

#[test]
fn gce_table() {
    let snap = snapshot(GCE);
    let sa = "/computeMetadata/v1/instance/service-accounts";
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        ("GET", "/".into(), vec![FLAVOR], 200, "computeMetadata/\n"),
        (
            "GET",
            "/computeMetadata/".into(),
            vec![FLAVOR],
            200,
            "v1/\n",
        ),
        (
            "GET",
            "/computeMetadata/v1/".into(),
            vec![FLAVOR],
            200,
            "instance/\nproject/\nuniverse/\n",
        ),
        (
            "GET",
            "/computeMetadata/v1/instance/".into(),
            vec![FLAVOR],
            200,
            "service-accounts/\n",
        ),
        (
            "GET",
            format!("{sa}/"),
            vec![FLAVOR],
            200,
            "default/\nagent@proj.iam.gserviceaccount.com/\n",
        ),
        (
            "GET",
            format!("{sa}/default/"),
            vec![FLAVOR],
            200,
            "aliases\nemail\nscopes\ntoken\n",
        ),
        (
            "GET",
            format!("{sa}/default/token?scopes=x"),
            vec![FLAVOR],
            200,
            r#"{"access_token":"sluice:resolve:env:GCP_ADC_ACCESS_TOKEN","expires_in":3599,"token_type":"Bearer"}"#,
        ),
        (
            "GET",
            format!("{sa}/agent@proj.iam.gserviceaccount.com/token"),
            vec![FLAVOR],
            200,
            r#"{"access_token":"sluice:resolve:env:GCP_ADC_ACCESS_TOKEN","expires_in":3599,"token_type":"Bearer"}"#,
        ),
        (
            "GET",
            format!("{sa}/default/email"),
            vec![FLAVOR],
            200,
            "agent@proj.iam.gserviceaccount.com",
        ),
        (
            "GET",
            format!("{sa}/default/scopes"),
            vec![FLAVOR],
            200,
            "https://www.googleapis.com/auth/cloud-platform\n",
        ),
        (
            "GET",
            format!("{sa}/default/aliases"),
            vec![FLAVOR],
            200,
            "default\n",
        ),
        (
            "GET",
            format!("{sa}/default/?recursive=true"),
            vec![FLAVOR],
            200,
            r#"{"aliases":["default"],"email":"agent@proj.iam.gserviceaccount.com","scopes":["https://www.googleapis.com/auth/cloud-platform"]}"#,
        ),
        (
            "GET",
            "/computeMetadata/v1/project/project-id".into(),
            vec![FLAVOR],
            200,
            "proj-1",
        ),
        (
            "GET",
            "/computeMetadata/v1/universe/universe-domain".into(),
            vec![FLAVOR],
            200,
            "googleapis.com",
        ),
        (
            "GET",
            format!("{sa}/other@x/token"),
            vec![FLAVOR],
            404,
            r#"{"error":"not_found"}"#,
        ),
        (
            "GET",
            "/computeMetadata/v1/instance/hostname".into(),
            vec![FLAVOR],
            404,
            r#"{"error":"not_found"}"#,
        ),
        (
            "GET",
            "/computeMetadata/v2/".into(),
            vec![FLAVOR],
            404,
            r#"{"error":"not_found"}"#,
        ),
        (
            "GET",
            format!("{sa}/default/token"),
            vec![],
            403,
            r#"{"error":"missing_metadata_flavor"}"#,
        ),
        (
            "GET",
            format!("{sa}/default/token"),
            vec![("Metadata-Flavor", "google")],
            403,
            r#"{"error":"missing_metadata_flavor"}"#,
        ),
        (
            "GET",
            format!("{sa}/default/token"),
            vec![FLAVOR, ("X-Forwarded-For", "10.0.0.1")],
            403,
            r#"{"error":"forwarded_request"}"#,
        ),
        (
            "POST",
            format!("{sa}/default/token"),
            vec![FLAVOR],
            405,
            r#"{"error":"method_not_allowed"}"#,
        ),
        (
            "GET",
            "*".into(),
            vec![FLAVOR],
            404,
            r#"{"error":"not_found"}"#,
        ),
    ];
    for (method, target, headers, status, body) in cases {
        let r = gce::answer(&head(method, &target, &headers), &snap);
        assert_eq!(
            (r.status, r.body.as_str()),
            (status, body),
            "{method} {target}"
        );
        assert!(!r.body.contains(REAL));
        let want_ct = if body.starts_with('{') {
            "application/json"
        } else {
            "application/text"
        };
        assert_eq!(r.content_type, want_ct, "{target}");
    }
    // Without a project id: 404; without the provider: 503.
    let bare = snapshot(&GCE.replace("    metadata_project_id: proj-1\n", ""));
    let r = gce::answer(
        &head("GET", "/computeMetadata/v1/project/project-id", &[FLAVOR]),
        &bare,
    );
    assert_eq!(r.status, 404);
    let none = snapshot(NONE);
    let r = gce::answer(&head("GET", "/", &[FLAVOR]), &none);
    assert_eq!(r.status, 503);
}

#[test]
fn imds_table() {
    let snap = snapshot(AWS);
    let tokens = imds::TokenTable::default();
    let now = Instant::now();
    let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let put = |ttl: &str| {
        imds::answer(
            &head(
                "PUT",
                "/latest/api/token",
                &[("X-aws-ec2-metadata-token-ttl-seconds", ttl)],
            ),
            &snap,
            &tokens,
            wall,
            now,
        )
    };
    for bad in ["0", "21601", "-1", "abc", "", "1e3", "999999"] {
        assert_eq!(put(bad).status, 400, "ttl {bad:?}");
    }
    let r = imds::answer(
        &head("PUT", "/latest/api/token", &[]),
        &snap,
        &tokens,
        wall,
        now,
    );
    assert_eq!(r.status, 400);
    let ok = put("21600");
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body.len(), 43);
    assert!(ok
        .headers
        .contains(&("X-aws-ec2-metadata-token-ttl-seconds", "21600".into())));
    let token = ok.body.clone();
    assert_ne!(put("60").body, token, "tokens are random");
    let get = |target: &str, token: Option<&str>, at: Instant| {
        let mut h = vec![];
        if let Some(t) = token {
            h.push(("X-aws-ec2-metadata-token", t));
        }
        imds::answer(&head("GET", target, &h), &snap, &tokens, wall, at)
    };
    let creds = "/latest/meta-data/iam/security-credentials/";
    assert_eq!(get(creds, None, now).status, 401);
    assert_eq!(get(creds, Some("forged"), now).status, 401);
    let r = get(creds, Some(&token), now);
    assert_eq!((r.status, r.body.as_str()), (200, "agent"));
    assert_eq!(
        get(
            "/latest/meta-data/iam/security-credentials",
            Some(&token),
            now
        )
        .body,
        "agent"
    );
    let r = get(&format!("{creds}agent"), Some(&token), now);
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(
        v,
        serde_json::json!({
            "Code": "Success",
            "LastUpdated": "2023-11-14T22:13:20Z",
            "Type": "AWS-HMAC",
            "AccessKeyId": "sluice:resolve:env:AWS_ACCESS_KEY_ID",
            "SecretAccessKey": "sluice:resolve:env:AWS_SECRET_ACCESS_KEY",
            "Token": "sluice:resolve:env:AWS_SESSION_TOKEN",
            "Expiration": "2023-11-15T04:13:20Z",
        })
    );
    assert_eq!(get(&format!("{creds}other"), Some(&token), now).status, 404);
    assert_eq!(
        get(
            "/latest/meta-data/placement/availability-zone/",
            Some(&token),
            now
        )
        .body,
        "eu-west-1a"
    );
    assert_eq!(
        get("/latest/meta-data/placement/region", Some(&token), now).body,
        "eu-west-1"
    );
    assert_eq!(
        get("/latest/meta-data/ami-id", Some(&token), now).status,
        404
    );
    assert_eq!(get("/latest/user-data", Some(&token), now).status, 404);
    // Expired.
    let short = put("1").body;
    assert_eq!(
        get(creds, Some(&short), now + Duration::from_secs(2)).status,
        401
    );
    assert_eq!(
        get(creds, Some(&token), now + Duration::from_secs(21_599)).status,
        200
    );
    // Forwarded, wrong method.
    let r = imds::answer(
        &head(
            "GET",
            creds,
            &[
                ("X-aws-ec2-metadata-token", &token),
                ("X-Forwarded-For", "1.2.3.4"),
            ],
        ),
        &snap,
        &tokens,
        wall,
        now,
    );
    assert_eq!(r.status, 403);
    let r = imds::answer(
        &head("GET", "/latest/api/token", &[]),
        &snap,
        &tokens,
        wall,
        now,
    );
    assert_eq!(r.status, 405);
    let r = imds::answer(&head("POST", creds, &[]), &snap, &tokens, wall, now);
    assert_eq!(r.status, 405);
    // Without the provider (e.g. after a reload): 404, even with a token.
    let none = snapshot(NONE);
    let r = imds::answer(
        &head("GET", creds, &[("X-aws-ec2-metadata-token", &token)]),
        &none,
        &tokens,
        wall,
        now,
    );
    assert_eq!(r.status, 404);
}

#[test]
fn token_table_is_bounded() {
    let t = imds::TokenTable::default();
    let now = Instant::now();
    let first = t.issue(Duration::from_secs(1), now).expect("token");
    for i in 0..(imds::MAX_TOKENS as u64 + 10) {
        t.issue(Duration::from_secs(100 + i), now).expect("token");
    }
    assert_eq!(t.len(), imds::MAX_TOKENS);
    assert!(
        !t.valid(first.as_bytes(), now),
        "the closest to expiry went first"
    );
    assert!(!t.valid(b"\xff\xfe", now));
}

#[test]
fn iso8601_dates() {
    for (secs, want) in [
        (0, "1970-01-01T00:00:00Z"),
        (951_782_400, "2000-02-29T00:00:00Z"),
        (1_700_000_000, "2023-11-14T22:13:20Z"),
        (4_102_444_799, "2099-12-31T23:59:59Z"),
    ] {
        assert_eq!(imds::iso8601(UNIX_EPOCH + Duration::from_secs(secs)), want);
    }
}

#[test]
fn split_target_table() {
    assert_eq!(split_target("/a?recursive=true"), Some(("/a", true)));
    assert_eq!(split_target("/a?x=1&RECURSIVE=TRUE"), Some(("/a", true)));
    assert_eq!(split_target("/a?recursive=false"), Some(("/a", false)));
    assert_eq!(split_target("/a#f"), Some(("/a", false)));
    assert_eq!(split_target("http://x/a"), None);
}

async fn start(
    kind: MetadataKind,
    providers: &str,
) -> (
    SocketAddr,
    Arc<PolicyStore>,
    sluice_telemetry::MemorySinkHandle,
) {
    let store = PolicyStore::new(snapshot(providers), None);
    let (sink, events) = AuditSink::memory();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let audit = Audit::new(sink);
    let store2 = Arc::clone(&store);
    tokio::spawn(async move {
        MetadataListener::new(kind, listener, store2, audit)
            .run()
            .await;
    });
    (addr, store, events)
}

async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = dial(addr).await;
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn listener_serves_limits_audits_and_follows_reloads() {
    let (addr, store, events) = start(MetadataKind::Gce, GCE).await;
    let token = "/computeMetadata/v1/instance/service-accounts/default/token";
    let r = exchange(
        addr,
        format!("GET {token}?x=1 HTTP/1.1\r\nHost: a\r\nMetadata-Flavor: Google\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(r.contains("\r\nMetadata-Flavor: Google\r\n"), "{r}");
    assert!(r.contains("\r\nConnection: close\r\n"), "{r}");
    assert!(r.ends_with(r#""token_type":"Bearer"}"#), "{r}");
    // Oversized head: 413; garbage: 400; body: 400; each still flavoured.
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(5000));
    let r = exchange(addr, big.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 413 "), "{r}");
    let r = exchange(addr, b"\x16\x03\x01\x00\xff garbage\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    let r = exchange(
        addr,
        b"GET / HTTP/1.1\r\nMetadata-Flavor: Google\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await;
    assert!(
        r.starts_with("HTTP/1.1 400 ") && r.contains("Metadata-Flavor: Google"),
        "{r}"
    );
    let r = exchange(addr, b"GET / HTTP/1.1\nbare\n\n").await;
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    // A reload without the provider: 503.
    store.publish(snapshot(NONE));
    let r = exchange(
        addr,
        format!("GET {token} HTTP/1.1\r\nMetadata-Flavor: Google\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
    let evs = events.events();
    let text = serde_json::to_string(&evs).unwrap_or_default();
    assert!(!text.contains(REAL), "secret in audit");
    assert!(!text.contains("sluice:resolve"), "placeholder in audit");
    assert!(!text.contains("x=1"), "query in audit");
    let msgs: Vec<&str> = evs.iter().filter_map(|e| e["message"].as_str()).collect();
    assert!(
        msgs.contains(&format!("METADATA gce GET {token} -> 200").as_str()),
        "{msgs:?}"
    );
    assert!(
        msgs.contains(&format!("METADATA gce GET {token} -> 503").as_str()),
        "{msgs:?}"
    );
    assert!(msgs.contains(&"METADATA gce - - -> 413"), "{msgs:?}");
}

#[tokio::test(start_paused = true)]
async fn slow_head_times_out() {
    let (addr, _store, _events) = start(MetadataKind::Aws, AWS).await;
    let mut s = dial(addr).await;
    s.write_all(b"GET / HTTP/1.1\r\n").await.expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 408 "));
}

#[tokio::test]
async fn imds_round_trip_and_connection_bound() {
    let (addr, _store, _events) = start(MetadataKind::Aws, AWS).await;
    let r = exchange(
        addr,
        b"PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
    let token = r.rsplit("\r\n\r\n").next().unwrap_or_default().to_owned();
    let r = exchange(addr, format!("GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nX-aws-ec2-metadata-token: {token}\r\n\r\n").as_bytes()).await;
    assert!(r.ends_with("\r\n\r\nagent"), "{r}");
    // 32 idle connections hold every permit; the 33rd waits for one.
    let mut idle = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        idle.push(dial(addr).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waiting = tokio::spawn(exchange(addr, b"GET /latest HTTP/1.1\r\n\r\n"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "served beyond the bound");
    drop(idle);
    let r = waiting.await.unwrap_or_default();
    assert!(r.starts_with("HTTP/1.1 401 "), "{r}");
}
