use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::guard::MarkerScan;

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
    #[error("reserved credential placeholder in request body")]
    Marker,
}

/// Copy one body from `reader` (starting with what `buf` already holds) to
/// `writer`, byte for byte including chunk framing. Bytes after the body
/// stay in `buf`. `scan` sees every payload byte (and framing line) before
/// it is written.
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
/// [`BodyError`] on truncation, bad framing, stalls, I/O failure, or a
/// marker the scan refused (the bytes it completes in are not written).
pub(super) async fn copy_body<R, W>(
    framing: BodyFraming,
    reader: &mut R,
    buf: &mut BytesMut,
    writer: &mut W,
    idle: Duration,
    scan: &mut MarkerScan,
) -> Result<u64, BodyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let total = match framing {
        BodyFraming::None => 0,
        BodyFraming::Length(n) => {
            copy_exact(n, reader, buf, writer, idle, scan).await?;
            n
        }
        BodyFraming::UntilClose => {
            let mut total = 0u64;
            loop {
                if !buf.is_empty() {
                    scan.payload(buf)?;
                    total += buf.len() as u64;
                    writer.write_all(buf).await.map_err(BodyError::Write)?;
                    buf.clear();
                }
                if refill(reader, buf, writer, idle).await? == 0 {
                    break total;
                }
            }
        }
        BodyFraming::Chunked => copy_chunked(reader, buf, writer, idle, scan).await?,
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
    scan: &mut MarkerScan,
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
        scan.payload(&buf[..take])?;
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
pub(crate) async fn read_body<R: AsyncRead + Unpin>(
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
    copy_body(
        framing,
        reader,
        buf,
        &mut wire,
        idle,
        &mut MarkerScan::off(),
    )
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
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
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

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// What [`prefetch`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Prefetched {
    /// The whole body is in `buf` and passed the scan.
    Complete,
    /// The body is longer than the read-ahead limit: its first part passed
    /// the scan; the rest is scanned as it streams.
    Partial,
}

/// Read one request body ahead into `buf` without consuming it, until the
/// body is complete or `buf` holds `limit` bytes, and run the relay itself
/// (framing checks and the marker scan, any framing) over it into a
/// discarding writer. A marker or malformed framing is thus found before
/// anything of the request is written upstream.
///
/// # Errors
/// [`BodyError::Marker`], or any framing, truncation, stall or read error
/// found in the part read ahead.
pub(super) async fn prefetch<R: AsyncRead + Unpin>(
    framing: BodyFraming,
    reader: &mut R,
    buf: &mut BytesMut,
    limit: usize,
    idle: Duration,
) -> Result<Prefetched, BodyError> {
    let mut peek = Peek {
        reader,
        buf,
        pos: 0,
        limit,
    };
    let mut scratch = BytesMut::new();
    let mut scan = MarkerScan::new(true);
    let mut discard = tokio::io::sink();
    match copy_body(
        framing,
        &mut peek,
        &mut scratch,
        &mut discard,
        idle,
        &mut scan,
    )
    .await
    {
        Ok(_) => Ok(Prefetched::Complete),
        Err(BodyError::Read(e)) if e.kind() == std::io::ErrorKind::FileTooLarge => {
            Ok(Prefetched::Partial)
        }
        Err(e) => Err(e),
    }
}

/// A reader over `buf` that appends what it reads from `reader` to `buf`
/// (so nothing is consumed) and stops with `FileTooLarge` at `limit`.
struct Peek<'a, R> {
    reader: &'a mut R,
    buf: &'a mut BytesMut,
    pos: usize,
    limit: usize,
}

impl<R: AsyncRead + Unpin> AsyncRead for Peek<'_, R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.buf.len() {
            let n = (this.buf.len() - this.pos).min(out.remaining());
            out.put_slice(&this.buf[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        if this.buf.len() >= this.limit {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                "read-ahead limit reached",
            )));
        }
        let before = out.filled().len();
        match Pin::new(&mut *this.reader).poll_read(cx, out) {
            Poll::Ready(Ok(())) => {
                let new = &out.filled()[before..];
                this.buf.extend_from_slice(new);
                this.pos += new.len();
                Poll::Ready(Ok(()))
            }
            other => other,
        }
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
    scan: &mut MarkerScan,
) -> Result<u64, BodyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut total = 0u64;
    loop {
        let line = read_line(reader, buf, writer, idle).await?;
        let size = parse_chunk_size(&line)?;
        scan.line(&line)?;
        write_line(writer, &line).await?;
        if size == 0 {
            break;
        }
        // The payload scan carries its tail into the next chunk's data.
        copy_exact(size, reader, buf, writer, idle, scan).await?;
        total += size;
        let end = read_line(reader, buf, writer, idle).await?;
        if !end.is_empty() {
            return Err(BodyError::BadChunk("missing CRLF after chunk data"));
        }
        writer.write_all(b"\r\n").await.map_err(BodyError::Write)?;
    }
    for _ in 0..=MAX_TRAILERS {
        let line = read_line(reader, buf, writer, idle).await?;
        if !line.is_empty() && (line[0] == b' ' || line[0] == b'\t' || !line.contains(&b':')) {
            return Err(BodyError::BadChunk("malformed trailer"));
        }
        scan.line(&line)?;
        write_line(writer, &line).await?;
        if line.is_empty() {
            return Ok(total);
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
    use super::{
        copy_body, dechunk, prefetch, read_body, BodyError, BodyFraming, BytesMut, Duration,
        MarkerScan,
    };

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
        /// The relay with the credential-marker scan on refused the body
        /// for a marker (any other outcome: `false`).
        pub marker_refused: bool,
        /// The read-ahead check over the same input (limit `limit`) refused
        /// it for a marker.
        pub prefetch_refused: bool,
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
            let total = copy_body(
                BodyFraming::Chunked,
                &mut reader,
                &mut buf,
                &mut wire,
                idle,
                &mut MarkerScan::off(),
            )
            .await
            .ok()?;
            let leftover = buf.len() + reader.len();
            let decoded = dechunk(&wire).ok();
            let mut again = input;
            let mut buf = BytesMut::new();
            let buffered = read_body(BodyFraming::Chunked, &mut again, &mut buf, limit, idle)
                .await
                .ok();
            let mut again = input;
            let mut buf = BytesMut::new();
            let scanned = copy_body(
                BodyFraming::Chunked,
                &mut again,
                &mut buf,
                &mut tokio::io::sink(),
                idle,
                &mut MarkerScan::new(true),
            )
            .await;
            let mut again = input;
            let mut buf = BytesMut::new();
            let ahead = prefetch(BodyFraming::Chunked, &mut again, &mut buf, limit, idle).await;
            Some(RelayedChunked {
                wire,
                total,
                leftover,
                decoded,
                buffered,
                marker_refused: matches!(scanned, Err(BodyError::Marker)),
                prefetch_refused: matches!(ahead, Err(BodyError::Marker)),
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
            &mut MarkerScan::off(),
        )
        .await;
        let mut rest = buf.to_vec();
        rest.extend_from_slice(reader);
        (r, out, rest)
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
        let mut scan = MarkerScan::off();
        // `join!` polls the copy first: its first poll seals all of `data`
        // into the session, of which the small socket takes only a part.
        let copy = copy_body(
            BodyFraming::UntilClose,
            &mut reader,
            &mut buf,
            &mut upstream,
            Duration::from_secs(30),
            &mut scan,
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

    /// `payload` framed as chunks cut at `cuts` (sorted positions), with a
    /// chunk extension on each size line.
    fn chunked(payload: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&payload.len())) {
            if end > start {
                out.extend_from_slice(format!("{:x};n=1\r\n", end - start).as_bytes());
                out.extend_from_slice(&payload[start..end]);
                out.extend_from_slice(b"\r\n");
                start = end;
            }
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    async fn scanned(framing: BodyFraming, input: &[u8]) -> (Result<u64, BodyError>, Vec<u8>) {
        let mut reader = input;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut scan = MarkerScan::new(true);
        let idle = Duration::from_secs(1);
        let r = copy_body(framing, &mut reader, &mut buf, &mut out, idle, &mut scan).await;
        (r, out)
    }

    async fn ahead(
        framing: BodyFraming,
        input: &[u8],
        limit: usize,
    ) -> Result<Prefetched, BodyError> {
        let mut reader = input;
        let mut buf = BytesMut::new();
        prefetch(
            framing,
            &mut reader,
            &mut buf,
            limit,
            Duration::from_secs(1),
        )
        .await
    }

    /// The reported case and its whole class: a placeholder cut at every
    /// position into two chunks, and at every pair of positions into three,
    /// is refused by the streaming scan and by the read-ahead check, and the
    /// bytes completing it never reach the writer.
    #[tokio::test]
    async fn a_placeholder_split_across_chunks_is_caught_at_every_position() {
        for placeholder in [
            "sluice:resolve:env:NAME",
            "openshell%3Aresolve%3Aenv%3ANAME",
        ] {
            let text = format!(r#"{{"t": "{placeholder}"}}"#);
            let payload = text.as_bytes();
            let (start, end) = (7, 7 + placeholder.len());
            for i in start..=end {
                for j in i..=end {
                    let cuts: Vec<usize> = if i == j { vec![i] } else { vec![i, j] };
                    let wire = chunked(payload, &cuts);
                    let (r, out) = scanned(BodyFraming::Chunked, &wire).await;
                    assert!(matches!(r, Err(BodyError::Marker)), "cuts {cuts:?}: {r:?}");
                    assert!(
                        !placeholder_in(&payload_written(&out)),
                        "cuts {cuts:?}: the marker reached the writer"
                    );
                    let p = ahead(BodyFraming::Chunked, &wire, 1 << 20).await;
                    assert!(matches!(p, Err(BodyError::Marker)), "cuts {cuts:?}: {p:?}");
                }
            }
        }
        let payload = br#"{"t": "sluice:resolve:env:NAME"}"#;
        // One byte per chunk, and with Content-Length arriving in tiny reads.
        let every: Vec<usize> = (1..payload.len()).collect();
        let (r, _) = scanned(BodyFraming::Chunked, &chunked(payload, &every)).await;
        assert!(matches!(r, Err(BodyError::Marker)), "{r:?}");
        let mut reader = tokio_test_reader(payload);
        let mut buf = BytesMut::new();
        let r = copy_body(
            BodyFraming::Length(payload.len() as u64),
            &mut reader,
            &mut buf,
            &mut Vec::new(),
            Duration::from_secs(1),
            &mut MarkerScan::new(true),
        )
        .await;
        assert!(matches!(r, Err(BodyError::Marker)), "{r:?}");
    }

    /// A reader that hands out one byte per read.
    fn tokio_test_reader(data: &[u8]) -> impl AsyncRead + Unpin + '_ {
        struct OneByte<'a>(&'a [u8]);
        impl AsyncRead for OneByte<'_> {
            fn poll_read(
                mut self: Pin<&mut Self>,
                _cx: &mut Context<'_>,
                out: &mut ReadBuf<'_>,
            ) -> Poll<std::io::Result<()>> {
                if let Some((first, rest)) = self.0.split_first() {
                    out.put_slice(&[*first]);
                    self.0 = rest;
                }
                Poll::Ready(Ok(()))
            }
        }
        OneByte(data)
    }

    /// Chunk extensions and trailers are framing, checked on their own.
    #[tokio::test]
    async fn markers_in_chunk_extensions_and_trailers_are_caught() {
        for wire in [
            &b"5;x=sluice:resolve:env:A\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhello\r\n0\r\nX-T: openshell:resolve:env:B\r\n\r\n",
        ] {
            let (r, out) = scanned(BodyFraming::Chunked, wire).await;
            assert!(matches!(r, Err(BodyError::Marker)), "{r:?}");
            assert!(!placeholder_in(&out));
        }
        // A clean body passes unchanged.
        let wire = chunked(b"sluice:resolve is not a marker", &[3, 9]);
        let (r, out) = scanned(BodyFraming::Chunked, &wire).await;
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(out, wire);
    }

    /// The payload bytes in (possibly cut-off) chunked wire bytes.
    fn payload_written(mut wire: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(nl) = wire.iter().position(|&b| b == b'\n') {
            let line = &wire[..nl.saturating_sub(1)];
            let size = line.split(|&b| b == b';').next().unwrap_or_default();
            let size =
                usize::from_str_radix(std::str::from_utf8(size).unwrap_or("0"), 16).unwrap_or(0);
            wire = &wire[nl + 1..];
            let take = size.min(wire.len());
            out.extend_from_slice(&wire[..take]);
            wire = &wire[take..];
            wire = wire.strip_prefix(b"\r\n").unwrap_or(wire);
            if size == 0 {
                break;
            }
        }
        out
    }

    fn placeholder_in(b: &[u8]) -> bool {
        sluice_policy::placeholder::contains_marker(b)
    }

    /// The read-ahead consumes nothing, stops at its limit, and finds a
    /// marker only in the part it read; the stream scan finds a split one
    /// beyond the limit.
    #[tokio::test]
    async fn prefetch_reads_ahead_without_consuming() {
        let idle = Duration::from_secs(1);
        let wire = chunked(b"hello world", &[5]);
        let mut input = wire.clone();
        input.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
        let mut reader = &input[..];
        let mut buf = BytesMut::new();
        let p = prefetch(BodyFraming::Chunked, &mut reader, &mut buf, 1 << 20, idle).await;
        assert_eq!(p.unwrap(), Prefetched::Complete);
        let mut rest = buf.to_vec();
        rest.extend_from_slice(reader);
        assert_eq!(rest, input, "nothing consumed");
        let mut out = Vec::new();
        copy_body(
            BodyFraming::Chunked,
            &mut reader,
            &mut buf,
            &mut out,
            idle,
            &mut MarkerScan::new(true),
        )
        .await
        .unwrap();
        assert_eq!(out, wire);

        // Over the limit: the first part is clean, the split marker lies beyond.
        let mut big = vec![b'x'; 300 * 1024];
        big.extend_from_slice(b"sluice:resolve:env:NAME");
        let cut = big.len() - 10;
        let wire = chunked(&big, &[cut]);
        assert_eq!(
            ahead(BodyFraming::Chunked, &wire, 256 * 1024)
                .await
                .unwrap(),
            Prefetched::Partial
        );
        let (r, out) = scanned(BodyFraming::Chunked, &wire).await;
        assert!(matches!(r, Err(BodyError::Marker)), "{r:?}");
        assert!(!placeholder_in(&out));
        let len = BodyFraming::Length(big.len() as u64);
        assert_eq!(
            ahead(len, &big, 256 * 1024).await.unwrap(),
            Prefetched::Partial
        );
        let (r, _) = scanned(len, &big).await;
        assert!(matches!(r, Err(BodyError::Marker)), "{r:?}");
        // Under the limit, in any framing: refused ahead.
        let small = b"a=1&t=sluice:resolve:env:NAME";
        let p = ahead(BodyFraming::Length(small.len() as u64), small, 256 * 1024).await;
        assert!(matches!(p, Err(BodyError::Marker)), "{p:?}");
        // Malformed framing and truncation are found ahead too.
        assert!(matches!(
            ahead(BodyFraming::Chunked, b"zz\r\n", 1024).await,
            Err(BodyError::BadChunk(_))
        ));
        assert!(matches!(
            ahead(BodyFraming::Length(10), b"short", 1024).await,
            Err(BodyError::Truncated)
        ));
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
