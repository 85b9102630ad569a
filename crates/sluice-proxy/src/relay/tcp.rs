//! Raw bidirectional relay for tunnels: half-close aware, idle-bounded,
//! and stoppable (a policy reload that no longer allows the tunnel ends it).
//!
//! Bytes move with `splice(2)` through a pipe per direction, so they never
//! enter user space; if a pipe cannot be created (descriptor exhaustion) the
//! direction falls back to a buffered copy. Pipes and buffers exist only
//! once bytes flow: an idle tunnel holds neither.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::fcntl::{splice, OFlag, SpliceFFlags};
use nix::sys::socket::{shutdown, Shutdown};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Bytes moved per splice call (the default pipe capacity).
const CHUNK: usize = 64 * 1024;

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

/// Progress shared by both directions (for the idle watchdog and stats).
struct Meter<'a> {
    activity: &'a AtomicU64,
    count: &'a AtomicU64,
    start: Instant,
}

impl Meter<'_> {
    fn moved(&self, n: usize) {
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        self.activity
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
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
    if write_all(&upstream, initial).await.is_err() {
        return TunnelStats {
            to_upstream: 0,
            to_client: 0,
            end: TunnelEnd::Closed,
        };
    }
    up_count.fetch_add(initial.len() as u64, Ordering::Relaxed);
    let up = Meter {
        activity: &activity,
        count: &up_count,
        start,
    };
    let down = Meter {
        activity: &activity,
        count: &down_count,
        start,
    };
    let both = async {
        tokio::join!(
            pump(&client, &upstream, &up),
            pump(&upstream, &client, &down)
        )
    };
    let watchdog = async {
        loop {
            let last = Duration::from_millis(activity.load(Ordering::Relaxed));
            tokio::time::sleep_until(start + last + idle).await;
            if Duration::from_millis(activity.load(Ordering::Relaxed)) == last {
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

/// One direction until EOF or error, then half-close the other side.
async fn pump(from: &TcpStream, to: &TcpStream, meter: &Meter<'_>) {
    let _ = splice_pump(from, to, meter).await;
    // Half-close: the peer sees EOF in this direction only.
    let _ = shutdown(to.as_raw_fd(), Shutdown::Write);
}

/// Move bytes with splice(2); falls back to [`copy_pump`] when no pipe can be made.
async fn splice_pump(from: &TcpStream, to: &TcpStream, meter: &Meter<'_>) -> io::Result<()> {
    let mut pipe: Option<(OwnedFd, OwnedFd)> = None;
    let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
    loop {
        from.readable().await?;
        if pipe.is_none() {
            match nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC) {
                Ok(p) => pipe = Some(p),
                Err(_) => return copy_pump(from, to, meter).await,
            }
        }
        let Some((pipe_r, pipe_w)) = pipe.as_ref() else {
            return Ok(());
        };
        let filled = from.try_io(Interest::READABLE, || {
            splice(from.as_fd(), None, pipe_w.as_fd(), None, CHUNK, flags).map_err(io::Error::from)
        });
        let mut left = match filled {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        while left > 0 {
            to.writable().await?;
            let drained = to.try_io(Interest::WRITABLE, || {
                splice(pipe_r.as_fd(), None, to.as_fd(), None, left, flags).map_err(io::Error::from)
            });
            match drained {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    left -= n;
                    meter.moved(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Buffered copy for one direction (no pipe available).
async fn copy_pump(from: &TcpStream, to: &TcpStream, meter: &Meter<'_>) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        from.readable().await?;
        let n = match from.try_read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        write_all(to, &buf[..n]).await?;
        meter.moved(n);
    }
}

/// Write all of `data` to a shared stream.
async fn write_all(to: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        to.writable().await?;
        match to.try_write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
