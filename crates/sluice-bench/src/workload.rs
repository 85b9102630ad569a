//! The client workloads. Each returns one JSON object as a string.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use bytes::BytesMut;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::client::{self, read_response};
use crate::stats::percentile;

/// Deadline for one request/response exchange.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Write size for bulk streams.
const CHUNK: usize = 256 * 1024;
/// A connection that fails this many times in a row stops.
const MAX_CONSECUTIVE_ERRORS: u32 = 20;

fn secs(s: f64) -> anyhow::Result<Duration> {
    if !(0.0..=600.0).contains(&s) {
        bail!("seconds must be within 0..=600");
    }
    Ok(Duration::from_secs_f64(s))
}

/// `streams` tunnels (or direct connections), each writing `bytes` then
/// half-closing and verifying the sink's 8-byte ack.
pub(crate) async fn bulk(
    target: &str,
    proxy: Option<SocketAddr>,
    bytes: u64,
    streams: usize,
    timeout: u64,
) -> anyhow::Result<String> {
    // Establish every stream first so only the transfer is timed.
    let mut conns = Vec::with_capacity(streams);
    for _ in 0..streams.max(1) {
        conns.push(client::open(target, proxy).await?);
    }
    // The address actually dialed: the proxy, or what the target resolved to.
    let dialed = conns[0].peer_addr()?;
    let start = Instant::now();
    let mut set = JoinSet::new();
    for s in conns {
        set.spawn(bulk_stream(s, bytes));
    }
    let all = async {
        while let Some(r) = set.join_next().await {
            r??;
        }
        Ok::<(), anyhow::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(timeout), all)
        .await
        .map_err(|_| anyhow!("bulk transfer exceeded {timeout}s"))??;
    let elapsed = start.elapsed().as_secs_f64();
    let total = bytes * streams.max(1) as u64;
    let mib_s = total as f64 / (1024.0 * 1024.0) / elapsed;
    Ok(format!(
        "{{\"workload\":\"bulk\",\"proxied\":{},\"dialed\":\"{dialed}\",\"streams\":{},\"bytes_per_stream\":{bytes},\"seconds\":{elapsed:.3},\"mib_s\":{mib_s:.1}}}",
        proxy.is_some(),
        streams.max(1),
    ))
}

async fn bulk_stream(mut s: TcpStream, bytes: u64) -> anyhow::Result<()> {
    let chunk = vec![0u8; CHUNK];
    let mut head = [0u8; 16];
    head[..8].copy_from_slice(crate::server::BULK_MAGIC);
    head[8..].copy_from_slice(&bytes.to_be_bytes());
    s.write_all(&head).await.context("bulk header")?;
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
        s.write_all(&chunk[..n]).await.context("bulk write")?;
        left -= n as u64;
    }
    // No half-close: the sink acks the announced count (not every proxy
    // forwards a FIN while the other direction stays open).
    let mut ack = [0u8; 8];
    s.read_exact(&mut ack)
        .await
        .context("reading the sink's ack")?;
    let got = u64::from_be_bytes(ack);
    if got != bytes {
        bail!("sink acked {got} bytes, sent {bytes}");
    }
    Ok(())
}

/// Per-connection result of a timed loop.
#[derive(Default)]
pub(crate) struct LoopStats {
    pub(crate) done: u64,
    pub(crate) errors: u64,
    pub(crate) reconnects: u64,
    pub(crate) latencies_us: Vec<u32>,
}

pub(crate) fn merge(
    results: Vec<LoopStats>,
    elapsed: f64,
    unit: &str,
    workload: &str,
    extra: &str,
) -> String {
    let mut lat: Vec<u32> = Vec::new();
    let (mut done, mut errors, mut reconnects) = (0u64, 0u64, 0u64);
    for r in results {
        done += r.done;
        errors += r.errors;
        reconnects += r.reconnects;
        lat.extend(r.latencies_us);
    }
    lat.sort_unstable();
    format!(
        "{{\"workload\":\"{workload}\",{extra}\"{unit}\":{:.1},\"completed\":{done},\"seconds\":{elapsed:.3},\"p50_us\":{},\"p99_us\":{},\"errors\":{errors},\"reconnects\":{reconnects}}}",
        done as f64 / elapsed,
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
    )
}

pub(crate) fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// How a keep-alive connection is opened.
pub(crate) trait Dialer: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send;
    fn dial(&self) -> impl Future<Output = anyhow::Result<Self::Stream>> + Send;
}

/// Plain TCP to one socket address (the upstream, or the forward proxy).
struct PlainDialer(SocketAddr);

impl Dialer for PlainDialer {
    type Stream = TcpStream;
    fn dial(&self) -> impl Future<Output = anyhow::Result<TcpStream>> + Send {
        client::dial(self.0)
    }
}

/// A POST request of the `rps` workload (GraphQL, MCP; REST inside TLS):
/// origin-form path and JSON body.
pub(crate) struct Post {
    pub(crate) path: String,
    pub(crate) body: String,
}

/// TLS options of the `rps` workload.
pub(crate) struct TlsOpts {
    /// Trusts the upstream's CA (direct) or sluice's CA (proxied).
    pub(crate) config: Arc<ClientConfig>,
    /// SNI and the name the presented certificate must carry.
    pub(crate) name: ServerName<'static>,
}

/// TLS, directly or inside a CONNECT tunnel; counts handshakes and the
/// distinct leaf certificates presented.
pub(crate) struct TlsDialer {
    target: String,
    proxy: Option<SocketAddr>,
    connector: TlsConnector,
    name: ServerName<'static>,
    handshakes: AtomicU64,
    leaves: Mutex<HashSet<Vec<u8>>>,
}

impl TlsDialer {
    pub(crate) fn new(target: &str, proxy: Option<SocketAddr>, tls: TlsOpts) -> Self {
        Self {
            target: target.to_owned(),
            proxy,
            connector: TlsConnector::from(tls.config),
            name: tls.name,
            handshakes: AtomicU64::new(0),
            leaves: Mutex::new(HashSet::new()),
        }
    }
}

impl Dialer for TlsDialer {
    type Stream = TlsStream<TcpStream>;
    async fn dial(&self) -> anyhow::Result<TlsStream<TcpStream>> {
        let tcp = client::open(&self.target, self.proxy).await?;
        let tls = tokio::time::timeout(
            client::IO_TIMEOUT,
            self.connector.connect(self.name.clone(), tcp),
        )
        .await
        .map_err(|_| anyhow!("TLS handshake with {}: timed out", self.target))?
        .with_context(|| format!("TLS handshake with {}", self.target))?;
        self.handshakes.fetch_add(1, Ordering::Relaxed);
        if let Some(leaf) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
            self.leaves
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(leaf.to_vec());
        }
        Ok(tls)
    }
}

/// Keep-alive GET (or `post`) loop on `connections` connections for
/// `seconds`.
///
/// Plain: absolute-form requests to the forward proxy, or origin-form to the
/// upstream. TLS: origin-form inside TLS, directly or through a CONNECT
/// tunnel; one connection is opened before the clock starts, so a proxy
/// mints its leaf certificate once (a first-use race between 64 concurrent
/// handshakes would otherwise be measured instead), and the reply carries
/// the handshake count and the number of distinct leaf certificates seen.
pub(crate) async fn rps(
    target: &str,
    proxy: Option<SocketAddr>,
    connections: usize,
    seconds: f64,
    body_bytes: usize,
    tls: Option<TlsOpts>,
    post: Option<Post>,
) -> anyhow::Result<String> {
    let duration = secs(seconds)?;
    let connections = connections.max(1);
    let extra = format!(
        "\"proxied\":{},\"tls\":{},\"connections\":{connections},\"body_bytes\":{body_bytes},\"post\":{},\"request_body_bytes\":{},",
        proxy.is_some(),
        tls.is_some(),
        post.is_some(),
        post.as_ref().map_or(0, |p| p.body.len()),
    );
    // POST answers are the server's fixed JSON: any length is accepted.
    let expect = if post.is_some() {
        None
    } else {
        Some(body_bytes)
    };
    let Some(tls) = tls else {
        let origin = match &post {
            Some(p) => p.path.clone(),
            None => format!("/?size={body_bytes}"),
        };
        let target_form = if proxy.is_some() {
            format!("http://{target}{origin}")
        } else {
            origin
        };
        let request = match &post {
            Some(p) => format!(
                "POST {target_form} HTTP/1.1\r\nHost: {target}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n{}",
                p.body.len(),
                p.body
            ),
            None => format!("GET {target_form} HTTP/1.1\r\nHost: {target}\r\n\r\n"),
        };
        // A direct connection for the baseline, a proxy connection otherwise.
        let dial_to = match proxy {
            Some(p) => p,
            None => client::resolve(target).await?,
        };
        let (results, elapsed) = run_keepalive(
            Arc::new(PlainDialer(dial_to)),
            None,
            request.into_bytes(),
            connections,
            duration,
            expect,
        )
        .await?;
        return Ok(merge(results, elapsed, "rps", "rps", &extra));
    };
    let port = target
        .rsplit_once(':')
        .map(|(_, p)| p)
        .ok_or_else(|| anyhow!("target {target:?} has no port"))?;
    let host = match &tls.name {
        ServerName::DnsName(n) => n.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => bail!("unsupported TLS name"),
    };
    let request = match &post {
        Some(p) => format!(
            "POST {} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
            p.path,
            p.body.len(),
            p.body
        ),
        None => format!("GET /?size={body_bytes} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n"),
    };
    let dialer = Arc::new(TlsDialer::new(target, proxy, tls));
    let first = dialer.dial().await.context("first TLS connection")?;
    let (results, elapsed) = run_keepalive(
        Arc::clone(&dialer),
        Some(first),
        request.into_bytes(),
        connections,
        duration,
        expect,
    )
    .await?;
    let handshakes = dialer.handshakes.load(Ordering::Relaxed);
    let leaves = dialer
        .leaves
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .len() as u64;
    // Every handshake after the first for a given leaf reused a cached one.
    let hits = handshakes.saturating_sub(leaves);
    let rate = if handshakes == 0 {
        0.0
    } else {
        hits as f64 / handshakes as f64
    };
    let extra = format!(
        "{extra}\"tls_handshakes\":{handshakes},\"distinct_leaf_certs\":{leaves},\"leaf_reuse_rate\":{rate:.4},"
    );
    Ok(merge(results, elapsed, "rps", "rps", &extra))
}

/// Runs `connections` keep-alive loops until `duration` has passed; the
/// first loop starts on `first` when given. Returns the stats and seconds.
async fn run_keepalive<D: Dialer>(
    dialer: Arc<D>,
    mut first: Option<D::Stream>,
    request: Vec<u8>,
    connections: usize,
    duration: Duration,
    expect: Option<usize>,
) -> anyhow::Result<(Vec<LoopStats>, f64)> {
    let request: Arc<[u8]> = request.into();
    let start = Instant::now();
    let deadline = start + duration;
    let mut set = JoinSet::new();
    for _ in 0..connections {
        let (dialer, request, conn) = (Arc::clone(&dialer), Arc::clone(&request), first.take());
        set.spawn(async move { keepalive_loop(&*dialer, conn, &request, expect, deadline).await });
    }
    let mut results = Vec::new();
    while let Some(r) = set.join_next().await {
        results.push(r?);
    }
    Ok((results, start.elapsed().as_secs_f64()))
}

async fn keepalive_loop<D: Dialer>(
    dialer: &D,
    mut conn: Option<D::Stream>,
    request: &[u8],
    expect: Option<usize>,
    deadline: Instant,
) -> LoopStats {
    let mut st = LoopStats {
        latencies_us: Vec::with_capacity(64 * 1024),
        ..LoopStats::default()
    };
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut consecutive = 0u32;
    // Whether `conn` already carried a response: a kept-alive connection the
    // server closed without saying so (tinyproxy) is retried on a new one
    // at once, like curl's "connection seems to be dead", not an error.
    let mut reused = conn.is_some();
    while Instant::now() < deadline && consecutive < MAX_CONSECUTIVE_ERRORS {
        let t0 = Instant::now();
        let was_reused = reused && conn.is_some();
        let one = async {
            if conn.is_none() {
                buf.clear();
                conn = Some(dialer.dial().await?);
            }
            let s = conn.as_mut().ok_or_else(|| anyhow!("no connection"))?;
            s.write_all(request).await?;
            s.flush().await?;
            let (status, len, close) = read_response(s, &mut buf).await?;
            if status != 200 || expect.is_some_and(|e| e != len) {
                bail!("unexpected response: status {status}, {len} body bytes");
            }
            Ok::<bool, anyhow::Error>(close)
        };
        let left = deadline.saturating_duration_since(Instant::now()) + REQUEST_TIMEOUT;
        match tokio::time::timeout(left.min(REQUEST_TIMEOUT), one).await {
            Ok(Ok(close)) => {
                // A server that closes after each response (no keep-alive)
                // costs a reconnect, not an error.
                reused = !close;
                if close {
                    conn = None;
                }
                st.done += 1;
                st.latencies_us.push(micros(t0.elapsed()));
                consecutive = 0;
            }
            Ok(Err(_)) if was_reused => {
                st.reconnects += 1;
                reused = false;
                conn = None;
                buf.clear();
            }
            Ok(Err(_)) | Err(_) => {
                st.errors += 1;
                consecutive += 1;
                reused = false;
                conn = None;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    st
}

/// New CONNECT tunnel (or, without a proxy, new direct connection) per
/// iteration, one GET through it, then close.
pub(crate) async fn connect_rate(
    target: &str,
    proxy: Option<SocketAddr>,
    seconds: f64,
    concurrency: usize,
    body_bytes: usize,
    rate: Option<f64>,
) -> anyhow::Result<String> {
    let duration = secs(seconds)?;
    let request =
        format!("GET /?size={body_bytes} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n")
            .into_bytes();
    if let Some(rate) = rate {
        return open_loop(target, proxy, duration, rate, request, body_bytes).await;
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut set = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let request = request.clone();
        let target = target.to_owned();
        set.spawn(async move { tunnel_loop(target, proxy, request, body_bytes, deadline).await });
    }
    let mut results = Vec::new();
    while let Some(r) = set.join_next().await {
        results.push(r?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let extra = format!(
        "\"proxied\":{},\"concurrency\":{},",
        proxy.is_some(),
        concurrency.max(1)
    );
    Ok(merge(
        results,
        elapsed,
        "tunnels_per_s",
        "connect-rate",
        &extra,
    ))
}

/// Most tunnels in flight in the open-loop mode; a tick that finds this
/// many still open is counted as an error (the proxy fell behind).
const MAX_IN_FLIGHT: usize = 2048;

/// Open-loop pacing: a new tunnel every `1 / rate` seconds whatever the
/// previous ones are doing, so a slow proxy queues work instead of slowing
/// the client down. Latency is measured from each tunnel's scheduled start
/// (no coordinated omission).
async fn open_loop(
    target: &str,
    proxy: Option<SocketAddr>,
    duration: Duration,
    rate: f64,
    request: Vec<u8>,
    body_bytes: usize,
) -> anyhow::Result<String> {
    if !(1.0..=100_000.0).contains(&rate) {
        bail!("--rate must be within 1..=100000 per second");
    }
    let period = Duration::from_secs_f64(1.0 / rate);
    let total = (duration.as_secs_f64() * rate).floor() as u64;
    let request: Arc<[u8]> = request.into();
    let target: Arc<str> = target.into();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let start = tokio::time::Instant::now();
    let mut set = JoinSet::new();
    let mut st = LoopStats::default();
    for i in 0..total {
        let due = start + period.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        // Reap what finished so the set stays small.
        while let Some(r) = set.try_join_next() {
            record(&mut st, r?);
        }
        let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
            st.errors += 1;
            continue;
        };
        let (target, request) = (Arc::clone(&target), Arc::clone(&request));
        set.spawn(async move {
            let mut buf = BytesMut::with_capacity(4096);
            let r = tokio::time::timeout(
                REQUEST_TIMEOUT,
                one_tunnel(&target, proxy, &request, body_bytes, &mut buf),
            )
            .await;
            drop(permit);
            match r {
                Ok(Ok(())) => Some(micros(due.elapsed())),
                _ => None,
            }
        });
    }
    while let Some(r) = set.join_next().await {
        record(&mut st, r?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let extra = format!(
        "\"proxied\":{},\"rate\":{rate},\"scheduled\":{total},",
        proxy.is_some()
    );
    Ok(merge(
        vec![st],
        elapsed,
        "tunnels_per_s",
        "connect-rate",
        &extra,
    ))
}

fn record(st: &mut LoopStats, r: Option<u32>) {
    match r {
        Some(us) => {
            st.done += 1;
            st.latencies_us.push(us);
        }
        None => st.errors += 1,
    }
}

/// One tunnel (or direct connection): GET, read the reply, wait for EOF.
async fn one_tunnel(
    target: &str,
    proxy: Option<SocketAddr>,
    request: &[u8],
    body_bytes: usize,
    buf: &mut BytesMut,
) -> anyhow::Result<()> {
    let mut s = client::open(target, proxy).await?;
    s.write_all(request).await?;
    let (status, len, _) = read_response(&mut s, buf).await?;
    if status != 200 || len != body_bytes {
        bail!("unexpected response: status {status}, {len} body bytes");
    }
    // Wait for the tunnel's EOF (the server closes), then close.
    let mut rest = [0u8; 64];
    while s.read(&mut rest).await? != 0 {}
    Ok(())
}

async fn tunnel_loop(
    target: String,
    proxy: Option<SocketAddr>,
    request: Vec<u8>,
    body_bytes: usize,
    deadline: Instant,
) -> LoopStats {
    let mut st = LoopStats::default();
    let mut buf = BytesMut::with_capacity(4096);
    let mut consecutive = 0u32;
    while Instant::now() < deadline && consecutive < MAX_CONSECUTIVE_ERRORS {
        let t0 = Instant::now();
        buf.clear();
        let one = one_tunnel(&target, proxy, &request, body_bytes, &mut buf);
        match tokio::time::timeout(REQUEST_TIMEOUT, one).await {
            Ok(Ok(())) => {
                st.done += 1;
                st.latencies_us.push(micros(t0.elapsed()));
                consecutive = 0;
            }
            Ok(Err(_)) | Err(_) => {
                st.errors += 1;
                consecutive += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    st
}

/// VmRSS of `pid` in KiB (from `/proc/PID/status`).
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for pid {pid}"))
}

/// Opens `count` CONNECT tunnels (at most `concurrency` handshakes at a
/// time), keeps them idle, and reports the proxy's RSS growth per tunnel.
pub(crate) async fn idle_tunnels(
    target: &str,
    proxy: SocketAddr,
    count: usize,
    concurrency: usize,
    pid: u32,
    settle: Duration,
) -> anyhow::Result<String> {
    tokio::time::sleep(settle).await;
    let before = rss_kib(pid)?;
    let start = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    for _ in 0..count {
        let permit = Arc::clone(&sem).acquire_owned().await?;
        let target = target.to_owned();
        set.spawn(async move {
            let r = client::open(&target, Some(proxy)).await;
            drop(permit);
            r
        });
    }
    let mut conns = Vec::with_capacity(count);
    let mut errors = 0u64;
    let mut first_error = String::new();
    while let Some(r) = set.join_next().await {
        match r? {
            Ok(s) => conns.push(s),
            Err(e) => {
                if errors == 0 {
                    first_error = format!("{e:#}");
                }
                errors += 1;
            }
        }
    }
    let open_s = start.elapsed().as_secs_f64();
    // Let the proxy's allocator and tasks settle with every tunnel idle.
    tokio::time::sleep(settle).await;
    let after = rss_kib(pid)?;
    let opened = conns.len();
    let per = if opened == 0 {
        0.0
    } else {
        after.saturating_sub(before) as f64 / opened as f64
    };
    drop(conns);
    Ok(format!(
        "{{\"workload\":\"idle-tunnels\",\"requested\":{count},\"opened\":{opened},\"errors\":{errors},\"open_seconds\":{open_s:.2},\"rss_before_kib\":{before},\"rss_after_kib\":{after},\"kib_per_tunnel\":{per:.2},\"first_error\":{first_error:?}}}"
    ))
}

/// WebSocket echo round trips: `connections` connections (direct, or inside
/// a CONNECT tunnel), each a closed loop of one masked text message of
/// `message_bytes` and its echo, for `seconds`.
pub(crate) async fn websocket(
    target: &str,
    proxy: Option<SocketAddr>,
    path: &str,
    connections: usize,
    seconds: f64,
    message_bytes: usize,
) -> anyhow::Result<String> {
    let duration = secs(seconds)?;
    let connections = connections.max(1);
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut s = client::open(target, proxy).await?;
        let leftover = crate::ws::client_handshake(&mut s, target, path).await?;
        conns.push((s, leftover));
    }
    let frame: Arc<[u8]> = crate::ws::client_text_frame(message_bytes).into();
    let start = Instant::now();
    let deadline = start + duration;
    let mut set = JoinSet::new();
    for (s, leftover) in conns {
        let frame = Arc::clone(&frame);
        set.spawn(ws_loop(s, leftover, frame, message_bytes, deadline));
    }
    let mut results = Vec::new();
    while let Some(r) = set.join_next().await {
        results.push(r?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let extra = format!(
        "\"proxied\":{},\"connections\":{connections},\"message_bytes\":{message_bytes},",
        proxy.is_some()
    );
    Ok(merge(results, elapsed, "msgs_per_s", "websocket", &extra))
}

async fn ws_loop(
    mut s: TcpStream,
    mut buf: BytesMut,
    frame: Arc<[u8]>,
    message_bytes: usize,
    deadline: Instant,
) -> LoopStats {
    let mut st = LoopStats {
        latencies_us: Vec::with_capacity(64 * 1024),
        ..LoopStats::default()
    };
    while Instant::now() < deadline {
        let t0 = Instant::now();
        let one = async {
            s.write_all(&frame).await?;
            let (opcode, len) = crate::ws::read_frame(&mut s, &mut buf).await?;
            if opcode != 1 || len != message_bytes {
                bail!("unexpected echo: opcode {opcode}, {len} bytes");
            }
            Ok::<(), anyhow::Error>(())
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, one).await {
            Ok(Ok(())) => {
                st.done += 1;
                st.latencies_us.push(micros(t0.elapsed()));
            }
            // A broken WebSocket is not resumable: stop this connection.
            Ok(Err(_)) | Err(_) => {
                st.errors += 1;
                break;
            }
        }
    }
    st
}
