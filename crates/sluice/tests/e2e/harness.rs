//! Test harness: a private network namespace with real upstream servers,
//! the real `sluice` binary on port 0, and real clients (curl, Python).
//! Needs root (network namespaces); CI runs as root and never skips.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// How long to wait for asynchronous effects (`SLUICE_TEST_PATIENCE_MS`).
pub(crate) fn patience() -> Duration {
    let ms = std::env::var("SLUICE_TEST_PATIENCE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    Duration::from_millis(ms)
}

/// Retry `cond` until it holds or patience runs out.
#[track_caller]
pub(crate) fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience();
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for: {what}");
}

fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A scratch directory removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("sluice-e2e-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A network namespace joined to the host by a veth pair on a private /30.
pub(crate) struct Netns {
    pub(crate) name: String,
    host_if: String,
    /// The address inside the namespace (where upstreams listen).
    pub(crate) ns_ip: String,
    upstreams: Mutex<Vec<Child>>,
}

impl Netns {
    pub(crate) fn new() -> Self {
        assert!(
            nix_is_root(),
            "the e2e tests create network namespaces and must run as root (CI does)"
        );
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("{:x}{n}", pid % 0xffff);
        let name = format!("slt-{tag}");
        let host_if = format!("slh{tag}");
        let ns_if = format!("sls{tag}");
        let used = String::from_utf8_lossy(&run("ip", &["-4", "addr"]).stdout).into_owned();
        // A /30 in 10.64.0.0/10 whose /24 is unused on this host; the seed
        // differs per process and per namespace, so parallel tests do not collide.
        let seed = pid.wrapping_mul(2_654_435_761).wrapping_add(n * 97);
        let (host_ip, ns_ip) = (0..4096u32)
            .map(|i| {
                let k = seed.wrapping_add(i * 64) % 65536;
                let (b, c, d) = (64 + (k >> 14), (k >> 6) & 255, (k & 63) * 4);
                (
                    format!("10.{b}.{c}.{}", d + 1),
                    format!("10.{b}.{c}.{}", d + 2),
                )
            })
            .find(|(h, _)| {
                let prefix = h.rsplit_once('.').map_or("", |(p, _)| p);
                !used.contains(&format!("{prefix}."))
            })
            .expect("a free private /30");
        run("ip", &["netns", "add", &name]);
        run(
            "ip",
            &[
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ],
        );
        run("ip", &["link", "set", &ns_if, "netns", &name]);
        run(
            "ip",
            &["addr", "add", &format!("{host_ip}/30"), "dev", &host_if],
        );
        run("ip", &["link", "set", &host_if, "up"]);
        run(
            "ip",
            &[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{ns_ip}/30"),
                "dev",
                &ns_if,
            ],
        );
        run("ip", &["-n", &name, "link", "set", &ns_if, "up"]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        Self {
            name,
            host_if,
            ns_ip,
            upstreams: Mutex::new(Vec::new()),
        }
    }

    /// Start the echo upstream on `port` inside the namespace; requests are
    /// recorded in `record` (one JSON line each).
    pub(crate) fn start_upstream(&self, port: u16, record: &Path) {
        self.start_script("upstream.py", port, record, &[]);
    }

    /// The echo upstream over HTTPS with `cert`/`key` (PEM files).
    pub(crate) fn start_tls_upstream(&self, port: u16, record: &Path, cert: &Path, key: &Path) {
        self.start_script("upstream.py", port, record, &[cert, key]);
    }

    /// A raw TCP recorder: every byte read is appended to `record`.
    pub(crate) fn start_recorder(&self, port: u16, record: &Path) {
        self.start_script("recorder.py", port, record, &[]);
    }

    /// Any of the test servers in `tests/e2e/` (`mcp_server.py`, `ws_server.py`, ...).
    pub(crate) fn start_server(&self, script: &str, port: u16, record: &Path) {
        self.start_script(script, port, record, &[]);
    }

    /// A test server from `tests/e2e/` over HTTPS with `cert`/`key` (PEM files).
    pub(crate) fn start_tls_server(
        &self,
        script: &str,
        port: u16,
        record: &Path,
        cert: &Path,
        key: &Path,
    ) {
        self.start_script(script, port, record, &[cert, key]);
    }

    pub(crate) fn start_script(&self, script: &str, port: u16, record: &Path, extra: &[&Path]) {
        let script = format!("{}/tests/e2e/{script}", env!("CARGO_MANIFEST_DIR"));
        let port = port.to_string();
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name,
                "python3",
                &script,
                &self.ns_ip,
                &port,
            ])
            .arg(record)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start upstream");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("upstream stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("upstream ready line");
        assert_eq!(line.trim(), "ready", "upstream {script} did not start");
        self.upstreams.lock().unwrap().push(child);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for mut c in self.upstreams.lock().unwrap().drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status();
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Recorded upstream requests.
pub(crate) fn recorded(record: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A running `sluice serve`, killed on drop.
pub(crate) struct Sluice {
    child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) audit: PathBuf,
    pub(crate) policy: PathBuf,
    stderr: Arc<Mutex<String>>,
}

impl Sluice {
    /// Start `sluice serve` on `policy` with extra arguments.
    pub(crate) fn start(dir: &TempDir, policy_yaml: &str, extra: &[&str]) -> Self {
        Self::start_with_env(dir, policy_yaml, extra, &[])
    }

    /// Start with extra environment variables (secret sources for providers).
    pub(crate) fn start_with_env(
        dir: &TempDir,
        policy_yaml: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let extra = [&["--no-system-dns"][..], extra].concat();
        Self::launch(dir, policy_yaml, &[], "127.0.0.1:0", &extra, env)
    }

    /// Start `sluice serve` on `listen`, optionally through a launcher
    /// `prefix` that execs it (`ip netns exec NAME`, `prlimit --nofile=64`).
    pub(crate) fn launch(
        dir: &TempDir,
        policy_yaml: &str,
        prefix: &[&str],
        listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let policy = dir.path("policy.yaml");
        std::fs::write(&policy, policy_yaml).expect("write policy");
        let audit = dir.path("audit.jsonl");
        let bin = env!("CARGO_BIN_EXE_sluice");
        let mut cmd = match prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .args(["serve", "--listen", listen])
            .arg("--policy")
            .arg(&policy)
            .arg("--audit-log")
            .arg(&audit)
            .arg("--state-dir")
            .arg(dir.path("state"))
            .args(extra)
            .args(if extra.contains(&"--policy-poll-ms") {
                &[][..]
            } else {
                &["--policy-poll-ms", "100"][..]
            })
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sluice");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let mut reader = BufReader::new(child.stderr.take().expect("stderr"));
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(addr);
                }
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let addr = rx
            .recv_timeout(patience())
            .unwrap_or_else(|_| panic!("sluice did not start: {}", stderr.lock().unwrap()));
        Self {
            child,
            addr: addr.parse().expect("listen address"),
            audit,
            policy,
            stderr,
        }
    }

    pub(crate) fn proxy_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every OCSF event written so far.
    pub(crate) fn events(&self) -> Vec<serde_json::Value> {
        recorded(&self.audit)
    }

    /// Wait until an event whose message contains `needle` was written.
    #[track_caller]
    pub(crate) fn wait_event(&self, needle: &str) -> serde_json::Value {
        let mut found = None;
        eventually(&format!("audit event containing {needle:?}"), || {
            found = self
                .events()
                .into_iter()
                .find(|e| e["message"].as_str().is_some_and(|m| m.contains(needle)));
            found.is_some()
        });
        found.unwrap_or_default()
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Replace the policy file (atomically, like an editor) and wait for the reload.
    pub(crate) fn replace_policy(&self, yaml: &str, expect_generation: u64) {
        let tmp = self.policy.with_extension("new");
        std::fs::write(&tmp, yaml).expect("write policy");
        std::fs::rename(&tmp, &self.policy).expect("rename policy");
        self.wait_event(&format!("generation {expect_generation}"));
    }

    /// The sluice process id (launchers exec it, so it is the same process).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub(crate) fn signal(&self, sig: &str) {
        run("kill", &[&format!("-{sig}"), &self.child.id().to_string()]);
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Result of one curl call.
#[derive(Debug)]
pub(crate) struct CurlResult {
    /// Final HTTP status (0 when none).
    pub(crate) status: u16,
    /// Status of the proxy's CONNECT response (0 when not tunnelled).
    pub(crate) connect_status: u16,
    pub(crate) body: String,
}

/// `curl` through the proxy; `tunnel` uses CONNECT (`-p`).
pub(crate) fn curl(proxy: &str, url: &str, tunnel: bool, extra: &[&str]) -> CurlResult {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "--max-time",
        "5",
        "-o",
        "-",
        "-w",
        "\n%{http_code} %{http_connect}",
        "-x",
        proxy,
    ]);
    if tunnel {
        cmd.arg("-p");
    }
    let out = cmd.args(extra).arg(url).output().expect("run curl");
    if !out.status.success() {
        eprintln!(
            "curl {url}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, codes) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut codes = codes.split_whitespace().map(|c| c.parse().unwrap_or(0));
    CurlResult {
        status: codes.next().unwrap_or(0),
        connect_status: codes.next().unwrap_or(0),
        body: body.to_owned(),
    }
}

/// Send raw bytes to the proxy and read until the proxy closes (or `wait`).
pub(crate) fn raw_exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to sluice");
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(request).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse an HTTP response body as JSON (after the blank line).
pub(crate) fn json_body(response: &str) -> serde_json::Value {
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

/// Read one HTTP/1.1 response (status, head, body) framed by Content-Length.
pub(crate) fn read_response(stream: &mut TcpStream) -> Option<(u16, String, String)> {
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => data.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&data).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).ok()?;
    Some((status, head, String::from_utf8_lossy(&body).into_owned()))
}

/// A raw client connection to the proxy.
pub(crate) fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to sluice");
    s.set_read_timeout(Some(patience())).unwrap();
    s
}

/// A test PKI for upstream TLS: a CA and one leaf for `names`.
pub(crate) struct TestPki {
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

pub(crate) fn test_pki(dir: &TempDir, tag: &str, names: &[&str]) -> TestPki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("e2e test CA {tag}"));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().expect("leaf key");
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let leaf = CertificateParams::new(names)
        .expect("leaf params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf cert");
    let pki = TestPki {
        ca: dir.path(&format!("{tag}-ca.pem")),
        cert: dir.path(&format!("{tag}-cert.pem")),
        key: dir.path(&format!("{tag}-key.pem")),
    };
    std::fs::write(&pki.ca, ca_cert.pem()).unwrap();
    std::fs::write(&pki.cert, leaf.pem()).unwrap();
    std::fs::write(&pki.key, leaf_key.serialize_pem()).unwrap();
    pki
}

/// Run `sluice` with arguments, returning stdout.
pub(crate) fn sluice_cmd(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("run sluice");
    assert!(
        out.status.success(),
        "sluice {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// CONNECT through the proxy (TLS inside when `cafile` is given), send
/// `payload`, and return everything read; `Err` holds a refused CONNECT's answer.
pub(crate) fn tunnel(
    proxy: SocketAddr,
    host: &str,
    port: u16,
    cafile: Option<&Path>,
    payload: &[u8],
) -> Result<String, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/tunnel_client.py");
    let mut cmd = Command::new("python3");
    cmd.args([
        script,
        &proxy.ip().to_string(),
        &proxy.port().to_string(),
        host,
        &port.to_string(),
    ]);
    if let Some(ca) = cafile {
        cmd.arg(ca);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(payload)
        .expect("payload");
    let out = child.wait_with_output().expect("tunnel client");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    match out.status.code() {
        Some(0) => Ok(text),
        Some(3) => Err(text),
        _ => panic!(
            "tunnel client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Runs the MCP SDK client (`mcp_client.py`) against `url` with `env`
/// (proxy, CA bundle) and checks the verdicts every MCP test expects: the
/// tools are listed, `search_web` and `read_file` under `/workspace` are
/// answered, `read_file` of `/etc/shadow` (argument matcher) and
/// `execute_code` (deny rule) are refused, and only the two allowed calls
/// reached the server that records to `record`.
pub(crate) fn mcp_sdk_calls_are_enforced(url: &str, env: &[(&str, &str)], record: &Path) {
    let script = format!("{}/tests/e2e/mcp_client.py", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(script)
        .arg(url)
        .envs(env.iter().copied())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let context = format!("{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(lines.len(), 5, "{context}");
    assert_eq!(
        lines[0], "tools ok execute_code,read_file,search_web",
        "{context}"
    );
    assert_eq!(lines[1], "search_web ok results for rust", "{context}");
    assert_eq!(
        lines[2], "read_file ok contents of /workspace/a.txt",
        "{context}"
    );
    assert!(lines[3].starts_with("read_file refused"), "{context}");
    assert!(lines[4].starts_with("execute_code refused"), "{context}");
    let calls: Vec<String> = recorded(record)
        .iter()
        .map(|c| c["tool"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        calls,
        ["search_web", "read_file"],
        "denied tool calls never reach the MCP server"
    );
}
