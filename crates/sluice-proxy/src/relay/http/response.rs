use super::body::BodyFraming;
use super::request::parse_length;

const MAX_HEADERS: usize = 100;

/// A parsed upstream response head (forwarded byte for byte).
#[derive(Debug)]
pub(super) struct ResponseHead {
    pub(super) status: u16,
    pub(super) framing: BodyFraming,
    /// The upstream asked to close after this response.
    pub(super) close: bool,
}

/// Why an upstream response was refused (answered `502`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ResponseError {
    #[error("malformed response head: {0}")]
    Syntax(String),
    #[error("ambiguous response framing")]
    Framing,
}

/// Parse a response head; `request_method` decides bodiless responses.
pub(super) fn parse_response(
    head: &[u8],
    request_method: &str,
) -> Result<ResponseHead, ResponseError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    match resp.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(ResponseError::Syntax("incomplete".into())),
        Err(e) => return Err(ResponseError::Syntax(e.to_string())),
    }
    let status = resp.code.unwrap_or(0);
    let version = resp.version.unwrap_or(1);
    let mut close = version == 0;
    let mut length = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(h.value.trim_ascii()).map_err(|_| ResponseError::Framing)?;
            if length.is_some_and(|l| l != n) {
                return Err(ResponseError::Framing);
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if chunked || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(ResponseError::Framing);
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                    close = false;
                }
            }
        }
    }
    let bodiless =
        request_method == "HEAD" || (100..200).contains(&status) || status == 204 || status == 304;
    let framing = match (bodiless, chunked, length) {
        (true, _, _) => BodyFraming::None,
        (false, true, Some(_)) => return Err(ResponseError::Framing),
        (false, true, None) => BodyFraming::Chunked,
        (false, false, Some(0)) => BodyFraming::None,
        (false, false, Some(n)) => BodyFraming::Length(n),
        (false, false, None) => BodyFraming::UntilClose,
    };
    Ok(ResponseHead {
        status,
        framing,
        close,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (raw head, request method, expected (status, framing, close)).
    type Case = (&'static str, &'static str, Option<(u16, BodyFraming, bool)>);

    #[test]
    fn response_framing_table() {
        let cases: &[Case] = &[
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
                "GET",
                Some((200, BodyFraming::Length(3), false)),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
                "HEAD",
                Some((200, BodyFraming::None, false)),
            ),
            (
                "HTTP/1.1 204 No Content\r\n\r\n",
                "GET",
                Some((204, BodyFraming::None, false)),
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                "GET",
                Some((304, BodyFraming::None, false)),
            ),
            (
                "HTTP/1.1 100 Continue\r\n\r\n",
                "POST",
                Some((100, BodyFraming::None, false)),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                "GET",
                Some((200, BodyFraming::Chunked, false)),
            ),
            (
                "HTTP/1.1 200 OK\r\n\r\n",
                "GET",
                Some((200, BodyFraming::UntilClose, false)),
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
                "GET",
                Some((200, BodyFraming::Length(1), true)),
            ),
            (
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
                "GET",
                Some((200, BodyFraming::Length(1), true)),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                "GET",
                None,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "GET",
                None,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                "GET",
                None,
            ),
            ("HTTX 200 OK\r\n\r\n", "GET", None),
        ];
        for (raw, method, want) in cases {
            let got = parse_response(raw.as_bytes(), method)
                .ok()
                .map(|r| (r.status, r.framing, r.close));
            assert_eq!(&got, want, "{raw:?}");
        }
    }
}
