//! Fake credentials only: each is shape-valid for its detector and says
//! FAKE/EXAMPLE in its body. They are assembled at run time so the source
//! holds no token-shaped literal for other scanners to flag.

use base64::Engine as _;
use serde_json::{json, Value};

use super::super::tests::{config_error, http, message, outcome, request, session, stages};
use super::{DETECTORS, KINDS, NAME};
use crate::relay::middleware::proto;

/// `prefix` followed by `FAKE0000FAKE...` up to `len` characters after it.
fn fake(prefix: &str, len: usize) -> String {
    let body: String = "FAKE0000".chars().cycle().take(len).collect();
    format!("{prefix}{body}")
}

fn b64url(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

fn jwt(header: &str) -> String {
    format!(
        "{}.{}.{}",
        b64url(header),
        b64url(r#"{"sub":"fake-user","exp":0}"#),
        fake("sig", 40)
    )
}

/// AWS's documented example access key id and secret key.
fn aws_key() -> String {
    ["AKIA", "IOSFODNN7", "EXAMPLE"].concat()
}
fn aws_secret() -> String {
    ["wJalrXUtnFEMI", "/K7MDENG/bPxRfiCY", "EXAMPLEKEY"].concat()
}
fn pem(label: &str) -> String {
    format!("-----BEGIN {label}-----\nMIIFAKEFAKEFAKE0000\nFAKEFAKE==\n-----END {label}-----\n")
}

#[test]
fn every_detector_compiles() {
    assert_eq!(super::COMPILED.len(), DETECTORS.len());
    for d in DETECTORS {
        assert!(KINDS.contains(&d.kind), "{}", d.kind);
    }
    assert!(super::PEM_BEGIN.is_match(b"-----BEGIN PRIVATE KEY-----"));
    assert!(super::PEM_END.is_match(b"-----END PRIVATE KEY-----"));
    // Every kind but private_key (custom) has one detector.
    assert_eq!(DETECTORS.len() + 1, KINDS.len());
}

/// The secrets found in `text` with the default config: (kind, count).
fn found(text: &str) -> Vec<(String, u32)> {
    let stage = http(NAME, json!({}));
    outcome(&*stage, request(text.as_bytes(), &[], "/", "")).findings
}

#[test]
fn detects_each_kind() {
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "aws key in JSON",
            format!(r#"{{"key":"{}"}}"#, aws_key()),
            "aws_access_key",
        ),
        (
            "aws session key",
            fake("ASIA", 16).to_uppercase(),
            "aws_access_key",
        ),
        (
            "aws secret, ini",
            format!("aws_secret_access_key = {}", aws_secret()),
            "aws_secret_key",
        ),
        (
            "aws secret, env",
            format!("AWS_SECRET_ACCESS_KEY={}\n", aws_secret()),
            "aws_secret_key",
        ),
        (
            "aws secret, JSON",
            format!(r#"{{"SecretAccessKey": "{}"}}"#, aws_secret()),
            "aws_secret_key",
        ),
        ("github classic", fake("ghp_", 36), "github_token"),
        ("github oauth", fake("gho_", 36), "github_token"),
        ("github user-to-server", fake("ghu_", 36), "github_token"),
        ("github server-to-server", fake("ghs_", 36), "github_token"),
        ("github refresh", fake("ghr_", 36), "github_token"),
        (
            "github fine-grained",
            format!("{}_{}", fake("github_pat_", 22), fake("", 59)),
            "github_token",
        ),
        (
            "slack bot",
            fake("xoxb-1234567890-1234567890-", 24),
            "slack_token",
        ),
        ("slack user", fake("xoxp-1234567890-", 32), "slack_token"),
        (
            "slack webhook",
            fake("https://hooks.slack.com/services/T0FAKE000/B0FAKE000/", 24),
            "slack_webhook",
        ),
        ("google api key", fake("AIza", 35), "google_api_key"),
        ("stripe secret", fake("sk_live_", 24), "stripe_key"),
        ("stripe restricted", fake("rk_live_", 99), "stripe_key"),
        ("pkcs8 key", pem("PRIVATE KEY"), "private_key"),
        ("rsa key", pem("RSA PRIVATE KEY"), "private_key"),
        ("openssh key", pem("OPENSSH PRIVATE KEY"), "private_key"),
        ("encrypted key", pem("ENCRYPTED PRIVATE KEY"), "private_key"),
        ("pgp key", pem("PGP PRIVATE KEY BLOCK"), "private_key"),
        (
            "key header only",
            "-----BEGIN EC PRIVATE KEY-----\nMIIFAKE".into(),
            "private_key",
        ),
        ("jwt", jwt(r#"{"alg":"HS256","typ":"JWT"}"#), "jwt"),
        (
            "unsigned jwt",
            format!("{}.{}.", b64url(r#"{"alg":"none"}"#), b64url("{}")),
            "jwt",
        ),
        (
            "bearer in a body",
            fake("Authorization: Bearer ", 32),
            "bearer_token",
        ),
        ("bearer, lower case", fake("bearer\t", 24), "bearer_token"),
        (
            "bearer with a jwt is a jwt",
            format!("Bearer {}", jwt(r#"{"alg":"RS256"}"#)),
            "jwt",
        ),
        (
            "bearer with a github token",
            format!("Bearer {}", fake("ghp_", 36)),
            "github_token",
        ),
    ];
    for (name, text, kind) in cases {
        assert_eq!(found(&text), vec![(kind.to_owned(), 1)], "{name}: {text}");
    }
}

#[test]
fn near_misses_and_placeholders_pass() {
    let cases: Vec<(&str, String)> = vec![
        ("aws key, 15 after AKIA", aws_key()[..19].to_owned()),
        ("aws key, part of a longer token", format!("{}X", aws_key())),
        ("aws key, preceded by a letter", format!("X{}", aws_key())),
        ("aws key, lower case", aws_key().to_lowercase()),
        (
            "aws secret, 39 characters",
            format!("aws_secret_access_key={}", &aws_secret()[..39]),
        ),
        (
            "aws secret, 41 characters",
            format!("aws_secret_access_key={}A", aws_secret()),
        ),
        ("aws secret without its keyword", aws_secret()),
        ("github, too short", fake("ghp_", 35)),
        ("github, unknown prefix", fake("ghx_", 36)),
        ("github, inside a word", fake("xghp_", 36)),
        ("slack, unknown prefix", fake("xoxz-1234567890-", 24)),
        ("slack, no digits", "xoxb-not-a-real-token".into()),
        (
            "slack webhook, too short",
            "https://hooks.slack.com/services/T0/B0".into(),
        ),
        ("google key, 34 after AIza", fake("AIza", 34)),
        ("google key, 36 after AIza", fake("AIza", 36)),
        ("stripe test key", fake("sk_test_", 24)),
        ("stripe key, too short", fake("sk_live_", 23)),
        (
            "public key",
            "-----BEGIN PUBLIC KEY-----\nMIIFAKE\n-----END PUBLIC KEY-----".into(),
        ),
        (
            "certificate",
            "-----BEGIN CERTIFICATE-----\nMIIFAKE\n-----END CERTIFICATE-----".into(),
        ),
        ("jwt-shaped, header without alg", jwt(r#"{"typ":"JWT"}"#)),
        (
            "jwt-shaped, header not JSON",
            format!("eyJub3QganNvbg.{}.sig", b64url("{}")),
        ),
        ("jwt-shaped, alg not a string", jwt(r#"{"alg":1}"#)),
        (
            "bearer placeholder text",
            "Authorization: Bearer YOUR_TOKEN_GOES_HERE_PLEASE".into(),
        ),
        ("bearer, short", "Bearer abc123".into()),
        ("the word bearer", "the bearer of this letter".into()),
        ("placeholder", "sluice:resolve:env:GITHUB_TOKEN".into()),
        (
            "placeholder as bearer",
            "Authorization: Bearer sluice:resolve:env:API_TOKEN_1234567890abcdef".into(),
        ),
        (
            "openshell placeholder",
            "openshell:resolve:env:SLACK_TOKEN".into(),
        ),
        (
            "placeholder in an aws secret slot",
            "aws_secret_access_key=sluice:resolve:env:AWS_SECRET".into(),
        ),
        (
            "placeholder in JSON",
            r#"{"token":"sluice:resolve:env:T","key":"openshell:resolve:env:K"}"#.into(),
        ),
    ];
    for (name, text) in cases {
        assert_eq!(found(&text), vec![], "{name}: {text}");
    }
}

#[test]
fn a_placeholder_does_not_hide_a_secret() {
    let key = aws_key();
    let cases: Vec<(&str, String, &str)> = vec![
        // The prefix in front of a secret does not make it a placeholder's
        // text: it would let any [A-Za-z0-9_] secret out.
        (
            "key-shaped name",
            format!("sluice:resolve:env:{key}"),
            "aws_access_key",
        ),
        (
            "token-shaped name",
            format!("openshell:resolve:env:{}", fake("ghp_", 36)),
            "github_token",
        ),
        (
            "right after a placeholder",
            format!("sluice:resolve:env:X {key}"),
            "aws_access_key",
        ),
        (
            "inside a key block",
            pem("PRIVATE KEY").replace("FAKEFAKE==", "sluice:resolve:env:K"),
            "private_key",
        ),
    ];
    for (name, text, kind) in cases {
        assert_eq!(found(&text), vec![(kind.to_owned(), 1)], "{name}: {text}");
    }
}

#[test]
fn placeholder_text_is_exempt() {
    let text = b"x sluice:resolve:env:NAME y openshell:resolve:env:B";
    let p = super::Placeholders::find(text);
    // (range, exempt): inside a placeholder and covering part of its prefix.
    for (r, want) in [
        (2..25, true),   // the whole placeholder
        (9..23, true),   // `resolve:env:NA`
        (21..25, false), // the name alone
        (0..25, false),  // starts before it
        (2..26, false),  // ends after it
        (25..28, false), // between placeholders
        (28..51, true),  // the second one
        (45..51, true),  // `:env:B`
        (50..51, false), // its name
    ] {
        assert_eq!(
            p.exempt(&r),
            want,
            "{r:?} {:?}",
            String::from_utf8_lossy(&text[r.clone()])
        );
    }
}

#[test]
fn counts_and_mixed_bodies() {
    let key = aws_key();
    let gh = fake("ghp_", 36);
    let text = format!(
        "{key} {key}\nsluice:resolve:env:T\n{gh},{gh};{}\n{}",
        fake("AIza", 35),
        pem("RSA PRIVATE KEY")
    );
    assert_eq!(
        found(&text),
        vec![
            ("private_key".to_owned(), 1),
            ("aws_access_key".to_owned(), 2),
            ("github_token".to_owned(), 2),
            ("google_api_key".to_owned(), 1),
        ]
    );
}

#[test]
fn config_selects_kinds_exceptions_and_places() {
    let key = aws_key();
    let body = format!("{key} {}", fake("ghp_", 36));
    let query = format!("key={}", fake("AIza", 35));
    // A request through `config`: the finding kinds when denied, None when allowed.
    let judge = |config: Value, body: &str, headers: &[(&str, &str)], query: &str| {
        let got = outcome(
            &*http(NAME, config),
            request(body.as_bytes(), headers, "/", query),
        );
        got.deny.then(|| {
            assert_eq!(got.reason_code, "secret_detected");
            got.findings
        })
    };
    let found = |kind: &str| Some(vec![(kind.to_owned(), 1)]);
    assert_eq!(
        judge(json!({"kinds": ["github_token"]}), &body, &[], ""),
        found("github_token")
    );
    assert_eq!(
        judge(json!({"kinds": ["jwt", "jwt"]}), &body, &[], ""),
        None
    );
    assert_eq!(
        judge(json!({"allow": ["EXAMPLE$"]}), &body, &[], ""),
        found("github_token")
    );
    assert_eq!(
        judge(json!({"allow": ["EXAMPLE$", "^ghp_FAKE"]}), &body, &[], ""),
        None
    );
    // Headers and the target are scanned unless turned off.
    let header = [("x-api-key", key.as_str())];
    assert_eq!(judge(json!({}), "", &header, ""), found("aws_access_key"));
    assert_eq!(judge(json!({"headers": false}), "", &header, ""), None);
    assert_eq!(judge(json!({}), "", &[], &query), found("google_api_key"));
    assert_eq!(judge(json!({"target": false}), "", &[], &query), None);
    assert_eq!(
        judge(json!({}), "", &[], "token=sluice:resolve:env:TOKEN"),
        None
    );
}

#[test]
fn redaction() {
    let key = aws_key();
    let stage = http(NAME, json!({"action": "redact"}));
    let body = format!(
        "{{\"k\":\"{key}\",\"t\":\"sluice:resolve:env:T\"}}\n{}trailer",
        pem("PRIVATE KEY")
    );
    let got = outcome(
        &*stage,
        request(
            body.as_bytes(),
            &[("x-key", &key), ("x-fine", "ok")],
            "/",
            "",
        ),
    );
    assert!(!got.deny);
    assert_eq!(
        got.body.as_deref(),
        Some("{\"k\":\"[REDACTED]\",\"t\":\"sluice:resolve:env:T\"}\n[REDACTED]\ntrailer"),
        "the whole key block goes, the placeholder stays"
    );
    assert_eq!(got.removed, vec!["x-key".to_owned()]);
    assert_eq!(
        got.findings,
        vec![("private_key".into(), 1), ("aws_access_key".into(), 2)]
    );

    // The aws secret keyword stays; only the secret goes.
    let s = http(NAME, json!({"action": "redact", "replacement": "***"}));
    let got = outcome(
        &*s,
        request(
            format!("AWS_SECRET_ACCESS_KEY={}", aws_secret()).as_bytes(),
            &[],
            "/",
            "",
        ),
    );
    assert_eq!(got.body.as_deref(), Some("AWS_SECRET_ACCESS_KEY=***"));

    // A secret in the target cannot be redacted.
    let got = outcome(&*stage, request(b"", &[], "/", &format!("key={key}")));
    assert!(got.deny);
    // Nor in a body that is not UTF-8.
    let mut bin = key.clone().into_bytes();
    bin.push(0xff);
    assert!(outcome(&*stage, request(&bin, &[], "/", "")).deny);
}

#[test]
fn results_never_carry_the_secret() {
    let secrets = [
        aws_key(),
        fake("ghp_", 36),
        fake("AIza", 35),
        jwt(r#"{"alg":"HS256"}"#),
    ];
    for action in ["deny", "redact"] {
        let stage = http(NAME, json!({ "action": action }));
        for secret in &secrets {
            let eval = request(secret.as_bytes(), &[("x-k", secret)], "/", "");
            let r = super::super::tests::now(stage.evaluate(eval)).unwrap();
            let shown = format!("{:?} {:?} {}", r.findings, r.metadata, r.reason);
            assert!(!shown.contains(secret.as_str()), "{action}: {shown}");
            assert!(!String::from_utf8_lossy(&r.body).contains(secret.as_str()));
        }
    }
}

#[test]
fn config_errors_name_the_field() {
    let cases: &[(Value, &str)] = &[
        (json!({"kinds": []}), "`kinds`: must not be empty"),
        (json!({"kinds": "jwt"}), "`kinds`: must be a list of strings"),
        (
            json!({"kinds": ["jwt", "aws"]}),
            "`kinds[1]`: unknown kind `aws` (expected one of: private_key, jwt, aws_access_key, aws_secret_key, github_token, slack_token, slack_webhook, google_api_key, stripe_key, bearer_token)",
        ),
        (json!({"allow": ["ok", "("]}), "`allow[1]`: invalid regex: unclosed group"),
        (json!({"allow": [".*"]}), "`allow[0]`: matches the empty string"),
        (json!({"action": "mask"}), "`action`: must be `deny` or `redact`, not `mask`"),
        (json!({"headers": 0}), "`headers`: must be true or false"),
        (
            json!({"reason_code": "Secret"}),
            "`reason_code`: `Secret` must match [a-z][a-z0-9_]* and be at most 64 bytes",
        ),
        (
            json!({"patterns": ["x"]}),
            "`patterns`: unknown field (expected one of: kinds, action, replacement, reason_code, allow, headers, target)",
        ),
    ];
    for (config, want) in cases {
        assert_eq!(&config_error(NAME, config.clone()), want, "{config}");
    }
}

#[test]
fn websocket_messages() {
    let key = aws_key();
    let mut s = session(NAME, json!({}));
    assert_eq!(
        message(&mut *s, 1, "hello sluice:resolve:env:T"),
        (false, String::new(), None, vec![])
    );
    assert_eq!(
        message(&mut *s, 2, &format!("my key is {key}")),
        (
            true,
            "secret_detected".into(),
            None,
            vec![("aws_access_key".into(), 1)]
        )
    );
    let mut s = session(NAME, json!({"action": "redact"}));
    assert_eq!(
        message(&mut *s, 7, &format!("my key is {key}!")),
        (
            false,
            String::new(),
            Some("my key is [REDACTED]!".into()),
            vec![("aws_access_key".into(), 1)]
        )
    );
    let ws = stages(NAME, json!({})).1.unwrap();
    let (d, _) =
        super::super::tests::now(ws.open(super::super::tests::preflight(&format!("/ws/{key}"))))
            .unwrap();
    assert_eq!(d.action, proto::WebSocketPreflightAction::Deny as i32);
}
