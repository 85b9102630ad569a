use super::*;

fn snapshot() -> sluice_policy::PolicySnapshot {
    let src = r#"version: 1
network_policies:
  db:
    endpoints:
      - host: db.internal
        port: 5432
        protocol: postgres
        enforcement: enforce
        rules:
          - allow: { statement: select, table: "public.*" }
          - allow: { statement: insert, table: "public.events" }
          - allow: { statement: ddl }
        deny_rules:
          - { statement: "*", table: "public.secrets" }
"#;
    sluice_policy::load_str(src, "p.yaml", 1)
        .expect("policy")
        .snapshot
}

#[test]
fn evaluation_of_query_strings() {
    let s = snapshot();
    let e = &s.endpoints()[0];
    let cases: &[(&str, bool, &str)] = &[
        ("SELECT * FROM users", true, ""),
        ("select * from users u join orders o on true", true, ""),
        (
            "SELECT * FROM private.keys",
            false,
            "select not permitted by policy",
        ),
        (
            "SELECT * FROM secrets",
            false,
            "select blocked by deny rule",
        ),
        ("SELECT 1", false, "select not permitted by policy"),
        ("INSERT INTO events VALUES (1)", true, ""),
        (
            "INSERT INTO events SELECT * FROM users",
            false,
            "insert not permitted by policy",
        ),
        ("DELETE FROM users", false, "delete not permitted by policy"),
        (
            "SELECT * FROM users; DELETE FROM users",
            false,
            "delete not permitted by policy",
        ),
        ("BEGIN; SELECT * FROM users; COMMIT", true, ""),
        ("BEGIN", true, ""),
        ("", true, ""),
        ("CREATE TABLE t (a int)", true, ""),
        ("DROP TABLE secrets", false, "ddl blocked by deny rule"),
        // ddl is allowed without a table glob, but these touch objects
        // sluice cannot list while a deny rule names a table.
        ("DROP SCHEMA public CASCADE", false, "cannot list"),
        (
            "SELECT pg_read_file('/etc/passwd')",
            false,
            "select not permitted",
        ),
        // So does a search_path change: it could redirect a name past a deny rule.
        ("SET search_path TO private", false, "cannot list"),
        (
            "SET standard_conforming_strings = off",
            false,
            "changing standard_conforming_strings",
        ),
        ("SELEC 1", false, "could not be parsed"),
    ];
    for (sql, allowed, reason) in cases {
        let v = evaluate(e, &classify(sql.as_bytes()));
        assert_eq!(v.allowed, *allowed, "{sql}: {v:?}");
        assert!(v.reason.contains(reason), "{sql}: {v:?}");
    }
    let hard = evaluate(e, &classify(b"SELEC 1"));
    assert!(hard.hard, "unparseable text is refused even in audit mode");
    let soft = evaluate(e, &classify(b"DELETE FROM users"));
    assert!(!soft.hard);
    assert_eq!(soft.summary, "statement=delete tables=1 public.users");
}

#[test]
fn stand_ins_are_replaced_once() {
    let s = StandIns::new();
    let a = s.issue("sluice: first");
    let b = s.issue("sluice: second");
    assert_ne!(a, b);
    assert!(a.starts_with("sluice_denied_"));
    let server_error = |token: &str| {
        let e = wire::error_response(
            false,
            "42601",
            &format!("syntax error at or near \"{token}\""),
        );
        e[5..].to_vec()
    };
    let reply = s.replacement(&server_error(&b)).expect("second token");
    let (code, text) = wire::error_fields(&reply[5..]);
    assert_eq!(
        (code, text),
        (Some(&b"42501"[..]), Some(&b"sluice: second"[..]))
    );
    assert!(s.replacement(&server_error(&b)).is_none(), "consumed");
    assert!(
        s.replacement(&server_error("sluice_denied_0_0")).is_none(),
        "unknown token"
    );
    assert!(s.replacement(&server_error(&a)).is_some());
    for i in 0..(MAX_PENDING + 10) {
        s.issue(&format!("{i}"));
    }
    assert!(s.pending.lock().unwrap().len() <= MAX_PENDING, "bounded");
}

#[test]
fn upstream_parameters_that_change_lexing() {
    assert!(parameter_ok(b"standard_conforming_strings\0on\0").is_ok());
    assert!(parameter_ok(b"standard_conforming_strings\0off\0").is_err());
    assert!(parameter_ok(b"client_encoding\0UTF8\0").is_ok());
    assert!(parameter_ok(b"client_encoding\0SJIS\0").is_err());
    assert!(parameter_ok(b"TimeZone\0UTC\0").is_ok());
    assert!(parameter_ok(b"").is_ok());
}
