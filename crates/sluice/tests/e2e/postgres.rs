//! The Postgres processor (design §6.2) against a real PostgreSQL cluster
//! in a namespace (TLS, SCRAM for `agent`, md5 for `md5user`): real `psql`
//! and Python `psycopg` through a CONNECT tunnel of `sluice serve` (socat as
//! the forwarder) and by name inside `sluice run --transparent all`. Every
//! denial is checked on the server itself: nothing of a denied message ran.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sluice_test_support::{
    eventually, patience, postgres_bin, sandbox_python, skip_or_fail, start_postgres, test_pki,
    Netns, PgServer, PgTls, TempDir, TestPki,
};

use crate::harness::{sluice_cmd, Sluice};
use crate::run::{assert_cleaned_up, sluice_run, RunOutcome};

const AGENT_SECRET: &str = "pg-agent-s3cret-7781";
const MD5_SECRET: &str = "pg-md5-s3cret-4410";
const PLACEHOLDER: &str = "sluice:resolve:env:DB_PASSWORD";
const MD5_PLACEHOLDER: &str = "sluice:resolve:env:MD5_PASSWORD";

/// [`policy`] for `--identity endpoint-only`, which cannot enforce `binaries`.
fn endpoint_only_policy(enforcement: &str) -> String {
    policy(enforcement).replace(
        "    binaries: [ { path: \"/usr/**\" }, { path: \"/opt/**\" } ]\n",
        "",
    )
}

fn policy(enforcement: &str) -> String {
    format!(
        r#"version: 1
network_policies:
  db:
    endpoints:
      - host: db.demo.internal
        port: 5432
        protocol: postgres
        enforcement: {enforcement}
        rules:
          - allow: {{ statement: select, table: "public.*" }}
          - allow: {{ statement: insert, table: "public.events" }}
        deny_rules:
          - {{ statement: "*", table: "public.secrets" }}
    binaries: [ {{ path: "/usr/**" }}, {{ path: "/opt/**" }} ]
providers:
  pg:
    credentials:
      DB_PASSWORD: {{ env: E2E_PG_AGENT }}
      MD5_PASSWORD: {{ env: E2E_PG_MD5 }}
    endpoints:
      - {{ host: db.demo.internal, port: 5432 }}
"#
    )
}

const SECRETS_ENV: [(&str, &str); 2] = [("E2E_PG_AGENT", AGENT_SECRET), ("E2E_PG_MD5", MD5_SECRET)];

/// A cluster (TLS on, as `db.demo.internal`) with the test schema.
struct Db {
    pg: PgServer,
    pki: TestPki,
    _ns: Netns,
    dir: TempDir,
}

fn db(tag: &str) -> Option<Db> {
    if postgres_bin().is_none() {
        skip_or_fail("PostgreSQL is not installed (Debian package postgresql)");
        return None;
    }
    let dir = TempDir::new(tag);
    let ns = Netns::new();
    let pki = test_pki(&dir, "pg", &["db.demo.internal"]);
    let pg = start_postgres(
        &ns,
        dir.root(),
        5432,
        Some(PgTls {
            cert: &pki.cert,
            key: &pki.key,
        }),
    );
    pg.psql(
        "postgres",
        &format!(
            "CREATE ROLE agent LOGIN PASSWORD '{AGENT_SECRET}';\
             SET password_encryption = 'md5';\
             CREATE ROLE md5user LOGIN PASSWORD '{MD5_SECRET}';"
        ),
    );
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql(
        "app",
        "CREATE TABLE users (id int PRIMARY KEY, name text);\
         INSERT INTO users VALUES (1, 'ada'), (2, 'brian'), (3, 'cleo');\
         CREATE TABLE events (id serial PRIMARY KEY, what text);\
         CREATE TABLE secrets (v text); INSERT INTO secrets VALUES ('hidden');\
         CREATE SCHEMA private; CREATE TABLE private.keys (k text); INSERT INTO private.keys VALUES ('k1');\
         GRANT USAGE ON SCHEMA private TO agent, md5user;\
         GRANT ALL ON ALL TABLES IN SCHEMA public, private TO agent, md5user;\
         GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO agent, md5user;",
    );
    Some(Db {
        pg,
        pki,
        _ns: ns,
        dir,
    })
}

impl Db {
    fn count(&self, table: &str) -> i64 {
        self.pg
            .psql("app", &format!("SELECT count(*) FROM {table}"))
            .parse()
            .expect("a count")
    }

    fn serve(&self, enforcement: &str) -> Sluice {
        let host = format!("db.demo.internal={}", self.pg.host);
        let ca = self.pki.ca.display().to_string();
        let args = [
            "--identity",
            "endpoint-only",
            "--add-host",
            &host,
            "--upstream-ca",
            &ca,
        ];
        Sluice::start_with_env(
            &self.dir,
            &endpoint_only_policy(enforcement),
            &args,
            &SECRETS_ENV,
        )
    }
}

/// `socat` on a loopback port, turning plain connections into CONNECT
/// tunnels to `db.demo.internal:5432` through sluice; killed on drop.
struct Forwarder {
    child: Child,
    port: u16,
}

impl Forwarder {
    fn start(proxy: SocketAddr) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("socat")
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"))
            .arg(format!(
                "PROXY:{}:db.demo.internal:5432,proxyport={}",
                proxy.ip(),
                proxy.port()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat (scripts/test installs it)");
        let f = Self { child, port };
        eventually("socat listens", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        f
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `psql` with `conninfo` and `-c` for each command (one connection: a
/// failing command does not stop the next).
fn psql(pg: &PgServer, conninfo: &str, password: &str, commands: &[&str]) -> Output {
    let mut cmd = Command::new(pg.bin.join("psql"));
    cmd.args(["-X", "-A", "-t", "-v", "VERBOSITY=verbose"])
        .arg(conninfo);
    for c in commands {
        cmd.args(["-c", c]);
    }
    cmd.env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .output()
        .expect("run psql")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// psql over a CONNECT tunnel, TLS on both hops (the client verifies the
/// sandbox CA's leaf), SCRAM with a placeholder password: allowed reads
/// work, denied writes are answered 42501 and never run, the session stays
/// usable, a multi-statement string with one denied statement runs nothing,
/// and the secret appears nowhere sluice writes.
#[test]
fn psql_through_connect_is_enforced_per_statement() {
    let Some(db) = db("pg-psql") else { return };
    let sluice = db.serve("enforce");
    let fwd = Forwarder::start(sluice.addr);
    let ca = db.dir.path("sandbox-ca.pem");
    let state = db.dir.path("state");
    std::fs::write(
        &ca,
        sluice_cmd(&["ca", "show", "--state-dir", state.to_str().unwrap()]),
    )
    .unwrap();
    let conninfo = format!(
        "host=db.demo.internal hostaddr=127.0.0.1 port={} user=agent dbname=app \
         sslmode=verify-full sslrootcert={}",
        fwd.port,
        ca.display()
    );
    let started = Instant::now();
    let out = psql(
        &db.pg,
        &conninfo,
        PLACEHOLDER,
        &[
            "SELECT name FROM users ORDER BY id",
            "INSERT INTO users VALUES (4, 'mallory')",
            "DELETE FROM users",
            "SELECT count(*) FROM users",
            "SELECT * FROM secrets",
            "INSERT INTO events (what) VALUES ('one'); DELETE FROM users",
            "INSERT INTO events (what) VALUES ('two')",
        ],
    );
    let all = text(&out);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(&lines[..4], ["ada", "brian", "cleo", "3"], "{all}");
    assert!(
        all.contains("ERROR:  42501: sluice: insert not permitted by policy"),
        "{all}"
    );
    assert!(
        all.contains("42501: sluice: delete not permitted by policy"),
        "{all}"
    );
    assert!(
        all.contains("42501: sluice: select blocked by deny rule"),
        "{all}"
    );
    assert!(started.elapsed() < Duration::from_secs(20), "{all}");
    // Nothing denied ran; the multi-statement string ran nothing at all.
    assert_eq!(db.count("users"), 3);
    let events = db.pg.psql(
        "app",
        "SELECT string_agg(what, ',' ORDER BY id) FROM events",
    );
    assert_eq!(events, "two", "the denied string's INSERT never ran");
    // Events: each denial, with the statement kind and tables, never a value.
    let denials: Vec<serde_json::Value> = sluice
        .events()
        .into_iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("POSTGRES deny"))
        })
        .collect();
    assert!(denials.len() >= 4, "{denials:#?}");
    assert!(denials.iter().any(|e| e["unmapped"]["processor.summary"]
        .as_str()
        .is_some_and(|s| s.contains("statement=delete") && s.contains("public.users"))));
    let audit = std::fs::read_to_string(&sluice.audit).unwrap_or_default();
    for haystack in [&audit, &sluice.stderr(), &all] {
        assert!(!haystack.contains(AGENT_SECRET), "secret leaked");
        assert!(!haystack.contains("mallory"), "values stay out of events");
    }
}

/// psycopg (libpq 18, extended protocol): parameters, prepared statements,
/// a pipeline with a denied statement in the middle, COPY FROM STDIN
/// allowed and denied, the md5 user; then a placeholder that is not bound,
/// and audit mode, which forwards and logs.
#[test]
fn psycopg_extended_protocol_pipeline_copy_and_md5() {
    let Some(db) = db("pg-psycopg") else { return };
    let sluice = db.serve("enforce");
    let fwd = Forwarder::start(sluice.addr);
    let script = r#"
import sys, psycopg
from psycopg import errors
dsn = sys.argv[1]
with psycopg.connect(dsn, autocommit=True) as c:
    print("select=" + c.execute("SELECT name FROM users WHERE id = %s", (1,)).fetchone()[0])
    try:
        c.execute("INSERT INTO users (id, name) VALUES (%s, %s)", (9, "mallory"))
        print("insert=ok")
    except errors.InsufficientPrivilege as e:
        print("insert=denied " + e.sqlstate)
    print("after=%d" % c.execute("SELECT count(*) FROM users").fetchone()[0])
    for i in range(3):
        c.execute("SELECT name FROM users WHERE id = %s", (i + 1,), prepare=True)
    print("prepared=ok")
    try:
        with c.pipeline():
            c.execute("SELECT count(*) FROM users")
            c.execute("DELETE FROM users WHERE id = %s", (1,))
            c.execute("INSERT INTO events (what) VALUES (%s)", ("after-denied",))
        print("pipeline=ok")
    except errors.InsufficientPrivilege as e:
        print("pipeline=denied " + e.sqlstate)
    print("usable=%d" % c.execute("SELECT count(*) FROM users").fetchone()[0])
    with c.cursor().copy("COPY events (what) FROM STDIN") as cp:
        cp.write_row(("copied",))
    print("copy=ok")
    try:
        with c.cursor().copy("COPY users (id, name) FROM STDIN") as cp:
            cp.write_row((10, "x"))
        print("copyusers=ok")
    except errors.InsufficientPrivilege as e:
        print("copyusers=denied " + e.sqlstate)
    print("end=%d" % c.execute("SELECT count(*) FROM users").fetchone()[0])
"#;
    let run = |dsn: &str| {
        let out = Command::new(sandbox_python())
            .args(["-c", script, dsn])
            .stdin(Stdio::null())
            .output()
            .expect("python");
        text(&out)
    };
    let dsn = format!(
        "host=127.0.0.1 port={} dbname=app connect_timeout=10",
        fwd.port
    );
    let out = run(&format!(
        "{dsn} user=agent password={PLACEHOLDER} sslmode=require"
    ));
    for want in [
        "select=ada",
        "insert=denied 42501",
        "after=3",
        "prepared=ok",
        "pipeline=denied 42501",
        "usable=3",
        "copy=ok",
        "copyusers=denied 42501",
        "end=3",
    ] {
        assert!(out.lines().any(|l| l == want), "{want}: {out}");
    }
    assert_eq!(db.count("users"), 3);
    let events = db.pg.psql(
        "app",
        "SELECT string_agg(what, ',' ORDER BY id) FROM events",
    );
    assert_eq!(
        events, "copied",
        "nothing after the denied statement in the pipeline ran"
    );

    // md5, plaintext to sluice and upstream.
    let out = run(&format!(
        "{dsn} user=md5user password={MD5_PLACEHOLDER} sslmode=disable"
    ));
    assert!(out.lines().any(|l| l == "select=ada"), "md5: {out}");
    assert!(
        out.lines().any(|l| l == "insert=denied 42501"),
        "md5: {out}"
    );

    // A placeholder sluice does not know: refused before the upstream sees a password.
    let out = run(&format!(
        "{dsn} user=agent password=sluice:resolve:env:NOPE sslmode=disable"
    ));
    assert!(out.contains("sluice: password refused"), "{out}");
    let audit = std::fs::read_to_string(&sluice.audit).unwrap_or_default();
    assert!(!audit.contains(AGENT_SECRET) && !audit.contains(MD5_SECRET));
    drop(fwd);
    drop(sluice);

    // Audit mode: the same denied statement is forwarded, and logged.
    let dir2 = TempDir::new("pg-audit");
    let host = format!("db.demo.internal={}", db.pg.host);
    let ca = db.pki.ca.display().to_string();
    let audit_sluice = Sluice::start_with_env(
        &dir2,
        &endpoint_only_policy("audit"),
        &[
            "--identity",
            "endpoint-only",
            "--add-host",
            &host,
            "--upstream-ca",
            &ca,
        ],
        &SECRETS_ENV,
    );
    let fwd = Forwarder::start(audit_sluice.addr);
    let conninfo = format!(
        "host=127.0.0.1 port={} user=agent dbname=app sslmode=disable",
        fwd.port
    );
    let out = psql(
        &db.pg,
        &conninfo,
        PLACEHOLDER,
        &["INSERT INTO users VALUES (4, 'dora')"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(db.count("users"), 4, "audit mode forwards");
    let logged = audit_sluice.wait_event("POSTGRES audit");
    assert_eq!(logged["disposition"], "Allowed", "{logged:#}");
    assert!(
        logged["unmapped"]["processor.summary"]
            .as_str()
            .is_some_and(|d| d.contains("statement=insert")),
        "{logged:#}"
    );
    // Unparseable text is refused even in audit mode.
    let out = psql(&db.pg, &conninfo, PLACEHOLDER, &["SELEC * FROM users"]);
    assert!(
        text(&out).contains("42501: sluice: statement could not be parsed"),
        "{}",
        text(&out)
    );
}

// === raw protocol ===

fn read_msg(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).ok()?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0u8; len.checked_sub(4)?];
    s.read_exact(&mut body).ok()?;
    Some((head[0], body))
}

fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = (3u32 << 16).to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut m = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    m.extend(body);
    m
}

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend(((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// The rest of what the peer sends until it closes, as (tag, body) pairs.
fn drain(s: &mut TcpStream) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(m) = read_msg(s) {
        out.push(m);
        if out.len() > 64 {
            break;
        }
    }
    out
}

fn fatal_code(msgs: &[(u8, Vec<u8>)]) -> String {
    msgs.iter()
        .find(|(t, _)| *t == b'E')
        .and_then(|(_, b)| {
            b.split(|&c| c == 0).find_map(|f| {
                f.strip_prefix(b"C")
                    .map(|c| String::from_utf8_lossy(c).into_owned())
            })
        })
        .unwrap_or_default()
}

/// An authenticated raw session (no TLS) through the forwarder.
fn raw_session(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(patience())).unwrap();
    s.write_all(&startup(&[("user", "agent"), ("database", "app")]))
        .unwrap();
    let (tag, body) = read_msg(&mut s).expect("password request");
    assert_eq!((tag, body.as_slice()), (b'R', &3u32.to_be_bytes()[..]));
    let mut pw = PLACEHOLDER.as_bytes().to_vec();
    pw.push(0);
    s.write_all(&msg(b'p', &pw)).unwrap();
    loop {
        let (tag, _) = read_msg(&mut s).expect("startup answers");
        if tag == b'Z' {
            return s;
        }
    }
}

/// Malformed startup packets and messages are refused with a FATAL
/// `ErrorResponse` and the connection closed; a denied simple query in a
/// pipelined batch is answered in order and the batch stays in step.
#[test]
fn malformed_messages_are_refused_and_pipelines_stay_in_step() {
    let Some(db) = db("pg-raw") else { return };
    let sluice = db.serve("enforce");
    let fwd = Forwarder::start(sluice.addr);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("length below the minimum", vec![0, 0, 0, 3, 0, 3, 0, 0]),
        ("protocol 2", {
            let mut m = startup(&[("user", "agent")]);
            m[4..8].copy_from_slice(&(2u32 << 16).to_be_bytes());
            m
        }),
        ("unterminated parameters", {
            let mut m = startup(&[("user", "agent")]);
            m.truncate(m.len() - 1);
            let len = m.len() as u32;
            m[..4].copy_from_slice(&len.to_be_bytes());
            m
        }),
        (
            "search_path at startup",
            startup(&[("user", "agent"), ("search_path", "private")]),
        ),
        (
            "replication",
            startup(&[("user", "agent"), ("replication", "database")]),
        ),
    ];
    for (what, bytes) in cases {
        let mut s = TcpStream::connect(("127.0.0.1", fwd.port)).unwrap();
        s.set_read_timeout(Some(patience())).unwrap();
        s.write_all(&bytes).unwrap();
        let got = drain(&mut s);
        let code = fatal_code(&got);
        assert!(code == "08P01" || code == "42501", "{what}: {got:?}");
    }
    // After authentication: a query without its terminator, an unknown type.
    for bad in [msg(b'Q', b"SELECT 1"), msg(b'!', b"")] {
        let mut s = raw_session(fwd.port);
        s.write_all(&bad).unwrap();
        assert_eq!(fatal_code(&drain(&mut s)), "08P01");
    }
    // Three pipelined simple queries, the middle one denied: answers in order.
    let mut s = raw_session(fwd.port);
    let mut batch = Vec::new();
    for q in [
        "SELECT name FROM users WHERE id = 1",
        "DELETE FROM users",
        "SELECT count(*) FROM users",
    ] {
        let mut b = q.as_bytes().to_vec();
        b.push(0);
        batch.extend(msg(b'Q', &b));
    }
    s.write_all(&batch).unwrap();
    let mut tags = Vec::new();
    let mut errors = Vec::new();
    let mut ready = 0;
    while ready < 3 {
        let (tag, body) = read_msg(&mut s).expect("answers");
        tags.push(tag as char);
        if tag == b'E' {
            errors.push(String::from_utf8_lossy(&body).into_owned());
        }
        if tag == b'Z' {
            ready += 1;
        }
    }
    let tags: String = tags.into_iter().collect();
    assert_eq!(tags, "TDCZEZTDCZ", "row, error, row, in order");
    assert!(
        errors[0].contains("42501") && errors[0].contains("sluice: delete"),
        "{errors:?}"
    );
    assert_eq!(db.count("users"), 3);
}

/// Inside `sluice run --transparent all`, psql and psycopg reach the
/// database by name with no proxy settings, the placeholder password
/// works, and the same rules hold.
#[test]
fn psql_and_psycopg_by_name_inside_sluice_run() {
    let Some(db) = db("pg-run") else { return };
    let python = sandbox_python();
    let psql_bin = db.pg.bin.join("psql");
    let py_file = db.dir.path("client.py");
    std::fs::write(
        &py_file,
        "import sys, psycopg\n\
         from psycopg import errors\n\
         with psycopg.connect(sys.argv[1], autocommit=True) as c:\n    \
             print('py_select=' + c.execute('SELECT name FROM users WHERE id = %s', (3,)).fetchone()[0])\n    \
             try:\n        \
                 c.execute('UPDATE users SET name = %s', ('x',)); print('py_update=ok')\n    \
             except errors.InsufficientPrivilege as e:\n        \
                 print('py_update=' + e.sqlstate)\n",
    )
    .unwrap();
    let script = format!(
        "unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy\n\
         export PGPASSWORD='{PLACEHOLDER}' PGCONNECT_TIMEOUT=10\n\
         c='host=db.demo.internal port=5432 user=agent dbname=app'\n\
         echo select=$({psql} -X -A -t \"$c\" -c 'SELECT name FROM users WHERE id = 2' 2>&1)\n\
         echo delete=$({psql} -X -A -t -v VERBOSITY=verbose \"$c\" -c 'DELETE FROM users' 2>&1 | grep -o '42501: sluice: delete')\n\
         {python} {py_file} \"$c password=$PGPASSWORD\"\n",
        psql = psql_bin.display(),
        python = python,
        py_file = py_file.display(),
    );
    let host = format!("db.demo.internal={}", db.pg.host);
    let ca = db.pki.ca.display().to_string();
    let run_dir = TempDir::new("pg-run-sluice");
    let out = sluice_run(
        &run_dir,
        &policy("enforce"),
        &[
            "--transparent",
            "all",
            "--add-host",
            &host,
            "--upstream-ca",
            &ca,
        ],
        &script,
    )
    .envs(SECRETS_ENV)
    .output()
    .expect("sluice run");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let r = RunOutcome {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        netns: stderr
            .split("in namespace ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_default()
            .to_owned(),
        stderr,
        events: sluice_test_support::recorded(&run_dir.path("audit.jsonl")),
    };
    let out = format!("{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.status.code(), Some(0), "{out}");
    assert_eq!(r.value("select"), "brian", "{out}");
    assert_eq!(r.value("delete"), "42501: sluice: delete", "{out}");
    assert_eq!(r.value("py_select"), "cleo", "{out}");
    assert_eq!(r.value("py_update"), "42501", "{out}");
    assert_eq!(db.count("users"), 3);
    assert_eq!(
        db.pg
            .psql("app", "SELECT count(*) FROM users WHERE name = 'x'"),
        "0"
    );
    assert!(!out.contains(AGENT_SECRET));
    let audit = std::fs::read_to_string(run_dir.path("audit.jsonl")).unwrap_or_default();
    assert!(!audit.contains(AGENT_SECRET));
    assert!(audit.contains("POSTGRES deny"), "{audit}");
    assert_cleaned_up(&r.netns);
}

/// A reload that no longer allows the endpoint ends open sessions (FATAL
/// `57P01`).
#[test]
fn reload_revokes_open_sessions() {
    use std::io::{BufRead, BufReader};
    let Some(db) = db("pg-reload") else { return };
    let sluice = db.serve("enforce");
    let fwd = Forwarder::start(sluice.addr);
    let script = r#"
import sys, psycopg
c = psycopg.connect(sys.argv[1], autocommit=True)
print("first=" + c.execute("SELECT name FROM users WHERE id = 1").fetchone()[0], flush=True)
sys.stdin.readline()
try:
    c.execute("SELECT name FROM users WHERE id = 1")
    print("second=ok", flush=True)
except psycopg.OperationalError as e:
    print("second=closed " + (e.sqlstate or ""), flush=True)
"#;
    let dsn = format!(
        "host=127.0.0.1 port={} dbname=app user=agent password={PLACEHOLDER} sslmode=disable",
        fwd.port
    );
    let mut child = Command::new(sandbox_python())
        .args(["-c", script, &dsn])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("first line");
    assert_eq!(line.trim(), "first=ada");
    sluice.replace_policy(
        &endpoint_only_policy("enforce").replace("db.demo.internal", "other.demo.internal"),
        2,
    );
    sluice.wait_event("policy no longer allows this session");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .unwrap();
    line.clear();
    out.read_line(&mut line).expect("second line");
    let _ = child.wait();
    assert!(line.starts_with("second=closed"), "{line}");
}
