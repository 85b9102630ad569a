//! Client commands on the wire: pure functions, no I/O.
//!
//! RESP2 and RESP3 clients send commands the same way: a multibulk array of
//! bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`), or an inline line
//! (`GET k\r\n`, split like Redis' `sdssplitargs`). [`CommandParser::parse`]
//! looks at the start of a growing buffer and answers with one of four
//! outcomes: a complete command, input Redis ignores (`*0`, an empty line),
//! "need more bytes", or a protocol error. It is resumable: a multibulk
//! command arriving in pieces is not parsed again from its start.
//!
//! The parser is stricter than Redis (which skips the two bytes after a bulk
//! string without looking at them): lengths are canonical decimals and every
//! bulk string ends in CRLF. So the bytes of a parsed multibulk command are
//! exactly the canonical encoding of its arguments, and what the upstream
//! parses is what was evaluated. Inline commands are re-encoded as multibulk
//! before they are forwarded ([`encode_command`]).

use std::ops::Range;

/// Longest inline command line (Redis' `PROTO_INLINE_MAX_SIZE`).
pub const MAX_INLINE: usize = 64 * 1024;
/// Most arguments in one command (Redis' limit before authentication is far
/// lower; after it, `INT_MAX`).
pub const MAX_ARGS: usize = 1024 * 1024;
/// Longest length line (`*N` / `$N`), CRLF excluded.
const MAX_LENGTH_LINE: usize = 20;

/// What the parser accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest command, in bytes on the wire.
    pub max_message: usize,
    /// Most arguments in one command.
    pub max_args: usize,
}

/// How a command was framed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Multibulk: each argument's range in the buffer. The command's bytes
    /// are canonical RESP and can be forwarded as they are.
    Multibulk(Vec<Range<usize>>),
    /// Inline: the arguments after unquoting; forwarded re-encoded.
    Inline(Vec<Vec<u8>>),
}

/// One complete command at the start of the buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// Bytes it occupies (to be consumed by the caller).
    pub len: usize,
    pub frame: Frame,
}

impl Command {
    /// The arguments (command name first), borrowing `buf` (the buffer it
    /// was parsed from) or the command itself.
    #[must_use]
    pub fn args<'a>(&'a self, buf: &'a [u8]) -> Vec<&'a [u8]> {
        match &self.frame {
            Frame::Multibulk(ranges) => ranges.iter().map(|r| &buf[r.clone()]).collect(),
            Frame::Inline(args) => args.iter().map(Vec::as_slice).collect(),
        }
    }

    /// The command's own bytes when they can be forwarded unchanged
    /// (multibulk), `None` for inline commands.
    #[must_use]
    pub fn raw<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
        matches!(self.frame, Frame::Multibulk(_)).then(|| &buf[..self.len])
    }
}

/// The parser's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parse {
    Command(Command),
    /// Bytes Redis reads and ignores (`*0\r\n`, `*-1\r\n`, an empty or
    /// blank inline line): consume them, answer nothing.
    Ignored(usize),
    NeedMore,
    Error(RespError),
}

/// A client protocol error (the session answers `-ERR Protocol error: ...`
/// and closes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RespError {
    #[error("invalid multibulk length")]
    MultibulkLength,
    #[error("too many arguments")]
    TooManyArgs,
    #[error("expected '$', got '{}'", Printable(*.0))]
    ExpectedBulk(u8),
    #[error("invalid bulk length")]
    BulkLength,
    #[error("bulk string not terminated by CRLF")]
    BulkTerminator,
    #[error("command too large")]
    TooLarge,
    #[error("too big inline request")]
    InlineTooLong,
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    #[error("NUL byte in inline request")]
    InlineNul,
    /// A TLS handshake record (`rediss://`): the processor speaks plaintext RESP.
    #[error("TLS is not supported on this endpoint (plaintext RESP only)")]
    Tls,
}

/// A byte as Redis would print it in an error, without control characters.
struct Printable(u8);

impl std::fmt::Display for Printable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_ascii_graphic() && self.0 != b'\'' {
            write!(f, "{}", self.0 as char)
        } else {
            write!(f, "\\x{:02x}", self.0)
        }
    }
}

/// A multibulk command being read.
#[derive(Clone, Debug)]
struct Partial {
    count: usize,
    args: Vec<Range<usize>>,
    /// Where the next argument's `$` is.
    pos: usize,
}

/// Resumable parser of the command at the start of a buffer. Between calls
/// the caller may only append to the buffer; after a [`Parse::Command`] or
/// [`Parse::Ignored`] it consumes that many bytes from the front.
#[derive(Clone, Debug, Default)]
pub struct CommandParser {
    partial: Option<Partial>,
}

/// A length line starting at `start` (just after the type byte): its
/// content and where the next byte is. `None`: need more bytes.
fn length_line(buf: &[u8], start: usize) -> Option<Result<(&[u8], usize), ()>> {
    let rest = buf.get(start..)?;
    let window = &rest[..rest.len().min(MAX_LENGTH_LINE + 2)];
    match window.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(i) if window[i] == b'\n' || i > MAX_LENGTH_LINE => Some(Err(())),
        Some(i) => match window.get(i + 1) {
            Some(b'\n') => Some(Ok((&rest[..i], start + i + 2))),
            Some(_) => Some(Err(())),
            None => None,
        },
        None if window.len() > MAX_LENGTH_LINE => Some(Err(())),
        None => None,
    }
}

/// A canonical non-negative decimal (`0`, or no leading zero), at most 19 digits.
fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || (s.len() > 1 && s[0] == b'0') {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

impl CommandParser {
    /// Forget a partly read command (the caller dropped the buffer).
    pub fn reset(&mut self) {
        self.partial = None;
    }

    /// The command at the start of `buf`; see the module docs.
    pub fn parse(&mut self, buf: &[u8], limits: &Limits) -> Parse {
        let r = self.step(buf, limits);
        if matches!(r, Parse::Error(_)) {
            self.partial = None;
        }
        r
    }

    fn step(&mut self, buf: &[u8], limits: &Limits) -> Parse {
        let mut p = match self.partial.take() {
            Some(p) => p,
            None => {
                let Some(&first) = buf.first() else {
                    return Parse::NeedMore;
                };
                if first != b'*' {
                    return inline(buf, limits);
                }
                let (line, next) = match length_line(buf, 1) {
                    None => return Parse::NeedMore,
                    Some(Err(())) => return Parse::Error(RespError::MultibulkLength),
                    Some(Ok(x)) => x,
                };
                // Redis reads a count of zero or below as "nothing".
                if let Some(neg) = line.strip_prefix(b"-") {
                    return match decimal(neg) {
                        Some(_) => Parse::Ignored(next),
                        None => Parse::Error(RespError::MultibulkLength),
                    };
                }
                let Some(count) = decimal(line) else {
                    return Parse::Error(RespError::MultibulkLength);
                };
                if count == 0 {
                    return Parse::Ignored(next);
                }
                if count > limits.max_args as u64 {
                    return Parse::Error(RespError::TooManyArgs);
                }
                // At least `$0\r\n\r\n` (6 bytes) per argument.
                let least = (next as u64).saturating_add(count.saturating_mul(6));
                if least > limits.max_message as u64 {
                    return Parse::Error(RespError::TooLarge);
                }
                let count = count as usize;
                Partial {
                    count,
                    args: Vec::with_capacity(count.min(64)),
                    pos: next,
                }
            }
        };
        while p.args.len() < p.count {
            let Some(&t) = buf.get(p.pos) else {
                self.partial = Some(p);
                return Parse::NeedMore;
            };
            if t != b'$' {
                return Parse::Error(RespError::ExpectedBulk(t));
            }
            let (line, start) = match length_line(buf, p.pos + 1) {
                None => {
                    self.partial = Some(p);
                    return Parse::NeedMore;
                }
                Some(Err(())) => return Parse::Error(RespError::BulkLength),
                Some(Ok(x)) => x,
            };
            let Some(len) = decimal(line) else {
                return Parse::Error(RespError::BulkLength);
            };
            // The rest of the arguments need 6 bytes each at least.
            let left = (p.count - p.args.len() - 1) as u64;
            let end = (start as u64).saturating_add(len);
            if end.saturating_add(2).saturating_add(left.saturating_mul(6))
                > limits.max_message as u64
            {
                return Parse::Error(RespError::TooLarge);
            }
            let end = end as usize;
            if buf.len() < end + 2 {
                self.partial = Some(p);
                return Parse::NeedMore;
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Parse::Error(RespError::BulkTerminator);
            }
            p.args.push(start..end);
            p.pos = end + 2;
        }
        Parse::Command(Command {
            len: p.pos,
            frame: Frame::Multibulk(p.args),
        })
    }
}

/// An inline command: one line up to `\n` (a `\r` before it is dropped).
fn inline(buf: &[u8], limits: &Limits) -> Parse {
    // No command starts with 0x16; a TLS ClientHello does (and may hold no
    // newline for a while): refuse it at once.
    if buf.first() == Some(&0x16) {
        return Parse::Error(RespError::Tls);
    }
    let max = MAX_INLINE.min(limits.max_message);
    let window = &buf[..buf.len().min(max)];
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= max {
            Parse::Error(RespError::InlineTooLong)
        } else {
            Parse::NeedMore
        };
    };
    let mut line = &buf[..nl];
    if let Some(l) = line.strip_suffix(b"\r") {
        line = l;
    }
    // Redis finds the line with strchr: a NUL hides the rest of it.
    if line.contains(&0) {
        return Parse::Error(RespError::InlineNul);
    }
    match split_args(line) {
        Some(args) if args.is_empty() => Parse::Ignored(nl + 1),
        Some(args) if args.len() > limits.max_args => Parse::Error(RespError::TooManyArgs),
        Some(args) => Parse::Command(Command {
            len: nl + 1,
            frame: Frame::Inline(args),
        }),
        None => Parse::Error(RespError::UnbalancedQuotes),
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Redis' `sdssplitargs`: words separated by blanks; `"..."` with C-like
/// escapes (`\n \r \t \b \a \\ \"` and `\xHH`), `'...'` with `\'` only; a
/// closing quote must be followed by a blank or the end. `None`: unbalanced.
#[must_use]
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && (line[i].is_ascii_whitespace() || line[i] == 0x0b) {
            i += 1;
        }
        if i >= n {
            return Some(args);
        }
        let mut cur = Vec::new();
        let (mut dq, mut sq) = (false, false);
        loop {
            let c = line.get(i).copied();
            if dq {
                let c = c?;
                match (c, line.get(i + 1).copied()) {
                    (b'\\', Some(b'x'))
                        if line.get(i + 2).and_then(|&b| hex(b)).is_some()
                            && line.get(i + 3).and_then(|&b| hex(b)).is_some() =>
                    {
                        let hi = hex(line[i + 2]).unwrap_or(0);
                        let lo = hex(line[i + 3]).unwrap_or(0);
                        cur.push(hi * 16 + lo);
                        i += 3;
                    }
                    (b'\\', Some(e)) => {
                        cur.push(match e {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                        i += 1;
                    }
                    (b'"', next) => {
                        if next.is_some_and(|b| !(b.is_ascii_whitespace() || b == 0x0b)) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    (c, _) => cur.push(c),
                }
            } else if sq {
                let c = c?;
                match (c, line.get(i + 1).copied()) {
                    (b'\\', Some(b'\'')) => {
                        cur.push(b'\'');
                        i += 1;
                    }
                    (b'\'', next) => {
                        if next.is_some_and(|b| !(b.is_ascii_whitespace() || b == 0x0b)) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    (c, _) => cur.push(c),
                }
            } else {
                match c {
                    None | Some(b' ' | b'\n' | b'\r' | b'\t' | 0) => break,
                    Some(b'"') => dq = true,
                    Some(b'\'') => sq = true,
                    Some(c) => cur.push(c),
                }
            }
            i += 1;
        }
        args.push(cur);
    }
}

/// Appends `args` as a multibulk command.
pub fn encode_command(args: &[&[u8]], out: &mut Vec<u8>) {
    out.reserve(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        out.extend_from_slice(a.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// A RESP simple error line `-<text>\r\n`; `text` is cut at 512 bytes and
/// every byte that is not printable ASCII becomes `?` (an error line must not
/// carry CR or LF, and client-chosen names must not forge a second reply).
#[must_use]
pub fn error_line(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len().min(512) + 3);
    out.push(b'-');
    out.extend(
        text.bytes()
            .take(512)
            .map(|b| if (0x20..0x7f).contains(&b) { b } else { b'?' }),
    );
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
#[path = "resp_tests.rs"]
mod tests;
