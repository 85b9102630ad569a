//! A writer that refuses to pass a reserved credential marker: every byte
//! is checked (with the tail of the previous write, so split markers are
//! caught) before it is handed to the upstream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use sluice_policy::placeholder;
use tokio::io::AsyncWrite;

/// Wraps the upstream writer while a request body streams.
pub(crate) struct MarkerGuard<W> {
    inner: W,
    tail: Vec<u8>,
    enabled: bool,
}

impl<W> MarkerGuard<W> {
    pub(crate) fn new(inner: W, enabled: bool) -> Self {
        Self {
            inner,
            tail: Vec::new(),
            enabled,
        }
    }
}

/// The error a guarded write fails with.
pub(crate) fn marker_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "reserved credential placeholder in request body",
    )
}

impl<W: AsyncWrite + Unpin> AsyncWrite for MarkerGuard<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.enabled {
            let mut window = Vec::with_capacity(this.tail.len() + buf.len());
            window.extend_from_slice(&this.tail);
            window.extend_from_slice(buf);
            if placeholder::contains_marker(&window) {
                return Poll::Ready(Err(marker_error()));
            }
        }
        let n = match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => n,
            other => return other,
        };
        if this.enabled {
            this.tail.extend_from_slice(&buf[..n]);
            let keep = placeholder::MAX_MARKER_LEN;
            if this.tail.len() > keep {
                let cut = this.tail.len() - keep;
                this.tail.drain(..cut);
            }
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
