//! HTTP/2 and gRPC through inspected TLS tunnels (issue 20, ARCHITECTURE
//! §6.6): curl `--http2` with allowed and denied streams on one connection
//! to an HTTP/1.1-only upstream, a Python `grpcio` client and server (unary,
//! server and bidi streaming, deny by method, metadata credential
//! injection), and rapid-reset and CONTINUATION floods handled with bounded
//! memory.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::{sluice_cmd, Sluice};
use sluice_test_support::{recorded, test_pki, Netns, Python, TempDir};

const TOKEN: &str = "grpc-s3cr3t-77e1";

fn policy() -> String {
    r#"version: 1
network_policies:
  rest:
    endpoints:
      - host: rest.test
        port: 8443
        protocol: rest
        enforcement: enforce
        rules:
          - allow: { method: GET, path: "/allowed/**" }
          - allow: { method: POST, path: "/upload" }
  greeter:
    endpoints:
      - host: grpc.test
        port: 9443
        protocol: grpc
        enforcement: enforce
        rules:
          - allow: { method: "helloworld.Greeter/*" }
          - allow: { method: "admin.*/*" }
        deny_rules:
          - { method: "admin.*/Delete*" }
providers:
  grpc:
    credentials:
      GRPC_TOKEN: { env: E2E_GRPC_TOKEN }
    endpoints:
      - { host: grpc.test, port: 9443 }
"#
    .to_owned()
}

struct Setup {
    sluice: Sluice,
    _ns: Netns,
    dir: TempDir,
    /// The sandbox CA (PEM).
    ca: PathBuf,
}

fn setup(tag: &str) -> Setup {
    let dir = TempDir::new(tag);
    let ns = Netns::new();
    let pki = test_pki(&dir, "upstream", &["rest.test", "grpc.test"]);
    ns.start_tls_upstream(8443, &dir.path("rest.jsonl"), &pki.cert, &pki.key);
    let ns2 = ns.ns_ip.clone();
    ns.start_tls_server(
        "grpc_server.py",
        9443,
        &dir.path("grpc.jsonl"),
        &pki.cert,
        &pki.key,
    );
    let args: Vec<String> = vec![
        "--identity".into(),
        "endpoint-only".into(),
        "--upstream-ca".into(),
        pki.ca.display().to_string(),
        "--add-host".into(),
        format!("rest.test={ns2}"),
        "--add-host".into(),
        format!("grpc.test={ns2}"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sluice = Sluice::start_with_env(&dir, &policy(), &args, &[("E2E_GRPC_TOKEN", TOKEN)]);
    let state = dir.path("state");
    let ca = dir.path("sluice-ca.pem");
    std::fs::write(
        &ca,
        sluice_cmd(&["ca", "show", "--state-dir", state.to_str().unwrap()]),
    )
    .unwrap();
    Setup {
        sluice,
        _ns: ns,
        dir,
        ca,
    }
}

fn curl_h2(s: &Setup, args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--http2", "--max-time", "20", "-x"])
        .arg(s.sluice.proxy_url())
        .arg("--cacert")
        .arg(&s.ca)
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl failed: {} {text}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn curl_http2_allowed_and_denied_streams_on_one_connection() {
    let s = setup("h2-curl");
    let url = "https://rest.test:8443";
    let w = "%{http_code} %{http_version} %{num_connects}\\n";
    // Sequential transfers reuse the connection (num_connects 0 after the first).
    let out = curl_h2(
        &s,
        &[
            "-w",
            w,
            "-o",
            "/dev/null",
            &format!("{url}/allowed/a"),
            "-w",
            w,
            "-o",
            "/dev/null",
            &format!("{url}/denied/b"),
            "-w",
            w,
            "-o",
            "/dev/null",
            &format!("{url}/allowed/c?q=1"),
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        ["200 2 1", "403 2 0", "200 2 0"],
        "h2 to the client, one connection, the denied stream alone refused"
    );
    // A request body from an h2 client to the HTTP/1.1 upstream.
    let out = curl_h2(
        &s,
        &[
            "-w",
            w,
            "-o",
            "/dev/null",
            "-d",
            "payload-through-h2",
            &format!("{url}/upload"),
        ],
    );
    assert_eq!(out.trim(), "200 2 1");
    // Concurrent streams on one connection (--parallel multiplexes).
    let mut args = vec!["-Z", "--parallel-max", "20"];
    let urls: Vec<String> = (0..20)
        .map(|i| {
            if i % 4 == 0 {
                format!("{url}/denied/{i}")
            } else {
                format!("{url}/allowed/{i}")
            }
        })
        .collect();
    for u in &urls {
        args.extend(["-w", w, "-o", "/dev/null", u.as_str()]);
    }
    let out = curl_h2(&s, &args);
    let mut codes: Vec<&str> = out.lines().map(|l| &l[..5]).collect();
    codes.sort_unstable();
    assert_eq!(codes.iter().filter(|c| **c == "200 2").count(), 15, "{out}");
    assert_eq!(codes.iter().filter(|c| **c == "403 2").count(), 5, "{out}");
    // The denial body is the L7 JSON of HTTP/1.1.
    let body = curl_h2(&s, &[&format!("{url}/denied/x")]);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json denial");
    assert_eq!(v["error"], "policy_denied", "{body}");
    assert_eq!(v["layer"], "l7", "{body}");
    // The HTTP/1.1-only upstream saw every allowed request, no denied one.
    let seen = recorded(&s.dir.path("rest.jsonl"));
    let paths: Vec<&str> = seen.iter().filter_map(|r| r["path"].as_str()).collect();
    assert!(paths.iter().all(|p| !p.starts_with("/denied")), "{paths:?}");
    assert_eq!(
        paths.iter().filter(|p| p.starts_with("/allowed")).count(),
        17,
        "{paths:?}"
    );
    let upload = seen
        .iter()
        .find(|r| r["path"] == "/upload")
        .expect("upload");
    assert_eq!(upload["body"], "payload-through-h2");
    assert_eq!(upload["version"], "HTTP/1.1");
    assert!(seen.iter().all(|r| r["version"] == "HTTP/1.1"));
    s.sluice
        .wait_event("L7_REQUEST deny GET rest.test:8443/denied/b");
}

const GRPC_CLIENT: &str = r#"
import sys, grpc
ca, target = sys.argv[1], sys.argv[2]
creds = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
ch = grpc.secure_channel(target, creds)
ident = lambda b: b
hello = ch.unary_unary("/helloworld.Greeter/SayHello", request_serializer=ident, response_deserializer=ident)
listf = ch.unary_stream("/helloworld.Greeter/ListFeatures", request_serializer=ident, response_deserializer=ident)
chat = ch.stream_stream("/helloworld.Greeter/Chat", request_serializer=ident, response_deserializer=ident)
delete = ch.unary_unary("/admin.Users/Delete", request_serializer=ident, response_deserializer=ident)
meta = [("authorization", "Bearer sluice:resolve:env:GRPC_TOKEN"), ("x-trace", "t1")]
print("unary", hello(b"world", metadata=meta, timeout=20).decode())
print("stream", ",".join(m.decode() for m in listf(b"x", timeout=20)))
print("bidi", ",".join(m.decode() for m in chat(iter([b"a", b"b", b"c"]), timeout=20)))
try:
    delete(b"everyone", timeout=20)
    print("delete", "allowed")
except grpc.RpcError as e:
    print("delete", e.code().name, e.details())
print("after", hello(b"again", timeout=20).decode())
"#;

#[test]
fn grpcio_unary_streaming_deny_and_metadata_credentials() {
    let s = setup("h2-grpc");
    let proxy = s.sluice.proxy_url();
    let lines = Python::inline(GRPC_CLIENT)
        .args([s.ca.to_str().unwrap(), "grpc.test:9443"])
        .env("https_proxy", &proxy)
        .env("grpc_proxy", &proxy)
        .env("no_proxy", "")
        .lines();
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert_eq!(lines[0], "unary hello world");
    assert_eq!(
        lines[1],
        "stream feature-0,feature-1,feature-2,feature-3,feature-4"
    );
    assert_eq!(lines[2], "bidi echo a,echo b,echo c");
    assert!(
        lines[3].starts_with("delete PERMISSION_DENIED sluice: policy_denied: "),
        "{lines:?}"
    );
    assert!(lines[3].contains("admin.Users/Delete"), "{lines:?}");
    assert_eq!(lines[4], "after hello again");
    let seen = recorded(&s.dir.path("grpc.jsonl"));
    let methods: Vec<&str> = seen.iter().filter_map(|r| r["method"].as_str()).collect();
    assert!(!methods.contains(&"admin.Users/Delete"), "{methods:?}");
    assert_eq!(methods.len(), 4, "{methods:?}");
    let first = &seen[0];
    let auth: Vec<&str> = first["metadata"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|kv| kv[0] == "authorization")
        .filter_map(|kv| kv[1].as_str())
        .collect();
    assert_eq!(
        auth,
        [format!("Bearer {TOKEN}")],
        "metadata credential injected"
    );
    s.sluice
        .wait_event("L7_REQUEST deny POST grpc.test:9443/admin.Users/Delete");
    let audit = std::fs::read_to_string(&s.sluice.audit).unwrap();
    assert!(
        !audit.contains(TOKEN),
        "the secret never reaches the audit log"
    );
}

/// Raw HTTP/2 through CONNECT and TLS (ALPN `h2`): `flood` is `reset`
/// (HEADERS then RST_STREAM, 20 000 streams: CVE-2023-44487) or
/// `continuation` (HEADERS without END_HEADERS, then CONTINUATION frames
/// without end, 16 KiB of header block each, up to 64 MiB). Prints how it
/// ended: `goaway`, `closed` (reset/EOF before everything was sent) or `done`.
const FLOOD_CLIENT: &str = r#"
import socket, ssl, struct, sys
proxy_port, ca, flood = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = socket.create_connection(("127.0.0.1", proxy_port), timeout=30)
s.sendall(b"CONNECT rest.test:8443 HTTP/1.1\r\nHost: rest.test:8443\r\n\r\n")
resp = b""
while b"\r\n\r\n" not in resp:
    resp += s.recv(1)
assert b" 200 " in resp, resp
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["h2"])
t = ctx.wrap_socket(s, server_hostname="rest.test")
assert t.selected_alpn_protocol() == "h2", t.selected_alpn_protocol()
def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload
auth = b"rest.test:8443"
# :method GET, :scheme https, :path /denied (literal, name index 4), :authority (literal, name index 1)
block = b"\x82\x87\x04\x07/denied\x01" + bytes([len(auth)]) + auth
t.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0))
ended = "done"
try:
    if flood == "reset":
        batch = b""
        for i in range(20000):
            sid = 2 * i + 1
            batch += frame(1, 0x4, sid, block) + frame(3, 0, sid, struct.pack(">I", 8))
            if len(batch) > 64 * 1024:
                t.sendall(batch)
                batch = b""
        t.sendall(batch)
    else:
        filler = b"\x40\x03x-a" + b"\x7f\x81\x7f" + b"a" * 16254
        assert len(filler) <= 16384
        t.sendall(frame(1, 0x1, 1, block))
        for i in range(4096):
            t.sendall(frame(9, 0, 1, filler))
except (BrokenPipeError, ConnectionResetError, ssl.SSLError, socket.timeout, OSError):
    ended = "closed"
t.settimeout(10)
data = b""
try:
    while True:
        chunk = t.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > 8 * 1024 * 1024:
            break
except Exception:
    pass
# Walk the frames the server sent: any GOAWAY?
i = 0
while i + 9 <= len(data):
    n = int.from_bytes(data[i:i+3], "big")
    if data[i+3] == 7:
        ended = "goaway" if ended == "done" else ended + "+goaway"
        break
    i += 9 + n
print(ended)
"#;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn rapid_reset_and_continuation_floods_stay_bounded() {
    let s = setup("h2-flood");
    let port = s.sluice.addr.port().to_string();
    let before = rss_kib(s.sluice.pid());
    for flood in ["reset", "continuation"] {
        let out = Python::inline(FLOOD_CLIENT)
            .args([port.as_str(), s.ca.to_str().unwrap(), flood])
            .stdout();
        let ended = out.trim();
        eprintln!("{flood} flood: {ended}");
        // The continuation flood must be cut off by sluice (the header list
        // limit); the reset flood either ends in GOAWAY or is absorbed.
        if flood == "continuation" {
            assert!(
                ended.contains("goaway") || ended.contains("closed"),
                "{flood}: {ended}"
            );
        } else if flood == "reset" {
            assert!(ended.contains("goaway"), "{flood}: {ended}");
        } else {
            assert!(!ended.is_empty(), "{flood}: {ended}");
        }
        let grown = rss_kib(s.sluice.pid()).saturating_sub(before);
        assert!(grown < 64 * 1024, "{flood}: sluice grew by {grown} KiB");
    }
    // Nothing of the floods reached the upstream, and sluice still serves.
    let seen = recorded(&s.dir.path("rest.jsonl"));
    assert!(seen.is_empty(), "{seen:?}");
    let w = "%{http_code} %{http_version}";
    let out = curl_h2(
        &s,
        &[
            "-w",
            w,
            "-o",
            "/dev/null",
            "https://rest.test:8443/allowed/after",
        ],
    );
    assert_eq!(out.trim(), "200 2");
}
