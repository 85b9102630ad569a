//! MCP `tools/call` argument matchers (sluice extension): evaluation and
//! validation with `LINE:COL` diagnostics.

use serde_json::json;
use sluice_policy::request::mcp;
use sluice_policy::request::ProtocolVerdict;
use sluice_policy::{load_str, Endpoint, PolicySnapshot, QueryMatcher};

const POLICY: &str = r#"
version: 1
network_policies:
  agent:
    endpoints:
      - host: tools.example.com
        port: 443
        protocol: mcp
        enforcement: enforce
        rules:
          - allow: { method: tools/call, tool: read_file, arguments: { path: { glob: "/workspace/**" } } }
          - allow:
              method: tools/call
              tool: fetch
              arguments:
                /options/host: { any: ["*.example.com", example.com] }
          - allow: { method: tools/call, tool: run, arguments: { mode: safe, "/env/0": { glob: "CI=*" } } }
          - allow: { method: tools/call, tool: "copy.*", arguments: { src: { glob: "/tmp/*" }, dst: { glob: "/tmp/*" } } }
        deny_rules:
          - { method: tools/call, tool: read_file, arguments: { path: { glob: "/workspace/secrets/**" } } }
          - method: tools/call
            arguments: { "/options/dir": { glob: "/etc/**" } }
      - host: all.example.com
        port: 443
        protocol: mcp
        enforcement: enforce
        mcp: { allow_all_known_mcp_methods: true }
        deny_rules:
          - { tool: "shell.*", arguments: { cmd: { any: ["rm *", "sudo *"] } } }
          - { method: tools/call, arguments: { a/b: x } }
    binaries: [ { path: /usr/bin/agent } ]
"#;

fn snapshot() -> PolicySnapshot {
    load_str(POLICY, "args.yaml", 1)
        .expect("policy loads")
        .snapshot
}

fn tool_call(ep: &Endpoint, name: &str, args: serde_json::Value) -> ProtocolVerdict {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": name, "arguments": args}});
    mcp::evaluate_body(ep, "POST", None, body.to_string().as_bytes())
}

const ALLOWED: &str = "";
const NOT_PERMITTED: &str = "not permitted by policy";
const BLOCKED: &str = "blocked by deny rule";

#[test]
fn argument_matcher_table() {
    let snap = snapshot();
    let cases: Vec<(usize, &str, serde_json::Value, &str)> = vec![
        // top-level name with a `/`-delimited glob
        (
            0,
            "read_file",
            json!({"path": "/workspace/src/main.rs"}),
            ALLOWED,
        ),
        (
            0,
            "read_file",
            json!({"path": "/workspace/a", "extra": 1}),
            ALLOWED,
        ),
        (
            0,
            "read_file",
            json!({"path": "/etc/passwd"}),
            NOT_PERMITTED,
        ),
        (0, "read_file", json!({"path": "/workspace"}), NOT_PERMITTED),
        (
            0,
            "read_file",
            json!({"path": "/workspace/secrets/key.pem"}),
            BLOCKED,
        ),
        // missing and non-string arguments never match an allow
        (0, "read_file", json!({}), NOT_PERMITTED),
        (
            0,
            "read_file",
            json!({"file": "/workspace/a"}),
            NOT_PERMITTED,
        ),
        (
            0,
            "read_file",
            json!({"path": ["/workspace/a"]}),
            NOT_PERMITTED,
        ),
        (0, "read_file", json!({"path": 7}), NOT_PERMITTED),
        (0, "read_file", json!({"path": null}), NOT_PERMITTED),
        (0, "read_file", json!("path=/workspace/a"), NOT_PERMITTED),
        // JSON pointer with `{any}` ('.'-delimited globs)
        (
            0,
            "fetch",
            json!({"options": {"host": "api.example.com"}}),
            ALLOWED,
        ),
        (
            0,
            "fetch",
            json!({"options": {"host": "example.com"}}),
            ALLOWED,
        ),
        (
            0,
            "fetch",
            json!({"options": {"host": "a.b.example.com"}}),
            NOT_PERMITTED,
        ),
        (
            0,
            "fetch",
            json!({"options": {"host": "evil.com"}}),
            NOT_PERMITTED,
        ),
        (
            0,
            "fetch",
            json!({"host": "api.example.com"}),
            NOT_PERMITTED,
        ),
        (
            0,
            "fetch",
            json!({"options": "api.example.com"}),
            NOT_PERMITTED,
        ),
        // deny by JSON pointer on any tool; a non-string value does not trigger it
        (
            0,
            "fetch",
            json!({"options": {"host": "api.example.com", "dir": "/etc/ssh"}}),
            BLOCKED,
        ),
        (
            0,
            "fetch",
            json!({"options": {"host": "api.example.com", "dir": "/home/x"}}),
            ALLOWED,
        ),
        (
            0,
            "fetch",
            json!({"options": {"host": "api.example.com", "dir": 5}}),
            ALLOWED,
        ),
        (0, "search", json!({"options": {"dir": "/etc/x"}}), BLOCKED),
        // exact strings, array index pointer
        (
            0,
            "run",
            json!({"mode": "safe", "env": ["CI=1", "HOME=/x"]}),
            ALLOWED,
        ),
        (
            0,
            "run",
            json!({"mode": "safer", "env": ["CI=1"]}),
            NOT_PERMITTED,
        ),
        (
            0,
            "run",
            json!({"mode": "safe", "env": ["HOME=/x", "CI=1"]}),
            NOT_PERMITTED,
        ),
        (0, "run", json!({"mode": "safe"}), NOT_PERMITTED),
        // every listed argument must match
        (
            0,
            "copy.file",
            json!({"src": "/tmp/a", "dst": "/tmp/b"}),
            ALLOWED,
        ),
        (
            0,
            "copy.file",
            json!({"src": "/tmp/a", "dst": "/tmp/b/c"}),
            NOT_PERMITTED,
        ),
        (0, "copy.file", json!({"src": "/tmp/a"}), NOT_PERMITTED),
        // deny matchers on an allow-all endpoint
        (1, "shell.exec", json!({"cmd": "ls -la"}), ALLOWED),
        (1, "shell.exec", json!({"cmd": "rm -rf /"}), BLOCKED),
        (1, "shell.exec", json!({"cmd": "sudo reboot"}), BLOCKED),
        (1, "shell.exec", json!({}), ALLOWED),
        (1, "other", json!({"cmd": "sudo reboot"}), ALLOWED),
        // a top-level name containing '/' is escaped into a pointer
        (1, "x", json!({"a/b": "x"}), BLOCKED),
        (1, "x", json!({"a": {"b": "x"}}), ALLOWED),
    ];
    let mut failures = Vec::new();
    for (i, (ep, tool, args, want)) in cases.iter().enumerate() {
        let v = tool_call(&snap.endpoints()[*ep], tool, args.clone());
        let ok = if want.is_empty() {
            v.allowed
        } else {
            !v.allowed && !v.hard && v.reason == format!("MCP tool {tool} {want}")
        };
        if !ok {
            failures.push(format!("case {i} ({tool} {args}): {v:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn rm_rule_matches_dotless_commands_only() {
    // `rm *` does not start with '/', so it is '.'-delimited: `*` stops at a '.'
    // (documented; deny globs over free text should use `**`).
    let snap = snapshot();
    let ep = &snap.endpoints()[1];
    assert!(!tool_call(ep, "shell.exec", json!({"cmd": "rm x"})).allowed);
    assert!(tool_call(ep, "shell.exec", json!({"cmd": "rm a.txt"})).allowed);
    let src = POLICY.replace("\"rm *\"", "\"rm **\"");
    let snap = load_str(&src, "args.yaml", 1).expect("loads").snapshot;
    let ep = &snap.endpoints()[1];
    assert!(!tool_call(ep, "shell.exec", json!({"cmd": "rm a.txt"})).allowed);
}

#[test]
fn documented_example_loads_and_behaves() {
    let src = endpoint_with(
        r#"        rules:
          - allow:
              method: tools/call
              tool: read_file
              arguments:
                path: { glob: "/workspace/**" }          # top-level argument `path`
                /options/encoding: utf-8                   # JSON pointer, exact string
                /options/host: { any: ["*.example.com", example.com] }
        deny_rules:
          - method: tools/call
            arguments: { "/options/dir": { glob: "/etc/**" } }   # any tool
"#,
    );
    let snap = load_str(&src, "doc.yaml", 1).expect("loads").snapshot;
    let ep = &snap.endpoints()[0];
    let good =
        json!({"path": "/workspace/a", "options": {"encoding": "utf-8", "host": "example.com"}});
    assert!(tool_call(ep, "read_file", good).allowed);
    let bad =
        json!({"path": "/workspace/a", "options": {"encoding": "latin1", "host": "example.com"}});
    assert!(!tool_call(ep, "read_file", bad).allowed);
    let denied = json!({"path": "/workspace/a", "options": {"encoding": "utf-8", "host": "example.com", "dir": "/etc/x"}});
    let v = tool_call(ep, "read_file", denied);
    assert_eq!(v.reason, "MCP tool read_file blocked by deny rule");
}

#[test]
fn compiled_arguments() {
    let snap = snapshot();
    let rules = &snap.endpoints()[0].rules;
    let args: Vec<&str> = rules[2].arguments.iter().map(|(p, _)| &**p).collect();
    assert_eq!(args, ["/env/0", "/mode"]);
    let QueryMatcher::One(g) = &rules[0].arguments[0].1 else {
        panic!("one glob")
    };
    assert_eq!((&*g.pattern, g.delimiter), ("/workspace/**", b'/'));
    let QueryMatcher::Any(gs) = &rules[1].arguments[0].1 else {
        panic!("any")
    };
    assert_eq!(gs[0].delimiter, b'.');
    assert_eq!(&*rules[1].arguments[0].0, "/options/host");
    let deny = &snap.endpoints()[1].deny_rules;
    assert_eq!(&*deny[1].arguments[0].0, "/a~1b");
    let v = tool_call(
        &snap.endpoints()[0],
        "read_file",
        json!({"path": "/workspace/secrets/k"}),
    );
    assert_eq!(
        v.rule.as_deref(),
        Some("deny tools/call tool=read_file arguments /path=/workspace/secrets/**")
    );
}

fn endpoint_with(rule_lines: &str) -> String {
    format!(
        "version: 1\nnetwork_policies:\n  p:\n    endpoints:\n      - host: tools.example.com\n        port: 443\n        protocol: mcp\n{rule_lines}    binaries: [ {{ path: /usr/bin/agent }} ]\n"
    )
}

#[test]
fn invalid_arguments_report_line_and_column() {
    // Lines 1-7 are the fixed header; rule lines start at line 8.
    let cases: &[(&str, &str)] = &[
        (
            "        rules:\n          - allow: { method: tools/list, arguments: { path: x } }\n",
            "bad.yaml:9:42: `arguments` requires `method: tools/call` or a `tool` matcher",
        ),
        (
            "        rules:\n          - allow:\n              method: initialize\n              arguments:\n                path: x\n",
            "bad.yaml:11:15: `arguments` requires `method: tools/call` or a `tool` matcher",
        ),
        (
            "        rules:\n          - allow: { method: tools/call, arguments: {} }\n",
            "bad.yaml:9:53: `arguments` must list at least one argument",
        ),
        (
            "        rules:\n          - allow: { method: tools/call, arguments: { path: \"/tmp/*\" } }\n",
            "bad.yaml:9:61: exact argument value `/tmp/*` contains `*` or `?`",
        ),
        (
            "        rules:\n          - allow: { method: tools/call, arguments: { \"/a~2\": x } }\n",
            "bad.yaml:9:55: argument key `/a~2` must be a top-level argument name or a JSON pointer",
        ),
        (
            "        rules:\n          - allow: { method: tools/call, arguments: { p: { glob: \"/a\", any: [b] } } }\n",
            "bad.yaml:9:58: expected exactly one of `glob` or `any`",
        ),
        (
            "        rules:\n          - allow: { method: tools/call, arguments: { p: { regex: \"a.*\" } } }\n",
            "bad.yaml:9:60: unknown field `regex`, expected `glob` or `any`",
        ),
        (
            "        rules:\n          - allow: { method: tools/call, arguments: { p: { any: [] } } }\n",
            "bad.yaml:9:65: `any` must be a non-empty list of glob strings",
        ),
        (
            "        rules:\n          - allow: { method: tools/call, arguments: { p: [a] } }\n",
            "bad.yaml:9:58: expected an exact string, `{glob: pattern}` or `{any: [globs]}`",
        ),
        (
            "        rules:\n          - allow: { method: tools/call, arguments: { path: x, /path: y } }\n",
            "bad.yaml:9:42: argument `/path` is listed twice",
        ),
        (
            "        rules:\n          - allow: { method: tools/call }\n        deny_rules:\n          - { method: ping, arguments: { p: x } }\n",
            "bad.yaml:11:29: `arguments` requires `method: tools/call` or a `tool` matcher",
        ),
    ];
    let mut failures = Vec::new();
    for (rules, want) in cases {
        let src = endpoint_with(rules);
        match load_str(&src, "bad.yaml", 1) {
            Ok(_) => failures.push(format!("loaded but should fail: {want}")),
            Err(e) => {
                let text = e.to_string();
                if !text.contains(want) {
                    failures.push(format!("want `{want}`, got:\n{text}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn arguments_outside_mcp_are_rejected() {
    let cases: &[(&str, &str)] = &[
        (
            "version: 1\nnetwork_policies:\n  p:\n    endpoints:\n      - host: rpc.example.com\n        port: 443\n        protocol: json-rpc\n        rules:\n          - allow: { method: eth_call, arguments: { a: b } }\n    binaries: [ { path: /usr/bin/agent } ]\n",
            "bad.yaml:9:40: `arguments` is not valid in a json-rpc rule",
        ),
        (
            "version: 1\nnetwork_policies:\n  p:\n    endpoints:\n      - host: api.example.com\n        port: 443\n        protocol: rest\n        rules:\n          - allow: { method: GET, path: /x, arguments: { a: b } }\n    binaries: [ { path: /usr/bin/agent } ]\n",
            "bad.yaml:9:45: `arguments` is not valid in a rest rule",
        ),
    ];
    for (src, want) in cases {
        let e = load_str(src, "bad.yaml", 1).expect_err("must fail");
        assert!(e.to_string().contains(want), "want `{want}`, got:\n{e}");
    }
}

#[test]
fn argument_rules_are_not_broad() {
    // A tools/call rule restricted by arguments may sit next to tool-specific rules.
    let src = endpoint_with(
        "        rules:\n          - allow: { method: tools/call, arguments: { path: { glob: \"/workspace/**\" } } }\n          - allow: { method: tools/call, tool: search }\n",
    );
    let snap = load_str(&src, "ok.yaml", 1).expect("loads").snapshot;
    let ep = &snap.endpoints()[0];
    assert!(tool_call(ep, "anything", json!({"path": "/workspace/x"})).allowed);
    assert!(tool_call(ep, "search", json!({})).allowed);
    assert!(!tool_call(ep, "anything", json!({"path": "/etc/x"})).allowed);
}
