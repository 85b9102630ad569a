//! The sluice side of the e2e harness: the real `sluice` binary on port 0
//! and the clients that talk to it (curl, raw sockets, Python). Generic
//! fixtures (scratch dirs, network namespaces with upstreams, test PKI,
//! Python runner) are in `sluice-test-support`. Needs root (network
//! namespaces); CI runs as root and never skips.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_test_support::{eventually, patience, recorded, Python, TempDir};

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
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -{sig} {} failed", self.child.id());
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
    let mut client = Python::file("tunnel_client.py")
        .arg(proxy.ip().to_string())
        .arg(proxy.port().to_string())
        .arg(host)
        .arg(port.to_string());
    if let Some(ca) = cafile {
        client = client.arg(ca);
    }
    let out = client.output_with_stdin(payload);
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
    let out = Python::file("mcp_client.py")
        .arg(url)
        .envs(env.iter().copied())
        .output();
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
