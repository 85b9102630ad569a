use serde_json::{json, Value};

use super::super::tests::{config_error, http, message, outcome, request, session, stages};
use super::NAME;

const CAP: usize = 4 * 1024 * 1024;

#[test]
fn config_errors_name_the_field() {
    let cases: &[(Value, &str)] = &[
        (
            json!({}),
            "at least one of `max_body_bytes`, `max_header_bytes`, `max_headers`, `max_message_bytes` is required",
        ),
        (
            json!({"reason_code": "big"}),
            "at least one of `max_body_bytes`, `max_header_bytes`, `max_headers`, `max_message_bytes` is required",
        ),
        (json!({"max_body_bytes": 0}), "`max_body_bytes`: must be a positive integer"),
        (json!({"max_body_bytes": -1}), "`max_body_bytes`: must be a positive integer"),
        (json!({"max_body_bytes": 1.5}), "`max_body_bytes`: must be a positive integer"),
        (json!({"max_body_bytes": "1MiB"}), "`max_body_bytes`: must be a positive integer"),
        (json!({"max_headers": null}), "`max_headers`: must be a positive integer"),
        (json!({"max_header_bytes": false}), "`max_header_bytes`: must be a positive integer"),
        (
            json!({"max_body_bytes": 4_194_305}),
            "`max_body_bytes`: 4194305 is over the platform payload cap of 4194304 bytes (a larger payload is a stage failure, handled by on_error)",
        ),
        (
            json!({"max_message_bytes": 5_000_000}),
            "`max_message_bytes`: 5000000 is over the platform payload cap of 4194304 bytes (a larger payload is a stage failure, handled by on_error)",
        ),
        (
            json!({"max_headers": 1, "reason_code": "9lives"}),
            "`reason_code`: `9lives` must match [a-z][a-z0-9_]* and be at most 64 bytes",
        ),
        (
            json!({"max_headers": 1, "max_bytes": 1}),
            "`max_bytes`: unknown field (expected one of: max_body_bytes, max_header_bytes, max_headers, max_message_bytes, reason_code)",
        ),
    ];
    for (config, want) in cases {
        assert_eq!(&config_error(NAME, config.clone()), want, "{config}");
    }
}

#[test]
fn stages_and_payload_limits_follow_the_configured_limits() {
    // (config, HTTP max_payload, WebSocket max_payload)
    let cases: &[(Value, Option<usize>, Option<usize>)] = &[
        (json!({"max_body_bytes": 10}), Some(11), None),
        (json!({"max_body_bytes": CAP - 1}), Some(CAP), None),
        (json!({"max_body_bytes": CAP}), Some(CAP), None),
        // No body limit: the stage takes any body the platform does.
        (json!({"max_headers": 3}), Some(CAP), None),
        (json!({"max_header_bytes": 3}), Some(CAP), None),
        (json!({"max_message_bytes": 100}), None, Some(101)),
        (json!({"max_message_bytes": CAP}), None, Some(CAP)),
        (
            json!({"max_body_bytes": 5, "max_message_bytes": 7}),
            Some(6),
            Some(8),
        ),
    ];
    for (config, want_http, want_ws) in cases {
        let (h, w) = stages(NAME, config.clone());
        assert_eq!(h.map(|s| s.max_payload()), *want_http, "{config}");
        assert_eq!(w.map(|s| s.max_payload()), *want_ws, "{config}");
    }
}

/// One request through `sluice/size` with `config`: its reason_code and
/// finding labels when denied, `None` when allowed.
#[track_caller]
fn judge(config: Value, body: &[u8], headers: &[(&str, &str)]) -> Option<(String, Vec<String>)> {
    let got = outcome(&*http(NAME, config), request(body, headers, "/", ""));
    assert!(got.body.is_none() && got.removed.is_empty());
    assert!(got.findings.iter().all(|(_, count)| *count == 1));
    got.deny.then(|| {
        (
            got.reason_code,
            got.findings.into_iter().map(|(l, _)| l).collect(),
        )
    })
}

#[test]
fn http_requests() {
    let two = [("a", "1"), ("bb", "22")]; // 6 bytes, 2 lines
    let denied = |code: &str, labels: &[&str]| {
        Some((
            code.to_owned(),
            labels.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>(),
        ))
    };
    let size_limit = |label: &str| denied("size_limit", &[label]);
    let body = |n: u64| json!({ "max_body_bytes": n });
    assert_eq!(judge(body(4), b"1234", &[]), None);
    assert_eq!(judge(body(4), b"12345", &[]), size_limit("max_body_bytes"));
    assert_eq!(judge(body(4), b"", &[]), None);
    assert_eq!(judge(json!({"max_header_bytes": 6}), b"", &two), None);
    assert_eq!(
        judge(json!({"max_header_bytes": 5}), b"", &two),
        size_limit("max_header_bytes")
    );
    assert_eq!(judge(json!({"max_headers": 2}), b"", &two), None);
    assert_eq!(
        judge(json!({"max_headers": 1}), b"", &two),
        size_limit("max_headers")
    );
    assert_eq!(
        judge(
            json!({"max_body_bytes": 100, "max_headers": 1}),
            b"12",
            &two
        ),
        size_limit("max_headers")
    );
    let all = json!({"max_body_bytes": 1, "max_header_bytes": 1, "max_headers": 1, "reason_code": "too_big"});
    assert_eq!(
        judge(all, b"12", &two),
        denied(
            "too_big",
            &["max_body_bytes", "max_header_bytes", "max_headers"]
        )
    );
}

#[test]
fn a_body_at_the_platform_cap_is_judged() {
    let stage = http(NAME, json!({"max_body_bytes": CAP - 1}));
    assert!(outcome(&*stage, request(&vec![0; CAP], &[], "/", "")).deny);
    assert!(!outcome(&*stage, request(&vec![0; CAP - 1], &[], "/", "")).deny);
}

#[test]
fn websocket_messages() {
    let mut s = session(
        NAME,
        json!({"max_message_bytes": 3, "reason_code": "ws_big"}),
    );
    assert_eq!(
        message(&mut *s, 1, "abc"),
        (false, String::new(), None, vec![])
    );
    assert_eq!(
        message(&mut *s, 2, "abcd"),
        (
            true,
            "ws_big".into(),
            None,
            vec![("max_message_bytes".into(), 1)]
        )
    );
    // Bytes, not characters: "éé" is 4 bytes.
    assert!(message(&mut *s, 3, "éé").0);
    assert!(!message(&mut *s, 4, "").0);
}
