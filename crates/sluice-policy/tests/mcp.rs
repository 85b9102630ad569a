//! MCP Streamable-HTTP request policy (facts §1.5, §1.6, §2.4), table-driven
//! from YAML policies.

use sluice_policy::request::jsonrpc;
use sluice_policy::request::mcp;
use sluice_policy::request::ProtocolVerdict;
use sluice_policy::{load_str, Endpoint, PolicySnapshot};

const POLICY: &str = r#"
version: 1
network_policies:
  agent:
    endpoints:
      # 0: explicit rules, strict tool names (default)
      - host: mcp.example.com
        port: 443
        path: /mcp
        protocol: mcp
        enforcement: enforce
        rules:
          - allow: { method: initialize }
          - allow: { method: notifications/initialized }
          - allow: { method: tools/list }
          - allow: { method: tools/call, tool: "search_*" }
          - allow: { method: tools/call, tool: { any: [read_file, list_dir] } }
          - allow: { method: tools/call, params: { name: "wiki.*" } }
        deny_rules:
          - { method: tools/call, tool: search_admin }
      # 1: allow all known methods, deny one tool, plus one vendor method
      - host: all.example.com
        port: 443
        protocol: mcp
        enforcement: enforce
        mcp: { allow_all_known_mcp_methods: true }
        rules:
          - allow: { method: vendor/extension }
        deny_rules:
          - tool: execute_code
          - { method: resources/subscribe }
      # 2: loose tool names
      - host: loose.example.com
        port: 443
        protocol: mcp
        enforcement: enforce
        mcp: { strict_tool_names: false }
        rules:
          - allow: { method: tools/call, tool: "bad name!" }
      # 3: tools/* glob
      - host: glob.example.com
        port: 443
        protocol: mcp
        enforcement: audit
        rules:
          - allow: { method: initialize }
          - allow: { method: "tools/*" }
        deny_rules:
          - { method: tools/call, tool: { any: ["danger*", "rm"] } }
    binaries: [ { path: /usr/bin/agent } ]
"#;

fn snapshot() -> PolicySnapshot {
    load_str(POLICY, "mcp.yaml", 1)
        .expect("policy loads")
        .snapshot
}

fn call(method: &str, tool: &str) -> String {
    if tool.is_empty() {
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}"}}"#)
    } else {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{"name":"{tool}","arguments":{{}}}}}}"#
        )
    }
}

fn post(ep: &Endpoint, body: &str) -> ProtocolVerdict {
    mcp::evaluate_body(
        ep,
        "POST",
        Some("application/json, text/event-stream"),
        body.as_bytes(),
    )
}

struct Case {
    ep: usize,
    body: String,
    allowed: bool,
    hard: bool,
    reason: &'static str,
    summary: &'static str,
}

fn case(
    ep: usize,
    body: String,
    allowed: bool,
    hard: bool,
    reason: &'static str,
    summary: &'static str,
) -> Case {
    Case {
        ep,
        body,
        allowed,
        hard,
        reason,
        summary,
    }
}

#[test]
fn mcp_post_table() {
    let resp = r#"{"jsonrpc":"2.0","id":"srv-1","result":{"action":"accept"}}"#;
    let cases = vec![
        case(
            0,
            call("initialize", ""),
            true,
            false,
            "",
            "methods=initialize",
        ),
        case(
            0,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.into(),
            true,
            false,
            "",
            "methods=notifications/initialized",
        ),
        case(
            0,
            call("tools/list", ""),
            true,
            false,
            "",
            "methods=tools/list",
        ),
        case(
            0,
            call("tools/call", "search_web"),
            true,
            false,
            "",
            "methods=tools/call tools=search_web",
        ),
        case(
            0,
            call("tools/call", "search_admin"),
            false,
            false,
            "MCP tool search_admin blocked by deny rule",
            "methods=tools/call tools=search_admin",
        ),
        case(
            0,
            call("tools/call", "read_file"),
            true,
            false,
            "",
            "methods=tools/call tools=read_file",
        ),
        case(
            0,
            call("tools/call", "list_dir"),
            true,
            false,
            "",
            "methods=tools/call tools=list_dir",
        ),
        case(
            0,
            call("tools/call", "wiki.page"),
            true,
            false,
            "",
            "methods=tools/call tools=wiki.page",
        ),
        // `.` is the glob delimiter: `wiki.*` does not match two more labels
        case(
            0,
            call("tools/call", "wiki.page.edit"),
            false,
            false,
            "MCP tool wiki.page.edit not permitted by policy",
            "methods=tools/call tools=wiki.page.edit",
        ),
        case(
            0,
            call("tools/call", "search_a.b"),
            false,
            false,
            "MCP tool search_a.b not permitted by policy",
            "methods=tools/call tools=search_a.b",
        ),
        case(
            0,
            call("tools/call", "write_file"),
            false,
            false,
            "MCP tool write_file not permitted by policy",
            "methods=tools/call tools=write_file",
        ),
        case(
            0,
            call("tools/call", "bad name!"),
            false,
            true,
            "MCP tool name bad name! is not allowed by strict_tool_names",
            "methods=tools/call tools=bad name!",
        ),
        case(
            0,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}"#.into(),
            false,
            true,
            "MCP tools/call requires a string params.name",
            "methods=tools/call",
        ),
        case(
            0,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#.into(),
            false,
            true,
            "MCP tools/call requires a string params.name",
            "methods=tools/call",
        ),
        case(
            0,
            call("resources/list", ""),
            false,
            false,
            "MCP method resources/list not permitted by policy",
            "methods=resources/list",
        ),
        case(
            0,
            call("vendor/extension", ""),
            false,
            false,
            "MCP method vendor/extension not permitted by policy",
            "methods=vendor/extension",
        ),
        // client responses (to server-initiated requests) are permitted for MCP
        case(0, resp.into(), true, false, "", "responses=1"),
        case(
            0,
            format!("[{},{resp}]", call("tools/call", "search_web")),
            true,
            false,
            "",
            "methods=tools/call tools=search_web responses=1",
        ),
        // one denied call denies the batch
        case(
            0,
            format!(
                "[{},{}]",
                call("initialize", ""),
                call("tools/call", "write_file")
            ),
            false,
            false,
            "MCP tool write_file not permitted by policy",
            "methods=initialize,tools/call tools=write_file",
        ),
        case(
            0,
            format!(
                "[{},{}]",
                call("tools/call", "nope"),
                call("tools/call", "search_admin")
            ),
            false,
            false,
            "MCP tool search_admin blocked by deny rule",
            "methods=tools/call tools=nope,search_admin",
        ),
        // malformed bodies are hard denials
        case(
            0,
            "{".into(),
            false,
            true,
            "JSON-RPC request rejected: invalid JSON",
            "invalid",
        ),
        case(
            0,
            "[]".into(),
            false,
            true,
            "JSON-RPC request rejected: empty batch",
            "invalid",
        ),
        case(
            0,
            r#"{"jsonrpc":"2.1","id":1,"method":"initialize"}"#.into(),
            false,
            true,
            "JSON-RPC request rejected: unsupported JSON-RPC version (expected \"2.0\")",
            "invalid",
        ),
        // allow_all_known_mcp_methods
        case(
            1,
            call("initialize", ""),
            true,
            false,
            "",
            "methods=initialize",
        ),
        case(
            1,
            call("resources/read", ""),
            true,
            false,
            "",
            "methods=resources/read",
        ),
        case(
            1,
            call("sampling/createMessage", ""),
            true,
            false,
            "",
            "methods=sampling/createMessage",
        ),
        case(
            1,
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#
                .into(),
            true,
            false,
            "",
            "methods=notifications/cancelled",
        ),
        case(
            1,
            call("tools/call", "anything"),
            true,
            false,
            "",
            "methods=tools/call tools=anything",
        ),
        case(
            1,
            call("tools/call", "execute_code"),
            false,
            false,
            "MCP tool execute_code blocked by deny rule",
            "methods=tools/call tools=execute_code",
        ),
        case(
            1,
            call("resources/subscribe", ""),
            false,
            false,
            "MCP method resources/subscribe blocked by deny rule",
            "methods=resources/subscribe",
        ),
        case(
            1,
            call("vendor/other", ""),
            false,
            false,
            "MCP method vendor/other not permitted by policy",
            "methods=vendor/other",
        ),
        case(
            1,
            call("vendor/extension", ""),
            true,
            false,
            "",
            "methods=vendor/extension",
        ),
        case(
            1,
            call("notifications/", ""),
            false,
            false,
            "MCP method notifications/ not permitted by policy",
            "methods=notifications/",
        ),
        // strict_tool_names: false
        case(
            2,
            call("tools/call", "bad name!"),
            true,
            false,
            "",
            "methods=tools/call tools=bad name!",
        ),
        case(
            2,
            call("tools/call", "other"),
            false,
            false,
            "MCP tool other not permitted by policy",
            "methods=tools/call tools=other",
        ),
        case(
            2,
            call("initialize", ""),
            false,
            false,
            "MCP method initialize not permitted by policy",
            "methods=initialize",
        ),
        // tools/* glob
        case(
            3,
            call("tools/list", ""),
            true,
            false,
            "",
            "methods=tools/list",
        ),
        case(
            3,
            call("tools/call", "whatever"),
            true,
            false,
            "",
            "methods=tools/call tools=whatever",
        ),
        case(
            3,
            call("tools/call", "danger_zone"),
            false,
            false,
            "MCP tool danger_zone blocked by deny rule",
            "methods=tools/call tools=danger_zone",
        ),
        case(
            3,
            call("tools/call", "rm"),
            false,
            false,
            "MCP tool rm blocked by deny rule",
            "methods=tools/call tools=rm",
        ),
        case(
            3,
            call("prompts/list", ""),
            false,
            false,
            "MCP method prompts/list not permitted by policy",
            "methods=prompts/list",
        ),
    ];
    let snap = snapshot();
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let v = post(&snap.endpoints()[c.ep], &c.body);
        let summary_ok = c.summary.is_empty() && c.hard || v.summary == c.summary;
        if v.allowed != c.allowed || v.hard != c.hard || v.reason != c.reason || !summary_ok {
            failures.push(format!("case {i} ({}): {v:?}", c.body));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn deny_rule_text() {
    let snap = snapshot();
    let v = post(&snap.endpoints()[3], &call("tools/call", "rm"));
    assert_eq!(
        v.rule.as_deref(),
        Some("deny tools/call tool=any(danger*, rm)")
    );
    let v = post(&snap.endpoints()[1], &call("tools/call", "execute_code"));
    assert_eq!(v.rule.as_deref(), Some("deny tools/call tool=execute_code"));
}

#[test]
fn long_tool_names_are_bounded_in_messages() {
    let snap = snapshot();
    let v = post(&snap.endpoints()[0], &call("tools/call", &"x".repeat(129)));
    assert!(!v.allowed && v.hard);
    let want = format!(
        "MCP tool name {}... is not allowed by strict_tool_names",
        "x".repeat(128)
    );
    assert_eq!(v.reason, want);
    let v = post(&snap.endpoints()[2], &call("tools/call", &"y".repeat(5000)));
    assert!(!v.allowed && !v.hard);
    assert!(v.reason.len() < 200 && v.summary.len() < 200, "{v:?}");
}

/// (method, accept, with body, allowed, hard, reason, summary).
type HttpCase = (
    &'static str,
    Option<&'static str>,
    bool,
    bool,
    bool,
    &'static str,
    &'static str,
);

#[test]
fn http_methods() {
    let snap = snapshot();
    let ep = &snap.endpoints()[0];
    let body = jsonrpc::parse(call("initialize", "").as_bytes(), 1 << 16).expect("parses");
    // (method, accept, with body, allowed, hard, reason, summary)
    let cases: &[HttpCase] = &[
        (
            "GET",
            Some("text/event-stream"),
            false,
            true,
            false,
            "",
            "receive-stream",
        ),
        (
            "get",
            Some("application/json, Text/Event-Stream;q=0.9"),
            false,
            true,
            false,
            "",
            "receive-stream",
        ),
        (
            "GET",
            Some("application/json"),
            false,
            false,
            false,
            "MCP GET without Accept: text/event-stream is not permitted",
            "get",
        ),
        (
            "GET",
            None,
            false,
            false,
            false,
            "MCP GET without Accept: text/event-stream is not permitted",
            "get",
        ),
        (
            "GET",
            Some("text/event-stream"),
            true,
            false,
            true,
            "MCP GET requests must not carry a body",
            "invalid",
        ),
        ("DELETE", None, false, true, false, "", "session-delete"),
        (
            "DELETE",
            None,
            true,
            false,
            true,
            "MCP DELETE requests must not carry a body",
            "invalid",
        ),
        (
            "POST",
            Some("application/json"),
            false,
            false,
            true,
            "MCP POST requires a JSON-RPC body",
            "invalid",
        ),
        (
            "post",
            Some("application/json"),
            true,
            true,
            false,
            "",
            "methods=initialize",
        ),
        (
            "PUT",
            None,
            true,
            false,
            false,
            "MCP PUT requests are not permitted",
            "",
        ),
        (
            "OPTIONS",
            None,
            false,
            false,
            false,
            "MCP OPTIONS requests are not permitted",
            "",
        ),
    ];
    for &(m, accept, with_body, allowed, hard, reason, summary) in cases {
        let v = mcp::evaluate(ep, m, accept, with_body.then_some(&body));
        assert_eq!(
            (v.allowed, v.hard, v.reason.as_str(), v.summary.as_str()),
            (allowed, hard, reason, summary),
            "{m} {accept:?} body={with_body}"
        );
    }
    // evaluate_body treats an empty body as no body
    let v = mcp::evaluate_body(ep, "GET", Some("text/event-stream"), b"");
    assert!(v.allowed);
}

#[test]
fn known_methods_and_strict_names() {
    for m in [
        "initialize",
        "ping",
        "tools/list",
        "tools/call",
        "resources/templates/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "elicitation/create",
        "roots/list",
        "notifications/progress",
    ] {
        assert!(mcp::is_known_method(m), "{m}");
    }
    for m in ["tools", "tools/delete", "notifications/", "Initialize", ""] {
        assert!(!mcp::is_known_method(m), "{m}");
    }
    for (n, ok) in [
        ("search_web", true),
        ("a.b-c_D9", true),
        ("", false),
        ("bad name!", false),
        ("ünicode", false),
        ("x/y", false),
    ] {
        assert_eq!(mcp::is_strict_tool_name(n), ok, "{n}");
    }
    assert!(mcp::is_strict_tool_name(&"a".repeat(128)));
    assert!(!mcp::is_strict_tool_name(&"a".repeat(129)));
}

#[test]
fn body_cap_applies_to_mcp() {
    let src = POLICY.replace(
        "mcp: { strict_tool_names: false }",
        "mcp: { strict_tool_names: false, max_body_bytes: 64 }",
    );
    let snap = load_str(&src, "mcp.yaml", 1).expect("loads").snapshot;
    let v = post(&snap.endpoints()[2], &call("tools/call", "bad name!"));
    assert!(!v.allowed && v.hard);
    assert_eq!(
        v.reason,
        "JSON-RPC request rejected: body is larger than 64 bytes"
    );
}

/// A duplicated `name` in `params` (or any other duplicated key) is a hard
/// denial: a first-key upstream would run the denied tool.
#[test]
fn duplicate_keys_are_refused() {
    let snap = snapshot();
    let reason = "JSON-RPC request rejected: duplicate key in a JSON object";
    for (ep, body) in [
        (
            0,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"send_email","name":"search_web","arguments":{}}}"#,
        ),
        (
            0,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_web","name":"send_email","arguments":{}}}"#,
        ),
        (
            0,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_web","arguments":{}},"params":{"name":"send_email"}}"#,
        ),
        (
            0,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"send_email"}}"#,
        ),
        (
            1,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"execute_code","name":"search","arguments":{}}}"#,
        ),
        (
            1,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"path":"/a","path":"/etc/shadow"}}}"#,
        ),
    ] {
        let v = post(&snap.endpoints()[ep], body);
        assert!(!v.allowed && v.hard, "{body}: {v:?}");
        assert_eq!(v.reason, reason, "{body}");
    }
    // Without the duplicate, the first one of them is an ordinary denial.
    let v = post(
        &snap.endpoints()[0],
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"send_email","arguments":{}}}"#,
    );
    assert!(!v.allowed && !v.hard, "{v:?}");
}
