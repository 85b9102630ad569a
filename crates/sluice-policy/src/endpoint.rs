//! Validation and compilation of one `endpoints[]` entry.

use std::sync::Arc;

use crate::credentials::compile_credentials;
use crate::dto::EndpointDto;
use crate::error::Ctx;
use crate::glob::unsupported_glob_syntax;
use crate::host::parse_host;
use crate::ips::{parse_allowed_ip, IpEntry};
use crate::l7::compile_rules;
use crate::location::{join, join_idx};
use crate::model::{
    Endpoint, EndpointId, Enforcement, Glob, HostPattern, PolicyId, Protocol, TlsMode,
    DEFAULT_L7_MAX_BODY_BYTES,
};
use crate::rules::RuleEnv;

fn parse_protocol(s: &str) -> Option<Protocol> {
    Some(match s.to_ascii_lowercase().as_str() {
        "" => Protocol::L4,
        "tcp" => Protocol::Tcp,
        "rest" => Protocol::Rest,
        "websocket" => Protocol::Websocket,
        "graphql" => Protocol::Graphql,
        "json-rpc" => Protocol::JsonRpc,
        "mcp" => Protocol::Mcp,
        "grpc" => Protocol::Grpc,
        "sql" => Protocol::Sql,
        "redis" => Protocol::Redis,
        "postgres" => Protocol::Postgres,
        _ => return None,
    })
}

/// Fields that only make sense with request inspection (rejected for `tcp`).
fn l7_fields(e: &EndpointDto) -> Vec<&'static str> {
    let checks: [(bool, &'static str); 16] = [
        (e.path.is_some(), "path"),
        (e.enforcement.is_some(), "enforcement"),
        (e.access.is_some(), "access"),
        (e.rules.is_some(), "rules"),
        (e.deny_rules.is_some(), "deny_rules"),
        (e.allow_encoded_slash.is_some(), "allow_encoded_slash"),
        (
            e.websocket_credential_rewrite.is_some(),
            "websocket_credential_rewrite",
        ),
        (
            e.request_body_credential_rewrite.is_some(),
            "request_body_credential_rewrite",
        ),
        (e.credential_signing.is_some(), "credential_signing"),
        (e.signing_service.is_some(), "signing_service"),
        (e.signing_region.is_some(), "signing_region"),
        (e.persisted_queries.is_some(), "persisted_queries"),
        (
            e.graphql_persisted_queries.is_some(),
            "graphql_persisted_queries",
        ),
        (e.graphql_max_body_bytes.is_some(), "graphql_max_body_bytes"),
        (e.json_rpc.is_some(), "json_rpc"),
        (e.mcp.is_some(), "mcp"),
    ];
    checks
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect()
}

fn body_limit(ctx: &mut Ctx, path: &str, v: Option<i64>) -> usize {
    match v {
        None => DEFAULT_L7_MAX_BODY_BYTES,
        Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
        Some(n) => {
            ctx.err(
                path,
                format!("max body bytes must be greater than 0, got {n}"),
            );
            DEFAULT_L7_MAX_BODY_BYTES
        }
    }
}

fn port(ctx: &mut Ctx, path: &str, p: i64) -> Option<u16> {
    match u16::try_from(p) {
        Ok(v) if v > 0 => Some(v),
        _ => {
            ctx.err(path, format!("port {p} is out of range 1..=65535"));
            None
        }
    }
}

/// `ports` (wins) or `port`, validated, sorted and deduplicated; reports
/// `missing` at `path` when neither yields a port (and nothing else failed).
pub(crate) fn compile_ports(
    ctx: &mut Ctx,
    path: &str,
    ports: Option<&[i64]>,
    single: Option<i64>,
    missing: &str,
) -> Vec<u16> {
    let before = ctx.errors.len();
    let mut out: Vec<u16> = match (ports, single) {
        (Some(list), _) => list
            .iter()
            .enumerate()
            .filter_map(|(i, p)| port(ctx, &join_idx(&join(path, "ports"), i), *p))
            .collect(),
        (None, Some(p)) => port(ctx, &join(path, "port"), p).into_iter().collect(),
        (None, None) => Vec::new(),
    };
    out.sort_unstable();
    out.dedup();
    if out.is_empty() && ctx.errors.len() == before {
        ctx.err(path, missing);
    }
    out
}

/// An endpoint-level `path` selector (`/`-delimited glob), reported at `path.path`.
pub(crate) fn compile_path_glob(ctx: &mut Ctx, path: &str, raw: Option<&str>) -> Option<Glob> {
    let at = join(path, "path");
    match raw {
        None | Some("") => None,
        Some(p) if !(p.starts_with('/') || p.starts_with('*')) => {
            ctx.err(
                &at,
                format!("path `{p}` must start with `/` or be a `*`/`**` glob"),
            );
            None
        }
        Some(p) => {
            if let Some(c) = unsupported_glob_syntax(p) {
                ctx.err(
                    &at,
                    format!("glob `{p}` uses `{c}`; only `*`, `**` and `?` are supported"),
                );
            }
            Some(Glob::new(p, b'/'))
        }
    }
}

/// Validates and compiles one endpoint at `path`; `None` if it had errors.
pub(crate) fn compile_endpoint(
    ctx: &mut Ctx,
    path: &str,
    e: &EndpointDto,
    policy: PolicyId,
    index_in_policy: usize,
    id: EndpointId,
) -> Option<Endpoint> {
    let before = ctx.errors.len();
    let at = |f: &str| join(path, f);

    let protocol = match parse_protocol(e.protocol.as_deref().unwrap_or("")) {
        Some(p) => p,
        None => {
            let p = e.protocol.as_deref().unwrap_or("");
            ctx.err(
                &at("protocol"),
                format!("unknown protocol `{p}`; expected rest, websocket, graphql, json-rpc, mcp, sql, tcp, redis or postgres"),
            );
            Protocol::L4
        }
    };
    let tcp = protocol == Protocol::Tcp;
    if tcp {
        for f in l7_fields(e) {
            ctx.err_key(
                &at(f),
                format!("`{f}` is not allowed with `protocol: tcp` (no request inspection)"),
            );
        }
    }

    // host
    let raw_host = e.host.as_deref().unwrap_or("");
    let lower = raw_host.to_ascii_lowercase();
    let host_str = lower.strip_suffix('.').unwrap_or(&lower);
    let host = if host_str.is_empty() {
        if raw_host.ends_with('.') {
            ctx.err(&at("host"), "host `.` is empty");
        } else if e.allowed_ips.as_ref().is_none_or(Vec::is_empty) {
            ctx.err(
                path,
                "endpoint has no `host`; a hostless endpoint requires `allowed_ips`",
            );
        }
        HostPattern::Any
    } else {
        match parse_host(host_str) {
            Ok(h) => h,
            Err(m) => {
                ctx.err(&at("host"), m);
                HostPattern::Any
            }
        }
    };
    if tcp {
        if raw_host.ends_with('.') {
            ctx.err(
                &at("host"),
                "`protocol: tcp` host must not have a trailing dot",
            );
        } else if !matches!(host, HostPattern::Exact(_)) && !host_str.is_empty() {
            ctx.err(
                &at("host"),
                "`protocol: tcp` requires an exact DNS hostname (no IP literal, no wildcard)",
            );
        } else if host_str.is_empty() {
            ctx.err(
                path,
                "`protocol: tcp` requires a DNS hostname (hostless endpoints are not allowed)",
            );
        }
    }
    if protocol == Protocol::Mcp && !matches!(host, HostPattern::Exact(_) | HostPattern::Ip(_)) {
        ctx.err(
            path,
            "`protocol: mcp` requires a concrete host (no wildcard, not hostless)",
        );
    }

    // ports: `ports` wins over `port`
    let ports = compile_ports(
        ctx,
        path,
        e.ports.as_deref(),
        e.port,
        "endpoint has no port",
    );

    // endpoint path selector
    let ep_path = compile_path_glob(ctx, path, e.path.as_deref());

    // tls
    let tls = match e.tls.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("") => TlsMode::Auto,
        Some("skip") => TlsMode::Skip,
        Some(t @ ("terminate" | "passthrough")) => {
            ctx.warn(
                &at("tls"),
                format!("`tls: {t}` is deprecated and behaves like automatic detection"),
            );
            TlsMode::Auto
        }
        Some(t) => {
            ctx.err(
                &at("tls"),
                format!("unknown tls mode `{t}`; expected `skip` or nothing"),
            );
            TlsMode::Auto
        }
    };
    if tls == TlsMode::Skip && protocol.is_l7() {
        ctx.err(
            &at("tls"),
            format!("`tls: skip` disables request inspection, so `protocol: {}` would never be enforced", protocol.as_str()),
        );
    }

    // enforcement
    let enforcement = match e
        .enforcement
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("enforce") => Enforcement::Enforce,
        Some("audit") => Enforcement::Audit,
        Some(other) => {
            ctx.err(
                &at("enforcement"),
                format!("unknown enforcement `{other}`; expected enforce or audit"),
            );
            Enforcement::Enforce
        }
        None if protocol == Protocol::Sql => Enforcement::Audit,
        None => {
            if protocol.is_l7() {
                ctx.warn(
                    path,
                    "no `enforcement` set: sluice defaults to `enforce` (OpenShell defaults to `audit`); set it explicitly",
                );
            }
            Enforcement::Enforce
        }
    };
    if protocol == Protocol::Sql && enforcement == Enforcement::Enforce {
        ctx.err(&at("enforcement"), "`protocol: sql` cannot be enforced (sql enforcement requires full sql parsing); use `enforcement: audit`");
    }
    if protocol == Protocol::L4 && e.enforcement.is_some() {
        ctx.warn(
            &at("enforcement"),
            "`enforcement` has no effect without an l7 `protocol`",
        );
    }

    // mcp / json-rpc options
    if e.mcp.is_some() && protocol != Protocol::Mcp {
        ctx.err_key(&at("mcp"), "`mcp` options require `protocol: mcp`");
    }
    if e.json_rpc.is_some() && protocol != Protocol::JsonRpc {
        ctx.err_key(
            &at("json_rpc"),
            "`json_rpc` options require `protocol: json-rpc`",
        );
    }
    let mcp_max = body_limit(
        ctx,
        &at("mcp.max_body_bytes"),
        e.mcp.as_ref().and_then(|m| m.max_body_bytes),
    );
    let mcp_strict = e
        .mcp
        .as_ref()
        .and_then(|m| m.strict_tool_names)
        .unwrap_or(true);
    let mcp_allow_all = e
        .mcp
        .as_ref()
        .and_then(|m| m.allow_all_known_mcp_methods)
        .unwrap_or(false);
    let json_max = body_limit(
        ctx,
        &at("json_rpc.max_body_bytes"),
        e.json_rpc.as_ref().and_then(|j| j.max_body_bytes),
    );
    let gql_max = body_limit(ctx, &at("graphql_max_body_bytes"), e.graphql_max_body_bytes);

    let (rules, deny_rules) = compile_rules(
        ctx,
        path,
        e,
        RuleEnv {
            protocol,
            mcp_allow_all,
            mcp_strict,
        },
    );

    // allowed_ips
    let mut allowed_ips = Vec::new();
    for (i, raw) in e.allowed_ips.iter().flatten().enumerate() {
        let p = join_idx(&at("allowed_ips"), i);
        match parse_allowed_ip(raw) {
            IpEntry::Ok { net, broad } => {
                if broad {
                    ctx.warn(&p, format!("very broad CIDR `{raw}` in allowed_ips"));
                }
                allowed_ips.push(net);
            }
            IpEntry::Err(m) => ctx.err(&p, format!("allowed_ips entry {m}")),
        }
    }
    allowed_ips.sort_unstable();
    allowed_ips.dedup();

    let creds = compile_credentials(ctx, path, e, protocol);

    if ctx.errors.len() != before {
        return None;
    }
    let (line, column) = ctx.position(path);
    Some(Endpoint {
        id,
        policy,
        index_in_policy,
        host,
        ports: ports.into(),
        path: ep_path,
        protocol,
        tls,
        enforcement,
        rules: rules.into(),
        deny_rules: deny_rules.into(),
        allowed_ips: allowed_ips.into(),
        allow_encoded_slash: e.allow_encoded_slash.unwrap_or(false),
        websocket_credential_rewrite: creds.ws_rewrite,
        request_body_credential_rewrite: creds.body_rewrite,
        allow_uninspected_credentials: e.allow_uninspected_credentials.unwrap_or(false),
        line,
        column,
        credential_signing: creds.credential_signing,
        signing_service: e.signing_service.as_deref().map(Arc::from),
        signing_region: e.signing_region.as_deref().map(Arc::from),
        credential_binding: creds.credential_binding,
        persisted_queries: creds.persisted_queries,
        graphql_persisted_queries: creds.registered.into(),
        graphql_max_body_bytes: gql_max,
        json_rpc_max_body_bytes: json_max,
        mcp_max_body_bytes: mcp_max,
        mcp_strict_tool_names: mcp_strict,
        mcp_allow_all_known_mcp_methods: mcp_allow_all,
    })
}
