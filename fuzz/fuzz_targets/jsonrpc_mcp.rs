//! JSON-RPC parser and MCP evaluation against a fixed endpoint.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sluice_policy::request::{jsonrpc, mcp};
use sluice_policy::PolicySnapshot;

const POLICY: &str = r#"version: 1
network_policies:
  mcp:
    endpoints:
      - host: mcp.test
        port: 443
        protocol: mcp
        rules:
          - allow: { method: initialize }
          - allow: { method: tools/list }
          - allow: { method: tools/call, tool: read_file }
    binaries: [ { path: /usr/bin/curl } ]
"#;

fn snapshot() -> &'static PolicySnapshot {
    static SNAP: OnceLock<PolicySnapshot> = OnceLock::new();
    SNAP.get_or_init(|| {
        sluice_policy::load_str(POLICY, "fuzz.yaml", 1)
            .expect("fuzz policy loads")
            .snapshot
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let parsed = jsonrpc::parse(body, 64 * 1024);
    if body.len() > 64 * 1024 {
        assert!(parsed.is_err());
    }
    let endpoint = &snapshot().endpoints()[0];
    let method = ["POST", "GET", "DELETE", "post"][usize::from(sel & 3)];
    let accept = if sel & 4 == 4 {
        Some("application/json, text/event-stream")
    } else {
        None
    };
    let v1 = mcp::evaluate_body(endpoint, method, accept, body);
    let v2 = mcp::evaluate_body(endpoint, method, accept, body);
    assert_eq!(format!("{v1:?}"), format!("{v2:?}"));
    // A body the JSON-RPC parser refuses can never be allowed as MCP.
    if !body.is_empty() && parsed.is_err() {
        assert!(!v1.allowed, "{v1:?}");
    }
});
