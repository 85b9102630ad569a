//! GraphQL, JSON-RPC, MCP and WebSocket on the shared request loop, through
//! both adapters (forward HTTP and CONNECT with TLS terminated), with real
//! clients: Python `requests`, the Python MCP SDK, Python `websockets`.

use crate::harness::{mcp_sdk_calls_are_enforced, sluice_cmd, Sluice};
use sluice_test_support::{recorded, test_pki, Netns, Python, TempDir};

fn policy() -> String {
    let gql = r#"
        protocol: graphql
        enforcement: enforce
        rules:
          - allow: { operation_type: query, fields: [viewer, "repository*"] }
          - allow: { operation_type: mutation, operation_name: "Issue*", fields: [createIssue] }
        deny_rules:
          - { operation_type: mutation, fields: [deleteRepository] }"#;
    let rpc = r#"
        protocol: json-rpc
        enforcement: enforce
        rules: [ { allow: { method: reports.list } }, { allow: { method: reports.search } } ]
        deny_rules: [ { method: reports.delete } ]"#;
    format!(
        r#"version: 1
network_policies:
  api:
    endpoints:
      - host: api.test
        port: 8080
        path: /graphql{gql}
      - host: api.test
        port: 8080
        path: /rpc{rpc}
      - host: apis.test
        port: 8443
        path: /graphql{gql}
      - host: apis.test
        port: 8443
        path: /rpc{rpc}
      - host: mcp.test
        port: 8000
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
      - host: ws.test
        port: 8765
        protocol: websocket
        enforcement: enforce
        rules:
          - allow: {{ method: GET, path: "/**" }}
          - allow: {{ method: WEBSOCKET_TEXT, path: "/**" }}
          - allow: {{ method: WEBSOCKET_BINARY, path: /chat }}
        deny_rules:
          - {{ method: WEBSOCKET_TEXT, path: /forbidden }}
      - {{ host: wsro.test, port: 8765, protocol: websocket, enforcement: enforce, access: read-only }}
"#,
    )
}

struct Setup {
    dir: TempDir,
    _ns: Netns,
    sluice: Sluice,
    bundle: std::path::PathBuf,
}

fn setup(tag: &str) -> Setup {
    let dir = TempDir::new(tag);
    let ns = Netns::new();
    let pki = test_pki(&dir, "upstream", &["apis.test"]);
    ns.start_upstream(8080, &dir.path("plain.jsonl"));
    ns.start_tls_upstream(8443, &dir.path("tls.jsonl"), &pki.cert, &pki.key);
    ns.start_server("mcp_server.py", 8000, &dir.path("mcp.jsonl"));
    ns.start_server("ws_server.py", 8765, &dir.path("ws.jsonl"));
    let mut args: Vec<String> = vec![
        "--identity".into(),
        "endpoint-only".into(),
        "--upstream-ca".into(),
        pki.ca.display().to_string(),
    ];
    for name in ["api.test", "apis.test", "mcp.test", "ws.test", "wsro.test"] {
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

const POSTS: &str = r#"
import json, sys, requests
proxy, bundle, base, path = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
bodies = json.loads(sys.argv[5])
for body in bodies:
    r = requests.post(base + path, json=body, proxies={"http": proxy, "https": proxy}, verify=bundle, timeout=10)
    detail = ""
    if r.status_code == 403:
        j = r.json()
        detail = j.get("protocol", "") + "|" + j.get("error", "")
    print(r.status_code, detail)
"#;

#[test]
fn graphql_and_jsonrpc_on_both_adapters() {
    let s = setup("proto-gql");
    let proxy = s.sluice.proxy_url();
    let bundle = s.bundle.to_str().unwrap();
    let gql = serde_json::json!([
        {"query": "query { viewer { login } }"},
        {"query": "mutation IssueCreate { createIssue(title: \"x\") { id } }", "operationName": "IssueCreate"},
        {"query": "mutation { deleteRepository(id: 1) }"},
        {"query": "mutation M { x: deleteRepository(id: 1) }"},
        {"query": "mutation M { ...F } fragment F on Mutation { deleteRepository(id: 1) }"},
        [{"query": "query { viewer { login } }"}, {"query": "mutation { deleteRepository(id: 1) }"}],
        {"query": "query { viewer { "},
        {"query": "query { secrets }"},
    ]);
    let want_gql = [
        "200 ",
        "200 ",
        "403 graphql|policy_denied",
        "403 graphql|policy_denied",
        "403 graphql|policy_denied",
        "403 graphql|policy_denied",
        "403 graphql|policy_denied",
        "403 graphql|policy_denied",
    ];
    let rpc = serde_json::json!([
        {"jsonrpc": "2.0", "id": 1, "method": "reports.list"},
        {"jsonrpc": "2.0", "method": "reports.search", "params": {"q": "x"}},
        {"jsonrpc": "2.0", "id": 2, "method": "reports.delete"},
        [{"jsonrpc": "2.0", "id": 3, "method": "reports.list"}, {"jsonrpc": "2.0", "id": 4, "method": "reports.delete"}],
        {"jsonrpc": "2.0", "id": 5, "result": "client-sent response"},
        {"jsonrpc": "2.0", "id": 6, "method": "reports.unknown"},
    ]);
    let want_rpc = [
        "200 ",
        "200 ",
        "403 json-rpc|policy_denied",
        "403 json-rpc|policy_denied",
        "403 json-rpc|policy_denied",
        "403 json-rpc|policy_denied",
    ];
    for base in ["http://api.test:8080", "https://apis.test:8443"] {
        let got = Python::inline(POSTS)
            .args([proxy.as_str(), bundle, base, "/graphql", &gql.to_string()])
            .lines();
        assert_eq!(got, want_gql, "graphql via {base}");
        let got = Python::inline(POSTS)
            .args([proxy.as_str(), bundle, base, "/rpc", &rpc.to_string()])
            .lines();
        assert_eq!(got, want_rpc, "json-rpc via {base}");
    }
    // Only the allowed requests reached the upstreams: 2 GraphQL + 2 JSON-RPC each.
    assert_eq!(recorded(&s.dir.path("plain.jsonl")).len(), 4);
    assert_eq!(recorded(&s.dir.path("tls.jsonl")).len(), 4);
    s.sluice
        .wait_event("FORWARD_L7 deny POST api.test:8080/graphql");
    s.sluice
        .wait_event("L7_REQUEST deny POST apis.test:8443/rpc");
}

#[test]
fn mcp_tools_and_argument_matchers_with_the_sdk_client() {
    let s = setup("proto-mcp");
    let proxy = s.sluice.proxy_url();
    mcp_sdk_calls_are_enforced(
        "http://mcp.test:8000/mcp",
        &[("HTTP_PROXY", &proxy), ("http_proxy", &proxy)],
        &s.dir.path("mcp.jsonl"),
    );
}

#[test]
fn websocket_messages_are_inspected() {
    let s = setup("proto-ws");
    let script = r#"
import asyncio, sys
from websockets.asyncio.client import connect

async def main(proxy):
    async with connect("ws://ws.test:8765/chat", proxy=proxy) as ws:
        await ws.send("hello")
        print("echo", await ws.recv())
        await ws.send(["frag-", "mented-", "message"])
        print("echo", await ws.recv())
        await ws.send(b"\x00\x01binary")
        print("binary", (await ws.recv()).hex())
    try:
        async with connect("ws://ws.test:8765/forbidden", proxy=proxy) as ws:
            await ws.send("not allowed here")
            await ws.recv()
            print("forbidden", "echoed")
    except Exception as e:
        print("forbidden", "closed", getattr(getattr(e, "rcvd", None), "code", None))
    try:
        async with connect("ws://ws.test:8765/chat", proxy=proxy, max_size=None) as ws:
            await ws.send("x" * (5 * 1024 * 1024))
            await ws.recv()
            print("big", "echoed")
    except Exception as e:
        print("big", "closed", getattr(getattr(e, "rcvd", None), "code", None))
    # Binary messages where no rule allows WEBSOCKET_BINARY: the path whose
    # text is denied, and a read-only endpoint (text and binary).
    for url, msg in [("ws://ws.test:8765/forbidden", b"\x00binary-write"),
                     ("ws://wsro.test:8765/feed", b"\x00binary-write"),
                     ("ws://wsro.test:8765/feed", "text-write")]:
        try:
            async with connect(url, proxy=proxy) as ws:
                await ws.send(msg)
                await ws.recv()
                print("refused", "echoed")
        except Exception as e:
            print("refused", "closed", getattr(getattr(e, "rcvd", None), "code", None))

asyncio.run(main(sys.argv[1]))
"#;
    let lines = Python::inline(script).arg(s.sluice.proxy_url()).lines();
    assert_eq!(lines[0], "echo hello");
    assert_eq!(lines[1], "echo frag-mented-message");
    assert_eq!(lines[2], "binary 000162696e617279");
    assert_eq!(lines[3], "forbidden closed 1008");
    assert_eq!(lines[4], "big closed 1009");
    assert_eq!(lines[5..], ["refused closed 1008"; 3], "{lines:?}");
    let seen: Vec<String> = recorded(&s.dir.path("ws.jsonl"))
        .iter()
        .map(|m| m["data"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        seen[..2],
        ["hello".to_owned(), "frag-mented-message".to_owned()]
    );
    assert!(
        !seen.iter().any(|m| m.contains("not allowed")),
        "denied messages never reach the upstream"
    );
    let kinds: Vec<(String, String)> = recorded(&s.dir.path("ws.jsonl"))
        .iter()
        .map(|m| {
            (
                m["kind"].as_str().unwrap().to_owned(),
                m["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|(k, _)| k == "binary")
            .collect::<Vec<_>>(),
        [&("binary".to_owned(), "/chat".to_owned())],
        "only the allowed binary message reached the upstream"
    );
    assert!(
        !kinds.iter().any(|(_, p)| p == "/feed"),
        "nothing of the read-only channel reached the upstream: {kinds:?}"
    );
    s.sluice
        .wait_event("deny WEBSOCKET_BINARY ws.test:8765/forbidden");
    s.sluice
        .wait_event("deny WEBSOCKET_BINARY wsro.test:8765/feed");
}

/// A raw JSON body posted with Python `requests` (no re-serialization, so
/// duplicate keys go out as written).
const RAW_POSTS: &str = r#"
import json, sys, requests
proxy, bundle, url = sys.argv[1], sys.argv[2], sys.argv[3]
for body in json.loads(sys.argv[4]):
    r = requests.post(url, data=body.encode(), proxies={"http": proxy, "https": proxy}, verify=bundle, timeout=10,
                      headers={"Content-Type": "application/json", "Accept": "application/json, text/event-stream"})
    detail = ""
    if r.status_code == 403:
        j = r.json()
        detail = j.get("protocol", "") + "|" + j.get("detail", "")
    print(r.status_code, detail)
"#;

/// Issue 12, class 4: a key repeated in any object of a JSON-RPC or MCP
/// body is a hard denial on both adapters (an upstream that takes the
/// first key would run the denied call); nothing reaches the upstream.
#[test]
fn duplicate_json_keys_are_refused_on_both_adapters() {
    let s = setup("proto-dup");
    let proxy = s.sluice.proxy_url();
    let bundle = s.bundle.to_str().unwrap();
    let rpc = serde_json::json!([
        r#"{"jsonrpc":"2.0","id":1,"method":"reports.delete","method":"reports.list"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"reports.list","method":"reports.delete"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"reports.list","method":"reports.delete"}"#,
        r#"[{"jsonrpc":"2.0","id":1,"method":"reports.list","params":{"q":"a","q":"b"}}]"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"reports.list"}"#,
    ]);
    let dup = "403 json-rpc|JSON-RPC request rejected: duplicate key in a JSON object";
    for base in ["http://api.test:8080", "https://apis.test:8443"] {
        let got = Python::inline(RAW_POSTS)
            .args([
                proxy.as_str(),
                bundle,
                &format!("{base}/rpc"),
                &rpc.to_string(),
            ])
            .lines();
        assert_eq!(got, [dup, dup, dup, dup, "200 "], "json-rpc via {base}");
    }
    for record in ["plain.jsonl", "tls.jsonl"] {
        let bodies: Vec<String> = recorded(&s.dir.path(record))
            .iter()
            .map(|r| r["body"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(
            bodies,
            [r#"{"jsonrpc":"2.0","id":1,"method":"reports.list"}"#],
            "{record}: only the unambiguous call reached the upstream"
        );
    }
    let mcp = serde_json::json!([
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"execute_code","name":"search_web","arguments":{"query":"q","code":"rm -rf /"}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_web","name":"execute_code","arguments":{"query":"q","code":"rm -rf /"}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/workspace/a","path":"/etc/shadow"}}}"#,
    ]);
    let got = Python::inline(RAW_POSTS)
        .args([
            proxy.as_str(),
            bundle,
            "http://mcp.test:8000/mcp",
            &mcp.to_string(),
        ])
        .lines();
    let dup = "403 mcp|JSON-RPC request rejected: duplicate key in a JSON object";
    assert_eq!(got, [dup, dup, dup]);
    assert!(recorded(&s.dir.path("mcp.jsonl")).is_empty(), "no tool ran");
    s.sluice
        .wait_event("FORWARD_L7 deny POST mcp.test:8000/mcp");
    s.sluice
        .wait_event("L7_REQUEST deny POST apis.test:8443/rpc");
}
