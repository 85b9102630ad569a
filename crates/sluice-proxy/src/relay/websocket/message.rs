//! Reassembly of client → server data messages.
//!
//! Text messages (and compressed binary messages, which must be inflated
//! before they can be forwarded uncompressed) are collected until FIN;
//! uncompressed binary frames stream through unchanged. Control frames
//! never reach this module: the relay handles them between fragments.

use bytes::BytesMut;

use super::frame::{apply_mask, Header, Opcode};

/// Kind of a complete data message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    Binary,
}

/// A reassembled message, unmasked, still compressed if `compressed`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) kind: Kind,
    pub(crate) compressed: bool,
    pub(crate) payload: BytesMut,
}

/// What to do with one data frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// An uncompressed binary frame: forward the original bytes.
    PassThrough {
        /// First frame of a binary message (policy may refuse binary).
        first: bool,
    },
    /// Buffered; the message is not complete yet.
    Pending,
    /// The last fragment arrived.
    Complete(Message),
}

/// Why a data frame is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MessageError {
    #[error("message exceeds the size limit")]
    TooBig,
    #[error("message exceeds the fragment limit")]
    TooManyFragments,
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    #[error("new data frame while a fragmented message is in progress")]
    ExpectedContinuation,
}

impl MessageError {
    pub(crate) fn close_code(self) -> u16 {
        match self {
            Self::TooBig => 1009,
            _ => 1002,
        }
    }
}

/// Limits for assembled messages.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AssemblyLimits {
    /// Largest text message (uncompressed; compressed ones get a little
    /// slack here and are capped again when inflated).
    pub(crate) max_text: usize,
    /// Largest compressed binary message.
    pub(crate) max_binary: usize,
    pub(crate) max_fragments: usize,
}

enum State {
    Idle,
    /// An uncompressed binary message is streaming through.
    Streaming,
    Assembling {
        kind: Kind,
        compressed: bool,
        buf: BytesMut,
        fragments: usize,
    },
}

pub(crate) struct Reassembler {
    state: State,
    limits: AssemblyLimits,
}

impl Reassembler {
    pub(crate) fn new(limits: AssemblyLimits) -> Self {
        Self {
            state: State::Idle,
            limits,
        }
    }

    /// A message is partly collected (its idle/total timers apply).
    pub(crate) fn assembling(&self) -> bool {
        matches!(self.state, State::Assembling { .. })
    }

    /// Take one data frame (`payload` as on the wire, masked per `h.mask`).
    pub(crate) fn push(&mut self, h: &Header, payload: &[u8]) -> Result<Step, MessageError> {
        let state = std::mem::replace(&mut self.state, State::Idle);
        let (kind, compressed, mut buf, fragments) = match (state, h.opcode) {
            (State::Idle, Opcode::Binary) if !h.rsv1 => {
                if !h.fin {
                    self.state = State::Streaming;
                }
                return Ok(Step::PassThrough { first: true });
            }
            (State::Idle, Opcode::Text) => (Kind::Text, h.rsv1, BytesMut::new(), 1),
            (State::Idle, Opcode::Binary) => (Kind::Binary, true, BytesMut::new(), 1),
            (State::Idle, _) => return Err(MessageError::UnexpectedContinuation),
            (State::Streaming, Opcode::Continuation) => {
                if !h.fin {
                    self.state = State::Streaming;
                }
                return Ok(Step::PassThrough { first: false });
            }
            (
                State::Assembling {
                    kind,
                    compressed,
                    buf,
                    fragments,
                },
                Opcode::Continuation,
            ) => (kind, compressed, buf, fragments + 1),
            (_, _) => return Err(MessageError::ExpectedContinuation),
        };
        if fragments > self.limits.max_fragments {
            return Err(MessageError::TooManyFragments);
        }
        let max = match (kind, compressed) {
            (Kind::Text, false) => self.limits.max_text,
            // Incompressible text grows a little when deflated (stored
            // blocks); the inflated size is capped at `max_text` again.
            (Kind::Text, true) => self
                .limits
                .max_text
                .saturating_add(self.limits.max_text / 1024 + 64),
            (Kind::Binary, _) => self.limits.max_binary,
        };
        if buf.len().saturating_add(payload.len()) > max {
            return Err(MessageError::TooBig);
        }
        let start = buf.len();
        buf.extend_from_slice(payload);
        if let Some(key) = h.mask {
            apply_mask(&mut buf[start..], key, 0);
        }
        if h.fin {
            return Ok(Step::Complete(Message {
                kind,
                compressed,
                payload: buf,
            }));
        }
        self.state = State::Assembling {
            kind,
            compressed,
            buf,
            fragments,
        };
        Ok(Step::Pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AssemblyLimits {
        AssemblyLimits {
            max_text: 16,
            max_binary: 32,
            max_fragments: 3,
        }
    }

    fn hdr(fin: bool, rsv1: bool, opcode: Opcode, len: usize) -> Header {
        Header {
            fin,
            rsv1,
            opcode,
            mask: Some([1, 2, 3, 4]),
            header_len: 6,
            payload_len: len,
        }
    }

    fn masked(data: &[u8]) -> Vec<u8> {
        let mut v = data.to_vec();
        apply_mask(&mut v, [1, 2, 3, 4], 0);
        v
    }

    #[test]
    fn fragments_are_joined_and_unmasked() {
        let mut r = Reassembler::new(limits());
        let s = r.push(&hdr(false, false, Opcode::Text, 3), &masked(b"hel"));
        assert_eq!(s, Ok(Step::Pending));
        assert!(r.assembling());
        let s = r.push(&hdr(false, false, Opcode::Continuation, 2), &masked(b"lo"));
        assert_eq!(s, Ok(Step::Pending));
        let Ok(Step::Complete(m)) =
            r.push(&hdr(true, false, Opcode::Continuation, 1), &masked(b"!"))
        else {
            panic!("expected a complete message");
        };
        assert_eq!(
            (m.kind, m.compressed, &m.payload[..]),
            (Kind::Text, false, &b"hello!"[..])
        );
        assert!(!r.assembling());
    }

    #[test]
    fn binary_streams_and_compressed_binary_assembles() {
        let mut r = Reassembler::new(limits());
        let first = r.push(&hdr(false, false, Opcode::Binary, 1), b"x");
        assert_eq!(first, Ok(Step::PassThrough { first: true }));
        assert!(!r.assembling());
        let next = r.push(&hdr(true, false, Opcode::Continuation, 1), b"y");
        assert_eq!(next, Ok(Step::PassThrough { first: false }));
        let Ok(Step::Complete(m)) = r.push(&hdr(true, true, Opcode::Binary, 2), &masked(b"zz"))
        else {
            panic!("expected a complete message");
        };
        assert_eq!((m.kind, m.compressed), (Kind::Binary, true));
    }

    #[test]
    fn sequencing_errors() {
        let mut r = Reassembler::new(limits());
        let e = r.push(&hdr(true, false, Opcode::Continuation, 0), b"");
        assert_eq!(e, Err(MessageError::UnexpectedContinuation));
        let mut r = Reassembler::new(limits());
        r.push(&hdr(false, false, Opcode::Text, 1), b"a").unwrap();
        let e = r.push(&hdr(true, false, Opcode::Text, 1), b"b");
        assert_eq!(e, Err(MessageError::ExpectedContinuation));
        let mut r = Reassembler::new(limits());
        r.push(&hdr(false, false, Opcode::Binary, 1), b"a").unwrap();
        let e = r.push(&hdr(true, false, Opcode::Binary, 1), b"b");
        assert_eq!(e, Err(MessageError::ExpectedContinuation));
    }

    #[test]
    fn limits_apply() {
        let mut r = Reassembler::new(limits());
        r.push(&hdr(false, false, Opcode::Text, 1), b"a").unwrap();
        r.push(&hdr(false, false, Opcode::Continuation, 1), b"a")
            .unwrap();
        r.push(&hdr(false, false, Opcode::Continuation, 1), b"a")
            .unwrap();
        let e = r.push(&hdr(true, false, Opcode::Continuation, 1), b"a");
        assert_eq!(e, Err(MessageError::TooManyFragments));
        assert_eq!(MessageError::TooManyFragments.close_code(), 1002);

        let mut r = Reassembler::new(limits());
        r.push(&hdr(false, false, Opcode::Text, 10), &[0; 10])
            .unwrap();
        let e = r.push(&hdr(true, false, Opcode::Continuation, 7), &[0; 7]);
        assert_eq!(e, Err(MessageError::TooBig));
        assert_eq!(MessageError::TooBig.close_code(), 1009);
        // Binary compressed messages use the binary cap.
        let mut r = Reassembler::new(limits());
        assert!(matches!(
            r.push(&hdr(true, true, Opcode::Binary, 20), &[0; 20]),
            Ok(Step::Complete(_))
        ));
    }
}
