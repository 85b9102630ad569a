use serde_json::{json, Value};

use super::super::tests::{
    config_error, http, message, now, outcome, preflight, request, session, stages, Outcome,
};
use super::NAME;
use crate::relay::middleware::proto;

#[test]
fn config_errors_name_the_field() {
    let long = "a".repeat(1025);
    let many: Vec<String> = (0..65).map(|i| format!("p{i}")).collect();
    let long_code = format!(
        "`reason_code`: `{}` must match [a-z][a-z0-9_]* and be at most 64 bytes",
        "a".repeat(65)
    );
    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "`patterns`: required (a list of regular expressions)"),
        (json!({"patterns": []}), "`patterns`: must not be empty"),
        (json!({"patterns": "x"}), "`patterns`: must be a list of strings"),
        (json!({"patterns": ["a", 3]}), "`patterns[1]`: must be a string"),
        (json!({"patterns": ["a", "(b"]}), "`patterns[1]`: invalid regex: unclosed group"),
        (json!({"patterns": ["a", "x{2,1}"]}), "`patterns[1]`: invalid regex: invalid repetition count range, the start must be <= the end"),
        (json!({"patterns": ["(?<=a)b"]}), "`patterns[0]`: invalid regex: look-around, including look-ahead and look-behind, is not supported"),
        (json!({"patterns": [long]}), "`patterns[0]`: longer than 1024 bytes"),
        (json!({"patterns": many}), "`patterns`: 65 patterns, at most 64 allowed"),
        (
            json!({"patterns": ["ok", "\\w{100}"]}),
            "`patterns[1]`: regex too large when compiled (limit 2097152 bytes; `(?-u)` makes classes ASCII and smaller)",
        ),
        (json!({"patterns": ["a*"]}), "`patterns[0]`: matches the empty string"),
        (json!({"patterns": ["x|"]}), "`patterns[0]`: matches the empty string"),
        (json!({"patterns": ["x"], "action": "block"}), "`action`: must be `deny` or `redact`, not `block`"),
        (json!({"patterns": ["x"], "action": true}), "`action`: must be a string"),
        (json!({"patterns": ["x"], "replacement": "r".repeat(257)}), "`replacement`: longer than 256 bytes"),
        (json!({"patterns": ["x"], "replacement": null}), "`replacement`: must be a string"),
        (
            json!({"patterns": ["x"], "reason_code": "Bad-Code"}),
            "`reason_code`: `Bad-Code` must match [a-z][a-z0-9_]* and be at most 64 bytes",
        ),
        (
            json!({"patterns": ["x"], "reason_code": "a".repeat(65)}),
            &long_code,
        ),
        (json!({"patterns": ["x"], "headers": "yes"}), "`headers`: must be true or false"),
        (json!({"patterns": ["x"], "target": 1}), "`target`: must be true or false"),
        (
            json!({"patterns": ["x"], "pattern": ["y"]}),
            "`pattern`: unknown field (expected one of: patterns, action, replacement, reason_code, headers, target)",
        ),
        (
            json!({"patterns": ["x"], "bad\nkey": 1}),
            "`bad\\nkey`: unknown field (expected one of: patterns, action, replacement, reason_code, headers, target)",
        ),
    ];
    for (config, want) in cases {
        let got = config_error(NAME, config.clone());
        assert_eq!(got, want, "{config}");
        assert!(!got.contains('\n'), "one line: {got:?}");
    }
}

fn allow() -> Outcome {
    Outcome {
        deny: false,
        reason_code: String::new(),
        body: None,
        removed: vec![],
        findings: vec![],
    }
}

fn deny(code: &str, findings: &[(&str, u32)]) -> Outcome {
    Outcome {
        deny: true,
        reason_code: code.into(),
        body: None,
        removed: vec![],
        findings: findings.iter().map(|(l, c)| ((*l).into(), *c)).collect(),
    }
}

fn redacted(body: Option<&str>, removed: &[&str], findings: &[(&str, u32)]) -> Outcome {
    Outcome {
        deny: false,
        reason_code: String::new(),
        body: body.map(Into::into),
        removed: removed.iter().map(|s| (*s).into()).collect(),
        findings: findings.iter().map(|(l, c)| ((*l).into(), *c)).collect(),
    }
}

struct Case {
    name: &'static str,
    config: Value,
    body: &'static [u8],
    headers: &'static [(&'static str, &'static str)],
    path: &'static str,
    query: &'static str,
    want: Outcome,
}

fn case(name: &'static str, config: Value, body: &'static [u8], want: Outcome) -> Case {
    Case {
        name,
        config,
        body,
        headers: &[],
        path: "/v1/items",
        query: "",
        want,
    }
}

#[test]
fn http_requests() {
    let mut cases = vec![
        case(
            "no match",
            json!({"patterns": ["secret"]}),
            b"hello",
            allow(),
        ),
        case("empty body", json!({"patterns": ["secret"]}), b"", allow()),
        case(
            "deny by default, counts per pattern",
            json!({"patterns": ["secret", "[0-9]{4}"]}),
            b"secret 1234 secret 5678 9",
            deny("regex_match", &[("pattern 0", 2), ("pattern 1", 2)]),
        ),
        case(
            "own reason_code",
            json!({"patterns": ["x"], "reason_code": "no_x"}),
            b"x",
            deny("no_x", &[("pattern 0", 1)]),
        ),
        case(
            "redact in a UTF-8 body",
            json!({"patterns": ["secret", "[0-9]{4}"], "action": "redact"}),
            "é secret 1234 — secret".as_bytes(),
            redacted(
                Some("é [REDACTED] [REDACTED] — [REDACTED]"),
                &[],
                &[("pattern 0", 2), ("pattern 1", 1)],
            ),
        ),
        case(
            "overlapping matches are one redaction",
            json!({"patterns": ["abc", "bcd"], "action": "redact", "replacement": "#"}),
            b"xabcdx",
            redacted(Some("x#x"), &[], &[("pattern 0", 1), ("pattern 1", 1)]),
        ),
        case(
            "empty replacement deletes",
            json!({"patterns": ["-+"], "action": "redact", "replacement": ""}),
            b"a--b-c",
            redacted(Some("abc"), &[], &[("pattern 0", 2)]),
        ),
        case(
            "non-UTF-8 body with a match: deny, never half-redacted",
            json!({"patterns": ["secret"], "action": "redact"}),
            b"\xff\xfe secret",
            deny("regex_match", &[("pattern 0", 1)]),
        ),
        case(
            "non-UTF-8 body without a match passes",
            json!({"patterns": ["secret"], "action": "redact"}),
            b"\xff\xfe",
            allow(),
        ),
        case(
            "non-UTF-8 body, deny mode: the bytes are scanned",
            json!({"patterns": ["secret"]}),
            b"\xffsecret\xff",
            deny("regex_match", &[("pattern 0", 1)]),
        ),
        case(
            "a pattern that cuts a character cannot redact",
            json!({"patterns": ["(?-u:\\xA9)"], "action": "redact"}),
            "©".as_bytes(),
            deny("regex_match", &[("pattern 0", 1)]),
        ),
    ];
    cases.extend([
        Case {
            headers: &[("x-note", "secret")],
            ..case(
                "headers are not scanned unless asked",
                json!({"patterns": ["secret"]}),
                b"",
                allow(),
            )
        },
        Case {
            path: "/secret",
            query: "secret",
            ..case(
                "the target is not scanned unless asked",
                json!({"patterns": ["secret"]}),
                b"",
                allow(),
            )
        },
        Case {
            headers: &[
                ("x-note", "a secret"),
                ("x-other", "fine"),
                ("x-note", "secret too"),
            ],
            ..case(
                "header match, deny",
                json!({"patterns": ["secret"], "headers": true}),
                b"",
                deny("regex_match", &[("pattern 0", 2)]),
            )
        },
        Case {
            headers: &[
                ("x-note", "a secret"),
                ("x-other", "fine"),
                ("x-note", "secret too"),
            ],
            ..case(
                "header match, redact: the header is removed (once)",
                json!({"patterns": ["secret"], "headers": true, "action": "redact"}),
                b"secret",
                redacted(Some("[REDACTED]"), &["x-note"], &[("pattern 0", 3)]),
            )
        },
        Case {
            path: "/users/secret",
            query: "q=1",
            ..case(
                "target match, deny",
                json!({"patterns": ["secret"], "target": true}),
                b"",
                deny("regex_match", &[("pattern 0", 1)]),
            )
        },
        Case {
            path: "/users",
            query: "token=secret",
            ..case(
                "query match under redact: the target cannot be rewritten",
                json!({"patterns": ["secret"], "target": true, "action": "redact"}),
                b"secret",
                deny("regex_match", &[("pattern 0", 2)]),
            )
        },
        Case {
            path: "/a",
            query: "b",
            ..case(
                "the target is path?query",
                json!({"patterns": ["^/a\\?b$"], "target": true}),
                b"",
                deny("regex_match", &[("pattern 0", 1)]),
            )
        },
    ]);
    for c in cases {
        let stage = http(NAME, c.config);
        let got = outcome(&*stage, request(c.body, c.headers, c.path, c.query));
        assert_eq!(got, c.want, "{}", c.name);
    }
}

#[test]
fn payload_limit_is_the_platform_cap() {
    let (h, w) = stages(NAME, json!({"patterns": ["x"]}));
    assert_eq!(h.unwrap().max_payload(), 4 * 1024 * 1024);
    assert_eq!(w.unwrap().max_payload(), 4 * 1024 * 1024);
}

#[test]
fn redaction_that_would_pass_the_platform_cap_denies() {
    let stage = http(
        NAME,
        json!({"patterns": ["a"], "action": "redact", "replacement": "r".repeat(256)}),
    );
    let body = vec![b'a'; 64 * 1024];
    let got = outcome(&*stage, request(&body, &[], "/", ""));
    assert!(got.deny, "256 x 64 KiB is over 4 MiB");
    let small = outcome(&*stage, request(&body[..1024], &[], "/", ""));
    assert_eq!(small.body.map(|b| b.len()), Some(256 * 1024));
}

#[test]
fn quadratic_patterns_stop_at_the_budget_and_deny() {
    // `a*b|a` settles each one-byte match only after scanning the whole run.
    let stage = http(NAME, json!({"patterns": ["a*b|a"], "action": "redact"}));
    let body = vec![b'a'; 4 * 1024 * 1024];
    let started = std::time::Instant::now();
    let got = outcome(&*stage, request(&body, &[], "/", ""));
    assert!(got.deny, "an incomplete scan never redacts");
    assert!(got.findings[0].1 >= 1);
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    // A linear pattern with many matches in a small body is redacted fully.
    let stage = http(
        NAME,
        json!({"patterns": ["a"], "action": "redact", "replacement": "b"}),
    );
    let got = outcome(&*stage, request(&[b'a'; 4096], &[], "/", ""));
    assert_eq!(got.body.as_deref(), Some(&*"b".repeat(4096)));
}

#[test]
fn websocket_messages() {
    let one = |config: Value, text: &str| message(&mut *session(NAME, config), 1, text);
    let found = |label: &str, count: u32| vec![(label.to_owned(), count)];
    let secret = json!({"patterns": ["secret"]});
    assert_eq!(
        one(secret.clone(), "hello"),
        (false, String::new(), None, vec![])
    );
    assert_eq!(
        one(secret, "a secret"),
        (true, "regex_match".into(), None, found("pattern 0", 1))
    );
    assert_eq!(
        one(
            json!({"patterns": ["secret"], "reason_code": "ws_secret"}),
            "secret secret"
        ),
        (true, "ws_secret".into(), None, found("pattern 0", 2))
    );
    assert_eq!(
        one(
            json!({"patterns": ["secret"], "action": "redact"}),
            "a secret é"
        ),
        (
            false,
            String::new(),
            Some("a [REDACTED] é".into()),
            found("pattern 0", 1)
        )
    );
    assert_eq!(
        one(
            json!({"patterns": ["(?-u:\\xA9)"], "action": "redact"}),
            "©"
        ),
        (true, "regex_match".into(), None, found("pattern 0", 1)),
        "a redaction that would cut a character denies"
    );
}

#[test]
fn websocket_binary_passes_and_preflight_checks_the_target() {
    let mut s = session(NAME, json!({"patterns": ["secret"]}));
    let r = now(s.message(proto::WebSocketMessage {
        sequence: 1,
        payload: Some(proto::web_socket_message::Payload::Binary(
            b"secret".to_vec(),
        )),
    }))
    .unwrap();
    assert_eq!(r.decision, proto::Decision::Allow as i32);
    assert!(r.replacement.is_none());

    let ws = stages(
        NAME,
        json!({"patterns": ["secret"], "target": true, "action": "redact"}),
    )
    .1
    .unwrap();
    let (d, session) = now(ws.open(preflight("/ws/secret"))).unwrap();
    assert_eq!(d.action, proto::WebSocketPreflightAction::Deny as i32);
    assert_eq!(d.reason_code, "regex_match");
    assert_eq!(d.findings.len(), 1);
    assert!(session.is_none());
    let (d, session) = now(ws.open(preflight("/ws/fine"))).unwrap();
    assert_eq!(d.action, proto::WebSocketPreflightAction::Inspect as i32);
    assert!(session.is_some());
}
