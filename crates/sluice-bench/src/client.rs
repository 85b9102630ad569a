//! Dialing (direct or through a CONNECT tunnel) and HTTP response reading.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Deadline for one dial or one proxy handshake.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEAD: usize = 16 * 1024;

/// Open a TCP connection to an IP socket address (no name resolution).
pub(crate) async fn dial(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    let s = tokio::time::timeout(IO_TIMEOUT, sock.connect(addr))
        .await
        .map_err(|_| anyhow!("connect {addr}: timed out"))?
        .with_context(|| format!("connect {addr}"))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// `target` (`IP:PORT`, or `NAME:PORT` resolved by the system resolver,
/// i.e. getaddrinfo and /etc/resolv.conf) as a socket address: the first
/// address the resolver returns. Direct mode only; through a proxy the name
/// goes into the CONNECT line as is.
// The load generator is a client like any other: resolving through the system
// resolver is what it measures (policy DNS inside `sluice run`); the rule
// behind clippy.toml is about the proxy's own dials.
#[allow(clippy::disallowed_methods)]
pub(crate) async fn resolve(target: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(addr) = target.parse() {
        return Ok(addr);
    }
    let mut addrs = tokio::time::timeout(IO_TIMEOUT, tokio::net::lookup_host(target))
        .await
        .map_err(|_| anyhow!("resolving {target}: timed out"))?
        .with_context(|| format!("resolving {target} (expected IP:PORT or NAME:PORT)"))?;
    addrs.next().ok_or_else(|| anyhow!("{target}: no address"))
}

/// A proxy address: `IP:PORT`, or a proxy URL `http://IP:PORT[/]` as in
/// `HTTPS_PROXY`.
pub(crate) fn parse_proxy(s: &str) -> Result<SocketAddr, String> {
    let addr = s.strip_prefix("http://").unwrap_or(s).trim_end_matches('/');
    addr.parse()
        .map_err(|_| format!("expected IP:PORT or http://IP:PORT, got {s:?}"))
}

/// Dial the proxy and open a CONNECT tunnel to `target`; or, without a
/// proxy, dial `target` directly.
pub(crate) async fn open(target: &str, proxy: Option<SocketAddr>) -> anyhow::Result<TcpStream> {
    let Some(proxy) = proxy else {
        return dial(resolve(target).await?).await;
    };
    let mut s = dial(proxy).await?;
    let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    tokio::time::timeout(IO_TIMEOUT, async {
        s.write_all(req.as_bytes()).await?;
        // Read byte by byte up to the end of the head, so no tunneled byte
        // is consumed (the server speaks only after the client anyway).
        let mut head = Vec::with_capacity(128);
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() > MAX_HEAD {
                bail!("CONNECT response head too long");
            }
            if s.read(&mut b).await? == 0 {
                bail!(
                    "proxy closed during CONNECT: {}",
                    String::from_utf8_lossy(&head)
                );
            }
            head.push(b[0]);
        }
        let line = head.split(|c| *c == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        if line.split_whitespace().nth(1) != Some("200") {
            bail!("CONNECT {target} refused: {}", line.trim_end());
        }
        Ok(())
    })
    .await
    .map_err(|_| anyhow!("CONNECT {target}: timed out"))??;
    Ok(s)
}

/// Consumes one chunked body (no trailers expected) from `buf` and `s`;
/// returns its decoded length.
pub(crate) async fn read_chunked<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
) -> anyhow::Result<usize> {
    let mut total = 0usize;
    loop {
        // The size line.
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            if buf.len() > 1024 {
                bail!("chunk size line too long");
            }
            buf.reserve(4096);
            if s.read_buf(buf).await? == 0 {
                bail!("connection closed inside a chunked body");
            }
        };
        let size_text = std::str::from_utf8(&buf[..line_end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        buf.advance(line_end + 2);
        // The data and its CRLF (or, for the last chunk, the final CRLF).
        let want = size + 2;
        while buf.len() < want {
            buf.reserve(want - buf.len());
            if s.read_buf(buf).await? == 0 {
                bail!("connection closed inside a chunked body");
            }
        }
        buf.advance(want);
        total += size;
        if size == 0 {
            return Ok(total);
        }
    }
}

/// Reads one response (head + Content-Length or chunked body) from `s`, buffering
/// extra bytes in `buf`. Returns the status, the body length and whether
/// the server will close the connection after it (`Connection: close`, or
/// HTTP/1.0 without `keep-alive`; tinyproxy answers that way).
pub(crate) async fn read_response<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
) -> anyhow::Result<(u16, usize, bool)> {
    loop {
        let parsed = {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(buf)? {
                httparse::Status::Complete(n) => {
                    let status = resp.code.unwrap_or(0);
                    let chunked = resp.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("transfer-encoding")
                            && h.value.eq_ignore_ascii_case(b"chunked")
                    });
                    let len = resp
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok())
                        .and_then(|v| v.trim().parse::<usize>().ok());
                    let len = match (len, chunked) {
                        (Some(n), false) => Some(n),
                        (None, true) => None,
                        _ => bail!("response needs exactly one of Content-Length or chunked"),
                    };
                    let conn = resp
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("connection"))
                        .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase());
                    let close = match conn {
                        Some(v) if v.contains("close") => true,
                        Some(v) if v.contains("keep-alive") => false,
                        _ => resp.version == Some(0),
                    };
                    Some((n, status, len, close))
                }
                httparse::Status::Partial => None,
            }
        };
        if let Some((head_len, status, len, close)) = parsed {
            buf.advance(head_len);
            let Some(len) = len else {
                let n = read_chunked(s, buf).await?;
                return Ok((status, n, close));
            };
            // Consume the body: from the buffer first, then from the socket.
            let mut left = len;
            let take = left.min(buf.len());
            buf.advance(take);
            left -= take;
            while left > 0 {
                buf.clear();
                buf.reserve(left.clamp(4096, 256 * 1024));
                let n = s.read_buf(buf).await?;
                if n == 0 {
                    bail!("connection closed inside a response body");
                }
                let take = left.min(buf.len());
                buf.advance(take);
                left -= take;
            }
            return Ok((status, len, close));
        }
        if buf.len() > MAX_HEAD {
            bail!("response head too long");
        }
        buf.reserve(4096);
        if s.read_buf(buf).await? == 0 {
            bail!("connection closed before a response");
        }
    }
}
