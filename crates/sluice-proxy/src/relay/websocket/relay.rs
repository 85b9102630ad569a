//! The relay loop: two directions polled in one task, each writer behind a
//! lock so that frames (and the relay's own close frames) never interleave.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::BytesMut;
use rustls::crypto::SecureRandom;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::relay::idle::Activity;
use tokio::time::timeout;

use super::client::client_to_upstream;
use super::deflate::Deflate;
use super::frame::{self, close_payload, Masking, Opcode, Parse, Rules};
use super::{TextPolicy, WsEnd, WsLimits};

/// Wait for the peer's close reply, or for our own close frame to be written.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Total time one fragmented message may take to arrive.
pub(super) const ASSEMBLY_MAX: Duration = Duration::from_secs(120);
/// Read granularity (buffers grow to one frame at most).
const READ_CHUNK: usize = 16 * 1024;

/// One write direction. After a close frame went out, nothing more does.
pub(super) struct Sink<W> {
    w: W,
    close_sent: bool,
}

impl<W: AsyncWrite + Unpin> Sink<W> {
    pub(super) async fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        if self.close_sent {
            return Ok(());
        }
        self.w.write_all(frame).await?;
        self.w.flush().await
    }

    pub(super) async fn send_close(&mut self, frame: &[u8]) -> io::Result<()> {
        if self.close_sent {
            return Ok(());
        }
        self.close_sent = true;
        self.w.write_all(frame).await?;
        self.w.flush().await
    }
}

pub(super) struct Ends<WC, WU> {
    pub(super) client: Mutex<Sink<WC>>,
    pub(super) upstream: Mutex<Sink<WU>>,
}

impl<WC: AsyncWrite + Unpin, WU: AsyncWrite + Unpin> Ends<WC, WU> {
    pub(super) async fn to_upstream(&self, frame: &[u8]) -> io::Result<()> {
        self.upstream.lock().await.send(frame).await
    }

    pub(super) async fn to_client(&self, frame: &[u8]) -> io::Result<()> {
        self.client.lock().await.send(frame).await
    }

    /// The relay's own close: `code` and `reason` to the client, `code` to
    /// the upstream (reasons may carry policy detail the upstream should
    /// not see). Best effort, time-bounded.
    pub(super) async fn close_both(&self, code: u16, reason: &str) {
        let mut to_client = BytesMut::new();
        frame::encode(
            &mut to_client,
            true,
            false,
            Opcode::Close,
            None,
            &close_payload(code, reason),
        );
        let mut to_upstream = BytesMut::new();
        let payload = close_payload(code, "");
        frame::encode(
            &mut to_upstream,
            true,
            false,
            Opcode::Close,
            Some(mask_key()),
            &payload,
        );
        let client = async { self.client.lock().await.send_close(&to_client).await };
        let upstream = async { self.upstream.lock().await.send_close(&to_upstream).await };
        let _ = timeout(CLOSE_TIMEOUT, async { tokio::join!(client, upstream) }).await;
    }
}

/// How one direction stopped.
pub(super) enum DirEnd {
    /// The peer's close frame was forwarded to the other side.
    CloseForwarded,
    /// EOF or an I/O error, without a close frame.
    Eof,
    /// The relay closed the session (close frames already sent).
    Failed(WsEnd),
}

/// Relay frames between an upgraded client and upstream until close; see
/// the module docs. `client_buf`/`upstream_buf` hold bytes already read past
/// the HTTP heads. `deflate` is what the 101 response negotiated.
pub async fn relay<C, U, P>(
    client: C,
    client_buf: BytesMut,
    upstream: U,
    upstream_buf: BytesMut,
    deflate: Option<Deflate>,
    limits: WsLimits,
    policy: &mut P,
) -> WsEnd
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    U: AsyncRead + AsyncWrite + Unpin + Send,
    P: TextPolicy + ?Sized,
{
    let never = std::future::pending::<()>();
    relay_with_stop(
        client,
        client_buf,
        upstream,
        upstream_buf,
        deflate,
        limits,
        policy,
        never,
    )
    .await
}

/// [`relay`], also ended by `stop` (e.g. a policy reload that no longer
/// admits the session): both peers then get close 1012 and the result is
/// `WsEnd::Protocol(1012)`. A session quiet for `limits.session_idle` ends the
/// same way with 1001.
#[allow(clippy::too_many_arguments)]
pub async fn relay_with_stop<C, U, P, S>(
    client: C,
    client_buf: BytesMut,
    upstream: U,
    upstream_buf: BytesMut,
    deflate: Option<Deflate>,
    limits: WsLimits,
    policy: &mut P,
    stop: S,
) -> WsEnd
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    U: AsyncRead + AsyncWrite + Unpin + Send,
    P: TextPolicy + ?Sized,
    S: Future<Output = ()>,
{
    let activity = Activity::new();
    let (client_rd, client_wr) = tokio::io::split(activity.meter(client));
    let (upstream_rd, upstream_wr) = tokio::io::split(activity.meter(upstream));
    let idle = async {
        match limits.session_idle {
            Some(d) => activity.idle_for(d).await,
            None => std::future::pending().await,
        }
    };
    let halt = async {
        tokio::pin!(stop, idle);
        tokio::select! {
            () = &mut stop => (1012, "policy reloaded"),
            () = &mut idle => (1001, "idle timeout"),
        }
    };
    let ends = Ends {
        client: Mutex::new(Sink {
            w: client_wr,
            close_sent: false,
        }),
        upstream: Mutex::new(Sink {
            w: upstream_wr,
            close_sent: false,
        }),
    };
    let end = {
        let c2s = client_to_upstream(client_rd, client_buf, &ends, deflate, &limits, policy);
        let s2c = upstream_to_client(upstream_rd, upstream_buf, &ends, deflate.is_some(), &limits);
        tokio::pin!(c2s, s2c, halt);
        tokio::select! {
            e = &mut c2s => match e {
                // The client closed: wait for the upstream's reply to pass.
                DirEnd::CloseForwarded => match timeout(CLOSE_TIMEOUT, &mut s2c).await {
                    Ok(DirEnd::Failed(e)) => e,
                    _ => WsEnd::Closed,
                },
                DirEnd::Eof => WsEnd::Io,
                DirEnd::Failed(e) => e,
            },
            e = &mut s2c => match e {
                // The upstream closed: the client's reply (and any data it
                // sends first, still under policy) passes.
                DirEnd::CloseForwarded => match timeout(CLOSE_TIMEOUT, &mut c2s).await {
                    Ok(DirEnd::Failed(e)) => e,
                    _ => WsEnd::Closed,
                },
                DirEnd::Eof => WsEnd::Io,
                DirEnd::Failed(e) => e,
            },
            (code, why) = &mut halt => {
                // Keep both directions moving so a frame being written
                // finishes before the close frames take the locks.
                let closing = ends.close_both(code, why);
                tokio::pin!(closing);
                let (mut c_done, mut s_done) = (false, false);
                loop {
                    tokio::select! {
                        () = &mut closing => break,
                        _ = &mut c2s, if !c_done => c_done = true,
                        _ = &mut s2c, if !s_done => s_done = true,
                    }
                }
                WsEnd::Protocol(code)
            }
        }
    };
    let Ends { client, upstream } = ends;
    let mut client = client.into_inner();
    let mut upstream = upstream.into_inner();
    let _ = timeout(CLOSE_TIMEOUT, async {
        tokio::join!(client.w.shutdown(), upstream.w.shutdown())
    })
    .await;
    end
}

/// Read more bytes into `buf`; `false` on EOF or error.
pub(super) async fn fill<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut BytesMut) -> bool {
    buf.reserve(READ_CHUNK);
    matches!(rd.read_buf(buf).await, Ok(n) if n > 0)
}

async fn upstream_to_client<R, WC, WU>(
    mut rd: R,
    mut buf: BytesMut,
    ends: &Ends<WC, WU>,
    deflate: bool,
    limits: &WsLimits,
) -> DirEnd
where
    R: AsyncRead + Unpin,
    WC: AsyncWrite + Unpin,
    WU: AsyncWrite + Unpin,
{
    let rules = Rules {
        masking: Masking::Forbidden,
        rsv1_allowed: deflate,
        max_payload: limits.max_frame,
    };
    loop {
        match frame::parse(&buf, &rules) {
            Parse::Frame(h) => {
                let raw = buf.split_to(h.frame_len());
                if h.opcode == Opcode::Close {
                    let _ = ends.client.lock().await.send_close(&raw).await;
                    return DirEnd::CloseForwarded;
                }
                if ends.to_client(&raw).await.is_err() {
                    return DirEnd::Eof;
                }
            }
            Parse::NeedMore => {
                if !fill(&mut rd, &mut buf).await {
                    return DirEnd::Eof;
                }
            }
            Parse::Error(e) => {
                tracing::debug!(error = %e, "websocket upstream protocol error");
                ends.close_both(1002, "upstream protocol error").await;
                return DirEnd::Failed(WsEnd::Protocol(1002));
            }
        }
    }
}

/// A fresh masking key (RFC 6455 §5.3: unpredictable).
pub(super) fn mask_key() -> [u8; 4] {
    static RNG: OnceLock<&'static dyn SecureRandom> = OnceLock::new();
    let rng = RNG.get_or_init(|| rustls::crypto::ring::default_provider().secure_random);
    let mut key = [0u8; 4];
    if rng.fill(&mut key).is_err() {
        // Keyed SipHash of a counter: unpredictable without the random keys.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        key.copy_from_slice(&h.finish().to_le_bytes()[..4]);
    }
    key
}

#[cfg(test)]
#[path = "relay_tests.rs"]
pub(super) mod tests;
