//! `protocol: redis` (design §6.2) with a real `redis-server` in a namespace
//! and real clients: `redis-cli` and Python `redis` through a CONNECT
//! forwarder (`socat ... PROXY:`) to `sluice serve`, raw RESP through a
//! CONNECT tunnel, and both clients by name inside `sluice run` (transparent
//! capture, default flags). Every command is evaluated; a denied one gets
//! `-ERR sluice: ...` and never reaches the server, which the tests check
//! on the server itself (`ip netns exec NS redis-cli ...`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_proxy::relay::processor::redis::reply::Framer;
use sluice_test_support::{eventually, patience, sandbox_python, Netns, TempDir};

use crate::harness::Sluice;
use crate::run::run_to_end;

const HOST: &str = "cache.internal";
const SECRET: &str = "Redis-s3cret-8f2c1e";

/// The test policy: GET/SET on `session:*`, a few connection-level
/// commands, FLUSH* denied; `providers` appended when given.
fn policy(enforcement: &str, providers: &str) -> String {
    let me = std::env::current_exe().expect("test binary");
    format!(
        r#"version: 1
network_policies:
  cache:
    endpoints:
      - host: {HOST}
        port: 6379
        protocol: redis
        enforcement: {enforcement}
        rules:
          - allow: {{ command: GET, key: "session:*" }}
          - allow: {{ command: SET, key: "session:*" }}
          - allow: {{ command: PING }}
          - allow: {{ command: ECHO }}
          - allow: {{ command: MULTI }}
          - allow: {{ command: SUBSCRIBE }}
          - allow: {{ command: UNSUBSCRIBE }}
          - allow: {{ command: "CLIENT|SETINFO" }}
        deny_rules:
          - {{ command: "FLUSH*" }}
    binaries: [ {{ path: "/usr/**" }}, {{ path: "{me}" }} ]
{providers}"#,
        me = me.display()
    )
}

/// `socat` listening on loopback, forwarding each connection through a
/// CONNECT tunnel (`PROXY:`) to `cache.internal:6379`. Killed on drop.
struct Forwarder {
    child: Child,
    port: u16,
}

impl Forwarder {
    fn start(proxy: SocketAddr) -> Self {
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let mut child = Command::new("socat")
                .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
                .arg(format!(
                    "PROXY:{}:{HOST}:6379,proxyport={}",
                    proxy.ip(),
                    proxy.port()
                ))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("socat is installed (scripts/test installs it)");
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Self { child, port };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("socat did not start");
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Setup {
    _dir: TempDir,
    ns: Netns,
    sluice: Sluice,
    fwd: Forwarder,
}

fn setup(tag: &str, policy_yaml: &str, password: Option<&str>, env: &[(&str, &str)]) -> Setup {
    let dir = TempDir::new(tag);
    let ns = Netns::new();
    match password {
        Some(p) => ns.start_redis_with_password(6379, p),
        None => ns.start_redis(6379),
    }
    let host = format!("{HOST}={}", ns.ns_ip);
    let sluice = Sluice::start_with_env(&dir, policy_yaml, &["--add-host", &host], env);
    let fwd = Forwarder::start(sluice.addr);
    Setup {
        _dir: dir,
        ns,
        sluice,
        fwd,
    }
}

impl Setup {
    /// `redis-cli` through the forwarder; stdout and stderr.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.fwd.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .trim()
        .to_owned()
    }

    /// `redis-cli` on the server itself (inside its namespace, no sluice).
    fn server(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns.name,
                "redis-cli",
                "-h",
                &self.ns.ns_ip,
            ])
            .args(args)
            .output()
            .expect("run redis-cli in the namespace");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Connections the server has accepted so far (this query included).
    fn connections(&self, auth: &[&str]) -> u64 {
        let info = self.server(&[auth, &["INFO", "stats"]].concat());
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no connection count in {info}"))
    }

    /// A Python `redis` client script through the forwarder
    /// (`sys.argv[1:3]` = host, port).
    fn python(&self, source: &str) -> String {
        let out = Command::new(sandbox_python())
            .arg("-c")
            .arg(source)
            .args(["127.0.0.1", &self.fwd.port.to_string()])
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "python failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Events written by the Redis processor for `word` (`deny`, `audit`).
    fn processor_events(&self, word: &str) -> Vec<serde_json::Value> {
        let prefix = format!("REDIS {word} ");
        self.sluice
            .events()
            .into_iter()
            .filter(|e| {
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(&prefix))
            })
            .collect()
    }
}

/// A raw CONNECT tunnel to `cache.internal:6379`, after the `200`.
fn tunnel(proxy: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(proxy).expect("connect to sluice");
    s.set_read_timeout(Some(patience())).expect("timeout");
    s.write_all(format!("CONNECT {HOST}:6379 HTTP/1.1\r\nHost: {HOST}:6379\r\n\r\n").as_bytes())
        .expect("write CONNECT");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).expect("CONNECT answer"), 1, "closed");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s
}

/// The next `n` replies on `s`, each as text.
fn replies(s: &mut TcpStream, n: usize) -> Vec<String> {
    let mut framer = Framer::new();
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut b = [0u8; 1];
    while out.len() < n {
        assert_eq!(
            s.read(&mut b).unwrap_or(0),
            1,
            "EOF after {} replies: {out:?} {:?}",
            out.len(),
            String::from_utf8_lossy(&cur)
        );
        cur.push(b[0]);
        let (_, done) = framer.feed(&b).expect("valid RESP from sluice");
        if done.is_some() {
            out.push(String::from_utf8_lossy(&std::mem::take(&mut cur)).into_owned());
        }
    }
    out
}

/// Everything until sluice closes.
fn rest(s: &mut TcpStream) -> String {
    let mut v = Vec::new();
    let _ = s.read_to_end(&mut v);
    String::from_utf8_lossy(&v).into_owned()
}

/// redis-cli through CONNECT: allowed commands work, denied ones get
/// sluice's error and leave the server unchanged; a session of only denied
/// commands never opens a connection to the server; each denial is an event.
#[test]
fn redis_cli_through_connect_allowed_and_denied() {
    let s = setup("redis-connect", &policy("enforce", ""), None, &[]);
    assert_eq!(s.cli(&["SET", "session:1", "hello"]), "OK");
    assert_eq!(s.cli(&["GET", "session:1"]), "hello");
    assert_eq!(s.cli(&["PING"]), "PONG");
    let denied = s.cli(&["SET", "other:1", "x"]);
    assert!(
        denied.contains("ERR sluice: SET not permitted by policy"),
        "{denied}"
    );
    let flush = s.cli(&["FLUSHALL"]);
    assert!(
        flush.contains("ERR sluice: FLUSHALL blocked by deny rule"),
        "{flush}"
    );
    assert_eq!(s.server(&["GET", "other:1"]), "");
    assert_eq!(
        s.server(&["DBSIZE"]),
        "1",
        "the denied FLUSHALL did nothing"
    );

    // Only denied commands: the upstream is never dialled.
    let before = s.connections(&[]);
    let mut t = tunnel(s.sluice.addr);
    t.write_all(b"SET other:2 x\r\n*1\r\n$7\r\nFLUSHDB\r\nGET user:1\r\n")
        .expect("write");
    let r = replies(&mut t, 3);
    assert_eq!(
        r,
        [
            "-ERR sluice: SET not permitted by policy\r\n",
            "-ERR sluice: FLUSHDB blocked by deny rule\r\n",
            "-ERR sluice: GET not permitted by policy\r\n",
        ]
    );
    drop(t);
    s.sluice.wait_event("closed cache.internal:6379");
    assert_eq!(
        s.connections(&[]),
        before + 1,
        "no connection but the count query itself"
    );

    let deny = s.processor_events("deny");
    let flushall = deny
        .iter()
        .find(|e| e["unmapped"]["processor.summary"] == "command=FLUSHALL keys=0")
        .unwrap_or_else(|| panic!("FLUSHALL event: {deny:#?}"));
    assert_eq!(flushall["disposition"], "Blocked");
    assert_eq!(flushall["unmapped"]["processor.rule"], "deny FLUSH*");
    assert_eq!(flushall["status_detail"], "FLUSHALL blocked by deny rule");
    assert!(
        deny.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m == "REDIS deny cache.internal:6379 command=SET keys=1")),
        "{deny:#?}"
    );
    assert_eq!(deny.len(), 5, "one event per denied command: {deny:#?}");
}

/// A transaction with a denied command runs nothing: raw RESP and Python's
/// transactional pipeline.
#[test]
fn multi_exec_with_a_denied_command_runs_nothing() {
    let s = setup("redis-multi", &policy("enforce", ""), None, &[]);
    let mut t = tunnel(s.sluice.addr);
    t.write_all(b"MULTI\r\nSET session:t1 a\r\nSET other:t b\r\nEXEC\r\nGET session:t1\r\n")
        .expect("write");
    assert_eq!(
        replies(&mut t, 5),
        [
            "+OK\r\n",
            "+QUEUED\r\n",
            "-ERR sluice: SET not permitted by policy\r\n",
            "-EXECABORT Transaction discarded because of previous errors.\r\n",
            "$-1\r\n",
        ]
    );
    // An allowed transaction runs.
    t.write_all(b"MULTI\r\nSET session:t1 a\r\nGET session:t1\r\nEXEC\r\n")
        .expect("write");
    assert_eq!(
        replies(&mut t, 4),
        [
            "+OK\r\n",
            "+QUEUED\r\n",
            "+QUEUED\r\n",
            "*2\r\n+OK\r\n$1\r\na\r\n"
        ]
    );
    drop(t);
    let out = s.python(
        "import sys, redis\n\
         r = redis.Redis(host=sys.argv[1], port=int(sys.argv[2]), socket_timeout=10)\n\
         p = r.pipeline(transaction=True)\n\
         p.set('session:t2', 'x'); p.flushall(); p.set('session:t3', 'y')\n\
         try:\n    p.execute(); print('executed')\n\
         except redis.exceptions.RedisError as e:\n    print('refused', type(e).__name__, e)\n",
    );
    assert!(out.starts_with("refused"), "{out}");
    assert_eq!(s.server(&["EXISTS", "session:t2", "session:t3"]), "0");
    assert_eq!(s.server(&["GET", "session:t1"]), "a");
}

/// 1,000 pipelined commands, a third of them denied: exactly 1,000 replies
/// in order (Python `redis` pipeline and `redis-cli --pipe`).
#[test]
fn pipeline_of_1000_commands_gets_1000_replies_in_order() {
    let s = setup("redis-pipeline", &policy("enforce", ""), None, &[]);
    let out = s.python(
        "import sys, redis\n\
         r = redis.Redis(host=sys.argv[1], port=int(sys.argv[2]), socket_timeout=20)\n\
         p = r.pipeline(transaction=False)\n\
         for i in range(1000):\n\
         \x20   if i % 3 == 0: p.set(f'session:p{i}', i)\n\
         \x20   elif i % 3 == 1: p.set(f'other:p{i}', i)\n\
         \x20   else: p.get(f'session:p{i - 2}')\n\
         res = p.execute(raise_on_error=False)\n\
         sig = []\n\
         for x in res:\n\
         \x20   if isinstance(x, Exception): sig.append('E' if 'sluice' in str(x) else 'X' + str(x))\n\
         \x20   elif x is True: sig.append('T')\n\
         \x20   else: sig.append(x.decode())\n\
         print(len(res)); print(','.join(sig))\n",
    );
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1000"), "{out}");
    let want: Vec<String> = (0..1000)
        .map(|i| match i % 3 {
            0 => "T".to_owned(),
            1 => "E".to_owned(),
            _ => (i - 2).to_string(),
        })
        .collect();
    assert_eq!(lines.next(), Some(want.join(",").as_str()));
    assert_eq!(s.server(&["EXISTS", "other:p1", "other:p4"]), "0");

    // redis-cli --pipe: RESP on stdin, a summary of the replies.
    let mut input = Vec::new();
    for i in 0..1000 {
        let key = if i % 2 == 0 {
            format!("session:q{i}")
        } else {
            format!("other:q{i}")
        };
        input.extend_from_slice(
            format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$1\r\nv\r\n", key.len()).as_bytes(),
        );
    }
    let mut child = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &s.fwd.port.to_string(), "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli --pipe");
    let mut stdin = child.stdin.take().expect("stdin");
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("redis-cli --pipe ends");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("errors: 500, replies: 1000"), "{text}");
    assert_eq!(s.server(&["EXISTS", "session:q998", "other:q999"]), "1");
}

/// AUTH with a placeholder against a `requirepass` server: sluice sends the
/// provider's secret (redis-cli `-a`, Python `redis` with RESP3's `HELLO 3
/// AUTH`); the secret never appears in the audit log or sluice's output.
#[test]
fn auth_placeholder_against_a_requirepass_server() {
    let providers = format!(
        "providers:\n  cache:\n    credentials:\n      REDIS_PASSWORD: {{ env: HOST_REDIS_PASSWORD }}\n    endpoints: [ {{ host: {HOST}, port: 6379 }} ]\n"
    );
    let s = setup(
        "redis-auth",
        &policy("enforce", &providers),
        Some(SECRET),
        &[("HOST_REDIS_PASSWORD", SECRET)],
    );
    let placeholder = "sluice:resolve:env:REDIS_PASSWORD";
    let noauth = s.cli(&["GET", "session:a"]);
    assert!(noauth.contains("NOAUTH"), "{noauth}");
    assert_eq!(
        s.cli(&[
            "--no-auth-warning",
            "-a",
            placeholder,
            "SET",
            "session:a",
            "1"
        ]),
        "OK"
    );
    let unknown = s.cli(&[
        "--no-auth-warning",
        "-a",
        "sluice:resolve:env:NOPE",
        "GET",
        "session:a",
    ]);
    assert!(
        unknown.contains("ERR sluice: unknown credential NOPE"),
        "{unknown}"
    );
    let out = s.python(&format!(
        "import sys, redis\n\
         r = redis.Redis(host=sys.argv[1], port=int(sys.argv[2]), password='{placeholder}', protocol=3, socket_timeout=10)\n\
         print(r.ping(), r.get('session:a').decode())\n"
    ));
    assert_eq!(out.trim(), "True 1");
    assert_eq!(
        s.server(&["--no-auth-warning", "-a", SECRET, "GET", "session:a"]),
        "1"
    );
    let audit = std::fs::read_to_string(&s.sluice.audit).expect("audit log");
    assert!(!audit.contains(SECRET), "the secret is in the audit log");
    assert!(
        !s.sluice.stderr().contains(SECRET),
        "the secret is in sluice's output"
    );
    assert!(
        audit.contains("unknown credential NOPE"),
        "the refusal is logged"
    );
}

/// Malformed RESP gets a protocol error and the connection is closed;
/// nothing after the malformed bytes reaches the server.
#[test]
fn malformed_resp_is_refused() {
    let s = setup("redis-malformed", &policy("enforce", ""), None, &[]);
    let cases: &[(&[u8], &str)] = &[
        (
            b"PING\r\n*1\r\n+SET\r\nSET session:m 1\r\n",
            "+PONG\r\n-ERR Protocol error: expected '$', got '+'\r\n",
        ),
        (
            b"*2\r\n$3\r\nGET\r\n$1\r\nkXY\r\n",
            "-ERR Protocol error: bulk string not terminated by CRLF\r\n",
        ),
        (
            b"SET session:m \"unbalanced\r\n",
            "-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
        (
            b"*9999999\r\n",
            "-ERR Protocol error: too many arguments\r\n",
        ),
        (
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
            "-ERR Protocol error: TLS is not supported on this endpoint (plaintext RESP only)\r\n",
        ),
    ];
    for (input, want) in cases {
        let mut t = tunnel(s.sluice.addr);
        t.write_all(input).expect("write");
        assert_eq!(rest(&mut t), *want, "{:?}", String::from_utf8_lossy(input));
    }
    assert_eq!(s.server(&["EXISTS", "session:m"]), "0");
    s.sluice.wait_event("client protocol error");
}

/// `enforcement: audit`: a denied command is forwarded and logged as audit.
#[test]
fn audit_enforcement_forwards_and_logs() {
    let s = setup("redis-audit", &policy("audit", ""), None, &[]);
    assert_eq!(s.cli(&["SET", "other:a", "x"]), "OK");
    assert_eq!(s.server(&["GET", "other:a"]), "x");
    eventually("the audit event", || {
        !s.processor_events("audit").is_empty()
    });
    let e = &s.processor_events("audit")[0];
    assert_eq!(e["disposition"], "Allowed", "{e:#}");
    assert_eq!(e["unmapped"]["processor.summary"], "command=SET keys=1");
    assert!(s.processor_events("deny").is_empty());
}

/// Pub/Sub against the real server: messages published meanwhile reach the
/// subscriber, and its commands are still evaluated in subscribe mode.
#[test]
fn subscribe_mode_relays_messages_and_still_evaluates() {
    let s = setup("redis-pubsub", &policy("enforce", ""), None, &[]);
    let mut t = tunnel(s.sluice.addr);
    t.write_all(b"SUBSCRIBE news\r\n").expect("write");
    assert_eq!(
        replies(&mut t, 1),
        ["*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"]
    );
    assert_eq!(s.server(&["PUBLISH", "news", "hello"]), "1");
    assert_eq!(
        replies(&mut t, 1),
        ["*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n"]
    );
    t.write_all(b"PSUBSCRIBE n*\r\nPING\r\nUNSUBSCRIBE\r\nGET session:none\r\n")
        .expect("write");
    assert_eq!(
        replies(&mut t, 4),
        [
            "-ERR sluice: PSUBSCRIBE not permitted by policy\r\n",
            "*2\r\n$4\r\npong\r\n$0\r\n\r\n",
            "*3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:0\r\n",
            "$-1\r\n",
        ]
    );
}

/// A reload after which the policy no longer allows the endpoint ends an
/// open session.
#[test]
fn reload_revokes_an_open_session() {
    let s = setup("redis-reload", &policy("enforce", ""), None, &[]);
    let mut t = tunnel(s.sluice.addr);
    t.write_all(b"PING\r\n").expect("write");
    assert_eq!(replies(&mut t, 1), ["+PONG\r\n"]);
    let moved = policy("enforce", "").replace("host: cache.internal", "host: other.internal");
    s.sluice.replace_policy(&moved, 2);
    s.sluice.wait_event("closed after policy reload");
    assert_eq!(rest(&mut t), "", "closed without a reply");
}

/// Inside `sluice run` with default flags, `redis-cli` and Python `redis`
/// reach the server by name (policy DNS + transparent capture cover
/// `protocol: redis`), and the processor evaluates every command.
#[test]
fn redis_clients_by_name_inside_sluice_run() {
    let dir = TempDir::new("redis-run");
    let ns = Netns::new();
    ns.start_redis(6379);
    let py = sandbox_python();
    let run_policy = policy("enforce", "").replace(HOST, "cache.demo.internal");
    let script = format!(
        "unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy\n\
         echo set=$(redis-cli -h cache.demo.internal SET session:r 1)\n\
         echo get=$(redis-cli -h cache.demo.internal GET session:r)\n\
         echo denied=$(redis-cli -h cache.demo.internal SET other:r 1 2>&1)\n\
         echo flush=$(redis-cli -h cache.demo.internal FLUSHALL 2>&1)\n\
         {py} -c \"\nimport redis\nr = redis.Redis(host='cache.demo.internal', port=6379, socket_timeout=10)\np = r.pipeline(transaction=False)\np.set('session:py', 'v'); p.set('other:py', 'v'); p.get('session:py')\nres = p.execute(raise_on_error=False)\nprint('py=' + '|'.join(type(x).__name__ for x in res))\n\"\n"
    );
    let host = format!("cache.demo.internal={}", ns.ns_ip);
    let r = run_to_end(&dir, &run_policy, &["--add-host", &host], &script);
    let out = format!("{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.status.code(), Some(0), "{out}");
    assert_eq!(r.value("set"), "OK", "{out}");
    assert_eq!(r.value("get"), "1", "{out}");
    assert!(
        r.value("denied")
            .contains("ERR sluice: SET not permitted by policy"),
        "{out}"
    );
    assert!(
        r.value("flush")
            .contains("ERR sluice: FLUSHALL blocked by deny rule"),
        "{out}"
    );
    assert_eq!(r.value("py"), "bool|ResponseError|bytes", "{out}");
    let server = |args: &[&str]| {
        let o = Command::new("ip")
            .args(["netns", "exec", &ns.name, "redis-cli", "-h", &ns.ns_ip])
            .args(args)
            .output()
            .expect("redis-cli in the namespace");
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    assert_eq!(server(&["EXISTS", "other:r", "other:py"]), "0");
    assert_eq!(server(&["DBSIZE"]), "2");
    assert!(
        r.events.iter().any(|e| {
            e["message"].as_str().is_some_and(|m| {
                m.starts_with("REDIS deny cache.demo.internal:6379 command=FLUSHALL")
            })
        }),
        "{:#?}",
        r.events
    );
}
