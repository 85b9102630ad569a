//! RFC 6455 frame codec: pure functions, no I/O.
//!
//! [`parse`] looks at the start of a buffer and answers with one of three
//! outcomes: a complete frame (its header; the payload is the next
//! `payload_len` bytes after `header_len`), "need more bytes", or a framing
//! error (always a 1002 protocol error for the peer). [`encode`] writes one
//! frame.

use bytes::{BufMut, BytesMut};

/// Frame opcodes defined by RFC 6455 (the reserved ones are parse errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Close, ping and pong.
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// Whether frames from this peer must, or must not, be masked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Masking {
    /// Client → server frames (RFC 6455 §5.1).
    Required,
    /// Server → client frames.
    Forbidden,
}

/// What a parser accepts from one peer.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    pub masking: Masking,
    /// RSV1 is the permessage-deflate "compressed" bit (RFC 7692): allowed
    /// only when deflate was negotiated, and only on a message's first frame.
    pub rsv1_allowed: bool,
    /// Largest payload of a single frame.
    pub max_payload: usize,
}

/// A parsed frame header. The payload is
/// `buf[header_len..header_len + payload_len]`, still masked if `mask` is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub rsv1: bool,
    pub opcode: Opcode,
    pub mask: Option<[u8; 4]>,
    pub header_len: usize,
    pub payload_len: usize,
}

impl Header {
    /// Header plus payload.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// Why bytes are not a valid frame. Each is a protocol error (close 1002).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    #[error("reserved bits set")]
    ReservedBits,
    #[error("fragmented control frame")]
    FragmentedControl,
    #[error("control frame payload over 125 bytes")]
    ControlTooLong,
    #[error("payload length has the most significant bit set")]
    LengthOverflow,
    #[error("frame payload over the limit")]
    TooLarge,
    #[error("unmasked frame where masking is required")]
    MaskRequired,
    #[error("masked frame where masking is forbidden")]
    MaskForbidden,
}

/// The three outcomes of [`parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parse {
    Frame(Header),
    NeedMore,
    Error(FrameError),
}

/// Parse the frame at the start of `buf`. Errors are reported as soon as
/// the bytes that show them are present; a frame is returned only when its
/// whole payload is in `buf`.
pub fn parse(buf: &[u8], rules: &Rules) -> Parse {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Parse::NeedMore;
    };
    let fin = b0 & 0x80 != 0;
    let rsv1 = b0 & 0x40 != 0;
    let Some(opcode) = Opcode::from_bits(b0 & 0x0F) else {
        return Parse::Error(FrameError::ReservedOpcode(b0 & 0x0F));
    };
    if b0 & 0x30 != 0
        || (rsv1 && (!rules.rsv1_allowed || opcode.is_control() || opcode == Opcode::Continuation))
    {
        return Parse::Error(FrameError::ReservedBits);
    }
    let masked = b1 & 0x80 != 0;
    match (rules.masking, masked) {
        (Masking::Required, false) => return Parse::Error(FrameError::MaskRequired),
        (Masking::Forbidden, true) => return Parse::Error(FrameError::MaskForbidden),
        _ => {}
    }
    let len7 = b1 & 0x7F;
    if opcode.is_control() {
        if !fin {
            return Parse::Error(FrameError::FragmentedControl);
        }
        if len7 > 125 {
            return Parse::Error(FrameError::ControlTooLong);
        }
    }
    let (payload_len, mut pos) = match len7 {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Parse::NeedMore,
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(b);
                let len = u64::from_be_bytes(be);
                if len >> 63 != 0 {
                    return Parse::Error(FrameError::LengthOverflow);
                }
                (len, 10)
            }
            None => return Parse::NeedMore,
        },
        n => (u64::from(n), 2),
    };
    let payload_len = match usize::try_from(payload_len) {
        Ok(n) if n <= rules.max_payload => n,
        _ => return Parse::Error(FrameError::TooLarge),
    };
    let mask = if masked {
        let Some(k) = buf.get(pos..pos + 4) else {
            return Parse::NeedMore;
        };
        pos += 4;
        Some([k[0], k[1], k[2], k[3]])
    } else {
        None
    };
    if buf.len() - pos < payload_len {
        return Parse::NeedMore;
    }
    Parse::Frame(Header {
        fin,
        rsv1,
        opcode,
        mask,
        header_len: pos,
        payload_len,
    })
}

/// XOR `data` with `key`, where `data` starts `offset` bytes into the
/// masked payload (masking is its own inverse).
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= key[(offset + i) % 4];
    }
}

/// Append one frame to `out`, masking the payload with `mask` if given.
pub fn encode(
    out: &mut BytesMut,
    fin: bool,
    rsv1: bool,
    opcode: Opcode,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) {
    let mut b0 = opcode.bits();
    if fin {
        b0 |= 0x80;
    }
    if rsv1 {
        b0 |= 0x40;
    }
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    out.reserve(14 + payload.len());
    out.put_u8(b0);
    match payload.len() {
        n @ 0..=125 => out.put_u8(mask_bit | n as u8),
        n @ 126..=0xFFFF => {
            out.put_u8(mask_bit | 126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(mask_bit | 127);
            out.put_u64(n as u64);
        }
    }
    match mask {
        Some(key) => {
            out.put_slice(&key);
            let start = out.len();
            out.put_slice(payload);
            apply_mask(&mut out[start..], key, 0);
        }
        None => out.put_slice(payload),
    }
}

/// A close frame's payload: the code and a reason cut to fit the 125-byte
/// control limit at a character boundary.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut p = Vec::with_capacity(2 + end);
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(&reason.as_bytes()[..end]);
    p
}

/// Validate a received (unmasked) close payload: empty, or a sendable code
/// followed by UTF-8. `Err` carries the close code to fail with.
pub fn check_close_payload(payload: &[u8]) -> Result<(), u16> {
    match payload {
        [] => Ok(()),
        [_] => Err(1002),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                Err(1002)
            } else if std::str::from_utf8(reason).is_err() {
                Err(1007)
            } else {
                Ok(())
            }
        }
    }
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
