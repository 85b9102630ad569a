//! Upstream replies on the wire: a streaming framer, no I/O.
//!
//! The session never buffers a whole reply: [`Framer::feed`] consumes bytes
//! as they arrive and says where each top-level message (a reply, or an
//! out-of-band push) ends, so that a local reply for a denied command is
//! written between two whole messages, never inside one. It understands
//! every RESP2 and RESP3 type, attributes (`|`, which belong to the value
//! after them), and RESP3's streamed strings (`$?`) and aggregates (`*?`),
//! with the nesting bounded by [`MAX_DEPTH`].
//!
//! For each message it keeps only what classifying it needs ([`Message`]):
//! its type, the first element of an array or push when that is a short
//! string (`message`, `subscribe`, ...), the third when it is an integer (a
//! subscription count), and the first bytes of a simple string (`OK`,
//! `RESET`, a `MONITOR` line).

/// Deepest aggregate nesting accepted from the upstream.
pub const MAX_DEPTH: usize = 128;
/// Longest length line (`$N`, `*N`, ...), CRLF excluded.
const MAX_LENGTH_LINE: usize = 20;
/// Bytes kept of a first element and of a simple string.
const CAPTURE: usize = 32;

/// A few bytes, inline.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Short {
    buf: [u8; CAPTURE],
    len: u8,
    /// More bytes followed than were kept.
    cut: bool,
}

impl Short {
    fn push(&mut self, data: &[u8]) {
        let room = CAPTURE - usize::from(self.len);
        let take = data.len().min(room);
        self.buf[usize::from(self.len)..usize::from(self.len) + take]
            .copy_from_slice(&data[..take]);
        self.len += take as u8;
        self.cut |= take < data.len();
    }

    /// The kept bytes.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    /// Exactly `s` (nothing was cut).
    #[must_use]
    pub fn is(&self, s: &[u8]) -> bool {
        !self.cut && self.bytes() == s
    }
}

impl std::fmt::Debug for Short {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.bytes()))?;
        if self.cut {
            f.write_str("...")?;
        }
        Ok(())
    }
}

/// What a complete top-level message looked like.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// The type byte of the value (after any attribute): `+ - : $ * % ~ > ...`.
    pub kind: u8,
    /// An array's or push's first element, when a bulk or simple string.
    pub first: Option<Short>,
    /// An array's or push's third element, when an integer.
    pub third: Option<i64>,
    /// The first bytes of a simple string.
    pub text: Short,
}

impl Message {
    /// A top-level error (`-...` or RESP3 blob error `!`).
    #[must_use]
    pub fn is_error(&self) -> bool {
        matches!(self.kind, b'-' | b'!')
    }

    /// The first element when the message is an array or a push.
    #[must_use]
    pub fn head(&self) -> Option<&Short> {
        matches!(self.kind, b'*' | b'>')
            .then_some(self.first.as_ref())
            .flatten()
    }
}

/// An upstream framing error: the session ends (the stream cannot be
/// resynchronized).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("unknown reply type byte 0x{0:02x}")]
    Type(u8),
    #[error("invalid length line")]
    Length,
    #[error("line not terminated by CRLF")]
    LineEnd,
    #[error("replies nested deeper than {MAX_DEPTH}")]
    TooDeep,
}

/// An aggregate being read.
#[derive(Clone, Copy, Debug)]
struct Agg {
    /// Elements still to come; `None` for a streamed aggregate (ends with `.`).
    left: Option<u64>,
    /// Elements seen (attributes excluded).
    index: u64,
    /// An attribute: when it completes it is not an element of its parent.
    attr: bool,
    /// A streamed string (`$?`): its elements are `;N` chunks.
    chunks: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Expecting a type byte.
    Type,
    /// The line after type byte `t`; `cr` when the last byte was `\r`.
    Line { t: u8, cr: bool },
    /// Blob payload bytes still to come (then CRLF).
    Data { left: u64 },
    /// The CRLF after blob data: how many of its bytes were seen.
    DataEnd { seen: u8 },
}

/// What the current leaf keeps for the message summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Capture {
    None,
    First,
    Third,
    Text,
}

/// The streaming framer (see the module docs).
#[derive(Clone, Debug)]
pub struct Framer {
    stack: Vec<Agg>,
    state: State,
    /// The current line's first bytes (lengths, integers, texts).
    line: Short,
    capture: Capture,
    /// Inside a message (between its first byte and its end).
    in_message: bool,
    msg: Message,
    /// The blob being read is a chunk of a streamed string.
    in_chunk: bool,
}

impl Default for Framer {
    fn default() -> Self {
        Self::new()
    }
}

fn length(line: &[u8]) -> Result<Length, FrameError> {
    match line {
        b"?" => Ok(Length::Streamed),
        b"-1" => Ok(Length::Null),
        _ if line.is_empty()
            || line.len() > 19
            || (line.len() > 1 && line[0] == b'0')
            || !line.iter().all(u8::is_ascii_digit) =>
        {
            Err(FrameError::Length)
        }
        _ => Ok(Length::N(
            line.iter().fold(0u64, |n, &b| n * 10 + u64::from(b - b'0')),
        )),
    }
}

enum Length {
    N(u64),
    Null,
    Streamed,
}

impl Framer {
    #[must_use]
    pub fn new() -> Self {
        Self {
            stack: Vec::new(),
            state: State::Type,
            line: Short::default(),
            capture: Capture::None,
            in_message: false,
            msg: Message::default(),
            in_chunk: false,
        }
    }

    /// Between two messages (the next byte starts a new one).
    #[must_use]
    pub fn at_boundary(&self) -> bool {
        !self.in_message
    }

    /// Consumes bytes of `data` up to the end of the current message: how
    /// many were consumed, and the message when it ended there. Call again
    /// with the rest.
    ///
    /// # Errors
    /// A framing error; the framer is then unusable.
    pub fn feed(&mut self, data: &[u8]) -> Result<(usize, Option<Message>), FrameError> {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::Type => {
                    let t = data[i];
                    i += 1;
                    self.start_value(t)?;
                }
                State::Line { t, cr } => {
                    let b = data[i];
                    if cr {
                        i += 1;
                        if b != b'\n' {
                            return Err(FrameError::LineEnd);
                        }
                        if let Some(m) = self.line_done(t)? {
                            return Ok((i, Some(m)));
                        }
                        continue;
                    }
                    // Scan the run of ordinary bytes at once.
                    let rest = &data[i..];
                    let run = rest
                        .iter()
                        .position(|&c| c == b'\r' || c == b'\n')
                        .unwrap_or(rest.len());
                    self.line.push(&rest[..run]);
                    if is_length_type(t) && usize::from(self.line.len) > MAX_LENGTH_LINE {
                        return Err(FrameError::Length);
                    }
                    i += run;
                    match rest.get(run) {
                        Some(b'\r') => {
                            i += 1;
                            self.state = State::Line { t, cr: true };
                        }
                        Some(_) => return Err(FrameError::LineEnd),
                        None => {}
                    }
                }
                State::Data { left } => {
                    let take = (data.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    if matches!(self.capture, Capture::First) {
                        if let Some(first) = self.msg.first.as_mut() {
                            first.push(&data[i..i + take]);
                        }
                    }
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd { seen: 0 }
                    } else {
                        State::Data { left }
                    };
                }
                State::DataEnd { seen } => {
                    let want = if seen == 0 { b'\r' } else { b'\n' };
                    if data[i] != want {
                        return Err(FrameError::LineEnd);
                    }
                    i += 1;
                    if seen == 0 {
                        self.state = State::DataEnd { seen: 1 };
                    } else {
                        self.state = State::Type;
                        if self.in_chunk {
                            // A chunk of a streamed string: the next is `;N`.
                            self.in_chunk = false;
                        } else if let Some(m) = self.value_done(false) {
                            return Ok((i, Some(m)));
                        }
                    }
                }
            }
        }
        Ok((i, None))
    }

    /// A type byte: what follows is a line (`+-:_,#(` content, the length
    /// of `$!=*%~>|`, `;N` of a chunk, the empty line of `.`).
    fn start_value(&mut self, t: u8) -> Result<(), FrameError> {
        let top = self.stack.last().copied();
        let valid = match top {
            Some(a) if a.chunks => t == b';',
            Some(a) if a.left.is_none() => t == b'.' || is_value_type(t),
            _ => is_value_type(t),
        };
        if !valid {
            return Err(FrameError::Type(t));
        }
        if !self.in_message {
            self.in_message = true;
            self.msg = Message::default();
        }
        if self.stack.is_empty() && t != b'|' {
            self.msg.kind = t;
        }
        // What this value keeps: the first and third elements of a
        // top-level array or push, the text of a top-level simple string.
        self.capture = match (self.stack.as_slice(), t) {
            ([], b'+') => Capture::Text,
            ([a], b'+' | b'$') if a.index == 0 && !a.attr && !a.chunks && self.top_is_list() => {
                Capture::First
            }
            ([a], b':') if a.index == 2 && !a.attr && self.top_is_list() => Capture::Third,
            _ => Capture::None,
        };
        self.line = Short::default();
        self.state = State::Line { t, cr: false };
        Ok(())
    }

    fn top_is_list(&self) -> bool {
        matches!(self.msg.kind, b'*' | b'>')
    }

    /// The line after type byte `t` is complete.
    fn line_done(&mut self, t: u8) -> Result<Option<Message>, FrameError> {
        self.state = State::Type;
        let line = self.line;
        match t {
            b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {
                match self.capture {
                    Capture::Text => self.msg.text = line,
                    Capture::First => self.msg.first = Some(line),
                    Capture::Third => {
                        self.msg.third = std::str::from_utf8(line.bytes())
                            .ok()
                            .filter(|_| !line.cut)
                            .and_then(|s| s.parse().ok());
                    }
                    Capture::None => {}
                }
                Ok(self.value_done(false))
            }
            b'$' | b'!' | b'=' => match length(line.bytes())? {
                Length::Null => Ok(self.value_done(false)),
                Length::Streamed if t == b'$' => {
                    self.push(Agg {
                        left: None,
                        index: 0,
                        attr: false,
                        chunks: true,
                    })?;
                    Ok(None)
                }
                Length::Streamed => Err(FrameError::Length),
                Length::N(n) => {
                    if self.capture == Capture::First {
                        self.msg.first = Some(Short::default());
                    }
                    self.state = if n == 0 {
                        State::DataEnd { seen: 0 }
                    } else {
                        State::Data { left: n }
                    };
                    Ok(None)
                }
            },
            b';' => match length(line.bytes())? {
                Length::N(0) => {
                    // The end of a streamed string.
                    self.stack.pop();
                    Ok(self.value_done(false))
                }
                Length::N(n) => {
                    self.in_chunk = true;
                    self.state = State::Data { left: n };
                    Ok(None)
                }
                _ => Err(FrameError::Length),
            },
            b'.' => {
                if !line.bytes().is_empty() {
                    return Err(FrameError::Length);
                }
                let agg = self.stack.pop().ok_or(FrameError::Type(b'.'))?;
                Ok(self.value_done(agg.attr))
            }
            _ => {
                let attr = t == b'|';
                let pairs = matches!(t, b'%' | b'|');
                match length(line.bytes())? {
                    Length::Null => Ok(self.value_done(attr)),
                    Length::Streamed => {
                        self.push(Agg {
                            left: None,
                            index: 0,
                            attr,
                            chunks: false,
                        })?;
                        Ok(None)
                    }
                    Length::N(0) => Ok(self.value_done(attr)),
                    Length::N(n) => {
                        let left = if pairs {
                            n.checked_mul(2).ok_or(FrameError::Length)?
                        } else {
                            n
                        };
                        self.push(Agg {
                            left: Some(left),
                            index: 0,
                            attr,
                            chunks: false,
                        })?;
                        Ok(None)
                    }
                }
            }
        }
    }

    fn push(&mut self, agg: Agg) -> Result<(), FrameError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(FrameError::TooDeep);
        }
        self.stack.push(agg);
        Ok(())
    }

    /// A value ended (`attr`: it was an attribute): count it in its parent,
    /// closing every aggregate it completes; the message when the top level
    /// completes.
    fn value_done(&mut self, mut attr: bool) -> Option<Message> {
        loop {
            let Some(top) = self.stack.last_mut() else {
                if attr {
                    // An attribute before the top-level value: read on.
                    return None;
                }
                self.in_message = false;
                return Some(self.msg);
            };
            if attr {
                return None;
            }
            top.index += 1;
            match &mut top.left {
                Some(left) => {
                    *left -= 1;
                    if *left > 0 {
                        return None;
                    }
                }
                None => return None,
            }
            attr = top.attr;
            self.stack.pop();
        }
    }
}

/// Type bytes that start a value.
fn is_value_type(t: u8) -> bool {
    matches!(
        t,
        b'+' | b'-'
            | b':'
            | b'$'
            | b'*'
            | b'_'
            | b','
            | b'#'
            | b'!'
            | b'='
            | b'('
            | b'%'
            | b'~'
            | b'>'
            | b'|'
    )
}

/// Types whose line is a length (bounded), not content.
fn is_length_type(t: u8) -> bool {
    matches!(
        t,
        b'$' | b'!' | b'=' | b'*' | b'%' | b'~' | b'>' | b'|' | b';' | b'.'
    )
}

#[cfg(test)]
#[path = "reply_tests.rs"]
mod tests;
