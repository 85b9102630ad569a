use super::*;

/// `kind:table,table | kind:...` (opaque accesses end in `!`), or
/// `refused` / `free` (no access at all).
fn show(sql: &str) -> String {
    let c = classify(sql.as_bytes());
    if c.refusal.is_some() {
        return "refused".into();
    }
    if c.accesses.is_empty() {
        return "free".into();
    }
    c.accesses
        .iter()
        .map(|a| {
            format!(
                "{}:{}{}",
                a.kind.as_str(),
                a.tables.join(","),
                if a.opaque { "!" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

#[test]
fn statements_and_tables() {
    let cases: &[(&str, &str)] = &[
        // Plain reads, qualification, case folding.
        ("SELECT * FROM users", "select:public.users"),
        ("select * from Public.Users", "select:public.users"),
        ("SELECT * FROM \"Users\"", "select:public.users"),
        ("SELECT * FROM app.orders o", "select:app.orders"),
        ("SELECT * FROM mydb.app.orders", "select:app.orders"),
        ("SELECT 1", "select:"),
        ("SELECT * FROM pg_class", "select:pg_catalog.pg_class,public.pg_class"),
        ("SELECT * FROM information_schema.tables", "select:information_schema.tables"),
        ("VALUES (1), (2)", "select:"),
        ("TABLE users", "refused"),
        ("SELECT 1 UNION TABLE users", "select:public.users"),
        // Joins and subqueries everywhere.
        (
            "SELECT u.id FROM users u JOIN orders o ON o.uid = u.id LEFT JOIN app.items i USING (id)",
            "select:app.items,public.orders,public.users",
        ),
        (
            "SELECT * FROM users WHERE id IN (SELECT uid FROM secrets)",
            "select:public.secrets,public.users",
        ),
        (
            "SELECT (SELECT max(x) FROM s.t), * FROM (SELECT * FROM a) sub WHERE EXISTS (SELECT 1 FROM b)",
            "select:public.a,public.b,s.t",
        ),
        ("SELECT * FROM a UNION SELECT * FROM b", "select:public.a,public.b"),
        (
            "SELECT * FROM a, LATERAL (SELECT * FROM b WHERE b.id = a.id) x",
            "select:public.a,public.b",
        ),
        // CTEs: their names are not tables; their bodies' tables are.
        (
            "WITH recent AS (SELECT * FROM orders) SELECT * FROM recent JOIN users ON true",
            "select:public.orders,public.users",
        ),
        (
            "WITH a AS (SELECT 1), b AS (SELECT * FROM a) SELECT * FROM b",
            "select:",
        ),
        // A CTE body sees only earlier CTEs: `secrets` here is the table.
        (
            "WITH a AS (SELECT * FROM secrets), secrets AS (SELECT 1) SELECT * FROM a",
            "select:public.secrets",
        ),
        (
            "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 5) SELECT * FROM t",
            "select:",
        ),
        // An inner query's CTE does not hide a table outside it.
        (
            "SELECT * FROM (WITH x AS (SELECT 1) SELECT * FROM x) s, x",
            "select:public.x",
        ),
        // DML with sources.
        ("INSERT INTO events (a) VALUES (1)", "insert:public.events"),
        (
            "INSERT INTO events SELECT * FROM users",
            "insert:public.events,public.users",
        ),
        (
            "UPDATE users SET name = o.n FROM orders o WHERE o.id = users.id",
            "update:public.orders,public.users",
        ),
        (
            "DELETE FROM users USING banned b WHERE b.id = users.id",
            "delete:public.banned,public.users",
        ),
        ("DELETE FROM users RETURNING id", "delete:public.users"),
        // A DML target is never a CTE.
        (
            "WITH secrets AS (SELECT 1) DELETE FROM secrets",
            "select:public.secrets | delete:public.secrets",
        ),
        // Data-modifying CTEs: an access of their own.
        (
            "WITH d AS (DELETE FROM logs RETURNING *) SELECT * FROM d",
            "select:public.logs | delete:public.logs",
        ),
        (
            "WITH n AS (INSERT INTO events VALUES (1) RETURNING id) SELECT * FROM n, users",
            "select:public.events,public.users | insert:public.events",
        ),
        (
            "MERGE INTO stock s USING incoming i ON s.id = i.id WHEN MATCHED THEN UPDATE SET n = i.n",
            "insert:public.incoming,public.stock | update:public.incoming,public.stock | delete:public.incoming,public.stock",
        ),
        // EXPLAIN and PREPARE take the kind of what they wrap.
        ("EXPLAIN ANALYZE DELETE FROM users", "delete:public.users"),
        ("EXPLAIN SELECT * FROM users", "select:public.users"),
        ("PREPARE p AS UPDATE users SET a = 1", "update:public.users"),
        ("EXECUTE p", "other:"),
        // COPY.
        ("COPY events FROM STDIN", "insert:public.events"),
        ("COPY events (a, b) FROM STDIN WITH (FORMAT csv)", "insert:public.events"),
        ("COPY users TO STDOUT", "select:public.users"),
        ("COPY (SELECT * FROM users JOIN orders ON true) TO STDOUT", "select:public.orders,public.users"),
        ("COPY users TO '/tmp/x'", "ddl:public.users"),
        ("COPY events FROM '/etc/passwd'", "ddl:public.events"),
        ("COPY users TO PROGRAM 'sh'", "ddl:public.users"),
        // DDL.
        ("CREATE TABLE t (a int)", "ddl:public.t"),
        ("CREATE TABLE s.t AS SELECT * FROM users", "ddl:public.users,s.t"),
        ("DROP TABLE users, app.x", "ddl:app.x,public.users"),
        ("DROP SCHEMA public CASCADE", "ddl:!"),
        ("TRUNCATE users", "ddl:public.users"),
        ("ALTER TABLE users ADD COLUMN x int", "ddl:public.users"),
        ("CREATE INDEX i ON users (a)", "ddl:public.users"),
        ("CREATE VIEW v AS SELECT * FROM secrets", "ddl:public.secrets,public.v"),
        ("GRANT SELECT ON users TO bob", "ddl:!"),
        ("SELECT * INTO copy FROM users", "select:public.copy,public.users | ddl:public.copy"),
        ("LOCK TABLE users", "ddl:public.users"),
        ("CALL refresh()", "ddl:public.refresh"),
        // Transaction control and housekeeping need no rule.
        ("BEGIN", "free"),
        ("BEGIN; COMMIT", "free"),
        ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE", "free"),
        ("ROLLBACK", "free"),
        ("SAVEPOINT s; ROLLBACK TO SAVEPOINT s; RELEASE SAVEPOINT s", "free"),
        ("END", "free"),
        ("SET TRANSACTION READ ONLY", "free"),
        ("FETCH 10 FROM c", "free"),
        ("CLOSE c", "free"),
        ("DEALLOCATE p", "free"),
        ("", "free"),
        (" ; ", "free"),
        ("-- nothing\n", "free"),
        // Sessions settings and the rest.
        ("SET statement_timeout = 1000", "other:"),
        ("SET client_encoding TO 'UTF8'", "other:"),
        ("SET standard_conforming_strings = on", "other:"),
        ("SHOW search_path", "other:"),
        ("RESET ALL", "other:"),
        ("DISCARD ALL", "other:"),
        ("LISTEN ch", "other:"),
        ("NOTIFY ch, 'x'", "other:"),
        ("UNLISTEN *", "other:"),
        ("DECLARE c CURSOR FOR SELECT * FROM users", "select:public.users"),
        // search_path changes are ddl.
        ("SET search_path TO private", "ddl:!"),
        ("SET LOCAL search_path = private, public", "ddl:!"),
        ("SET SCHEMA 'private'", "refused"),
        (
            "SELECT set_config('search_path', 'private', false)",
            "select: | ddl:!",
        ),
        ("SELECT set_config('work_mem', '1MB', false)", "select: | other:"),
        ("SELECT pg_catalog.set_config('Search_Path', 'x', true)", "select: | ddl:!"),
        // Side doors.
        ("SELECT query_to_xml('select * from secrets', true, true, '')", "select: | ddl:!"),
        ("SELECT * FROM pg_read_file('/etc/passwd')", "select:pg_catalog.pg_read_file,public.pg_read_file | ddl:!"),
        ("SELECT * FROM dblink('x', 'delete from t') AS t(a int)", "select:public.dblink | ddl:!"),
        // Multi-statement strings: one access per statement.
        (
            "SELECT * FROM users; DELETE FROM users",
            "select:public.users | delete:public.users",
        ),
        ("BEGIN; INSERT INTO events VALUES (1); COMMIT", "insert:public.events"),
        // Nested comments (PostgreSQL nests them).
        ("SELECT 1 /* a /* b */ ; DELETE FROM users; */", "select:"),
        ("SELECT $$ ; DELETE FROM users; $$", "select:"),
        ("SELECT E'\\' ; DELETE FROM users; --'", "select:"),
        // Standard strings: a backslash is an ordinary character.
        ("SELECT '\\'; DELETE FROM users", "select: | delete:public.users"),
        ("SELECT 'a\\''; DELETE FROM users; --'", "select:"),
    ];
    let mut failures = Vec::new();
    for (sql, want) in cases {
        let got = show(sql);
        if got != *want {
            failures.push(format!("{sql:?}\n   want {want}\n    got {got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn refused_whatever_the_policy() {
    for sql in [
        "SELEC * FROM users",
        "SELECT * FROM",
        "SET standard_conforming_strings = off",
        "SET standard_conforming_strings TO false",
        "SET client_encoding = 'SJIS'",
        "SET client_encoding TO big5",
        "SET NAMES 'GBK'",
        "SET backslash_quote = on",
        "SELECT set_config('standard_conforming_strings', 'off', false)",
        "SELECT set_config(x, 'off', false) FROM t",
        "SELECT 1; SELEC 2",
        "COPY t FROM STDIN;\n1\t2\n\\.\n",
    ] {
        let c = classify(sql.as_bytes());
        assert!(c.refusal.is_some(), "{sql}: {c:?}");
    }
    assert!(classify(b"SELECT '\xff'").refusal.is_some(), "not UTF-8");
}

#[test]
fn copy_in_and_statement_count() {
    let c = classify(b"COPY events FROM STDIN");
    assert!(c.copy_in);
    assert_eq!(c.statements, 1);
    let c = classify(b"COPY events TO STDOUT; SELECT 1");
    assert!(!c.copy_in);
    assert_eq!(c.statements, 2);
}

/// Whatever the input, classification ends without panicking, and a
/// refusal or the accesses come back (never both a refusal and accesses
/// that would be evaluated).
#[test]
fn classification_never_panics() {
    let pieces = [
        "SELECT",
        "*",
        "FROM",
        "WITH",
        "x",
        "AS",
        "(",
        ")",
        ";",
        "'",
        "$$",
        "/*",
        "*/",
        "--",
        "\n",
        "DELETE",
        "users",
        ",",
        "JOIN",
        "ON",
        "true",
        "E'\\'",
        "COPY",
        "STDIN",
        "INSERT",
        "INTO",
        "VALUES",
        "UNION",
        "set_config",
        "\"",
        ".",
    ];
    let mut rng = super::super::wire::tests::Rng::new(42);
    for _ in 0..3_000 {
        let n = rng.below(16);
        let sql: Vec<&str> = (0..n).map(|_| pieces[rng.below(pieces.len())]).collect();
        let _ = classify(sql.join(" ").as_bytes());
    }
    let deep = format!("SELECT {}1{}", "(".repeat(5_000), ")".repeat(5_000));
    assert!(
        classify(deep.as_bytes()).refusal.is_some(),
        "recursion is bounded"
    );
}
