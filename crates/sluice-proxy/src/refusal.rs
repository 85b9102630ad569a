//! Wire renderings of refusals, shared by the HTTP-speaking adapters and the
//! relays (facts §4.5/§4.7 shapes: `{"error": CODE, "detail": TEXT}`). A leaf:
//! it depends on nothing above `egress` and `destination`.

use std::fmt::Write as _;

/// The exact 431 for an oversized initial head.
pub(crate) const HEAD_TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
/// A bare 400 for a malformed head.
pub(crate) const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
/// The answer to a head that did not arrive in time.
pub(crate) const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
/// The fixed answer to `https://` on the forward proxy.
pub(crate) const USE_CONNECT: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 27\r\nConnection: close\r\n\r\nUse CONNECT for HTTPS URLs";

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
pub(crate) fn policy_header_value(key: &str) -> Option<&str> {
    (key != "-" && !key.is_empty() && key.bytes().all(|b| b.is_ascii_graphic())).then_some(key)
}

/// A JSON error response that closes the connection. `policy` adds
/// `X-Sluice-Policy`; `reason` adds the `reason` field (CONNECT denials).
pub(crate) fn json_error(
    status: u16,
    code: &str,
    detail: &str,
    reason: Option<&str>,
    policy: Option<&str>,
) -> Vec<u8> {
    json_error_with_hint(status, code, detail, reason, policy, None)
}

/// [`json_error`] with a `hint` field (the denial as `sluice run` prints it).
pub(crate) fn json_error_with_hint(
    status: u16,
    code: &str,
    detail: &str,
    reason: Option<&str>,
    policy: Option<&str>,
    hint: Option<&str>,
) -> Vec<u8> {
    let mut body = serde_json::Map::new();
    body.insert("error".into(), code.into());
    body.insert("detail".into(), detail.into());
    if let Some(r) = reason.filter(|r| !r.is_empty()) {
        body.insert("reason".into(), r.into());
    }
    if let Some(h) = hint {
        body.insert("hint".into(), h.into());
    }
    let body = serde_json::Value::Object(body).to_string();
    let mut out = String::with_capacity(160 + body.len());
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason_phrase(status),
        body.len()
    );
    if let Some(p) = policy.and_then(policy_header_value) {
        let _ = write!(out, "X-Sluice-Policy: {p}\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// The answer to a refused destination: `403 ssrf_denied` for a policy
/// refusal, `502 upstream_unreachable` when resolution failed. `what` is the
/// request as named in the detail (`CONNECT h:p`, `GET h:p`).
pub(crate) fn destination_refused(
    denial: &crate::destination::DestinationDenial,
    what: &str,
    target: &crate::egress::Target,
    policy: &str,
) -> Vec<u8> {
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

    #[test]
    fn json_error_shape() {
        let raw = json_error(
            403,
            "policy_denied",
            "CONNECT a:443 not permitted by policy",
            Some("why"),
            Some("github"),
        );
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(head.contains("X-Sluice-Policy: github"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "policy_denied");
        assert_eq!(v["reason"], "why");
        let text = String::from_utf8(json_error(502, "upstream_unreachable", "x", Some(""), None))
            .unwrap();
        assert!(!text.contains("reason") && !text.contains("X-Sluice-Policy"));
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
            let text = String::from_utf8(json_error(status, "e", "d", None, None)).unwrap();
            assert!(
                text.starts_with(&format!("HTTP/1.1 {status} {phrase}\r\n")),
                "{text}"
            );
        }
        assert_eq!(reason_phrase(599), "Error");
    }
}
