//! Buffered, bounded reading of whole messages from either side.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::wire::{self, Parse, WireError};

/// Why reading a message failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    #[error("connection closed mid-message")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// One whole message: its tag and its raw bytes (tag and length included).
#[derive(Debug)]
pub(super) struct Message {
    pub(super) tag: u8,
    pub(super) raw: Bytes,
}

impl Message {
    /// The body after tag and length.
    pub(super) fn body(&self) -> &[u8] {
        &self.raw[5..]
    }
}

/// A startup-phase packet: code and payload.
#[derive(Debug)]
pub(super) struct Startup {
    pub(super) code: u32,
    pub(super) payload: Bytes,
}

/// A stream and the bytes read from it but not yet consumed.
pub(super) struct MsgReader<R> {
    pub(super) io: R,
    pub(super) buf: BytesMut,
}

impl<R: AsyncRead + Unpin> MsgReader<R> {
    pub(super) fn new(io: R) -> Self {
        Self::with_buf(io, BytesMut::with_capacity(8 * 1024))
    }

    pub(super) fn with_buf(io: R, buf: BytesMut) -> Self {
        Self { io, buf }
    }

    /// Reads more bytes; `Ok(false)` at end of stream.
    async fn fill(&mut self) -> std::io::Result<bool> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(8 * 1024);
        }
        Ok(self.io.read_buf(&mut self.buf).await? > 0)
    }

    /// The next startup-phase packet; `Ok(None)` when the peer closed
    /// before sending a byte of it.
    pub(super) async fn startup(&mut self) -> Result<Option<Startup>, ReadError> {
        loop {
            match wire::startup_frame(&self.buf) {
                Parse::Frame(f, used) => {
                    let mut raw = self.buf.split_to(used).freeze();
                    raw.advance(f.payload.start);
                    return Ok(Some(Startup {
                        code: f.code,
                        payload: raw,
                    }));
                }
                Parse::Error(e) => return Err(e.into()),
                Parse::NeedMore => {
                    if !self.fill().await? {
                        return if self.buf.is_empty() {
                            Ok(None)
                        } else {
                            Err(ReadError::Truncated)
                        };
                    }
                }
            }
        }
    }

    /// The next message of at most `max` bytes; `Ok(None)` when the peer
    /// closed between messages.
    pub(super) async fn message(&mut self, max: usize) -> Result<Option<Message>, ReadError> {
        loop {
            match wire::frame(&self.buf, max) {
                Parse::Frame(f, used) => {
                    return Ok(Some(Message {
                        tag: f.tag,
                        raw: self.buf.split_to(used).freeze(),
                    }));
                }
                Parse::Error(e) => return Err(e.into()),
                Parse::NeedMore => {
                    if !self.fill().await? {
                        return if self.buf.is_empty() {
                            Ok(None)
                        } else {
                            Err(ReadError::Truncated)
                        };
                    }
                }
            }
        }
    }
}
