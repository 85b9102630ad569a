//! Raw bidirectional relay for tunnels: half-close aware, idle-bounded,
//! and stoppable (a policy reload that no longer allows the tunnel ends it).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Buffer per direction, allocated only while bytes flow (an idle tunnel
/// holds none: it is released whenever the socket has nothing to read).
const BUF_SIZE: usize = 64 * 1024;

/// How a tunnel ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelEnd {
    /// Both sides finished (EOF both ways) or one side errored.
    Closed,
    /// No byte moved either way for the idle timeout.
    Idle,
    /// The stop future fired (e.g. policy no longer allows it).
    Stopped,
}

/// Byte counts and the reason a tunnel ended.
#[derive(Clone, Copy, Debug)]
pub struct TunnelStats {
    pub to_upstream: u64,
    pub to_client: u64,
    pub end: TunnelEnd,
}

/// Relay bytes between `client` and `upstream` until both directions end,
/// the tunnel idles for `idle`, or `stop` completes. `initial` is written
/// upstream first (bytes the client sent right after its CONNECT head).
pub async fn relay<S>(
    client: TcpStream,
    upstream: TcpStream,
    initial: &[u8],
    idle: Duration,
    stop: S,
) -> TunnelStats
where
    S: Future<Output = ()>,
{
    let start = Instant::now();
    let activity = AtomicU64::new(0);
    let up_count = AtomicU64::new(0);
    let down_count = AtomicU64::new(0);
    let (cr, cw) = client.into_split();
    let (ur, mut uw) = upstream.into_split();
    if !initial.is_empty() && uw.write_all(initial).await.is_err() {
        return TunnelStats {
            to_upstream: 0,
            to_client: 0,
            end: TunnelEnd::Closed,
        };
    }
    up_count.fetch_add(initial.len() as u64, Ordering::Relaxed);
    let both = async {
        tokio::join!(
            pump(cr, uw, &activity, &up_count, start),
            pump(ur, cw, &activity, &down_count, start)
        )
    };
    let watchdog = async {
        loop {
            let last = Duration::from_millis(activity.load(Ordering::Relaxed));
            let deadline = start + last + idle;
            tokio::time::sleep_until(deadline).await;
            let now_last = Duration::from_millis(activity.load(Ordering::Relaxed));
            if now_last == last {
                return;
            }
        }
    };
    let end = tokio::select! {
        _ = both => TunnelEnd::Closed,
        () = watchdog => TunnelEnd::Idle,
        () = stop => TunnelEnd::Stopped,
    };
    TunnelStats {
        to_upstream: up_count.load(Ordering::Relaxed),
        to_client: down_count.load(Ordering::Relaxed),
        end,
    }
}

/// Copy one direction; on EOF shut down the write side (half-close).
async fn pump(
    from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    activity: &AtomicU64,
    count: &AtomicU64,
    start: Instant,
) {
    let mut buf = BytesMut::new();
    loop {
        if from.readable().await.is_err() {
            break;
        }
        if buf.capacity() == 0 {
            buf.reserve(BUF_SIZE);
        }
        // `try_read_buf` fills spare capacity without zeroing it first.
        match from.try_read_buf(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf).await.is_err() {
                    return;
                }
                buf.clear();
                count.fetch_add(n as u64, Ordering::Relaxed);
                activity.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Nothing to read now: give the buffer back while waiting.
                buf = BytesMut::new();
            }
            Err(_) => break,
        }
    }
    let _ = to.shutdown().await;
}
