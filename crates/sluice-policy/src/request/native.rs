//! Per-message policy for the native protocol processors (design §6.2):
//! Redis commands (`command` + `key`) and PostgreSQL statements
//! (`statement` + `table`). Pure functions over one endpoint's rules; the
//! processors parse the wire and classify, these decide.
//!
//! Semantics, the same for both protocols:
//! - a `deny_rules` entry matches when its command/statement matches and it
//!   has no key/table glob, or **any** key/table matches it: then deny;
//! - otherwise an allow rule matches when its command/statement matches and
//!   it has no key/table glob, or the message touches at least one
//!   key/table and **every** one matches it: then allow;
//! - nothing matched: deny.

use crate::model::{Endpoint, L7Rule};

use super::ProtocolVerdict;

/// Most keys or tables listed in an event summary.
const SUMMARY_ITEMS: usize = 8;

/// One Redis command as the processor parsed it.
#[derive(Clone, Copy, Debug)]
pub struct RedisCommand<'a> {
    /// The command name, upper case; for container commands with
    /// subcommands (`CONFIG GET`, `CLIENT KILL`, ...) `NAME|SUB` as in the
    /// Redis command table (`CONFIG|GET`).
    pub name: &'a str,
    /// Every key argument, as the command table places them.
    pub keys: &'a [&'a [u8]],
}

/// PostgreSQL statement kinds a rule can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatementKind {
    Select,
    Insert,
    Update,
    Delete,
    /// CREATE, ALTER, DROP, TRUNCATE, GRANT, REVOKE, COMMENT, ...
    Ddl,
    /// Everything else (SET, SHOW, BEGIN, COMMIT, COPY, LISTEN, ...).
    Other,
}

impl StatementKind {
    /// The spelling rules use.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Select => "select",
            Self::Insert => "insert",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Ddl => "ddl",
            Self::Other => "other",
        }
    }
}

/// One classified SQL statement.
#[derive(Clone, Copy, Debug)]
pub struct SqlStatement<'a> {
    pub kind: StatementKind,
    /// Every table the statement touches, `schema.table` in lower case
    /// (the processor qualifies unqualified names).
    pub tables: &'a [&'a str],
}

fn key_text(key: &[u8]) -> Option<&str> {
    // NUL would end a glob's view of the key; such keys match no glob.
    std::str::from_utf8(key).ok().filter(|k| !k.contains('\0'))
}

fn redis_command_matches(rule: &L7Rule, name: &str) -> bool {
    rule.command.as_deref().is_some_and(|c| {
        // A plain name compares as is (no glob built per command).
        (if c.contains(['*', '?']) {
            crate::model::Glob::new(c, 0).matches(name)
        } else {
            c == name
        })
            // A rule naming a container command covers its subcommands.
            || name.split_once('|').is_some_and(|(base, _)| c == base)
    })
}

fn redis_rule_matches(rule: &L7Rule, cmd: &RedisCommand<'_>, deny: bool) -> bool {
    if !redis_command_matches(rule, cmd.name) {
        return false;
    }
    let Some(glob) = &rule.key else {
        return true;
    };
    if deny {
        // A key that cannot be read as text could be any key: it matches a
        // deny rule (fail closed).
        cmd.keys
            .iter()
            .any(|k| key_text(k).is_none_or(|k| glob.matches(k)))
    } else {
        !cmd.keys.is_empty()
            && cmd
                .keys
                .iter()
                .all(|k| key_text(k).is_some_and(|k| glob.matches(k)))
    }
}

fn describe_redis(rule: &L7Rule, deny: bool) -> String {
    let word = if deny { "deny" } else { "allow" };
    let command = rule.command.as_deref().unwrap_or("*");
    match &rule.key {
        Some(k) => format!("{word} {command} key {}", k.pattern),
        None => format!("{word} {command}"),
    }
}

fn redis_summary(cmd: &RedisCommand<'_>) -> String {
    // The command and how many keys: key names can carry data (tokens in
    // session keys), so they stay out of events.
    format!("command={} keys={}", cmd.name, cmd.keys.len())
}

/// The verdict for one Redis command under `endpoint`'s rules.
#[must_use]
pub fn evaluate_redis(endpoint: &Endpoint, cmd: &RedisCommand<'_>) -> ProtocolVerdict {
    if let Some(rule) = endpoint
        .deny_rules
        .iter()
        .find(|r| redis_rule_matches(r, cmd, true))
    {
        return ProtocolVerdict::deny(
            format!("{} blocked by deny rule", cmd.name),
            Some(describe_redis(rule, true)),
            redis_summary(cmd),
        );
    }
    if endpoint
        .rules
        .iter()
        .any(|r| redis_rule_matches(r, cmd, false))
    {
        return ProtocolVerdict::allow(redis_summary(cmd));
    }
    ProtocolVerdict::deny(
        format!("{} not permitted by policy", cmd.name),
        None,
        redis_summary(cmd),
    )
}

fn sql_rule_matches(rule: &L7Rule, stmt: &SqlStatement<'_>, deny: bool) -> bool {
    let kind_ok = rule
        .statement
        .as_deref()
        .is_some_and(|k| k == "*" || k == stmt.kind.as_str());
    if !kind_ok {
        return false;
    }
    let Some(glob) = &rule.table else {
        return true;
    };
    if deny {
        stmt.tables.iter().any(|t| glob.matches(t))
    } else {
        !stmt.tables.is_empty() && stmt.tables.iter().all(|t| glob.matches(t))
    }
}

fn describe_sql(rule: &L7Rule, deny: bool) -> String {
    let word = if deny { "deny" } else { "allow" };
    let kind = rule.statement.as_deref().unwrap_or("*");
    match &rule.table {
        Some(t) => format!("{word} {kind} table {}", t.pattern),
        None => format!("{word} {kind}"),
    }
}

fn sql_summary(stmt: &SqlStatement<'_>) -> String {
    let mut s = format!(
        "statement={} tables={}",
        stmt.kind.as_str(),
        stmt.tables.len()
    );
    for t in stmt.tables.iter().take(SUMMARY_ITEMS) {
        s.push(' ');
        s.push_str(&t.chars().take(128).collect::<String>());
    }
    s
}

/// The verdict for one SQL statement under `endpoint`'s rules.
#[must_use]
pub fn evaluate_sql(endpoint: &Endpoint, stmt: &SqlStatement<'_>) -> ProtocolVerdict {
    if let Some(rule) = endpoint
        .deny_rules
        .iter()
        .find(|r| sql_rule_matches(r, stmt, true))
    {
        return ProtocolVerdict::deny(
            format!("{} blocked by deny rule", stmt.kind.as_str()),
            Some(describe_sql(rule, true)),
            sql_summary(stmt),
        );
    }
    if endpoint
        .rules
        .iter()
        .any(|r| sql_rule_matches(r, stmt, false))
    {
        return ProtocolVerdict::allow(sql_summary(stmt));
    }
    ProtocolVerdict::deny(
        format!("{} not permitted by policy", stmt.kind.as_str()),
        None,
        sql_summary(stmt),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PolicySnapshot;

    fn snapshot() -> PolicySnapshot {
        let src = r#"version: 1
network_policies:
  cache:
    endpoints:
      - host: cache.internal
        port: 6379
        protocol: redis
        enforcement: enforce
        rules:
          - allow: { command: GET, key: "session:*" }
          - allow: { command: PING }
          - allow: { command: "H*", key: "user:*" }
          - allow: { command: CONFIG }
        deny_rules:
          - { command: "FLUSH*" }
          - { command: "*", key: "session:admin*" }
  db:
    endpoints:
      - host: db.internal
        port: 5432
        protocol: postgres
        enforcement: enforce
        rules:
          - allow: { statement: select, table: "public.*" }
          - allow: { statement: insert, table: "public.events" }
          - allow: { statement: other }
        deny_rules:
          - { statement: "*", table: "public.secrets" }
"#;
        crate::load_str(src, "p.yaml", 1).expect("policy").snapshot
    }

    fn endpoint<'a>(s: &'a PolicySnapshot, host: &str) -> &'a Endpoint {
        s.endpoints()
            .iter()
            .find(|e| e.host.display() == host)
            .expect("endpoint")
    }

    #[test]
    fn redis_commands() {
        let s = snapshot();
        let e = endpoint(&s, "cache.internal");
        let cases: &[(&str, &[&[u8]], bool)] = &[
            ("GET", &[b"session:1"], true),
            ("GET", &[b"session:a:b"], true),
            ("GET", &[b"user:1"], false),
            ("GET", &[], false),
            ("PING", &[], true),
            ("HGET", &[b"user:1"], true),
            ("HSET", &[b"user:1", b"user:2"], true),
            ("HSET", &[b"user:1", b"other"], false),
            ("FLUSHALL", &[], false),
            ("FLUSHDB", &[], false),
            ("GET", &[b"session:admin1"], false),
            ("HGET", &[b"user:1", b"session:admin"], false),
            ("GET", &[b"session:\0x"], false),
            ("GET", &[b"session:\xff"], false),
            ("CONFIG|GET", &[], true),
            ("SET", &[b"session:1"], false),
        ];
        for (name, keys, want) in cases {
            let v = evaluate_redis(e, &RedisCommand { name, keys });
            assert_eq!(v.allowed, *want, "{name} {keys:?}: {v:?}");
        }
        let v = evaluate_redis(
            e,
            &RedisCommand {
                name: "FLUSHALL",
                keys: &[],
            },
        );
        assert_eq!(v.rule.as_deref(), Some("deny FLUSH*"));
        assert_eq!(v.reason, "FLUSHALL blocked by deny rule");
    }

    #[test]
    fn sql_statements() {
        let s = snapshot();
        let e = endpoint(&s, "db.internal");
        use StatementKind::*;
        let cases: &[(StatementKind, &[&str], bool)] = &[
            (Select, &["public.users"], true),
            (Select, &["public.users", "public.orders"], true),
            (Select, &["public.users", "private.keys"], false),
            (Select, &[], false),
            (Insert, &["public.events"], true),
            (Insert, &["public.users"], false),
            (Update, &["public.users"], false),
            (Delete, &["public.events"], false),
            (Ddl, &[], false),
            (Other, &[], true),
            (Select, &["public.secrets"], false),
            (Select, &["public.users", "public.secrets"], false),
        ];
        for (kind, tables, want) in cases {
            let v = evaluate_sql(
                e,
                &SqlStatement {
                    kind: *kind,
                    tables,
                },
            );
            assert_eq!(v.allowed, *want, "{kind:?} {tables:?}: {v:?}");
        }
    }
}
