//! PostgreSQL v3 wire framing (both directions) and the few message bodies
//! the processor reads or writes. Pure functions over bytes with three
//! outcomes (a whole frame / need more bytes / an error); every length is
//! checked against a caller's bound before anything is buffered, and no
//! input panics (`fuzz/fuzz_targets/postgres_wire.rs`).
//!
//! Two framings exist: the startup phase (`Int32 length` including itself,
//! then `Int32 code` and a payload) and every later message (`Byte1 tag`,
//! `Int32 length` including itself, then the body).

use std::ops::Range;

/// `SSLRequest` code (protocol "1234.5679").
pub const SSL_REQUEST: u32 = 80_877_103;
/// `GSSENCRequest` code ("1234.5680").
pub const GSSENC_REQUEST: u32 = 80_877_104;
/// `CancelRequest` code ("1234.5678").
pub const CANCEL_REQUEST: u32 = 80_877_102;
/// Protocol major version 3 (minor in the low 16 bits).
pub const PROTOCOL_3: u32 = 3 << 16;
/// Largest startup packet a server accepts (PostgreSQL's own
/// `MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP: usize = 10_000;
/// Most parameters a StartupMessage may carry here.
pub const MAX_STARTUP_PARAMS: usize = 64;

/// Why bytes are not a valid frame. Any of these ends the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The declared length is below the framing's minimum.
    #[error("message length {0} is too short")]
    TooShort(u32),
    /// The declared length exceeds the bound.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    /// A body is malformed (missing terminator, counts that overrun, ...).
    #[error("malformed {0} message")]
    Malformed(&'static str),
}

/// One outcome of a framing attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parse<T> {
    /// A whole frame, and how many bytes of the buffer it used.
    Frame(T, usize),
    /// The buffer holds a valid prefix; read more.
    NeedMore,
    Error(WireError),
}

/// A startup-phase packet: its code and where its payload lies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartupFrame {
    pub code: u32,
    /// Payload after the code, as a range of the parsed buffer.
    pub payload: Range<usize>,
}

/// Frames one startup-phase packet (length ≥ 8, ≤ [`MAX_STARTUP`]).
#[must_use]
pub fn startup_frame(buf: &[u8]) -> Parse<StartupFrame> {
    let Some(len) = be32(buf, 0) else {
        return Parse::NeedMore;
    };
    if len < 8 {
        return Parse::Error(WireError::TooShort(len));
    }
    let len = len as usize;
    if len > MAX_STARTUP {
        return Parse::Error(WireError::TooLarge {
            len,
            max: MAX_STARTUP,
        });
    }
    if buf.len() < len {
        return Parse::NeedMore;
    }
    let code = be32(buf, 4).unwrap_or_default();
    Parse::Frame(
        StartupFrame {
            code,
            payload: 8..len,
        },
        len,
    )
}

/// A regular message: its tag and where its body lies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    /// The body (after tag and length), as a range of the parsed buffer.
    pub body: Range<usize>,
}

impl Frame {
    /// The whole frame's length (tag, length and body).
    #[must_use]
    pub fn len(&self) -> usize {
        self.body.end
    }

    /// Never true: a frame holds at least its tag and length.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Frames one regular message whose whole size (tag included) is at most
/// `max`. The bound is checked from the header alone, before the body is read.
#[must_use]
pub fn frame(buf: &[u8], max: usize) -> Parse<Frame> {
    let (Some(&tag), Some(len)) = (buf.first(), be32(buf, 1)) else {
        return Parse::NeedMore;
    };
    if len < 4 {
        return Parse::Error(WireError::TooShort(len));
    }
    let total = len as usize + 1;
    if total > max {
        return Parse::Error(WireError::TooLarge { len: total, max });
    }
    if buf.len() < total {
        return Parse::NeedMore;
    }
    Parse::Frame(
        Frame {
            tag,
            body: 5..total,
        },
        total,
    )
}

fn be32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn be16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// A NUL-terminated string at the start of `buf` and the rest after it.
#[must_use]
pub fn cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = buf.iter().position(|&b| b == 0)?;
    Some((&buf[..nul], &buf[nul + 1..]))
}

// === startup messages ===

/// The parameters of a StartupMessage payload (`name\0value\0...\0`),
/// in order. Names and values must be UTF-8; at most [`MAX_STARTUP_PARAMS`].
///
/// # Errors
/// [`WireError::Malformed`] for a missing terminator, text that is not
/// UTF-8, an empty name, a repeated name or too many parameters.
pub fn startup_params(payload: &[u8]) -> Result<Vec<(String, String)>, WireError> {
    let bad = WireError::Malformed("startup");
    let mut rest = payload;
    let mut out: Vec<(String, String)> = Vec::new();
    loop {
        let (name, after) = cstr(rest).ok_or(bad)?;
        if name.is_empty() {
            if !after.is_empty() {
                return Err(bad);
            }
            return Ok(out);
        }
        let (value, after) = cstr(after).ok_or(bad)?;
        let name = std::str::from_utf8(name).map_err(|_| bad)?;
        let value = std::str::from_utf8(value).map_err(|_| bad)?;
        if out.len() >= MAX_STARTUP_PARAMS || out.iter().any(|(n, _)| n == name) {
            return Err(bad);
        }
        out.push((name.to_owned(), value.to_owned()));
        rest = after;
    }
}

/// A StartupMessage for `version` with `params`, as sent upstream.
#[must_use]
pub fn startup_message(version: u32, params: &[(String, String)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = u32_len(body.len() + 4).to_vec();
    out.extend_from_slice(&body);
    out
}

/// The 8-byte `SSLRequest`.
#[must_use]
pub fn ssl_request() -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&8u32.to_be_bytes());
    b[4..].copy_from_slice(&SSL_REQUEST.to_be_bytes());
    b
}

// === regular messages ===

fn u32_len(n: usize) -> [u8; 4] {
    u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes()
}

/// A message with `tag` and `body`.
#[must_use]
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(tag);
    out.extend_from_slice(&u32_len(body.len() + 4));
    out.extend_from_slice(body);
    out
}

/// `ErrorResponse` with severity `ERROR` (or `FATAL`), `code` and `text`
/// (NUL bytes in the text are replaced, so the fields stay framed).
#[must_use]
pub fn error_response(fatal: bool, code: &str, text: &str) -> Vec<u8> {
    let severity: &[u8] = if fatal { b"FATAL" } else { b"ERROR" };
    let mut body = Vec::with_capacity(text.len() + 32);
    for (field, value) in [(b'S', severity), (b'V', severity), (b'C', code.as_bytes())] {
        body.push(field);
        body.extend_from_slice(value);
        body.push(0);
    }
    body.push(b'M');
    body.extend(text.bytes().map(|b| if b == 0 { b'?' } else { b }));
    body.push(0);
    body.push(0);
    message(b'E', &body)
}

/// `Authentication` request `code` (0 ok, 3 cleartext password).
#[must_use]
pub fn authentication(code: u32) -> Vec<u8> {
    message(b'R', &code.to_be_bytes())
}

/// A `PasswordMessage` (also the SASL response framing) carrying `data`
/// followed by NUL.
#[must_use]
pub fn password_message(data: &[u8]) -> Vec<u8> {
    let mut body = data.to_vec();
    body.push(0);
    message(b'p', &body)
}

/// `SASLInitialResponse` for `mechanism` with the client-first message.
#[must_use]
pub fn sasl_initial_response(mechanism: &str, data: &[u8]) -> Vec<u8> {
    let mut body = mechanism.as_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(&u32_len(data.len()));
    body.extend_from_slice(data);
    message(b'p', &body)
}

/// `SASLResponse` with `data` (no terminator).
#[must_use]
pub fn sasl_response(data: &[u8]) -> Vec<u8> {
    message(b'p', data)
}

/// The text of a `Query` body (`query\0`).
///
/// # Errors
/// [`WireError::Malformed`] without the terminator or with bytes after it.
pub fn query_text(body: &[u8]) -> Result<&[u8], WireError> {
    match cstr(body) {
        Some((q, [])) => Ok(q),
        _ => Err(WireError::Malformed("query")),
    }
}

/// A `Parse` body: statement name and query text (parameter types are
/// checked for framing, then ignored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseBody<'a> {
    pub name: &'a [u8],
    pub query: &'a [u8],
}

/// Reads a `Parse` body (`name\0 query\0 Int16 n, n × Int32`).
///
/// # Errors
/// [`WireError::Malformed`] when the fields do not fill the body exactly.
pub fn parse_body(body: &[u8]) -> Result<ParseBody<'_>, WireError> {
    let bad = WireError::Malformed("parse");
    let (name, rest) = cstr(body).ok_or(bad)?;
    let (query, rest) = cstr(rest).ok_or(bad)?;
    let n = be16(rest, 0).ok_or(bad)? as usize;
    if rest.len() != 2 + n * 4 {
        return Err(bad);
    }
    Ok(ParseBody { name, query })
}

/// A `Parse` message (no parameter types) for `name` and `query`.
#[must_use]
pub fn parse_message(name: &[u8], query: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(name.len() + query.len() + 4);
    body.extend_from_slice(name);
    body.push(0);
    body.extend_from_slice(query);
    body.push(0);
    body.extend_from_slice(&0u16.to_be_bytes());
    message(b'P', &body)
}

/// A `Query` message for `query`.
#[must_use]
pub fn query_message(query: &[u8]) -> Vec<u8> {
    let mut body = query.to_vec();
    body.push(0);
    message(b'Q', &body)
}

/// A backend `Authentication` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthRequest<'a> {
    Ok,
    Cleartext,
    Md5([u8; 4]),
    /// `AuthenticationSASL` with its mechanism names.
    Sasl(Vec<&'a [u8]>),
    SaslContinue(&'a [u8]),
    SaslFinal(&'a [u8]),
    /// Kerberos, GSS, SSPI or an unknown code.
    Unsupported(u32),
}

/// Reads an `Authentication` body (tag `R`).
///
/// # Errors
/// [`WireError::Malformed`] when the body does not match its code.
pub fn auth_request(body: &[u8]) -> Result<AuthRequest<'_>, WireError> {
    let bad = WireError::Malformed("authentication");
    let code = be32(body, 0).ok_or(bad)?;
    let rest = &body[4..];
    Ok(match code {
        0 if rest.is_empty() => AuthRequest::Ok,
        3 if rest.is_empty() => AuthRequest::Cleartext,
        5 => AuthRequest::Md5(rest.try_into().map_err(|_| bad)?),
        10 => {
            let mut names = Vec::new();
            let mut rest = rest;
            loop {
                let (name, after) = cstr(rest).ok_or(bad)?;
                if name.is_empty() {
                    if !after.is_empty() || names.is_empty() {
                        return Err(bad);
                    }
                    break;
                }
                if names.len() >= 16 {
                    return Err(bad);
                }
                names.push(name);
                rest = after;
            }
            AuthRequest::Sasl(names)
        }
        11 => AuthRequest::SaslContinue(rest),
        12 => AuthRequest::SaslFinal(rest),
        0 | 3 => return Err(bad),
        other => AuthRequest::Unsupported(other),
    })
}

/// The password in a `PasswordMessage` body (`password\0`).
///
/// # Errors
/// [`WireError::Malformed`] without the terminator or with bytes after it.
pub fn password_text(body: &[u8]) -> Result<&[u8], WireError> {
    match cstr(body) {
        Some((p, [])) => Ok(p),
        _ => Err(WireError::Malformed("password")),
    }
}

/// The `C` (SQLSTATE) and `M` (message) fields of an `ErrorResponse` or
/// `NoticeResponse` body, when present.
#[must_use]
pub fn error_fields(body: &[u8]) -> (Option<&[u8]>, Option<&[u8]>) {
    let (mut code, mut text) = (None, None);
    let mut rest = body;
    while let Some((&field, after)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let Some((value, after)) = cstr(after) else {
            break;
        };
        match field {
            b'C' => code = Some(value),
            b'M' => text = Some(value),
            _ => {}
        }
        rest = after;
    }
    (code, text)
}

#[cfg(test)]
#[path = "wire_tests.rs"]
pub(super) mod tests;
