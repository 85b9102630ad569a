//! The HTTP/1.1 server: bounded connections and requests, the access
//! checks (session cookie, CSRF token, origin, host), and routing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use sluice_proxy::local_http::{self, Http1Bounds};
use sluice_proxy::proposals::ProposalService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::auth::{cookie, ct_eq, Sessions};
use crate::{api, events};

/// The body of every response.
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Most connections served at once (further ones are closed at accept).
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// Most event streams open at once.
pub(crate) const MAX_STREAMS: usize = 16;
/// Largest request body (JSON).
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// Time to send a request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to send a request's body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (hyper's read buffer).
const MAX_HEAD: usize = 16 * 1024;
/// Most request header fields.
const MAX_HEADERS: usize = 48;

const INDEX_HTML: &str = include_str!("assets/index.html");
const LOCKED_HTML: &str = include_str!("assets/locked.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Everything a request handler reads.
pub(crate) struct State {
    pub(crate) service: Arc<ProposalService>,
    pub(crate) token: String,
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) addr: SocketAddr,
    pub(crate) cookie_name: String,
    pub(crate) streams: Arc<Semaphore>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Accepts connections until the runtime stops. No lifetime bound: the
/// event streams are long-lived (their count has its own bound).
pub(crate) async fn serve(listener: TcpListener, state: Arc<State>) {
    let bounds = Http1Bounds {
        name: "console",
        max_connections: MAX_CONNECTIONS,
        header_timeout: HEADER_TIMEOUT,
        max_head: MAX_HEAD,
        max_headers: MAX_HEADERS,
        lifetime: None,
    };
    local_http::serve(listener, bounds, move || {
        let state = Arc::clone(&state);
        service_fn(move |req| {
            let state = Arc::clone(&state);
            async move { Ok::<_, Infallible>(handle(&state, req).await) }
        })
    })
    .await;
}

/// A response with `body` and its content type.
pub(crate) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    respond(
        status,
        "application/json",
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

/// `{"error": message}`.
pub(crate) fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

/// The headers every response carries.
fn secure(mut r: Response<Body>) -> Response<Body> {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Body> {
    secure(route(state, req).await)
}

fn header_str(req: &Request<Incoming>, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

impl State {
    /// The `Host` values this console answers to: its address, and for a
    /// loopback address also `localhost:PORT` (a rebound name is refused).
    fn host_ok(&self, host: Option<&str>) -> bool {
        if !self.addr.ip().is_loopback() {
            return true;
        }
        let Some(host) = host else { return false };
        host == self.addr.to_string() || host == format!("localhost:{}", self.addr.port())
    }

    /// Whether `origin` is this console's own.
    fn origin_ok(&self, origin: &str, host: Option<&str>) -> bool {
        origin == format!("http://{}", self.addr)
            || (self.addr.ip().is_loopback()
                && origin == format!("http://localhost:{}", self.addr.port()))
            || host.is_some_and(|h| self.host_ok(Some(h)) && origin == format!("http://{h}"))
    }

    /// The session this request carries: `(cookie value, csrf)`.
    fn session(&self, req: &Request<Incoming>) -> Option<(String, String)> {
        let id = req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|h| cookie(h, &self.cookie_name))?;
        let s = self.sessions.get(id)?;
        Some((id.to_owned(), s.csrf))
    }
}

/// The `token` query parameter, percent-decoded (`None` when absent or
/// not valid percent-encoded UTF-8).
fn query_token(query: &str) -> Option<String> {
    let raw = query.split('&').find_map(|kv| kv.strip_prefix("token="))?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = raw.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

async fn route(state: &State, req: Request<Incoming>) -> Response<Body> {
    if !state.host_ok(header_str(&req, header::HOST)) {
        return respond(
            StatusCode::MISDIRECTED_REQUEST,
            "text/plain; charset=utf-8",
            "this console answers only to its own address\n",
        );
    }
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (method.clone(), path.as_str()) {
        (Method::GET, "/app.js") => {
            return respond(StatusCode::OK, "text/javascript; charset=utf-8", APP_JS)
        }
        (Method::GET, "/app.css") => {
            return respond(StatusCode::OK, "text/css; charset=utf-8", APP_CSS)
        }
        (Method::GET, "/favicon.ico") => return respond(StatusCode::NO_CONTENT, "text/plain", ""),
        (Method::GET, "/") => return index(state, &req),
        _ => {}
    }
    if !path.starts_with("/api/") {
        return error(StatusCode::NOT_FOUND, "not found");
    }
    let Some((session_id, csrf)) = state.session(&req) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "open the URL with the token sluice printed at start",
        );
    };
    if method == Method::POST {
        let given = req
            .headers()
            .get("x-csrf-token")
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        if !ct_eq(given, csrf.as_bytes()) {
            return error(StatusCode::FORBIDDEN, "missing or wrong CSRF token");
        }
        if let Some(origin) = header_str(&req, header::ORIGIN) {
            if !state.origin_ok(origin, header_str(&req, header::HOST)) {
                return error(StatusCode::FORBIDDEN, "cross-origin request refused");
            }
        }
        if header_str(&req, header::HeaderName::from_static("sec-fetch-site"))
            .is_some_and(|s| s == "cross-site")
        {
            return error(StatusCode::FORBIDDEN, "cross-site request refused");
        }
    } else if method != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    let segments: Vec<&str> = path.trim_start_matches("/api/").split('/').collect();
    match (method, segments.as_slice()) {
        (Method::GET, ["state"]) => api::state(state).await,
        (Method::GET, ["events"]) => events::open(state, session_id).await,
        (Method::POST, ["proposals", id, verb @ ("approve" | "reject")]) => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            api::decide(state, id, *verb == "approve", &body).await
        }
        (Method::POST, ["denials", seq, "propose"]) => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            api::propose(state, seq, &body).await
        }
        (Method::GET | Method::POST, _) => error(StatusCode::NOT_FOUND, "not found"),
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
    }
}

/// `GET /`: the page for a session; `?token=` opens one; otherwise the
/// "token required" page.
fn index(state: &State, req: &Request<Incoming>) -> Response<Body> {
    let given = req
        .uri()
        .query()
        .filter(|q| q.split('&').any(|kv| kv.starts_with("token=")))
        .map(|q| query_token(q).unwrap_or_default());
    if let Some(token) = given {
        if !ct_eq(token.as_bytes(), state.token.as_bytes()) {
            return respond(
                StatusCode::UNAUTHORIZED,
                "text/html; charset=utf-8",
                LOCKED_HTML.replace("{{MESSAGE}}", "That token is not this console's token."),
            );
        }
        let Ok((id, _)) = state.sessions.open() else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no randomness for a session",
            );
        };
        let mut r = respond(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", "");
        let cookie = format!(
            "{}={id}; HttpOnly; SameSite=Strict; Path=/",
            state.cookie_name
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        r.headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("/"));
        return r;
    }
    match state.session(req) {
        Some((_, csrf)) => respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            INDEX_HTML.replace("{{CSRF}}", &csrf),
        ),
        None => respond(
            StatusCode::UNAUTHORIZED,
            "text/html; charset=utf-8",
            LOCKED_HTML.replace(
                "{{MESSAGE}}",
                "A token is required: open the console URL that sluice printed at start (console: http://…/?token=…).",
            ),
        ),
    }
}

/// The request body, at most [`MAX_BODY`] bytes within [`BODY_TIMEOUT`].
async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    let limited = Limited::new(req.into_body(), MAX_BODY);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => Err(error(StatusCode::REQUEST_TIMEOUT, "the body took too long")),
        Ok(Err(_)) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the body is larger than 64 KiB or broken",
        )),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::query_token;

    #[test]
    fn token_parameter() {
        assert_eq!(query_token("token=abc").as_deref(), Some("abc"));
        assert_eq!(query_token("x=1&token=a%2Bb%25").as_deref(), Some("a+b%"));
        assert_eq!(query_token("token=a%2"), None);
        assert_eq!(query_token("x=1"), None);
    }
}
