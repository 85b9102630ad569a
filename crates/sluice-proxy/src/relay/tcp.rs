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

use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use nix::sys::socket::{shutdown, Shutdown};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Buffer size of the copy fallback, and the pipe size assumed when the
/// kernel does not report one.
const CHUNK: usize = 64 * 1024;
const PIPE_DEFAULT: usize = CHUNK;
/// Pipe size once a direction has filled its pipe (the unprivileged
/// maximum, `/proc/sys/fs/pipe-max-size`, by default).
const PIPE_BULK: usize = 1024 * 1024;

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

/// A pipe between two sockets, and how many bytes sit in it.
struct SplicePipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Capacity in bytes (the kernel's default until a bulk flow grows it).
    capacity: usize,
    /// Bytes spliced in and not yet spliced out.
    held: usize,
}

impl SplicePipe {
    fn new() -> nix::Result<Self> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let capacity = fcntl(read.as_raw_fd(), FcntlArg::F_GETPIPE_SZ)
            .map_or(PIPE_DEFAULT, |c| usize::try_from(c).unwrap_or(PIPE_DEFAULT));
        Ok(Self {
            read,
            write,
            capacity,
            held: 0,
        })
    }

    /// A splice filled the pipe: this is a bulk flow, so give it
    /// [`PIPE_BULK`] (fewer wake-ups and syscalls per byte). Best effort:
    /// a refused resize (the `pipe-user-pages-soft` limit) keeps the old size.
    fn grow(&mut self) {
        if self.capacity >= PIPE_BULK {
            return;
        }
        if let Ok(c) = fcntl(
            self.read.as_raw_fd(),
            FcntlArg::F_SETPIPE_SZ(PIPE_BULK as i32),
        ) {
            self.capacity = usize::try_from(c).unwrap_or(self.capacity);
        }
    }
}

/// Move bytes with splice(2); falls back to [`copy_pump`] when no pipe can be made.
///
/// Filling (socket → pipe) and draining (pipe → socket) interleave: while
/// the destination is full the source keeps filling the pipe, and the
/// other way round, so neither socket waits on the other's syscall.
async fn splice_pump(from: &TcpStream, to: &TcpStream, meter: &Meter<'_>) -> io::Result<()> {
    let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
    // The pipe is made on the first readable event: an idle tunnel holds none.
    from.readable().await?;
    let Ok(mut pipe) = SplicePipe::new() else {
        return copy_pump(from, to, meter).await;
    };
    let mut eof = false;
    // A splice into a non-empty pipe that would block says nothing about the
    // socket: the pipe may be out of slots (a slot per socket buffer, however
    // small) before it is out of bytes. Such a fill must not clear the
    // socket's readiness (it would never be signalled again for data already
    // queued); instead filling pauses until the next drain frees slots.
    let mut pipe_full = false;
    loop {
        let mut progressed = false;
        let room = pipe.capacity - pipe.held;
        if !eof && room > 0 && !pipe_full {
            let fill = || {
                splice(from.as_fd(), None, pipe.write.as_fd(), None, room, flags)
                    .map_err(io::Error::from)
            };
            let filled = if pipe.held == 0 {
                // Empty pipe: "would block" is the socket's, so let tokio
                // clear its readiness.
                from.try_io(Interest::READABLE, fill)
            } else {
                fill()
            };
            match filled {
                Ok(0) => eof = true,
                Ok(n) => {
                    pipe.held += n;
                    progressed = true;
                    if n == room {
                        pipe.grow();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => pipe_full = pipe.held > 0,
                Err(e) => return Err(e),
            }
        }
        if pipe.held > 0 {
            let held = pipe.held;
            let drained = to.try_io(Interest::WRITABLE, || {
                splice(pipe.read.as_fd(), None, to.as_fd(), None, held, flags)
                    .map_err(io::Error::from)
            });
            match drained {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    pipe.held -= n;
                    progressed = true;
                    pipe_full = false;
                    meter.moved(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        if eof && pipe.held == 0 {
            return Ok(());
        }
        if progressed {
            // Stay fair to the other tasks on this worker during a long burst.
            tokio::task::consume_budget().await;
            continue;
        }
        // Nothing moved: wait until a side that can make progress is ready.
        let can_fill = !eof && pipe.held < pipe.capacity && !pipe_full;
        let can_drain = pipe.held > 0;
        tokio::select! {
            r = from.readable(), if can_fill => r?,
            r = to.writable(), if can_drain => r?,
            // Unreachable (EOF with an empty pipe returned above); ends the
            // direction rather than panicking if that ever changes.
            else => return Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpSocket;

    /// A connected pair of real loopback sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        pair_with_rcvbuf(None).await
    }

    /// A connected pair whose accepted end has receive buffer `rcvbuf`.
    #[allow(clippy::disallowed_methods)] // test: dials its own local listener
    async fn pair_with_rcvbuf(rcvbuf: Option<u32>) -> (TcpStream, TcpStream) {
        let socket = TcpSocket::new_v4().expect("socket");
        if let Some(size) = rcvbuf {
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let l = socket.listen(16).expect("listen");
        let addr = l.local_addr().expect("addr");
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        (a.expect("connect"), b.expect("accept").0)
    }

    /// `client end <-> relay <-> upstream end`, the relay running in a task.
    async fn tunnel(
        idle: Duration,
        stop: tokio::sync::oneshot::Receiver<()>,
    ) -> (TcpStream, TcpStream, tokio::task::JoinHandle<TunnelStats>) {
        tunnel_with_upstream_rcvbuf(idle, stop, None).await
    }

    async fn tunnel_with_upstream_rcvbuf(
        idle: Duration,
        stop: tokio::sync::oneshot::Receiver<()>,
        rcvbuf: Option<u32>,
    ) -> (TcpStream, TcpStream, tokio::task::JoinHandle<TunnelStats>) {
        let (client, relay_client) = pair().await;
        let (relay_up, upstream) = pair_with_rcvbuf(rcvbuf).await;
        let task = tokio::spawn(async move {
            relay(relay_client, relay_up, b"early", idle, async {
                let _ = stop.await;
            })
            .await
        });
        (client, upstream, task)
    }

    fn pattern(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u64).wrapping_mul(31).wrapping_add(u64::from(seed)) as u8 % 251)
            .collect()
    }

    #[tokio::test]
    async fn bulk_both_ways_is_byte_exact_and_counted() {
        const LEN: usize = 8 * 1024 * 1024 + 4321;
        let (_tx, rx) = tokio::sync::oneshot::channel();
        let (client, upstream, task) = tunnel(Duration::from_secs(30), rx).await;
        let (mut cr, mut cw) = client.into_split();
        let (mut ur, mut uw) = upstream.into_split();
        let up_data = pattern(1, LEN);
        let down_data = pattern(2, LEN);
        let (sent_up, sent_down) = (up_data.clone(), down_data.clone());
        // Writers in 7,777-byte pieces so splices see uneven fills.
        let w1 = tokio::spawn(async move {
            for c in sent_up.chunks(7777) {
                cw.write_all(c).await.expect("client write");
            }
            cw.shutdown().await.expect("client shutdown");
        });
        let w2 = tokio::spawn(async move {
            for c in sent_down.chunks(7777) {
                uw.write_all(c).await.expect("upstream write");
            }
            uw.shutdown().await.expect("upstream shutdown");
        });
        let mut got_up = Vec::new();
        let mut got_down = Vec::new();
        let (a, b) = tokio::join!(ur.read_to_end(&mut got_up), cr.read_to_end(&mut got_down));
        a.expect("upstream read");
        b.expect("client read");
        w1.await.expect("w1");
        w2.await.expect("w2");
        assert_eq!(&got_up[..5], b"early");
        assert!(got_up[5..] == up_data[..], "upstream bytes differ");
        assert!(got_down == down_data, "client bytes differ");
        let stats = task.await.expect("relay");
        assert_eq!(stats.end, TunnelEnd::Closed);
        assert_eq!(stats.to_upstream, (LEN + 5) as u64);
        assert_eq!(stats.to_client, LEN as u64);
    }

    /// Many small segments while the upstream is not reading (a 4 KiB
    /// receive buffer): every byte must still arrive once the upstream reads,
    /// with the client neither sending more nor closing, so nothing but the
    /// relay's own bookkeeping can move the tail. (This is the shape that
    /// could exhaust a pipe's slots before its bytes; on loopback the kernel
    /// packs small segments into shared pages, so the test does not force
    /// slot exhaustion itself: it guards the pause-and-resume path around it.)
    #[tokio::test]
    async fn small_segments_behind_a_slow_upstream_all_arrive() {
        const SEGMENTS: usize = 3000;
        const SEGMENT: usize = 64;
        let (_tx, rx) = tokio::sync::oneshot::channel();
        let (mut client, mut upstream, _task) =
            tunnel_with_upstream_rcvbuf(Duration::from_secs(30), rx, Some(4096)).await;
        client.set_nodelay(true).expect("nodelay");
        let writer = tokio::spawn(async move {
            for i in 0..SEGMENTS {
                client
                    .write_all(&[(i % 251) as u8; SEGMENT])
                    .await
                    .expect("write");
                if i % 100 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            client // kept open: no EOF to wake the relay
        });
        // Let the segments pile up in the relay while nothing is read.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let want = b"early".len() + SEGMENTS * SEGMENT;
        let mut got = Vec::with_capacity(want);
        let mut buf = [0u8; 16 * 1024];
        let read_all = async {
            while got.len() < want {
                let n = upstream.read(&mut buf).await.expect("read");
                assert_ne!(n, 0, "upstream saw EOF");
                got.extend_from_slice(&buf[..n]);
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read_all)
            .await
            .unwrap_or_else(|_| panic!("relay stalled: {} of {want} bytes arrived", got.len()));
        let _client = writer.await.expect("writer");
        for (i, chunk) in got[5..].chunks(SEGMENT).enumerate() {
            assert!(
                chunk.iter().all(|&b| b == (i % 251) as u8),
                "segment {i} corrupted"
            );
        }
    }

    #[tokio::test]
    async fn half_close_reaches_the_other_side_and_the_reply_still_flows() {
        let (_tx, rx) = tokio::sync::oneshot::channel();
        let (mut client, mut upstream, task) = tunnel(Duration::from_secs(30), rx).await;
        client.write_all(b"question").await.expect("write");
        client.shutdown().await.expect("half-close");
        let mut asked = Vec::new();
        upstream.read_to_end(&mut asked).await.expect("read to EOF");
        assert_eq!(asked, b"earlyquestion");
        upstream.write_all(b"answer").await.expect("reply");
        upstream.shutdown().await.expect("close");
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.expect("read reply");
        assert_eq!(answer, b"answer");
        assert_eq!(task.await.expect("relay").end, TunnelEnd::Closed);
    }

    #[tokio::test]
    async fn idle_tunnel_ends_and_stop_ends_a_busy_one() {
        let (_tx, rx) = tokio::sync::oneshot::channel();
        let (_c, _u, task) = tunnel(Duration::from_millis(200), rx).await;
        assert_eq!(task.await.expect("relay").end, TunnelEnd::Idle);

        let (tx, rx) = tokio::sync::oneshot::channel();
        let (mut client, mut upstream, task) = tunnel(Duration::from_secs(30), rx).await;
        client.write_all(b"x").await.expect("write");
        let mut buf = [0u8; 6];
        upstream.read_exact(&mut buf).await.expect("read");
        tx.send(()).expect("stop");
        assert_eq!(task.await.expect("relay").end, TunnelEnd::Stopped);
        // The relay dropped both sockets: each end sees EOF.
        assert_eq!(client.read(&mut buf).await.expect("eof"), 0);
        assert_eq!(upstream.read(&mut buf).await.expect("eof"), 0);
    }
}
