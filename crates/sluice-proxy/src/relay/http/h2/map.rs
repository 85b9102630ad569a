//! Pure mappings between HTTP/2 messages and what the HTTP/1.1 admission
//! path reads: an HTTP/2 request head becomes the [`RequestHead`] the loop
//! would have parsed (through the same strict parser), refusals become gRPC
//! statuses, and connection-specific fields are dropped at the translation
//! points. No I/O; fuzzed (`fuzz/fuzz_targets/h2_request.rs`).

use super::super::request::{ParseError, RequestHead};

/// Fields that belong to one HTTP/1.1 connection and never cross a
/// protocol boundary (RFC 9113 §8.2.2).
pub(crate) const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// Longest `:path` accepted (the HTTP/1.1 head limit bounds the same).
pub const MAX_PATH: usize = 8 * 1024;

/// Why an HTTP/2 request head is refused before policy (answered `400`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// `CONNECT` (and extended CONNECT) would turn the stream into a tunnel.
    #[error("CONNECT is not supported on inspected HTTP/2 streams")]
    Connect,
    /// `:path` missing, not origin-form, or too long.
    #[error("request :path must be origin-form (start with `/`)")]
    BadPath,
    /// `:scheme` other than `https` inside a TLS tunnel.
    #[error("request :scheme must be https")]
    BadScheme,
    /// Both `:authority` and `host`, naming different sites.
    #[error(":authority and host name different sites")]
    ConflictingAuthority,
    /// The head the fields make is refused by the HTTP/1.1 parser.
    #[error(transparent)]
    Parse(#[from] ParseError),
}

/// The request head an HTTP/2 request maps to: request line `method path
/// HTTP/1.1`, `Host` from `:authority` (a `host` field must agree with it),
/// the other fields in order, and for a body of unknown length
/// `Transfer-Encoding: chunked` (so that body policies see one). The result
/// went through [`RequestHead::parse`]: whatever the HTTP/1.1 loop refuses
/// (control bytes, conflicting lengths, too many fields) is refused here too.
///
/// # Errors
/// [`MapError`] for anything not mapped; nothing is guessed.
pub fn request_head<'a>(
    method: &str,
    scheme: Option<&str>,
    authority: Option<&str>,
    path: Option<&str>,
    fields: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    has_body: bool,
) -> Result<RequestHead, MapError> {
    if method.eq_ignore_ascii_case("CONNECT") {
        return Err(MapError::Connect);
    }
    if scheme.is_some_and(|s| !s.eq_ignore_ascii_case("https")) {
        return Err(MapError::BadScheme);
    }
    // The pieces go into one HTTP/1.1 head: none may carry a line break,
    // whitespace or a control byte that would make it say something else.
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    if !token(method) {
        return Err(MapError::Parse(ParseError::Syntax("invalid method".into())));
    }
    if authority.is_some_and(|a| a.bytes().any(|b| b <= b' ' || b >= 0x7f)) {
        return Err(MapError::Parse(ParseError::ControlByte));
    }
    let path = path.filter(|p| p.starts_with('/') && p.len() <= MAX_PATH);
    let Some(path) = path else {
        return Err(MapError::BadPath);
    };
    let mut raw = Vec::with_capacity(128 + path.len());
    raw.extend_from_slice(method.as_bytes());
    raw.push(b' ');
    raw.extend_from_slice(path.as_bytes());
    raw.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(a) = authority {
        raw.extend_from_slice(b"host: ");
        raw.extend_from_slice(a.as_bytes());
        raw.extend_from_slice(b"\r\n");
    }
    let mut length = false;
    for (name, value) in fields {
        if name.eq_ignore_ascii_case("host") {
            match authority {
                Some(a) if a.as_bytes().eq_ignore_ascii_case(value) => continue,
                Some(_) => return Err(MapError::ConflictingAuthority),
                None => {}
            }
        }
        if name.bytes().any(|b| b == b':' || b <= b' ' || b >= 0x7f)
            || value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0)
        {
            return Err(MapError::Parse(ParseError::ControlByte));
        }
        length |= name.eq_ignore_ascii_case("content-length");
        raw.extend_from_slice(name.as_bytes());
        raw.extend_from_slice(b": ");
        raw.extend_from_slice(value);
        raw.extend_from_slice(b"\r\n");
    }
    if has_body && !length {
        raw.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    raw.extend_from_slice(b"\r\n");
    Ok(RequestHead::parse(&raw)?)
}

/// Whether a request is a gRPC call (its refusals are gRPC statuses).
#[must_use]
pub fn is_grpc(content_type: Option<&[u8]>) -> bool {
    content_type.is_some_and(|ct| {
        ct.len() >= 16
            && ct[..16].eq_ignore_ascii_case(b"application/grpc")
            && matches!(ct.get(16), None | Some(b'+' | b';'))
    })
}

/// The gRPC status for a refusal's HTTP status (the gRPC HTTP mapping,
/// with `403` as `PERMISSION_DENIED` and `413` as `RESOURCE_EXHAUSTED`).
#[must_use]
pub fn grpc_status(http: u16) -> u8 {
    match http {
        400 | 500 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        413 | 431 => 8,
        408 | 504 => 4,
        429 | 502 | 503 => 14,
        _ => 2,
    }
}

/// `grpc-message` encoding: percent-encode everything outside visible
/// ASCII and space, and `%` itself; bounded to `max` input bytes.
#[must_use]
pub fn grpc_message(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for &b in text.as_bytes().iter().take(max) {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::http::BodyFraming;

    fn map(
        method: &str,
        authority: Option<&str>,
        path: &str,
        fields: &[(&str, &[u8])],
        body: bool,
    ) -> Result<RequestHead, MapError> {
        request_head(
            method,
            Some("https"),
            authority,
            Some(path),
            fields.iter().copied(),
            body,
        )
    }

    #[test]
    fn request_head_table() {
        let h = map(
            "GET",
            Some("api.test"),
            "/a?b=1",
            &[("accept", b"*/*")],
            false,
        )
        .unwrap();
        assert_eq!(h.method, "GET");
        assert_eq!(h.target, "/a?b=1");
        assert_eq!(h.header("host"), Some(&b"api.test"[..]));
        assert_eq!(h.framing, BodyFraming::None);
        // An agreeing host field is folded into :authority, once.
        let h = map(
            "GET",
            Some("api.test"),
            "/",
            &[("host", b"API.test")],
            false,
        )
        .unwrap();
        assert_eq!(h.headers.len(), 1);
        assert_eq!(
            map(
                "GET",
                Some("api.test"),
                "/",
                &[("host", b"other.test")],
                false
            ),
            Err(MapError::ConflictingAuthority)
        );
        // Bodies: declared length kept, unknown length is chunked.
        let h = map("POST", Some("a"), "/", &[("content-length", b"5")], true).unwrap();
        assert_eq!(h.framing, BodyFraming::Length(5));
        let h = map("POST", Some("a"), "/", &[], true).unwrap();
        assert_eq!(h.framing, BodyFraming::Chunked);
        assert_eq!(
            map(
                "POST",
                Some("a"),
                "/",
                &[("content-length", b"5"), ("content-length", b"6")],
                true
            ),
            Err(MapError::Parse(ParseError::ConflictingContentLength))
        );
        assert_eq!(
            map("CONNECT", Some("a"), "/", &[], false),
            Err(MapError::Connect)
        );
        assert_eq!(
            map("GET", Some("a"), "*", &[], false),
            Err(MapError::BadPath)
        );
        assert_eq!(
            map("GET", Some("a"), "http://a/", &[], false),
            Err(MapError::BadPath)
        );
        assert_eq!(
            request_head("GET", Some("http"), Some("a"), Some("/"), [], false),
            Err(MapError::BadScheme)
        );
        assert!(map("GET", Some("a"), "/", &[("x", b"a\r\nb: c")], false).is_err());
        assert!(map("GET", Some("a"), "/", &[("x:y", b"v")], false).is_err());
        assert!(map("GET", Some("a"), "/a b", &[], false).is_err());
        assert!(map("GET", Some("a\r\nx: y"), "/", &[], false).is_err());
        assert!(map(
            "GET /x HTTP/1.1\r\nHost: e\r\n\r\nGET",
            Some("a"),
            "/",
            &[],
            false
        )
        .is_err());
        assert!(map("", Some("a"), "/", &[], false).is_err());
        // No authority: no Host (the tunnel check refuses it).
        let h = map("GET", None, "/", &[], false).unwrap();
        assert_eq!(h.header("host"), None);
        // Too many fields, as in HTTP/1.1.
        let many: Vec<(String, Vec<u8>)> = (0..200)
            .map(|i| (format!("x-{i}"), b"v".to_vec()))
            .collect();
        let r = request_head(
            "GET",
            None,
            Some("a"),
            Some("/"),
            many.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
            false,
        );
        assert_eq!(r, Err(MapError::Parse(ParseError::TooManyHeaders)));
    }

    #[test]
    fn grpc_helpers() {
        assert!(is_grpc(Some(b"application/grpc")));
        assert!(is_grpc(Some(b"application/grpc+proto")));
        assert!(is_grpc(Some(b"Application/GRPC;x=y")));
        assert!(!is_grpc(Some(b"application/grpcx")));
        assert!(!is_grpc(Some(b"application/json")));
        assert!(!is_grpc(None));
        assert_eq!(grpc_status(403), 7);
        assert_eq!(grpc_status(502), 14);
        assert_eq!(grpc_message("a b%c\u{e9}", 100), "a b%25c%C3%A9");
        assert_eq!(grpc_message("abcdef", 3), "abc");
    }
}
