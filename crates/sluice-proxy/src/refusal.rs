//! Refusals as values: a [`Refusal`] says what is refused and why (status,
//! code, detail, the policy and rule context, the hint a person reads), and is
//! turned into bytes in one place per surface protocol — here HTTP/1 with a
//! JSON body in OpenShell's shapes (facts §4.5/§4.7/§4.9:
//! `{"error": CODE, "detail": TEXT, ...}`). Adapters and relays build, pass and
//! return refusals; only the code that writes to the client renders them. A
//! leaf: it depends on nothing above `egress` and `destination`.

use std::fmt::Write as _;

use serde_json::{Map, Value};

/// The RFC 9110 reason phrase of every status sluice answers with (and a
/// few neighbours); `Error` only for a status nothing here sends.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// A policy key fit for the `X-Sluice-Policy` header (visible ASCII only;
/// anything else is omitted rather than risk header injection).
pub fn policy_header_value(key: &str) -> Option<&str> {
    (key != "-" && !key.is_empty() && key.bytes().all(|b| b.is_ascii_graphic())).then_some(key)
}

#[derive(Clone, Debug, PartialEq)]
enum Body {
    /// No body (`Content-Length: 0`).
    Empty,
    /// A plain text body.
    Text(&'static str),
    /// A JSON object, fields in insertion order.
    Json(Map<String, Value>),
}

/// One refusal, not yet rendered.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct Refusal {
    status: u16,
    body: Body,
    /// The policy entry, for `X-Sluice-Policy`.
    policy: Option<String>,
}

impl Refusal {
    /// `{"error": code, "detail": detail}` with `status`.
    pub fn json(status: u16, code: &str, detail: &str) -> Self {
        let mut body = Map::new();
        body.insert("error".into(), code.into());
        body.insert("detail".into(), detail.into());
        Self {
            status,
            body: Body::Json(body),
            policy: None,
        }
    }

    /// `status` with a JSON object body as given (a local service's answer).
    pub fn object(status: u16, body: Map<String, Value>) -> Self {
        Self {
            status,
            body: Body::Json(body),
            policy: None,
        }
    }

    /// `status` with no body.
    pub const fn empty(status: u16) -> Self {
        Self {
            status,
            body: Body::Empty,
            policy: None,
        }
    }

    /// `status` with a plain text body.
    pub const fn text(status: u16, text: &'static str) -> Self {
        Self {
            status,
            body: Body::Text(text),
            policy: None,
        }
    }

    /// Adds (or replaces) a field of a JSON body; nothing for other bodies.
    pub fn field(mut self, name: &str, value: impl Into<Value>) -> Self {
        if let Body::Json(map) = &mut self.body {
            map.insert(name.to_owned(), value.into());
        }
        self
    }

    /// The `reason` field (the policy's reason for a CONNECT denial), when not empty.
    pub fn reason(self, reason: Option<&str>) -> Self {
        match reason.filter(|r| !r.is_empty()) {
            Some(r) => self.field("reason", r),
            None => self,
        }
    }

    /// The `hint` field: the denial as `sluice run` prints it.
    pub fn hint(self, hint: &str) -> Self {
        self.field("hint", hint)
    }

    /// Names the policy entry in `X-Sluice-Policy` (omitted for `-` or a key
    /// that is not plain visible ASCII).
    pub fn policy(mut self, key: Option<&str>) -> Self {
        self.policy = key.and_then(policy_header_value).map(str::to_owned);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The `error` code of a JSON body.
    pub fn code(&self) -> Option<&str> {
        match &self.body {
            Body::Json(map) => map.get("error").and_then(Value::as_str),
            _ => None,
        }
    }

    /// What any HTTP renderer needs: the content type (if any), the body
    /// bytes and the policy named in `X-Sluice-Policy` (HTTP/2 streams).
    pub fn rendered(&self) -> (Option<&'static str>, Vec<u8>, Option<&str>) {
        let (content_type, body) = match &self.body {
            Body::Empty => (None, Vec::new()),
            Body::Text(t) => (None, t.as_bytes().to_vec()),
            Body::Json(map) => (
                Some("application/json"),
                Value::Object(map.clone()).to_string().into_bytes(),
            ),
        };
        (content_type, body, self.policy.as_deref())
    }

    /// The `detail` field of a JSON body (the text body otherwise), for
    /// protocols that carry one message (`grpc-message`).
    pub fn detail(&self) -> &str {
        match &self.body {
            Body::Json(map) => map
                .get("detail")
                .and_then(Value::as_str)
                .or_else(|| map.get("error").and_then(Value::as_str))
                .unwrap_or_default(),
            Body::Text(t) => t,
            Body::Empty => "",
        }
    }

    /// The refusal as an HTTP/1.1 response that closes the connection.
    pub fn http1(&self) -> Vec<u8> {
        let (content_type, body) = match &self.body {
            Body::Empty => (None, String::new()),
            Body::Text(t) => (None, (*t).to_owned()),
            Body::Json(map) => (
                Some("application/json"),
                Value::Object(map.clone()).to_string(),
            ),
        };
        let mut out = String::with_capacity(160 + body.len());
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\n",
            self.status,
            reason_phrase(self.status)
        );
        if let Some(ct) = content_type {
            let _ = write!(out, "Content-Type: {ct}\r\n");
        }
        let _ = write!(
            out,
            "Content-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        if let Some(p) = &self.policy {
            let _ = write!(out, "X-Sluice-Policy: {p}\r\n");
        }
        out.push_str("\r\n");
        out.push_str(&body);
        out.into_bytes()
    }
}

/// Bytes a client sent after `CONNECT` before its `200` (they cannot be
/// classified or inspected).
pub fn early_tunnel_data() -> Refusal {
    json_error(
        400,
        "early_tunnel_data",
        "data sent before the tunnel was established",
        None,
        None,
    )
}

/// An oversized initial head.
pub const HEAD_TOO_LARGE: Refusal = Refusal::empty(431);
/// A malformed head.
pub const BAD_REQUEST: Refusal = Refusal::empty(400);
/// A head that did not arrive in time.
pub const REQUEST_TIMEOUT: Refusal = Refusal::empty(408);
/// `https://` on the forward proxy.
pub const USE_CONNECT: Refusal = Refusal::text(400, "Use CONNECT for HTTPS URLs");

/// A JSON refusal: `policy` names the entry in `X-Sluice-Policy`, `reason`
/// adds the `reason` field (CONNECT denials).
pub fn json_error(
    status: u16,
    code: &str,
    detail: &str,
    reason: Option<&str>,
    policy: Option<&str>,
) -> Refusal {
    Refusal::json(status, code, detail)
        .reason(reason)
        .policy(policy)
}

/// The answer to a refused destination: `403 ssrf_denied` for a policy
/// refusal, `502 upstream_unreachable` when resolution failed. `what` is the
/// request as named in the detail (`CONNECT h:p`, `GET h:p`).
pub fn destination_refused(
    denial: &crate::destination::DestinationDenial,
    what: &str,
    target: &crate::egress::Target,
    policy: &str,
) -> Refusal {
    if denial.is_policy() {
        let detail = format!("{what} blocked: {}", denial.client_detail());
        json_error(403, "ssrf_denied", &detail, None, Some(policy))
    } else {
        let detail = format!("DNS resolution failed for {target}");
        json_error(502, "upstream_unreachable", &detail, None, Some(policy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(r: &Refusal) -> String {
        String::from_utf8(r.http1()).unwrap()
    }

    #[test]
    fn json_refusal_shape() {
        let r = json_error(
            403,
            "policy_denied",
            "CONNECT a:443 not permitted by policy",
            Some("why"),
            Some("github"),
        )
        .hint("denied CONNECT a:443 (curl, pid 7): why");
        assert_eq!((r.status(), r.code()), (403, Some("policy_denied")));
        let text = rendered(&r);
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(head.contains("Content-Type: application/json\r\n"));
        assert!(head.contains("Connection: close\r\n"));
        assert!(head.contains("X-Sluice-Policy: github"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "policy_denied");
        assert_eq!(v["reason"], "why");
        assert_eq!(v["hint"], "denied CONNECT a:443 (curl, pid 7): why");
        let plain = rendered(&json_error(
            502,
            "upstream_unreachable",
            "x",
            Some(""),
            Some("-"),
        ));
        assert!(!plain.contains("reason") && !plain.contains("X-Sluice-Policy"));
        let injected = rendered(&json_error(403, "e", "d", None, Some("a\r\nSet-Cookie: x")));
        assert!(!injected.contains("Set-Cookie"), "{injected}");
    }

    #[test]
    fn bare_and_text_refusals() {
        assert_eq!(
            rendered(&HEAD_TOO_LARGE),
            "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            rendered(&USE_CONNECT),
            "HTTP/1.1 400 Bad Request\r\nContent-Length: 26\r\nConnection: close\r\n\r\nUse CONNECT for HTTPS URLs"
        );
        assert_eq!(
            BAD_REQUEST.field("x", 1),
            BAD_REQUEST,
            "no JSON body to extend"
        );
    }

    /// Every status the proxy answers with has its own reason phrase
    /// (`500 credential_injection_failed` went out as `500 Error`).
    #[test]
    fn every_sent_status_has_its_reason_phrase() {
        for (status, phrase) in [
            (400, "Bad Request"),
            (403, "Forbidden"),
            (408, "Request Timeout"),
            (431, "Request Header Fields Too Large"),
            (500, "Internal Server Error"),
            (502, "Bad Gateway"),
            (503, "Service Unavailable"),
        ] {
            let t = rendered(&json_error(status, "e", "d", None, None));
            assert!(
                t.starts_with(&format!("HTTP/1.1 {status} {phrase}\r\n")),
                "{t}"
            );
        }
        assert_eq!(reason_phrase(599), "Error");
    }
}
