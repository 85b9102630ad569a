//! The session loop over in-memory pipes: a client, and a small fake Redis
//! upstream that records what reaches it.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use sluice_policy::PolicySnapshot;
use tokio::io::{duplex, DuplexStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::super::reply::Framer;
use super::super::resp::encode_command;
use super::*;
use crate::egress::Target;

const WAIT: Duration = Duration::from_secs(10);

const POLICY: &str = r#"version: 1
network_policies:
  cache:
    endpoints:
      - host: cache.internal
        port: 6379
        protocol: redis
        enforcement: enforce
        rules:
          - allow: { command: GET, key: "session:*" }
          - allow: { command: SET, key: "session:*" }
          - allow: { command: PING }
          - allow: { command: ECHO }
          - allow: { command: MULTI }
          - allow: { command: SUBSCRIBE }
          - allow: { command: UNSUBSCRIBE }
          - allow: { command: BLOCKME }
          - allow: { command: RELEASE }
        deny_rules:
          - { command: "FLUSH*" }
    binaries: [ { path: /usr/bin/redis-cli } ]
"#;

fn snapshot() -> PolicySnapshot {
    sluice_policy::load_str(POLICY, "p.yaml", 1)
        .expect("policy")
        .snapshot
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn bulk(b: &[u8]) -> Vec<u8> {
    [format!("${}\r\n", b.len()).as_bytes(), b, b"\r\n"].concat()
}

/// A fake Redis: GET/SET on a map, PING, ECHO, MULTI/EXEC/DISCARD,
/// SUBSCRIBE/UNSUBSCRIBE (RESP2, with a `message` pushed after each
/// confirmation), BLOCKME (answers only once `release` is sent). Records
/// each command as its words joined by spaces.
async fn fake_redis(mut io: DuplexStream, seen: Arc<Mutex<Vec<String>>>) {
    let limits = Limits {
        max_message: 1 << 20,
        max_args: 1024,
    };
    let mut parser = CommandParser::default();
    let mut buf = BytesMut::new();
    let mut data: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut queued: Option<Vec<Vec<Vec<u8>>>> = None;
    let mut subs = 0;
    loop {
        let cmd = match parser.parse(&buf, &limits) {
            Parse::Command(c) => c,
            Parse::NeedMore => {
                if !matches!(io.read_buf(&mut buf).await, Ok(n) if n > 0) {
                    return;
                }
                continue;
            }
            other => panic!("fake redis got bad input: {other:?}"),
        };
        let args: Vec<Vec<u8>> = cmd.args(&buf).iter().map(|a| a.to_vec()).collect();
        buf.advance(cmd.len);
        let words: Vec<String> = args.iter().map(|a| text(a)).collect();
        seen.lock().expect("seen").push(words.join(" "));
        let name = words[0].to_ascii_uppercase();
        let mut reply = Vec::new();
        if let Some(q) = queued.as_mut() {
            match name.as_str() {
                "EXEC" => {
                    let q = queued.take().unwrap_or_default();
                    reply.extend_from_slice(format!("*{}\r\n", q.len()).as_bytes());
                    for a in q {
                        reply.extend(execute(&mut data, &a));
                    }
                }
                "DISCARD" => {
                    queued = None;
                    reply.extend_from_slice(b"+OK\r\n");
                }
                _ => {
                    q.push(args.clone());
                    reply.extend_from_slice(b"+QUEUED\r\n");
                }
            }
        } else {
            match name.as_str() {
                "MULTI" => {
                    queued = Some(Vec::new());
                    reply.extend_from_slice(b"+OK\r\n");
                }
                "SUBSCRIBE" => {
                    for ch in &args[1..] {
                        subs += 1;
                        reply.extend_from_slice(b"*3\r\n");
                        reply.extend(bulk(b"subscribe"));
                        reply.extend(bulk(ch));
                        reply.extend_from_slice(format!(":{subs}\r\n").as_bytes());
                        reply.extend_from_slice(b"*3\r\n");
                        reply.extend(bulk(b"message"));
                        reply.extend(bulk(ch));
                        reply.extend(bulk(b"hello"));
                    }
                }
                "UNSUBSCRIBE" => {
                    for ch in &args[1..] {
                        subs -= 1;
                        reply.extend_from_slice(b"*3\r\n");
                        reply.extend(bulk(b"unsubscribe"));
                        reply.extend(bulk(ch));
                        reply.extend_from_slice(format!(":{subs}\r\n").as_bytes());
                    }
                }
                "BLOCKME" => {
                    // Wait for the test to say "release" (a marker command).
                    continue;
                }
                "RELEASE" => reply.extend_from_slice(b"+released\r\n+OK\r\n"),
                _ => reply.extend(execute(&mut data, &args)),
            }
        }
        if io.write_all(&reply).await.is_err() {
            return;
        }
    }
}

fn execute(data: &mut HashMap<Vec<u8>, Vec<u8>>, args: &[Vec<u8>]) -> Vec<u8> {
    match args[0].to_ascii_uppercase().as_slice() {
        b"PING" => b"+PONG\r\n".to_vec(),
        b"ECHO" => bulk(&args[1]),
        b"SET" => {
            data.insert(args[1].clone(), args[2].clone());
            b"+OK\r\n".to_vec()
        }
        b"GET" => data
            .get(&args[1])
            .map_or_else(|| b"$-1\r\n".to_vec(), |v| bulk(v)),
        _ => b"-ERR unknown command\r\n".to_vec(),
    }
}

struct Harness {
    client: DuplexStream,
    task: JoinHandle<Stats>,
    dials: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<String>>>,
    events: Arc<Mutex<Vec<String>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    framer: Framer,
    buf: Vec<u8>,
}

struct Options {
    reachable: bool,
    idle: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            reachable: true,
            idle: Duration::from_secs(60),
        }
    }
}

fn start(opts: Options) -> Harness {
    let (client, server) = duplex(1 << 16);
    let dials = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let events = Arc::new(Mutex::new(Vec::new()));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (d, s, e) = (Arc::clone(&dials), Arc::clone(&seen), Arc::clone(&events));
    let task = tokio::spawn(async move {
        let snapshot = snapshot();
        let target = Target::parse_authority("cache.internal:6379").expect("target");
        let gate = Gate::new(&snapshot, &snapshot.endpoints()[0], &target, false);
        let dial = move || {
            d.fetch_add(1, Ordering::SeqCst);
            let r = if opts.reachable {
                let (a, b) = duplex(1 << 16);
                tokio::spawn(fake_redis(b, Arc::clone(&s)));
                Ok(a)
            } else {
                Err(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"))
            };
            async move { r }
        };
        let events = move |v: &ProtocolVerdict, audit: bool| {
            e.lock()
                .expect("events")
                .push(format!("{} {} {}", audit, v.summary, v.reason));
        };
        let stop = async {
            let _ = stop_rx.await;
        };
        let limits = ProcessorLimits {
            dial_timeout: Duration::from_secs(1),
            idle: opts.idle,
            max_message: 1 << 20,
        };
        run(server, dial, gate, events, stop, limits).await
    });
    Harness {
        client,
        task,
        dials,
        seen,
        events,
        stop: Some(stop_tx),
        framer: Framer::new(),
        buf: Vec::new(),
    }
}

impl Harness {
    async fn send(&mut self, bytes: &[u8]) {
        self.client.write_all(bytes).await.expect("client write");
    }

    /// The next `n` replies, each as text.
    async fn replies(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = Vec::new();
        let mut chunk = vec![0u8; 4096];
        while out.len() < n {
            while !self.buf.is_empty() && out.len() < n {
                let (used, m) = self.framer.feed(&self.buf).expect("valid replies");
                cur.extend(self.buf.drain(..used));
                if m.is_some() {
                    out.push(text(&std::mem::take(&mut cur)));
                }
            }
            if out.len() == n {
                break;
            }
            let r = timeout(WAIT, self.client.read(&mut chunk))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "replies in time: {} of {n}, last {:?}",
                        out.len(),
                        out.last()
                    )
                })
                .expect("read");
            assert!(r > 0, "EOF after {} replies: {out:?}", out.len());
            self.buf.extend_from_slice(&chunk[..r]);
        }
        out
    }

    /// Reads to EOF; what came before it.
    async fn rest(&mut self) -> String {
        let mut v = std::mem::take(&mut self.buf);
        timeout(WAIT, self.client.read_to_end(&mut v))
            .await
            .expect("EOF in time")
            .expect("read");
        text(&v)
    }

    async fn end(self) -> (Stats, Vec<String>, Vec<String>, usize) {
        drop(self.client);
        let stats = timeout(WAIT, self.task)
            .await
            .expect("session ended")
            .expect("session task");
        let seen = self.seen.lock().expect("seen").clone();
        let events = self.events.lock().expect("events").clone();
        (stats, seen, events, self.dials.load(Ordering::SeqCst))
    }
}

#[tokio::test]
async fn denied_commands_never_dial() {
    let mut h = start(Options::default());
    h.send(b"SET other 1\r\n*1\r\n$8\r\nFLUSHALL\r\nGET user:1\r\n")
        .await;
    let r = h.replies(3).await;
    assert_eq!(
        r,
        [
            "-ERR sluice: SET not permitted by policy\r\n",
            "-ERR sluice: FLUSHALL blocked by deny rule\r\n",
            "-ERR sluice: GET not permitted by policy\r\n",
        ]
    );
    let (stats, seen, events, dials) = h.end().await;
    assert_eq!(dials, 0, "no upstream socket");
    assert!(seen.is_empty());
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(stats.end, End::Closed);
    assert_eq!(stats.to_upstream, 0);
}

#[tokio::test]
async fn pipeline_gets_one_reply_per_command_in_order() {
    let mut h = start(Options::default());
    let mut pipeline = Vec::new();
    let mut want = Vec::new();
    for i in 0..1000 {
        match i % 3 {
            0 => {
                encode_command(
                    &[b"SET", format!("session:{i}").as_bytes(), b"v"],
                    &mut pipeline,
                );
                want.push("+OK\r\n".to_owned());
            }
            1 => {
                encode_command(
                    &[b"SET", format!("other:{i}").as_bytes(), b"v"],
                    &mut pipeline,
                );
                want.push("-ERR sluice: SET not permitted by policy\r\n".to_owned());
            }
            _ => {
                encode_command(&[b"ECHO", format!("e{i}").as_bytes()], &mut pipeline);
                want.push(text(&bulk(format!("e{i}").as_bytes())));
            }
        }
    }
    h.send(&pipeline).await;
    let got = h.replies(1000).await;
    assert_eq!(got, want);
    let (_, seen, events, dials) = h.end().await;
    assert_eq!(dials, 1);
    assert_eq!(seen.len(), 667, "denied commands never reach the upstream");
    assert!(seen.iter().all(|c| !c.contains("other:")));
    assert_eq!(events.len(), 333);
}

#[tokio::test]
async fn a_denied_command_aborts_the_transaction() {
    let mut h = start(Options::default());
    h.send(b"MULTI\r\nSET session:a 1\r\nSET other 2\r\nEXEC\r\nGET session:a\r\n")
        .await;
    let r = h.replies(5).await;
    assert_eq!(
        r,
        [
            "+OK\r\n",
            "+QUEUED\r\n",
            "-ERR sluice: SET not permitted by policy\r\n",
            "-EXECABORT Transaction discarded because of previous errors.\r\n",
            "$-1\r\n",
        ]
    );
    let (_, seen, _, _) = h.end().await;
    assert_eq!(
        seen,
        ["MULTI", "SET session:a 1", "DISCARD", "GET session:a"],
        "EXEC never reaches the upstream"
    );
}

#[tokio::test]
async fn an_allowed_transaction_runs() {
    let mut h = start(Options::default());
    h.send(b"MULTI\r\nSET session:a 1\r\nGET session:a\r\nEXEC\r\n")
        .await;
    let r = h.replies(4).await;
    assert_eq!(
        r,
        [
            "+OK\r\n",
            "+QUEUED\r\n",
            "+QUEUED\r\n",
            "*2\r\n+OK\r\n$1\r\n1\r\n"
        ]
    );
}

#[tokio::test]
async fn malformed_input_is_refused_and_closes() {
    let mut h = start(Options::default());
    h.send(b"PING\r\n*1\r\n+PING\r\nPING\r\n").await;
    let rest = h.rest().await;
    assert_eq!(
        rest,
        "+PONG\r\n-ERR Protocol error: expected '$', got '+'\r\n"
    );
    let (stats, seen, events, _) = h.end().await;
    assert_eq!(stats.end, End::ClientProtocol);
    assert_eq!(seen, ["PING"], "nothing after the error is forwarded");
    assert!(events[0].contains("Protocol error"), "{events:?}");
    // A refusal before anything was forwarded opens no upstream socket.
    let mut h = start(Options::default());
    h.send(b"*2\r\n$3\r\nGET\r\n$1\r\nkXY").await;
    let rest = h.rest().await;
    assert_eq!(
        rest,
        "-ERR Protocol error: bulk string not terminated by CRLF\r\n"
    );
    assert_eq!(h.end().await.3, 0);
}

#[tokio::test]
async fn subscribe_mode_relays_messages_and_keeps_evaluating() {
    let mut h = start(Options::default());
    h.send(b"SUBSCRIBE a b\r\nFLUSHALL\r\n").await;
    let r = h.replies(5).await;
    assert_eq!(
        r,
        [
            "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n",
            "*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nhello\r\n",
            "*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n",
            // SUBSCRIBE's replies are its two confirmations: the denial of
            // the next command follows them; messages are out of band.
            "-ERR sluice: FLUSHALL blocked by deny rule\r\n",
            "*3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$5\r\nhello\r\n",
        ]
    );
    h.send(b"UNSUBSCRIBE a b\r\nGET user:1\r\nGET session:x\r\n")
        .await;
    let r = h.replies(4).await;
    assert_eq!(r[2], "-ERR sluice: GET not permitted by policy\r\n");
    assert_eq!(r[3], "$-1\r\n");
}

#[tokio::test]
async fn local_errors_wait_for_a_blocked_reply() {
    let mut h = start(Options::default());
    h.send(b"BLOCKME\r\nFLUSHALL\r\n").await;
    // Nothing can come before BLOCKME's reply.
    let mut chunk = [0u8; 64];
    assert!(
        timeout(Duration::from_millis(200), h.client.read(&mut chunk))
            .await
            .is_err(),
        "the denial waits"
    );
    // A separate marker makes the fake answer BLOCKME (and itself).
    let mut p = Vec::new();
    encode_command(&[b"RELEASE"], &mut p);
    h.send(&p).await;
    let r = h.replies(3).await;
    assert_eq!(
        r,
        [
            "+released\r\n",
            "-ERR sluice: FLUSHALL blocked by deny rule\r\n",
            "+OK\r\n",
        ]
    );
}

#[tokio::test]
async fn quit_answers_after_earlier_replies_and_closes() {
    let mut h = start(Options::default());
    h.send(b"PING\r\nFLUSHALL\r\nQUIT\r\nPING\r\n").await;
    assert_eq!(
        h.rest().await,
        "+PONG\r\n-ERR sluice: FLUSHALL blocked by deny rule\r\n+OK\r\n"
    );
    let (stats, seen, _, _) = h.end().await;
    assert_eq!(stats.end, End::Closed);
    assert_eq!(seen, ["PING"], "QUIT is answered by sluice");
}

#[tokio::test]
async fn unreachable_upstream_is_an_error_reply() {
    let mut h = start(Options {
        reachable: false,
        ..Options::default()
    });
    h.send(b"FLUSHALL\r\nPING\r\nPING\r\n").await;
    assert_eq!(
        h.rest().await,
        "-ERR sluice: FLUSHALL blocked by deny rule\r\n-ERR sluice: upstream unreachable\r\n"
    );
    let (stats, _, _, dials) = h.end().await;
    assert_eq!((stats.end, dials), (End::Unreachable, 1));
}

#[tokio::test]
async fn stop_ends_the_session() {
    let mut h = start(Options::default());
    h.send(b"PING\r\n").await;
    assert_eq!(h.replies(1).await, ["+PONG\r\n"]);
    if let Some(stop) = h.stop.take() {
        let _ = stop.send(());
    }
    assert_eq!(h.rest().await, "");
    assert_eq!(h.end().await.0.end, End::Revoked);
}

#[tokio::test(start_paused = true)]
async fn idle_sessions_end() {
    let mut h = start(Options {
        idle: Duration::from_secs(30),
        ..Options::default()
    });
    h.send(b"PING\r\n").await;
    assert_eq!(h.replies(1).await, ["+PONG\r\n"]);
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(h.rest().await, "");
    assert_eq!(h.end().await.0.end, End::Idle);
}
