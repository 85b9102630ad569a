//! L7 rules: per-protocol validation of `rules[].allow` / `deny_rules[]`
//! bodies and expansion of `access` presets.

use std::sync::Arc;

use serde_yaml::Value;

use crate::dto::RuleBodyDto;
use crate::error::Ctx;
use crate::glob::unsupported_glob_syntax;
use crate::location::join;
use crate::model::{Glob, L7Rule, Protocol, QueryMatcher};

const REST_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "*",
];
const GRAPHQL_OPS: &[&str] = &["query", "mutation", "subscription", "*"];

/// Endpoint facts that rule validation depends on.
#[derive(Clone, Copy)]
pub(crate) struct RuleEnv {
    pub(crate) protocol: Protocol,
    pub(crate) mcp_allow_all: bool,
    pub(crate) mcp_strict: bool,
}

fn present(b: &RuleBodyDto) -> Vec<&'static str> {
    let mut v = Vec::new();
    let mut add = |on: bool, name: &'static str| {
        if on {
            v.push(name);
        }
    };
    add(b.method.is_some(), "method");
    add(b.path.is_some(), "path");
    add(b.query.is_some(), "query");
    add(b.operation_type.is_some(), "operation_type");
    add(b.operation_name.is_some(), "operation_name");
    add(b.fields.is_some(), "fields");
    add(b.tool.is_some(), "tool");
    add(b.params.is_some(), "params");
    add(b.command.is_some(), "command");
    add(b.arguments.is_some(), "arguments");
    add(b.key.is_some(), "key");
    add(b.statement.is_some(), "statement");
    add(b.table.is_some(), "table");
    v
}

fn glob(ctx: &mut Ctx, path: &str, pattern: &str, delimiter: u8) -> Glob {
    if let Some(c) = unsupported_glob_syntax(pattern) {
        ctx.err(
            path,
            format!("glob `{pattern}` uses `{c}`; only `*`, `**` and `?` are supported"),
        );
    }
    Glob::new(pattern, delimiter)
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A glob string or `{any: [globs]}`.
pub(crate) fn matcher(ctx: &mut Ctx, path: &str, v: &Value) -> Option<QueryMatcher> {
    if let Some(s) = scalar_string(v) {
        return Some(QueryMatcher::One(glob(ctx, path, &s, b'.')));
    }
    let Value::Mapping(m) = v else {
        ctx.err(path, "expected a glob string or `{any: [globs]}`");
        return None;
    };
    let mut list = None;
    for (k, val) in m {
        match k.as_str() {
            Some("any") => list = Some(val),
            other => {
                let name = other.unwrap_or("?");
                ctx.err_key(
                    &join(path, name),
                    format!("unknown field `{name}`, expected `any`"),
                );
                return None;
            }
        }
    }
    let any_path = join(path, "any");
    let items = match list {
        Some(Value::Sequence(items)) if !items.is_empty() => items,
        _ => {
            ctx.err(&any_path, "`any` must be a non-empty list of glob strings");
            return None;
        }
    };
    let mut globs = Vec::with_capacity(items.len());
    for (i, it) in items.iter().enumerate() {
        let p = format!("{any_path}[{i}]");
        match scalar_string(it) {
            Some(s) => globs.push(glob(ctx, &p, &s, b'.')),
            None => ctx.err(&p, "expected a glob string"),
        }
    }
    Some(QueryMatcher::Any(globs))
}

/// Validates and compiles one rule body at `path`. `None` if invalid (errors recorded).
pub(crate) fn compile_rule(
    ctx: &mut Ctx,
    path: &str,
    b: &RuleBodyDto,
    env: RuleEnv,
) -> Option<L7Rule> {
    let errors_before = ctx.errors.len();
    let graphql_shape =
        b.operation_type.is_some() || b.operation_name.is_some() || b.fields.is_some();
    let (allowed, what): (&[&str], &str) = match env.protocol {
        Protocol::Rest => (&["method", "path", "query"], "rest"),
        Protocol::Websocket if graphql_shape => (
            &["operation_type", "operation_name", "fields"],
            "websocket graphql (do not mix method/path/query with graphql fields)",
        ),
        Protocol::Websocket => (&["method", "path", "query"], "websocket"),
        Protocol::Graphql => (&["operation_type", "operation_name", "fields"], "graphql"),
        Protocol::JsonRpc => (&["method"], "json-rpc"),
        Protocol::Grpc => (&["method"], "grpc"),
        Protocol::Mcp => (&["method", "tool", "params", "arguments"], "mcp"),
        Protocol::Sql => (&["command"], "sql"),
        Protocol::Redis => (&["command", "key"], "redis"),
        Protocol::Postgres => (&["statement", "table"], "postgres"),
        Protocol::L4 | Protocol::Tcp => (&[], "non-l7"),
    };
    for f in present(b) {
        if !allowed.contains(&f) {
            let msg = if env.protocol == Protocol::JsonRpc && f == "params" {
                "`params` matchers are not supported for json-rpc".to_owned()
            } else {
                format!("`{f}` is not valid in a {what} rule")
            };
            ctx.err_key(&join(path, f), msg);
        }
    }
    let mut rule = L7Rule::default();
    match env.protocol {
        Protocol::Rest => http_rule(ctx, path, b, env, &mut rule),
        Protocol::Websocket if !graphql_shape => http_rule(ctx, path, b, env, &mut rule),
        Protocol::Graphql | Protocol::Websocket => graphql_rule(ctx, path, b, &mut rule),
        Protocol::JsonRpc => match b.method.as_deref() {
            None => ctx.err(path, "json-rpc rule requires `method`"),
            Some(m) if m.is_empty() || (m.contains(['*', '?']) && m != "*") => ctx.err(
                &join(path, "method"),
                format!("json-rpc method `{m}` must be an exact method name or `*`"),
            ),
            Some(m) => rule.method = Some(Arc::from(m)),
        },
        Protocol::Mcp => mcp_rule(ctx, path, b, env, &mut rule),
        Protocol::Grpc => grpc_rule(ctx, path, b, &mut rule),
        Protocol::Sql => match b.command.as_deref() {
            Some(c) if !c.is_empty() => rule.command = Some(Arc::from(c.to_ascii_uppercase())),
            _ => ctx.err(path, "sql rule requires a non-empty `command`"),
        },
        Protocol::Redis => redis_rule(ctx, path, b, &mut rule),
        Protocol::Postgres => postgres_rule(ctx, path, b, &mut rule),
        Protocol::L4 | Protocol::Tcp => {}
    }
    (ctx.errors.len() == errors_before).then_some(rule)
}

/// Longest gRPC method glob accepted.
const MAX_GRPC_METHOD: usize = 512;

/// `method: "package.Service/Method"` (globs on either side of the `/`):
/// gRPC calls are `POST /package.Service/Method`, so the rule compiles to
/// that REST rule and is evaluated like one (`*` stays within the service
/// or the method name; `**` spans both).
fn grpc_rule(ctx: &mut Ctx, path: &str, b: &RuleBodyDto, rule: &mut L7Rule) {
    let Some(m) = b.method.as_deref() else {
        ctx.err(
            path,
            "grpc rule requires `method` (`package.Service/Method`)",
        );
        return;
    };
    let at = join(path, "method");
    let valid_part = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'*' | b'?'))
    };
    let shape_ok = m == "**"
        || m.split_once('/')
            .is_some_and(|(svc, meth)| valid_part(svc) && valid_part(meth) && !meth.contains('.'));
    if m.len() > MAX_GRPC_METHOD || !shape_ok {
        ctx.err(
            &at,
            format!("grpc method `{m}` must be `package.Service/Method` (letters, digits, `_`, `.`, globs `*` `?`; `**` for every method)"),
        );
        return;
    }
    rule.method = Some(Arc::from("POST"));
    rule.path = Some(glob(ctx, &at, &format!("/{m}"), b'/'));
}

/// Postgres statement kinds a rule may name.
pub(crate) const SQL_STATEMENTS: &[&str] =
    &["select", "insert", "update", "delete", "ddl", "other", "*"];

fn redis_rule(ctx: &mut Ctx, path: &str, b: &RuleBodyDto, rule: &mut L7Rule) {
    match b.command.as_deref() {
        Some(c)
            if !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'*' | b'?' | b'_' | b'|' | b'-')) =>
        {
            rule.command = Some(Arc::from(c.to_ascii_uppercase()));
        }
        Some(c) => ctx.err(
            &join(path, "command"),
            format!("redis command `{c}` must be a command name or a glob of one (letters, digits, `_`, `|`, `-`, `*`, `?`)"),
        ),
        None => ctx.err(path, "redis rule requires `command`"),
    }
    if let Some(k) = b.key.as_deref() {
        if k.is_empty() {
            ctx.err(&join(path, "key"), "redis `key` glob is empty");
        } else {
            rule.key = Some(glob(ctx, &join(path, "key"), k, 0));
        }
    }
}

fn postgres_rule(ctx: &mut Ctx, path: &str, b: &RuleBodyDto, rule: &mut L7Rule) {
    match b.statement.as_deref() {
        Some(s) if SQL_STATEMENTS.contains(&s.to_ascii_lowercase().as_str()) => {
            rule.statement = Some(Arc::from(s.to_ascii_lowercase()));
        }
        Some(s) => ctx.err(
            &join(path, "statement"),
            format!("statement `{s}` must be select, insert, update, delete, ddl, other or `*`"),
        ),
        None => ctx.err(path, "postgres rule requires `statement`"),
    }
    if let Some(t) = b.table.as_deref() {
        if t.is_empty() {
            ctx.err(&join(path, "table"), "postgres `table` glob is empty");
        } else {
            rule.table = Some(glob(
                ctx,
                &join(path, "table"),
                &t.to_ascii_lowercase(),
                b'.',
            ));
        }
    }
}

fn http_rule(ctx: &mut Ctx, path: &str, b: &RuleBodyDto, env: RuleEnv, rule: &mut L7Rule) {
    match b.method.as_deref() {
        None => ctx.err(path, "rule requires `method`"),
        Some(m) => {
            let up = m.to_ascii_uppercase();
            let ws = env.protocol == Protocol::Websocket;
            let ok = if ws {
                matches!(
                    up.as_str(),
                    "GET" | "WEBSOCKET_TEXT" | "WEBSOCKET_BINARY" | "*"
                )
            } else {
                REST_METHODS.contains(&up.as_str())
            };
            if ok {
                rule.method = Some(Arc::from(up));
            } else if ws {
                ctx.err(
                    &join(path, "method"),
                    format!(
                        "websocket method `{m}` must be GET, WEBSOCKET_TEXT, WEBSOCKET_BINARY or `*`"
                    ),
                );
            } else {
                ctx.err(
                    &join(path, "method"),
                    format!("method `{m}` must be one of GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS or `*`"),
                );
            }
        }
    }
    match b.path.as_deref() {
        None => ctx.err(path, "rule requires `path`"),
        Some(p) if !(p.starts_with('/') || p.starts_with('*')) => {
            ctx.err(
                &join(path, "path"),
                format!("path `{p}` must start with `/` or be a `*`/`**` glob"),
            );
        }
        Some(p) => rule.path = Some(glob(ctx, &join(path, "path"), p, b'/')),
    }
    if let Some(q) = &b.query {
        let qpath = join(path, "query");
        for (k, v) in q {
            if let Some(m) = matcher(ctx, &join(&qpath, k), v) {
                rule.query.push((Arc::from(k.as_str()), m));
            }
        }
    }
}

fn graphql_rule(ctx: &mut Ctx, path: &str, b: &RuleBodyDto, rule: &mut L7Rule) {
    match b.operation_type.as_deref() {
        None => ctx.err(path, "graphql rule requires `operation_type`"),
        Some(t) => {
            let low = t.to_ascii_lowercase();
            if GRAPHQL_OPS.contains(&low.as_str()) {
                rule.operation_type = Some(Arc::from(low));
            } else {
                ctx.err(
                    &join(path, "operation_type"),
                    format!("operation_type `{t}` must be query, mutation, subscription or `*`"),
                );
            }
        }
    }
    if let Some(n) = &b.operation_name {
        rule.operation_name = Some(glob(ctx, &join(path, "operation_name"), n, b'.'));
    }
    for (i, f) in b.fields.iter().flatten().enumerate() {
        let g = glob(ctx, &format!("{path}.fields[{i}]"), f, b'.');
        rule.fields.push(g);
    }
}

fn mcp_rule(ctx: &mut Ctx, path: &str, b: &RuleBodyDto, env: RuleEnv, rule: &mut L7Rule) {
    if let Some(m) = b.method.as_deref() {
        if m.is_empty() || (m.contains(['*', '?']) && (!m.starts_with("tools/") || m == "*")) {
            ctx.err(
                &join(path, "method"),
                format!("mcp method `{m}`: globs are only allowed in the `tools/` family (e.g. `tools/*`)"),
            );
        } else {
            rule.method = Some(Arc::from(m));
        }
    }
    let mut tool = None;
    if let Some(v) = &b.tool {
        tool = matcher(ctx, &join(path, "tool"), v);
    }
    if let Some(params) = &b.params {
        let ppath = join(path, "params");
        for (k, v) in params {
            if k != "name" {
                ctx.err_key(
                    &join(&ppath, k),
                    format!("mcp `params.{k}` is not supported; only `params.name`"),
                );
            } else if tool.is_some() {
                ctx.err_key(
                    &join(&ppath, k),
                    "`params.name` and `tool` are mutually exclusive",
                );
            } else {
                tool = matcher(ctx, &join(&ppath, k), v);
            }
        }
    }
    if let Some(t) = &tool {
        let wild = match t {
            QueryMatcher::One(g) => g.pattern.contains(['*', '?']),
            QueryMatcher::Any(gs) => gs.iter().any(|g| g.pattern.contains(['*', '?'])),
        };
        if wild && !env.mcp_strict {
            ctx.err(
                path,
                "wildcard `tool` matchers require `mcp.strict_tool_names: true`",
            );
        }
        let ok_method = match b.method.as_deref() {
            Some(m) => m == "tools/call",
            None => env.mcp_allow_all,
        };
        if !ok_method {
            ctx.err(path, "`tool`/`params` require `method: tools/call`");
        }
    } else if b.method.is_none() {
        ctx.err(path, "mcp rule requires `method` or `tool`");
    }
    if let Some(args) = &b.arguments {
        let apath = join(path, "arguments");
        let ok_method = match b.method.as_deref() {
            Some(m) => m == "tools/call",
            None => tool.is_some(),
        };
        if !ok_method {
            ctx.err_key(
                &apath,
                "`arguments` requires `method: tools/call` or a `tool` matcher",
            );
        }
        if args.is_empty() {
            ctx.err(&apath, "`arguments` must list at least one argument");
        } else if args.len() > MAX_ARGUMENTS {
            ctx.err(
                &apath,
                format!("`arguments` lists more than {MAX_ARGUMENTS} arguments"),
            );
        }
        for (k, v) in args {
            let kpath = join(&apath, k);
            let Some(pointer) = argument_pointer(k) else {
                ctx.err_key(
                    &kpath,
                    format!("argument key `{k}` must be a top-level argument name or a JSON pointer such as `/options/dir`"),
                );
                continue;
            };
            if let Some(m) = argument_matcher(ctx, &kpath, v) {
                rule.arguments.push((Arc::from(pointer), m));
            }
        }
        rule.arguments.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = rule.arguments.windows(2).find(|w| w[0].0 == w[1].0) {
            let dup = w[0].0.to_string();
            ctx.err_key(
                &apath,
                format!("argument `{dup}` is listed twice (as a name and as a JSON pointer)"),
            );
        }
    }
    rule.tool = tool;
}

/// Most argument matchers in one rule.
const MAX_ARGUMENTS: usize = 32;

/// An `arguments` key as a JSON pointer: `/a/b` as written (RFC 6901, only
/// `~0`/`~1` escapes), a top-level name `path` as `/path` (escaped).
fn argument_pointer(key: &str) -> Option<String> {
    if key.is_empty() || key.len() > 1024 {
        return None;
    }
    if let Some(rest) = key.strip_prefix('/') {
        let b = key.as_bytes();
        let bad_escape = b
            .iter()
            .enumerate()
            .any(|(i, &c)| c == b'~' && !matches!(b.get(i + 1), Some(b'0' | b'1')));
        return (!rest.is_empty() && !bad_escape).then(|| key.to_owned());
    }
    Some(format!("/{}", key.replace('~', "~0").replace('/', "~1")))
}

/// A glob for an argument value: `/`-delimited when it starts with `/`
/// (filesystem-like paths), else `.`-delimited like other MCP globs.
fn argument_glob(ctx: &mut Ctx, path: &str, pattern: &str) -> Glob {
    let delimiter = if pattern.starts_with('/') { b'/' } else { b'.' };
    glob(ctx, path, pattern, delimiter)
}

/// `"exact"`, `{glob: pattern}` or `{any: [patterns]}`.
fn argument_matcher(ctx: &mut Ctx, path: &str, v: &Value) -> Option<QueryMatcher> {
    if let Some(s) = scalar_string(v) {
        if s.contains(['*', '?']) {
            ctx.err(
                path,
                format!("exact argument value `{s}` contains `*` or `?`; write `{{glob: \"{s}\"}}` to match a glob"),
            );
            return None;
        }
        return Some(QueryMatcher::One(Glob::new(&s, b'.')));
    }
    let Value::Mapping(m) = v else {
        ctx.err(
            path,
            "expected an exact string, `{glob: pattern}` or `{any: [globs]}`",
        );
        return None;
    };
    if m.len() != 1 {
        ctx.err(path, "expected exactly one of `glob` or `any`");
        return None;
    }
    let (k, val) = m.iter().next()?;
    match k.as_str() {
        Some("glob") => {
            let gpath = join(path, "glob");
            match val {
                Value::String(s) if !s.is_empty() => {
                    Some(QueryMatcher::One(argument_glob(ctx, &gpath, s)))
                }
                _ => {
                    ctx.err(&gpath, "`glob` must be a non-empty glob string");
                    None
                }
            }
        }
        Some("any") => {
            let any_path = join(path, "any");
            let items = match val {
                Value::Sequence(items) if !items.is_empty() => items,
                _ => {
                    ctx.err(&any_path, "`any` must be a non-empty list of glob strings");
                    return None;
                }
            };
            let mut globs = Vec::with_capacity(items.len());
            for (i, it) in items.iter().enumerate() {
                let p = format!("{any_path}[{i}]");
                match it {
                    Value::String(s) => globs.push(argument_glob(ctx, &p, s)),
                    _ => ctx.err(&p, "expected a glob string"),
                }
            }
            Some(QueryMatcher::Any(globs))
        }
        other => {
            let name = other.unwrap_or("?");
            ctx.err_key(
                &join(path, name),
                format!("unknown field `{name}`, expected `glob` or `any`"),
            );
            None
        }
    }
}

fn rest(method: &str) -> L7Rule {
    L7Rule {
        method: Some(Arc::from(method)),
        path: Some(Glob::new("**", b'/')),
        ..L7Rule::default()
    }
}

fn gql(op: &str) -> L7Rule {
    L7Rule {
        operation_type: Some(Arc::from(op)),
        ..L7Rule::default()
    }
}

/// Expands an `access` preset (facts §1.4) for `protocol`.
pub(crate) fn preset_rules(access: &str, protocol: Protocol) -> Result<Vec<L7Rule>, String> {
    let rules = match (protocol, access) {
        (Protocol::Rest, "read-only") => ["GET", "HEAD", "OPTIONS"].map(rest).to_vec(),
        (Protocol::Rest, "read-write") => ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH"]
            .map(rest)
            .to_vec(),
        (Protocol::Rest | Protocol::Websocket, "full") => vec![rest("*")],
        (Protocol::Grpc, "full") => vec![rest("POST")],
        (Protocol::Websocket, "read-only") => vec![rest("GET")],
        // Binary messages are writes too (OpenShell relays them uninspected).
        (Protocol::Websocket, "read-write") => ["GET", "WEBSOCKET_TEXT", "WEBSOCKET_BINARY"]
            .map(rest)
            .to_vec(),
        (Protocol::Graphql, "read-only") => vec![gql("query")],
        (Protocol::Graphql, "read-write") => vec![gql("query"), gql("mutation")],
        (Protocol::Graphql, "full") => vec![gql("*")],
        (Protocol::Mcp | Protocol::JsonRpc, _) => {
            return Err(format!(
                "`access` presets are not allowed for {}; write `rules`",
                protocol.as_str()
            ))
        }
        (_, "read-only" | "read-write" | "full") => {
            return Err(format!(
                "`access` presets are not defined for {}; write `rules`",
                protocol.as_str()
            ))
        }
        (_, other) => {
            return Err(format!(
                "unknown access preset `{other}`; expected read-only, read-write or full"
            ))
        }
    };
    Ok(rules)
}
