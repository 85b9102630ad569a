//! JSON-RPC request policy (facts §1.5, §2.4): parsing and method rules,
//! table-driven from YAML policies.

use sluice_policy::request::jsonrpc::{self, Frame, JsonRpcError};
use sluice_policy::request::ProtocolVerdict;
use sluice_policy::{load_str, Endpoint, PolicySnapshot};

const POLICY: &str = r#"
version: 1
network_policies:
  a-rpc:
    endpoints:
      - host: rpc.example.com
        port: 8545
        protocol: json-rpc
        enforcement: enforce
        json_rpc: { max_body_bytes: 512 }
        rules:
          - allow: { method: eth_call }
          - allow: { method: eth_blockNumber }
          - allow: { method: eth_sendRawTransaction }
        deny_rules:
          - { method: eth_sendRawTransaction }
      - host: open.example.com
        port: 8545
        protocol: json-rpc
        enforcement: audit
        rules:
          - allow: { method: "*" }
        deny_rules:
          - { method: debug_traceTransaction }
    binaries: [ { path: /usr/bin/agent } ]
"#;

fn snapshot() -> PolicySnapshot {
    load_str(POLICY, "jsonrpc.yaml", 1)
        .expect("policy loads")
        .snapshot
}

fn eval(ep: &Endpoint, body: &str) -> ProtocolVerdict {
    match jsonrpc::parse(body.as_bytes(), ep.json_rpc_max_body_bytes) {
        Ok(batch) => jsonrpc::evaluate(ep, &batch),
        Err(e) => jsonrpc::rejected(&e),
    }
}

/// (endpoint index, body, allowed, hard, reason, summary).
const CASES: &[(usize, &str, bool, bool, &str, &str)] = &[
    (
        0,
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_call","params":[]}"#,
        true,
        false,
        "",
        "methods=eth_call",
    ),
    (
        0,
        r#"{"jsonrpc":"2.0","id":"a","method":"eth_getLogs"}"#,
        false,
        false,
        "JSON-RPC method eth_getLogs not permitted by policy",
        "methods=eth_getLogs",
    ),
    (
        0,
        r#"{"jsonrpc":"2.0","id":1,"method":"ETH_CALL"}"#,
        false,
        false,
        "JSON-RPC method ETH_CALL not permitted by policy",
        "methods=ETH_CALL",
    ),
    (
        0,
        r#"{"jsonrpc":"2.0","id":2,"method":"eth_sendRawTransaction","params":["0x00"]}"#,
        false,
        false,
        "JSON-RPC method eth_sendRawTransaction blocked by deny rule",
        "methods=eth_sendRawTransaction",
    ),
    // notifications are calls too
    (
        0,
        r#"{"jsonrpc":"2.0","method":"eth_blockNumber"}"#,
        true,
        false,
        "",
        "methods=eth_blockNumber",
    ),
    (
        0,
        r#"{"jsonrpc":"2.0","method":"eth_subscribe"}"#,
        false,
        false,
        "JSON-RPC method eth_subscribe not permitted by policy",
        "methods=eth_subscribe",
    ),
    // batches: every call must be allowed; duplicates collapse in the summary
    (
        0,
        r#"[{"jsonrpc":"2.0","id":1,"method":"eth_call"},{"jsonrpc":"2.0","id":2,"method":"eth_blockNumber"},{"jsonrpc":"2.0","id":3,"method":"eth_call"}]"#,
        true,
        false,
        "",
        "methods=eth_call,eth_blockNumber",
    ),
    (
        0,
        r#"[{"jsonrpc":"2.0","id":1,"method":"eth_call"},{"jsonrpc":"2.0","id":2,"method":"eth_accounts"}]"#,
        false,
        false,
        "JSON-RPC method eth_accounts not permitted by policy",
        "methods=eth_call,eth_accounts",
    ),
    // a deny anywhere in the batch wins over an earlier "not permitted"
    (
        0,
        r#"[{"jsonrpc":"2.0","id":1,"method":"eth_accounts"},{"jsonrpc":"2.0","id":2,"method":"eth_sendRawTransaction"}]"#,
        false,
        false,
        "JSON-RPC method eth_sendRawTransaction blocked by deny rule",
        "methods=eth_accounts,eth_sendRawTransaction",
    ),
    (
        0,
        r#"[{"jsonrpc":"2.0","id":1,"method":"eth_call"}]"#,
        true,
        false,
        "",
        "methods=eth_call",
    ),
    // response frames from the client: hard, even next to allowed calls
    (
        0,
        r#"{"jsonrpc":"2.0","id":7,"result":{}}"#,
        false,
        true,
        "JSON-RPC response frames are not permitted from client to server",
        "responses=1",
    ),
    (
        0,
        r#"[{"jsonrpc":"2.0","id":1,"method":"eth_call"},{"jsonrpc":"2.0","id":7,"error":{"code":1,"message":"x"}}]"#,
        false,
        true,
        "JSON-RPC response frames are not permitted from client to server",
        "methods=eth_call responses=1",
    ),
    (
        1,
        r#"{"jsonrpc":"2.0","id":7,"result":null}"#,
        false,
        true,
        "JSON-RPC response frames are not permitted from client to server",
        "responses=1",
    ),
    // parse errors: hard
    (
        0,
        r#"{"jsonrpc":"2.0","id":1,"method":"#,
        false,
        true,
        "JSON-RPC request rejected: invalid JSON",
        "invalid",
    ),
    (
        0,
        "",
        false,
        true,
        "JSON-RPC request rejected: invalid JSON",
        "invalid",
    ),
    (
        0,
        r#"{"jsonrpc":"1.0","id":1,"method":"eth_call"}"#,
        false,
        true,
        "JSON-RPC request rejected: unsupported JSON-RPC version (expected \"2.0\")",
        "invalid",
    ),
    (
        0,
        r#"{"id":1,"method":"eth_call"}"#,
        false,
        true,
        "JSON-RPC request rejected: missing or non-string 'jsonrpc' field",
        "invalid",
    ),
    (
        0,
        "[]",
        false,
        true,
        "JSON-RPC request rejected: empty batch",
        "invalid",
    ),
    (
        0,
        r#"[{"jsonrpc":"2.0","id":1,"method":"eth_call"},{"id":2,"method":"eth_call"}]"#,
        false,
        true,
        "JSON-RPC request rejected: batch item 1 invalid: missing or non-string 'jsonrpc' field",
        "invalid",
    ),
    (
        0,
        r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
        false,
        true,
        "JSON-RPC request rejected: non-string 'method' field",
        "invalid",
    ),
    (
        0,
        r#"{"jsonrpc":"2.0","id":{},"method":"eth_call"}"#,
        false,
        true,
        "JSON-RPC request rejected: 'id' must be a string, number or null",
        "invalid",
    ),
    (
        0,
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_call","params":"x"}"#,
        false,
        true,
        "JSON-RPC request rejected: 'params' must be an object or an array",
        "invalid",
    ),
    (
        0,
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_call","result":1}"#,
        false,
        true,
        "JSON-RPC request rejected: message has both 'method' and 'result'/'error'",
        "invalid",
    ),
    (
        0,
        r#"{"jsonrpc":"2.0","id":1}"#,
        false,
        true,
        "JSON-RPC request rejected: missing or non-string 'method' field",
        "invalid",
    ),
    (
        0,
        "[1]",
        false,
        true,
        "JSON-RPC request rejected: batch item 0 invalid: frame is not a JSON object",
        "invalid",
    ),
    // `*` allows everything but the deny rule
    (
        1,
        r#"{"jsonrpc":"2.0","id":1,"method":"anything_at_all"}"#,
        true,
        false,
        "",
        "methods=anything_at_all",
    ),
    (
        1,
        r#"[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"b"}]"#,
        true,
        false,
        "",
        "methods=a,b",
    ),
    (
        1,
        r#"{"jsonrpc":"2.0","id":1,"method":"debug_traceTransaction"}"#,
        false,
        false,
        "JSON-RPC method debug_traceTransaction blocked by deny rule",
        "methods=debug_traceTransaction",
    ),
];

#[test]
fn jsonrpc_table() {
    let snap = snapshot();
    let mut failures = Vec::new();
    for (i, &(ep, body, allowed, hard, reason, summary)) in CASES.iter().enumerate() {
        let v = eval(&snap.endpoints()[ep], body);
        if v.allowed != allowed || v.hard != hard || v.reason != reason || v.summary != summary {
            failures.push(format!("case {i} ({body}): {v:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn deny_rule_is_named() {
    let snap = snapshot();
    let v = eval(
        &snap.endpoints()[0],
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction"}"#,
    );
    assert_eq!(v.rule.as_deref(), Some("deny eth_sendRawTransaction"));
}

#[test]
fn parse_shapes() {
    let b = jsonrpc::parse(
        br#"[{"jsonrpc":"2.0","id":"x","method":"m","params":{"a":1}},{"jsonrpc":"2.0","method":"n"},{"jsonrpc":"2.0","id":null,"error":{"code":1}}]"#,
        1 << 16,
    )
    .expect("parses");
    assert!(b.is_batch);
    assert!(
        matches!(&b.frames[0], Frame::Request { id, method, params: Some(_) } if id == "x" && method == "m")
    );
    assert!(matches!(&b.frames[1], Frame::Notification { method, params: None } if method == "n"));
    assert!(matches!(&b.frames[2], Frame::Response { id } if id.is_null()));
    let one = jsonrpc::parse(br#"{"jsonrpc":"2.0","id":1,"method":"m"}"#, 100).expect("parses");
    assert!(!one.is_batch);
    assert_eq!(one.frames.len(), 1);
}

#[test]
fn body_over_cap_is_an_error() {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"eth_call","params":["{}"]}}"#,
        "a".repeat(600)
    );
    assert_eq!(
        jsonrpc::parse(body.as_bytes(), 512).unwrap_err(),
        JsonRpcError::TooLarge { limit: 512 }
    );
    let snap = snapshot();
    let v = eval(&snap.endpoints()[0], &body);
    assert!(!v.allowed && v.hard);
    assert_eq!(
        v.reason,
        "JSON-RPC request rejected: body is larger than 512 bytes"
    );
    // exactly at the cap is fine
    let at_cap = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"m","pad":"{}"}}"#,
        "a".repeat(100)
    );
    assert!(jsonrpc::parse(at_cap.as_bytes(), at_cap.len()).is_ok());
}

#[test]
fn batch_and_nesting_bounds() {
    let frame = r#"{"jsonrpc":"2.0","method":"m"}"#;
    let ok = format!("[{}]", vec![frame; 256].join(","));
    assert_eq!(
        jsonrpc::parse(ok.as_bytes(), 1 << 20)
            .expect("256 ok")
            .frames
            .len(),
        256
    );
    let too_many = format!("[{}]", vec![frame; 257].join(","));
    assert_eq!(
        jsonrpc::parse(too_many.as_bytes(), 1 << 20).unwrap_err(),
        JsonRpcError::TooManyFrames
    );
    // the reader's nesting limit (128) turns deep nesting into an error, not a stack overflow
    let deep = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"m","params":{}1{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert_eq!(
        jsonrpc::parse(deep.as_bytes(), 1 << 20).unwrap_err(),
        JsonRpcError::InvalidJson
    );
}

#[test]
fn long_and_control_method_names_are_bounded_in_messages() {
    let snap = snapshot();
    let ep = &snap.endpoints()[1];
    let name = format!("x\n{}", "y".repeat(400));
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"{}"}}"#,
        name.replace('\n', "\\n")
    );
    let b = jsonrpc::parse(body.as_bytes(), 1 << 16).expect("parses");
    let v = jsonrpc::evaluate(ep, &b);
    assert!(v.allowed);
    assert!(v.summary.len() < 200, "{}", v.summary);
    assert!(!v.summary.contains('\n'));
    let ep0 = &snap.endpoints()[0];
    let v = jsonrpc::evaluate(ep0, &b);
    assert!(!v.allowed);
    assert!(
        v.reason.len() < 250 && !v.reason.contains('\n'),
        "{}",
        v.reason
    );
}

/// Duplicate keys, in the frame or anywhere below it, are refused (hard,
/// even in audit): an upstream that takes the first key would otherwise
/// run a call policy never saw (`reports.delete` behind an allowed
/// `reports.list`).
#[test]
fn duplicate_keys_are_refused_anywhere() {
    let snap = snapshot();
    let reason = "JSON-RPC request rejected: duplicate key in a JSON object";
    for (ep, body) in [
        (
            0,
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction","method":"eth_call"}"#,
        ),
        (
            0,
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_call","method":"eth_sendRawTransaction"}"#,
        ),
        (
            0,
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_call","method":"eth_call"}"#,
        ),
        (
            0,
            r#"{"jsonrpc":"2.0","jsonrpc":"1.0","id":1,"method":"eth_call"}"#,
        ),
        (0, r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"eth_call"}"#),
        (
            0,
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_call","m\u0065thod":"eth_sendRawTransaction"}"#,
        ),
        (
            0,
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_call","params":{"to":"a","to":"b"}}"#,
        ),
        (
            0,
            r#"[{"jsonrpc":"2.0","id":1,"method":"eth_call"},{"jsonrpc":"2.0","id":2,"method":"eth_call","params":[{"x":{"y":1,"y":2}}]}]"#,
        ),
        (
            1,
            r#"{"jsonrpc":"2.0","id":1,"method":"debug_traceTransaction","method":"eth_call"}"#,
        ),
        (0, r#"{"jsonrpc":"2.0","id":1,"result":1,"result":2}"#),
    ] {
        assert_eq!(
            jsonrpc::parse(body.as_bytes(), 1 << 16).unwrap_err(),
            JsonRpcError::DuplicateKey,
            "{body}"
        );
        let v = eval(&snap.endpoints()[ep], body);
        assert!(!v.allowed && v.hard, "{body}: {v:?}");
        assert_eq!(v.reason, reason, "{body}");
    }
    // The same key in sibling objects is not a duplicate.
    let ok = r#"[{"jsonrpc":"2.0","id":1,"method":"eth_call","params":{"to":"a"}},{"jsonrpc":"2.0","id":2,"method":"eth_call","params":{"to":"b"}}]"#;
    assert!(eval(&snap.endpoints()[0], ok).allowed);
}
