//! Relay harness (client and upstream peers over duplex pipes) and the
//! tests of the relay loop itself.

use std::sync::{Arc, Mutex as StdMutex};

use tokio::io::{duplex, DuplexStream};
use tokio::task::JoinHandle;

use super::super::frame::Header;
use super::super::MessageVerdict;
use super::*;
use std::time::Duration;

pub(crate) const KEY: [u8; 4] = [9, 8, 7, 6];
pub(crate) const WAIT: Duration = Duration::from_secs(5);

#[derive(Default, Clone)]
pub(crate) struct Log {
    pub(crate) seen: Arc<StdMutex<Vec<String>>>,
    pub(crate) denied: Arc<StdMutex<Vec<String>>>,
}

impl Log {
    pub(crate) fn seen(&self) -> Vec<String> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }
    pub(crate) fn denied(&self) -> Vec<String> {
        self.denied.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Denies texts containing "forbidden", rewrites PLACEHOLDER to secret,
/// refuses binary when built with `binary: false`.
pub(crate) struct TestPolicy {
    pub(crate) log: Log,
    binary: bool,
}

impl TextPolicy for TestPolicy {
    fn on_text(&mut self, text: &str) -> MessageVerdict {
        if let Ok(mut v) = self.log.seen.lock() {
            v.push(text.to_owned());
        }
        if text.contains("forbidden") {
            MessageVerdict::Deny {
                reason: "blocked by test policy".to_owned(),
            }
        } else {
            MessageVerdict::Forward(text.replace("PLACEHOLDER", "secret"))
        }
    }
    fn on_denied(&mut self, reason: &str) {
        if let Ok(mut v) = self.log.denied.lock() {
            v.push(reason.to_owned());
        }
    }
    fn allow_binary(&mut self) -> Result<(), String> {
        if self.binary {
            Ok(())
        } else {
            Err("binary refused".to_owned())
        }
    }
}

pub(crate) struct Peer {
    pub(crate) io: DuplexStream,
    pub(crate) buf: BytesMut,
    pub(crate) rules: Rules,
}

impl Peer {
    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("peer write");
    }

    /// Next frame: header, unmasked payload, raw bytes. `None` on EOF.
    pub(crate) async fn frame(&mut self) -> Option<(Header, Vec<u8>, Vec<u8>)> {
        loop {
            match frame::parse(&self.buf, &self.rules) {
                Parse::Frame(h) => {
                    let raw = self.buf.split_to(h.frame_len()).to_vec();
                    let mut payload = raw[h.header_len..].to_vec();
                    if let Some(k) = h.mask {
                        frame::apply_mask(&mut payload, k, 0);
                    }
                    return Some((h, payload, raw));
                }
                Parse::NeedMore => {
                    let n = timeout(WAIT, self.io.read_buf(&mut self.buf))
                        .await
                        .expect("peer read timed out");
                    if n.unwrap_or(0) == 0 {
                        return None;
                    }
                }
                Parse::Error(e) => panic!("peer got a bad frame: {e}"),
            }
        }
    }

    pub(crate) async fn close_code(&mut self) -> u16 {
        let (h, p, _) = self.frame().await.expect("a close frame");
        assert_eq!(h.opcode, Opcode::Close, "payload {p:?}");
        u16::from_be_bytes([p[0], p[1]])
    }
}

pub(crate) struct Harness {
    pub(crate) client: Peer,
    pub(crate) upstream: Peer,
    pub(crate) task: JoinHandle<WsEnd>,
    pub(crate) log: Log,
}

impl Harness {
    pub(crate) async fn end(self) -> WsEnd {
        timeout(WAIT, self.task)
            .await
            .expect("relay ended")
            .expect("relay task")
    }
}

pub(crate) fn start_with(
    deflate: Option<Deflate>,
    limits: WsLimits,
    binary: bool,
    client_buf: &[u8],
) -> Harness {
    let (client, relay_client) = duplex(1 << 20);
    let (relay_upstream, upstream) = duplex(1 << 20);
    let log = Log::default();
    let mut policy = TestPolicy {
        log: log.clone(),
        binary,
    };
    let initial = BytesMut::from(client_buf);
    let task = tokio::spawn(async move {
        relay(
            relay_client,
            initial,
            relay_upstream,
            BytesMut::new(),
            deflate,
            limits,
            &mut policy,
        )
        .await
    });
    let peer = |io, masking| Peer {
        io,
        buf: BytesMut::new(),
        rules: Rules {
            masking,
            rsv1_allowed: true,
            max_payload: 64 << 20,
        },
    };
    Harness {
        client: peer(client, Masking::Forbidden),
        upstream: peer(upstream, Masking::Required),
        task,
        log,
    }
}

pub(crate) fn start() -> Harness {
    start_with(None, WsLimits::default(), true, &[])
}

pub(crate) fn frame(
    fin: bool,
    rsv1: bool,
    op: Opcode,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = BytesMut::new();
    frame::encode(&mut out, fin, rsv1, op, mask, payload);
    out.to_vec()
}

pub(crate) fn client_text(text: &str) -> Vec<u8> {
    frame(true, false, Opcode::Text, Some(KEY), text.as_bytes())
}

pub(crate) fn close(code: u16, mask: Option<[u8; 4]>) -> Vec<u8> {
    frame(
        true,
        false,
        Opcode::Close,
        mask,
        &close_payload(code, "bye"),
    )
}

/// Client and upstream exchange closes; the relay ends `Closed`.
pub(crate) async fn close_cleanly(mut h: Harness) {
    h.client.send(&close(1000, Some(KEY))).await;
    assert_eq!(h.upstream.close_code().await, 1000);
    h.upstream.send(&close(1000, None)).await;
    assert_eq!(h.client.close_code().await, 1000);
    assert_eq!(h.end().await, WsEnd::Closed);
}

#[tokio::test]
async fn binary_is_relayed_unchanged_both_ways() {
    let mut h = start();
    let mut wire = frame(false, false, Opcode::Binary, Some(KEY), &[0, 159, 146, 150]);
    wire.extend(frame(
        true,
        false,
        Opcode::Continuation,
        Some(KEY),
        &[0xFF; 200],
    ));
    h.client.send(&wire).await;
    let first = h.upstream.frame().await.expect("first").2;
    let second = h.upstream.frame().await.expect("second").2;
    assert_eq!([first, second].concat(), wire);
    let down = frame(true, false, Opcode::Binary, None, &[1, 2, 3]);
    h.upstream.send(&down).await;
    assert_eq!(h.client.frame().await.map(|f| f.2), Some(down));
    assert!(h.log.seen().is_empty());
    close_cleanly(h).await;
}

#[tokio::test]
async fn upstream_initiated_close_handshake() {
    let mut h = start();
    h.upstream.send(&close(1001, None)).await;
    assert_eq!(h.client.close_code().await, 1001);
    // The client may still send (policy applies) before replying.
    h.client.send(&client_text("last words")).await;
    assert_eq!(
        h.upstream.frame().await.map(|f| f.1),
        Some(b"last words".to_vec())
    );
    h.client.send(&close(1001, Some(KEY))).await;
    assert_eq!(h.upstream.close_code().await, 1001);
    assert_eq!(h.end().await, WsEnd::Closed);
}

#[tokio::test]
async fn masked_upstream_frame_is_a_protocol_error() {
    let mut h = start();
    h.upstream
        .send(&frame(true, false, Opcode::Text, Some(KEY), b"x"))
        .await;
    assert_eq!(h.client.close_code().await, 1002);
    assert_eq!(h.upstream.close_code().await, 1002);
    assert_eq!(h.end().await, WsEnd::Protocol(1002));
}

#[tokio::test]
async fn eof_without_close_is_io() {
    let h = start();
    drop(h.client);
    let mut upstream = h.upstream;
    assert!(upstream.frame().await.is_none());
    let end = timeout(WAIT, h.task).await.expect("ended").expect("task");
    assert_eq!(end, WsEnd::Io);
}

#[tokio::test]
async fn stop_sends_1012_both_ways() {
    let (client, relay_client) = duplex(1 << 16);
    let (relay_upstream, upstream) = duplex(1 << 16);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut policy = |t: &str| MessageVerdict::Forward(t.to_owned());
        let stop = async {
            let _ = rx.await;
        };
        let limits = WsLimits::default();
        let (cb, ub) = (BytesMut::new(), BytesMut::new());
        relay_with_stop(
            relay_client,
            cb,
            relay_upstream,
            ub,
            None,
            limits,
            &mut policy,
            stop,
        )
        .await
    });
    let peer = |io, masking| Peer {
        io,
        buf: BytesMut::new(),
        rules: Rules {
            masking,
            rsv1_allowed: false,
            max_payload: 1 << 20,
        },
    };
    let (mut client, mut upstream) = (
        peer(client, Masking::Forbidden),
        peer(upstream, Masking::Required),
    );
    client.send(&client_text("closure policy")).await;
    assert_eq!(
        upstream.frame().await.map(|f| f.1),
        Some(b"closure policy".to_vec())
    );
    let _ = tx.send(());
    assert_eq!(client.close_code().await, 1012);
    assert_eq!(upstream.close_code().await, 1012);
    let end = timeout(WAIT, task).await.expect("ended").expect("task");
    assert_eq!(end, WsEnd::Protocol(1012));
}

/// A session with no byte either way for `session_idle` is closed with 1001
/// to both peers; traffic in either direction keeps it open.
#[tokio::test(start_paused = true)]
async fn idle_sessions_close_1001_both_ways() {
    let limits = WsLimits {
        session_idle: Some(Duration::from_secs(60)),
        ..WsLimits::default()
    };
    let mut h = start_with(None, limits, true, &[]);
    let started = tokio::time::Instant::now();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(45)).await;
        h.client.send(&client_text("still here")).await;
        assert_eq!(
            h.upstream.frame().await.map(|f| f.1),
            Some(b"still here".to_vec())
        );
    }
    // Quiet from here: the close comes 60 s after the last frame, not before.
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert!(!h.task.is_finished(), "closed before the idle bound");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.client.close_code().await, 1001);
    assert_eq!(h.upstream.close_code().await, 1001);
    assert!(started.elapsed() >= Duration::from_secs(135 + 60));
    assert_eq!(h.end().await, WsEnd::Protocol(1001));
}

/// The relay future can be spawned with sockets and a boxed policy.
#[test]
fn relay_future_is_send() {
    async fn boxed(
        c: tokio::net::TcpStream,
        u: tokio::net::TcpStream,
        mut p: Box<dyn TextPolicy>,
    ) -> WsEnd {
        let l = WsLimits::default();
        relay(c, BytesMut::new(), u, BytesMut::new(), None, l, &mut *p).await
    }
    fn check<F, Fut>(_: F)
    where
        F: Fn(tokio::net::TcpStream, tokio::net::TcpStream, Box<dyn TextPolicy>) -> Fut,
        Fut: Future<Output = WsEnd> + Send,
    {
    }
    check(boxed);
}
