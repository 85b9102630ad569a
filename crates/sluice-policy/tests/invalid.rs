//! Invalid fixtures fail with the expected `LINE:COL: message`, and an
//! unknown key injected at any mapping level is rejected with a location.

use std::path::PathBuf;

use serde_yaml::{Mapping, Value};
use sluice_policy::{load_file, load_str};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// (fixture, expected substring of the rendered error, "LINE:COL: message").
const CASES: &[(&str, &str)] = &[
    ("invalid-version.yaml", "1:10: unsupported version 2; expected 1"),
    ("invalid-unknown-key.yaml", "7:9: network_policies.p.endpoints[0]: unknown field `hots`"),
    ("invalid-type-error.yaml", "6:16: network_policies.p.endpoints[0].ports: invalid type: integer `443`, expected a sequence"),
    ("invalid-bad-indent.yaml", "6:8: did not find expected '-' indicator"),
    ("invalid-no-port.yaml", "5:9: endpoint has no port"),
    ("invalid-port-range.yaml", "6:22: port 70000 is out of range 1..=65535"),
    ("invalid-tld-wildcard.yaml", "5:15: host pattern `*.com` is a top-level-domain wildcard"),
    ("invalid-wildcard-shape.yaml", "5:15: host pattern `*.s3.us-*.amazonaws.com`: wildcards after the first label must be a whole `*` label"),
    ("invalid-access-and-rules.yaml", "9:9: `access` and `rules` are mutually exclusive"),
    ("invalid-empty-rules.yaml", "9:16: `rules: []` allows nothing"),
    ("invalid-rest-method.yaml", "10:30: method `FETCH` must be one of GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS or `*`"),
    ("invalid-allowed-ips-loopback.yaml", "6:38: allowed_ips entry `127.0.0.0/16` overlaps loopback 127.0.0.0/8"),
    ("invalid-tcp-ip-literal.yaml", "5:15: `protocol: tcp` requires an exact DNS hostname"),
    ("invalid-tls-skip-l7.yaml", "10:14: `tls: skip` disables request inspection"),
    ("invalid-sql-enforce.yaml", "8:22: `protocol: sql` cannot be enforced"),
    ("invalid-provider-key.yaml", "3:3: policy key `_provider_github` uses the reserved `_provider_` prefix"),
    ("invalid-binary-relative.yaml", "7:15: binary path `bin/gh` must be absolute"),
    ("invalid-middleware-tls-skip.yaml", "8:3: middleware `redact` (fail_closed) may select network_policies.p.endpoints[0], which has `tls: skip` and is never inspected; exclude that host or use `on_error: fail_open`"),
    ("invalid-inference-unknown-field.yaml", "3:3: inference: unknown field `github`"),
    ("invalid-inference-protocol.yaml", "7:44: unknown protocol `gemini_generate`; expected one of openai_chat_completions"),
    ("invalid-inference-http.yaml", "6:17: endpoint `http://llm.internal/v1` must use https (http is allowed only for loopback hosts)"),
    ("invalid-inference-auth-style.yaml", "9:19: unknown auth_style `header:Authorization`"),
    ("invalid-deny-without-allow.yaml", "9:9: `deny_rules` require a base allow set"),
    ("invalid-jsonrpc-glob.yaml", "10:30: json-rpc method `eth_*` must be an exact method name or `*`"),
    ("invalid-unknown-preset.yaml", "9:17: unknown access preset `read-mostly`"),
    ("invalid-hostless-without-ips.yaml", "5:9: endpoint has no `host`; a hostless endpoint requires `allowed_ips`"),
    ("invalid-mcp-access.yaml", "9:17: `access` presets are not allowed for mcp"),
    ("invalid-signing.yaml", "10:29: unknown credential_signing `sigv5`"),
    (
        "invalid-ambiguity-hostless-tcp.yaml",
        "106:9: endpoint network_policies.internal.endpoints[3] ([any host]:5432) overlaps network_policies.internal.endpoints[5] (db.partner.example:5432, ",
    ),
    ("invalid-ambiguity-hostless-tcp.yaml", "invalid-ambiguity-hostless-tcp.yaml:111:9) with different allowed_ips, tcp-ness"),
    (
        "invalid-ambiguity-protocol.yaml",
        "54:9: endpoint network_policies.model_api.endpoints[0] (*.openai.example.com:443) overlaps network_policies.model_api.endpoints[1] (realtime.openai.example.com:443, ",
    ),
    ("invalid-ambiguity-protocol.yaml", "invalid-ambiguity-protocol.yaml:62:9) with different protocol, enforcement"),
];

#[test]
fn invalid_fixtures_report_location_and_message() {
    let mut failures = Vec::new();
    for (name, want) in CASES {
        match load_file(&fixture(name), 1) {
            Ok(_) => failures.push(format!("{name}: loaded but should fail")),
            Err(e) => {
                let text = e.to_string();
                let path = fixture(name).display().to_string();
                if !text.contains(&format!("{path}:{want}")) && !text.contains(want) {
                    failures.push(format!("{name}: want `{want}`, got:\n{text}"));
                }
                assert!(
                    e.diagnostics.iter().all(|d| d.line > 0 && d.col > 0),
                    "{name}: {text}"
                );
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_invalid_fixture_is_in_the_table() {
    let dir = fixture("");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("invalid-")
            && !CASES.iter().any(|(n, _)| *n == name)
            && name != "invalid-many-errors.yaml"
            // provider fixtures need a fake secret source: tests/providers.rs
            && !(name.starts_with("invalid-providers-") && name != "invalid-providers-section.yaml")
        {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "untested fixtures: {missing:?}");
}

#[test]
fn all_semantic_errors_are_collected() {
    let e = load_file(&fixture("invalid-many-errors.yaml"), 1).err();
    let lines: Vec<String> = e
        .map(|e| {
            e.diagnostics
                .iter()
                .map(|d| format!("{}:{}: {}", d.line, d.col, d.message))
                .collect()
        })
        .unwrap_or_default();
    let want = [
        "5:15: bare wildcard host `**` is not allowed",
        "6:15: port 0 is out of range",
        "11:33: max body bytes must be greater than 0",
        "13:38: operation_type `update` must be",
        "15:15: binary path must not be empty",
    ];
    assert_eq!(lines.len(), want.len(), "{lines:#?}");
    for (got, w) in lines.iter().zip(want) {
        assert!(got.starts_with(w), "{got} !~ {w}");
    }
}

#[test]
fn unreadable_file_has_no_location() {
    let e = load_file(&fixture("does-not-exist.yaml"), 1).err();
    let text = e.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        text.contains("does-not-exist.yaml: cannot read: "),
        "{text}"
    );
}

const KEY: &str = "sluice_unknown_key";

fn inject(m: &mut Mapping) {
    m.insert(Value::from(KEY), Value::from(1));
}

/// Every mapping level of a policy: top, policy, endpoint, rule wrapper, rule
/// body, deny rule, binary, middleware. Returns mutable handles by path.
fn levels(doc: &Value) -> Vec<Vec<Value>> {
    let mut out: Vec<Vec<Value>> = vec![vec![]];
    let key = |s: &str| Value::from(s);
    let Some(pols) = doc.get("network_policies").and_then(Value::as_mapping) else {
        return out;
    };
    for (pk, p) in pols {
        let base = vec![key("network_policies"), pk.clone()];
        out.push(base.clone());
        let eps = p
            .get("endpoints")
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default();
        for (i, e) in eps.iter().enumerate() {
            let ep = [base.clone(), vec![key("endpoints"), Value::from(i)]].concat();
            out.push(ep.clone());
            for (j, _) in e
                .get("rules")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let r = [ep.clone(), vec![key("rules"), Value::from(j)]].concat();
                out.push(r.clone());
                out.push([r, vec![key("allow")]].concat());
            }
            for (j, _) in e
                .get("deny_rules")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
                .enumerate()
            {
                out.push([ep.clone(), vec![key("deny_rules"), Value::from(j)]].concat());
            }
        }
        for (i, _) in p
            .get("binaries")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
            .enumerate()
        {
            out.push([base.clone(), vec![key("binaries"), Value::from(i)]].concat());
        }
    }
    if let Some(mws) = doc.get("network_middlewares").and_then(Value::as_mapping) {
        for (k, _) in mws {
            out.push(vec![key("network_middlewares"), k.clone()]);
            out.push(vec![
                key("network_middlewares"),
                k.clone(),
                key("endpoints"),
            ]);
        }
    }
    out
}

fn at<'a>(v: &'a mut Value, path: &[Value]) -> Option<&'a mut Mapping> {
    let mut cur = v;
    for seg in path {
        cur = match seg {
            Value::Number(n) => cur
                .as_sequence_mut()?
                .get_mut(usize::try_from(n.as_u64()?).ok()?)?,
            other => cur.as_mapping_mut()?.get_mut(other)?,
        };
    }
    cur.as_mapping_mut()
}

#[test]
fn unknown_key_rejected_at_every_level() {
    let mut checked = 0;
    for name in [
        "openshell-example.yaml",
        "valid-openshell-typical.yaml",
        "valid-globs.yaml",
        "valid-mcp-jsonrpc.yaml",
        "valid-l4-mixed.yaml",
    ] {
        let src = std::fs::read_to_string(fixture(name)).unwrap_or_default();
        let doc: Value = serde_yaml::from_str(&src).unwrap_or(Value::Null);
        for path in levels(&doc) {
            let mut d = doc.clone();
            let Some(m) = at(&mut d, &path) else {
                panic!("{name}: bad path {path:?}");
            };
            inject(m);
            let text = serde_yaml::to_string(&d).unwrap_or_default();
            match load_str(&text, name, 1) {
                Ok(_) => panic!("{name}: unknown key at {path:?} accepted"),
                Err(e) => {
                    let d0 = &e.diagnostics[0];
                    assert!(
                        d0.message.contains(&format!("unknown field `{KEY}`")),
                        "{name} {path:?}: {e}"
                    );
                    assert!(
                        d0.line > 0 && d0.col > 0,
                        "{name} {path:?}: no location: {e}"
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} levels checked");
}

fn policy(endpoints: &str) -> String {
    format!("version: 1\nnetwork_policies:\n  a:\n    binaries: [{{ path: /usr/bin/curl }}]\n    endpoints:\n{endpoints}")
}

#[test]
fn ambiguity_table() {
    // (endpoints, None = loads, Some(substring) = rejected with it)
    let cases: &[(&str, Option<&str>)] = &[
        (
            "      - { host: api.example.com, port: 443 }\n      - { host: api.example.com, port: 443 }\n",
            None,
        ),
        (
            "      - { host: api.example.com, port: 443 }\n      - { host: \"*.example.com\", port: 443, tls: skip }\n",
            Some("6:9: endpoint network_policies.a.endpoints[0] (api.example.com:443) overlaps network_policies.a.endpoints[1] (*.example.com:443, t.yaml:7:9) with different tls"),
        ),
        (
            "      - { host: api.example.com, port: 443 }\n      - { host: \"*.example.com\", port: 8443, tls: skip }\n",
            None,
        ),
        (
            "      - { host: \"**.example.com\", port: 443 }\n      - { host: \"*-x.example.com\", ports: [80, 443], allowed_ips: [10.1.0.0/16] }\n",
            Some("with different allowed_ips"),
        ),
        (
            "      - { host: api.example.com, port: 443 }\n      - { host: api.example.com, port: 443, protocol: rest, enforcement: enforce, access: full }\n",
            None,
        ),
        (
            "      - { host: api.example.com, port: 443, protocol: rest, enforcement: audit, access: full }\n      - { host: api.example.com, port: 443, protocol: rest, enforcement: enforce, access: read-only }\n",
            Some("with different enforcement"),
        ),
        (
            "      - { host: api.example.com, port: 443, path: /graphql, protocol: graphql, enforcement: enforce, access: full }\n      - { host: api.example.com, port: 443, protocol: rest, enforcement: enforce, access: full }\n",
            None,
        ),
        (
            "      - { host: api.example.com, port: 443, path: \"/a/*\", protocol: graphql, enforcement: enforce, access: full }\n      - { host: api.example.com, port: 443, path: \"/*/b\", protocol: rest, enforcement: enforce, access: full }\n",
            Some("with different protocol"),
        ),
        (
            "      - { host: api.example.com, port: 443, path: \"/a/*\", protocol: graphql, enforcement: enforce, access: full }\n      - { host: api.example.com, port: 443, path: \"/b/*\", protocol: rest, enforcement: enforce, access: full }\n",
            None,
        ),
        (
            "      - { host: 10.0.0.1, port: 443 }\n      - { port: 443, allowed_ips: [10.0.0.0/24] }\n",
            Some("with different allowed_ips"),
        ),
    ];
    for (eps, want) in cases {
        let src = policy(eps);
        match (load_str(&src, "t.yaml", 1), want) {
            (Ok(_), None) => {}
            (Ok(_), Some(w)) => panic!("accepted, want `{w}`:\n{src}"),
            (Err(e), None) => panic!("rejected:\n{src}\n{e}"),
            (Err(e), Some(w)) => assert!(e.to_string().contains(w), "want `{w}`, got:\n{e}"),
        }
    }
}
