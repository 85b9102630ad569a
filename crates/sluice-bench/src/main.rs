//! `sluice-bench`: the upstream and the load generator used by `bench/run`.
//!
//! * `serve`: a TCP byte sink (acks the byte count on half-close) and a
//!   minimal HTTP/1.1 keep-alive server with fixed-size bodies, optionally
//!   also behind TLS (`--https`).
//! * `gen-cert`: a throwaway CA and a server certificate for `serve --https`.
//! * `bulk`: one-way throughput, direct or through a CONNECT tunnel.
//! * `rps`: keep-alive GET (or `--post-path` POST) requests per second,
//!   direct or via the forward proxy; with `--tls`, over TLS directly or
//!   inside a CONNECT tunnel.
//! * `connect-rate`: new CONNECT tunnels per second, one request each;
//!   closed loop, or open loop at a fixed `--rate`.
//! * `idle-tunnels`: open N idle CONNECT tunnels, report the proxy's RSS
//!   growth per tunnel.
//! * `ws`: WebSocket echo messages per second (`serve --ws` is the echo).
//! * `dns`: DNS answers per second and latency (closed loop over UDP, or TCP).
//! * `redis`: Redis `GET`/`SET` round trips per second, direct or through a
//!   CONNECT tunnel (sluice's Redis processor).
//!
//! Every client workload is bounded in time and prints one JSON line.
//! Addresses are socket addresses; a direct `--target NAME:PORT` is resolved
//! with the system resolver (inside `sluice run` that is policy DNS). The
//! benchmark only ever talks to loopback, to the network namespace `bench/run`
//! creates, and to the sandbox `sluice run` creates.

mod client;
mod dns;
mod redis;
mod server;
mod sse;
mod stats;
mod tls;
mod workload;
mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "sluice-bench",
    about = "sluice benchmark upstream and load generator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the upstream: a byte sink and an HTTP/1.1 keep-alive server.
    Serve(ServeArgs),
    /// Write a throwaway CA (ca.pem) and a server certificate for NAME
    /// (cert.pem, chain leaf then CA; key.pem).
    GenCert(GenCertArgs),
    /// One-way bulk throughput (N bytes per stream, acked by the sink).
    Bulk(BulkArgs),
    /// Keep-alive HTTP requests per second and latency percentiles.
    Rps(RpsArgs),
    /// New CONNECT tunnels per second, one small request through each.
    ConnectRate(ConnectRateArgs),
    /// Hold N idle CONNECT tunnels; report the proxy's RSS per tunnel.
    IdleTunnels(IdleArgs),
    /// WebSocket echo round trips per second.
    Ws(WsArgs),
    /// DNS answers per second: closed loop of A queries for one name.
    Dns(DnsArgs),
    /// Redis GET or SET round trips per second (a Redis server at the target).
    Redis(RedisArgs),
    /// Streamed chat completions over TLS: time to the first SSE event.
    SseTtfb(SseArgs),
}

#[derive(Debug, Args)]
struct SseArgs {
    #[command(flatten)]
    dest: Dest,
    /// CA certificate(s) (PEM) trusted for the server certificate.
    #[arg(long)]
    ca: PathBuf,
    /// TLS server name and `Host` header. Default: the target's host.
    #[arg(long)]
    sni: Option<String>,
    /// Keep-alive connections, each a closed loop.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Duration of the measurement, seconds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Request path.
    #[arg(long, default_value = "/v1/chat/completions")]
    path: String,
    /// JSON body (must ask for a stream).
    #[arg(
        long,
        default_value = r#"{"model":"bench-model","stream":true,"messages":[{"role":"user","content":"ping"}]}"#
    )]
    body: String,
}

#[derive(Debug, Args)]
struct RedisArgs {
    #[command(flatten)]
    dest: Dest,
    /// The command timed (each connection works on a key of its own).
    #[arg(long, value_enum, default_value = "get")]
    op: redis::Op,
    /// Connections, each a closed loop.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Duration of the measurement, seconds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Commands in flight per connection (1: one round trip each).
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Value size written by SET (and read by GET).
    #[arg(long, default_value_t = 64)]
    value_bytes: usize,
}

#[derive(Debug, Args)]
struct DnsArgs {
    /// The DNS server: `IP:PORT`, or `IP` for port 53.
    #[arg(long, value_parser = parse_dns_server)]
    server: SocketAddr,
    /// The name asked for (type A).
    #[arg(long)]
    name: String,
    /// Duration of the measurement, seconds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Queries outstanding at once (TCP: connections, one query each).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// DNS over TCP instead of UDP.
    #[arg(long)]
    tcp: bool,
    /// A query unanswered after this many milliseconds is a loss.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
}

fn parse_dns_server(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
        .map_err(|_| format!("expected IP or IP:PORT, got {s:?}"))
}

#[derive(Debug, Args)]
struct IdleArgs {
    /// Upstream `HOST:PORT` sent in each CONNECT (the byte sink).
    #[arg(long)]
    target: String,
    /// The proxy's listen address.
    #[arg(long)]
    proxy: SocketAddr,
    /// PID of the proxy (its /proc/PID/status VmRSS is read).
    #[arg(long)]
    pid: u32,
    /// Tunnels to open and hold.
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// CONNECT handshakes in flight at once.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Pause before each RSS reading, milliseconds.
    #[arg(long, default_value_t = 1000)]
    settle_ms: u64,
}

#[derive(Debug, Args)]
struct WsArgs {
    #[command(flatten)]
    dest: Dest,
    /// Request path of the upgrade.
    #[arg(long, default_value = "/echo")]
    path: String,
    /// WebSocket connections, each a closed loop.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Duration of the measurement, seconds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Text message size.
    #[arg(long, default_value_t = 1024)]
    message_bytes: usize,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address of the byte sink.
    #[arg(long)]
    bulk: SocketAddr,
    /// Address of the HTTP server.
    #[arg(long)]
    http: SocketAddr,
    /// Address of the same HTTP server behind TLS (needs --cert and --key).
    #[arg(long, requires_all = ["cert", "key"])]
    https: Option<SocketAddr>,
    /// Certificate chain (PEM) presented on --https.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Address of the WebSocket echo server.
    #[arg(long)]
    ws: Option<SocketAddr>,
    /// Default response body size (a request's `?size=N` overrides it).
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
}

#[derive(Debug, Args)]
struct GenCertArgs {
    /// Output directory (created if missing).
    #[arg(long)]
    dir: PathBuf,
    /// DNS name the server certificate is issued for.
    #[arg(long, default_value = "bench.internal")]
    name: String,
}

/// Where to send traffic: `HOST:PORT` of the upstream, and the proxy if any.
#[derive(Debug, Args)]
struct Dest {
    /// Upstream `HOST:PORT`. Without `--proxy` a host name is resolved with
    /// the system resolver (getaddrinfo; the first address is dialed).
    #[arg(long)]
    target: String,
    /// sluice's listen address (`IP:PORT`, or a proxy URL `http://IP:PORT`
    /// as in `HTTPS_PROXY`); without it the target is dialed directly.
    #[arg(long, value_parser = client::parse_proxy)]
    proxy: Option<SocketAddr>,
}

#[derive(Debug, Args)]
struct BulkArgs {
    #[command(flatten)]
    dest: Dest,
    /// Bytes written per stream.
    #[arg(long)]
    bytes: u64,
    /// Concurrent streams.
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

#[derive(Debug, Args)]
struct RpsArgs {
    #[command(flatten)]
    dest: Dest,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Duration of the measurement, seconds.
    #[arg(long, default_value_t = 8.0)]
    seconds: f64,
    /// Response body size requested (`?size=N`).
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// Speak TLS: directly to the target, or inside a CONNECT tunnel
    /// (`--proxy`). Requests are origin-form. Needs --ca.
    #[arg(long, requires = "ca")]
    tls: bool,
    /// CA certificate(s) (PEM) trusted for the server certificate: the
    /// upstream's CA direct, sluice's CA (`sluice ca show`) through sluice.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// TLS server name (SNI, verified, and the `Host` header). Default: the
    /// target's host.
    #[arg(long)]
    sni: Option<String>,
    /// Send `POST <PATH>` with --post-body (JSON) instead of GETs; any 200
    /// answer counts. Plain (absolute-form through the forward proxy) or,
    /// with --tls, origin-form inside TLS.
    #[arg(long, requires = "post_body")]
    post_path: Option<String>,
    /// JSON body of each POST.
    #[arg(long)]
    post_body: Option<String>,
}

#[derive(Debug, Args)]
struct ConnectRateArgs {
    /// Upstream `HOST:PORT` of the HTTP server, as sent in CONNECT.
    #[arg(long)]
    target: String,
    /// sluice's listen address; without it each iteration is a new direct
    /// connection to the target (the baseline).
    #[arg(long)]
    proxy: Option<SocketAddr>,
    /// Duration of the measurement, seconds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Tunnels opened concurrently.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Response body size requested through each tunnel.
    #[arg(long, default_value_t = 64)]
    body_bytes: usize,
    /// Open loop: start this many tunnels per second on a fixed schedule
    /// (ignores --concurrency); latency counts from each scheduled start.
    #[arg(long)]
    rate: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Serve(a) => {
                let https = match (a.https, &a.cert, &a.key) {
                    (Some(addr), Some(cert), Some(key)) => {
                        Some((addr, tls::server_config(cert, key)?))
                    }
                    _ => None,
                };
                server::serve(a.bulk, a.http, https, a.ws, a.body_bytes).await
            }
            Command::GenCert(a) => tls::gen_cert(&a.dir, &a.name),
            Command::Bulk(a) => {
                let r = workload::bulk(&a.dest.target, a.dest.proxy, a.bytes, a.streams, a.timeout)
                    .await?;
                println!("{r}");
                Ok(())
            }
            Command::Rps(a) => {
                let tls = match (a.tls, &a.ca) {
                    (true, Some(ca)) => {
                        let host = a.dest.target.rsplit_once(':').map_or("", |(h, _)| h);
                        let host = host.trim_start_matches('[').trim_end_matches(']');
                        let name = a.sni.as_deref().unwrap_or(host);
                        Some(workload::TlsOpts {
                            config: tls::client_config(ca)?,
                            name: tls::server_name(name)?,
                        })
                    }
                    _ => None,
                };
                let r = workload::rps(
                    &a.dest.target,
                    a.dest.proxy,
                    a.connections,
                    a.seconds,
                    a.body_bytes,
                    tls,
                    a.post_path.map(|path| workload::Post {
                        path,
                        body: a.post_body.unwrap_or_default(),
                    }),
                )
                .await?;
                println!("{r}");
                Ok(())
            }
            Command::SseTtfb(a) => {
                let host = a.dest.target.rsplit_once(':').map_or("", |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name = a.sni.as_deref().unwrap_or(host).to_owned();
                let tls = workload::TlsOpts {
                    config: tls::client_config(&a.ca)?,
                    name: tls::server_name(&name)?,
                };
                let req = sse::StreamRequest {
                    host_header: &name,
                    path: &a.path,
                    body: &a.body,
                };
                let r = sse::ttfb(
                    &a.dest.target,
                    a.dest.proxy,
                    tls,
                    a.connections,
                    a.seconds,
                    &req,
                )
                .await?;
                println!("{r}");
                Ok(())
            }
            Command::ConnectRate(a) => {
                let r = workload::connect_rate(
                    &a.target,
                    a.proxy,
                    a.seconds,
                    a.concurrency,
                    a.body_bytes,
                    a.rate,
                )
                .await?;
                println!("{r}");
                Ok(())
            }
            Command::IdleTunnels(a) => {
                let r = workload::idle_tunnels(
                    &a.target,
                    a.proxy,
                    a.count,
                    a.concurrency,
                    a.pid,
                    std::time::Duration::from_millis(a.settle_ms),
                )
                .await?;
                println!("{r}");
                Ok(())
            }
            Command::Ws(a) => {
                let r = workload::websocket(
                    &a.dest.target,
                    a.dest.proxy,
                    &a.path,
                    a.connections,
                    a.seconds,
                    a.message_bytes,
                )
                .await?;
                println!("{r}");
                Ok(())
            }
            Command::Redis(a) => {
                let r = redis::redis(redis::RedisLoad {
                    target: &a.dest.target,
                    proxy: a.dest.proxy,
                    op: a.op,
                    connections: a.connections,
                    seconds: a.seconds,
                    pipeline: a.pipeline,
                    value_bytes: a.value_bytes,
                })
                .await?;
                println!("{r}");
                Ok(())
            }
            Command::Dns(a) => {
                let r = dns::dns(dns::DnsLoad {
                    server: a.server,
                    name: a.name,
                    seconds: a.seconds,
                    concurrency: a.concurrency,
                    tcp: a.tcp,
                    timeout: std::time::Duration::from_millis(a.timeout_ms),
                })
                .await?;
                println!("{r}");
                Ok(())
            }
        }
    })
}
