//! The gate, table-driven: command sequences and what each command does.

use sluice_policy::{MemorySecrets, PolicySnapshot};

use super::super::command::Pubsub;
use super::*;

const SECRET: &str = "s3cret-pa55";

fn snapshot(enforcement: &str) -> PolicySnapshot {
    let src = format!(
        r#"version: 1
network_policies:
  cache:
    endpoints:
      - host: cache.internal
        port: 6379
        protocol: redis
        enforcement: {enforcement}
        rules:
          - allow: {{ command: GET, key: "session:*" }}
          - allow: {{ command: SET, key: "session:*" }}
          - allow: {{ command: PING }}
          - allow: {{ command: MULTI }}
          - allow: {{ command: SUBSCRIBE }}
          - allow: {{ command: "CONFIG|GET" }}
        deny_rules:
          - {{ command: "FLUSH*" }}
          - {{ command: AUTH, key: "*" }}
    binaries: [ {{ path: /usr/bin/redis-cli }} ]
providers:
  cache:
    credentials:
      REDIS_PASSWORD: {{ env: REDIS_PASSWORD }}
    endpoints: [ {{ host: cache.internal, port: 6379 }} ]
  other:
    credentials:
      OTHER_PASSWORD: {{ env: OTHER_PASSWORD }}
    endpoints: [ {{ host: elsewhere.internal, port: 6379 }} ]
"#
    );
    let secrets = MemorySecrets::new()
        .with_env("REDIS_PASSWORD", SECRET)
        .with_env("OTHER_PASSWORD", "other");
    sluice_policy::load_str_with(&src, "p.yaml", 1, &secrets)
        .expect("policy loads")
        .snapshot
}

/// What one command came to, as text: `fwd <expect> <bytes>`, `local
/// <reply>`, `abort <reply>`, `quit`; and its event, if any.
fn outcome(d: &Decision<'_>) -> (String, Option<String>) {
    let text = |b: &[u8]| String::from_utf8_lossy(b).replace("\r\n", "|");
    let action = match &d.action {
        Action::Forward { bytes, expect } => format!("fwd {expect:?} {}", text(bytes)),
        Action::Local(r) => format!("local {}", text(r)),
        Action::Abort(r) => format!("abort {}", text(r)),
        Action::Quit => "quit".to_owned(),
    };
    let event = d.event.as_ref().map(|(v, audit)| {
        format!(
            "{} {}{}",
            if *audit { "audit" } else { "deny" },
            v.summary,
            if v.hard { " hard" } else { "" }
        )
    });
    (action, event)
}

/// Runs `lines` (inline commands) through one gate.
fn run(enforcement: &str, lines: &[&str]) -> Vec<(String, Option<String>)> {
    let s = snapshot(enforcement);
    let e = s
        .endpoints()
        .iter()
        .find(|e| e.host.display() == "cache.internal")
        .expect("endpoint");
    let target = Target::parse_authority("cache.internal:6379").expect("target");
    let mut gate = Gate::new(&s, e, &target, enforcement == "audit");
    lines
        .iter()
        .map(|l| {
            let args = super::super::resp::split_args(l.as_bytes()).expect("args");
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            outcome(&gate.decide(&args, None))
        })
        .collect()
}

fn fwd(cmd: &str, expect: &str) -> String {
    let args = super::super::resp::split_args(cmd.as_bytes()).expect("args");
    let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    let mut out = Vec::new();
    encode_command(&args, &mut out);
    format!(
        "fwd {expect} {}",
        String::from_utf8_lossy(&out).replace("\r\n", "|")
    )
}

#[test]
fn allowed_denied_and_connection_commands() {
    let got = run(
        "enforce",
        &[
            "GET session:1",
            "get user:1",
            "SET session:1 v",
            "FLUSHALL",
            "CONFIG GET maxmemory",
            "CONFIG SET maxmemory 1",
            "PING",
            "AUTH plain",
            "HELLO 3",
            "RESET",
            "EVAL x 0",
            "QUIT",
        ],
    );
    let want: Vec<(String, Option<String>)> = vec![
        (fwd("GET session:1", "One"), None),
        (
            "local -ERR sluice: GET not permitted by policy|".into(),
            Some("deny command=GET keys=1".into()),
        ),
        (fwd("SET session:1 v", "One"), None),
        (
            "local -ERR sluice: FLUSHALL blocked by deny rule|".into(),
            Some("deny command=FLUSHALL keys=0".into()),
        ),
        (fwd("CONFIG GET maxmemory", "One"), None),
        (
            "local -ERR sluice: CONFIG|SET not permitted by policy|".into(),
            Some("deny command=CONFIG|SET keys=0".into()),
        ),
        (fwd("PING", "One"), None),
        (fwd("AUTH plain", "One"), None),
        (fwd("HELLO 3", "Hello"), None),
        (fwd("RESET", "Reset"), None),
        (
            "local -ERR sluice: EVAL not permitted by policy|".into(),
            Some("deny command=EVAL keys=0".into()),
        ),
        ("quit".into(), None),
    ];
    assert_eq!(got, want);
}

#[test]
fn transactions() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "all allowed: EXEC runs",
            &["MULTI", "SET session:a 1", "EXEC"],
            &["fwd One", "fwd One", "fwd One"],
        ),
        (
            "a denied command aborts the transaction",
            &["MULTI", "SET session:a 1", "SET other 2", "GET session:a", "EXEC", "GET session:a"],
            &[
                "fwd One",
                "fwd One",
                "local -ERR sluice: SET not permitted by policy|",
                "fwd One",
                "abort -EXECABORT Transaction discarded because of previous errors.|",
                "fwd One",
            ],
        ),
        (
            "DISCARD ends it either way",
            &["MULTI", "FLUSHDB", "DISCARD", "EXEC"],
            &[
                "fwd One",
                "local -ERR sluice: FLUSHDB blocked by deny rule|",
                "fwd One",
                "local -ERR sluice: EXEC not permitted by policy|",
            ],
        ),
        (
            "mode changes are refused inside MULTI and abort it",
            &["MULTI", "SUBSCRIBE ch", "EXEC"],
            &[
                "fwd One",
                "local -ERR sluice: SUBSCRIBE inside MULTI is not supported through sluice|",
                "abort -EXECABORT Transaction discarded because of previous errors.|",
            ],
        ),
        (
            "subscribe outside MULTI owes one confirmation per channel",
            &["SUBSCRIBE a b c", "SUBSCRIBE"],
            &["fwd Subscribe", "fwd One"],
        ),
        (
            "unsupported commands",
            &["CLIENT REPLY OFF", "PSYNC ? -1"],
            &[
                "local -ERR sluice: CLIENT REPLY is not supported through sluice (every command gets its reply)|",
                "local -ERR sluice: replication commands are not supported through sluice|",
            ],
        ),
    ];
    for (what, lines, want) in cases {
        let got: Vec<String> = run("enforce", lines)
            .into_iter()
            .map(|(a, _)| {
                // Keep the variant of forwarded commands, not their bytes.
                match a.strip_prefix("fwd ") {
                    Some(rest) => {
                        let variant = rest.split([' ', '{']).next().unwrap_or_default();
                        format!("fwd {variant}")
                    }
                    None => a,
                }
            })
            .collect();
        assert_eq!(got, *want, "{what}");
    }
    // The subscribe expectation counts the channels.
    let got = run("enforce", &["SUBSCRIBE a b c"]);
    assert!(
        got[0].0.starts_with(&format!(
            "fwd {:?}",
            Expect::Subscribe {
                kind: Pubsub::Channel,
                left: 3
            }
        )),
        "{got:?}"
    );
}

#[test]
fn a_denied_multi_runs_nothing_until_exec() {
    let s = {
        let src = r#"version: 1
network_policies:
  cache:
    endpoints:
      - host: cache.internal
        port: 6379
        protocol: redis
        enforcement: enforce
        rules: [ { allow: { command: GET } } ]
        deny_rules: [ { command: RESET } ]
    binaries: [ { path: /usr/bin/redis-cli } ]
"#;
        sluice_policy::load_str(src, "p.yaml", 1)
            .expect("policy")
            .snapshot
    };
    let target = Target::parse_authority("cache.internal:6379").expect("target");
    let mut gate = Gate::new(&s, &s.endpoints()[0], &target, false);
    let mut step = |line: &str| {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        outcome(&gate.decide(&args, None)).0
    };
    assert_eq!(
        step("MULTI"),
        "local -ERR sluice: MULTI not permitted by policy|"
    );
    assert_eq!(
        step("GET k"),
        "local -ERR sluice: not run: the transaction's MULTI was denied|"
    );
    assert_eq!(
        step("EXEC"),
        "local -EXECABORT Transaction discarded because of previous errors.|"
    );
    assert_eq!(step("GET k"), fwd("GET k", "One"));
    assert_eq!(
        step("MULTI"),
        "local -ERR sluice: MULTI not permitted by policy|"
    );
    assert_eq!(step("DISCARD"), "local +OK|");
    assert_eq!(step("GET k"), fwd("GET k", "One"));
    // Connection commands need no rule, but a deny rule still applies.
    assert_eq!(step("HELLO 3"), fwd("HELLO 3", "Hello"));
    assert_eq!(
        step("RESET"),
        "local -ERR sluice: RESET blocked by deny rule|"
    );
}

#[test]
fn audit_mode_forwards_denials_and_logs_them() {
    let got = run(
        "audit",
        &[
            "SET other 1",
            "FLUSHALL",
            "GET session:1",
            "CLIENT REPLY OFF",
        ],
    );
    assert_eq!(got[0].0, fwd("SET other 1", "One"));
    assert_eq!(got[0].1.as_deref(), Some("audit command=SET keys=1"));
    assert_eq!(got[1].0, fwd("FLUSHALL", "One"));
    assert_eq!(got[1].1.as_deref(), Some("audit command=FLUSHALL keys=0"));
    assert_eq!(got[2], (fwd("GET session:1", "One"), None));
    // Audit mode cannot soften what sluice cannot relay.
    assert!(got[3].0.starts_with("local -ERR sluice: CLIENT REPLY"));
    assert_eq!(
        got[3].1.as_deref(),
        Some("deny command=CLIENT|REPLY keys=0 hard")
    );
}

#[test]
fn auth_placeholders_are_resolved_for_bound_endpoints_only() {
    let got = run(
        "enforce",
        &[
            "AUTH sluice:resolve:env:REDIS_PASSWORD",
            "AUTH default sluice:resolve:env:REDIS_PASSWORD",
            "HELLO 3 AUTH default sluice:resolve:env:REDIS_PASSWORD SETNAME agent",
            "HELLO 3 SETNAME agent AUTH u plain",
            "AUTH sluice:resolve:env:OTHER_PASSWORD",
            "AUTH sluice:resolve:env:NOPE",
            "AUTH x-sluice:resolve:env:REDIS_PASSWORD",
            "AUTH openshell:resolve:env:REDIS_PASSWORD",
        ],
    );
    assert_eq!(got[0].0, fwd(&format!("AUTH {SECRET}"), "One"));
    assert_eq!(got[1].0, fwd(&format!("AUTH default {SECRET}"), "One"));
    assert_eq!(
        got[2].0,
        fwd(
            &format!("HELLO 3 AUTH default {SECRET} SETNAME agent"),
            "Hello"
        )
    );
    assert_eq!(got[3].0, fwd("HELLO 3 SETNAME agent AUTH u plain", "Hello"));
    assert_eq!(
        got[4].0,
        "local -ERR sluice: credential OTHER_PASSWORD is not bound to cache.internal:6379|"
    );
    assert_eq!(got[5].0, "local -ERR sluice: unknown credential NOPE|");
    assert_eq!(
        got[6].0,
        "local -ERR sluice: a placeholder must be the whole credential field|"
    );
    assert_eq!(got[7].0, fwd(&format!("AUTH {SECRET}"), "One"));
    for (action, event) in &got {
        assert!(
            !event.as_deref().unwrap_or_default().contains(SECRET),
            "{event:?}"
        );
        if action.starts_with("local") {
            assert!(!action.contains(SECRET), "{action}");
        }
    }
    assert_eq!(got[4].1.as_deref(), Some("deny command=AUTH keys=0 hard"));
}

#[test]
fn multibulk_bytes_are_forwarded_as_they_came() {
    let s = snapshot("enforce");
    let target = Target::parse_authority("cache.internal:6379").expect("target");
    let mut gate = Gate::new(&s, &s.endpoints()[0], &target, false);
    let raw = b"*2\r\n$3\r\nGET\r\n$9\r\nsession:1\r\n";
    let args: Vec<&[u8]> = vec![b"GET", b"session:1"];
    let d = gate.decide(&args, Some(raw));
    assert!(matches!(
        d.action,
        Action::Forward {
            bytes: Cow::Borrowed(b),
            expect: Expect::One
        } if b == raw
    ));
}
