use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bounds for reading one message head.
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    /// Largest head accepted (request line + headers + blank line).
    pub max_bytes: usize,
    /// Time allowed from the first wait to the complete head.
    pub timeout: Duration,
}

/// Why a head could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    /// Clean EOF before any byte of a new message.
    #[error("connection closed")]
    Closed,
    #[error("connection closed in the middle of a message head")]
    Truncated,
    #[error("message head exceeds {0} bytes")]
    TooLarge(usize),
    #[error("timed out reading the message head")]
    Timeout,
    #[error("bare CR or LF in message head")]
    BareLineEnding,
    #[error("read error: {0}")]
    Io(#[from] std::io::Error),
}

/// Read until `\r\n\r\n` is in `buf` (which may already hold pipelined
/// bytes). Returns the head length; bytes after it stay in `buf`.
///
/// # Errors
/// [`HeadError`] on EOF, size limit or timeout.
pub async fn read_head<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    limits: HeadLimits,
) -> Result<usize, HeadError> {
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let mut scanned = 0usize;
    loop {
        let from = scanned.saturating_sub(3);
        if let Some(pos) = find_end(&buf[from..]) {
            let end = from + pos + 4;
            // Only the head is checked: bytes after it belong to a body.
            check_line_endings(&buf[..end], scanned.saturating_sub(1))?;
            if end > limits.max_bytes {
                return Err(HeadError::TooLarge(limits.max_bytes));
            }
            return Ok(end);
        }
        check_line_endings(buf, scanned.saturating_sub(1))?;
        scanned = buf.len();
        if buf.len() >= limits.max_bytes {
            return Err(HeadError::TooLarge(limits.max_bytes));
        }
        buf.reserve(4096.min(limits.max_bytes - buf.len()).max(1));
        let read = tokio::time::timeout_at(deadline, reader.read_buf(buf)).await;
        match read {
            Err(_) => return Err(HeadError::Timeout),
            Ok(Err(e)) => return Err(HeadError::Io(e)),
            Ok(Ok(0)) if buf.is_empty() => return Err(HeadError::Closed),
            Ok(Ok(0)) => return Err(HeadError::Truncated),
            Ok(Ok(_)) => {}
        }
    }
}

/// Refuse a bare LF (or a CR not followed by LF) as soon as it arrives,
/// instead of waiting for a CRLFCRLF that a bare-LF client never sends.
fn check_line_endings(buf: &[u8], from: usize) -> Result<(), HeadError> {
    for i in from..buf.len() {
        let bad = match buf[i] {
            b'\n' => i == 0 || buf[i - 1] != b'\r',
            b'\r' => buf.get(i + 1).is_some_and(|&n| n != b'\n'),
            _ => false,
        };
        if bad {
            return Err(HeadError::BareLineEnding);
        }
    }
    Ok(())
}

fn find_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_bytes: 64,
        timeout: Duration::from_secs(1),
    };

    #[tokio::test]
    async fn reads_head_and_keeps_pipelined_bytes() {
        let mut input: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\n";
        let mut buf = BytesMut::new();
        let n = read_head(&mut input, &mut buf, LIMITS).await.unwrap();
        assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(&buf[n..], b"GET /2 HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn limits_and_eof() {
        let mut big: &[u8] = &[b'a'; 100];
        let mut buf = BytesMut::new();
        assert!(matches!(
            read_head(&mut big, &mut buf, LIMITS).await,
            Err(HeadError::TooLarge(64))
        ));
        let mut empty: &[u8] = b"";
        assert!(matches!(
            read_head(&mut empty, &mut BytesMut::new(), LIMITS).await,
            Err(HeadError::Closed)
        ));
        let mut part: &[u8] = b"GET / HT";
        assert!(matches!(
            read_head(&mut part, &mut BytesMut::new(), LIMITS).await,
            Err(HeadError::Truncated)
        ));
    }

    #[tokio::test]
    async fn body_bytes_after_the_head_are_not_judged_as_head() {
        let mut input: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nhi\n";
        let mut buf = BytesMut::new();
        let n = read_head(&mut input, &mut buf, LIMITS).await.unwrap();
        assert_eq!(&buf[n..], b"hi\n");
    }

    #[tokio::test]
    async fn bare_lf_is_refused_without_waiting() {
        let (mut client, mut server) = tokio::io::duplex(64);
        use tokio::io::AsyncWriteExt;
        client
            .write_all(b"GET / HTTP/1.1\nHost: a\n\n")
            .await
            .unwrap();
        let r = read_head(&mut server, &mut BytesMut::new(), LIMITS).await;
        assert!(matches!(r, Err(HeadError::BareLineEnding)));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_head_times_out() {
        let (mut client, mut server) = tokio::io::duplex(64);
        use tokio::io::AsyncWriteExt;
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let r = read_head(&mut server, &mut BytesMut::new(), LIMITS).await;
        assert!(matches!(r, Err(HeadError::Timeout)));
    }
}
