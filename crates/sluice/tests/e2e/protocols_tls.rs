//! MCP and WebSocket with TLS terminated inside CONNECT (HTTPS/wss upstreams
//! the proxy re-encrypts to), WebSocket upgrades through the forward proxy,
//! and GraphQL over WebSocket, with real clients: the Python MCP SDK, Python
//! `websockets`, and a raw socket client.

use std::path::{Path, PathBuf};

use crate::harness::{mcp_sdk_calls_are_enforced, sluice_cmd, Sluice};
use sluice_test_support::{recorded, test_pki, Netns, Python, TempDir};

const WS_RULES: &str = r#"
        protocol: websocket
        enforcement: enforce
        rules:
          - allow: { method: GET, path: "/**" }
          - allow: { method: WEBSOCKET_TEXT, path: "/**" }
          - allow: { method: WEBSOCKET_BINARY, path: /chat }
        deny_rules:
          - { method: WEBSOCKET_TEXT, path: /forbidden }"#;

const GQL_WS_RULES: &str = r#"
        protocol: websocket
        enforcement: enforce
        rules:
          - allow: { method: GET, path: "/**" }
          - allow: { method: WEBSOCKET_TEXT, path: "/graphql" }
          - allow: { operation_type: subscription, fields: [allowedFeed] }
        deny_rules:
          - { operation_type: subscription, fields: [secretFeed] }"#;

fn policy() -> String {
    format!(
        r#"version: 1
network_policies:
  tls:
    endpoints:
      - host: mcps.test
        port: 8443
        path: /mcp
        protocol: mcp
        enforcement: enforce
        rules:
          - allow: {{ method: initialize }}
          - allow: {{ method: notifications/initialized }}
          - allow: {{ method: tools/list }}
          - allow: {{ method: tools/call, tool: search_web }}
          - allow: {{ method: tools/call, tool: read_file, arguments: {{ path: {{ glob: "/workspace/**" }} }} }}
        deny_rules:
          - {{ method: tools/call, tool: execute_code }}
      - host: wss.test
        port: 8766{WS_RULES}
      - host: ws.test
        port: 8765{WS_RULES}
      - host: gql.test
        port: 8765{GQL_WS_RULES}
      - host: gqls.test
        port: 8766{GQL_WS_RULES}
"#,
    )
}

struct Setup {
    dir: TempDir,
    _ns: Netns,
    sluice: Sluice,
    bundle: PathBuf,
}

fn setup(tag: &str) -> Setup {
    let dir = TempDir::new(tag);
    let ns = Netns::new();
    let pki = test_pki(&dir, "upstream", &["mcps.test", "wss.test", "gqls.test"]);
    for (script, port, record) in [
        ("mcp_server.py", 8443, "mcp.jsonl"),
        ("ws_server.py", 8766, "wss.jsonl"),
    ] {
        ns.start_tls_server(script, port, &dir.path(record), &pki.cert, &pki.key);
    }
    ns.start_server("ws_server.py", 8765, &dir.path("ws.jsonl"));
    let mut args: Vec<String> = vec![
        "--identity".into(),
        "endpoint-only".into(),
        "--upstream-ca".into(),
        pki.ca.display().to_string(),
    ];
    for name in ["mcps.test", "wss.test", "ws.test", "gql.test", "gqls.test"] {
        args.extend(["--add-host".to_owned(), format!("{name}={}", ns.ns_ip)]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sluice = Sluice::start(&dir, &policy(), &args);
    let bundle = dir.path("bundle.pem");
    let state = dir.path("state");
    std::fs::write(
        &bundle,
        sluice_cmd(&[
            "ca",
            "show",
            "--bundle",
            "--state-dir",
            state.to_str().unwrap(),
        ]),
    )
    .unwrap();
    Setup {
        dir,
        _ns: ns,
        sluice,
        bundle,
    }
}

fn ws_messages(record: &Path) -> Vec<(String, String)> {
    recorded(record)
        .iter()
        .map(|m| {
            (
                m["path"].as_str().unwrap_or_default().to_owned(),
                m["data"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn mcp_over_https_with_tls_terminated() {
    let s = setup("ptls-mcp");
    let proxy = s.sluice.proxy_url();
    mcp_sdk_calls_are_enforced(
        "https://mcps.test:8443/mcp",
        &[
            ("HTTPS_PROXY", &proxy),
            ("https_proxy", &proxy),
            ("SSL_CERT_FILE", s.bundle.to_str().unwrap()),
        ],
        &s.dir.path("mcp.jsonl"),
    );
    s.sluice
        .wait_event("L7_REQUEST deny POST mcps.test:8443/mcp");
}

#[test]
fn websocket_over_tls_is_inspected() {
    let s = setup("ptls-wss");
    let script = r#"
import asyncio, ssl, sys
from websockets.asyncio.client import connect

async def main(proxy, bundle):
    ctx = ssl.create_default_context(cafile=bundle)
    async with connect("wss://wss.test:8766/chat", proxy=proxy, ssl=ctx) as ws:
        print("ext", ws.response.headers.get("Sec-WebSocket-Extensions", ""))
        await ws.send("hello")
        print("echo", await ws.recv())
        big = "compress me " * 10000
        await ws.send(big)
        print("big", (await ws.recv()) == big)
        await ws.send(["frag-", "mented-", "message"])
        print("echo", await ws.recv())
        await ws.send(b"\x00\x01binary")
        print("binary", (await ws.recv()).hex())
    try:
        async with connect("wss://wss.test:8766/forbidden", proxy=proxy, ssl=ctx) as ws:
            await ws.send("not allowed here")
            await ws.recv()
            print("forbidden", "echoed")
    except Exception as e:
        print("forbidden", "closed", getattr(getattr(e, "rcvd", None), "code", None))
    try:
        async with connect("wss://wss.test:8766/forbidden", proxy=proxy, ssl=ctx) as ws:
            await ws.send(b"\x00binary write")
            await ws.recv()
            print("forbidden-binary", "echoed")
    except Exception as e:
        print("forbidden-binary", "closed", getattr(getattr(e, "rcvd", None), "code", None))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"#;
    let lines = Python::inline(script)
        .args([s.sluice.proxy_url().as_str(), s.bundle.to_str().unwrap()])
        .lines();
    assert!(
        lines[0].starts_with("ext permessage-deflate"),
        "the 101 negotiated compression: {lines:?}"
    );
    assert_eq!(lines[1], "echo hello", "{lines:?}");
    assert_eq!(lines[2], "big True", "{lines:?}");
    assert_eq!(lines[3], "echo frag-mented-message", "{lines:?}");
    assert_eq!(lines[4], "binary 000162696e617279", "{lines:?}");
    assert_eq!(lines[5], "forbidden closed 1008", "{lines:?}");
    assert_eq!(lines[6], "forbidden-binary closed 1008", "{lines:?}");
    let seen = ws_messages(&s.dir.path("wss.jsonl"));
    let data: Vec<&str> = seen.iter().map(|(_, d)| d.as_str()).collect();
    assert_eq!(data.len(), 4, "{seen:?}");
    assert_eq!(data[0], "hello");
    assert_eq!(data[1], "compress me ".repeat(10000));
    assert_eq!(data[2], "frag-mented-message");
    assert_eq!(data[3], "000162696e617279");
    s.sluice
        .wait_event("deny WEBSOCKET_TEXT wss.test:8766/forbidden");
    s.sluice
        .wait_event("deny WEBSOCKET_BINARY wss.test:8766/forbidden");
}

/// A raw WebSocket client speaking to the forward proxy (absolute-form GET).
const RAW_WS: &str = r#"
import base64, hashlib, os, socket, struct, sys

host, port, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise EOFError("closed after %d of %d bytes" % (len(out), n))
        out += chunk
    return out

def read_frame(s):
    b0, b1 = recv_exact(s, 2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", recv_exact(s, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", recv_exact(s, 8))[0]
    mask = recv_exact(s, 4) if b1 & 0x80 else None
    data = recv_exact(s, n)
    if mask:
        data = bytes(c ^ mask[i % 4] for i, c in enumerate(data))
    return b0 & 0x0F, data

def send_frame(s, opcode, data):
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    if len(data) < 126:
        head += bytes([0x80 | len(data)])
    else:
        head += bytes([0x80 | 126]) + struct.pack("!H", len(data))
    s.sendall(head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(data)))

def session(path, message, opcode=0x1):
    s = socket.create_connection((host, port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((
        f"GET http://{target}{path} HTTP/1.1\r\n"
        f"Host: {target}\r\n"
        "Connection: Upgrade\r\n"
        "Upgrade: websocket\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += recv_exact(s, 1)
    lines = head.decode().split("\r\n")
    status = lines[0].split()[1]
    want = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
    accept = any(l.lower().startswith("sec-websocket-accept:") and l.split(":", 1)[1].strip() == want for l in lines)
    print(path, "status", status, "accept", accept)
    if status != "101":
        return
    send_frame(s, opcode, message.encode())
    try:
        op, data = read_frame(s)
    except (EOFError, OSError) as e:
        print(path, "eof", type(e).__name__)
        return
    if op in (0x1, 0x2):
        print(path, "echo" if op == 0x1 else "binary-echo", data.decode())
        send_frame(s, 0x8, struct.pack("!H", 1000))
        op, data = read_frame(s)
    if op == 0x8:
        print(path, "close", struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None)
    s.close()

session("/chat", "hello via forward proxy")
session("/forbidden", "not allowed here")
session("/chat", "binary via forward proxy", 0x2)
session("/forbidden", "binary not allowed here", 0x2)
"#;

#[test]
fn websocket_upgrade_through_the_forward_proxy() {
    let s = setup("ptls-fwd");
    let addr = s.sluice.addr;
    let lines = Python::inline(RAW_WS)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg("ws.test:8765")
        .lines();
    assert_eq!(
        lines,
        [
            "/chat status 101 accept True",
            "/chat echo hello via forward proxy",
            "/chat close 1000",
            "/forbidden status 101 accept True",
            "/forbidden close 1008",
            "/chat status 101 accept True",
            "/chat binary-echo binary via forward proxy",
            "/chat close 1000",
            "/forbidden status 101 accept True",
            "/forbidden close 1008",
        ]
    );
    let seen = ws_messages(&s.dir.path("ws.jsonl"));
    assert_eq!(
        seen,
        [
            ("/chat".to_owned(), "hello via forward proxy".to_owned()),
            (
                "/chat".to_owned(),
                "binary via forward proxy"
                    .bytes()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            ),
        ],
        "denied messages never reach the upstream"
    );
    s.sluice
        .wait_event("deny WEBSOCKET_TEXT ws.test:8765/forbidden");
    s.sluice
        .wait_event("deny WEBSOCKET_BINARY ws.test:8765/forbidden");
}

#[test]
fn graphql_over_websocket_subscriptions() {
    let s = setup("ptls-gql");
    let script = r#"
import asyncio, json, ssl, sys
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

async def main(proxy, bundle, url):
    ctx = ssl.create_default_context(cafile=bundle) if url.startswith("wss:") else None
    async with connect(url, proxy=proxy, ssl=ctx, subprotocols=["graphql-transport-ws"]) as ws:
        print("subprotocol", ws.subprotocol)
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        print("init", json.loads(await ws.recv())["type"])
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": "subscription { allowedFeed }"}}))
        print("allowed", json.loads(await ws.recv())["payload"]["query"])
        await ws.send(json.dumps({"id": "2", "type": "subscribe", "payload": {"query": "subscription { secretFeed }"}}))
        try:
            await ws.recv()
            print("secret", "echoed")
        except ConnectionClosed as e:
            print("secret", "closed", getattr(e.rcvd, "code", None))
    # A duplicated `type`: a first-key server would run the subscription.
    async with connect(url, proxy=proxy, ssl=ctx, subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send('{"id":"3","type":"subscribe","payload":{"query":"subscription { secretFeed }"},"type":"ping"}')
        try:
            await ws.recv()
            print("duplicate", "echoed")
        except ConnectionClosed as e:
            print("duplicate", "closed", getattr(e.rcvd, "code", None))
    # GraphQL among other offers: the upstream picks (this one GraphQL), so a
    # plain-text reading would let the subscription through; sluice refuses.
    async with connect(url, proxy=proxy, ssl=ctx, subprotocols=["chat", "graphql-transport-ws"]) as ws:
        print("mixed-subprotocol", ws.subprotocol)
        await ws.send(json.dumps({"id": "4", "type": "subscribe", "payload": {"query": "subscription { secretFeed }"}}))
        try:
            await ws.recv()
            print("mixed", "echoed")
        except ConnectionClosed as e:
            print("mixed", "closed", getattr(e.rcvd, "code", None))

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
"#;
    let proxy = s.sluice.proxy_url();
    let bundle = s.bundle.to_str().unwrap();
    for (url, record) in [
        ("ws://gql.test:8765/graphql", "ws.jsonl"),
        ("wss://gqls.test:8766/graphql", "wss.jsonl"),
    ] {
        let lines = Python::inline(script)
            .args([proxy.as_str(), bundle, url])
            .lines();
        assert_eq!(
            lines,
            [
                "subprotocol graphql-transport-ws",
                "init connection_init",
                "allowed subscription { allowedFeed }",
                "secret closed 1008",
                "duplicate closed 1008",
                "mixed-subprotocol graphql-transport-ws",
                "mixed closed 1008",
            ],
            "{url}"
        );
        let seen: Vec<String> = ws_messages(&s.dir.path(record))
            .into_iter()
            .map(|(_, d)| d)
            .collect();
        assert_eq!(seen.len(), 2, "{url}: {seen:?}");
        assert!(seen[0].contains("connection_init"), "{url}: {seen:?}");
        assert!(seen[1].contains("allowedFeed"), "{url}: {seen:?}");
        assert!(
            !seen.iter().any(|m| m.contains("secretFeed")),
            "{url}: the denied subscription never reaches the upstream"
        );
    }
    for host in ["gql.test:8765", "gqls.test:8766"] {
        let e = s
            .sluice
            .wait_event(&format!("deny WEBSOCKET_TEXT {host}/graphql"));
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("blocked by endpoint policy"),
            "{e}"
        );
    }
}
