//! Token grant tests against real token endpoints on 127.0.0.1:0 (plain
//! and TLS with a test CA). Expiry and timeouts run on tokio's paused clock
//! (`start_paused`): no test waits for wall-clock time to pass.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_policy::{
    GrantKind, Provider, ProviderId, Secret, TokenGrant, TokenStyle, DEFAULT_CLIENT_ASSERTION_TYPE,
};
use sluice_test_support::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::{advance, Instant};
use tokio_rustls::TlsAcceptor;

use super::*;
use crate::destination::Resolver;
use crate::relay::tls::{LeafCache, SandboxCa, UpstreamTls, CA_CERT_FILE};

/// The client secret; no error message may contain it.
const SECRET: &str = "s3cr+t&x=y";
const ASSERTION: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";

/// What the test token endpoint answers.
#[derive(Clone, Debug)]
enum Reply {
    /// 200 with `{"access_token": token, "expires_in": n}`.
    Token(&'static str, Option<u64>),
    /// 200, chunked, token in two chunks.
    Chunked(&'static str),
    /// The given bytes verbatim, then close.
    Raw(String),
    /// Read the request, never answer.
    Hang,
}

/// A tiny token endpoint: counts calls, records requests, answers `reply`
/// after `delay`.
struct TokenServer {
    addr: SocketAddr,
    calls: Arc<AtomicU64>,
    requests: Arc<Mutex<Vec<(String, String)>>>,
    reply: Arc<Mutex<Reply>>,
    delay: Arc<Mutex<Duration>>,
}

impl TokenServer {
    async fn start(reply: Reply) -> Self {
        Self::start_with(reply, None).await
    }

    async fn start_with(reply: Reply, tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let ep = Self {
            addr: listener.local_addr().expect("addr"),
            calls: Arc::default(),
            requests: Arc::default(),
            reply: Arc::new(Mutex::new(reply)),
            delay: Arc::default(),
        };
        let shared = (
            ep.calls.clone(),
            ep.requests.clone(),
            ep.reply.clone(),
            ep.delay.clone(),
        );
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let shared = shared.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                serve(stream, shared).await;
                            }
                        }
                        None => serve(tcp, shared).await,
                    }
                });
            }
        });
        ep
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    fn set(&self, reply: Reply) {
        *self.reply.lock().unwrap() = reply;
    }

    fn last_request(&self) -> (String, String) {
        self.requests
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request")
    }
}

type Shared = (
    Arc<AtomicU64>,
    Arc<Mutex<Vec<(String, String)>>>,
    Arc<Mutex<Reply>>,
    Arc<Mutex<Duration>>,
);

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    (calls, requests, reply, delay): Shared,
) {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 1024];
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 1024];
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    requests.lock().unwrap().push((head, body));
    calls.fetch_add(1, Ordering::SeqCst);
    let wait = *delay.lock().unwrap();
    tokio::time::sleep(wait).await;
    let reply = reply.lock().unwrap().clone();
    let out = match reply {
        Reply::Token(token, expires_in) => {
            let json = match expires_in {
                Some(n) => format!(
                    r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":{n}}}"#
                ),
                None => format!(r#"{{"access_token":"{token}","token_type":"Bearer"}}"#),
            };
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
                json.len()
            )
        }
        Reply::Chunked(token) => {
            let json = format!(r#"{{"access_token":"{token}"}}"#);
            let (a, b) = json.split_at(json.len() / 2);
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x};ext=1\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\nX-Trailer: 1\r\n\r\n",
                a.len(),
                b.len()
            )
        }
        Reply::Raw(raw) => raw,
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return;
        }
    };
    let _ = io.write_all(out.as_bytes()).await;
    let _ = io.flush().await;
    let _ = io.shutdown().await;
}

fn grants() -> TokenGrants {
    grants_with(HashMap::new(), &[])
}

fn grants_with(pinned: HashMap<String, Vec<IpAddr>>, ca_files: &[PathBuf]) -> TokenGrants {
    let resolver = Resolver::new(pinned, Duration::from_secs(2), false);
    let tls = UpstreamTls::new(ca_files).expect("upstream tls");
    TokenGrants::new(resolver, Arc::new(tls))
}

fn grant(url: &str) -> TokenGrant {
    TokenGrant {
        token_endpoint: url.into(),
        grant: GrantKind::ClientCredentials,
        client_id: Some(Secret::new("client-1")),
        client_secret: Some(Secret::new(SECRET)),
        assertion: None,
        assertion_type: DEFAULT_CLIENT_ASSERTION_TYPE.into(),
        scopes: Arc::from([]),
        audience: None,
        header: "Authorization".into(),
        style: TokenStyle::Bearer,
        timeout: Duration::from_secs(5),
    }
}

fn provider(grant: TokenGrant) -> Provider {
    Provider {
        id: ProviderId(0),
        key: "idp".into(),
        credentials: Arc::from([]),
        endpoints: Arc::from([]),
        token_grant: Some(Arc::new(grant)),
        metadata: None,
    }
}

/// Asserts the error mentions neither the client secret nor the assertion.
fn assert_no_secret(err: &TokenGrantError) {
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(SECRET), "secret leaked: {text}");
        assert!(!text.contains("s3cr"), "secret leaked: {text}");
        assert!(!text.contains(ASSERTION), "assertion leaked: {text}");
    }
}

#[tokio::test]
async fn first_call_fetches_second_reuses() {
    let ep = TokenServer::start(Reply::Token("tok-1", Some(3600))).await;
    let mut g = grant(&ep.url("/oauth/token?tenant=a"));
    g.scopes = Arc::from([Arc::from("read"), Arc::from("write:all")]);
    g.audience = Some("https://api.example".into());
    let p = provider(g);
    let grants = grants();

    let (name, value) = grants.header(&p).await.expect("token");
    assert_eq!(&*name, "Authorization");
    assert_eq!(value.expose(), "Bearer tok-1");
    assert_eq!((ep.calls(), grants.fetches()), (1, 1));

    let (head, body) = ep.last_request();
    assert!(
        head.starts_with("POST /oauth/token?tenant=a HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\nHost: {}\r\n", ep.addr)),
        "{head}"
    );
    assert!(head.contains("\r\nContent-Type: application/x-www-form-urlencoded\r\n"));
    assert!(head.contains("\r\nConnection: close\r\n"));
    assert_eq!(
        body,
        "grant_type=client_credentials&client_id=client-1&client_secret=s3cr%2Bt%26x%3Dy\
         &scope=read+write%3Aall&audience=https%3A%2F%2Fapi.example"
    );

    let (_, again) = grants.header(&p).await.expect("cached");
    assert_eq!(again.expose(), "Bearer tok-1");
    assert_eq!((ep.calls(), grants.fetches()), (1, 1));
}

#[tokio::test]
async fn jwt_bearer_body_and_raw_style() {
    let ep = TokenServer::start(Reply::Token("raw-tok", None)).await;
    let mut g = grant(&ep.url("/token"));
    g.grant = GrantKind::JwtBearer;
    g.client_id = None;
    g.client_secret = None;
    g.assertion = Some(Secret::new(ASSERTION));
    g.scopes = Arc::from([Arc::from("api")]);
    g.header = "X-Api-Token".into();
    g.style = TokenStyle::Raw;
    let grants = grants();
    let (name, value) = grants.header(&provider(g)).await.expect("token");
    assert_eq!((&*name, value.expose()), ("X-Api-Token", "raw-tok"));
    let (_, body) = ep.last_request();
    assert_eq!(
        body,
        format!(
            "grant_type=client_credentials&client_assertion_type=\
             urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer\
             &client_assertion={ASSERTION}&scope=api"
        )
    );
}

/// Awaits `fut` (real socket I/O with a token endpoint) with the paused
/// clock standing still. Left alone, tokio auto-advances a paused clock to
/// the next timer whenever the runtime looks idle, which it does while a
/// socket operation is in flight: the grant's timeout could fire early and
/// a token's expiry would start from a later `now`. A running blocking task
/// inhibits auto-advance, so inside this only `advance` moves time.
async fn clock_held<F: Future>(fut: F) -> F::Output {
    let (release, hold) = std::sync::mpsc::channel::<()>();
    let holder = tokio::task::spawn_blocking(move || {
        let _ = hold.recv();
    });
    let out = fut.await;
    drop(release);
    holder.await.expect("clock holder");
    out
}

/// A token is used until its cache TTL (`expires_in` minus 30 s of skew,
/// at least 1 s) has passed, to the millisecond, and fetched again from
/// then on: on the paused clock, so exactly and without waiting.
#[tokio::test(start_paused = true)]
async fn expired_token_is_fetched_again() {
    let ep = TokenServer::start(Reply::Token("short", Some(31))).await;
    let p = provider(grant(&ep.url("/token")));
    let grants = grants();
    let started = Instant::now();
    let (_, value) = clock_held(grants.header(&p)).await.expect("first");
    assert_eq!(value.expose(), "Bearer short");
    assert_eq!(started.elapsed(), Duration::ZERO, "the clock stood still");

    // expires_in 31 s: kept for 1 s.
    advance(Duration::from_millis(999)).await;
    let (_, value) = clock_held(grants.header(&p)).await.expect("cached");
    assert_eq!(value.expose(), "Bearer short");
    assert_eq!((ep.calls(), grants.fetches()), (1, 1));
    advance(Duration::from_millis(1)).await;
    ep.set(Reply::Token("fresh", Some(3600)));
    let (_, value) = clock_held(grants.header(&p)).await.expect("refetched");
    assert_eq!(value.expose(), "Bearer fresh");
    assert_eq!((ep.calls(), grants.fetches()), (2, 2));

    // expires_in 3600 s: kept for 3570 s.
    ep.set(Reply::Token("third", Some(3600)));
    advance(Duration::from_secs(3570) - Duration::from_millis(1)).await;
    let (_, value) = clock_held(grants.header(&p)).await.expect("cached");
    assert_eq!(value.expose(), "Bearer fresh");
    assert_eq!((ep.calls(), grants.fetches()), (2, 2));
    advance(Duration::from_millis(1)).await;
    let (_, value) = clock_held(grants.header(&p)).await.expect("refetched");
    assert_eq!(value.expose(), "Bearer third");
    assert_eq!((ep.calls(), grants.fetches()), (3, 3));
}

#[tokio::test]
async fn concurrent_callers_share_one_fetch() {
    let ep = TokenServer::start(Reply::Token("shared", None)).await;
    *ep.delay.lock().unwrap() = Duration::from_millis(200);
    let p = Arc::new(provider(grant(&ep.url("/token"))));
    let grants = Arc::new(grants());
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (p, grants) = (p.clone(), grants.clone());
            tokio::spawn(async move { grants.header(&p).await })
        })
        .collect();
    for t in tasks {
        let (_, value) = t.await.expect("join").expect("token");
        assert_eq!(value.expose(), "Bearer shared");
    }
    assert_eq!((ep.calls(), grants.fetches()), (1, 1));
}

#[tokio::test]
async fn concurrent_waiters_share_a_failure_and_later_callers_retry() {
    let ep = TokenServer::start(Reply::Raw(
        "HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n".into(),
    ))
    .await;
    *ep.delay.lock().unwrap() = Duration::from_millis(200);
    let p = Arc::new(provider(grant(&ep.url("/token"))));
    let grants = Arc::new(grants());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (p, grants) = (p.clone(), grants.clone());
            tokio::spawn(async move { grants.header(&p).await })
        })
        .collect();
    for t in tasks {
        let err = t.await.expect("join").expect_err("503");
        assert!(
            matches!(err, TokenGrantError::Status { status: 503, .. }),
            "{err}"
        );
    }
    assert_eq!(ep.calls(), 1);
    *ep.delay.lock().unwrap() = Duration::ZERO;
    ep.set(Reply::Token("ok", None));
    grants.header(&p).await.expect("retry after failure");
    assert_eq!(ep.calls(), 2);
}

#[tokio::test]
async fn server_error_is_reported_and_not_cached() {
    // The body echoes the secret: it must not reach the message.
    let ep = TokenServer::start(Reply::Raw(format!(
        "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\n\r\n{SECRET}",
        SECRET.len()
    )))
    .await;
    let p = provider(grant(&ep.url("/token")));
    let grants = grants();
    let err = grants.header(&p).await.expect_err("500");
    assert!(
        matches!(err, TokenGrantError::Status { status: 500, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("500"), "{err}");
    assert_no_secret(&err);

    ep.set(Reply::Token("after", None));
    let (_, value) = grants.header(&p).await.expect("not cached");
    assert_eq!(value.expose(), "Bearer after");
    assert_eq!((ep.calls(), grants.fetches()), (2, 2));
}

#[tokio::test]
async fn redirect_is_not_followed() {
    let ep = TokenServer::start(Reply::Raw(
        "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/steal\r\nContent-Length: 0\r\n\r\n"
            .into(),
    ))
    .await;
    let grants = grants();
    let err = grants
        .header(&provider(grant(&ep.url("/token"))))
        .await
        .expect_err("302");
    assert!(
        matches!(err, TokenGrantError::Redirect { status: 302, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("302"), "{err}");
    assert_no_secret(&err);
    assert_eq!((ep.calls(), grants.fetches()), (1, 1));
}

#[tokio::test]
async fn invalid_responses_are_refused() {
    let json = |body: &str| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let cases = [
        (json("not json"), "not valid JSON"),
        (json(&format!(r#"["{SECRET}"]"#)), "not a JSON object"),
        (json(r#"{"token":"x"}"#), "no access_token"),
        (json(r#"{"access_token":7}"#), "not a string"),
        (json(r#"{"access_token":""}"#), "empty or too long"),
        (json(r#"{"access_token":"a b"}"#), "not allowed"),
        (json(r#"{"access_token":"a\r\nX-Evil: 1"}"#), "not allowed"),
        (
            json(&format!(r#"{{"access_token":"{}"}}"#, "a".repeat(8193))),
            "empty or too long",
        ),
        (
            json(r#"{"access_token":"ok","expires_in":"soon"}"#),
            "expires_in",
        ),
        (
            json(r#"{"access_token":"ok","expires_in":[]}"#),
            "expires_in",
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}".into(),
            "truncated",
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 99999\r\n\r\n".into(),
            "too large",
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n".into(),
            "Transfer-Encoding",
        ),
        ("HTTP/1.1 200 OK\r\n".into(), "closed before"),
        ("garbage\r\n\r\n".into(), "malformed response head"),
    ];
    for (reply, want) in cases {
        let ep = TokenServer::start(Reply::Raw(reply.clone())).await;
        let grants = grants();
        let err = grants
            .header(&provider(grant(&ep.url("/token"))))
            .await
            .expect_err(&reply);
        assert!(
            matches!(err, TokenGrantError::Response { .. }),
            "{reply:?}: {err}"
        );
        assert!(err.to_string().contains(want), "{reply:?}: {err}");
        assert_no_secret(&err);
    }
}

#[tokio::test]
async fn chunked_and_until_close_bodies() {
    let ep = TokenServer::start(Reply::Chunked("chunky")).await;
    let (_, value) = grants()
        .header(&provider(grant(&ep.url("/token"))))
        .await
        .expect("chunked");
    assert_eq!(value.expose(), "Bearer chunky");

    let ep = TokenServer::start(Reply::Raw(
        "HTTP/1.0 200 OK\r\n\r\n{\"access_token\":\"eof\",\"expires_in\":60.5}".into(),
    ))
    .await;
    let (_, value) = grants()
        .header(&provider(grant(&ep.url("/token"))))
        .await
        .expect("until close");
    assert_eq!(value.expose(), "Bearer eof");

    let ep = TokenServer::start(Reply::Raw(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 22\r\n\r\n{\"access_token\":\"one\"}"
            .into(),
    ))
    .await;
    let (_, value) = grants()
        .header(&provider(grant(&ep.url("/token"))))
        .await
        .expect("after 100 continue");
    assert_eq!(value.expose(), "Bearer one");
}

/// On the paused clock: the endpoint never answers (it would close after
/// 30 s), so the first timer due is the grant's timeout, and it fires.
#[tokio::test(start_paused = true)]
async fn slow_endpoint_times_out_within_the_grant_timeout() {
    let ep = TokenServer::start(Reply::Hang).await;
    let mut g = grant(&ep.url("/token"));
    g.timeout = Duration::from_millis(300);
    let grants = grants();
    let started = Instant::now();
    let err = grants.header(&provider(g)).await.expect_err("timeout");
    let elapsed = started.elapsed();
    assert!(matches!(err, TokenGrantError::Timeout { .. }), "{err}");
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(305),
        "{elapsed:?}"
    );
    assert_no_secret(&err);
}

#[tokio::test]
async fn connect_refused_and_unresolvable_names() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let grants = grants();
    let err = grants
        .header(&provider(grant(&format!("http://127.0.0.1:{port}/token"))))
        .await
        .expect_err("refused");
    assert!(matches!(err, TokenGrantError::Connect { .. }), "{err}");
    assert_no_secret(&err);

    let err = grants
        .header(&provider(grant("https://idp.invalid/token")))
        .await
        .expect_err("no such name");
    assert!(matches!(err, TokenGrantError::Resolve(_)), "{err}");
}

#[tokio::test]
async fn unusable_endpoints_and_missing_grant() {
    let grants = grants();
    for (url, want) in [
        ("ftp://127.0.0.1/token", "absolute http(s)"),
        ("http://example.com/token", "loopback"),
        ("https://user@idp.example/token", "invalid host"),
        ("https:///token", "no host"),
        ("https://idp.example:0/token", "invalid host or port"),
        ("https://idp.example/a b", "whitespace"),
    ] {
        let err = grants.header(&provider(grant(url))).await.expect_err(url);
        assert!(matches!(err, TokenGrantError::Endpoint(_)), "{url}: {err}");
        assert!(err.to_string().contains(want), "{url}: {err}");
    }
    // `localhost` pinned to a public address is still not plain-http material.
    let pinned = HashMap::from([(
        "localhost".to_owned(),
        vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))],
    )]);
    let err = grants_with(pinned, &[])
        .header(&provider(grant("http://localhost:8080/token")))
        .await
        .expect_err("non-loopback http");
    assert!(err.to_string().contains("non-loopback"), "{err}");
    assert_eq!(grants.fetches(), 0);

    let mut p = provider(grant("https://idp.example/token"));
    p.token_grant = None;
    let err = grants.header(&p).await.expect_err("no grant");
    assert_eq!(err.to_string(), "provider idp has no token grant");
}

#[tokio::test]
async fn changed_grant_configuration_gets_a_new_token() {
    let ep = TokenServer::start(Reply::Token("t", None)).await;
    let grants = grants();
    let base = grant(&ep.url("/token"));
    grants.header(&provider(base.clone())).await.expect("base");
    let mut scoped = base.clone();
    scoped.scopes = Arc::from([Arc::from("admin")]);
    grants
        .header(&provider(scoped.clone()))
        .await
        .expect("scoped");
    let mut audience = base.clone();
    audience.audience = Some("aud".into());
    grants.header(&provider(audience)).await.expect("audience");
    let mut other = provider(base.clone());
    other.key = "other".into();
    grants.header(&other).await.expect("other provider");
    assert_eq!(ep.calls(), 4);
    // Header name and style are not part of the key: the token is reused.
    let mut restyled = base;
    restyled.style = TokenStyle::Raw;
    restyled.header = "X-Token".into();
    let (name, value) = grants.header(&provider(restyled)).await.expect("restyled");
    assert_eq!((&*name, value.expose()), ("X-Token", "t"));
    grants
        .header(&provider(scoped))
        .await
        .expect("scoped again");
    assert_eq!((ep.calls(), grants.fetches()), (4, 4));
}

#[tokio::test]
async fn https_endpoint_verified_with_test_ca() {
    let tmp = TempDir::new("token-grant");
    let ca = Arc::new(SandboxCa::load_or_create(&tmp.path("state")).expect("ca"));
    let ca_file = tmp.path("state").join(CA_CERT_FILE);
    let leaf = LeafCache::new(ca, 4);
    let localhost = Host::parse("localhost").expect("host");
    let acceptor = TlsAcceptor::from(leaf.server_config(&localhost).expect("server config"));
    let ep = TokenServer::start_with(Reply::Token("tls-tok", Some(600)), Some(acceptor)).await;
    let url = format!("https://localhost:{}/oauth2/token", ep.addr.port());
    let pinned = HashMap::from([(
        "localhost".to_owned(),
        vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
    )]);

    let grants = grants_with(pinned.clone(), std::slice::from_ref(&ca_file));
    let p = provider(grant(&url));
    let (_, value) = grants.header(&p).await.expect("https token");
    assert_eq!(value.expose(), "Bearer tls-tok");
    let (head, body) = ep.last_request();
    assert!(
        head.starts_with("POST /oauth2/token HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\nHost: localhost:{}\r\n", ep.addr.port())),
        "{head}"
    );
    assert!(body.starts_with("grant_type=client_credentials&client_id=client-1&"));
    grants.header(&p).await.expect("cached");
    assert_eq!(ep.calls(), 1);

    // Without the test CA the endpoint is not trusted.
    let untrusting = grants_with(pinned, &[]);
    let err = untrusting.header(&p).await.expect_err("unknown issuer");
    assert!(matches!(err, TokenGrantError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    assert_no_secret(&err);
}

#[test]
fn endpoint_parsing() {
    let ep = Endpoint::parse("HTTPS://IdP.Example.COM/realms/a/token?x=1#frag").expect("parse");
    assert!(ep.https);
    assert_eq!(ep.target.to_string(), "idp.example.com:443");
    assert_eq!(ep.host_header, "idp.example.com");
    assert_eq!(ep.path, "/realms/a/token?x=1");

    let ep = Endpoint::parse("http://[::1]:8080?a=b").expect("parse v6");
    assert!(!ep.https);
    assert_eq!(ep.host_header, "[::1]:8080");
    assert_eq!(ep.path, "/?a=b");

    let ep = Endpoint::parse("http://localhost").expect("parse localhost");
    assert_eq!(
        (ep.host_header.as_str(), ep.path.as_str()),
        ("localhost", "/")
    );
    assert_eq!(ep.target.port, 80);
}

#[test]
fn form_encoding() {
    let mut out = String::new();
    form_encode(&mut out, "a b+c&d=e/f~g*h-i.j_k\u{e9}");
    assert_eq!(out, "a+b%2Bc%26d%3De%2Ff%7Eg*h-i.j_k%C3%A9");
}

#[test]
fn ttl_rules() {
    let secs = |e| cache_ttl(e).as_secs();
    assert_eq!(secs(None), 270);
    assert_eq!(secs(Some(31)), 1);
    assert_eq!(secs(Some(0)), 1);
    assert_eq!(secs(Some(30)), 1);
    assert_eq!(secs(Some(600)), 570);
    assert_eq!(secs(Some(86_400)), 3570);
}

#[test]
fn chunk_sizes() {
    assert_eq!(chunk_size(b"1a"), Some(26));
    assert_eq!(chunk_size(b"0;name=value"), Some(0));
    assert_eq!(chunk_size(b"10 "), Some(16));
    assert_eq!(chunk_size(b""), None);
    assert_eq!(chunk_size(b"-1"), None);
    assert_eq!(chunk_size(b"fffffffffffffffff"), None);
}

#[test]
fn cache_map_is_bounded() {
    let grants = grants();
    let mut held = Vec::new();
    for i in 0..(MAX_ENTRIES + 100) {
        let key = CacheKey::new(&Arc::from(format!("p{i}")), &grant("https://idp.example/t"));
        let slot = grants.slot(key);
        if i < 10 {
            held.push(slot); // busy slots are never evicted
        }
    }
    assert!(grants.map().len() <= MAX_ENTRIES);
    let held_key = CacheKey::new(&Arc::from("p0"), &grant("https://idp.example/t"));
    assert!(Arc::ptr_eq(&grants.slot(held_key), &held[0]));
}
