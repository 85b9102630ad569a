//! Validation and compilation of the `providers` section: credential
//! sources (read at load time through a [`SecretSource`]), the endpoints
//! they are bound to, optional token grants, and the uninspected-endpoint
//! binding rule.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::dto::{ProviderDto, ProviderEndpointDto, SecretSourceDto, TokenGrantDto};
use crate::endpoint::{compile_path_glob, compile_ports};
use crate::error::Ctx;
use crate::host::parse_host;
use crate::location::{join, join_idx};
use crate::metadata::compile_metadata;
use crate::model::{
    Credential, Endpoint, GrantKind, Protocol, Provider, ProviderEndpoint, ProviderId, TlsMode,
    TokenGrant, TokenStyle, DEFAULT_CLIENT_ASSERTION_TYPE, DEFAULT_TOKEN_GRANT_TIMEOUT_SECS,
};
use crate::overlap::ports_intersect;
use crate::placeholder::{valid_name, MAX_NAME_LEN};
use crate::secret::{check_value, file_value, Secret, SecretSource};

/// Headers a token grant may not write.
const FORBIDDEN_HEADERS: [&str; 9] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Provider keys: `[A-Za-z0-9][A-Za-z0-9_-]*`, at most 64 bytes.
fn valid_provider_key(k: &str) -> bool {
    k.len() <= 64
        && k.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// RFC 9110 `token`.
fn is_http_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// Reads one secret source at `path`; `None` after reporting an error.
/// Messages never contain the value.
pub(crate) fn read_secret(
    ctx: &mut Ctx,
    path: &str,
    s: &SecretSourceDto,
    secrets: &dyn SecretSource,
) -> Option<Secret> {
    match (&s.env, &s.file) {
        (Some(_), Some(_)) | (None, None) => {
            ctx.err(
                path,
                "a secret source must be exactly one of `env` or `file`",
            );
            None
        }
        (Some(var), None) => {
            let at = join(path, "env");
            if var.is_empty() || var.contains(['=', '\0']) {
                ctx.err(&at, format!("invalid environment variable name `{var}`"));
                return None;
            }
            match secrets.env(var) {
                None => {
                    ctx.err(&at, format!("environment variable `{var}` is not set"));
                    None
                }
                Some(v) => match check_value(&v) {
                    Ok(()) => Some(Secret::new(v)),
                    Err(why) => {
                        ctx.err(&at, format!("environment variable `{var}` {why}"));
                        None
                    }
                },
            }
        }
        (None, Some(file)) => {
            let at = join(path, "file");
            if !file.starts_with('/') {
                ctx.err(&at, format!("secret file path `{file}` must be absolute"));
                return None;
            }
            match secrets.file(Path::new(file)) {
                Err(e) => {
                    ctx.err(&at, format!("cannot read secret file `{file}`: {e}"));
                    None
                }
                Ok(bytes) => match file_value(bytes) {
                    Ok(v) => Some(Secret::new(v)),
                    Err(why) => {
                        ctx.err(&at, format!("secret file `{file}` {why}"));
                        None
                    }
                },
            }
        }
    }
}

fn compile_endpoint(
    ctx: &mut Ctx,
    path: &str,
    e: &ProviderEndpointDto,
) -> Option<ProviderEndpoint> {
    let before = ctx.errors.len();
    let at = |f: &str| join(path, f);
    let raw = e.host.as_deref().unwrap_or("");
    let lower = raw.to_ascii_lowercase();
    let host_str = lower.strip_suffix('.').unwrap_or(&lower);
    let host = if host_str.is_empty() {
        if e.host.is_none() {
            ctx.err(path, "provider endpoint has no `host`");
        } else {
            ctx.err(&at("host"), format!("host `{raw}` is empty"));
        }
        None
    } else {
        match parse_host(host_str) {
            Ok(h) => Some(h),
            Err(m) => {
                ctx.err(&at("host"), m);
                None
            }
        }
    };
    let ports = compile_ports(
        ctx,
        path,
        e.ports.as_deref(),
        e.port,
        "provider endpoint has no port",
    );
    let glob = compile_path_glob(ctx, path, e.path.as_deref());
    if ctx.errors.len() != before {
        return None;
    }
    Some(ProviderEndpoint {
        host: host?,
        ports: ports.into(),
        path: glob,
    })
}

/// Validates a token grant's absolute http(s) URL (http only for loopback hosts).
fn check_token_endpoint(url: &str) -> Result<(), String> {
    crate::url::parse_http_url("token_endpoint", url).map(|_| ())
}

/// RFC 6749 scope-token characters.
fn valid_scope(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e))
}

fn compile_token_grant(
    ctx: &mut Ctx,
    path: &str,
    t: &TokenGrantDto,
    secrets: &dyn SecretSource,
) -> Option<TokenGrant> {
    let before = ctx.errors.len();
    let at = |f: &str| join(path, f);
    if let Err(m) = check_token_endpoint(&t.token_endpoint) {
        ctx.err(&at("token_endpoint"), m);
    }
    let grant = match t.grant.as_str() {
        "client_credentials" => Some(GrantKind::ClientCredentials),
        "jwt_bearer" => Some(GrantKind::JwtBearer),
        g => {
            ctx.err(
                &at("grant"),
                format!("unknown grant `{g}`; expected client_credentials or jwt_bearer"),
            );
            None
        }
    };
    let read = |ctx: &mut Ctx, f: &str, s: &Option<SecretSourceDto>| {
        s.as_ref()
            .and_then(|s| read_secret(ctx, &at(f), s, secrets))
    };
    let client_id = read(ctx, "client_id", &t.client_id);
    let client_secret = read(ctx, "client_secret", &t.client_secret);
    let assertion = read(ctx, "assertion", &t.assertion);
    match grant {
        Some(GrantKind::ClientCredentials) => {
            for (f, set) in [
                ("client_id", t.client_id.is_some()),
                ("client_secret", t.client_secret.is_some()),
            ] {
                if !set {
                    ctx.err(
                        &at("grant"),
                        format!("`grant: client_credentials` requires `{f}`"),
                    );
                }
            }
            for (f, set) in [
                ("assertion", t.assertion.is_some()),
                ("client_assertion_type", t.client_assertion_type.is_some()),
            ] {
                if set {
                    ctx.err_key(&at(f), format!("`{f}` requires `grant: jwt_bearer`"));
                }
            }
        }
        Some(GrantKind::JwtBearer) => {
            if t.assertion.is_none() {
                ctx.err(&at("grant"), "`grant: jwt_bearer` requires `assertion`");
            }
            if t.client_secret.is_some() {
                ctx.err_key(
                    &at("client_secret"),
                    "`client_secret` requires `grant: client_credentials`",
                );
            }
        }
        None => {}
    }
    let assertion_type = match t.client_assertion_type.as_deref() {
        None => DEFAULT_CLIENT_ASSERTION_TYPE,
        Some(a) if a.is_empty() || a.bytes().any(|b| b <= b' ' || b == 0x7f) => {
            ctx.err(
                &at("client_assertion_type"),
                format!("invalid client_assertion_type `{a}`"),
            );
            DEFAULT_CLIENT_ASSERTION_TYPE
        }
        Some(a) => a,
    };
    let mut scopes = Vec::new();
    for (i, s) in t.scopes.iter().flatten().enumerate() {
        if valid_scope(s) {
            scopes.push(Arc::from(s.as_str()));
        } else {
            ctx.err(
                &join_idx(&at("scopes"), i),
                format!("invalid scope `{s}`; scopes are non-empty and contain no spaces, quotes or backslashes"),
            );
        }
    }
    if let Some(a) = t.audience.as_deref() {
        if a.is_empty() || a.bytes().any(|b| b < b' ' || b == 0x7f) {
            ctx.err(
                &at("audience"),
                "audience must be non-empty and contain no control characters",
            );
        }
    }
    let header = t.header.as_deref().unwrap_or("Authorization");
    if !is_http_token(header) {
        ctx.err(
            &at("header"),
            format!("header `{header}` is not a valid HTTP header name"),
        );
    } else if FORBIDDEN_HEADERS
        .iter()
        .any(|h| h.eq_ignore_ascii_case(header))
    {
        ctx.err(
            &at("header"),
            format!("header `{header}` cannot carry a token (framing or hop-by-hop header)"),
        );
    }
    let style = match t.style.as_deref() {
        None | Some("bearer") => TokenStyle::Bearer,
        Some("raw") => TokenStyle::Raw,
        Some(s) => {
            ctx.err(
                &at("style"),
                format!("unknown style `{s}`; expected bearer or raw"),
            );
            TokenStyle::Bearer
        }
    };
    let timeout = match t.timeout_seconds {
        None => DEFAULT_TOKEN_GRANT_TIMEOUT_SECS,
        Some(n @ 1..=60) => n.unsigned_abs(),
        Some(n) => {
            ctx.err(
                &at("timeout_seconds"),
                format!("timeout_seconds {n} is out of range 1..=60"),
            );
            DEFAULT_TOKEN_GRANT_TIMEOUT_SECS
        }
    };
    if ctx.errors.len() != before {
        return None;
    }
    Some(TokenGrant {
        token_endpoint: Arc::from(t.token_endpoint.as_str()),
        grant: grant?,
        client_id,
        client_secret,
        assertion,
        assertion_type: Arc::from(assertion_type),
        scopes: scopes.into(),
        audience: t.audience.as_deref().map(Arc::from),
        header: Arc::from(header),
        style,
        timeout: Duration::from_secs(timeout),
    })
}

fn ports_text(ports: &[u16]) -> String {
    let p: Vec<String> = ports.iter().map(u16::to_string).collect();
    p.join(",")
}

/// Why a network endpoint does not inspect requests, if it does not.
fn uninspected(e: &Endpoint) -> Option<&'static str> {
    if e.tls == TlsMode::Skip {
        Some("`tls: skip`")
    } else if e.protocol == Protocol::Tcp {
        Some("`protocol: tcp`")
    } else if e.protocol == Protocol::L4 {
        Some("l4-only (no `protocol`)")
    } else {
        None
    }
}

/// Binding rule: a provider endpoint may not overlap an uninspected network
/// endpoint unless that endpoint opts in; a provider endpoint that overlaps
/// nothing gets a warning.
fn check_bindings(
    ctx: &mut Ctx,
    key: &str,
    path: &str,
    pe: &ProviderEndpoint,
    endpoints: &[Endpoint],
    names: &[String],
) {
    let mut any = false;
    let me = format!("{}:{}", pe.host.display(), ports_text(&pe.ports));
    for (e, name) in endpoints.iter().zip(names) {
        if !ports_intersect(&pe.ports, &e.ports) || !pe.host.overlaps(&e.host) {
            continue;
        }
        any = true;
        if e.allow_uninspected_credentials {
            continue;
        }
        if let Some(why) = uninspected(e) {
            let (e_file, e_line, e_col) = ctx.locate(name);
            ctx.err(
                path,
                format!(
                    "provider `{key}` endpoint {path} ({me}) overlaps {name} ({}:{}, {e_file}:{e_line}:{e_col}) which is {why}, so credentials would pass uninspected; use an l7 `protocol` there or set `allow_uninspected_credentials: true` on it",
                    e.host.display(),
                    ports_text(&e.ports),
                ),
            );
        }
    }
    if !any {
        ctx.warn(
            path,
            format!("provider `{key}` endpoint {me} overlaps no network endpoint; its credentials can never be used there"),
        );
    }
}

/// Validates and compiles `providers`. `endpoints`/`names` are the compiled
/// network endpoints and their `network_policies.KEY.endpoints[i]` names.
pub(crate) fn compile_providers(
    ctx: &mut Ctx,
    dto: &BTreeMap<String, ProviderDto>,
    secrets: &dyn SecretSource,
    endpoints: &[Endpoint],
    names: &[String],
) -> Vec<Provider> {
    let mut out = Vec::with_capacity(dto.len());
    let mut seen: HashMap<&str, &str> = HashMap::new();
    let mut metadata_kinds = BTreeMap::new();
    for (key, p) in dto {
        let path = join("providers", key);
        let before = ctx.errors.len();
        let id = ProviderId(u32::try_from(out.len()).unwrap_or(u32::MAX));
        let composed = ctx.overlays.iter().any(|o| o.prefix == path);
        if !composed && !valid_provider_key(key) {
            ctx.err_key(
                &path,
                format!("invalid provider key `{key}`; expected [A-Za-z0-9][A-Za-z0-9_-]* (at most 64 bytes)"),
            );
        }
        if p.credentials.is_empty() && p.token_grant.is_none() {
            ctx.err_key(
                &path,
                format!("provider `{key}` has neither `credentials` nor `token_grant`"),
            );
        }
        if p.endpoints.is_empty() {
            ctx.err_key(
                &path,
                format!("provider `{key}` has no endpoints; credentials must be bound to at least one endpoint"),
            );
        }
        let mut credentials = Vec::with_capacity(p.credentials.len());
        for (name, src) in &p.credentials {
            let cpath = join(&join(&path, "credentials"), name);
            if !valid_name(name) {
                ctx.err_key(
                    &cpath,
                    format!("invalid credential name `{name}`; expected [A-Za-z0-9_]+ (at most {MAX_NAME_LEN} bytes)"),
                );
            } else if let Some(other) = seen.get(name.as_str()) {
                ctx.err_key(
                    &cpath,
                    format!("credential `{name}` is already defined by provider `{other}`; names must be unique across providers"),
                );
            } else {
                seen.insert(name, key);
            }
            if let Some(value) = read_secret(ctx, &cpath, src, secrets) {
                credentials.push(Credential {
                    name: Arc::from(name.as_str()),
                    provider: id,
                    value,
                });
            }
        }
        let mut eps = Vec::with_capacity(p.endpoints.len());
        for (i, e) in p.endpoints.iter().enumerate() {
            let epath = join_idx(&join(&path, "endpoints"), i);
            if let Some(pe) = compile_endpoint(ctx, &epath, e) {
                check_bindings(ctx, key, &epath, &pe, endpoints, names);
                eps.push(pe);
            }
        }
        let token_grant = p
            .token_grant
            .as_ref()
            .and_then(|t| compile_token_grant(ctx, &join(&path, "token_grant"), t, secrets));
        let metadata = compile_metadata(ctx, key, &path, p, &mut metadata_kinds);
        if ctx.errors.len() == before {
            out.push(Provider {
                id,
                key: Arc::from(key.as_str()),
                credentials: credentials.into(),
                endpoints: eps.into(),
                token_grant: token_grant.map(Arc::new),
                metadata,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_endpoint_table() {
        let cases: &[(&str, bool)] = &[
            ("https://auth.example.com/oauth2/token", true),
            ("HTTPS://auth.example.com:8443/t?x=1", true),
            ("http://127.0.0.1:8080/token", true),
            ("http://127.9.9.9/token", true),
            ("http://[::1]:9000/token", true),
            ("http://localhost/token", true),
            ("http://LOCALHOST:1/token", true),
            ("http://auth.example.com/token", false),
            ("http://10.0.0.1/token", false),
            ("http://[::2]/token", false),
            ("ftp://auth.example.com/token", false),
            ("/oauth2/token", false),
            ("https:///token", false),
            ("https://user:pw@auth.example.com/token", false),
            ("https://auth.example.com:0/token", false),
            ("https://auth.example.com:99999/token", false),
            ("https://auth.example.com/token#frag", false),
            ("https://auth example.com/token", false),
            ("https://[zz]/token", false),
            ("https://auth.example.com", true),
        ];
        for (url, ok) in cases {
            assert_eq!(check_token_endpoint(url).is_ok(), *ok, "{url}");
        }
    }

    #[test]
    fn header_and_key_tables() {
        assert!(is_http_token("Authorization"));
        assert!(is_http_token("X-Api-Key"));
        assert!(!is_http_token("X Api"));
        assert!(!is_http_token(""));
        assert!(!is_http_token("X:Y"));
        assert!(valid_provider_key("github"));
        assert!(valid_provider_key("my-provider_2"));
        assert!(!valid_provider_key("_x"));
        assert!(!valid_provider_key("a.b"));
        assert!(!valid_provider_key(""));
        assert!(valid_scope("read:org"));
        assert!(!valid_scope("a b"));
        assert!(!valid_scope("a\"b"));
    }
}
