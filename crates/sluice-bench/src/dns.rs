//! `dns`: a closed-loop DNS load generator. `concurrency` queries are
//! outstanding at all times, each a standard query (RD set) for NAME, type A,
//! class IN, with a fresh id; a reply is matched to its query by id and the
//! next query goes out at once. A query unanswered after `timeout` counts as
//! a loss (and is replaced). UDP on one connected socket, or with `tcp`
//! (RFC 1035 §4.2.2 framing) `concurrency` connections with one query
//! outstanding each, reconnecting when the server closes one.
//!
//! Memory is fixed: at most `concurrency` pending queries, and latencies go
//! into a [`Histogram`].

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::JoinSet;

use crate::client;
use crate::stats::Histogram;

/// Highest `--concurrency` (each TCP connection has its own histogram).
pub(crate) const MAX_CONCURRENCY: usize = 1024;
/// Largest reply read (TCP); a UDP datagram beyond it is truncated and
/// still matched by its header.
const MAX_REPLY: usize = 4096;
/// How often pending UDP queries are checked against the timeout.
const EXPIRY_TICK: Duration = Duration::from_millis(10);
/// A TCP connection loop stops after this many failures in a row.
const MAX_CONSECUTIVE_ERRORS: u32 = 20;

/// One run's parameters.
pub(crate) struct DnsLoad {
    pub(crate) server: SocketAddr,
    pub(crate) name: String,
    pub(crate) seconds: f64,
    pub(crate) concurrency: usize,
    pub(crate) tcp: bool,
    pub(crate) timeout: Duration,
}

/// The counters of a run (per TCP connection, then merged).
struct Tally {
    /// One sample per answered query.
    latency: Histogram,
    /// Answers by response code (header RCODE, 4 bits).
    rcodes: [u64; 16],
    sent: u64,
    /// Queries unanswered after the timeout.
    losses: u64,
    /// Replies that matched no pending query (late answers to queries already
    /// counted as lost, or malformed replies).
    unmatched: u64,
    /// Failed sends, connects and broken connections.
    errors: u64,
    /// TCP: connections the server closed after answering (a new one was
    /// opened for the next query).
    reconnects: u64,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency: Histogram::new(),
            rcodes: [0; 16],
            sent: 0,
            losses: 0,
            unmatched: 0,
            errors: 0,
            reconnects: 0,
        }
    }

    fn answered(&mut self, sent: Instant, rcode: u8) {
        let us = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
        self.latency.record(us);
        self.rcodes[usize::from(rcode & 0x0f)] += 1;
    }

    fn merge(&mut self, o: &Self) {
        self.latency.merge(&o.latency);
        for (a, b) in self.rcodes.iter_mut().zip(o.rcodes) {
            *a += b;
        }
        self.sent += o.sent;
        self.losses += o.losses;
        self.unmatched += o.unmatched;
        self.errors += o.errors;
        self.reconnects += o.reconnects;
    }
}

/// `NAME` in wire form (length-prefixed labels, then the root). Labels are
/// letters, digits, `-` and `_`, so the name needs no escaping in the output.
fn wire_name(name: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.trim_end_matches('.').split('.') {
        let ok = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            bail!("invalid label {label:?} in {name:?}");
        }
        out.push(u8::try_from(label.len())?);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    if out.len() > 255 {
        bail!("{name:?} is longer than 255 bytes");
    }
    Ok(out)
}

/// A standard query with id 0: header (RD set, one question), then the
/// question `qname` A IN.
fn query(qname: &[u8]) -> Vec<u8> {
    let mut q = Vec::with_capacity(12 + qname.len() + 4);
    q.extend_from_slice(&[0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(qname);
    q.extend_from_slice(&[0, 1, 0, 1]);
    q
}

/// The id and RCODE of a response (QR set); `None` for anything else.
fn reply_of(msg: &[u8]) -> Option<(u16, u8)> {
    if msg.len() < 12 || msg[2] & 0x80 == 0 {
        return None;
    }
    Some((u16::from_be_bytes([msg[0], msg[1]]), msg[3] & 0x0f))
}

/// A starting id that differs between runs.
fn seed_id() -> u16 {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (n ^ (n >> 16)) as u16
}

/// Runs the load and returns its JSON line.
pub(crate) async fn dns(load: DnsLoad) -> anyhow::Result<String> {
    if !(0.0..=600.0).contains(&load.seconds) {
        bail!("seconds must be within 0..=600");
    }
    if !(1..=MAX_CONCURRENCY).contains(&load.concurrency) {
        bail!("concurrency must be within 1..={MAX_CONCURRENCY}");
    }
    let template = query(&wire_name(&load.name)?);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(load.seconds);
    let (t, outstanding) = if load.tcp {
        let mut set = JoinSet::new();
        let seed = seed_id();
        for i in 0..load.concurrency {
            // Spread the connections' ids apart (only for readability of
            // captures: each connection matches its own single query).
            let first = seed.wrapping_add((i as u16).wrapping_mul(64));
            set.spawn(tcp_loop(
                load.server,
                template.clone(),
                first,
                load.timeout,
                deadline,
            ));
        }
        let mut t = Tally::new();
        while let Some(r) = set.join_next().await {
            t.merge(&r?);
        }
        (t, 0)
    } else {
        udp_loop(&load, template, deadline).await?
    };
    let elapsed = start.elapsed().as_secs_f64();
    let answers = t.latency.count();
    let names = [
        "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
    ];
    let rcodes = t
        .rcodes
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| match names.get(i) {
            Some(name) => format!("\"{name}\":{n}"),
            None => format!("\"RCODE{i}\":{n}"),
        })
        .collect::<Vec<_>>()
        .join(",");
    Ok(format!(
        "{{\"workload\":\"dns\",\"transport\":\"{}\",\"server\":\"{}\",\"name\":\"{}\",\"concurrency\":{},\"seconds\":{elapsed:.3},\"sent\":{},\"answers\":{answers},\"answers_per_s\":{:.1},\"p50_us\":{},\"p99_us\":{},\"max_us\":{},\"rcodes\":{{{rcodes}}},\"losses\":{},\"outstanding_at_end\":{outstanding},\"unmatched\":{},\"errors\":{},\"reconnects\":{}}}",
        if load.tcp { "tcp" } else { "udp" },
        load.server,
        load.name.trim_end_matches('.'),
        load.concurrency,
        t.sent,
        answers as f64 / elapsed,
        t.latency.percentile(50.0),
        t.latency.percentile(99.0),
        t.latency.max(),
        t.losses,
        t.unmatched,
        t.errors,
        t.reconnects,
    ))
}

/// UDP: one connected socket, `concurrency` queries pending by id. Returns
/// the tally and the queries still pending (younger than the timeout) when
/// the deadline passed; answers after the deadline are not counted.
async fn udp_loop(
    load: &DnsLoad,
    mut q: Vec<u8>,
    deadline: Instant,
) -> anyhow::Result<(Tally, usize)> {
    let local: SocketAddr = if load.server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket
        .connect(load.server)
        .await
        .with_context(|| format!("connect {}", load.server))?;
    let mut t = Tally::new();
    let mut pending: HashMap<u16, Instant> = HashMap::with_capacity(load.concurrency);
    let mut id = seed_id();
    let mut buf = vec![0u8; MAX_REPLY];
    let mut tick = tokio::time::interval(EXPIRY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let end = tokio::time::sleep_until(deadline.into());
    tokio::pin!(end);
    loop {
        // Top up to `concurrency` pending queries; after a failed send the
        // rest wait for the next tick.
        while pending.len() < load.concurrency {
            loop {
                id = id.wrapping_add(1);
                if !pending.contains_key(&id) {
                    break;
                }
            }
            q[..2].copy_from_slice(&id.to_be_bytes());
            if socket.send(&q).await.is_err() {
                t.errors += 1;
                break;
            }
            t.sent += 1;
            pending.insert(id, Instant::now());
        }
        tokio::select! {
            () = &mut end => break,
            r = socket.recv(&mut buf) => match r {
                Ok(n) => {
                    let hit = reply_of(&buf[..n])
                        .and_then(|(id, rcode)| pending.remove(&id).map(|sent| (sent, rcode)));
                    match hit {
                        Some((sent, rcode)) => t.answered(sent, rcode),
                        None => t.unmatched += 1,
                    }
                }
                // E.g. ECONNREFUSED after an ICMP error: the query stays
                // pending until it times out.
                Err(_) => t.errors += 1,
            },
            _ = tick.tick() => {
                let now = Instant::now();
                let before = pending.len();
                pending.retain(|_, sent| now.duration_since(*sent) < load.timeout);
                t.losses += (before - pending.len()) as u64;
            }
        }
    }
    Ok((t, pending.len()))
}

/// TCP: one connection, one query at a time until the deadline.
async fn tcp_loop(
    server: SocketAddr,
    template: Vec<u8>,
    mut id: u16,
    timeout: Duration,
    deadline: Instant,
) -> Tally {
    let mut t = Tally::new();
    let mut conn: Option<TcpStream> = None;
    let mut framed = u16::try_from(template.len())
        .unwrap_or(u16::MAX)
        .to_be_bytes()
        .to_vec();
    framed.extend_from_slice(&template);
    let mut buf = vec![0u8; MAX_REPLY];
    let mut consecutive = 0;
    while Instant::now() < deadline && consecutive < MAX_CONSECUTIVE_ERRORS {
        id = id.wrapping_add(1);
        framed[2..4].copy_from_slice(&id.to_be_bytes());
        let sent = Instant::now();
        t.sent += 1;
        let one = tcp_query(server, &mut conn, &framed, &mut buf, &mut t.reconnects);
        match tokio::time::timeout(timeout, one).await {
            Ok(Ok((rid, rcode))) if rid == id => {
                t.answered(sent, rcode);
                consecutive = 0;
            }
            Ok(Ok(_)) => {
                t.unmatched += 1;
                conn = None;
            }
            Ok(Err(_)) => {
                t.errors += 1;
                consecutive += 1;
                conn = None;
            }
            Err(_) => {
                t.losses += 1;
                consecutive += 1;
                conn = None;
            }
        }
    }
    t
}

/// One framed query on `conn`, opening it if needed; if a kept connection
/// fails (the server closed it after its last answer), once more on a new
/// one. The reply's id and RCODE.
async fn tcp_query(
    server: SocketAddr,
    conn: &mut Option<TcpStream>,
    framed: &[u8],
    buf: &mut [u8],
    reconnects: &mut u64,
) -> anyhow::Result<(u16, u8)> {
    loop {
        let fresh = conn.is_none();
        if fresh {
            *conn = Some(client::dial(server).await?);
        }
        let s = conn.as_mut().ok_or_else(|| anyhow!("no connection"))?;
        match exchange(s, framed, buf).await {
            Ok(r) => return Ok(r),
            Err(e) if fresh => return Err(e),
            Err(_) => {
                *conn = None;
                *reconnects += 1;
            }
        }
    }
}

async fn exchange(s: &mut TcpStream, framed: &[u8], buf: &mut [u8]) -> anyhow::Result<(u16, u8)> {
    s.write_all(framed).await?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > buf.len() {
        bail!("reply of {len} bytes");
    }
    s.read_exact(&mut buf[..len]).await?;
    reply_of(&buf[..len]).ok_or_else(|| anyhow!("not a DNS response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_wire_format() {
        let q = query(&wire_name("bulk.bench.internal.").unwrap());
        assert_eq!(&q[..12], &[0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&q[12..17], b"\x04bulk");
        assert_eq!(&q[q.len() - 5..], &[0, 0, 1, 0, 1]);
        assert!(wire_name("a..b").is_err());
        assert!(wire_name("a\"b").is_err());
        assert!(wire_name(&"a".repeat(64)).is_err());
        assert_eq!(reply_of(&q), None, "a query is not a reply");
        let mut r = q.clone();
        r[..4].copy_from_slice(&[0x12, 0x34, 0x81, 0x85]);
        assert_eq!(reply_of(&r), Some((0x1234, 5)));
    }

    /// A local responder that answers every other query REFUSED and drops
    /// the rest: answers are matched by id, drops become losses.
    #[tokio::test]
    async fn udp_matches_by_id_and_counts_losses() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let mut n = 0u64;
            while let Ok((len, peer)) = server.recv_from(&mut buf).await {
                n += 1;
                if n.is_multiple_of(2) {
                    continue;
                }
                let mut r = buf[..len].to_vec();
                r[2] |= 0x80;
                r[3] = (r[3] & 0xf0) | 5;
                let _ = server.send_to(&r, peer).await;
            }
        });
        let out = dns(DnsLoad {
            server: addr,
            name: "x.test".into(),
            seconds: 0.5,
            concurrency: 4,
            tcp: false,
            timeout: Duration::from_millis(100),
        })
        .await
        .unwrap();
        assert!(out.contains("\"rcodes\":{\"REFUSED\":"), "{out}");
        assert!(!out.contains("\"losses\":0,"), "{out}");
        assert!(!out.contains("\"answers\":0,"), "{out}");
    }
}
