//! Streamed-response latency: keep-alive POSTs asking for a streamed chat
//! completion (`"stream": true`) over TLS, directly or through a CONNECT
//! tunnel (`inference.local` through sluice). Each exchange records the
//! time from the request's last byte to the first SSE `data:` byte of the
//! answer (time to first byte); the stream is then read to its end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use crate::client::read_chunked;
use crate::workload::{merge, micros, Dialer, LoopStats, TlsDialer, TlsOpts};

/// Deadline for one exchange.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// The request each loop sends.
pub(crate) struct StreamRequest<'a> {
    pub(crate) host_header: &'a str,
    pub(crate) path: &'a str,
    pub(crate) body: &'a str,
}

/// Runs `connections` closed loops for `seconds`; the result's `p50_us` /
/// `p99_us` are time-to-first-byte percentiles.
pub(crate) async fn ttfb(
    target: &str,
    proxy: Option<std::net::SocketAddr>,
    tls: TlsOpts,
    connections: usize,
    seconds: f64,
    req: &StreamRequest<'_>,
) -> anyhow::Result<String> {
    let StreamRequest {
        host_header,
        path,
        body,
    } = req;
    if !(seconds.is_finite() && seconds > 0.0) {
        bail!("--seconds must be positive");
    }
    let request: Arc<[u8]> = format!(
        "POST {path} HTTP/1.1\r\nHost: {host_header}\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
    .into();
    let dialer = Arc::new(TlsDialer::new(target, proxy, tls));
    // One connection before the clock starts (the proxy mints its leaf once).
    let first = dialer.dial().await?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let mut set = JoinSet::new();
    let mut first = Some(first);
    for _ in 0..connections.max(1) {
        let (dialer, request, conn) = (Arc::clone(&dialer), Arc::clone(&request), first.take());
        set.spawn(async move { ttfb_loop(&dialer, conn, &request, deadline).await });
    }
    let mut results = Vec::new();
    while let Some(r) = set.join_next().await {
        results.push(r?);
    }
    let extra = format!(
        "\"proxied\":{},\"connections\":{},",
        proxy.is_some(),
        connections.max(1)
    );
    Ok(merge(
        results,
        start.elapsed().as_secs_f64(),
        "streams_per_s",
        "sse_ttfb",
        &extra,
    ))
}

async fn ttfb_loop(
    dialer: &TlsDialer,
    mut conn: Option<<TlsDialer as Dialer>::Stream>,
    request: &[u8],
    deadline: Instant,
) -> LoopStats {
    let mut st = LoopStats::default();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    while Instant::now() < deadline && st.errors < 20 {
        let one = async {
            if conn.is_none() {
                buf.clear();
                conn = Some(dialer.dial().await?);
            }
            let s = conn.as_mut().ok_or_else(|| anyhow!("no connection"))?;
            s.write_all(request).await?;
            s.flush().await?;
            let sent = Instant::now();
            let first = first_data(s, &mut buf).await?;
            let ttfb = first.duration_since(sent);
            read_chunked(s, &mut buf).await?;
            Ok::<Duration, anyhow::Error>(ttfb)
        };
        match tokio::time::timeout(EXCHANGE_TIMEOUT, one).await {
            Ok(Ok(t)) => {
                st.done += 1;
                st.latencies_us.push(micros(t));
            }
            Ok(Err(_)) | Err(_) => {
                st.errors += 1;
                conn = None;
                buf.clear();
            }
        }
    }
    st
}

/// Reads the response head (a chunked 200 is required) and waits for the
/// first `data:` byte; returns when it arrived. The body stays in `buf`.
async fn first_data<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
) -> anyhow::Result<Instant> {
    let head_len = loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(n) = resp.parse(buf)? {
            if resp.code != Some(200) {
                bail!("status {:?}", resp.code);
            }
            let chunked = resp.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("transfer-encoding")
                    && h.value.eq_ignore_ascii_case(b"chunked")
            });
            if !chunked {
                bail!("a streamed answer must be chunked");
            }
            break n;
        }
        if buf.len() > MAX_HEAD {
            bail!("response head too long");
        }
        buf.reserve(4096);
        if s.read_buf(buf).await? == 0 {
            bail!("closed before a response");
        }
    };
    buf.advance(head_len);
    loop {
        if buf.windows(5).any(|w| w == b"data:") {
            return Ok(Instant::now());
        }
        buf.reserve(4096);
        if s.read_buf(buf).await? == 0 {
            bail!("closed before the first event");
        }
    }
}
