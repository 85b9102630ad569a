use super::body::BodyFraming;

/// Most header fields accepted in one request.
const MAX_HEADERS: usize = 100;

/// A strictly parsed HTTP/1.x request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The request-target exactly as sent.
    pub target: String,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    pub framing: BodyFraming,
    /// The client does not want the connection kept after this exchange.
    pub close: bool,
    /// Names nominated by `Connection` (lowercase), dropped when forwarding.
    pub connection_tokens: Vec<String>,
}

/// Why a request head was refused (answered `400`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("bare CR or LF in message head")]
    BareLineEnding,
    #[error("control byte in message head")]
    ControlByte,
    #[error("malformed request head: {0}")]
    Syntax(String),
    #[error("too many header fields")]
    TooManyHeaders,
    #[error("invalid Content-Length")]
    BadContentLength,
    #[error("conflicting or repeated Content-Length")]
    ConflictingContentLength,
    #[error("both Transfer-Encoding and Content-Length")]
    TransferEncodingWithLength,
    #[error("unsupported Transfer-Encoding (only a single `chunked` is accepted)")]
    BadTransferEncoding,
    #[error("invalid Connection header")]
    BadConnection,
    #[error("repeated Host header")]
    RepeatedHost,
}

impl RequestHead {
    /// Parse one head (the bytes up to and including the blank line).
    ///
    /// # Errors
    /// [`ParseError`] for anything ambiguous; nothing is guessed.
    pub fn parse(head: &[u8]) -> Result<Self, ParseError> {
        check_line_endings(head)?;
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut slots);
        match req.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(ParseError::Syntax("incomplete".into())),
            Err(httparse::Error::TooManyHeaders) => return Err(ParseError::TooManyHeaders),
            Err(e) => return Err(ParseError::Syntax(e.to_string())),
        }
        let method = req.method.unwrap_or_default().to_owned();
        let target = req.path.unwrap_or_default().to_owned();
        let version = req.version.unwrap_or(1);
        if target.is_empty() || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(ParseError::Syntax("invalid request-target".into()));
        }
        let mut headers = Vec::with_capacity(req.headers.len());
        for h in req.headers.iter() {
            if h.value
                .iter()
                .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
            {
                return Err(ParseError::ControlByte);
            }
            headers.push((h.name.to_owned(), trim(h.value).to_vec()));
        }
        let mut head = Self {
            method,
            target,
            version,
            headers,
            framing: BodyFraming::None,
            close: version == 0,
            connection_tokens: Vec::new(),
        };
        head.analyze()?;
        Ok(head)
    }

    fn analyze(&mut self) -> Result<(), ParseError> {
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut hosts = 0;
        for (name, value) in &self.headers {
            if name.eq_ignore_ascii_case("content-length") {
                if length.is_some() {
                    return Err(ParseError::ConflictingContentLength);
                }
                length = Some(parse_length(value)?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                if chunked || self.version == 0 || !value.eq_ignore_ascii_case(b"chunked") {
                    return Err(ParseError::BadTransferEncoding);
                }
                chunked = true;
            } else if name.eq_ignore_ascii_case("host") {
                hosts += 1;
            } else if name.eq_ignore_ascii_case("connection") {
                let text = std::str::from_utf8(value).map_err(|_| ParseError::BadConnection)?;
                for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    if !token.bytes().all(is_tchar) {
                        return Err(ParseError::BadConnection);
                    }
                    let token = token.to_ascii_lowercase();
                    match token.as_str() {
                        "host" | "content-length" | "transfer-encoding" => {
                            return Err(ParseError::BadConnection)
                        }
                        "close" => self.close = true,
                        "keep-alive" if self.version == 0 => self.close = false,
                        _ => {}
                    }
                    self.connection_tokens.push(token);
                }
            }
        }
        if hosts > 1 {
            return Err(ParseError::RepeatedHost);
        }
        self.framing = match (chunked, length) {
            (true, Some(_)) => return Err(ParseError::TransferEncodingWithLength),
            (true, None) => BodyFraming::Chunked,
            (false, Some(0) | None) => BodyFraming::None,
            (false, Some(n)) => BodyFraming::Length(n),
        };
        Ok(())
    }

    /// First value of a header (case-insensitive name).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// Every LF must follow a CR and every CR must precede an LF; no NUL anywhere.
fn check_line_endings(head: &[u8]) -> Result<(), ParseError> {
    for (i, &b) in head.iter().enumerate() {
        match b {
            b'\n' if i == 0 || head[i - 1] != b'\r' => return Err(ParseError::BareLineEnding),
            b'\r' if head.get(i + 1) != Some(&b'\n') => return Err(ParseError::BareLineEnding),
            0 => return Err(ParseError::ControlByte),
            _ => {}
        }
    }
    Ok(())
}

/// `1*DIGIT`, at most 18 digits (no sign, no list, no whitespace inside).
pub(super) fn parse_length(v: &[u8]) -> Result<u64, ParseError> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::BadContentLength);
    }
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ParseError::BadContentLength)
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |p| p + 1);
    &v[start..end]
}

pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<RequestHead, ParseError> {
        RequestHead::parse(s.as_bytes())
    }

    #[test]
    fn accepts_plain_requests() {
        let r = parse("GET http://a.test/x?y=1 HTTP/1.1\r\nHost: a.test\r\n\r\n").unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.target, "http://a.test/x?y=1");
        assert_eq!(r.framing, BodyFraming::None);
        assert!(!r.close);
        let r = parse("POST / HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\n").unwrap();
        assert_eq!(r.framing, BodyFraming::Length(5));
        assert!(r.close);
        let r = parse("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap();
        assert_eq!(r.framing, BodyFraming::Chunked);
        let r = parse("GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(r.close);
        let r = parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        assert!(!r.close);
    }

    #[test]
    fn refuses_ambiguous_requests() {
        use ParseError::*;
        let cases: &[(&str, ParseError)] = &[
            ("GET / HTTP/1.1\nHost: a\r\n\r\n", BareLineEnding),
            ("GET / HTTP/1.1\r\nHost: a\r\r\n\r\n", BareLineEnding),
            ("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", ControlByte),
            ("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", ConflictingContentLength),
            ("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", ConflictingContentLength),
            ("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", BadContentLength),
            ("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", BadContentLength),
            ("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", BadContentLength),
            ("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", BadContentLength),
            ("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", TransferEncodingWithLength),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", BadTransferEncoding),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", BadTransferEncoding),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n", BadTransferEncoding),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", BadTransferEncoding),
            ("GET / HTTP/1.1\r\nConnection: content-length\r\n\r\n", BadConnection),
            ("GET / HTTP/1.1\r\nConnection: a b\r\n\r\n", BadConnection),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", RepeatedHost),
        ];
        for (raw, want) in cases {
            assert_eq!(parse(raw).as_ref().err(), Some(want), "{raw:?}");
        }
        // Syntax errors from the tokenizer: obs-fold, space before colon, bad version, bad method.
        for raw in [
            "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
            "GET / HTTP/1.1\r\nX : a\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "G(T / HTTP/1.1\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
        ] {
            assert!(matches!(parse(raw), Err(Syntax(_))), "{raw:?}");
        }
    }
}
