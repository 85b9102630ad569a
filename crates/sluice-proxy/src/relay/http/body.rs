use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest chunk-size or trailer line.
const MAX_LINE: usize = 4096;
/// Most trailer fields after the last chunk.
const MAX_TRAILERS: usize = 64;
/// Read granularity.
const READ_CHUNK: usize = 16 * 1024;

/// How a message body is delimited. The relay preserves it on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
    /// Response only: the body ends when the upstream closes.
    UntilClose,
}

/// Why a body could not be relayed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum BodyError {
    #[error("peer closed before the body was complete")]
    Truncated,
    #[error("invalid chunked framing: {0}")]
    BadChunk(&'static str),
    #[error("body stalled for longer than {0:?}")]
    Idle(Duration),
    #[error("write failed: {0}")]
    Write(std::io::Error),
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("read failed: {0}")]
    Read(std::io::Error),
}

/// Copy one body from `reader` (starting with what `buf` already holds) to
/// `writer`, byte for byte including chunk framing. Bytes after the body
/// stay in `buf`.
///
/// `writer` is flushed whenever the copy has to wait for `reader`, and
/// once at the end, so on return every byte written before (a message head)
/// and of the body has left `writer`. A TLS writer needs this: tokio-rustls
/// reports a write complete once the bytes are sealed into the session,
/// while the socket may not have taken them yet, and only a later write or
/// a flush sends them. A body's end left there is never sent while the
/// exchange waits for the peer's answer to it.
///
/// # Errors
/// [`BodyError`] on truncation, bad framing, stalls or I/O failure.
pub(super) async fn copy_body<R, W>(
    framing: BodyFraming,
    reader: &mut R,
    buf: &mut BytesMut,
    writer: &mut W,
    idle: Duration,
) -> Result<u64, BodyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let total = match framing {
        BodyFraming::None => 0,
        BodyFraming::Length(n) => {
            copy_exact(n, reader, buf, writer, idle).await?;
            n
        }
        BodyFraming::UntilClose => {
            let mut total = 0u64;
            loop {
                if !buf.is_empty() {
                    total += buf.len() as u64;
                    writer.write_all(buf).await.map_err(BodyError::Write)?;
                    buf.clear();
                }
                if refill(reader, buf, writer, idle).await? == 0 {
                    break total;
                }
            }
        }
        BodyFraming::Chunked => copy_chunked(reader, buf, writer, idle).await?,
    };
    writer.flush().await.map_err(BodyError::Write)?;
    Ok(total)
}

/// [`fill`] for a copy: when `reader` has nothing at once, `writer` is
/// flushed before waiting (see [`copy_body`]). The idle bound covers the
/// flush and the read together. A read that is ready costs no flush, so a
/// busy copy flushes no more often than without this.
async fn refill<R, W>(
    reader: &mut R,
    buf: &mut BytesMut,
    writer: &mut W,
    idle: Duration,
) -> Result<usize, BodyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    buf.reserve(READ_CHUNK);
    let mut read = std::pin::pin!(reader.read_buf(buf));
    let first = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
    if let Poll::Ready(r) = first {
        return r.map_err(BodyError::Read);
    }
    let wait = async {
        writer.flush().await.map_err(BodyError::Write)?;
        read.await.map_err(BodyError::Read)
    };
    match tokio::time::timeout(idle, wait).await {
        Err(_) => Err(BodyError::Idle(idle)),
        Ok(r) => r,
    }
}

async fn fill<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    idle: Duration,
) -> Result<usize, BodyError> {
    buf.reserve(READ_CHUNK);
    match tokio::time::timeout(idle, reader.read_buf(buf)).await {
        Err(_) => Err(BodyError::Idle(idle)),
        Ok(Err(e)) => Err(BodyError::Read(e)),
        Ok(Ok(n)) => Ok(n),
    }
}

async fn copy_exact<R, W>(
    mut remaining: u64,
    reader: &mut R,
    buf: &mut BytesMut,
    writer: &mut W,
    idle: Duration,
) -> Result<(), BodyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    while remaining > 0 {
        if buf.is_empty() && refill(reader, buf, writer, idle).await? == 0 {
            return Err(BodyError::Truncated);
        }
        let take = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        writer
            .write_all(&buf[..take])
            .await
            .map_err(BodyError::Write)?;
        buf.advance(take);
        remaining -= take as u64;
    }
    Ok(())
}

/// Take one CRLF-terminated line (without the CRLF) from `buf`, reading
/// more as needed (and flushing `writer` before a wait, see [`refill`]).
async fn read_line<R, W>(
    reader: &mut R,
    buf: &mut BytesMut,
    writer: &mut W,
    idle: Duration,
) -> Result<BytesMut, BodyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut scanned = 0;
    loop {
        if let Some(pos) = buf[scanned..].iter().position(|&b| b == b'\n') {
            let end = scanned + pos;
            if end == 0 || buf[end - 1] != b'\r' {
                return Err(BodyError::BadChunk("bare LF"));
            }
            let mut line = buf.split_to(end + 1);
            line.truncate(end - 1);
            if line.contains(&b'\r') {
                return Err(BodyError::BadChunk("bare CR"));
            }
            return Ok(line);
        }
        scanned = buf.len();
        if scanned > MAX_LINE {
            return Err(BodyError::BadChunk("line too long"));
        }
        if refill(reader, buf, writer, idle).await? == 0 {
            return Err(BodyError::Truncated);
        }
    }
}

/// Read a whole body into memory (at most `limit` bytes on the wire,
/// chunk framing included) and return its decoded content.
///
/// # Errors
/// [`BodyError::TooLarge`] over the limit, or any framing/I/O error.
pub(super) async fn read_body<R: AsyncRead + Unpin>(
    framing: BodyFraming,
    reader: &mut R,
    buf: &mut BytesMut,
    limit: usize,
    idle: Duration,
) -> Result<Vec<u8>, BodyError> {
    if let BodyFraming::Length(n) = framing {
        if n > limit as u64 {
            return Err(BodyError::TooLarge(limit));
        }
    }
    let mut wire = LimitedVec {
        data: Vec::new(),
        limit,
    };
    copy_body(framing, reader, buf, &mut wire, idle)
        .await
        .map_err(|e| match e {
            BodyError::Write(io) if io.kind() == std::io::ErrorKind::FileTooLarge => {
                BodyError::TooLarge(limit)
            }
            other => other,
        })?;
    if framing != BodyFraming::Chunked {
        return Ok(wire.data);
    }
    dechunk(&wire.data)
}

/// Decode already validated chunked framing.
fn dechunk(wire: &[u8]) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::with_capacity(wire.len());
    let mut rest = wire;
    loop {
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(BodyError::BadChunk("truncated"))?;
        let line = &rest[..nl.saturating_sub(1)];
        let size =
            usize::try_from(parse_chunk_size(line)?).map_err(|_| BodyError::BadChunk("size"))?;
        rest = &rest[nl + 1..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size + 2 {
            return Err(BodyError::BadChunk("truncated"));
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// An in-memory writer that fails past `limit` bytes.
struct LimitedVec {
    data: Vec<u8>,
    limit: usize,
}

impl AsyncWrite for LimitedVec {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.data.len() + buf.len() > this.limit {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                "body over limit",
            )));
        }
        this.data.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Make sure the first chunk-size line of a chunked body has arrived and is
/// valid, without consuming it. Run before anything of the request is
/// written upstream, so a malformed size never reaches an upstream.
///
/// # Errors
/// [`BodyError`] when the line is malformed, too long, or never arrives.
pub(super) async fn check_first_chunk<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    idle: Duration,
) -> Result<(), BodyError> {
    loop {
        if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            if pos == 0 || buf[pos - 1] != b'\r' {
                return Err(BodyError::BadChunk("bare LF"));
            }
            return parse_chunk_size(&buf[..pos - 1]).map(|_| ());
        }
        if buf.len() > MAX_LINE {
            return Err(BodyError::BadChunk("line too long"));
        }
        if fill(reader, buf, idle).await? == 0 {
            return Err(BodyError::Truncated);
        }
    }
}

/// Strict chunk size: 1-16 hex digits, optional `;extension` of visible ASCII.
fn parse_chunk_size(line: &[u8]) -> Result<u64, BodyError> {
    let (size, ext) = match line.iter().position(|&b| b == b';') {
        Some(p) => (&line[..p], &line[p..]),
        None => (line, &[][..]),
    };
    if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
        return Err(BodyError::BadChunk("invalid chunk size"));
    }
    if ext.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return Err(BodyError::BadChunk("control byte in chunk extension"));
    }
    let text = std::str::from_utf8(size).map_err(|_| BodyError::BadChunk("invalid chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| BodyError::BadChunk("invalid chunk size"))
}

async fn copy_chunked<R, W>(
    reader: &mut R,
    buf: &mut BytesMut,
    writer: &mut W,
    idle: Duration,
) -> Result<u64, BodyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut total = 0u64;
    loop {
        let line = read_line(reader, buf, writer, idle).await?;
        let size = parse_chunk_size(&line)?;
        write_line(writer, &line).await?;
        if size == 0 {
            break;
        }
        copy_exact(size, reader, buf, writer, idle).await?;
        total += size;
        let end = read_line(reader, buf, writer, idle).await?;
        if !end.is_empty() {
            return Err(BodyError::BadChunk("missing CRLF after chunk data"));
        }
        writer.write_all(b"\r\n").await.map_err(BodyError::Write)?;
    }
    for _ in 0..=MAX_TRAILERS {
        let line = read_line(reader, buf, writer, idle).await?;
        write_line(writer, &line).await?;
        if line.is_empty() {
            return Ok(total);
        }
        if line[0] == b' ' || line[0] == b'\t' || !line.contains(&b':') {
            return Err(BodyError::BadChunk("malformed trailer"));
        }
    }
    Err(BodyError::BadChunk("too many trailer fields"))
}

async fn write_line<W: AsyncWrite + Unpin>(writer: &mut W, line: &[u8]) -> Result<(), BodyError> {
    writer.write_all(line).await.map_err(BodyError::Write)?;
    writer.write_all(b"\r\n").await.map_err(BodyError::Write)
}

/// Entry points for `fuzz/` (not API): one body relayed from memory
/// through the same code the request loop runs.
#[doc(hidden)]
pub mod fuzzing {
    use super::{copy_body, dechunk, read_body, BodyFraming, BytesMut, Duration};

    /// What relaying one chunked body produced.
    pub struct RelayedChunked {
        /// Bytes written toward the upstream (framing preserved).
        pub wire: Vec<u8>,
        /// Decoded payload length the relay counted.
        pub total: u64,
        /// Input bytes left after the body (the next pipelined message).
        pub leftover: usize,
        /// `dechunk` of `wire`.
        pub decoded: Option<Vec<u8>>,
        /// `read_body` (the buffered, limited path) over the same input.
        pub buffered: Option<Vec<u8>>,
    }

    /// Relays `input` as one chunked body; `None` when the relay refused it.
    #[must_use]
    pub fn relay_chunked(input: &[u8], limit: usize) -> Option<RelayedChunked> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .ok()?;
        rt.block_on(async {
            let idle = Duration::from_secs(1);
            let mut reader = input;
            let mut buf = BytesMut::new();
            let mut wire = Vec::new();
            let total = copy_body(BodyFraming::Chunked, &mut reader, &mut buf, &mut wire, idle)
                .await
                .ok()?;
            let leftover = buf.len() + reader.len();
            let decoded = dechunk(&wire).ok();
            let mut again = input;
            let mut buf = BytesMut::new();
            let buffered = read_body(BodyFraming::Chunked, &mut again, &mut buf, limit, idle)
                .await
                .ok();
            Some(RelayedChunked {
                wire,
                total,
                leftover,
                decoded,
                buffered,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(framing: BodyFraming, input: &[u8]) -> (Result<u64, BodyError>, Vec<u8>, Vec<u8>) {
        let mut reader = input;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let r = copy_body(
            framing,
            &mut reader,
            &mut buf,
            &mut out,
            Duration::from_secs(1),
        )
        .await;
        let mut rest = buf.to_vec();
        rest.extend_from_slice(reader);
        (r, out, rest)
    }

    #[tokio::test]
    async fn length_leaves_pipelined_bytes() {
        let (r, out, rest) = run(BodyFraming::Length(5), b"helloGET / HTTP/1.1").await;
        assert_eq!(r.unwrap(), 5);
        assert_eq!(out, b"hello");
        assert_eq!(rest, b"GET / HTTP/1.1");
        let (r, _, _) = run(BodyFraming::Length(10), b"short").await;
        assert!(matches!(r, Err(BodyError::Truncated)));
    }

    #[tokio::test]
    async fn chunked_preserves_framing() {
        let wire = b"5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let (r, out, rest) = run(BodyFraming::Chunked, wire).await;
        assert_eq!(r.unwrap(), 5);
        assert_eq!(out, &wire[..wire.len() - 4]);
        assert_eq!(rest, b"NEXT");
    }

    /// A TLS client over loopback to a TLS server, with small kernel
    /// buffers so that most of a burst stays in the client's TLS session.
    async fn tls_pair() -> (
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    ) {
        use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
        use std::sync::Arc;
        use tokio::net::TcpSocket;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = rcgen::CertificateParams::new(vec!["body.test".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("server config");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).expect("root");
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();

        let listen = TcpSocket::new_v4().expect("socket");
        listen.set_recv_buffer_size(4096).expect("rcvbuf");
        listen
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let addr = listen.local_addr().expect("local addr");
        let listener = listen.listen(1).expect("listen");
        let dial = TcpSocket::new_v4().expect("socket");
        dial.set_send_buffer_size(4096).expect("sndbuf");
        let (tcp, accepted) = tokio::join!(dial.connect(addr), listener.accept());
        let (tcp, (peer, _)) = (tcp.expect("connect"), accepted.expect("accept"));
        let name = ServerName::try_from("body.test").expect("name");
        let (c, s) = tokio::join!(
            tokio_rustls::TlsConnector::from(Arc::new(client)).connect(name, tcp),
            tokio_rustls::TlsAcceptor::from(Arc::new(server)).accept(peer),
        );
        (c.expect("client handshake"), s.expect("server handshake"))
    }

    /// While the copy waits for more of a streaming body, everything it
    /// already wrote reaches the peer: tokio-rustls reports a write done
    /// once it is sealed into the session, and without a flush the part the
    /// socket did not take stayed there until the reader produced more.
    #[tokio::test]
    async fn a_waiting_copy_has_flushed_its_tls_writer() {
        const SENT: usize = 60 * 1024; // within rustls's 64 KiB send buffer
        let (mut upstream, mut peer) = tls_pair().await;
        let data: Vec<u8> = (0..SENT).map(|i| (i % 251) as u8).collect();
        let mut buf = BytesMut::from(&data[..]);
        // The body goes on (no EOF) until the peer has what was sent so far.
        let (feed, mut reader) = tokio::io::duplex(1024);
        // `join!` polls the copy first: its first poll seals all of `data`
        // into the session, of which the small socket takes only a part.
        let copy = copy_body(
            BodyFraming::UntilClose,
            &mut reader,
            &mut buf,
            &mut upstream,
            Duration::from_secs(30),
        );
        let receive = async move {
            let mut got = vec![0u8; SENT];
            let read =
                tokio::time::timeout(Duration::from_secs(5), peer.read_exact(&mut got)).await;
            // The body ends; on failure the peer goes too, so the copy's
            // final flush fails instead of waiting for a reader that left.
            drop(feed);
            drop(peer);
            read.map(|r| r.map(|_| got))
        };
        let (copied, received) = tokio::join!(copy, receive);
        let got = received
            .expect("bytes held in the TLS session while the copy waited for its reader")
            .expect("read");
        assert!(got == data, "the peer got the bytes in order");
        assert_eq!(copied.expect("copy"), SENT as u64);
    }

    #[tokio::test]
    async fn chunked_refuses_bad_framing() {
        for wire in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"ffffffffffffffffff\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"0\r\n bad\r\n\r\n",
        ] {
            let (r, _, _) = run(BodyFraming::Chunked, wire).await;
            assert!(r.is_err(), "{:?}", String::from_utf8_lossy(wire));
        }
    }
}
