//! OAuth2 token grants (facts §6.7): the proxy fetches an access token from
//! a provider's token endpoint (`client_credentials` with a client secret,
//! or with a JWT client assertion), caches it per grant configuration and
//! hands relays the header to inject.
//!
//! The HTTP/1.1 exchange is written by hand: one `POST`, `Connection:
//! close`, a bounded response (16 KiB head, 64 KiB body), no redirects, the
//! whole exchange under the grant's timeout. The endpoint is operator
//! configuration, so it is dialed through
//! [`UpstreamConnector::operator_configured`] without the SSRF rules.
//! Nothing here logs or reports a secret, an assertion, a token or a
//! response body.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use sluice_policy::{GrantKind, Provider, Secret, TokenGrant, TokenStyle};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::destination::{Resolver, UpstreamConnector};
use crate::egress::{Host, Target};
use crate::metrics::{GrantOutcome, Metrics};
use crate::relay::http::{read_head, HeadError, HeadLimits};
use crate::relay::tls::{UpstreamTls, UpstreamTlsError};

#[cfg(test)]
#[path = "token_grant_tests.rs"]
mod tests;

/// Most cached grant configurations kept at once.
const MAX_ENTRIES: usize = 1024;
/// Largest response head accepted from a token endpoint.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest response body accepted (after chunked decoding).
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 1024;
/// Largest trailer section accepted after the last chunk.
const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Longest access token accepted.
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Most interim (1xx) responses skipped before the final one.
const MAX_INTERIM: usize = 4;
/// `expires_in` is capped at this many seconds.
const MAX_LIFETIME_SECS: u64 = 3600;
/// Lifetime assumed when the response has no `expires_in`.
const DEFAULT_LIFETIME_SECS: u64 = 300;
/// A token is dropped this long before the endpoint said it expires.
const EXPIRY_SKEW_SECS: u64 = 30;

/// Why no token header could be produced. Messages name the endpoint's
/// `host:port` and a status or short reason; never a secret, an assertion,
/// a token, the endpoint's path/query or any byte of a response body.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum TokenGrantError {
    /// The provider has no `token_grant`.
    #[error("provider {0} has no token grant")]
    NotConfigured(Arc<str>),
    /// The configured token endpoint URL is unusable.
    #[error("invalid token endpoint: {0}")]
    Endpoint(&'static str),
    /// The endpoint's host name did not resolve.
    #[error("token endpoint: {0}")]
    Resolve(String),
    /// No address of the endpoint accepted a connection.
    #[error("cannot connect to token endpoint {target}: {detail}")]
    Connect { target: String, detail: String },
    /// The TLS handshake with the endpoint failed.
    #[error("token endpoint {target}: {detail}")]
    Tls { target: String, detail: String },
    /// The exchange did not finish within the grant's timeout.
    #[error("token endpoint {target} did not answer within {timeout:?}")]
    Timeout { target: String, timeout: Duration },
    /// Reading from or writing to the endpoint failed.
    #[error("token endpoint {target}: i/o error: {detail}")]
    Io { target: String, detail: String },
    /// A 3xx answer (redirects are never followed).
    #[error(
        "token endpoint {target} answered a redirect (status {status}); redirects are not followed"
    )]
    Redirect { target: String, status: u16 },
    /// Any other non-2xx answer.
    #[error("token endpoint {target} answered status {status}")]
    Status { target: String, status: u16 },
    /// The response is not a well-formed token response.
    #[error("token endpoint {target} sent an invalid response: {detail}")]
    Response {
        target: String,
        detail: &'static str,
    },
}

/// Fetches and caches OAuth2 access tokens per provider; shared by all
/// connections (`Send + Sync`).
pub(crate) struct TokenGrants {
    resolver: Resolver,
    tls: Arc<UpstreamTls>,
    slots: Mutex<HashMap<CacheKey, Arc<Slot>>>,
    fetches: AtomicU64,
    metrics: Metrics,
}

impl std::fmt::Debug for TokenGrants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenGrants")
            .field("entries", &self.map().len())
            .field("fetches", &self.fetches())
            .finish_non_exhaustive()
    }
}

impl TokenGrants {
    /// `resolver` resolves token endpoint names (`--add-host` pins first);
    /// `tls` verifies https endpoints.
    pub(crate) fn new(resolver: Resolver, tls: Arc<UpstreamTls>) -> Self {
        Self {
            resolver,
            tls,
            slots: Mutex::new(HashMap::new()),
            fetches: AtomicU64::new(0),
            metrics: Metrics::disabled(),
        }
    }

    /// Counting each fetch (a cache miss) in `metrics`.
    pub(crate) fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The header (name, value) to inject for `provider`, from cache or a
    /// fresh grant. The value is the full header value (`Bearer <token>` or
    /// the raw token). Concurrent callers for the same grant configuration
    /// share one fetch; callers that waited on a fetch that failed get its
    /// error, later callers try again (failures are not cached).
    ///
    /// # Errors
    /// [`TokenGrantError`] when the provider has no grant or the token
    /// endpoint did not produce a usable token.
    pub(crate) async fn header(
        &self,
        provider: &Provider,
    ) -> Result<(Arc<str>, Secret), TokenGrantError> {
        let Some(grant) = provider.token_grant.as_deref() else {
            return Err(TokenGrantError::NotConfigured(provider.key.clone()));
        };
        let slot = self.slot(CacheKey::new(&provider.key, grant));
        let seen = slot.failures.load(Ordering::Acquire);
        let mut state = slot.state.lock().await;
        if let Some(cached) = state.token.as_ref().filter(|t| t.expires > Instant::now()) {
            return Ok(header_for(grant, &cached.token));
        }
        if let Some((n, e)) = &state.failure {
            if *n > seen {
                // We queued behind a fetch that failed: share its outcome.
                return Err(e.clone());
            }
        }
        let fetched = self.fetch(grant).await;
        self.metrics.token_grant(if fetched.is_ok() {
            GrantOutcome::Ok
        } else {
            GrantOutcome::Failed
        });
        match fetched {
            Ok(fetched) => {
                tracing::debug!(
                    provider = %provider.key,
                    ttl_secs = fetched.ttl.as_secs(),
                    "token grant succeeded"
                );
                let header = header_for(grant, &fetched.token);
                state.token = Some(CachedToken {
                    token: fetched.token,
                    expires: Instant::now() + fetched.ttl,
                });
                state.failure = None;
                Ok(header)
            }
            Err(e) => {
                tracing::debug!(provider = %provider.key, error = %e, "token grant failed");
                state.token = None;
                let n = slot.failures.fetch_add(1, Ordering::AcqRel) + 1;
                state.failure = Some((n, e.clone()));
                Err(e)
            }
        }
    }

    /// Number of token endpoint calls made (for tests/metrics).
    pub(crate) fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn map(&self) -> MutexGuard<'_, HashMap<CacheKey, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The slot for `key`, created if missing. When the map is full, slots
    /// that are idle and hold no valid token go first, then the idle slot
    /// whose token expires soonest; if every slot is busy the new slot is
    /// used without being stored.
    fn slot(&self, key: CacheKey) -> Arc<Slot> {
        let mut map = self.map();
        if let Some(slot) = map.get(&key) {
            return slot.clone();
        }
        if map.len() >= MAX_ENTRIES {
            let now = Instant::now();
            map.retain(|_, s| Arc::strong_count(s) > 1 || s.valid_until().is_some_and(|t| t > now));
        }
        if map.len() >= MAX_ENTRIES {
            let victim = map
                .iter()
                .filter(|(_, s)| Arc::strong_count(s) == 1)
                .min_by_key(|(_, s)| s.valid_until())
                .map(|(k, _)| k.clone());
            if let Some(k) = victim {
                map.remove(&k);
            }
        }
        let slot = Arc::new(Slot::default());
        if map.len() < MAX_ENTRIES {
            map.insert(key, slot.clone());
        }
        slot
    }

    /// One token request, bounded by `grant.timeout` from resolution to
    /// the last body byte.
    async fn fetch(&self, grant: &TokenGrant) -> Result<Fetched, TokenGrantError> {
        let endpoint = Endpoint::parse(&grant.token_endpoint)?;
        let body = form_body(grant);
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let timeout = grant.timeout;
        match tokio::time::timeout(timeout, self.exchange(&endpoint, &body, timeout)).await {
            Ok(result) => result,
            Err(_) => Err(TokenGrantError::Timeout {
                target: endpoint.target.to_string(),
                timeout,
            }),
        }
    }

    async fn exchange(
        &self,
        endpoint: &Endpoint,
        body: &str,
        timeout: Duration,
    ) -> Result<Fetched, TokenGrantError> {
        let target = endpoint.target.to_string();
        let addrs = self.addrs(endpoint).await?;
        let connector = UpstreamConnector::operator_configured(endpoint.target.clone(), addrs);
        let tcp = connector
            .connect(timeout)
            .await
            .map_err(|e| TokenGrantError::Connect {
                target: target.clone(),
                detail: e.to_string(),
            })?;
        let request = endpoint.request(body);
        let raw = if endpoint.https {
            let tls = self
                .tls
                .connect(&endpoint.target.host, tcp, timeout)
                .await
                .map_err(|e| match e {
                    UpstreamTlsError::Timeout => TokenGrantError::Timeout {
                        target: target.clone(),
                        timeout,
                    },
                    other => TokenGrantError::Tls {
                        target: target.clone(),
                        detail: other.to_string(),
                    },
                })?;
            round_trip(tls, &request, timeout).await
        } else {
            round_trip(tcp, &request, timeout).await
        };
        let json = raw.map_err(|e| e.into_error(&target, timeout))?;
        parse_token(&json).map_err(|detail| TokenGrantError::Response { target, detail })
    }

    /// The addresses to dial: the IP literal, or the resolver's answer
    /// (`--add-host` pins first). Plain http must stay on loopback.
    async fn addrs(&self, endpoint: &Endpoint) -> Result<Vec<SocketAddr>, TokenGrantError> {
        let port = endpoint.target.port;
        let ips = match &endpoint.target.host {
            Host::Ip(ip) => vec![*ip],
            Host::Name(name) => self
                .resolver
                .resolve(name, port)
                .await
                .map_err(|e| TokenGrantError::Resolve(e.to_string()))?,
        };
        if !endpoint.https && !ips.iter().all(|ip| is_loopback(*ip)) {
            return Err(TokenGrantError::Endpoint(
                "http token endpoint resolves to a non-loopback address",
            ));
        }
        Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }
}

/// What a cached token is keyed by: a reload that changes any of these
/// gets a fresh token instead of one issued for the old configuration.
#[derive(Clone, PartialEq, Eq)]
struct CacheKey {
    provider: Arc<str>,
    endpoint: Arc<str>,
    grant: GrantKind,
    client_id: Option<Secret>,
    assertion_type: Arc<str>,
    scopes: Arc<[Arc<str>]>,
    audience: Option<Arc<str>>,
}

impl CacheKey {
    fn new(provider: &Arc<str>, grant: &TokenGrant) -> Self {
        Self {
            provider: provider.clone(),
            endpoint: grant.token_endpoint.clone(),
            grant: grant.grant,
            client_id: grant.client_id.clone(),
            assertion_type: grant.assertion_type.clone(),
            scopes: grant.scopes.clone(),
            audience: grant.audience.clone(),
        }
    }
}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.provider.hash(state);
        self.endpoint.hash(state);
        self.grant.hash(state);
        self.client_id.as_ref().map(Secret::expose).hash(state);
        self.assertion_type.hash(state);
        self.scopes.hash(state);
        self.audience.hash(state);
    }
}

/// One grant configuration's cache entry; its async mutex is the
/// single-flight lock (held across the fetch).
#[derive(Default)]
struct Slot {
    state: tokio::sync::Mutex<SlotState>,
    /// Failed fetches so far; read before queueing on `state`.
    failures: AtomicU64,
}

impl Slot {
    /// The cached token's expiry, `None` when busy or empty.
    fn valid_until(&self) -> Option<Instant> {
        self.state
            .try_lock()
            .ok()
            .and_then(|s| s.token.as_ref().map(|t| t.expires))
    }
}

#[derive(Default)]
struct SlotState {
    token: Option<CachedToken>,
    /// The last failure and its sequence number (`failures` after it).
    failure: Option<(u64, TokenGrantError)>,
}

struct CachedToken {
    token: Secret,
    expires: Instant,
}

/// A freshly granted token and how long to keep it.
struct Fetched {
    token: Secret,
    ttl: Duration,
}

fn header_for(grant: &TokenGrant, token: &Secret) -> (Arc<str>, Secret) {
    let value = match grant.style {
        TokenStyle::Bearer => Secret::new(format!("Bearer {}", token.expose())),
        TokenStyle::Raw => token.clone(),
    };
    (grant.header.clone(), value)
}

/// How long a token is kept: `min(expires_in, 3600)` (300 when absent)
/// minus 30 s of skew, at least 1 s.
fn cache_ttl(expires_in: Option<u64>) -> Duration {
    let lifetime = expires_in.map_or(DEFAULT_LIFETIME_SECS, |e| e.min(MAX_LIFETIME_SECS));
    Duration::from_secs(lifetime.saturating_sub(EXPIRY_SKEW_SECS).max(1))
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// A parsed token endpoint URL.
#[derive(Debug, PartialEq, Eq)]
struct Endpoint {
    https: bool,
    target: Target,
    /// `Host` header value (port only when not the scheme default).
    host_header: String,
    /// Origin-form request target: path and query, fragment dropped.
    path: String,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Self, TokenGrantError> {
        let bad = TokenGrantError::Endpoint;
        if url.bytes().any(|b| b <= b' ' || b >= 0x7f) {
            return Err(bad("contains whitespace, control or non-ASCII characters"));
        }
        let (https, rest) = if let Some(rest) = strip_prefix_ignore_case(url, "https://") {
            (true, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(url, "http://") {
            (false, rest)
        } else {
            return Err(bad("not an absolute http(s) URL"));
        };
        let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        let default_port = if https { 443 } else { 80 };
        let target = Target::parse_authority_with_default(authority, default_port)
            .map_err(|_| bad("invalid host or port"))?;
        if !https {
            let local = match &target.host {
                Host::Ip(ip) => is_loopback(*ip),
                Host::Name(name) => &**name == "localhost",
            };
            if !local {
                return Err(bad("plain http is only allowed for loopback hosts"));
            }
        }
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        let host_header = if target.port == default_port {
            target.host.to_string()
        } else {
            target.to_string()
        };
        Ok(Self {
            https,
            target,
            host_header,
            path,
        })
    }

    /// The complete request (head and form body).
    fn request(&self, body: &str) -> Vec<u8> {
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Accept: application/json\r\nUser-Agent: sluice\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            self.path,
            self.host_header,
            body.len()
        );
        let mut out = Vec::with_capacity(head.len() + body.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(body.as_bytes());
        out
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// The `application/x-www-form-urlencoded` token request body.
fn form_body(grant: &TokenGrant) -> String {
    let mut form = Form::default();
    form.add("grant_type", "client_credentials");
    match grant.grant {
        GrantKind::ClientCredentials => {
            if let Some(id) = &grant.client_id {
                form.add("client_id", id.expose());
            }
            if let Some(secret) = &grant.client_secret {
                form.add("client_secret", secret.expose());
            }
        }
        GrantKind::JwtBearer => {
            if let Some(id) = &grant.client_id {
                form.add("client_id", id.expose());
            }
            form.add("client_assertion_type", &grant.assertion_type);
            if let Some(assertion) = &grant.assertion {
                form.add("client_assertion", assertion.expose());
            }
        }
    }
    if !grant.scopes.is_empty() {
        let scopes: Vec<&str> = grant.scopes.iter().map(|s| &**s).collect();
        form.add("scope", &scopes.join(" "));
    }
    if let Some(audience) = &grant.audience {
        form.add("audience", audience);
    }
    form.0
}

#[derive(Default)]
struct Form(String);

impl Form {
    fn add(&mut self, name: &str, value: &str) {
        if !self.0.is_empty() {
            self.0.push('&');
        }
        form_encode(&mut self.0, name);
        self.0.push('=');
        form_encode(&mut self.0, value);
    }
}

/// WHATWG `application/x-www-form-urlencoded` byte serializer.
fn form_encode(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
    }
}

/// Why the HTTP exchange failed (turned into a [`TokenGrantError`] with
/// the endpoint named).
#[derive(Debug)]
enum ExchangeError {
    Io(io::Error),
    Timeout,
    Redirect(u16),
    Status(u16),
    Malformed(&'static str),
}

impl ExchangeError {
    fn into_error(self, target: &str, timeout: Duration) -> TokenGrantError {
        let target = target.to_owned();
        match self {
            Self::Io(e) => TokenGrantError::Io {
                target,
                detail: e.to_string(),
            },
            Self::Timeout => TokenGrantError::Timeout { target, timeout },
            Self::Redirect(status) => TokenGrantError::Redirect { target, status },
            Self::Status(status) => TokenGrantError::Status { target, status },
            Self::Malformed(detail) => TokenGrantError::Response { target, detail },
        }
    }
}

impl From<io::Error> for ExchangeError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// How the response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// Write `request`, read one response; returns the body of a 2xx answer.
async fn round_trip<S>(
    mut io: S,
    request: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, ExchangeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    io.write_all(request).await?;
    io.flush().await?;
    let mut buf = BytesMut::with_capacity(4096);
    let limits = HeadLimits {
        max_bytes: MAX_HEAD_BYTES,
        timeout,
    };
    let mut interim = 0usize;
    let (status, framing) = loop {
        let n = read_head(&mut io, &mut buf, limits)
            .await
            .map_err(|e| match e {
                HeadError::Timeout => ExchangeError::Timeout,
                HeadError::Io(e) => ExchangeError::Io(e),
                HeadError::Closed | HeadError::Truncated => {
                    ExchangeError::Malformed("connection closed before a complete response head")
                }
                HeadError::TooLarge(_) => ExchangeError::Malformed("response head too large"),
                _ => ExchangeError::Malformed("malformed response head"),
            })?;
        let head = buf.split_to(n);
        let (status, framing) = parse_head(&head)?;
        if (100..200).contains(&status) && status != 101 {
            interim += 1;
            if interim > MAX_INTERIM {
                return Err(ExchangeError::Malformed("too many interim responses"));
            }
            continue;
        }
        break (status, framing);
    };
    if (300..400).contains(&status) {
        return Err(ExchangeError::Redirect(status));
    }
    if !(200..300).contains(&status) {
        return Err(ExchangeError::Status(status));
    }
    let mut reader = BodyReader { io, buf };
    match framing {
        None => Ok(Vec::new()),
        Some(Framing::Length(n)) => reader.exact(n).await,
        Some(Framing::UntilClose) => reader.until_close().await,
        Some(Framing::Chunked) => reader.chunked().await,
    }
}

/// Status and body framing of a response head (`None` framing = no body).
fn parse_head(head: &[u8]) -> Result<(u16, Option<Framing>), ExchangeError> {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut slots);
    match resp.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) | Err(_) => {
            return Err(ExchangeError::Malformed("malformed response head"));
        }
    }
    let status = resp.code.unwrap_or(0);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = h.value.trim_ascii();
            let n = std::str::from_utf8(v)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(ExchangeError::Malformed("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(ExchangeError::Malformed("conflicting Content-Length"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if chunked || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(ExchangeError::Malformed("unsupported Transfer-Encoding"));
            }
            chunked = true;
        }
    }
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok((status, None));
    }
    let framing = match (chunked, length) {
        (true, Some(_)) => {
            return Err(ExchangeError::Malformed(
                "both Transfer-Encoding and Content-Length",
            ))
        }
        (true, None) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::UntilClose,
    };
    Ok((status, Some(framing)))
}

/// Reads a bounded response body; `buf` holds bytes already read past the head.
struct BodyReader<S> {
    io: S,
    buf: BytesMut,
}

impl<S: AsyncRead + Unpin> BodyReader<S> {
    /// Read more bytes into `buf`; `Ok(0)` at EOF.
    async fn more(&mut self) -> io::Result<usize> {
        self.buf.reserve(4096);
        self.io.read_buf(&mut self.buf).await
    }

    /// Read until `buf` holds `n` bytes; EOF first is a truncation.
    async fn fill(&mut self, n: usize) -> Result<(), ExchangeError> {
        while self.buf.len() < n {
            if self.more().await? == 0 {
                return Err(ExchangeError::Malformed("response body truncated"));
            }
        }
        Ok(())
    }

    async fn exact(&mut self, n: u64) -> Result<Vec<u8>, ExchangeError> {
        let n = usize::try_from(n)
            .ok()
            .filter(|n| *n <= MAX_BODY_BYTES)
            .ok_or(ExchangeError::Malformed("response body too large"))?;
        self.fill(n).await?;
        Ok(self.buf.split_to(n).to_vec())
    }

    async fn until_close(&mut self) -> Result<Vec<u8>, ExchangeError> {
        loop {
            if self.buf.len() > MAX_BODY_BYTES {
                return Err(ExchangeError::Malformed("response body too large"));
            }
            match self.more().await {
                Ok(0) => break,
                Ok(_) => {}
                // TLS peers that close without close_notify: the body ends here.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(ExchangeError::Io(e)),
            }
        }
        Ok(self.buf.split().to_vec())
    }

    /// One CRLF-terminated line (without the CRLF), at most `max` bytes.
    async fn line(&mut self, max: usize) -> Result<BytesMut, ExchangeError> {
        let mut scanned = 0usize;
        loop {
            if let Some(i) = self.buf[scanned..].windows(2).position(|w| w == b"\r\n") {
                let end = scanned + i;
                if end > max {
                    break;
                }
                let line = self.buf.split_to(end);
                self.buf.advance(2);
                return Ok(line);
            }
            scanned = self.buf.len().saturating_sub(1);
            if scanned > max {
                break;
            }
            if self.more().await? == 0 {
                return Err(ExchangeError::Malformed("chunked body truncated"));
            }
        }
        Err(ExchangeError::Malformed("chunked body line too long"))
    }

    async fn chunked(&mut self) -> Result<Vec<u8>, ExchangeError> {
        let mut body = Vec::new();
        loop {
            let line = self.line(MAX_CHUNK_LINE).await?;
            let size = chunk_size(&line).ok_or(ExchangeError::Malformed("invalid chunk size"))?;
            if size == 0 {
                break;
            }
            if size > (MAX_BODY_BYTES - body.len()) as u64 {
                return Err(ExchangeError::Malformed("response body too large"));
            }
            let size = size as usize;
            self.fill(size + 2).await?;
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(ExchangeError::Malformed("chunk not followed by CRLF"));
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.advance(size + 2);
        }
        let mut trailers = 0usize;
        loop {
            let line = self.line(MAX_TRAILER_BYTES - trailers).await?;
            if line.is_empty() {
                return Ok(body);
            }
            trailers += line.len() + 2;
            if trailers >= MAX_TRAILER_BYTES {
                return Err(ExchangeError::Malformed("chunked trailers too large"));
            }
        }
    }
}

/// The hex size of a chunk-size line (`size[;ext...]`, optional blanks).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let size = line.split(|&b| b == b';').next()?.trim_ascii();
    if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(size).ok()?, 16).ok()
}

/// Extract and check `access_token` and `expires_in` from a JSON body.
fn parse_token(body: &[u8]) -> Result<Fetched, &'static str> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| "body is not valid JSON")?;
    let obj = value.as_object().ok_or("body is not a JSON object")?;
    let token = match obj.get("access_token") {
        Some(serde_json::Value::String(s)) => s,
        Some(_) => return Err("access_token is not a string"),
        None => return Err("no access_token"),
    };
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err("access_token is empty or too long");
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("access_token has characters not allowed in a header token");
    }
    let expires_in = match obj.get("expires_in") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => Some(seconds(n.as_f64())?),
        // Some servers send the number as a string.
        Some(serde_json::Value::String(s)) => Some(seconds(s.trim().parse::<f64>().ok())?),
        Some(_) => return Err("expires_in is not a number"),
    };
    Ok(Fetched {
        token: Secret::new(token.as_str()),
        ttl: cache_ttl(expires_in),
    })
}

/// Whole seconds of a JSON number (negative counts as 0).
fn seconds(n: Option<f64>) -> Result<u64, &'static str> {
    match n {
        Some(f) if f.is_finite() => {
            // Saturating float-to-int cast; fractions are dropped.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let secs = f.max(0.0) as u64;
            Ok(secs)
        }
        _ => Err("expires_in is not a number"),
    }
}
