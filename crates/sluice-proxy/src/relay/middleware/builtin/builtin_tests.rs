//! Helpers shared by the built-in tests, the name dispatch, the shared
//! config and result rules, and the no-panic property test over every
//! built-in.

use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use serde_json::{json, Map, Value};

use super::super::stage::{HttpStage, StageError, StageFuture, WsSession};
use super::{findings, proto, resolve, syntax_line, valid_reason_code, Stages, MAX_FINDINGS};

// === helpers ===

/// A JSON object literal as a config map.
#[track_caller]
pub(super) fn cfg(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// The value of a built-in's future, which must be ready at once.
#[track_caller]
pub(super) fn now<T>(mut future: StageFuture<'_, T>) -> Result<T, StageError> {
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(r) => r,
        Poll::Pending => panic!("a built-in future must be ready when returned"),
    }
}

/// Both halves of a built-in.
#[track_caller]
pub(super) fn stages(name: &str, config: Value) -> Stages {
    resolve(name, &cfg(config)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[track_caller]
pub(super) fn http(name: &str, config: Value) -> Arc<dyn HttpStage> {
    stages(name, config).0.expect("an HTTP stage")
}

/// The config error of `name` with `config`.
#[track_caller]
pub(super) fn config_error(name: &str, config: Value) -> String {
    match resolve(name, &cfg(config)) {
        Ok(_) => panic!("{name}: config accepted"),
        Err(e) => e,
    }
}

/// A request with `body`, `headers` and target `path?query`.
pub(super) fn request(
    body: &[u8],
    headers: &[(&str, &str)],
    path: &str,
    query: &str,
) -> proto::HttpRequestEvaluation {
    proto::HttpRequestEvaluation {
        phase: proto::SupervisorMiddlewarePhase::PreCredentials as i32,
        target: Some(proto::HttpRequestTarget {
            scheme: "https".into(),
            host: "api.example.com".into(),
            port: 443,
            method: "POST".into(),
            path: path.into(),
            query: query.into(),
        }),
        headers: headers
            .iter()
            .map(|(n, v)| proto::HttpHeader {
                name: (*n).into(),
                value: (*v).into(),
            })
            .collect(),
        body: body.to_vec(),
        ..Default::default()
    }
}

/// What a result says, in a form tables compare.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Outcome {
    pub(super) deny: bool,
    pub(super) reason_code: String,
    /// The replacement body (`has_body`).
    pub(super) body: Option<String>,
    pub(super) removed: Vec<String>,
    pub(super) findings: Vec<(String, u32)>,
}

/// The outcome of one request through `stage`, checking the contract's
/// shape rules on the way.
#[track_caller]
pub(super) fn outcome(stage: &dyn HttpStage, eval: proto::HttpRequestEvaluation) -> Outcome {
    let r = now(stage.evaluate(eval)).expect("a built-in never fails a request");
    check_http_result(&r);
    Outcome {
        deny: r.decision == proto::Decision::Deny as i32,
        reason_code: r.reason_code,
        body: r
            .has_body
            .then(|| String::from_utf8(r.body).expect("a replacement body is UTF-8")),
        removed: r
            .header_mutations
            .into_iter()
            .map(|m| match m.operation {
                Some(proto::header_mutation::Operation::Remove(rm)) => rm.name,
                other => panic!("built-ins only remove headers: {other:?}"),
            })
            .collect(),
        findings: r.findings.into_iter().map(|f| (f.label, f.count)).collect(),
    }
}

/// The contract's rules for a result (what the chain would check).
#[track_caller]
pub(super) fn check_http_result(r: &proto::HttpRequestResult) {
    let deny = r.decision == proto::Decision::Deny as i32;
    assert!(deny || r.decision == proto::Decision::Allow as i32, "{r:?}");
    if deny {
        assert!(valid_reason_code(&r.reason_code), "{r:?}");
        assert!(!r.has_body && r.header_mutations.is_empty(), "{r:?}");
    }
    assert!(r.findings.len() <= MAX_FINDINGS, "{}", r.findings.len());
    assert!(r.findings.iter().all(|f| f.count > 0), "{r:?}");
    assert!(r.reason.len() <= 4096);
    assert!(r.body.len() <= super::super::stage::PLATFORM_MAX_PAYLOAD);
    if r.has_body {
        assert!(std::str::from_utf8(&r.body).is_ok());
    }
}

/// A session of `name`'s WebSocket stage (its preflight must inspect).
#[track_caller]
pub(super) fn session(name: &str, config: Value) -> Box<dyn WsSession> {
    let ws = stages(name, config).1.expect("a WebSocket stage");
    let (decision, session) = now(ws.open(preflight("/socket"))).expect("preflight");
    assert_eq!(
        decision.action,
        proto::WebSocketPreflightAction::Inspect as i32
    );
    let mut session = session.expect("a session when inspecting");
    session.start(String::new());
    session
}

pub(super) fn preflight(path: &str) -> proto::WebSocketPreflight {
    proto::WebSocketPreflight {
        session_id: "s1".into(),
        phase: proto::SupervisorMiddlewarePhase::PreCredentials as i32,
        target: Some(proto::HttpRequestTarget {
            scheme: "wss".into(),
            host: "ws.example.com".into(),
            port: 443,
            method: "GET".into(),
            path: path.into(),
            query: String::new(),
        }),
        ..Default::default()
    }
}

/// What a message result says: deny, reason_code, replacement text, findings.
pub(super) type MessageOutcome = (bool, String, Option<String>, Vec<(String, u32)>);

/// One text message through `session`.
#[track_caller]
pub(super) fn message(session: &mut dyn WsSession, sequence: u64, text: &str) -> MessageOutcome {
    let r = now(session.message(proto::WebSocketMessage {
        sequence,
        payload: Some(proto::web_socket_message::Payload::Text(text.into())),
    }))
    .expect("message result");
    assert_eq!(r.sequence, sequence);
    let deny = r.decision == proto::Decision::Deny as i32;
    assert!(deny || r.decision == proto::Decision::Allow as i32);
    assert!(r.findings.len() <= MAX_FINDINGS);
    let text = r.replacement.map(|rep| match rep {
        proto::web_socket_message_result::Replacement::Text(t) => t,
        proto::web_socket_message_result::Replacement::Binary(_) => panic!("binary replacement"),
    });
    assert!(!(deny && text.is_some()));
    (
        deny,
        r.reason_code,
        text,
        r.findings.into_iter().map(|f| (f.label, f.count)).collect(),
    )
}

// === dispatch and shared rules ===

#[test]
fn names_resolve_and_unknown_names_are_load_errors() {
    assert!(super::is_builtin("sluice/regex"));
    assert!(!super::is_builtin("content-guard"));
    let cases: &[(&str, Value, Option<&str>)] = &[
        ("sluice/regex", json!({"patterns": ["x"]}), None),
        ("sluice/secrets", json!({}), None),
        ("sluice/size", json!({"max_body_bytes": 10}), None),
        (
            "sluice/nope",
            json!({}),
            Some("unknown built-in middleware `sluice/nope` (built-ins: sluice/regex, sluice/secrets, sluice/size)"),
        ),
        (
            "sluice/Regex",
            json!({}),
            Some("unknown built-in middleware `sluice/Regex` (built-ins: sluice/regex, sluice/secrets, sluice/size)"),
        ),
    ];
    for (name, config, want) in cases {
        match (resolve(name, &cfg(config.clone())), want) {
            (Ok((http, ws)), None) => assert!(http.is_some() || ws.is_some(), "{name}"),
            (Err(e), Some(want)) => assert_eq!(&e, want, "{name}"),
            (Ok(_), Some(_)) => panic!("{name}: accepted"),
            (Err(e), None) => panic!("{name}: {e}"),
        }
    }
}

/// The configs `docs/policy.md` shows ("Built-in middleware stages").
#[test]
fn documented_configs_load() {
    let cases = [
        (
            "sluice/size",
            json!({"max_body_bytes": 1_048_576, "max_message_bytes": 65536}),
        ),
        ("sluice/secrets", json!({})),
        (
            "sluice/regex",
            json!({"patterns": ["\\bPRJ-[0-9]{4}\\b", "(?i)internal[ -]only"], "action": "redact"}),
        ),
        (
            "sluice/regex",
            json!({"patterns": ["\\bPRJ-[0-9]{4}\\b"], "action": "deny", "replacement": "[REDACTED]",
                   "reason_code": "regex_match", "headers": false, "target": false}),
        ),
        (
            "sluice/secrets",
            json!({"kinds": ["aws_access_key", "github_token"], "action": "deny",
                   "replacement": "[REDACTED]", "reason_code": "secret_detected",
                   "allow": ["^AKIAIOSFODNN7EXAMPLE$"], "headers": true, "target": true}),
        ),
        (
            "sluice/size",
            json!({"max_body_bytes": 1_048_576, "max_header_bytes": 16384, "max_headers": 64,
                   "max_message_bytes": 65536, "reason_code": "size_limit"}),
        ),
        ("sluice/regex", json!({"patterns": ["(?-u:\\w){40}"]})),
    ];
    for (name, config) in cases {
        let (http, ws) = stages(name, config);
        assert!(http.is_some() && ws.is_some(), "{name}");
    }
}

#[test]
fn reason_codes_follow_the_contract() {
    for (code, ok) in [
        ("regex_match", true),
        ("a", true),
        ("a1_b", true),
        (&*"a".repeat(64), true),
        (&*"a".repeat(65), false),
        ("", false),
        ("1abc", false),
        ("_abc", false),
        ("Abc", false),
        ("a-b", false),
        ("a b", false),
        ("é", false),
    ] {
        assert_eq!(valid_reason_code(code), ok, "{code:?}");
    }
}

#[test]
fn regex_syntax_errors_become_one_line() {
    let unclosed = String::from("(ab");
    let e = regex::bytes::Regex::new(&unclosed).unwrap_err().to_string();
    assert!(e.contains('\n'));
    assert_eq!(syntax_line(&e), "unclosed group");
    assert_eq!(syntax_line("odd\n  message"), "odd message");
}

#[test]
fn findings_are_capped_with_an_aggregate() {
    let counts: Vec<u32> = (0..40).map(|i| if i % 2 == 0 { 0 } else { 1 }).collect();
    let few = findings("t", &counts, |i| format!("p{i}"));
    assert_eq!(few.len(), 20);
    let counts: Vec<u32> = vec![2; 40];
    let many = findings("t", &counts, |i| format!("p{i}"));
    assert_eq!(many.len(), MAX_FINDINGS);
    assert_eq!(many[30].label, "p30");
    let last = many.last().unwrap();
    assert_eq!((last.label.as_str(), last.count), ("other", 2 * 9));
    let huge = findings("t", &[u32::MAX; 40], |i| format!("p{i}"));
    assert_eq!(huge.last().unwrap().count, u32::MAX);
}

#[test]
fn sessions_reject_sequences_that_do_not_increase() {
    let mut s = session("sluice/size", json!({"max_message_bytes": 4}));
    assert!(!message(&mut *s, 1, "ok").0);
    assert!(!message(&mut *s, 5, "ok").0, "gaps are valid");
    for bad in [5, 4, 0] {
        let r = now(s.message(proto::WebSocketMessage {
            sequence: bad,
            payload: Some(proto::web_socket_message::Payload::Text("x".into())),
        }));
        assert!(matches!(r, Err(StageError::Invalid(_))), "{bad}: {r:?}");
    }
    let mut fresh = session("sluice/size", json!({"max_message_bytes": 4}));
    assert!(now(fresh.message(proto::WebSocketMessage {
        sequence: 0,
        payload: None,
    }))
    .is_err());
    s.end(proto::MiddlewareSessionEndReason::Normal);
}

// === property: no input makes a built-in panic or break the contract ===

/// splitmix64: a small deterministic generator (no dependency, and a
/// failure names its seed).
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }

    pub(super) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Pieces that exercise the scanners: real-looking (fake) tokens, their
/// near misses, placeholders, PEM lines, multi-byte and invalid UTF-8.
const PIECES: &[&str] = &[
    "AKIAIOSFODNN7EXAMPLE",
    "AKIA",
    "ghp_",
    "ghp_FAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKE0000",
    "github_pat_",
    "xoxb-",
    "xoxb-1234567890-FAKEfakeFAKE",
    "AIza",
    "sk_live_",
    "eyJhbGciOiJIUzI1NiJ9",
    "eyJ",
    ".",
    "-----BEGIN PRIVATE KEY-----",
    "-----END PRIVATE KEY-----",
    "sluice:resolve:env:",
    "sluice:resolve:env:TOKEN",
    "openshell:resolve:env:K",
    "Bearer ",
    "aws_secret_access_key=",
    "https://hooks.slack.com/services/",
    "0123456789abcdefABCDEF",
    "é",
    "😀",
    " ",
    "\n",
    "\"",
    "=",
    "a",
    "aaaaaaaaaaaaaaaa",
    "secret",
];

pub(super) fn random_text(rng: &mut Rng, max_pieces: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.below(max_pieces + 1) {
        match rng.below(10) {
            0 => out.push(u8::try_from(rng.below(256)).unwrap_or(0)),
            1 => out.extend((0..rng.below(40)).map(|_| b"AZaz09_-+/"[rng.below(10)])),
            _ => out.extend_from_slice(rng.pick(PIECES).as_bytes()),
        }
    }
    out
}

fn random_config(rng: &mut Rng) -> (&'static str, Value) {
    const PATTERNS: &[&str] = &[
        "secret",
        "a+",
        "(?i)bearer\\s+\\S+",
        "[0-9]{4,}",
        "a*b|a",
        "(?-u:\\xE9)",
        "\\bAKIA",
        "é+",
        "(?s).",
        "x{3}",
        "\\b",
    ];
    const KINDS: &[&str] = &[
        "private_key",
        "jwt",
        "aws_access_key",
        "aws_secret_key",
        "github_token",
        "slack_token",
        "slack_webhook",
        "google_api_key",
        "stripe_key",
        "bearer_token",
    ];
    let action = *rng.pick(&["deny", "redact"]);
    let replacement = *rng.pick(&["[REDACTED]", "", "é", "xx"]);
    let flag = |rng: &mut Rng| rng.below(2) == 0;
    match rng.below(3) {
        0 => {
            let patterns: Vec<&str> = (0..=rng.below(4)).map(|_| *rng.pick(PATTERNS)).collect();
            (
                "sluice/regex",
                json!({"patterns": patterns, "action": action, "replacement": replacement,
                       "headers": flag(rng), "target": flag(rng)}),
            )
        }
        1 => {
            let kinds: Vec<&str> = (0..=rng.below(4)).map(|_| *rng.pick(KINDS)).collect();
            (
                "sluice/secrets",
                json!({"kinds": kinds, "action": action, "replacement": replacement,
                       "allow": ["EXAMPLE"], "headers": flag(rng), "target": flag(rng)}),
            )
        }
        _ => (
            "sluice/size",
            json!({"max_body_bytes": 1 + rng.below(64), "max_header_bytes": 1 + rng.below(64),
                   "max_headers": 1 + rng.below(4), "max_message_bytes": 1 + rng.below(64)}),
        ),
    }
}

#[test]
fn random_bodies_and_configs_never_panic_nor_break_the_contract() {
    for seed in 0..1500u64 {
        let mut rng = Rng::new(seed);
        let (name, config) = random_config(&mut rng);
        let (http, ws) = resolve(name, &cfg(config.clone()))
            .unwrap_or_else(|e| panic!("seed {seed}: {name} {config}: {e}"));
        let body = random_text(&mut rng, 24);
        let header = String::from_utf8_lossy(&random_text(&mut rng, 6)).into_owned();
        let path = String::from_utf8_lossy(&random_text(&mut rng, 4)).into_owned();
        if let Some(stage) = http {
            let eval = request(&body, &[("x-data", &header)], &format!("/{path}"), "q=1");
            let r = now(stage.evaluate(eval)).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            check_http_result(&r);
        }
        if let Some(ws) = ws {
            let (decision, session) =
                now(ws.open(preflight(&format!("/{path}")))).expect("preflight");
            let Some(mut session) = session else {
                assert_eq!(
                    decision.action,
                    proto::WebSocketPreflightAction::Deny as i32,
                    "seed {seed}"
                );
                assert!(valid_reason_code(&decision.reason_code));
                continue;
            };
            let text = String::from_utf8_lossy(&body).into_owned();
            let _ = message(&mut *session, 1, &text);
            let r = now(session.message(proto::WebSocketMessage {
                sequence: 2,
                payload: Some(proto::web_socket_message::Payload::Binary(body.clone())),
            }))
            .expect("binary message");
            assert!(r.replacement.is_none(), "seed {seed}");
        }
    }
}
