//! Redis round trips per second: `GET` or `SET` of one key per connection,
//! each connection a closed loop with `pipeline` commands in flight, direct
//! or through a CONNECT tunnel (sluice's Redis processor evaluates every
//! command). Replies are read just far enough to frame them (simple
//! strings, errors, integers, bulk strings); an error reply counts as an
//! error.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::client;
use crate::workload::{merge, micros, LoopStats};

/// Deadline for one batch of replies.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET` or `SET`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Op {
    Get,
    Set,
}

fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One reply at the start of `buf`: its length and whether it is an error;
/// `None` when incomplete.
fn reply(buf: &[u8]) -> anyhow::Result<Option<(usize, bool)>> {
    let Some(nl) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    match buf.first() {
        Some(b'+' | b':') => Ok(Some((nl + 2, false))),
        Some(b'-') => Ok(Some((nl + 2, true))),
        Some(b'$') => {
            let n: i64 = std::str::from_utf8(&buf[1..nl])?.parse()?;
            if n < 0 {
                return Ok(Some((nl + 2, false)));
            }
            let end = nl + 2 + usize::try_from(n)? + 2;
            Ok((buf.len() >= end).then_some((end, false)))
        }
        _ => bail!("unexpected reply {:?}", String::from_utf8_lossy(&buf[..nl])),
    }
}

/// Reads `n` replies; how many were errors.
async fn replies(s: &mut TcpStream, buf: &mut BytesMut, n: usize) -> anyhow::Result<usize> {
    let mut errors = 0;
    for _ in 0..n {
        loop {
            if let Some((len, err)) = reply(buf)? {
                buf.advance(len);
                errors += usize::from(err);
                break;
            }
            if s.read_buf(buf).await? == 0 {
                bail!("connection closed");
            }
        }
    }
    Ok(errors)
}

pub(crate) struct RedisLoad<'a> {
    pub(crate) target: &'a str,
    pub(crate) proxy: Option<SocketAddr>,
    pub(crate) op: Op,
    pub(crate) connections: usize,
    pub(crate) seconds: f64,
    pub(crate) pipeline: usize,
    pub(crate) value_bytes: usize,
}

pub(crate) async fn redis(load: RedisLoad<'_>) -> anyhow::Result<String> {
    let duration = Duration::from_secs_f64(load.seconds.clamp(0.0, 600.0));
    let connections = load.connections.max(1);
    let pipeline = load.pipeline.max(1);
    let value = vec![b'v'; load.value_bytes];
    let mut conns = Vec::with_capacity(connections);
    for i in 0..connections {
        let mut s = client::open(load.target, load.proxy).await?;
        let key = format!("bench:key:{i}").into_bytes();
        // The key exists before GETs are timed.
        s.write_all(&command(&[b"SET", &key, &value])).await?;
        let mut buf = BytesMut::with_capacity(4096);
        let errors = tokio::time::timeout(REPLY_TIMEOUT, replies(&mut s, &mut buf, 1))
            .await
            .map_err(|_| anyhow!("SET reply timed out"))??;
        if errors > 0 {
            bail!("SET {} refused", String::from_utf8_lossy(&key));
        }
        let one = match load.op {
            Op::Get => command(&[b"GET", &key]),
            Op::Set => command(&[b"SET", &key, &value]),
        };
        conns.push((s, buf, one.repeat(pipeline)));
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut set = JoinSet::new();
    for (s, buf, batch) in conns {
        set.spawn(redis_loop(s, buf, batch, pipeline, deadline));
    }
    let mut results = Vec::new();
    while let Some(r) = set.join_next().await {
        results.push(r?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let op = match load.op {
        Op::Get => "get",
        Op::Set => "set",
    };
    let extra = format!(
        "\"proxied\":{},\"op\":\"{op}\",\"connections\":{connections},\"pipeline\":{pipeline},\"value_bytes\":{},",
        load.proxy.is_some(),
        load.value_bytes
    );
    Ok(merge(results, elapsed, "ops_per_s", "redis", &extra))
}

async fn redis_loop(
    mut s: TcpStream,
    mut buf: BytesMut,
    batch: Vec<u8>,
    pipeline: usize,
    deadline: Instant,
) -> LoopStats {
    let mut st = LoopStats {
        latencies_us: Vec::with_capacity(64 * 1024),
        ..LoopStats::default()
    };
    while Instant::now() < deadline {
        let t0 = Instant::now();
        let one = async {
            s.write_all(&batch).await?;
            replies(&mut s, &mut buf, pipeline).await
        };
        match tokio::time::timeout(REPLY_TIMEOUT, one).await {
            Ok(Ok(errors)) => {
                st.done += (pipeline - errors) as u64;
                st.errors += errors as u64;
                st.latencies_us.push(micros(t0.elapsed()));
            }
            // A connection out of step is not resumable: stop it.
            Ok(Err(_)) | Err(_) => {
                st.errors += 1;
                break;
            }
        }
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_replies() {
        type Framed = Option<(usize, bool)>;
        let cases: &[(&[u8], Framed)] = &[
            (b"+OK\r\n", Some((5, false))),
            (b"-ERR sluice: no\r\n", Some((17, true))),
            (b"$3\r\nabc\r\n+OK\r\n", Some((9, false))),
            (b"$-1\r\n", Some((5, false))),
            (b"$3\r\nab", None),
            (b"+OK", None),
        ];
        for (input, want) in cases {
            assert_eq!(reply(input).expect("valid"), *want);
        }
        assert!(reply(b"*1\r\n").is_err());
        assert_eq!(command(&[b"GET", b"k"]), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }
}
