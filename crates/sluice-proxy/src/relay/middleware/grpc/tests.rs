//! The gRPC stages against the test middleware service (in process, on
//! 127.0.0.1): describe, validate, evaluate, WebSocket sessions, TLS.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use sluice_test_support::middleware::{
    serve_test_middleware, spawn_test_middleware, InProcessMiddleware, TestBinding,
    TestMiddlewareOptions,
};
use sluice_test_support::{patience, recorded, test_pki, TempDir};

use super::super::proto::{
    self, header_mutation, web_socket_message, web_socket_message_result,
    MiddlewareSessionEndReason, WebSocketPreflightAction,
};
use super::super::runtime::json_to_struct;
use super::super::stage::StageError;
use super::http::Admission;
use super::{Registration, Service};

const MIB: usize = 1024 * 1024;

struct Fixture {
    _dir: TempDir,
    record: std::path::PathBuf,
    server: InProcessMiddleware,
}

impl Fixture {
    async fn start(configure: impl FnOnce(&mut TestMiddlewareOptions)) -> Self {
        let dir = TempDir::new("mw-grpc");
        let record = dir.path("record.jsonl");
        let mut opts = TestMiddlewareOptions {
            record: Some(record.clone()),
            ..TestMiddlewareOptions::default()
        };
        configure(&mut opts);
        let server = spawn_test_middleware(opts).await;
        Self {
            _dir: dir,
            record,
            server,
        }
    }

    fn registration(&self, options: &str) -> Registration {
        registration("http", self.server.addr, options)
    }

    async fn connect(&self, options: &str) -> Result<Service, String> {
        Service::connect(&self.registration(options), None).await
    }

    fn calls(&self, rpc: &str) -> Vec<serde_json::Value> {
        recorded(&self.record)
            .into_iter()
            .filter(|l| l["rpc"] == rpc)
            .collect()
    }
}

fn registration(scheme: &str, addr: SocketAddr, options: &str) -> Registration {
    format!("test={scheme}://{addr}{options}")
        .parse()
        .expect("registration")
}

fn config(value: serde_json::Value) -> prost_types::Struct {
    json_to_struct(value.as_object().expect("a JSON object"))
}

fn evaluation(cfg: serde_json::Value, body: &[u8]) -> proto::HttpRequestEvaluation {
    proto::HttpRequestEvaluation {
        phase: proto::SupervisorMiddlewarePhase::PreCredentials as i32,
        context: Some(proto::RequestContext {
            request_id: "req-1".into(),
            sandbox_id: "sandbox-1".into(),
            ..proto::RequestContext::default()
        }),
        config: Some(config(cfg)),
        target: Some(proto::HttpRequestTarget {
            scheme: "https".into(),
            host: "api.example.com".into(),
            port: 443,
            method: "POST".into(),
            path: "/v1/items".into(),
            query: String::new(),
        }),
        headers: vec![proto::HttpHeader {
            name: "x-visible".into(),
            value: "value-never-recorded".into(),
        }],
        body: body.to_vec(),
        middleware_name: "test".into(),
    }
}

fn preflight(cfg: serde_json::Value) -> proto::WebSocketPreflight {
    proto::WebSocketPreflight {
        session_id: "ws-1".into(),
        phase: proto::SupervisorMiddlewarePhase::PreCredentials as i32,
        target: Some(proto::HttpRequestTarget {
            scheme: "wss".into(),
            host: "chat.example.com".into(),
            port: 443,
            method: "GET".into(),
            path: "/socket".into(),
            query: String::new(),
        }),
        requested_subprotocols: vec!["chat".into()],
        middleware_name: "test".into(),
        config: Some(config(cfg)),
        ..proto::WebSocketPreflight::default()
    }
}

fn text(sequence: u64, t: &str) -> proto::WebSocketMessage {
    proto::WebSocketMessage {
        sequence,
        payload: Some(web_socket_message::Payload::Text(t.into())),
    }
}

// === Service::connect ===

#[tokio::test]
async fn connect_describes_both_bindings() {
    let f = Fixture::start(|_| {}).await;
    let service = f.connect("").await.expect("connect");
    let http = service.http_stage().expect("http binding");
    let ws = service.ws_stage().expect("websocket binding");
    assert_eq!((http.max_payload(), ws.max_payload()), (MIB, MIB));
    assert_eq!(f.calls("Describe").len(), 1);
}

#[tokio::test]
async fn connect_http_only_service_has_no_websocket_stage() {
    let f = Fixture::start(|o| o.http_only = true).await;
    let service = f.connect("").await.expect("connect");
    assert!(service.http_stage().is_some());
    assert!(service.ws_stage().is_none());
}

#[tokio::test]
async fn operator_limits_apply_and_may_not_exceed_the_binding() {
    let f = Fixture::start(|_| {}).await;
    let service = f.connect(",max_payload_bytes=1000").await.expect("connect");
    assert_eq!(service.http_stage().unwrap().max_payload(), 1000);
    assert_eq!(service.ws_stage().unwrap().max_payload(), 1000);

    let Err(e) = f.connect(",max_payload_bytes=2097152").await else {
        panic!("a limit over the binding's capability must fail");
    };
    assert!(
        e.contains("middleware `test`") && e.contains("over the 1048576 bytes"),
        "{e}"
    );
}

#[tokio::test]
async fn bad_manifests_fail_the_start() {
    // --binding specs, a fragment of the error
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "http_request:pre_credentials:1024",
                "http_request:pre_credentials:2048",
            ],
            "advertised more than once",
        ),
        (
            &["http_request:pre_return:1024"],
            "PRE_RETURN phase is reserved",
        ),
        (
            &["websocket_message:pre_credentials:0"],
            "no max_payload_bytes",
        ),
        (&["http_request:pre_credentials:1024:1h"], "timeout `1h`"),
        (
            &["unspecified:pre_credentials:1024"],
            "unspecified operation",
        ),
    ];
    for (specs, want) in cases {
        let bindings = specs
            .iter()
            .map(|s| TestBinding::parse(s).unwrap())
            .collect();
        let f = Fixture::start(|o| o.bindings = bindings).await;
        let Err(e) = f.connect("").await else {
            panic!("{specs:?} must fail");
        };
        assert!(
            e.contains("middleware `test`") && e.contains(want),
            "{specs:?}: {e}"
        );
    }
}

#[tokio::test]
async fn ignored_operation_is_not_a_failure() {
    let bindings = vec![
        TestBinding::parse("http_response:pre_credentials:1024").unwrap(),
        TestBinding::parse("http_request:pre_credentials:1024").unwrap(),
    ];
    let f = Fixture::start(|o| o.bindings = bindings).await;
    let service = f.connect("").await.expect("connect");
    assert_eq!(service.http_stage().unwrap().max_payload(), 1024);
    assert!(service.ws_stage().is_none());
}

#[tokio::test]
async fn unreachable_service_fails_the_start_naming_it() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let reg = registration("http", addr, ",timeout=2s");
    let Err(e) = Service::connect(&reg, None).await else {
        panic!("nothing listens there");
    };
    assert!(
        e.starts_with(&format!("middleware `test` (http://{addr})"))
            && e.contains("cannot connect"),
        "{e}"
    );
}

#[tokio::test]
async fn slow_describe_fails_the_start() {
    let f = Fixture::start(|o| o.describe_delay = Some(Duration::from_millis(500))).await;
    let Err(e) = f.connect(",timeout=50ms").await else {
        panic!("Describe is slower than the timeout");
    };
    assert!(e.contains("no answer to Describe within 50ms"), "{e}");
}

// === validate_config ===

#[tokio::test]
async fn validate_config_accepts_and_rejects() {
    let f = Fixture::start(|_| {}).await;
    let service = f.connect("").await.unwrap();
    service
        .validate_config(
            "test",
            &config(json!({"behavior": "deny", "reason_code": "x"})),
        )
        .await
        .expect("a valid config");
    let e = service
        .validate_config("test", &config(json!({"reject": true})))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        "middleware `test` rejected its config: rejected by test server"
    );
    let e = service
        .validate_config("test", &config(json!({"behavior": "bogus\nline"})))
        .await
        .unwrap_err();
    assert!(
        e.contains("unknown behavior `bogus line`"),
        "control characters removed: {e}"
    );
    let calls = f.calls("ValidateConfig");
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[0]["middleware_name"], "test");
    assert_eq!(calls[0]["config_keys"], json!(["behavior", "reason_code"]));
}

// === the HTTP stage ===

#[tokio::test]
async fn http_stage_results() {
    let f = Fixture::start(|_| {}).await;
    let service = f.connect("").await.unwrap();
    let stage = service.http_stage().unwrap();
    let allow = proto::Decision::Allow as i32;
    let deny = proto::Decision::Deny as i32;

    let r = stage.evaluate(evaluation(json!({}), b"{}")).await.unwrap();
    assert_eq!((r.decision, r.has_body), (allow, false));

    let r = stage
        .evaluate(evaluation(
            json!({"behavior": "deny", "reason_code": "no_way"}),
            b"",
        ))
        .await
        .unwrap();
    assert_eq!((r.decision, r.reason_code.as_str()), (deny, "no_way"));

    let r = stage
        .evaluate(evaluation(json!({"behavior": "mutate_header"}), b""))
        .await
        .unwrap();
    let Some(header_mutation::Operation::Write(w)) = &r.header_mutations[0].operation else {
        panic!("a header write: {r:?}");
    };
    assert_eq!(
        (w.name.as_str(), w.value.as_str()),
        ("x-openshell-middleware-test", "1")
    );

    let r = stage
        .evaluate(evaluation(
            json!({"behavior": "replace_body", "body": "new"}),
            b"old",
        ))
        .await
        .unwrap();
    assert_eq!(
        (r.decision, r.has_body, r.body.as_slice()),
        (allow, true, &b"new"[..])
    );

    let redact = json!({"behavior": "redact", "pattern": "s3cret"});
    let r = stage
        .evaluate(evaluation(redact.clone(), b"a s3cret and s3cret"))
        .await
        .unwrap();
    assert_eq!(r.body, b"a [REDACTED] and [REDACTED]");
    let r = stage.evaluate(evaluation(redact, b"clean")).await.unwrap();
    assert!(!r.has_body);

    let deny_if = json!({"behavior": "deny_if", "pattern": "DROP TABLE"});
    let r = stage
        .evaluate(evaluation(deny_if.clone(), b"x; DROP TABLE users"))
        .await
        .unwrap();
    assert_eq!(r.decision, deny);
    let r = stage
        .evaluate(evaluation(deny_if, b"select 1"))
        .await
        .unwrap();
    assert_eq!(r.decision, allow);

    // An UNSPECIFIED decision is returned as is: the chain validates
    // results from every implementation alike.
    let r = stage
        .evaluate(evaluation(json!({"behavior": "bad_result"}), b""))
        .await
        .unwrap();
    assert_eq!(r.decision, proto::Decision::Unspecified as i32);

    let e = stage
        .evaluate(evaluation(json!({"behavior": "error"}), b""))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StageError::Unavailable(m) if m.contains("test server error")),
        "{e:?}"
    );

    let calls = f.calls("EvaluateHttpRequest");
    assert_eq!(calls.len(), 10);
    assert_eq!(calls[0]["host"], "api.example.com");
    assert_eq!(calls[0]["path"], "/v1/items");
    assert_eq!(calls[0]["headers"], json!(["x-visible"]));
    assert_eq!(calls[0]["body_len"], 2);
    let raw = std::fs::read_to_string(&f.record).unwrap();
    assert!(!raw.contains("value-never-recorded") && !raw.contains("s3cret"));
}

#[tokio::test]
async fn http_stage_timeouts() {
    let f = Fixture::start(|_| {}).await;
    let service = f.connect(",timeout=100ms").await.unwrap();
    let stage = service.http_stage().unwrap();
    let slow = json!({"behavior": "sleep", "ms": 2000});
    let started = std::time::Instant::now();
    let e = stage.evaluate(evaluation(slow, b"")).await.unwrap_err();
    assert!(
        matches!(e, StageError::Timeout(d) if d == Duration::from_millis(100)),
        "{e:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(1500));
    let quick = json!({"behavior": "sleep", "ms": 10});
    stage
        .evaluate(evaluation(quick, b""))
        .await
        .expect("within the timeout");
}

#[tokio::test]
async fn binding_timeout_shortens_the_operator_timeout() {
    let bindings = vec![TestBinding::parse("http_request:pre_credentials:1024:50ms").unwrap()];
    let f = Fixture::start(|o| o.bindings = bindings).await;
    let service = f.connect(",timeout=5s").await.unwrap();
    let slow = json!({"behavior": "sleep", "ms": 1000});
    let e = service
        .http_stage()
        .unwrap()
        .evaluate(evaluation(slow, b""))
        .await
        .unwrap_err();
    assert!(
        matches!(e, StageError::Timeout(d) if d == Duration::from_millis(50)),
        "{e:?}"
    );
}

#[tokio::test]
async fn body_over_the_limit_is_never_sent() {
    let f = Fixture::start(|_| {}).await;
    let service = f.connect(",max_payload_bytes=10").await.unwrap();
    let e = service
        .http_stage()
        .unwrap()
        .evaluate(evaluation(json!({}), b"01234567890"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            StageError::TooLarge {
                size: 11,
                limit: 10
            }
        ),
        "{e:?}"
    );
    assert!(f.calls("EvaluateHttpRequest").is_empty());
}

#[tokio::test]
async fn service_gone_after_start_is_unavailable() {
    let f = Fixture::start(|_| {}).await;
    let service = f.connect("").await.unwrap();
    let stage = service.http_stage().unwrap();
    stage
        .evaluate(evaluation(json!({}), b""))
        .await
        .expect("up");
    let Fixture { server, _dir, .. } = f;
    let addr = server.addr;
    server.stop().await;
    let e = stage
        .evaluate(evaluation(json!({}), b""))
        .await
        .unwrap_err();
    assert!(matches!(e, StageError::Unavailable(_)), "{e:?}");

    // The same channel reconnects once the service is back.
    let listener = tokio::net::TcpListener::bind(addr).await.expect("rebind");
    let again = tokio::spawn(serve_test_middleware(
        listener,
        TestMiddlewareOptions::default(),
    ));
    let deadline = tokio::time::Instant::now() + patience();
    while let Err(e) = stage.evaluate(evaluation(json!({}), b"")).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reconnection: {e:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    again.abort();
}

#[tokio::test]
async fn admission_bounds_running_and_waiting_calls() {
    let admission = std::sync::Arc::new(Admission::new(1, 1));
    let running = admission.enter().await.expect("first call runs");
    let waiter = {
        let admission = std::sync::Arc::clone(&admission);
        tokio::spawn(async move { admission.enter().await.map(drop) })
    };
    tokio::task::yield_now().await;
    let e = admission.enter().await.err().expect("third call refused");
    assert!(
        matches!(&e, StageError::Unavailable(m) if m.contains("admission full")),
        "{e:?}"
    );
    drop(running);
    waiter
        .await
        .unwrap()
        .expect("the waiting call runs once the slot frees");
    admission.enter().await.expect("free again");
}

// === the WebSocket stage ===

#[tokio::test]
async fn websocket_session_inspects_redacts_and_ends() {
    let f = Fixture::start(|_| {}).await;
    let service = f.connect("").await.unwrap();
    let stage = service.ws_stage().unwrap();
    let (decision, session) = stage
        .open(preflight(json!({"behavior": "redact", "pattern": "tok_"})))
        .await
        .unwrap();
    assert_eq!(decision.action, WebSocketPreflightAction::Inspect as i32);
    let mut session = session.expect("INSPECT opens a session");
    session.start("chat".into());

    let r = session.message(text(1, "key tok_123 here")).await.unwrap();
    assert_eq!(r.sequence, 1);
    assert_eq!(
        r.replacement,
        Some(web_socket_message_result::Replacement::Text(
            "key [REDACTED]123 here".into()
        ))
    );
    // Gaps are valid (binary messages consume sequence numbers).
    let r = session.message(text(3, "clean")).await.unwrap();
    assert_eq!((r.sequence, r.replacement), (3, None));

    session.end(MiddlewareSessionEndReason::Normal);
    let deadline = tokio::time::Instant::now() + patience();
    while !f
        .calls("EvaluateWebSocketSession")
        .iter()
        .any(|c| c["event"] == "session_end")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no session_end reached the service"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events: Vec<String> = f
        .calls("EvaluateWebSocketSession")
        .iter()
        .map(|c| c["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        events,
        [
            "preflight",
            "session_start",
            "message",
            "message",
            "session_end"
        ]
    );
    let calls = f.calls("EvaluateWebSocketSession");
    assert_eq!(calls[0]["host"], "chat.example.com");
    assert_eq!(calls[1]["selected_subprotocol"], "chat");
    assert_eq!(
        calls[4]["reason"],
        MiddlewareSessionEndReason::Normal as i32
    );
}

#[tokio::test]
async fn websocket_message_deny() {
    let f = Fixture::start(|_| {}).await;
    let service = f.connect("").await.unwrap();
    let cfg = json!({"behavior": "deny_if", "pattern": "rm -rf", "reason_code": "dangerous"});
    let (_, session) = service
        .ws_stage()
        .unwrap()
        .open(preflight(cfg))
        .await
        .unwrap();
    let mut session = session.unwrap();
    session.start(String::new());
    let r = session.message(text(1, "ls")).await.unwrap();
    assert_eq!(r.decision, proto::Decision::Allow as i32);
    let r = session.message(text(2, "rm -rf /")).await.unwrap();
    assert_eq!(
        (r.sequence, r.decision, r.reason_code.as_str()),
        (2, proto::Decision::Deny as i32, "dangerous")
    );
}

#[tokio::test]
async fn websocket_preflight_skip_and_deny_open_no_session() {
    let f = Fixture::start(|_| {}).await;
    let service = f.connect("").await.unwrap();
    let stage = service.ws_stage().unwrap();
    for (preflight_cfg, action) in [
        ("skip", WebSocketPreflightAction::Skip),
        ("deny", WebSocketPreflightAction::Deny),
        ("unspecified", WebSocketPreflightAction::Unspecified),
    ] {
        let (decision, session) = stage
            .open(preflight(json!({"preflight": preflight_cfg})))
            .await
            .unwrap();
        assert_eq!(decision.action, action as i32, "{preflight_cfg}");
        assert!(session.is_none(), "{preflight_cfg}");
    }
}

#[tokio::test]
async fn websocket_sequence_mismatch_is_invalid_and_breaks_the_session() {
    let f = Fixture::start(|_| {}).await;
    let service = f.connect("").await.unwrap();
    let (_, session) = service
        .ws_stage()
        .unwrap()
        .open(preflight(json!({"behavior": "wrong_sequence"})))
        .await
        .unwrap();
    let mut session = session.unwrap();
    let e = session.message(text(1, "a")).await.unwrap_err();
    assert!(
        matches!(&e, StageError::Invalid(m) if m.contains("sequence 2 answers message 1")),
        "{e:?}"
    );
    let e = session.message(text(2, "b")).await.unwrap_err();
    assert!(matches!(e, StageError::Unavailable(_)), "{e:?}");
}

#[tokio::test]
async fn websocket_failures() {
    let f = Fixture::start(|_| {}).await;
    let service = f
        .connect(",timeout=100ms,max_payload_bytes=8")
        .await
        .unwrap();
    let stage = service.ws_stage().unwrap();

    let e = stage
        .open(preflight(json!({"behavior": "error"})))
        .await
        .err()
        .expect("a failing service");
    assert!(matches!(e, StageError::Unavailable(_)), "{e:?}");

    let (_, session) = stage
        .open(preflight(json!({"behavior": "sleep", "ms": 1000})))
        .await
        .unwrap();
    let mut session = session.unwrap();
    let e = session.message(text(1, "123456789")).await.unwrap_err();
    assert!(
        matches!(e, StageError::TooLarge { size: 9, limit: 8 }),
        "{e:?}"
    );
    let e = session.message(text(2, "slow")).await.unwrap_err();
    assert!(
        matches!(e, StageError::Timeout(d) if d == Duration::from_millis(100)),
        "{e:?}"
    );
    let e = session.message(text(3, "late")).await.unwrap_err();
    assert!(matches!(e, StageError::Unavailable(_)), "{e:?}");
}

// === TLS ===

#[tokio::test]
async fn tls_service_is_reached_with_the_given_ca_only() {
    let dir = TempDir::new("mw-tls");
    let pki = test_pki(&dir, "mw", &["127.0.0.1"]);
    let tls = Some((pki.cert.clone(), pki.key.clone()));
    let f = Fixture::start(|o| o.tls = tls).await;
    let ca = std::fs::read(&pki.ca).unwrap();
    let reg = registration("https", f.server.addr, ",timeout=2s");

    let service = Service::connect(&reg, Some(&ca))
        .await
        .expect("TLS with the CA");
    let r = service
        .http_stage()
        .unwrap()
        .evaluate(evaluation(json!({}), b"x"))
        .await
        .unwrap();
    assert_eq!(r.decision, proto::Decision::Allow as i32);

    let Err(e) = Service::connect(&reg, None).await else {
        panic!("the webpki roots do not trust the test CA");
    };
    assert!(e.contains("cannot connect"), "{e}");

    let Err(e) = Service::connect(&reg, Some(b"not a pem")).await else {
        panic!("an unusable CA");
    };
    assert!(e.contains("--middleware-ca"), "{e}");

    let plain = registration("http", f.server.addr, ",timeout=500ms");
    assert!(
        Service::connect(&plain, None).await.is_err(),
        "plaintext to a TLS port"
    );
}
