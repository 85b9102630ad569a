//! Binary identity: `binaries` globs against the real client process.

use crate::adapters::{add_hosts, with_upstream};
use crate::harness::{curl, Sluice};
use sluice_test_support::{recorded, Netns, Python, TempDir};

const CURL_ONLY: &str = r#"version: 1
network_policies:
  curl_only:
    endpoints:
      - { host: exact.test, port: 8080 }
    binaries:
      - { path: /usr/bin/curl }
"#;

/// The `binaries` block of [`CURL_ONLY`].
const BINARIES: &str = "    binaries:\n      - { path: /usr/bin/curl }\n";

/// Python (a real second binary) making a CONNECT and a forward request.
fn python_requests(proxy: &str) -> (String, String) {
    let script = r#"
import re, socket, sys, requests
proxy = sys.argv[1]
host, port = proxy.split("//")[1].split(":")
s = socket.create_connection((host, int(port)), timeout=5)
s.sendall(b"CONNECT exact.test:8080 HTTP/1.1\r\nHost: exact.test:8080\r\n\r\n")
data = b""
while b"\r\n\r\n" not in data:
    data += s.recv(4096)
head, _, body = data.partition(b"\r\n\r\n")
m = re.search(rb"Content-Length: (\d+)", head)
while m and len(body) < int(m.group(1)):
    body += s.recv(4096)
s.close()
print((head + b" " + body).decode().replace("\r\n", " "))
r = requests.get("http://exact.test:8080/from-python", proxies={"http": proxy}, timeout=5)
print(r.status_code, r.text)
"#;
    let text = Python::inline(script).arg(proxy).stdout();
    let mut lines = text.lines();
    (
        lines.next().unwrap_or_default().to_owned(),
        lines.next().unwrap_or_default().to_owned(),
    )
}

fn python_exe() -> String {
    Python::inline("import os; print(os.path.realpath('/proc/self/exe'))")
        .stdout()
        .trim()
        .to_owned()
}

#[test]
fn binaries_allow_curl_and_deny_python_naming_it() {
    let up = with_upstream("identity", CURL_ONLY);
    let (record, sluice) = (&up.record, &up.sluice);

    let r = curl(
        &sluice.proxy_url(),
        "http://exact.test:8080/from-curl",
        false,
        &[],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = curl(
        &sluice.proxy_url(),
        "http://exact.test:8080/from-curl-tunnel",
        true,
        &[],
    );
    assert_eq!(r.status, 200, "{r:?}");

    let (connect, forward) = python_requests(&sluice.proxy_url());
    let exe = python_exe();
    assert!(connect.starts_with("HTTP/1.1 403 "), "{connect}");
    assert!(
        connect.contains(&format!("binary '{exe}' not allowed in policy 'curl_only'")),
        "CONNECT denial names the binary: {connect}"
    );
    assert!(forward.starts_with("403 "), "{forward}");
    let ev = sluice.wait_event("FORWARD denied GET exact.test:8080/from-python");
    assert!(ev["status_detail"].as_str().unwrap().contains(&exe), "{ev}");
    assert_eq!(ev["actor"]["process"]["name"], exe.as_str());

    let paths: Vec<String> = recorded(record)
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(paths, ["/from-curl", "/from-curl-tunnel"]);
}

/// `--identity endpoint-only` cannot enforce `binaries`: a policy with them
/// is refused at start and at reload (located), never loaded and ignored;
/// without them the mode serves every client.
#[test]
fn endpoint_only_mode_refuses_binary_rules() {
    let dir = TempDir::new("endpoint-only");
    let ns = Netns::new();
    let record = dir.path("upstream.jsonl");
    ns.start_upstream(8080, &record);
    let mut args = add_hosts(&ns);
    args.extend(["--identity".to_owned(), "endpoint-only".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let policy = dir.path("refused.yaml");
    std::fs::write(&policy, CURL_ONLY).expect("policy");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--listen", "127.0.0.1:0", "--policy"])
        .arg(&policy)
        .arg("--state-dir")
        .arg(dir.path("state"))
        .args(&args)
        .output()
        .expect("sluice serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let line = binaries_line(CURL_ONLY);
    assert!(
        stderr.contains(&format!(
            "refused.yaml:{line}:5: network_policies.curl_only.binaries: needs process identity, which `sluice serve` cannot enforce (run with `--identity required`, or remove `binaries`)"
        )),
        "{stderr}"
    );
    assert!(std::fs::read_to_string(&record)
        .unwrap_or_default()
        .is_empty());

    let open = CURL_ONLY.replace(BINARIES, "");
    let sluice = Sluice::start(&dir, &open, &args);
    let (connect, forward) = python_requests(&sluice.proxy_url());
    assert!(connect.starts_with("HTTP/1.1 200 "), "{connect}");
    assert!(forward.starts_with("200 "), "{forward}");
    let ev = sluice.wait_event("FORWARD allowed GET exact.test:8080/from-python");
    assert!(
        ev.get("actor").is_none(),
        "identity is intentionally unavailable: {ev}"
    );
    let cfg = sluice.wait_event("Policy loaded");
    assert_eq!(cfg["unmapped"]["identity_mode"], "endpoint-only");
    assert_eq!(cfg["unmapped"]["runtime_mode"], "serve");
    assert!(
        !cfg["unmapped"]["capabilities"]
            .as_array()
            .expect("capabilities")
            .iter()
            .any(|c| c == "process-identity"),
        "{cfg}"
    );

    // A reload that adds `binaries` is refused; the open policy stays.
    std::fs::write(&sluice.policy, CURL_ONLY).expect("policy");
    let rejected = sluice.wait_event("Policy reload rejected");
    assert!(
        rejected["status_detail"]
            .as_str()
            .is_some_and(|d| d.contains("needs process identity")),
        "{rejected}"
    );
    let (connect, _) = python_requests(&sluice.proxy_url());
    assert!(connect.starts_with("HTTP/1.1 200 "), "{connect}");
}

/// The 1-based line of the `binaries:` key in `policy`.
fn binaries_line(policy: &str) -> usize {
    policy
        .lines()
        .position(|l| l.trim_start().starts_with("binaries"))
        .map(|i| i + 1)
        .expect("binaries in the policy")
}

/// `identity.via` of `sluice serve`'s searched lookups: the connect-time eBPF map
/// unless `SLUICE_IDENTITY_BPF=off` is set for the test run (the identity
/// tests run against both paths that way), `None` when the map cannot be
/// loaded here (not root).
fn expected_identity_path() -> Option<&'static str> {
    let off = std::env::var("SLUICE_IDENTITY_BPF").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "off" | "0" | "false" | "no"
        )
    });
    if off {
        return Some("scan");
    }
    if !sluice_test_support::is_root() {
        sluice_test_support::skip_or_fail("the connect-time identity map needs root");
        return None;
    }
    Some("connect-map")
}

/// A client whose socket is shared with a different binary is denied on the
/// connect-time map's path as on the scan's: Python connects, hands the
/// connected socket to a `sleep` it spawns (fork inheritance), then sends its
/// CONNECT. The same script without the child is allowed. The lookups went
/// the expected way (`identity.via` in sluice's debug log).
#[test]
fn a_socket_shared_with_another_binary_is_denied_on_either_path() {
    let python = python_exe();
    let policy = CURL_ONLY.replace("/usr/bin/curl", &python);
    let dir = TempDir::new("identity-shared");
    let ns = Netns::new();
    let record = dir.path("upstream.jsonl");
    ns.start_upstream(8080, &record);
    let args = add_hosts(&ns);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sluice = Sluice::start_with_env(
        &dir,
        &policy,
        &args,
        &[("SLUICE_LOG", "info,sluice_sandbox::identity=debug")],
    );
    let script = r#"
import socket, subprocess, sys
host, port = sys.argv[1].split("//")[1].split(":")
share = sys.argv[2] == "share"
s = socket.create_connection((host, int(port)), timeout=5)
child = None
if share:
    child = subprocess.Popen(["sleep", "5"], pass_fds=[s.fileno()])
s.sendall(b"CONNECT exact.test:8080 HTTP/1.1\r\nHost: exact.test:8080\r\n\r\n")
data = b""
while b"\r\n\r\n" not in data:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print(data.split(b"\r\n")[0].decode() + " | " + data.decode(errors="replace").replace("\r\n", " "))
if child:
    child.kill()
    child.wait()
"#;
    let alone = Python::inline(script)
        .args([sluice.proxy_url().as_str(), "alone"])
        .stdout();
    assert!(alone.starts_with("HTTP/1.1 200 "), "{alone}");
    let shared = Python::inline(script)
        .args([sluice.proxy_url().as_str(), "share"])
        .stdout();
    assert!(shared.starts_with("HTTP/1.1 403 "), "{shared}");
    let ev = sluice.wait_event("CONNECT denied");
    assert!(
        ev["status_detail"]
            .as_str()
            .is_some_and(|d| d.contains("ambiguous shared socket ownership")),
        "{ev}"
    );
    let Some(via) = expected_identity_path() else {
        return;
    };
    let log = sluice.stderr();
    let decided: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Socket owners found"))
        .collect();
    assert_eq!(decided.len(), 2, "one lookup per connection: {log}");
    // Alone, the client may also be proven the socket's sole holder (no
    // process forked on the host since it created the socket) and its
    // identity cached; shared, the fork after the socket was created rules
    // both out: the owners were searched.
    let alone_via = |line: &str| {
        via == "connect-map"
            && ["sole-holder", "cached"]
                .iter()
                .any(|v| line.contains(&format!("identity.via={v}")))
    };
    assert!(
        decided[0].contains(&format!("identity.via={via}")) || alone_via(decided[0]),
        "{}",
        decided[0]
    );
    assert!(
        decided[1].contains(&format!("identity.via={via}")),
        "{}",
        decided[1]
    );
    if via == "connect-map" {
        assert!(log.contains("connect-time identity map loaded"), "{log}");
    }
}
