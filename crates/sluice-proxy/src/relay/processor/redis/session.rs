//! The session loop: two directions polled in one task.
//!
//! Client → upstream: parse each command ([`CommandParser`]), decide it
//! ([`Gate`]), and either forward it (dialling the upstream on the first
//! command that needs it) or queue a local reply. Every command leaves one
//! entry in the reply order, sent to the other direction over a bounded
//! channel before its bytes are written upstream.
//!
//! Upstream → client: frame each upstream message ([`Framer`]), settle it
//! against the reply order ([`Flow`]), and write replies and local answers
//! to the client in command order. The client's writer lives only here, so
//! nothing else can interleave bytes with a reply.
//!
//! The session ends when the client leaves (after its last replies), on
//! `QUIT`, on a protocol error from either side, when the upstream closes,
//! after `limits.idle` without a byte either way, or when `stop` completes
//! (a reload that no longer allows the connection).

use std::future::{pending, Future};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use sluice_policy::request::ProtocolVerdict;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

use super::flow::{Expect, Flow, Pending};
use super::gate::{Action, Gate, DISCARD};
use super::reply::Framer;
use super::resp::{error_line, CommandParser, Limits, Parse, MAX_ARGS};
use super::End;
use crate::relay::idle::{Activity, Metered};
use crate::relay::processor::ProcessorLimits;

/// Read size on both sides.
const READ_CHUNK: usize = 64 * 1024;
/// Batches of reply-order entries in flight between the two directions.
const SLOTS: usize = 64;
/// Most entries in one batch (a batch is also cut at `READ_CHUNK` bytes).
const MAX_BATCH: usize = 1024;
/// Reply-order entries the upstream side holds before it stops taking more
/// (the client side then waits: backpressure on a client that pipelines
/// without reading).
const MAX_PENDING: usize = 8192;
/// Bound on the final flush to the client.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the client side sends the upstream side.
enum Slot<R> {
    /// The upstream was dialled: its read half.
    Upstream(R),
    /// Entries of the reply order, oldest first: one per command of a read
    /// batch, sent before the batch's bytes are written upstream.
    Pending(Vec<Pending>),
}

/// Byte counts and the reason the session ended.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stats {
    pub(crate) to_upstream: u64,
    pub(crate) to_client: u64,
    pub(crate) end: End,
}

/// Runs one session (see the module docs). `dial` opens the upstream (it
/// reports its own failure); `events` gets each verdict to log with its
/// `audit_only` flag.
pub(crate) async fn run<C, U, D, F, E, S>(
    client: C,
    dial: D,
    mut gate: Gate<'_>,
    events: E,
    stop: S,
    limits: ProcessorLimits,
) -> Stats
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    U: AsyncRead + AsyncWrite + Unpin + Send,
    D: FnMut() -> F + Send,
    F: Future<Output = io::Result<U>> + Send,
    E: Fn(&ProtocolVerdict, bool) + Sync,
    S: Future<Output = ()> + Send,
{
    let activity = Activity::new();
    let to_upstream = AtomicU64::new(0);
    let to_client = AtomicU64::new(0);
    let (client_r, mut client_w) = tokio::io::split(activity.meter(client));
    let (tx, mut rx) = mpsc::channel(SLOTS);
    let end = {
        let c2u = async {
            let up = ToUpstream {
                dial,
                activity: &activity,
                w: None,
                buf: Vec::new(),
                batch: Vec::new(),
                tx,
                sent: &to_upstream,
            };
            client_side(client_r, up, &mut gate, &events, &limits).await;
            // The upstream side finishes the session.
            pending::<End>().await
        };
        let u2c = upstream_side(&mut client_w, &mut rx, &limits, &to_client);
        let halt = async {
            tokio::select! {
                () = stop => End::Revoked,
                () = activity.idle_for(limits.idle) => End::Idle,
            }
        };
        tokio::select! {
            e = u2c => e,
            e = c2u => e,
            e = halt => e,
        }
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, client_w.shutdown()).await;
    Stats {
        to_upstream: to_upstream.load(Ordering::Relaxed),
        to_client: to_client.load(Ordering::Relaxed),
        end,
    }
}

type UpRead<'a, U> = ReadHalf<Metered<'a, U>>;

/// The client side's handle on the upstream: the dialer, the write half
/// once dialled, bytes not yet written, the reply-order entries of the
/// commands in them, and the channel to the other side.
struct ToUpstream<'a, U, D> {
    dial: D,
    activity: &'a Activity,
    w: Option<WriteHalf<Metered<'a, U>>>,
    buf: Vec<u8>,
    batch: Vec<Pending>,
    tx: mpsc::Sender<Slot<UpRead<'a, U>>>,
    sent: &'a AtomicU64,
}

/// The session is over for the client side (the other side went away or
/// the upstream cannot be written).
struct Gone;

impl<'a, U, D, F> ToUpstream<'a, U, D>
where
    U: AsyncRead + AsyncWrite + Unpin + Send,
    D: FnMut() -> F + Send,
    F: Future<Output = io::Result<U>> + Send,
{
    /// Hands the batch's reply-order entries to the other side, then writes
    /// the batch's bytes upstream: every reply finds its entry there.
    async fn flush(&mut self) -> Result<(), Gone> {
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            self.tx.send(Slot::Pending(batch)).await.map_err(|_| Gone)?;
        }
        if let Some(w) = self.w.as_mut() {
            if !self.buf.is_empty() {
                w.write_all(&self.buf).await.map_err(|_| Gone)?;
                self.sent
                    .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
                self.buf.clear();
            }
        }
        Ok(())
    }

    /// Queues an entry of the reply order (it leaves with the batch).
    fn enqueue(&mut self, p: Pending) {
        self.batch.push(p);
    }

    /// Dials the upstream unless it is open. `Ok(false)`: it cannot be
    /// reached (the dialer reported why).
    async fn connect(&mut self) -> Result<bool, Gone> {
        if self.w.is_some() {
            return Ok(true);
        }
        let Ok(stream) = (self.dial)().await else {
            return Ok(false);
        };
        let (r, w) = tokio::io::split(self.activity.meter(stream));
        self.tx.send(Slot::Upstream(r)).await.map_err(|_| Gone)?;
        self.w = Some(w);
        Ok(true)
    }

    async fn close(&mut self, reply: Option<Vec<u8>>, end: End) {
        if let Some(reply) = reply {
            self.enqueue(Pending::Local(reply));
        }
        self.enqueue(Pending::Close(end));
        let _ = self.flush().await;
    }
}

/// Client → upstream until the client leaves, quits or breaks the protocol.
async fn client_side<'a, R, U, D, F, E>(
    mut rd: R,
    mut up: ToUpstream<'a, U, D>,
    gate: &mut Gate<'_>,
    events: &E,
    limits: &ProcessorLimits,
) where
    R: AsyncRead + Unpin,
    U: AsyncRead + AsyncWrite + Unpin + Send,
    D: FnMut() -> F + Send,
    F: Future<Output = io::Result<U>> + Send,
    E: Fn(&ProtocolVerdict, bool),
{
    let parse_limits = Limits {
        max_message: limits.max_message,
        max_args: MAX_ARGS,
    };
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut parser = CommandParser::default();
    loop {
        loop {
            let cmd = match parser.parse(&buf, &parse_limits) {
                Parse::Command(cmd) => cmd,
                Parse::Ignored(n) => {
                    buf.advance(n);
                    continue;
                }
                Parse::NeedMore => break,
                Parse::Error(e) => {
                    let why = format!("Protocol error: {e}");
                    events(
                        &ProtocolVerdict::hard_deny(why.clone(), "protocol error".into()),
                        false,
                    );
                    up.close(Some(error_line(&format!("ERR {why}"))), End::ClientProtocol)
                        .await;
                    return;
                }
            };
            let last = {
                let args = cmd.args(&buf);
                let decision = gate.decide(&args, cmd.raw(&buf));
                if let Some((verdict, audit_only)) = &decision.event {
                    events(verdict, *audit_only);
                }
                match decision.action {
                    Action::Forward { bytes, expect } => match up.connect().await {
                        Ok(true) => {
                            up.enqueue(Pending::Reply(expect));
                            up.buf.extend_from_slice(&bytes);
                            None
                        }
                        Ok(false) => Some((
                            error_line("ERR sluice: upstream unreachable"),
                            End::Unreachable,
                        )),
                        Err(Gone) => return,
                    },
                    Action::Local(reply) => {
                        up.enqueue(Pending::Local(reply));
                        None
                    }
                    Action::Abort(reply) => {
                        if up.w.is_some() {
                            up.buf.extend_from_slice(DISCARD);
                            up.enqueue(Pending::Reply(Expect::Swallow));
                        }
                        up.enqueue(Pending::Local(reply));
                        None
                    }
                    Action::Quit => Some((b"+OK\r\n".to_vec(), End::Closed)),
                }
            };
            buf.advance(cmd.len);
            if let Some((reply, end)) = last {
                return up.close(Some(reply), end).await;
            }
            if (up.buf.len() >= READ_CHUNK || up.batch.len() >= MAX_BATCH)
                && up.flush().await.is_err()
            {
                return;
            }
        }
        if up.flush().await.is_err() {
            return;
        }
        buf.reserve(READ_CHUNK);
        match rd.read_buf(&mut buf).await {
            Ok(n) if n > 0 => {}
            _ => return up.close(None, End::Closed).await,
        }
    }
}

/// Takes entries of the reply order that are already queued until the head
/// waits for an upstream reply (writing local replies that come first to
/// `out`); `Some` when the head is a close.
fn take_queued<R>(
    flow: &mut Flow,
    rx: &mut mpsc::Receiver<Slot<R>>,
    rx_open: &mut bool,
    out: &mut Vec<u8>,
) -> Option<End> {
    loop {
        if let Some(end) = flow.drain_ready(out) {
            return Some(end);
        }
        if flow.awaiting_reply() || !*rx_open {
            return None;
        }
        match rx.try_recv() {
            Ok(Slot::Pending(batch)) => flow.extend(batch),
            // The upstream is being read, so it was already handed over.
            Ok(Slot::Upstream(_)) => {}
            Err(mpsc::error::TryRecvError::Empty) => return None,
            Err(mpsc::error::TryRecvError::Disconnected) => {
                *rx_open = false;
                flow.push(Pending::Close(End::Closed));
            }
        }
    }
}

/// Writes what is left for the client and ends with `end`.
async fn finish<W: AsyncWrite + Unpin>(
    client: &mut W,
    out: &[u8],
    to_client: &AtomicU64,
    end: End,
) -> End {
    if !out.is_empty() && client.write_all(out).await.is_ok() {
        to_client.fetch_add(out.len() as u64, Ordering::Relaxed);
    }
    end
}

async fn read_some<R: AsyncRead + Unpin>(r: &mut Option<R>, buf: &mut [u8]) -> io::Result<usize> {
    match r {
        Some(r) => r.read(buf).await,
        None => pending().await,
    }
}

/// Upstream → client: every reply and local answer, in command order.
async fn upstream_side<W, R>(
    client: &mut W,
    rx: &mut mpsc::Receiver<Slot<R>>,
    limits: &ProcessorLimits,
    to_client: &AtomicU64,
) -> End
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let mut flow = Flow::new();
    let mut framer = Framer::new();
    let mut up: Option<R> = None;
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut out = Vec::with_capacity(READ_CHUNK);
    // A message held back until it is known whether it is swallowed.
    let mut hold = Vec::new();
    let mut holding = false;
    let mut rx_open = true;
    loop {
        let close = flow.drain_ready(&mut out);
        if !out.is_empty() {
            if client.write_all(&out).await.is_err() {
                return End::Closed;
            }
            to_client.fetch_add(out.len() as u64, Ordering::Relaxed);
            out.clear();
        }
        if let Some(end) = close {
            return end;
        }
        tokio::select! {
            slot = rx.recv(), if rx_open && flow.len() < MAX_PENDING => match slot {
                Some(Slot::Upstream(r)) => up = Some(r),
                Some(Slot::Pending(batch)) => flow.extend(batch),
                None => {
                    rx_open = false;
                    flow.push(Pending::Close(End::Closed));
                }
            },
            read = read_some(&mut up, &mut chunk) => {
                let n = match read {
                    Ok(n) if n > 0 => n,
                    _ => return End::Closed,
                };
                let mut data = &chunk[..n];
                while !data.is_empty() {
                    if framer.at_boundary() {
                        // The entry this message settles was queued before
                        // its command went upstream: take it in first.
                        if let Some(end) = take_queued(&mut flow, rx, &mut rx_open, &mut out) {
                            return finish(client, &out, to_client, end).await;
                        }
                        holding = flow.holding();
                    }
                    let (used, done) = match framer.feed(data) {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::debug!(error = %e, "redis upstream protocol error");
                            return End::UpstreamProtocol;
                        }
                    };
                    if holding {
                        hold.extend_from_slice(&data[..used]);
                        if hold.len() > limits.max_message {
                            return End::UpstreamProtocol;
                        }
                    } else {
                        out.extend_from_slice(&data[..used]);
                    }
                    data = &data[used..];
                    if let Some(m) = done {
                        let forward = flow.on_message(&m);
                        if holding {
                            if forward {
                                out.extend_from_slice(&hold);
                            }
                            hold.clear();
                            holding = false;
                        }
                        if flow.drain_ready(&mut out).is_some() {
                            break;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
