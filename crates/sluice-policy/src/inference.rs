//! The `inference` section (design §6.4): the routes `inference.local`
//! forwards model calls to. Each route names a backend base URL, the API
//! protocols it serves, its credential (read at load time, like provider
//! credentials), how the credential is sent, an optional model rewrite, the
//! extra request headers it forwards and a timeout.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::dto::SecretSourceDto;
use crate::error::Ctx;
use crate::location::{join, join_idx};
use crate::provider::read_secret;
use crate::secret::{Secret, SecretSource};

/// Most routes in one policy.
const MAX_ROUTES: usize = 64;
/// Most extra forwarded headers per route.
const MAX_PASSTHROUGH: usize = 32;
/// Default and largest route timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// `inference:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InferenceDto {
    #[serde(default)]
    pub(crate) routes: Vec<InferenceRouteDto>,
}

/// `inference.routes[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InferenceRouteDto {
    pub(crate) name: Option<String>,
    pub(crate) endpoint: Option<String>,
    #[serde(default)]
    pub(crate) protocols: Vec<String>,
    pub(crate) model: Option<String>,
    pub(crate) api_key: Option<SecretSourceDto>,
    pub(crate) auth_style: Option<String>,
    pub(crate) timeout: Option<serde_yaml::Value>,
    #[serde(default)]
    pub(crate) passthrough_headers: Vec<String>,
}

/// An API surface `inference.local` answers (method + path pattern).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InferenceProtocol {
    /// `POST /v1/chat/completions` (streaming allowed).
    OpenAiChatCompletions,
    /// `POST /v1/completions` (streaming allowed).
    OpenAiCompletions,
    /// `POST /v1/responses` (streaming allowed).
    OpenAiResponses,
    /// `POST /v1/embeddings` (buffered).
    OpenAiEmbeddings,
    /// `GET /v1/models`, `GET /v1/models/{id}` (buffered).
    ModelDiscovery,
    /// `POST /v1/messages` (streaming allowed).
    AnthropicMessages,
}

impl InferenceProtocol {
    /// Every protocol, in documentation order.
    pub const ALL: [Self; 6] = [
        Self::OpenAiChatCompletions,
        Self::OpenAiCompletions,
        Self::OpenAiResponses,
        Self::OpenAiEmbeddings,
        Self::ModelDiscovery,
        Self::AnthropicMessages,
    ];

    /// The policy spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAiChatCompletions => "openai_chat_completions",
            Self::OpenAiCompletions => "openai_completions",
            Self::OpenAiResponses => "openai_responses",
            Self::OpenAiEmbeddings => "openai_embeddings",
            Self::ModelDiscovery => "model_discovery",
            Self::AnthropicMessages => "anthropic_messages",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Whether responses may stream (`"stream": true` in the request).
    #[must_use]
    pub fn may_stream(self) -> bool {
        !matches!(self, Self::OpenAiEmbeddings | Self::ModelDiscovery)
    }
}

/// How a route's credential is sent to its backend.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthStyle {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// `x-api-key: <key>`.
    XApiKey,
    /// `<name>: <key>` (lower-case header name).
    Header(Arc<str>),
}

impl AuthStyle {
    /// The header name the credential goes in (lower case).
    #[must_use]
    pub fn header_name(&self) -> &str {
        match self {
            Self::Bearer => "authorization",
            Self::XApiKey => "x-api-key",
            Self::Header(n) => n,
        }
    }
}

/// A backend base URL: `https://host[:port][/base]` (plain `http` only for
/// loopback hosts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InferenceEndpoint {
    /// Whether the backend is reached over TLS.
    pub https: bool,
    /// Host name (lower case) or IP literal (no brackets).
    pub host: Arc<str>,
    pub port: u16,
    /// Path prefix without a trailing slash (`""` for none), e.g. `/v1`.
    pub base_path: Arc<str>,
}

/// One compiled route.
#[derive(Clone, Debug)]
pub struct InferenceRoute {
    pub name: Arc<str>,
    pub endpoint: InferenceEndpoint,
    pub protocols: Arc<[InferenceProtocol]>,
    /// Rewrites the request body's `model` when set.
    pub model: Option<Arc<str>>,
    pub api_key: Secret,
    pub auth_style: AuthStyle,
    pub timeout: Duration,
    /// Request headers forwarded besides the built-in allowlist (lower case).
    pub passthrough_headers: Arc<[Arc<str>]>,
}

impl InferenceRoute {
    /// Whether this route serves `protocol`.
    #[must_use]
    pub fn serves(&self, protocol: InferenceProtocol) -> bool {
        self.protocols.contains(&protocol)
    }
}

/// Validates and compiles the `inference` section.
pub(crate) fn compile_inference(
    ctx: &mut Ctx,
    dto: &InferenceDto,
    secrets: &dyn SecretSource,
) -> Vec<InferenceRoute> {
    if dto.routes.len() > MAX_ROUTES {
        ctx.err(
            "inference.routes",
            format!("at most {MAX_ROUTES} inference routes are allowed"),
        );
        return Vec::new();
    }
    let mut routes: Vec<InferenceRoute> = Vec::with_capacity(dto.routes.len());
    for (i, r) in dto.routes.iter().enumerate() {
        let path = join_idx("inference.routes", i);
        if let Some(route) = compile_route(ctx, &path, r, secrets) {
            if routes.iter().any(|o| o.name == route.name) {
                ctx.err(
                    &join(&path, "name"),
                    format!("duplicate inference route name `{}`", route.name),
                );
            }
            routes.push(route);
        }
    }
    routes
}

fn compile_route(
    ctx: &mut Ctx,
    path: &str,
    r: &InferenceRouteDto,
    secrets: &dyn SecretSource,
) -> Option<InferenceRoute> {
    let before = ctx.errors.len();
    let at = |f: &str| join(path, f);
    let name = match r.name.as_deref() {
        None => {
            ctx.err(path, "inference route has no `name`");
            ""
        }
        Some(n) if !valid_name(n) => {
            ctx.err(
                &at("name"),
                format!("route name `{n}` must be 1-64 characters of [A-Za-z0-9_.-]"),
            );
            n
        }
        Some(n) => n,
    };
    let endpoint = match r.endpoint.as_deref() {
        None => {
            ctx.err(path, "inference route has no `endpoint`");
            None
        }
        Some(e) => match parse_endpoint(e) {
            Ok(ep) => Some(ep),
            Err(m) => {
                ctx.err(&at("endpoint"), m);
                None
            }
        },
    };
    let mut protocols = Vec::with_capacity(r.protocols.len());
    if r.protocols.is_empty() {
        ctx.err(path, "inference route needs `protocols` (a non-empty list)");
    }
    for (j, p) in r.protocols.iter().enumerate() {
        match InferenceProtocol::parse(p) {
            Some(v) if protocols.contains(&v) => {
                ctx.err(
                    &join_idx(&at("protocols"), j),
                    format!("duplicate protocol `{p}`"),
                );
            }
            Some(v) => protocols.push(v),
            None => {
                let known: Vec<&str> = InferenceProtocol::ALL.iter().map(|p| p.as_str()).collect();
                ctx.err(
                    &join_idx(&at("protocols"), j),
                    format!(
                        "unknown protocol `{p}`; expected one of {}",
                        known.join(", ")
                    ),
                );
            }
        }
    }
    let model = match r.model.as_deref() {
        Some("") => {
            ctx.err(&at("model"), "`model` must not be empty");
            None
        }
        Some(m) if m.len() > 256 || m.chars().any(char::is_control) => {
            ctx.err(
                &at("model"),
                "`model` must be at most 256 printable characters",
            );
            None
        }
        other => other.map(Arc::from),
    };
    let api_key = match &r.api_key {
        None => {
            ctx.err(path, "inference route has no `api_key`");
            None
        }
        Some(s) => read_secret(ctx, &at("api_key"), s, secrets),
    };
    let auth_style = match r.auth_style.as_deref() {
        None | Some("bearer") => AuthStyle::Bearer,
        Some("x-api-key") => AuthStyle::XApiKey,
        Some(s) => match s.strip_prefix("header:") {
            Some(h) if is_header_name(h) && !reserved_header(h) => {
                AuthStyle::Header(Arc::from(h.to_ascii_lowercase()))
            }
            _ => {
                ctx.err(
                    &at("auth_style"),
                    format!("unknown auth_style `{s}`; expected bearer, x-api-key or header:NAME (a header sluice does not set itself)"),
                );
                AuthStyle::Bearer
            }
        },
    };
    let timeout = match &r.timeout {
        None => DEFAULT_TIMEOUT,
        Some(v) => match parse_timeout(v) {
            Ok(t) => t,
            Err(m) => {
                ctx.err(&at("timeout"), m);
                DEFAULT_TIMEOUT
            }
        },
    };
    if r.passthrough_headers.len() > MAX_PASSTHROUGH {
        ctx.err(
            &at("passthrough_headers"),
            format!("at most {MAX_PASSTHROUGH} passthrough headers are allowed"),
        );
    }
    let mut passthrough = Vec::with_capacity(r.passthrough_headers.len());
    for (j, h) in r.passthrough_headers.iter().enumerate() {
        let lower = h.to_ascii_lowercase();
        if !is_header_name(h) {
            ctx.err(
                &join_idx(&at("passthrough_headers"), j),
                format!("`{h}` is not a header name"),
            );
        } else if reserved_header(&lower) {
            ctx.err(
                &join_idx(&at("passthrough_headers"), j),
                format!("`{h}` is set by sluice and cannot be passed through"),
            );
        } else {
            passthrough.push(Arc::from(lower));
        }
    }
    if ctx.errors.len() != before {
        return None;
    }
    Some(InferenceRoute {
        name: Arc::from(name),
        endpoint: endpoint?,
        protocols: protocols.into(),
        model,
        api_key: api_key?,
        auth_style,
        timeout,
        passthrough_headers: passthrough.into(),
    })
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// RFC 9110 `token` (header field names).
fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Headers sluice sets or removes itself on an inference request: framing,
/// hop-by-hop, host, and the caller's credentials.
pub(crate) fn reserved_header(lower: &str) -> bool {
    matches!(
        lower.to_ascii_lowercase().as_str(),
        "host"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "upgrade"
            | "authorization"
            | "x-api-key"
            | "cookie"
    )
}

/// `60s`, `500ms`, `2m`, or a bare number of seconds; 1 ms to 1 h.
fn parse_timeout(v: &serde_yaml::Value) -> Result<Duration, String> {
    let d = match v {
        serde_yaml::Value::Number(n) => n
            .as_u64()
            .map(Duration::from_secs)
            .ok_or_else(|| format!("timeout `{n}` must be a whole number of seconds"))?,
        serde_yaml::Value::String(s) => {
            let (digits, unit) = s
                .find(|c: char| !c.is_ascii_digit())
                .map_or((s.as_str(), "s"), |i| s.split_at(i));
            let n: u64 = digits
                .parse()
                .map_err(|_| format!("timeout `{s}` must look like 60s, 500ms or 2m"))?;
            match unit {
                "ms" => Duration::from_millis(n),
                "s" => Duration::from_secs(n),
                "m" => Duration::from_secs(n.saturating_mul(60)),
                _ => return Err(format!("timeout `{s}` must look like 60s, 500ms or 2m")),
            }
        }
        _ => return Err("timeout must be a duration such as 60s".into()),
    };
    if d.is_zero() || d > MAX_TIMEOUT {
        return Err(format!(
            "timeout must be between 1ms and {}s",
            MAX_TIMEOUT.as_secs()
        ));
    }
    Ok(d)
}

/// Parses a backend base URL (see [`crate::url`]), which also has no
/// query, is not `inference.local` and has a normalized path.
fn parse_endpoint(url: &str) -> Result<InferenceEndpoint, String> {
    let u = crate::url::parse_http_url("endpoint", url)?;
    if u.rest.contains('?') {
        return Err(format!(
            "endpoint `{url}` must not have a query or fragment"
        ));
    }
    if u.host.eq_ignore_ascii_case("inference.local") {
        return Err(format!(
            "endpoint `{url}` must not point at inference.local itself"
        ));
    }
    let path = u.rest;
    if path.contains("/../") || path.ends_with("/..") || path.contains("/./") {
        return Err(format!("endpoint `{url}` must have a normalized path"));
    }
    Ok(InferenceEndpoint {
        https: u.https,
        host: Arc::from(u.host.to_ascii_lowercase()),
        port: u.port.unwrap_or(if u.https { 443 } else { 80 }),
        base_path: Arc::from(path.trim_end_matches('/')),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let ok = [
            ("https://llm.internal/v1", true, "llm.internal", 443, "/v1"),
            (
                "https://LLM.internal:8443/v1/",
                true,
                "llm.internal",
                8443,
                "/v1",
            ),
            ("http://127.0.0.1:9000", false, "127.0.0.1", 9000, ""),
            ("http://localhost/api", false, "localhost", 80, "/api"),
            ("https://[::1]:444/x", true, "::1", 444, "/x"),
        ];
        for (url, https, host, port, base) in ok {
            let e = parse_endpoint(url).unwrap_or_else(|m| panic!("{url}: {m}"));
            assert_eq!(
                (e.https, &*e.host, e.port, &*e.base_path),
                (https, host, port, base),
                "{url}"
            );
        }
        let bad = [
            ("ftp://x", "absolute http(s)"),
            ("http://llm.internal/v1", "must use https"),
            ("https://u:p@llm.internal", "user information"),
            ("https://llm.internal/v1?x=1", "query"),
            ("https://llm.internal:0", "invalid port"),
            ("https://llm.internal:99999", "invalid port"),
            ("https://", "invalid host"),
            ("https://bad host/", "whitespace"),
            ("https://inference.local/v1", "inference.local itself"),
            ("https://llm.internal/a/../b", "normalized"),
        ];
        for (url, want) in bad {
            let m = parse_endpoint(url).expect_err(url);
            assert!(m.contains(want), "{url}: {m}");
        }
    }

    #[test]
    fn timeouts() {
        let v = |s: &str| serde_yaml::from_str::<serde_yaml::Value>(s).expect("yaml");
        assert_eq!(parse_timeout(&v("60s")), Ok(Duration::from_secs(60)));
        assert_eq!(parse_timeout(&v("500ms")), Ok(Duration::from_millis(500)));
        assert_eq!(parse_timeout(&v("2m")), Ok(Duration::from_secs(120)));
        assert_eq!(parse_timeout(&v("30")), Ok(Duration::from_secs(30)));
        for bad in ["0s", "2h", "x", "-1", "1.5s", "7200s"] {
            assert!(parse_timeout(&v(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn reserved_headers_refused() {
        for h in ["Authorization", "x-api-key", "Host", "content-length"] {
            assert!(reserved_header(h), "{h}");
        }
        assert!(!reserved_header("anthropic-version"));
    }
}
